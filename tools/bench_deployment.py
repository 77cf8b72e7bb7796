"""Measure the deployment paths of trained runs: TFLite and served SavedModels.

    python tools/bench_deployment.py --retrieval-run R [--classifier-run C]

For each TFLite variant that `simmim-tf tflite` writes (and the reason for
each it refuses): file size, LiteRT latency per
example (median), agreement with the Keras model on the test
artist (google): embedding max abs diff and text -> image R@1 / R@10 for
the retrieval towers, top-1 agreement for a classifier. For serving
(`simmim-tf export` behind `tests/model_server.py` on loopback, the stand-in
for `tensorflow_model_server`): p50 / p99 latency of `embed_text` and
`search` under 8 concurrent gRPC clients. Prints tables, writes JSON.
"""

import argparse
import json
import pathlib
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf

from simmim_tf.atomic import atomic_write_text
from simmim_tf.evaluation.report import print_table
from simmim_tf.evaluation.retrieval import recall_at_k
from simmim_tf.export import export_run, load_run, write_models_config
from simmim_tf.serving import GrpcClient, run_load
from simmim_tf.tflite import (
    VARIANTS,
    LiteModel,
    export_tflite,
    phone_inputs,
    preprocess_first,
)
from simmim_tf.training.data import load_splits
from simmim_tf.training.tasks import build_preprocessor

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_inputs(config: dict) -> tuple[dict, dict]:
    """The test split: model inputs (Keras) and batched phone inputs."""
    preprocessor = build_preprocessor(config)
    x = preprocess_first(preprocessor, load_splits(config)[0]["test"], 100_000)
    return x, phone_inputs(x, preprocessor.image_converter)


def run_lite(path: pathlib.Path, phone: dict, names: tuple[str, ...]) -> tuple:
    """Outputs for every example, one at a time, and the median seconds per call."""
    lite = LiteModel(path)
    outputs, seconds = [], []
    for index in range(len(phone[names[0]])):
        inputs = {name: phone[name][index : index + 1] for name in names}
        start = time.perf_counter()
        outputs.append(lite(inputs))
        seconds.append(time.perf_counter() - start)
    merged = {key: np.concatenate([o[key] for o in outputs]) for key in outputs[0]}
    return merged, float(np.median(seconds))


def bench_retrieval_tflite(run_dir: str, out: pathlib.Path) -> list[dict]:
    model, config = load_run(run_dir)
    manifest = export_tflite(run_dir, out)
    x, phone = test_inputs(config)
    backbone = model.backbone
    keras_text = tf.math.l2_normalize(
        backbone.text_tower(
            {"token_ids": x["token_ids"], "padding_mask": x["padding_mask"]}
        )["text_unimodal_embedding"],
        -1,
    ).numpy()
    keras_image = np.load(out / "gallery_embeddings.npy")
    relevant = np.arange(len(keras_image))

    def recall(queries, gallery):
        rankings = np.argsort(-(queries @ gallery.T), axis=1)[:, :10]
        return recall_at_k(rankings, relevant, ks=(1, 10))

    rows = {"Keras (float32)": {"max |diff|": 0.0, **recall(keras_text, keras_image)}}
    inputs = {"image_tower": ("pixels",), "text_tower": ("token_ids", "padding_mask")}
    for filename, info in manifest["files"].items():
        outputs, seconds = run_lite(out / filename, phone, inputs[info["model"]])
        embedding = outputs["embedding"]
        if info["model"] == "text_tower":
            diff, scores = (
                np.abs(embedding - keras_text).max(),
                recall(embedding, keras_image),
            )
        else:
            diff, scores = (
                np.abs(embedding - keras_image).max(),
                recall(keras_text, embedding),
            )
        rows[filename] = {
            "MB": info["bytes"] / 1e6,
            "ms/example": 1000 * seconds,
            "max |diff|": float(diff),
            **scores,
        }
    return {**rows, **refused_rows(manifest)}


def refused_rows(manifest: dict) -> dict:
    """What `export_tflite` refused to write, and why."""
    return {
        filename: {"refused": info["reason"]}
        for filename, info in manifest["refused"].items()
    }


def bench_classifier_tflite(run_dir: str, out: pathlib.Path) -> list[dict]:
    model, config = load_run(run_dir)
    manifest = export_tflite(run_dir, out)
    x, phone = test_inputs(config)
    features = {key: x[key] for key in model.input}
    expected = tf.nn.softmax(model.predict(features, verbose=0), -1).numpy()
    first = next(iter(manifest["files"].values()))
    names = tuple(first["inputs"])
    rows = {}
    for filename, info in manifest["files"].items():
        outputs, seconds = run_lite(out / filename, phone, names)
        got = outputs["probabilities"]
        rows[filename] = {
            "MB": info["bytes"] / 1e6,
            "ms/example": 1000 * seconds,
            "max |diff|": float(np.abs(got - expected).max()),
            "top-1 agreement": float(np.mean(got.argmax(-1) == expected.argmax(-1))),
        }
    return {**rows, **refused_rows(manifest)}


def bench_serving(run_dir: str, base: pathlib.Path, requests: int) -> list[dict]:
    export_run(run_dir, "emoji", base=base)
    write_models_config(base, root=str(base))
    ports = []
    for _ in range(2):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    server = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "tests" / "model_server.py"),
            f"--port={ports[0]}",
            f"--rest_api_port={ports[1]}",
            f"--model_config_file={base / 'models.config'}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        clients = [
            GrpcClient(f"127.0.0.1:{ports[0]}", "emoji", deadline=300) for _ in range(8)
        ]
        clients[0].signatures()
        texts = ["I could eat a whole pizza", "so tired", "happy birthday", "rain"]
        calls = {
            "embed_text": lambda i: clients[i % 8].predict(
                {"text": [texts[i % 4]]}, "embed_text"
            ),
            "search (k=5)": lambda i: clients[i % 8].predict(
                {"text": [texts[i % 4]], "k": 5}, "search"
            ),
        }
        rows = {}
        for name, call in calls.items():
            load = run_load(call, requests=requests, concurrency=8)
            latency = 1000 * np.array(load["latency_s"])
            rows[name] = {
                "requests": requests,
                "failed": len(load["errors"]),
                "p50 ms": float(np.percentile(latency, 50)),
                "p99 ms": float(np.percentile(latency, 99)),
                "req/s": requests / load["wall_s"],
            }
        return rows
    finally:
        server.terminate()
        server.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--retrieval-run", required=True)
    parser.add_argument("--classifier-run")
    parser.add_argument("--requests", type=int, default=1600, help="per signature")
    parser.add_argument("--json", default="docs/deployment.json")
    args = parser.parse_args()
    results = {"tflite_variants": list(VARIANTS)}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = pathlib.Path(scratch)
        results["retrieval_tflite"] = bench_retrieval_tflite(
            args.retrieval_run, scratch / "retrieval"
        )
        print_table(
            results["retrieval_tflite"],
            "TFLite retrieval towers (google)",
            name_column="file",
        )
        if args.classifier_run:
            results["classifier_tflite"] = bench_classifier_tflite(
                args.classifier_run, scratch / "classifier"
            )
            print_table(
                results["classifier_tflite"],
                "TFLite classifier (google)",
                name_column="file",
            )
        results["serving"] = bench_serving(
            args.retrieval_run, scratch / "savedmodels", args.requests
        )
        print_table(
            results["serving"],
            "Served SavedModel, 8 concurrent gRPC clients",
            name_column="signature",
        )
    results["command"] = "python tools/bench_deployment.py " + " ".join(sys.argv[1:])
    atomic_write_text(args.json, json.dumps(results, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
