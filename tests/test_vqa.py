"""Emoji scenes (the VQA data) and `SimMIMVQA`.

The scene checks read every answer back off the pixels: each cell of a
scene is compared with the drawings it could hold.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from simmim_tf.ask import ask
from simmim_tf.cli import main
from simmim_tf.data import emoji_text_builder, load_emoji_text
from simmim_tf.data.emoji_scenes import (
    ANSWERS,
    GROUPS,
    POSITIONS,
    QUESTION_TYPES,
    SCENE_SIZE,
    _resize,
    drawings_of,
    make_scenes,
)
from simmim_tf.jobs import run_finetune, run_pretrain
from simmim_tf.models.vqa import SimMIMVQA
from simmim_tf.training.config import DEFAULT_CONFIG, default_config, load_config
from simmim_tf.training.data import load_splits, make_batches
from simmim_tf.training.tasks import build_preprocessor, build_task_model
from tests.conftest import TINY_RUN, export_run_folder, tiny_backbone


@pytest.fixture(scope="module")
def drawings():
    builder = emoji_text_builder(manual_dir=None, data_dir=None)
    return drawings_of(builder.as_dataset(split="twitter"), builder.info.features)


def _cells(scene: np.ndarray, grid: int) -> list[np.ndarray]:
    size = SCENE_SIZE // grid
    offset = (SCENE_SIZE - grid * size) // 2
    return [
        scene[offset + r * size : offset + (r + 1) * size, offset + c * size :][:, :size]
        for r in range(grid)
        for c in range(grid)
    ]


def _drawing_in(cell: np.ndarray, cell_images: np.ndarray) -> int:
    """The index of the drawing a cell shows (a drawing of its emoji)."""
    matches = np.flatnonzero((cell_images == cell).all(axis=(1, 2, 3)))
    assert len(matches), "a cell shows no drawing of the pool"
    return int(matches[0])


@pytest.mark.parametrize("grid", [2, 3])
def test_every_answer_can_be_read_off_the_scene(drawings, grid):
    scenes = make_scenes(drawings, count=48, grid=grid, seed=1)
    cell_images = _resize(drawings["image"], SCENE_SIZE // grid)
    positions = POSITIONS[grid]
    assert scenes["image"].shape == (48, SCENE_SIZE, SCENE_SIZE, 3)
    assert list(scenes["question_type"][:4]) == list(QUESTION_TYPES)
    assert all(
        ANSWERS[i] == a
        for i, a in zip(scenes["answer_id"], scenes["answer"], strict=True)
    )
    names = drawings["name"]
    for scene, question, answer, kind in zip(
        scenes["image"],
        scenes["question"],
        scenes["answer"],
        scenes["question_type"],
        strict=True,
    ):
        shown = [_drawing_in(c, cell_images) for c in _cells(scene, grid)]
        shown_names = [names[i] for i in shown]
        if kind == "where":
            label = question.removeprefix("where is the ").removesuffix("?")
            assert shown_names.count(label) == 1
            assert positions[shown_names.index(label)] == answer
        elif kind == "group":
            position = question.removeprefix("what group is in the ").removesuffix("?")
            cell = shown[positions.index(position)]
            assert GROUPS[drawings["group"][cell]] == answer
        else:
            prefix = "is there a " if kind == "exists" else "how many "
            label = question.removeprefix(prefix).removesuffix("?")
            count = shown_names.count(label)
            assert answer == (
                {0: "no"}.get(count, "yes") if kind == "exists" else str(count)
            )
            if count == 0:  # the absent emoji is a neighbour of one shown
                named = np.flatnonzero(names == label)[0]
                subgroups = drawings["subgroup"][shown]
                groups = drawings["group"][shown]
                assert (
                    drawings["subgroup"][named] in subgroups
                    or drawings["group"][named] in groups
                )


def test_scenes_are_deterministic(drawings):
    first, again = (make_scenes(drawings, count=12, seed=5) for _ in range(2))
    other = make_scenes(drawings, count=12, seed=6)
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    assert (first["question"] != other["question"]).any()


def test_answers_are_balanced_enough_to_need_the_image(drawings):
    scenes = make_scenes(drawings, count=400, seed=0)
    exists = scenes["answer"][scenes["question_type"] == "exists"]
    assert 0.4 < np.mean(exists == "yes") < 0.6
    counts = scenes["answer"][scenes["question_type"] == "count"]
    assert set(counts) == {"0", "1", "2", "3", "4"}
    where = scenes["answer"][scenes["question_type"] == "where"]
    assert set(where) == set(POSITIONS[2])


def test_bad_scene_requests_are_clear(drawings):
    with pytest.raises(ValueError, match="grid 4 must be one of"):
        make_scenes(drawings, count=1, grid=4)
    few = {key: value[:3] for key, value in drawings.items()}
    with pytest.raises(ValueError, match="needs more than 4 distinct emoji"):
        make_scenes(few, count=1)


@pytest.fixture(scope="module")
def scene_inputs(drawings, preprocessor):
    scenes = make_scenes(drawings, count=16, seed=0)
    x = preprocessor({"images": scenes["image"], "texts": scenes["question"]})
    return {k: keras.ops.convert_to_numpy(v) for k, v in x.items()}, scenes


def test_without_graph_rounds_the_question_never_sees_the_image(scene_inputs):
    """K=0: the question's readout is the same whatever the image; K=2: not."""
    x, _ = scene_inputs
    shuffled = dict(x, images=x["images"][::-1])
    for rounds, unchanged in ((0, True), (2, False)):
        backbone = tiny_backbone(num_rounds=rounds)
        question = [backbone(v)["text_graph_embedding"] for v in (x, shuffled)]
        same = np.allclose(question[0], question[1], atol=1e-5)
        assert same == unchanged, rounds


