"""`simmim-tf tflite`: every variant converts with builtin ops only and runs in
LiteRT's interpreter; float32 gives the Keras model's numbers, with texts
tokenised the phone's way (reference tokenizer + the shipped vocab.txt)."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import simmim_tf
from simmim_tf.cli import main
from simmim_tf.data.emoji_scenes import ANSWERS
from simmim_tf.models.vqa import SimMIMVQA
from simmim_tf.reference_tokenizer import ReferenceTokenizer
from simmim_tf.tflite import VARIANTS, LiteModel, convert, phone_inputs
from simmim_tf.training.data import load_splits
from simmim_tf.training.tasks import build_preprocessor
from tests.conftest import export_run_folder, tiny_backbone


def _phone_inputs(config, image_bytes, texts, out) -> list[dict]:
    """Per example: pixels in [0, 1] at the model's size, ids from vocab.txt."""
    preprocessor = build_preprocessor(config)
    x = preprocessor({"images": image_bytes, "texts": texts})
    pixels = phone_inputs(x, preprocessor.image_converter)["pixels"]
    tokenizer = ReferenceTokenizer.from_file(
        str(out / "vocab.txt"), preprocessor.sequence_length
    )
    rows = []
    for index, text in enumerate(texts):
        token_ids, padding_mask = tokenizer(text.decode("utf-8"))
        rows.append(
            {
                "pixels": pixels[index : index + 1],
                "token_ids": np.array([token_ids], np.int32),
                "padding_mask": np.array([padding_mask], np.int32),
            }
        )
    return rows


def _run(lite: LiteModel, rows: list[dict], names: tuple[str, ...]) -> dict:
    answers = [lite({name: row[name] for name in names}) for row in rows]
    return {key: np.concatenate([a[key] for a in answers]) for key in answers[0]}


@pytest.fixture(scope="module")
def retrieval_phone(retrieval_run, tmp_path_factory):
    folder, _ = retrieval_run
    out = tmp_path_factory.mktemp("phone")
    assert main(["tflite", "--run-dir", str(folder), "--out", str(out)]) == 0
    return out, json.loads((out / "manifest.json").read_text())


def test_retrieval_towers_match_keras_in_litert(
    retrieval_run, retrieval_phone, google_examples
):
    folder, config = retrieval_run
    out, manifest = retrieval_phone
    assert sorted(manifest["files"]) == sorted(
        f"{tower}_{variant}.tflite"
        for tower in ("image_tower", "text_tower")
        for variant in VARIANTS
    )
    image_bytes, texts = google_examples
    retriever = keras.models.load_model(folder / "model.keras")
    x = build_preprocessor(config)({"images": image_bytes, "texts": texts})
    image = retriever.backbone.image_tower(x["images"])["image_unimodal_embedding"]
    text = retriever.backbone.text_tower(
        {"token_ids": x["token_ids"], "padding_mask": x["padding_mask"]}
    )["text_unimodal_embedding"]
    expected = {
        "image_tower": tf.math.l2_normalize(image, -1).numpy(),
        "text_tower": tf.math.l2_normalize(text, -1).numpy(),
    }
    rows = _phone_inputs(config, image_bytes, texts, out)
    inputs = {"image_tower": ("pixels",), "text_tower": ("token_ids", "padding_mask")}
    for filename, info in manifest["files"].items():
        tower = info["model"]
        lite = LiteModel(out / filename)
        got = _run(lite, rows, inputs[tower])["embedding"]
        if info["variant"] == "float32":
            np.testing.assert_allclose(got, expected[tower], atol=1e-4)
        else:  # quantised: the same direction, not the same digits
            cosine = np.sum(got * expected[tower], -1)
            assert cosine.min() > 0.9, (filename, cosine)
        assert (out / filename).stat().st_size == info["bytes"]
    assert manifest["refused"] == {}
    for info in manifest["files"].values():  # verified on validation examples
        assert info["agreement"]["min_cosine"] >= 0.9
    sizes = {name: info["bytes"] for name, info in manifest["files"].items()}
    for tower in inputs:
        assert (
            sizes[f"{tower}_full_int8.tflite"] < 0.35 * sizes[f"{tower}_float32.tflite"]
        )

    gallery = json.loads((out / "gallery.json").read_text())
    embeddings = np.load(out / "gallery_embeddings.npy")
    assert embeddings.shape == (len(gallery["ids"]), expected["text_tower"].shape[1])
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=-1), 1.0, atol=1e-5)


