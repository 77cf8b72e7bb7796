"""Emoji scenes with questions: a VQA set that needs *where*, not only *what*.

A scene is a `grid` x `grid` arrangement of emoji drawings on a white
128 px canvas. Each scene comes with one question from a template, about
the emoji's CLDR labels and groups:

- `where`: "where is the {label}?" -> a position ("top left", …).
- `exists`: "is there a {label}?" -> "yes" / "no". A "no" names an emoji of
  the same subgroup as one in the scene, so the image must be read.
- `count`: "how many {label}?" -> "0" … "4". The emoji is repeated that many
  times; a "0" names one of the same subgroup.
- `group`: "what group is in the {position}?" -> one of the 10 groups.

Generation is deterministic: the same drawings and seed give the same scenes,
byte for byte. Scenes draw from one pool of drawings (e.g. the training
artists' seen concepts, or google's held-out ones), so a split's scenes hold
only its own concepts and artists.

Example:
```python
google = drawings_of(builder.as_dataset(split="google"), builder.info.features)
scenes = make_scenes(google, count=1000, grid=2, seed=0)
scenes["question"][0], scenes["answer"][0]  # "where is the red heart?", "top left"
```
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf

SCENE_SIZE = 128
QUESTION_TYPES = ("where", "exists", "count", "group")
POSITIONS = {
    2: ("top left", "top right", "bottom left", "bottom right"),
    3: (
        "top left",
        "top",
        "top right",
        "left",
        "center",
        "right",
        "bottom left",
        "bottom",
        "bottom right",
    ),
}
MAX_COUNT = 4
GROUPS = (
    "smileys-emotion",
    "people-body",
    "component",
    "animals-nature",
    "food-drink",
    "travel-places",
    "activities",
    "objects",
    "symbols",
    "flags",
)
# Every answer of every question type, in a fixed order: the classes of a
# VQA head. The 2x2 positions are a subset of the 3x3 ones.
ANSWERS = (
    *POSITIONS[3],
    "yes",
    "no",
    *(str(count) for count in range(MAX_COUNT + 1)),
    *GROUPS,
)


def drawings_of(examples: tf.data.Dataset, features) -> dict[str, np.ndarray]:
    """The arrays a scene is made from, read from `emoji_text` examples.

    Args:
        examples: `emoji_text` examples (`image`, `label`, `group`, `subgroup`).
        features: the builder's `info.features` (label and group names).

    Returns:
        dict of numpy arrays: `image` `[N, 64, 64, 3]` uint8, `label`,
        `group` (an index of `GROUPS`), `subgroup` `[N]` int, `name` `[N]`
        str (the CLDR label).

    Raises:
        ValueError: no examples, or groups other than `GROUPS`.
    """
    if tuple(features["group"].names) != GROUPS:
        raise ValueError(
            f"The data set's groups {features['group'].names} are not the scene "
            f"answers' {GROUPS}."
        )
    arrays = {"image": [], "label": [], "group": [], "subgroup": []}
    for example in examples.as_numpy_iterator():
        for key, values in arrays.items():
            values.append(example[key])
    if not arrays["image"]:
        raise ValueError("No drawings to make scenes from: the split is empty.")
    drawings = {key: np.stack(values) for key, values in arrays.items()}
    names = features["label"].names
    drawings["name"] = np.asarray([names[i] for i in drawings["label"]])
    return drawings


def make_scenes(
    drawings: Mapping[str, np.ndarray],
    *,
    count: int,
    grid: int = 2,
    seed: int | Sequence[int] = 0,
) -> dict[str, np.ndarray]:
    """`count` scenes, each with one question; question types in turn.

    Args:
        drawings: from `drawings_of`: one pool of drawings, at least
            `grid * grid` distinct emoji.
        count: int. Number of scenes.
        grid: int. 2 (64 px cells) or 3 (42 px cells).
        seed: int or ints (`numpy.random.default_rng`'s seed). The same seed
            and drawings give the same scenes.

    Returns:
        dict of numpy arrays of length `count`: `image` `[count, 128, 128, 3]`
        uint8, `question` str, `answer` str (one of `ANSWERS`), `answer_id`
        int (its index), `question_type` str (one of `QUESTION_TYPES`).

    Raises:
        ValueError: an unknown grid, or too few distinct emoji.
    """
    if grid not in POSITIONS:
        raise ValueError(f"Scene grid {grid} must be one of {sorted(POSITIONS)}.")
    cells = grid * grid
    labels = np.asarray(drawings["label"])
    if len(np.unique(labels)) < cells + 1:
        raise ValueError(
            f"A {grid}x{grid} scene needs more than {cells} distinct emoji; the "
            f"pool has {len(np.unique(labels))}."
        )
    rng = np.random.default_rng(seed)
    cell_images = _resize(np.asarray(drawings["image"]), SCENE_SIZE // grid)
    positions = POSITIONS[grid]
    scenes = {key: [] for key in ("image", "question", "answer", "question_type")}
    for index in range(count):
        kind = QUESTION_TYPES[index % len(QUESTION_TYPES)]
        layout, question, answer = _scene(kind, drawings, rng, cells, positions)
        scenes["image"].append(_compose(cell_images[layout], grid))
        scenes["question"].append(question)
        scenes["answer"].append(answer)
        scenes["question_type"].append(kind)
    result = {key: np.asarray(values) for key, values in scenes.items()}
    result["answer_id"] = np.asarray([ANSWERS.index(a) for a in scenes["answer"]])
    return result


def _scene(kind, drawings, rng, cells, positions):
    """Drawing indices in cell order, the question and its answer."""
    labels, names = drawings["label"], drawings["name"]
    if kind == "count":
        repeats = int(rng.integers(0, MAX_COUNT + 1))
        others = _distinct(labels, rng, cells - repeats + 1)
        if repeats:
            target, others = others[0], others[1:]
            layout = np.concatenate([np.full(repeats, target), others])
        else:
            layout = others[:cells]
            target = _absent_neighbour(drawings, layout, rng)
        layout = rng.permutation(layout)
        return layout, f"how many {names[target]}?", str(repeats)
    layout = _distinct(labels, rng, cells)
    cell = int(rng.integers(0, cells))
    if kind == "where":
        return layout, f"where is the {names[layout[cell]]}?", positions[cell]
    if kind == "group":
        group = GROUPS[drawings["group"][layout[cell]]]
        return layout, f"what group is in the {positions[cell]}?", group
    if rng.random() < 0.5:  # "exists", yes
        return layout, f"is there a {names[layout[cell]]}?", "yes"
    return layout, f"is there a {names[_absent_neighbour(drawings, layout, rng)]}?", "no"


def _distinct(labels: np.ndarray, rng, count: int) -> np.ndarray:
    """Indices of `count` drawings of distinct emoji."""
    chosen, seen = [], set()
    for index in rng.permutation(len(labels)):
        if labels[index] not in seen:
            seen.add(labels[index])
            chosen.append(index)
            if len(chosen) == count:
                return np.asarray(chosen)
    raise AssertionError("make_scenes checked that there are enough emoji")


def _absent_neighbour(drawings, layout, rng) -> int:
    """A drawing of an emoji not in the scene, from the subgroup (else the
    group) of one that is: a "no" must be read off the image, not guessed
    from the topic."""
    labels = drawings["label"]
    present = set(labels[layout].tolist())
    absent = ~np.isin(labels, list(present))
    for key in ("subgroup", "group"):
        near = absent & np.isin(drawings[key], drawings[key][layout])
        if near.any():
            return int(rng.choice(np.flatnonzero(near)))
    return int(rng.choice(np.flatnonzero(absent)))


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    if images.shape[1] == size:
        return images
    resized = tf.image.resize(images, (size, size), antialias=True)
    return np.clip(np.round(resized.numpy()), 0, 255).astype(np.uint8)


def _compose(cells: np.ndarray, grid: int) -> np.ndarray:
    """One white 128 px canvas with `cells` `[grid*grid, s, s, 3]` row by row."""
    size = cells.shape[1]
    canvas = np.full((SCENE_SIZE, SCENE_SIZE, 3), 255, np.uint8)
    offset = (SCENE_SIZE - grid * size) // 2
    for cell, image in enumerate(cells):
        row, column = divmod(cell, grid)
        top, left = offset + row * size, offset + column * size
        canvas[top : top + size, left : left + size] = image
    return canvas
