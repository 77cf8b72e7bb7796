"""`simmim-tf export`: SavedModels that TF Serving loads, checked from outside.

Tiny models, saved as a finetune run would save them (no training: export
does not care how good the weights are). Each SavedModel is loaded in a new
Python with only `tensorflow` and `tensorflow_text` imported and compared
with the Keras model on real google drawings and CLDR texts.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

import simmim_tf
from simmim_tf.cli import main
from simmim_tf.data.emoji_scenes import ANSWERS
from simmim_tf.export import export_run
from simmim_tf.models.vqa import SimMIMVQA
from simmim_tf.recommend import gallery_index
from simmim_tf.training.data import load_splits
from simmim_tf.training.tasks import build_preprocessor
from tests.conftest import export_run_folder, tiny_backbone


def _strings(array: np.ndarray) -> np.ndarray:
    """UTF-8 bytes from a served string tensor, as str."""
    return np.vectorize(lambda value: value.decode("utf-8"), otypes=[str])(array)


def _serve(path, calls: dict, out) -> dict:
    """Run signatures in a new Python that imports only tensorflow + tensorflow_text."""
    inputs = out.with_suffix(".inputs.npz")
    np.savez(
        inputs,
        **{
            f"{sig}:{key}": value
            for sig, kw in calls.items()
            for key, value in kw.items()
        },
    )
    code = f"""
import sys, numpy as np, tensorflow as tf, tensorflow_text
model = tf.saved_model.load({str(path)!r})
stored = np.load({str(inputs)!r}, allow_pickle=True)
results = {{}}
for sig in {sorted(calls)!r}:
    keys = [k for k in stored if k.startswith(sig + ':')]
    kwargs = {{k.split(':')[1]: tf.constant(stored[k]) for k in keys}}
    for name, value in model.signatures[sig](**kwargs).items():
        results[sig + ':' + name] = value.numpy()
np.savez({str(out)!r}, **results)
assert not [m for m in sys.modules if m.startswith(('simmim_tf', 'keras_hub'))]
"""
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        cwd=str(out.parent),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with np.load(out, allow_pickle=True) as loaded:
        return dict(loaded)


def test_retrieval_export_matches_keras_in_a_process_without_simmim_tf(
    retrieval_run, exported_retriever, google_examples, tmp_path
):
    folder, config = retrieval_run
    path = exported_retriever
    assert path.parts[-2:] == ("emoji", "1")
    image_bytes, texts = google_examples
    served = _serve(
        path,
        {
            "embed_image": {"image_bytes": image_bytes},
            "embed_text": {"text": texts},
            "match": {"image_bytes": image_bytes, "text": texts[::-1]},
            "search": {"text": texts, "k": np.int32(5)},
        },
        tmp_path / "served.npz",
    )
    retriever = keras.models.load_model(folder / "model.keras")
    preprocessor = build_preprocessor(config)
    x = preprocessor({"images": image_bytes, "texts": texts})
    image = retriever.backbone.image_tower(x["images"])
    text = retriever.backbone.text_tower(
        {"token_ids": x["token_ids"], "padding_mask": x["padding_mask"]}
    )
    image_embedding = tf.math.l2_normalize(image["image_unimodal_embedding"], -1)
    text_embedding = tf.math.l2_normalize(text["text_unimodal_embedding"], -1)
    np.testing.assert_allclose(
        served["embed_image:embedding"], image_embedding, atol=1e-5
    )
    np.testing.assert_allclose(served["embed_text:embedding"], text_embedding, atol=1e-5)

    # match: ITM probability and ITC score of (image i, text 7 - i).
    reverse = preprocessor({"images": image_bytes, "texts": texts[::-1]})
    outputs = retriever.backbone(reverse)
    logits = retriever.objectives.itm_head(
        outputs["fused_embedding"],
        outputs["image_graph_embedding"],
        outputs["text_graph_embedding"],
    ).numpy()
    probability = 1 / (1 + np.exp(-(logits[:, 1] - logits[:, 0])))
    np.testing.assert_allclose(served["match:itm_probability"], probability, atol=1e-5)
    cosine = np.sum(image_embedding.numpy() * text_embedding.numpy()[::-1], -1)
    np.testing.assert_allclose(served["match:itc_score"], cosine / 0.07, atol=1e-4)

    # search: the retriever's own search over the same gallery.
    gallery = gallery_index(retriever, config)
    queries = retriever.index(tf.data.Dataset.from_tensors(x), "text")
    found = retriever.search(queries, gallery, k=5, rerank_k=4)
    assert (_strings(served["search:ids"]) == found["ids"]).all()
    assert (_strings(served["search:names"]) == found["names"]).all()
    np.testing.assert_allclose(served["search:scores"], found["scores"], atol=1e-4)


def test_versions_are_never_overwritten_and_models_config_is_valid(tmp_path, capsys):
    # An image-only classifier: the cheapest run to export twice.
    classifier = simmim_tf.SimMIMClassifier(
        backbone=tiny_backbone(), num_classes=100, modalities=("image",)
    )
    folder, _ = export_run_folder(
        tmp_path / "cls", classifier, task="classify", label="subgroup"
    )
    base = tmp_path / "savedmodels"
    args = ["export", "--run-dir", str(folder), "--name", "emoji", "--base", str(base)]
    assert main(args) == 0 and main(args) == 0
    assert sorted(p.name for p in (base / "emoji").iterdir()) == ["1", "2"]
    assert main([*args, "--version", "2"]) == 2
    assert "never overwritten" in capsys.readouterr().err
    assert main([*args, "--name", "bad name!"]) == 2
    config = text_format.Parse(
        (base / "models.config").read_text(), model_server_config_pb2.ModelServerConfig()
    )
    [entry] = config.model_config_list.config
    assert (entry.name, entry.base_path, entry.model_platform) == (
        "emoji",
        "/models/emoji",
        "tensorflow",
    )
    serving = json.loads((base / "emoji" / "2" / "assets" / "serving.json").read_text())
    assert serving["min_tensorflow_serving"] == ".".join(
        serving["tensorflow_text"].split(".")[:2]
    )
    assert not [p for p in (base / "emoji").iterdir() if p.name.startswith(".")]


def test_classifier_export_and_its_ops_are_core_tf_or_tf_text(tmp_path, google_examples):
    classifier = simmim_tf.SimMIMClassifier(backbone=tiny_backbone(), num_classes=100)
    folder, config = export_run_folder(
        tmp_path / "cls", classifier, task="classify", label="subgroup"
    )
    path = export_run(folder, "emoji-classes", base=tmp_path / "savedmodels")
    image_bytes, texts = google_examples
    served = _serve(
        path,
        {"serving_default": {"image_bytes": image_bytes, "text": texts}},
        tmp_path / "served.npz",
    )
    x = build_preprocessor(config)({"images": image_bytes, "texts": texts})
    probabilities = tf.nn.softmax(classifier(x), -1).numpy()
    np.testing.assert_allclose(
        served["serving_default:probabilities"], probabilities, atol=1e-5
    )
    class_id = probabilities.argmax(-1)
    np.testing.assert_array_equal(served["serving_default:class_id"], class_id)
    names = load_splits(config)[1].info.features["subgroup"].names
    assert list(_strings(served["serving_default:class_name"])) == [
        names[i] for i in class_id
    ]
    fused = classifier.backbone(x)["fused_embedding"]
    np.testing.assert_allclose(
        served["serving_default:fused_embedding"], fused, atol=1e-5
    )

    # Every op: registered by core TensorFlow, or else by TF Text.
    code = f"""
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import op_def_registry
model = saved_model_pb2.SavedModel()
model.ParseFromString(open({str(path / "saved_model.pb")!r}, "rb").read())
ops = set()
for meta in model.meta_graphs:
    ops |= {{node.op for node in meta.graph_def.node}}
    for function in meta.graph_def.library.function:
        ops |= {{node.op for node in function.node_def}}
