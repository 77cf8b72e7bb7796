"""The jobs behind `simmim-tf pretrain / finetune / evaluate` and the report.

Each job takes one config dict (see `DEFAULT_CONFIG`; files and `--set`
overrides go through `simmim_tf.training.load_config`) and a run folder that
receives `config.yaml`, TensorBoard logs, checkpoints, a resumable backup,
`history.json`, `training_curves.png` and the trained model, all written
atomically.

Protocol: train on one vendor's artwork of the *seen* concepts (80 % of the
emoji, chosen by `concept_held_out`); validate on the same vendor's held-out
concepts; test on another vendor: the whole gallery, and the held-out concepts
alone (emoji never seen in training).
"""

from __future__ import annotations

import copy
import json
import pathlib
import time

import keras
import numpy as np
import tensorflow as tf

from simmim_tf.atomic import atomic_directory, atomic_path, atomic_write_text
from simmim_tf.data import EmojiTextConfig, emoji_text_builder
from simmim_tf.data.emoji_text import DEFAULT_VENDORS
from simmim_tf.data.pipeline import make_dataset
from simmim_tf.encoders import build_tokenizer
from simmim_tf.evaluation.plots import plot_retrieval_grid, plot_training_curves
from simmim_tf.evaluation.retrieval import recall_at_k
from simmim_tf.models.backbone import SimMIMBackbone
from simmim_tf.models.baseline import LateFusionBaseline
from simmim_tf.models.classifier import SimMIMClassifier
from simmim_tf.models.preprocessor import SimMIMPreprocessor
from simmim_tf.models.pretrainer import SimMIMPretrainer, SimMIMPretrainerPreprocessor
from simmim_tf.models.retriever import SimMIMRetriever
from simmim_tf.training import (
    ScheduledLearningRate,
    save_config,
    split_by_concept,
    standard_callbacks,
)

DEFAULT_CONFIG: dict = {
    "seed": 0,
    "run_dir": "runs/experiment",
    "data": {
        "manual_dir": None,  # None: the bundled sample
        "data_dir": None,
        "train_vendor": "twitter",
        "test_vendor": "google",
        "held_out_fraction": 0.2,
        "batch_size": 64,  # contrastive losses want many in-batch negatives
        "sequence_length": 16,  # longer texts are truncated
        "image_size": 64,
    },
    "model": {
        "backbone": None,  # a preset folder (e.g. a pretrain run's backbone/)
        "image_encoder": "resnet18_64px",
        "text_encoder": None,  # None: pretrained MiniLM-L6
        "train_text_encoder": False,
        "hidden_dim": 128,
        "num_rounds": 2,
        "num_heads": 4,
        "attention_type": "gatv2",
        "dropout": 0.1,
    },
    "pretrain": {
        "epochs": 10,
        "learning_rate": 1e-3,
        "schedule": "cosine",
        "mim_weight": 1.0,
        "mlm_weight": 1.0,
        "itc_weight": 1.0,
        "itm_weight": 1.0,
        "mask_ratio": 0.6,
        "mask_patch_size": 16,
    },
    "finetune": {
        "task": "retrieve",  # retrieve | classify | baseline
        "label": "subgroup",
        "modalities": ["image", "text"],
        "epochs": 20,
        "learning_rate": 1e-3,
        "schedule": "cosine",
        # None: train every epoch. Validation loss on held-out twitter concepts
        # stops improving long before cross-artist recall does.
        "patience": None,
        "rerank_k": 16,
    },
}
TASKS = ("retrieve", "classify", "baseline")
SCHEDULES = ("cosine", "constant")
BACKUP_EVERY_STEPS = 20
MIN_PAIRS = 2  # contrastive losses need at least 2 pairs in every batch


def default_config(**sections) -> dict:
    """A deep copy of `DEFAULT_CONFIG` with some sections updated."""
    config = copy.deepcopy(DEFAULT_CONFIG)
    for key, value in sections.items():
        if isinstance(value, dict):
            config[key].update(value)
        else:
            config[key] = value
    return config


def build_backbone(config: dict) -> SimMIMBackbone:
    """The backbone of a config: a preset folder, or new encoders."""
    model = config["model"]
    if model["backbone"]:
        backbone = SimMIMBackbone.from_preset(str(model["backbone"]))
    else:
        backbone = SimMIMBackbone.from_encoder_configs(
            image_encoder=model["image_encoder"],
            text_encoder=model["text_encoder"],
            hidden_dim=model["hidden_dim"],
            num_rounds=model["num_rounds"],
            num_heads=model["num_heads"],
            attention_type=model["attention_type"],
            dropout=model["dropout"],
        )
    backbone.text_encoder.trainable = bool(model["train_text_encoder"])
    return backbone