def test_vqa_trains_answers_and_survives_a_keras_file(scene_inputs, tmp_path):
    x, scenes = scene_inputs
    vqa = SimMIMVQA(tiny_backbone(), answers=ANSWERS)
    vqa.compile(optimizer=keras.optimizers.AdamW(3e-3))
    history = vqa.fit(x, scenes["answer_id"], batch_size=8, epochs=8, verbose=0)
    assert history.history["loss"][-1] < 0.7 * history.history["loss"][0]
    answers = vqa.answer(x)
    assert set(answers) <= set(ANSWERS) and len(answers) == 16
    vqa.save(tmp_path / "vqa.keras")
    loaded = keras.saving.load_model(tmp_path / "vqa.keras")
    assert loaded.answers == ANSWERS
    np.testing.assert_allclose(loaded.predict(x, verbose=0), vqa.predict(x, verbose=0))


def test_vqa_refuses_a_bad_answer_list():
    with pytest.raises(ValueError, match="at least 2 distinct strings"):
        SimMIMVQA(tiny_backbone(), answers=["yes", "yes"])


@pytest.mark.parametrize("task", ["vqa", "baseline"])
def test_finetune_on_scenes_reports_accuracy_per_question_type(tmp_path, task):
    """The CLI trains on the training artist's scenes and scores google's; the
    reported accuracies are recomputed from the saved model, scene by scene."""
    data = dict(TINY_RUN["data"], data_dir=str(tmp_path / "tfds"), scenes=True)
    args = ["finetune", "--set", f"run_dir={tmp_path / 'run'}"]
    for section, values in (("data", data), ("model", TINY_RUN["model"])):
        args += [f"--set={section}.{key}={value}" for key, value in values.items()]
    args += ["--set", f"finetune.task={task}", "--set", "finetune.epochs=1"]
    assert main(args) == 0
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics_google.json").read_text())["metrics"]["vqa"]
    assert set(metrics) == {"test", "test_held_out"}
    assert set(metrics["test"]) == {"all", *QUESTION_TYPES}
    assert (tmp_path / "run" / "vqa_google.png").stat().st_size > 10_000

    config = load_config(run / "config.yaml", defaults=DEFAULT_CONFIG)
    splits, _ = load_splits(config)
    scenes = list(splits["test"].as_numpy_iterator())
    assert len(scenes) == 2 * len(
        list(load_emoji_text("google", data_dir=data["data_dir"]))
    )
    model = keras.models.load_model(run / "model.keras")
    x = build_preprocessor(config)(
        {
            "images": np.stack([s["image"] for s in scenes]),
            "texts": np.array([s["text"] for s in scenes]),
        }
    )
    correct = np.argmax(model.predict(x, verbose=0), -1) == [
        s["answer_id"] for s in scenes
    ]
    kinds = np.array([s["question_type"].decode() for s in scenes])
    assert metrics["test"]["all"] == pytest.approx(np.mean(correct))
    assert metrics["test"]["where"] == pytest.approx(np.mean(correct[kinds == "where"]))


