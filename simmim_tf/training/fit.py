"""The training loop: Keras `fit` with the run's schedule, callbacks and records."""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import Sequence

import keras
import tensorflow as tf

from simmim_tf.atomic import atomic_write_text
from simmim_tf.evaluation.plots import plot_training_curves
from simmim_tf.training.callbacks import (
    EPOCH_SECONDS,
    ScheduledLearningRate,
    epoch_history,
    standard_callbacks,
)
from simmim_tf.training.config import SCHEDULES
from simmim_tf.training.distribute import (
    build_from_a_local_batch,
    is_chief,
    synchronize_batch_norm,
)

# A killed run resumes from at most this many steps back.
BACKUP_EVERY_STEPS = 20


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


def fit_model(
    model: keras.Model,
    settings: dict,
    train: tf.data.Dataset,
    validation: tf.data.Dataset,
    run_dir: pathlib.Path,
    monitor: str,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    jit_compile: bool = False,
) -> tuple[dict[str, list[float]], float]:
    """Compile with AdamW (the section's schedule and weight decay), `fit`; resumable.

    Writes TensorBoard logs, checkpoints and a backup (see
    `standard_callbacks`), then `history.json` and `training_curves.png`.
    Under a strategy of several replicas, batch normalisation averages over
    all of them; under a multi-worker strategy only the chief writes, and the
    other workers restore the chief's backup when resuming (the run folder is
    shared).

    Args:
        model: keras.Model. Any task (or the pretrainer).
        settings: dict. The `pretrain` or `finetune` config section.
        train, validation: batches from `make_batches`.
        run_dir: path. The run folder.
        monitor: str. The metric checkpoints and early stopping watch.
        callbacks: sequence of Keras callbacks, run after the standard ones.
        jit_compile: bool. Compile the train and validation steps with XLA
            (the model must build its graph padded, the batches must have a
            static size: `model.jit_compile`). The model is compiled without
            it afterwards, so that `predict` and a saved model take batches
            of any size.

    Returns:
        The history (metric name -> per-epoch floats) and the seconds `fit` took.
    """
    if not model.built:  # BackupAndRestore needs built weights to restore into
        batch = next(iter(train))
        model(batch[0] if isinstance(batch, tuple) else batch)
    rate = learning_rate(settings, steps_per_epoch=int(train.cardinality()))
    extra_callbacks = list(callbacks)
    chief = is_chief()
    callbacks = standard_callbacks(
        run_dir,
        monitor=monitor,
        mode="min",
        patience=settings.get("patience"),
        backup_save_freq=BACKUP_EVERY_STEPS,
        writes=chief,
    )
    if callable(rate):
        callbacks.append(ScheduledLearningRate(rate))
        rate = float(rate(0))
    model.compile(
        optimizer=keras.optimizers.AdamW(rate, weight_decay=settings["weight_decay"]),
        jit_compile=jit_compile,
    )
    synchronize_batch_norm(model)
    build_from_a_local_batch(model)
    start = time.perf_counter()
    history = model.fit(
        train,
        validation_data=validation,
        epochs=settings["epochs"],
        shuffle=False,  # the pipeline shuffles, seeded
        callbacks=callbacks + extra_callbacks,
    )
    seconds = time.perf_counter() - start
    if jit_compile:  # XLA was for training; inference takes batches of any size
        model.compile(optimizer=model.optimizer)
    if not chief:
        history = history.history
        return {key: history[key] for key in history if key != EPOCH_SECONDS}, seconds
    # Every epoch, those before a resume too (fit's own history has only the
    # epochs it ran).
    logged = epoch_history(run_dir)
    history = {key: logged[key] for key in history.history if key != EPOCH_SECONDS}
    atomic_write_text(run_dir / "history.json", json.dumps(history, indent=2))
    plot_training_curves({run_dir.name: history}, run_dir / "training_curves.png")
    return history, seconds
