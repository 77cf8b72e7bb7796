"""Evaluate a trained task on the test artist; metrics as nested dicts, on disk as JSON.

Retrieval metrics: `{"retrieval": {gallery: {direction: {ranking: {"R@1",
"R@5", "R@10"}}}}}` with gallery `test` (every emoji the test artist draws) or
`test_held_out` (concepts never seen in training), and the queries of `test`
split by concept: `test_seen_queries` and `test_held_out_queries`, each
against the whole gallery (how much of `test` the held-out concepts make),
direction `text_to_image`
or `image_to_text`, ranking `dual` (the towers' unimodal embeddings) or
`rerank` (the top `finetune.rerank_k` re-scored by the graph).
Classification metrics: `{"accuracy": {label: value}}`, plus `group` for a
subgroup classifier (each predicted subgroup's group, from static metadata).
Scene questions (`data.scenes`): `{"vqa": {gallery: {"all", "where",
"exists", "count", "group"}}}`, the accuracy of the answers.
"""

from __future__ import annotations

import json
import pathlib

import keras
import numpy as np

from simmim_tf.atomic import atomic_write_text
from simmim_tf.data.emoji_scenes import ANSWERS, QUESTION_TYPES
from simmim_tf.data.emoji_text import load_label_metadata
from simmim_tf.evaluation.plots import plot_retrieval_grid, plot_vqa_grid
from simmim_tf.evaluation.retrieval import recall_at_k
from simmim_tf.training.data import SCENE_LABEL, make_batches

GALLERIES = ("test", "test_held_out")
# The queries of the whole `test` gallery, by whether their concept is held out.
QUERY_SETS = {"test_seen_queries": False, "test_held_out_queries": True}
DIRECTIONS = ("text_to_image", "image_to_text")
RANKINGS = ("dual", "rerank")
RECALL_AT = (1, 5, 10)
VQA_GRID_SCENES = 12


def evaluate_model(
    model: keras.Model, config: dict, splits: dict, preprocessor, run_dir=None
) -> dict:
    """Metrics of `model` on the test artist (see the module docstring).

    With `run_dir`, a retriever also draws `retrieval_{ranking}_{artist}.png`.
    """
    if config["data"]["scenes"]:
        return answer_metrics(model, config, splits, preprocessor, run_dir)
    if config["finetune"]["task"] != "retrieve":
        return classification_metrics(model, config, splits, preprocessor)
    metrics, grid_rankings = {}, {}
    rerank_k = {"dual": 0, "rerank": config["finetune"]["rerank_k"]}
    held_out = held_out_examples(splits["test"], splits["test_held_out"])
    for gallery in GALLERIES:
        # Preprocessed once (cached) for both sides. Pair i is text i with
        # image i: each side is the other's gallery.
        batches = make_batches(config, splits[gallery], preprocessor).cache()
        encoded = {m: model.index(batches, m) for m in ("image", "text")}
        relevant = np.arange(len(encoded["image"]))
        query_sets = {gallery: np.ones(len(relevant), bool)}
        if gallery == "test":
            query_sets.update(
                (name, held_out == wanted) for name, wanted in QUERY_SETS.items()
            )
        for direction in DIRECTIONS:
            queries, items = (
                (encoded["text"], encoded["image"])
                if direction == "text_to_image"
                else (encoded["image"], encoded["text"])
            )
            for ranking in RANKINGS:
                found = model.search(
                    queries, items, k=max(RECALL_AT), rerank_k=rerank_k[ranking]
                )
                for name, subset in query_sets.items():
                    metrics.setdefault(name, {}).setdefault(direction, {})[ranking] = (
                        recall_at_k(found["indices"][subset], relevant[subset], RECALL_AT)
                    )
                if gallery == "test" and direction == "text_to_image":
                    grid_rankings[ranking] = found["indices"]
    if run_dir is not None:
        _retrieval_grids(
            splits["test"], grid_rankings, run_dir, config["data"]["test_artist"]
        )
    return {"retrieval": metrics}


def held_out_examples(test, test_held_out) -> np.ndarray:
    """`[len(test)]` bool: which examples of `test` are of a concept in
    `test_held_out` (by hexcode, the concept every artist shares)."""
    hexcodes = {
        split: list(ds.map(lambda e: e["hexcode"]).as_numpy_iterator())
        for split, ds in (("test", test), ("held_out", test_held_out))
    }
    return np.isin(hexcodes["test"], hexcodes["held_out"])


