"""The data of a run: the concept split of the artists, and batches of model inputs.

Protocol: train on the training artists' drawings of the *seen* concepts
(80 % of the emoji, chosen by `concept_held_out`, the same for every artist);
validate on their held-out concepts; test on another artist: the whole
gallery, and the held-out concepts alone (emoji never seen in training).
"""

from __future__ import annotations

import itertools
import pathlib

import numpy as np
import tensorflow as tf

from simmim_tf.data import EmojiTextConfig, emoji_text_builder
from simmim_tf.data.artists import get_artist
from simmim_tf.data.emoji_scenes import ANSWERS, SCENE_SIZE, drawings_of, make_scenes
from simmim_tf.data.emoji_text import DEFAULT_VENDORS
from simmim_tf.data.pipeline import make_dataset
from simmim_tf.training.config import DEFAULT_CONFIG, load_config
from simmim_tf.training.splits import split_by_concept

# The data keys that decide which concepts a run trains on.
SPLIT_KEYS = ("train_artists", "held_out_fraction", "split_seed")

# The label of a scene: its answer's index in `emoji_scenes.ANSWERS`.
SCENE_LABEL = "answer_id"

MIN_PAIRS = 2  # contrastive losses need at least 2 pairs in every batch


def load_splits(config: dict) -> tuple[dict[str, tf.data.Dataset], object]:
    """Feature-dict datasets `train`, `validation`, `test`, `test_held_out`, and
    the TFDS builder (its `info` names the classes)."""
    data = config["data"]
    train_artists = training_artists(data)
    get_artist(data["test_artist"])
    # A training artist may be tested on (evaluate's in-domain measurement);
    # training refuses it (`check_unseen_test_artist`).
    vendors = tuple(dict.fromkeys((*train_artists, data["test_artist"])))
    builder_config = (
        "base"
        if set(vendors) <= set(DEFAULT_VENDORS)
        else EmojiTextConfig(name="-".join(vendors), vendors=vendors)
    )
    builder = emoji_text_builder(
        manual_dir=data["manual_dir"], data_dir=data["data_dir"], config=builder_config
    )
    split = dict(fraction=data["held_out_fraction"], seed=data["split_seed"])
    train_seen, train_held_out = split_by_concept(
        builder.as_dataset(split="+".join(train_artists)), **split
    )
    test = builder.as_dataset(split=data["test_artist"])
    _, test_held_out = split_by_concept(test, **split)
    splits = {
        "train": train_seen,
        "validation": train_held_out,
        "test": test,
        "test_held_out": test_held_out,
    }
    if data["scenes"]:
        # The training scenes are drawn anew each pass (epoch): a fixed set of
        # a few thousand is memorised (train 83 %, validation 38 % accuracy
        # after 20 epochs). The evaluation splits stay fixed, and cached.
        return {
            name: scenes_of(examples, builder, data, index, fresh=name == "train")
            for index, (name, examples) in enumerate(splits.items())
        }, builder
    return {name: ds.cache() for name, ds in splits.items()}, builder


def scenes_of(
    examples: tf.data.Dataset, builder, data: dict, index: int, fresh: bool = False
) -> tf.data.Dataset:
    """Scenes of `examples`' drawings (`data.scenes_per_drawing` per drawing,
    `data.scene_grid`), seeded by `data.split_seed` and the split's `index`:
    examples with `image`, `text` (the question), `answer_id` and
    `question_type`.

    With `fresh`, each pass over the dataset draws new scenes, seeded by the
    pass number too: two runs see the same scenes epoch for epoch (a resumed
    run restarts the count).
    """
    drawings = drawings_of(examples, builder.info.features)
    count = data["scenes_per_drawing"] * len(drawings["label"])

    def scenes(*seed: int) -> dict[str, np.ndarray]:
        made = make_scenes(
            drawings,
            count=count,
            grid=data["scene_grid"],
            seed=[data["split_seed"], *seed],
        )
        return {
            "image": made["image"],
            "text": made["question"],
            SCENE_LABEL: made["answer_id"],
            "question_type": made["question_type"],
        }

    if not fresh:
        return tf.data.Dataset.from_tensor_slices(scenes(index)).cache()
    passes = itertools.count()

    def generate():
        drawn = scenes(index, next(passes))
        for row in range(count):
            yield {key: values[row] for key, values in drawn.items()}

    signature = {
        "image": tf.TensorSpec((SCENE_SIZE, SCENE_SIZE, 3), tf.uint8),
        "text": tf.TensorSpec((), tf.string),
        SCENE_LABEL: tf.TensorSpec((), tf.int64),
        "question_type": tf.TensorSpec((), tf.string),
    }
    return tf.data.Dataset.from_generator(generate, output_signature=signature).apply(
        tf.data.experimental.assert_cardinality(count)
    )


def check_scene_task(config: dict, job: str) -> None:
    """Refuses scenes to a job that trains on image-text pairs.

    Scenes pair an image with a question, not with its own text: there is no
    pair to contrast or match. Pre-training and retrieval read drawings.

    Raises:
        ValueError: `data.scenes` with `job` "pretrain" or task "retrieve".
    """
    if not config["data"]["scenes"]:
        return
    if job == "pretrain" or config["finetune"]["task"] == "retrieve":
        what = "pretrain" if job == "pretrain" else "finetune.task retrieve"
        raise ValueError(
            f"data.scenes is for question answering (finetune.task vqa, classify "
            f"or baseline); {what} trains on image-text pairs: set data.scenes "
            "false."
        )


