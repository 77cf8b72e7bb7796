"""pretrain -> finetune -> evaluate through the CLI, tiny models on the sample."""

import json
import pathlib
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml

import simmim_tf
from simmim_tf.cli import main
from simmim_tf.data import load_emoji_text
from simmim_tf.evaluation.evaluate import metric_rows
from simmim_tf.jobs import run_finetune, run_pretrain
from simmim_tf.recommend import emoji_characters, recommend
from simmim_tf.training.callbacks import epoch_history
from simmim_tf.training.config import DEFAULT_CONFIG, load_config, save_config
from simmim_tf.training.data import (
    check_pretraining_split,
    check_unseen_test_artist,
    load_splits,
    make_batches,
)
from simmim_tf.training.fit import learning_rate
from simmim_tf.training.splits import concept_held_out
from simmim_tf.training.tasks import build_preprocessor

TINY = {
    "data": {"image_size": 16, "batch_size": 32, "sequence_length": 12},
    "model": {"image_encoder": "tiny_16px", "text_encoder": "tiny", "hidden_dim": 16},
    "pretrain": {"epochs": 1, "mask_patch_size": 4},
    "finetune": {"epochs": 1, "rerank_k": 4},
}


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("workflows")
    config = {**TINY, "data": {**TINY["data"], "data_dir": str(folder / "tfds")}}
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_pretrain_then_finetune_from_it_then_evaluate(config_file, tmp_path, capsys):
    pre, fine = tmp_path / "pre", tmp_path / "fine"
    assert (
        main(["pretrain", "--config", str(config_file), "--set", f"run_dir={pre}"]) == 0
    )
    history = json.loads((pre / "history.json").read_text())
    assert {"mim_loss", "mlm_loss", "itc_loss", "itm_loss", "val_total_loss"} <= set(
        history
    )
    # The epoch's cost is in the epoch log, not among the metrics plotted.
    assert "epoch_seconds" not in history
    assert epoch_history(pre)["epoch_seconds"][0] > 0
    assert (pre / "training_curves.png").is_file() and (pre / "logs").is_dir()
    pretrained = simmim_tf.SimMIMBackbone.from_preset(str(pre / "backbone"))

    # A learning rate of 0 keeps the starting weights: they must be the
    # pre-trained backbone's, every one of them (batch-norm statistics move
    # in any training step).
    args = ["finetune", "--config", str(config_file), "--set", f"run_dir={fine}"]
    args += ["--set", f"model.backbone={pre / 'backbone'}"]
    args += ["--set", "finetune.learning_rate=0.0", "--set", "finetune.schedule=constant"]
    args += ["--set", "model.jit_compile=true"]  # XLA, the padded graph: same numbers
    assert main(args) == 0
    saved = yaml.safe_load((fine / "config.yaml").read_text())
    assert saved["model"]["backbone"] == str(pre / "backbone")
    fine_tuned = keras.models.load_model(fine / "model.keras").backbone
    assert fine_tuned.padded_graph and not pretrained.padded_graph
    for ours, theirs in zip(fine_tuned.weights, pretrained.weights, strict=True):
        if "moving_" not in ours.path:
            np.testing.assert_array_equal(ours.numpy(), theirs.numpy(), ours.path)
    record = json.loads((fine / "metrics_google.json").read_text())
    assert record["test_artist"] == "google"
    metrics = record["metrics"]["retrieval"]
    assert set(metrics) == {
        "test",
        "test_held_out",
        "test_seen_queries",
        "test_held_out_queries",
    }
    # Dual R@1 over the whole google gallery, recomputed from the raw data,
    # for every query and for the queries of seen and held-out concepts.
    outputs = fine_tuned(_raw_test_inputs(saved, build_preprocessor(saved)))
    images = tf.math.l2_normalize(outputs["image_unimodal_embedding"], -1).numpy()
    texts = tf.math.l2_normalize(outputs["text_unimodal_embedding"], -1).numpy()
    hits = np.argmax(texts @ images.T, axis=1) == np.arange(len(texts))
    labels = np.array([e["label"].numpy() for e in _test_examples(saved)])
    split = dict(
        fraction=saved["data"]["held_out_fraction"], seed=saved["data"]["split_seed"]
    )
    held_out = concept_held_out(labels, **split).numpy()
    assert 0 < held_out.sum() < len(held_out)
    for queries, subset in (
        ("test", slice(None)),
        ("test_seen_queries", ~held_out),
        ("test_held_out_queries", held_out),
    ):
        r_at_1 = metrics[queries]["text_to_image"]["dual"]["R@1"]
        assert r_at_1 == pytest.approx(np.mean(hits[subset])), queries
    # A gallery of the held-out concepts alone has fewer wrong answers.
    for k in ("R@1", "R@5", "R@10"):
        held_out_queries = metrics["test_held_out_queries"]["text_to_image"]["dual"]
        assert held_out_queries[k] <= metrics["test_held_out"]["text_to_image"]["dual"][k]
    assert (fine / "retrieval_rerank_google.png").is_file()

    capsys.readouterr()
    assert main(["evaluate", "--run-dir", str(fine)]) == 0
    again = json.loads((fine / "metrics_google.json").read_text())["metrics"]
    assert _flat(again) == pytest.approx(_flat(record["metrics"]))
    out = capsys.readouterr().out
    assert "test text_to_image dual" in out and "tested on google" in out

    # Another test artist lands beside, never over, google's results.
    args = ["evaluate", "--run-dir", str(fine), "--set", "data.test_artist=noto_v1"]
    assert main(args) == 0
    noto = json.loads((fine / "metrics_noto_v1.json").read_text())
    assert noto["test_artist"] == "noto_v1"
    # Other images, other recall.
    assert _flat(noto["metrics"]) != pytest.approx(_flat(record["metrics"]))
    assert (fine / "retrieval_dual_noto_v1.png").is_file()
    assert json.loads((fine / "metrics_google.json").read_text())["metrics"] == again
    assert "tested on noto_v1" in capsys.readouterr().out
    assert not (fine / "metrics.json").exists()

    # Recommend: the dual top candidates, re-ranked, as the CLI prints them.
    query = "slice of pizza"
    grid = tmp_path / "pizza.png"
    args = ["recommend", "--run-dir", str(fine), query, "--grid", str(grid)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert grid.is_file() and (fine / "index_google.npz").is_file()
    found = recommend(fine, [query], k=5)[0]  # the cached index, loaded
    examples = _test_examples(saved)
    inputs = _raw_test_inputs(saved, build_preprocessor(saved))
    images = tf.math.l2_normalize(
        fine_tuned.image_tower(inputs["images"])["image_unimodal_embedding"], -1
    )
    text_preprocessor = build_preprocessor(saved, modalities=("text",))
    text = fine_tuned.text_tower(text_preprocessor({"texts": [query]}))
    text = tf.math.l2_normalize(text["text_unimodal_embedding"], -1)
    dual = np.argsort(-(text.numpy() @ images.numpy().T)[0])
    hexcodes = [example["hexcode"].numpy().decode() for example in examples]
    rerank_k = saved["finetune"]["rerank_k"]
    got = [row["hexcode"] for row in found]
    assert set(got[:rerank_k]) == {hexcodes[i] for i in dual[:rerank_k]}
    assert got[rerank_k:] == [hexcodes[i] for i in dual[rerank_k:5]]
    assert [row["reranked"] for row in found] == [True] * rerank_k + [False] * (
        5 - rerank_k
    )
    for rank, row in enumerate(found, start=1):
        assert f"{rank:>3}  {emoji_characters(row['hexcode'])}  {row['name']}" in printed


@pytest.mark.parametrize(
    "task, modalities",
    [
        ("classify", "[image]"),
        ("classify", "[text]"),
        ("baseline", "null"),
        ("baseline", "[image]"),
    ],
)
def test_finetune_classifiers(config_file, tmp_path, task, modalities):
    args = ["finetune", "--config", str(config_file), "--set", f"run_dir={tmp_path}"]
    args += ["--set", f"finetune.task={task}", "--set", "finetune.label=group"]
    if modalities != "null":
        args += ["--set", f"finetune.modalities={modalities}"]
    assert main(args) == 0
    metrics = json.loads((tmp_path / "metrics_google.json").read_text())["metrics"]
    # The reported accuracy, recomputed from the saved model on the raw test set.
    model = keras.models.load_model(tmp_path / "model.keras")
    config = load_config(tmp_path / "config.yaml", defaults=DEFAULT_CONFIG)
    x = _raw_test_inputs(config, build_preprocessor(config))
    predicted = np.argmax(model.predict(x, verbose=0), -1)
    groups = [int(e["group"]) for e in _test_examples(config)]
    assert metrics["accuracy"]["group"] == pytest.approx(np.mean(predicted == groups))
    assert (tmp_path / "checkpoints" / "best.weights.h5").is_file()
    assert not (tmp_path / "backup").exists()  # deleted once fit completes


def _flat(metrics: dict) -> dict:
    """{'test text_to_image dual R@1': value, ...}: what pytest.approx compares."""
    return {
        f"{row} {name}": value
        for row, values in metric_rows(metrics).items()
        for name, value in values.items()
    }


def _test_examples(config):
    return list(load_emoji_text("google", data_dir=config["data"]["data_dir"]))


def _raw_test_inputs(config, preprocessor):
    """Every google example, through the preprocessor in one batch."""
    examples = _test_examples(config)
    return preprocessor(
        {
            "images": np.stack([e["image"].numpy() for e in examples]),
            "texts": np.array([e["text"].numpy() for e in examples]),
        }
    )


def test_emoji_characters_from_hexcodes():
    assert emoji_characters("1F355") == "🍕"
    assert emoji_characters("1F468-200D-1F373") == "👨‍🍳"


def test_config_errors_are_clear(tmp_path, capsys):
    assert main(["finetune", "--set", "finetune.epoch=3"]) == 2
    assert "finetune.epoch" in capsys.readouterr().err
    assert main(["finetune", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
    bad = ["finetune", "--set", "finetune.task=segment", "--set", f"run_dir={tmp_path}"]
    assert main(bad) == 2
    assert "Task 'segment' must be one of" in capsys.readouterr().err
    assert "run_dir" in DEFAULT_CONFIG


def test_cosine_schedule_warms_up_then_decays_to_zero():
    settings = {"learning_rate": 1e-3, "epochs": 5, "schedule": "cosine"}
    rate = learning_rate(settings, steps_per_epoch=10)
    values = [float(rate(step)) for step in range(51)]
    assert values[0] == 0.0 and values[5] == pytest.approx(5e-4)
    assert max(values) == pytest.approx(1e-3) and np.argmax(values) == 10
    assert values[30] == pytest.approx(5e-4, rel=1e-3)  # half-way through the decay
    assert values[50] == pytest.approx(0.0, abs=1e-9)
    assert all(a >= b for a, b in zip(values[10:], values[11:], strict=False))
    assert learning_rate({**settings, "schedule": "constant"}, 10) == 1e-3
    with pytest.raises(ValueError, match="Schedule 'step' must be one of"):
        learning_rate({**settings, "schedule": "step"}, 10)


@pytest.mark.parametrize(
    "count, label_key, training, contrastive, steps",
    [
        # A gallery of 33 is scored whole, its last batch of 1 included...
        (33, None, False, False, 2),
        # ... but a contrastive loss drops a last batch of 1 pair.
        (33, None, False, True, 1),
        (34, None, False, True, 2),
        (33, "group", False, False, 2),
        # Training drops the smaller last batch (one traced step shape)...
        (33, "group", True, False, 1),
        (65, None, True, True, 2),
        # ... unless there is no full batch at all.
        (20, "group", True, False, 1),
    ],
)
def test_batches_declare_the_length_they_yield(
    config_file, count, label_key, training, contrastive, steps
):
    config = load_config(str(config_file), defaults=DEFAULT_CONFIG)
    splits, _ = load_splits(config)
    examples = splits["train"].take(count)
    batches = make_batches(
        config,
        examples,
        build_preprocessor(config),
        label_key=label_key,
        training=training,
        contrastive=contrastive,
    )
    assert int(batches.cardinality()) == steps
    inputs = (batch[0] if label_key else batch for batch in batches)
    sizes = [int(tf.shape(x["token_ids"])[0]) for x in inputs]
    assert len(sizes) == steps
    if not training and not contrastive:
        assert sum(sizes) == count
    if training and count >= 32:
        assert sizes == [32] * steps


def test_every_stage_and_seed_trains_on_one_concept_split(config_file):
    # Pre-training runs with seed 0 and fine-tuning with seeds 0 and 1: the
    # held-out concepts depend on data.split_seed alone, and none of them
    # reaches a training batch of any of these runs.
    base = load_config(str(config_file), defaults=DEFAULT_CONFIG)

    def concepts(config):
        splits, _ = load_splits(config)
        batches = make_batches(
            config,
            splits["train"],
            build_preprocessor(config),
            label_key="label",
            training=True,
        )
        trained = {int(label) for _, labels in batches for label in labels}
        held_out = {
            int(example["label"])
            for name in ("validation", "test_held_out")
            for example in splits[name].as_numpy_iterator()
        }
        return trained, held_out

    runs = [concepts({**base, "seed": seed}) for seed in (0, 1)]
    held_out = runs[0][1]
    assert held_out and runs[1][1] == held_out
    for trained, _ in runs:
        assert trained and trained.isdisjoint(held_out)
    other = concepts({**base, "data": {**base["data"], "split_seed": 1}})[1]
    assert other != held_out


def test_finetuning_refuses_a_backbone_pretrained_under_another_split(
    config_file, tmp_path
):
    config = load_config(str(config_file), defaults=DEFAULT_CONFIG)
    pretrained = {**config, "data": {**config["data"], "split_seed": 1}}
    save_config(pretrained, tmp_path / "pre" / "config.yaml")
    (tmp_path / "pre" / "backbone").mkdir()
    config["model"]["backbone"] = str(tmp_path / "pre" / "backbone")
    config["run_dir"] = str(tmp_path / "fine")
    with pytest.raises(ValueError, match=r"data.split_seed: 1 there, 0 here"):
        run_finetune(config)
    assert not (tmp_path / "fine").exists()  # refused before anything is written
    save_config(config, tmp_path / "pre" / "config.yaml")
    check_pretraining_split(config)  # the same split: accepted


def test_several_training_artists_share_one_concept_split(config_file):
    # twitter + two SVG artists of the sample: every training batch carries
    # pair ids (the emoji class), mixes artists, and no artist's drawing of a
    # held-out concept is trained on.
    base = load_config(str(config_file), defaults=DEFAULT_CONFIG)
    artists = ["twitter", "openmoji", "emojione"]
    config = {**base, "data": {**base["data"], "train_artists": artists}}
    splits, builder = load_splits(config)
    train = list(splits["train"].as_numpy_iterator())
    assert {e["vendor"].decode() for e in train} == set(artists)
    held_out = {int(e["label"]) for e in splits["validation"].as_numpy_iterator()}
    assert held_out and held_out.isdisjoint(int(e["label"]) for e in train)
    batches = make_batches(
        config,
        splits["train"],
        build_preprocessor(config),
        label_key="vendor",
        training=True,
        contrastive=True,
    )
    for inputs, vendors in batches:
        assert len(set(vendors.numpy())) >= 2
        assert inputs["pair_ids"].shape == inputs["token_ids"].shape[:1]
    # Pair ids are the classes: the same emoji by two artists shares one id.
    labels = {(e["vendor"], e["hexcode"]): int(e["label"]) for e in train}
    shared = [h for (v, h) in labels if v == b"openmoji" and (b"twitter", h) in labels]
    assert shared and all(
        labels[(b"openmoji", h)] == labels[(b"twitter", h)] for h in shared
    )


@pytest.mark.parametrize(
    "train_artists, test_artist, message",
    [
        (["twitter", "google"], "google", "includes the test artist 'google'"),
        (["twitter", "noto_v1"], "google", "'noto_v1', google's earlier design"),
        (["twitter", "myartist"], "google", "Unknown emoji artist 'myartist'"),
        ([], "google", "data.train_artists is empty"),
        ("twitter", "google", "must be a list of artists"),
    ],
)
def test_training_artists_that_break_the_protocol_are_refused(
    config_file, tmp_path, train_artists, test_artist, message
):
    config = load_config(str(config_file), defaults=DEFAULT_CONFIG)
    config["data"].update(train_artists=train_artists, test_artist=test_artist)
    config["run_dir"] = str(tmp_path / "run")
    for job in (run_pretrain, run_finetune):
        with pytest.raises((ValueError, TypeError), match=re.escape(message)):
            job(config)
    assert not (tmp_path / "run").exists()  # refused before anything is written
    # Noto v1 may train a model tested on another artist.
    if test_artist == "google" and "noto_v1" in train_artists:
        config["data"]["test_artist"] = "openmoji"
        check_unseen_test_artist(config["data"])


def test_recipe_files_use_only_keys_of_the_schema():
    # A file's keys merge unchecked (old run folders keep old keys): a typo
    # in a shipped recipe would silently do nothing.
    def unknown_keys(settings, schema, prefix=""):
        for key, value in settings.items():
            if key not in schema:
                yield prefix + key
            elif isinstance(value, dict):
                yield from unknown_keys(value, schema[key], f"{prefix}{key}.")

    recipes = sorted((pathlib.Path(__file__).parents[1] / "configs").glob("*.yaml"))
    assert recipes
    for recipe in recipes:
        assert not list(unknown_keys(yaml.safe_load(recipe.read_text()), DEFAULT_CONFIG))
        load_config(recipe, defaults=DEFAULT_CONFIG)
