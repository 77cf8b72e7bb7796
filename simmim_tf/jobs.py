"""The jobs behind `simmim-tf pretrain / finetune / evaluate`, the demo and the report.

Each job takes one config dict (the schema and defaults: `DEFAULT_CONFIG` in
`simmim_tf.training.config`; files and `--set` overrides go through
`load_config`) and fills a run folder: `config.yaml`, TensorBoard logs,
checkpoints, a resumable backup, `history.json`, `training_curves.png`, the
trained model and `metrics_<artist>.json`. Models, checkpoints, backups, the
config and the JSON files are written atomically.

Where each part lives: data and splits in `simmim_tf.training.data`, the
models of a config in `simmim_tf.training.tasks`, the training loop in
`simmim_tf.training.fit`, evaluation in `simmim_tf.evaluation.evaluate`.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import keras

from simmim_tf.atomic import atomic_directory, atomic_path
from simmim_tf.evaluation.evaluate import evaluate_model, write_metrics
from simmim_tf.model_files import load_model_file
from simmim_tf.training.callbacks import LossWarmup
from simmim_tf.training.config import save_config
from simmim_tf.training.data import (
    check_pretraining_split,
    check_scene_task,
    check_unseen_test_artist,
    load_splits,
    make_batches,
    task_label,
)
from simmim_tf.training.distribute import is_chief, make_strategy
from simmim_tf.training.fit import fit_model
from simmim_tf.training.tasks import (
    build_preprocessor,
    build_pretrainer,
    build_task_model,
)
from simmim_tf.training.text_states import with_frozen_text_states


def run_pretrain(config: dict) -> dict:
    """Pre-train a backbone on image-text pairs (no labels); save it as a preset.

    Trains under the config's `distribute` strategy; only its chief writes.
    Returns a dict with `backbone` (the preset folder), `history`, `seconds`.
    """
    # Before any other TF work.
    strategy = make_strategy(config["distribute"], config["model"]["jit_compile"])
    check_unseen_test_artist(config["data"])
    check_scene_task(config, "pretrain")
    keras.utils.set_random_seed(config["seed"])
    run_dir = pathlib.Path(config["run_dir"])
    chief = is_chief(strategy)
    if chief:
        save_config(config, run_dir / "config.yaml")
    splits, _ = load_splits(config)
    preprocessor = build_preprocessor(config, pretraining=True)
    with strategy.scope():
        pretrainer = build_pretrainer(config)
        train, validation = with_frozen_text_states(
            config,
            pretrainer.backbone.text_encoder,
            preprocessor,
            (splits["train"], splits["validation"]),
            make_batches(
                config, splits["train"], preprocessor, training=True, contrastive=True
            ),
            make_batches(
                config,
                splits["validation"],
                preprocessor,
                contrastive=True,
                static_shapes=config["model"]["jit_compile"],
            ),
        )
        history, seconds = fit_model(
            pretrainer,
            config["pretrain"],
            train,
            validation,
            run_dir,
            monitor="val_total_loss",
            jit_compile=config["model"]["jit_compile"],
        )
    if chief:
        with atomic_directory(run_dir / "backbone") as folder:
            pretrainer.backbone.save_to_preset(folder)
    return {"backbone": str(run_dir / "backbone"), "history": history, "seconds": seconds}


def run_finetune(
    config: dict, callbacks: Sequence[keras.callbacks.Callback] = ()
) -> dict:
    """Fine-tune for `finetune.task` with `fit`; save `model.keras`; evaluate.

    Trains under the config's `distribute` strategy; only its chief writes and
    evaluates (on one device: a model of several replicas is read back from
    `model.keras` first). `callbacks` (Keras callbacks) run during `fit` after
    the standard ones.

    Returns a dict with `model`, `history`, `seconds` and `metrics` (see
    `simmim_tf.evaluation.evaluate`; None on the other workers).
    """
    # Before any other TF work.
    strategy = make_strategy(config["distribute"], config["model"]["jit_compile"])
    check_unseen_test_artist(config["data"])
    check_scene_task(config, "finetune")
    check_pretraining_split(config)
    keras.utils.set_random_seed(config["seed"])
    run_dir = pathlib.Path(config["run_dir"])
    chief = is_chief(strategy)
    if chief:
        save_config(config, run_dir / "config.yaml")
    splits, builder = load_splits(config)
    preprocessor = build_preprocessor(config)
    retrieval = config["finetune"]["task"] == "retrieve"
    label, num_classes = task_label(config, builder)
    batches = dict(label_key=label, contrastive=retrieval)
    with strategy.scope():
        model = build_task_model(config, num_classes)
        train = make_batches(
            config, splits["train"], preprocessor, training=True, **batches
        )
        validation = make_batches(
            config,
            splits["validation"],
            preprocessor,
            static_shapes=config["model"]["jit_compile"],
            **batches,
        )
        if retrieval:
            train, validation = with_frozen_text_states(
                config,
                model.backbone.text_encoder,
                preprocessor,
                (splits["train"], splits["validation"]),
                train,
                validation,
            )
        warmup = config["finetune"]["itm_warmup_epochs"]
        if retrieval and warmup:
            callbacks = [LossWarmup("itm", warmup), *callbacks]
        history, seconds = fit_model(
            model,
            config["finetune"],
            train,
            validation,
            run_dir,
            monitor="val_total_loss" if retrieval else "val_loss",
            callbacks=callbacks,
            jit_compile=config["model"]["jit_compile"],
        )
    result = {"model": model, "history": history, "seconds": seconds, "metrics": None}
    if not chief:
        return result
    with atomic_path(run_dir / "model.keras", suffix=".keras") as temp:
        model.save(temp)
    if strategy.num_replicas_in_sync > 1:
        model = load_model_file(run_dir / "model.keras")
    metrics = evaluate_model(model, config, splits, preprocessor, run_dir)
    write_metrics(run_dir, config, metrics)
    return {**result, "model": model, "metrics": metrics}


def evaluate_run(run_dir: str | pathlib.Path, config: dict) -> dict:
    """Reload a finetune run's `model.keras` and evaluate it under `config`."""
    model = load_model_file(pathlib.Path(run_dir) / "model.keras")
    splits, _ = load_splits(config)
    metrics = evaluate_model(model, config, splits, build_preprocessor(config), run_dir)
    write_metrics(run_dir, config, metrics)
    return metrics