def task_label(config: dict, builder) -> tuple[str | None, int | None]:
    """The label a fine-tuning run trains on, and its number of classes:
    none for retrieval, the answer for scenes, else `finetune.label`."""
    if config["finetune"]["task"] == "retrieve":
        return None, None
    if config["data"]["scenes"]:
        return SCENE_LABEL, len(ANSWERS)
    label = config["finetune"]["label"]
    return label, builder.info.features[label].num_classes


def training_artists(data: dict) -> tuple[str, ...]:
    """`data.train_artists` as a tuple, each once.

    Raises:
        TypeError: a string instead of a list.
        ValueError: no artist, or an unknown one.
    """
    names = data["train_artists"]
    if isinstance(names, str):
        raise TypeError(f"data.train_artists must be a list of artists, not {names!r}.")
    artists = tuple(dict.fromkeys(names))
    if not artists:
        raise ValueError("data.train_artists is empty: name at least one artist.")
    for name in artists:
        get_artist(name)
    return artists


def check_unseen_test_artist(data: dict) -> None:
    """Refuses to train on the test artist's art: the test must be unseen.

    Raises:
        ValueError: the test artist, or an earlier design of it (Noto v1 is
            Google's), among `data.train_artists`.
    """
    test_artist = data["test_artist"]
    for name in training_artists(data):
        if name == test_artist:
            raise ValueError(
                f"data.train_artists includes the test artist {test_artist!r}: "
                "the test must be an artist the model never saw."
            )
        if get_artist(name).earlier_art_of == test_artist:
            raise ValueError(
                f"data.train_artists includes {name!r}, {test_artist}'s earlier "
                f"design: a model tested on {test_artist} must not train on it."
            )


def check_pretraining_split(config: dict) -> None:
    """Refuse to fine-tune from a backbone pre-trained under another split.

    A pretrain run saves `backbone/` beside its `config.yaml`. Had it held out
    other concepts, it trained on some of this run's held-out concepts, and
    the held-out rows would measure memory, not generalisation. A preset from
    elsewhere (no `config.yaml` beside it) cannot be checked and is accepted.

    Raises:
        ValueError: naming each split key that differs.
    """
    backbone = config["model"]["backbone"]
    source = pathlib.Path(backbone).parent / "config.yaml" if backbone else None
    if source is None or not source.is_file():
        return
    pretrained = load_config(source, defaults=DEFAULT_CONFIG)["data"]
    differ = [
        f"data.{key}: {pretrained[key]!r} there, {config['data'][key]!r} here"
        for key in SPLIT_KEYS
        if pretrained[key] != config["data"][key]
    ]
    if differ:
        raise ValueError(
            f"model.backbone {backbone} was pre-trained under another concept "
            f"split ({'; '.join(differ)}), so it has trained on concepts this "
            "run holds out. Pre-train under this run's split, or use its split."
        )


def make_batches(
    config: dict,
    examples: tf.data.Dataset,
    preprocessor,
    *,
    label_key: str | None = None,
    training: bool = False,
    contrastive: bool = False,
    static_shapes: bool = False,
) -> tf.data.Dataset:
    """Batches of model inputs (and labels, with `label_key`), of known length.

    With `contrastive`, the inputs carry `pair_ids` (the emoji class): the
    same emoji drawn by several artists are positives of each other.
    Training drops a last, smaller batch when there is a full one: one batch
    shape means one traced training step (and a shuffle puts those examples
    in other batches next epoch). With `contrastive`, a batch of fewer than
    `MIN_PAIRS` pairs is dropped too (in-batch negatives need a second pair).
    Otherwise every example is kept: a gallery is scored whole. With
    `static_shapes` (validation under `model.jit_compile`) every batch holds
    `batch_size` examples, a static shape, as XLA needs: a last smaller one
    is dropped here too.
    """
    batch_size = config["data"]["batch_size"]
    count = int(examples.cardinality())
    if count < 0:  # a filter hides it: count once
        count = int(examples.reduce(0, lambda count, _: count + 1))
    full, rest = divmod(count, batch_size)
    drop_remainder = (training or static_shapes) and full > 0
    batches = make_dataset(
        examples,
        preprocessor,
        label_key=label_key,
        batch_size=batch_size,
        training=training,
        seed=config["seed"],
        drop_remainder=drop_remainder,
        # A shuffle over every example: the artists arrive one after another,
        # and a smaller buffer would fill early batches with the first ones.
        shuffle_buffer=max(count, 1),
        pair_key="label" if contrastive else None,
        # A crop or shift would cut emoji off a scene and falsify its answer;
        # fresh scenes every epoch do augmentation's work.
        augmentation=not config["data"]["scenes"],
        rotation_degrees=config["data"]["rotation_degrees"],
        grayscale_probability=config["data"]["grayscale_probability"],
    )
    if drop_remainder:
        rest = 0
    if contrastive:
        batches = batches.filter(_has_pairs)
        rest = rest if rest >= MIN_PAIRS else 0
    # The concept split's filter hides the length; progress bars and the
    # learning-rate schedule need it.
    batches = batches.apply(tf.data.experimental.assert_cardinality(full + (rest > 0)))
    # A multi-worker run gives each worker its share of every global batch
    # (the examples come from no files a worker could own).
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    return batches.with_options(options)


def _has_pairs(inputs, *labels):
    return tf.shape(inputs["token_ids"])[0] >= MIN_PAIRS