def test_classifier_with_the_graph_matches_keras_in_litert(tmp_path, google_examples):
    classifier = simmim_tf.SimMIMClassifier(backbone=tiny_backbone(), num_classes=100)
    folder, config = export_run_folder(
        tmp_path / "cls", classifier, task="classify", label="subgroup"
    )
    out = tmp_path / "phone"
    args = ["tflite", "--run-dir", str(folder), "--out", str(out)]
    # Untrained: near-uniform probabilities, whose argmax int8 rounding may
    # flip; the probabilities themselves are compared below.
    args += ["--min-agreement", "0"]
    assert main([*args, "--variants", "float32", "full_int8"]) == 0
    names = load_splits(config)[1].info.features["subgroup"].names
    assert (out / "labels.txt").read_text().splitlines() == names
    image_bytes, texts = google_examples
    x = build_preprocessor(config)({"images": image_bytes, "texts": texts})
    expected = tf.nn.softmax(classifier(x), -1).numpy()
    rows = _phone_inputs(config, image_bytes, texts, out)
    every_input = ("pixels", "token_ids", "padding_mask")
    got = _run(LiteModel(out / "classifier_float32.tflite"), rows, every_input)
    np.testing.assert_allclose(got["probabilities"], expected, atol=1e-4)
    quantised = _run(LiteModel(out / "classifier_full_int8.tflite"), rows, every_input)
    # int8 softmax outputs step by 1/256; measured 0.002 off.
    np.testing.assert_allclose(quantised["probabilities"], expected, atol=0.01)


def test_vqa_runs_in_litert_with_the_answers_as_labels(tmp_path):
    """A VQA run converts like a classifier over (scene, question); its scenes
    (validation and calibration) come from the run's config."""
    vqa = SimMIMVQA(tiny_backbone(), answers=ANSWERS)
    folder, config = export_run_folder(
        tmp_path / "vqa", vqa, data={"scenes": True}, task="vqa"
    )
    out = tmp_path / "phone"
    args = ["tflite", "--run-dir", str(folder), "--out", str(out)]
    assert main([*args, "--variants", "float32", "--min-agreement", "0"]) == 0
    assert (out / "labels.txt").read_text().splitlines() == list(ANSWERS)
    rng = np.random.default_rng(0)
    scenes = rng.integers(0, 256, size=(2, 128, 128, 3), dtype=np.uint8)
    image_bytes = np.array([tf.io.encode_png(scene).numpy() for scene in scenes])
    questions = np.array([b"where is the cat?", b"how many dog?"])
    x = build_preprocessor(config)({"images": image_bytes, "texts": questions})
    expected = tf.nn.softmax(vqa(x), -1).numpy()
    rows = _phone_inputs(config, image_bytes, questions, out)
    every_input = ("pixels", "token_ids", "padding_mask")
    got = _run(LiteModel(out / "classifier_float32.tflite"), rows, every_input)
    np.testing.assert_allclose(got["probabilities"], expected, atol=1e-4)


def test_a_variant_that_disagrees_with_the_float_model_is_refused(
    retrieval_run, tmp_path, capsys
):
    folder, _ = retrieval_run
    out = tmp_path / "phone"
    args = ["tflite", "--run-dir", str(folder), "--out", str(out)]
    # float32 agrees to rounding (cosine 1 - 2e-7); int8 weights do not
    # (1 - 1e-5 and below, measured).
    args += ["--variants", "float32", "dynamic_int8", "--min-cosine", "0.999999"]
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["files"]) == [
        "image_tower_float32.tflite",
        "text_tower_float32.tflite",
    ]
    assert sorted(manifest["refused"]) == [
        "image_tower_dynamic_int8.tflite",
        "text_tower_dynamic_int8.tflite",
    ]
    assert not list(out.glob("*dynamic_int8*"))
    err = capsys.readouterr().err
    for filename, info in manifest["refused"].items():
        assert "smallest cosine to the float model" in info["reason"]
        assert f"refused {filename}: {info['reason']}" in err


def test_an_op_without_a_builtin_kernel_fails_the_conversion_by_name():
    def string_lengths(inputs):
        return {"length": tf.strings.length(inputs["text"])}

    with pytest.raises(ValueError, match=r"text_lengths \(float32, builtin ops only\)"):
        convert(
            string_lengths,
            tf.Module(),
            [tf.TensorSpec([1], tf.string, name="text")],
            "float32",
            [],
            "text_lengths",
        )