def build_preprocessor(config: dict, pretraining: bool = False) -> SimMIMPreprocessor:
    data = config["data"]
    kwargs = dict(
        tokenizer=build_tokenizer(),
        image_size=(data["image_size"], data["image_size"]),
        sequence_length=data["sequence_length"],
    )
    if pretraining:
        return SimMIMPretrainerPreprocessor(
            **kwargs,
            mask_ratio=config["pretrain"]["mask_ratio"],
            mask_patch_size=config["pretrain"]["mask_patch_size"],
        )
    return SimMIMPreprocessor(**kwargs)


def load_splits(config: dict) -> tuple[dict[str, tf.data.Dataset], object]:
    """Feature-dict datasets: `train`, `validation`, `test`, `test_held_out`."""
    data = config["data"]
    vendors = tuple(dict.fromkeys((data["train_vendor"], data["test_vendor"])))
    builder_config = (
        "base"
        if set(vendors) <= set(DEFAULT_VENDORS)
        else EmojiTextConfig(name="-".join(vendors), vendors=vendors)
    )
    builder = emoji_text_builder(
        manual_dir=data["manual_dir"], data_dir=data["data_dir"], config=builder_config
    )
    split = dict(fraction=data["held_out_fraction"], seed=config["seed"])
    train_seen, train_held_out = split_by_concept(
        builder.as_dataset(split=data["train_vendor"]), **split
    )
    test = builder.as_dataset(split=data["test_vendor"])
    _, test_held_out = split_by_concept(test, **split)
    splits = {
        "train": train_seen,
        "validation": train_held_out,
        "test": test,
        "test_held_out": test_held_out,
    }
    return {name: ds.cache() for name, ds in splits.items()}, builder


def _batches(config, examples, preprocessor, *, label_key=None, training=False):
    """Batches of model inputs, of known length; without labels, >= 2 pairs each.

    Training drops a last, smaller batch when there is a full one: one batch
    shape means one traced training step (and a shuffle puts those examples
    in other batches next epoch). Evaluation keeps every example.
    """
    batch_size = config["data"]["batch_size"]
    full, rest = divmod(int(examples.reduce(0, lambda count, _: count + 1)), batch_size)
    drop_remainder = training and full > 0
    batches = make_dataset(
        examples,
        preprocessor,
        label_key=label_key,
        batch_size=batch_size,
        training=training,
        seed=config["seed"],
        drop_remainder=drop_remainder,
    )
    if drop_remainder:
        rest = 0
    if label_key is None:
        batches = batches.filter(_has_pairs)
        rest = rest if rest >= MIN_PAIRS else 0
    # The concept split's filter hides the length; progress bars and the
    # learning-rate schedule need it.
    return batches.apply(tf.data.experimental.assert_cardinality(full + (rest > 0)))


def _model_inputs_only(model, batches):
    """Drop inputs a model does not take (e.g. images for a text-only model)."""
    if isinstance(model, SimMIMRetriever):
        return batches
    keys = set(model.input)
    return batches.map(lambda x, y: ({k: v for k, v in x.items() if k in keys}, y))


def _has_pairs(inputs, *labels):
    return tf.shape(inputs["token_ids"])[0] >= MIN_PAIRS


def learning_rate(settings: dict, steps_per_epoch: int):
    """The learning rate of a `pretrain` or `finetune` config section.

    `"cosine"`: linear warm-up over the first epoch to `learning_rate`, then
    cosine decay to 0 at the last step (as CLIP trains); `"constant"`: flat.
    """
    schedule = settings.get("schedule", "constant")
    if schedule not in SCHEDULES:
        raise ValueError(f"Schedule {schedule!r} must be one of {SCHEDULES}.")
    if schedule == "constant":
        return settings["learning_rate"]
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        warmup_target=settings["learning_rate"],
        warmup_steps=steps_per_epoch,
        decay_steps=max(settings["epochs"] - 1, 1) * steps_per_epoch,
    )