def classification_metrics(model, config: dict, splits, preprocessor) -> dict:
    """Top-1 accuracy of `finetune.label`; for `subgroup`, also group accuracy."""
    label = config["finetune"]["label"]
    batches = make_batches(config, splits["test"], preprocessor, label_key=label)
    predictions = np.argmax(model.predict(batches, verbose=0), -1)
    labels = {
        key: np.array([example[key] for example in splits["test"].as_numpy_iterator()])
        for key in (label, "group")
    }
    accuracy = {label: float(np.mean(predictions == labels[label]))}
    if label == "subgroup":
        group_of = np.array(load_label_metadata()["subgroup_groups"])
        accuracy["group"] = float(np.mean(group_of[predictions] == labels["group"]))
    return {"accuracy": accuracy}


def answer_metrics(model, config: dict, splits, preprocessor, run_dir=None) -> dict:
    """Accuracy of the answers to scene questions, over all questions and per
    question type, on the test artist's scenes and on its held-out concepts'.

    With `run_dir`, draws the first `VQA_GRID_SCENES` test scenes with their
    questions and answers as `vqa_{artist}.png`.
    """
    metrics = {}
    for gallery in GALLERIES:
        batches = make_batches(
            config, splits[gallery], preprocessor, label_key=SCENE_LABEL
        )
        predicted = np.argmax(model.predict(batches, verbose=0), -1)
        scenes = list(splits[gallery].as_numpy_iterator())
        answers = np.array([scene[SCENE_LABEL] for scene in scenes])
        kinds = np.array([scene["question_type"].decode() for scene in scenes])
        correct = predicted == answers
        metrics[gallery] = {"all": float(np.mean(correct))} | {
            kind: float(np.mean(correct[kinds == kind])) for kind in QUESTION_TYPES
        }
        if gallery == "test" and run_dir is not None:
            shown = scenes[:VQA_GRID_SCENES]
            plot_vqa_grid(
                np.stack([scene["image"] for scene in shown]),
                [scene["text"].decode() for scene in shown],
                [ANSWERS[i] for i in predicted[:VQA_GRID_SCENES]],
                [ANSWERS[i] for i in answers[:VQA_GRID_SCENES]],
                pathlib.Path(run_dir) / f"vqa_{config['data']['test_artist']}.png",
            )
    return {"vqa": metrics}


def metric_rows(metrics: dict) -> dict[str, dict[str, float]]:
    """Table rows of structured metrics: one per (gallery, direction, ranking),
    or one `accuracy` row."""
    if "accuracy" in metrics:
        return {"accuracy": metrics["accuracy"]}
    if "vqa" in metrics:
        return {f"{gallery} accuracy": row for gallery, row in metrics["vqa"].items()}
    return {
        f"{gallery} {direction} {ranking}": recalls
        for gallery, by_direction in metrics["retrieval"].items()
        for direction, by_ranking in by_direction.items()
        for ranking, recalls in by_ranking.items()
    }


def metrics_path(run_dir: str | pathlib.Path, config: dict) -> pathlib.Path:
    """`run_dir/metrics_<test artist>.json`: each test artist keeps its own file."""
    return pathlib.Path(run_dir) / f"metrics_{config['data']['test_artist']}.json"


def write_metrics(run_dir: str | pathlib.Path, config: dict, metrics: dict) -> None:
    """Write the metrics of one test artist, naming it in the file and its content."""
    record = {"test_artist": config["data"]["test_artist"], "metrics": metrics}
    atomic_write_text(metrics_path(run_dir, config), json.dumps(record, indent=2))


def read_metrics(run_dir: str | pathlib.Path, config: dict) -> dict:
    """The metrics `write_metrics` wrote for the config's test artist."""
    return json.loads(metrics_path(run_dir, config).read_text())["metrics"]


def _retrieval_grids(examples, rankings_by_name, run_dir, artist, num_queries=8) -> None:
    """`retrieval_{name}_{artist}.png` per ranking; the gallery is read once."""
    images, texts = [], []
    for example in examples.as_numpy_iterator():
        images.append(example["image"])
        texts.append(example["text"].decode())
    gallery = np.stack(images)
    queries = np.linspace(0, len(texts) - 1, num_queries).astype(int)
    for name, rankings in rankings_by_name.items():
        plot_retrieval_grid(
            [texts[q] for q in queries],
            gallery,
            rankings[queries],
            queries,
            pathlib.Path(run_dir) / f"retrieval_{name}_{artist}.png",
        )