custom = sorted(op for op in ops if op_def_registry.get(op) is None)
import tensorflow_text
unknown = [op for op in custom if op_def_registry.get(op) is None]
print(len(ops), custom, unknown)
assert not unknown, unknown
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]

    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "tensorflow.python.tools.saved_model_cli",
            "show",
            "--dir",
            str(path),
            "--all",
        ],
        capture_output=True,
        text=True,
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    for documented in (
        "signature_def['serving_default']",
        "image_bytes",
        "text",
        "probabilities",
        "class_id",
        "class_name",
        "fused_embedding",
    ):
        assert documented in shown.stdout


def test_vqa_export_answers_a_question_about_raw_scene_bytes(tmp_path):
    rng = np.random.default_rng(0)
    scenes = rng.integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    image_bytes = np.array([tf.io.encode_png(scene).numpy() for scene in scenes])
    questions = np.array(["where is the cat?", "how many red heart?", "is there a dog?"])
    vqa = SimMIMVQA(tiny_backbone(), answers=ANSWERS)
    folder, config = export_run_folder(
        tmp_path / "vqa", vqa, data={"scenes": True}, task="vqa"
    )
    path = export_run(folder, "emoji-vqa", base=tmp_path / "savedmodels")
    served = _serve(
        path,
        {"serving_default": {"image_bytes": image_bytes, "text": questions}},
        tmp_path / "served.npz",
    )
    x = build_preprocessor(config)({"images": image_bytes, "texts": questions})
    probabilities = tf.nn.softmax(vqa(x), -1).numpy()
    np.testing.assert_allclose(
        served["serving_default:probabilities"], probabilities, atol=1e-5
    )
    answers = [ANSWERS[i] for i in probabilities.argmax(-1)]
    assert list(_strings(served["serving_default:class_name"])) == answers


def test_a_truncated_model_file_is_named_as_such(retrieval_run, tmp_path):
    # Regression: Keras reported a truncated .keras file as "File not found".
    folder, _ = retrieval_run
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "config.yaml").write_bytes((folder / "config.yaml").read_bytes())
    whole = (folder / "model.keras").read_bytes()
    (damaged / "model.keras").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match="not a complete .keras archive"):
        export_run(damaged, "emoji", base=tmp_path / "savedmodels")
    (damaged / "model.keras").unlink()
    with pytest.raises(FileNotFoundError, match="model.keras not found"):
        export_run(damaged, "emoji", base=tmp_path / "savedmodels")
    assert not (tmp_path / "savedmodels").exists()