def _fit(model, config, section, train, validation, run_dir, monitor):
    settings = config[section]
    if not model.built:  # BackupAndRestore needs built weights to restore into
        batch = next(iter(train))
        model(batch[0] if isinstance(batch, tuple) else batch)
    rate = learning_rate(settings, steps_per_epoch=int(train.cardinality()))
    callbacks = standard_callbacks(
        run_dir,
        monitor=monitor,
        mode="min",
        patience=settings.get("patience"),
        # A killed run resumes from at most this many steps back.
        backup_save_freq=BACKUP_EVERY_STEPS,
    )
    if callable(rate):
        callbacks.append(ScheduledLearningRate(rate))
        rate = float(rate(0))
    model.compile(optimizer=keras.optimizers.AdamW(rate))
    start = time.perf_counter()
    history = model.fit(
        train,
        validation_data=validation,
        epochs=settings["epochs"],
        shuffle=False,  # the pipeline shuffles, seeded
        callbacks=callbacks,
    )
    seconds = time.perf_counter() - start
    history = {key: [float(v) for v in values] for key, values in history.history.items()}
    atomic_write_text(run_dir / "history.json", json.dumps(history, indent=2))
    plot_training_curves({run_dir.name: history}, run_dir / "training_curves.png")
    return history, seconds


def run_pretrain(config: dict) -> dict:
    """Pre-train a backbone on image-text pairs (no labels); save it as a preset.

    Returns a dict with `backbone` (the preset folder), `history`, `seconds`.
    """
    keras.utils.set_random_seed(config["seed"])
    run_dir = pathlib.Path(config["run_dir"])
    save_config(config, run_dir / "config.yaml")
    splits, _ = load_splits(config)
    preprocessor = build_preprocessor(config, pretraining=True)
    weights = {
        k: config["pretrain"][k] for k in DEFAULT_CONFIG["pretrain"] if "weight" in k
    }
    pretrainer = SimMIMPretrainer(build_backbone(config), **weights)
    history, seconds = _fit(
        pretrainer,
        config,
        "pretrain",
        _batches(config, splits["train"], preprocessor, training=True),
        _batches(config, splits["validation"], preprocessor),
        run_dir,
        monitor="val_total_loss",
    )
    with atomic_directory(run_dir / "backbone") as folder:
        pretrainer.backbone.save_to_preset(folder)
    return {"backbone": str(run_dir / "backbone"), "history": history, "seconds": seconds}


def run_finetune(config: dict) -> dict:
    """Fine-tune for `finetune.task` with `fit`; save `model.keras`; evaluate.

    Returns a dict with `model`, `history`, `seconds` and `metrics` (see
    `evaluate_model`).
    """
    task = config["finetune"]["task"]
    if task not in TASKS:
        raise ValueError(f"Task {task!r} must be one of {TASKS}.")
    keras.utils.set_random_seed(config["seed"])
    run_dir = pathlib.Path(config["run_dir"])
    save_config(config, run_dir / "config.yaml")
    splits, builder = load_splits(config)
    preprocessor = build_preprocessor(config)
    label = None if task == "retrieve" else config["finetune"]["label"]
    model = build_task_model(config, builder, preprocessor)
    history, seconds = _fit(
        model,
        config,
        "finetune",
        _model_inputs_only(
            model,
            _batches(
                config, splits["train"], preprocessor, label_key=label, training=True
            ),
        ),
        _model_inputs_only(
            model, _batches(config, splits["validation"], preprocessor, label_key=label)
        ),
        run_dir,
        monitor="val_total_loss" if task == "retrieve" else "val_loss",
    )
    with atomic_path(run_dir / "model.keras", suffix=".keras") as temp:
        model.save(temp)
    metrics = evaluate_model(model, config, splits, preprocessor, run_dir)
    write_metrics(run_dir, config, metrics)
    return {"model": model, "history": history, "seconds": seconds, "metrics": metrics}


def build_task_model(config: dict, builder, preprocessor) -> keras.Model:
    """A new task model (retriever, classifier or baseline) for a config."""
    task = config["finetune"]["task"]
    if task == "retrieve":
        return SimMIMRetriever(build_backbone(config))
    num_classes = builder.info.features[config["finetune"]["label"]].num_classes
    if task == "classify":
        return SimMIMClassifier(
            backbone=build_backbone(config),
            num_classes=num_classes,
            modalities=tuple(config["finetune"]["modalities"]),
        )
    return LateFusionBaseline(
        num_classes=num_classes,
        vocabulary_size=preprocessor.tokenizer.vocabulary_size(),
        image_shape=(config["data"]["image_size"], config["data"]["image_size"], 3),
        modalities=tuple(config["finetune"]["modalities"]),
    )