def test_vqa_needs_scenes():
    config = default_config(finetune=dict(task="vqa"))
    with pytest.raises(ValueError, match="set data.scenes true"):
        build_task_model(config)


def test_training_scenes_are_new_every_epoch_the_same_for_every_run(tmp_path):
    data = dict(TINY_RUN["data"], data_dir=str(tmp_path / "tfds"), scenes=True)
    config = default_config(data=data)
    splits, _ = load_splits(config)

    def questions(split):
        return [scene["text"] for scene in split.as_numpy_iterator()]

    first, second = questions(splits["train"]), questions(splits["train"])
    assert len(first) == len(second) > 0
    assert first != second  # a new draw each pass
    assert questions(load_splits(config)[0]["train"]) == first  # a new run: the same
    assert questions(splits["test"]) == questions(splits["test"])  # evaluation: fixed

    # Training batches of scenes are not augmented: a crop would cut emoji off.
    preprocessor = build_preprocessor(config)
    batches = make_batches(
        config, splits["test"], preprocessor, label_key="answer_id", training=True
    )
    raw = preprocessor(
        {
            "images": np.stack([s["image"] for s in splits["test"].as_numpy_iterator()]),
            "texts": np.array(questions(splits["test"])),
        }
    )["images"].numpy()
    known = {image.tobytes() for image in raw}
    images = next(iter(batches))[0]["images"].numpy()
    assert all(image.tobytes() in known for image in images)


def test_jobs_that_train_on_pairs_refuse_scenes(tmp_path):
    config = default_config(run_dir=str(tmp_path / "run"), data=dict(scenes=True))
    for job, task in ((run_pretrain, "retrieve"), (run_finetune, "retrieve")):
        config["finetune"]["task"] = task
        with pytest.raises(ValueError, match="data.scenes is for question answering"):
            job(config)
    assert not (tmp_path / "run").exists()  # refused before writing anything


def test_ask_answers_about_an_image_file_and_refuses_bad_input(
    tmp_path, capsys, retrieval_run
):
    vqa = SimMIMVQA(tiny_backbone(), answers=ANSWERS)
    folder, config = export_run_folder(
        tmp_path / "vqa", vqa, data={"scenes": True}, task="vqa"
    )
    scene = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    image = tmp_path / "scene.png"
    image.write_bytes(tf.io.encode_png(scene).numpy())
    questions = ["where is the cat face?", "is there a dog face?"]
    answers = ask(folder, image, questions, k=2)
    x = build_preprocessor(config)(
        {"images": np.array([image.read_bytes()] * 2), "texts": np.array(questions)}
    )
    probabilities = tf.nn.softmax(vqa(x), -1).numpy()
    for ranked, row in zip(answers, probabilities, strict=True):
        best = np.argsort(-row)[:2]
        assert [a for a, _ in ranked] == [ANSWERS[i] for i in best]
        np.testing.assert_allclose([p for _, p in ranked], row[best], rtol=1e-4)

    assert main(["ask", "--run-dir", str(folder), "--image", str(image), *questions]) == 0
    assert answers[0][0][0] in capsys.readouterr().out
    image.write_bytes(b"not a png")
    assert main(["ask", "--run-dir", str(folder), "--image", str(image), "why?"]) == 2
    assert f"{image}" in capsys.readouterr().err  # the file is named
    with pytest.raises(ValueError, match="ask needs a finetune.task vqa run"):
        ask(retrieval_run[0], image, questions)
    with pytest.raises(FileNotFoundError, match="No image at"):
        ask(folder, tmp_path / "missing.png", questions)