def evaluate_run(run_dir: pathlib.Path, config: dict) -> dict:
    """Reload a finetune run's `model.keras` and evaluate it under `config`."""
    model_path = pathlib.Path(run_dir) / "model.keras"
    if not model_path.is_file():
        raise FileNotFoundError(f"{model_path} not found: is {run_dir} a finetune run?")
    model = keras.models.load_model(model_path)
    splits, _ = load_splits(config)
    metrics = evaluate_model(model, config, splits, build_preprocessor(config), run_dir)
    write_metrics(run_dir, config, metrics)
    return metrics


def metrics_path(run_dir: str | pathlib.Path, config: dict) -> pathlib.Path:
    """`run_dir/metrics_<test artist>.json`: each test artist keeps its own file."""
    return pathlib.Path(run_dir) / f"metrics_{config['data']['test_vendor']}.json"


def write_metrics(run_dir: str | pathlib.Path, config: dict, metrics: dict) -> None:
    """Write the metrics of one test artist, naming it in the file and its content."""
    record = {"test_artist": config["data"]["test_vendor"], "metrics": metrics}
    atomic_write_text(metrics_path(run_dir, config), json.dumps(record, indent=2))


def evaluate_model(model, config: dict, splits, preprocessor, run_dir=None) -> dict:
    """Metrics on the test vendor: accuracy, or Recall@1/5/10 both ways.

    Retrieval is scored on the whole test gallery and on the held-out
    concepts alone, with the dual encoder and with ITM re-ranking of the top
    `finetune.rerank_k`. With `run_dir`, a retrieval grid PNG is written.
    """
    task = config["finetune"]["task"]
    if task != "retrieve":
        return _classification_metrics(model, config, splits, preprocessor)
    metrics, grid_scores = {}, {}
    rerank_k = config["finetune"]["rerank_k"]
    for gallery in ("test", "test_held_out"):
        encoded = model.encode(_batches(config, splits[gallery], preprocessor))
        relevant = np.arange(len(encoded["padding_mask"]))
        for direction, short in (("text_to_image", "t→i"), ("image_to_text", "i→t")):
            for name, k in (("dual", 0), ("rerank", rerank_k)):
                scores = model.similarity(encoded, direction, rerank_k=k)
                for key, value in recall_at_k(scores, relevant).items():
                    metrics[f"{gallery} {short} {name} {key}"] = value
                if gallery == "test" and direction == "text_to_image":
                    grid_scores[name] = scores
    if run_dir is not None:
        _retrieval_grids(
            splits["test"], grid_scores, run_dir, config["data"]["test_vendor"]
        )
    return metrics


def _classification_metrics(model, config, splits, preprocessor) -> dict:
    """Top-1 accuracy; for `subgroup`, also group accuracy via each subgroup's group."""
    label = config["finetune"]["label"]
    batches = _batches(config, splits["test"], preprocessor, label_key=label)
    predictions = np.argmax(
        model.predict(_model_inputs_only(model, batches), verbose=0), -1
    )
    test = list(splits["test"].as_numpy_iterator())
    metrics = {
        f"{label} accuracy": float(np.mean(predictions == [e[label] for e in test]))
    }
    if label == "subgroup":
        group_of = {
            e["subgroup"]: e["group"] for e in splits["train"].as_numpy_iterator()
        }
        predicted_groups = [group_of.get(p, -1) for p in predictions]
        metrics["group accuracy"] = float(
            np.mean(np.equal(predicted_groups, [e["group"] for e in test]))
        )
    return metrics


def _retrieval_grids(examples, scores_by_name, run_dir, artist, num_queries=8) -> None:
    """`retrieval_{name}_{artist}.png` per score matrix; the gallery is read once."""
    images, texts = [], []
    for example in examples.as_numpy_iterator():
        images.append(example["image"])
        texts.append(example["text"].decode())
    gallery = np.stack(images)
    queries = np.linspace(0, len(texts) - 1, num_queries).astype(int)
    for name, scores in scores_by_name.items():
        top = np.argsort(-scores[queries], axis=1)[:, :5]
        plot_retrieval_grid(
            [texts[q] for q in queries],
            gallery,
            top,
            queries,
            run_dir / f"retrieval_{name}_{artist}.png",
        )
