"""Callbacks for long runs: atomic checkpoints and a resumable standard set."""

from __future__ import annotations

import contextlib
import csv
import glob
import json
import os
import shutil
import tempfile
import time

import h5py
import keras

from simmim_tf.atomic import atomic_path, atomic_write_text

# Longest first: `.weights.h5` must win over `.h5`.
_CHECKPOINT_EXTENSIONS = (".weights.h5", ".keras", ".h5")


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """`keras.callbacks.ModelCheckpoint` that never leaves a half-written file.

    Each checkpoint is written to a temporary file in the destination folder
    (same extension, so Keras accepts it), flushed to disk, then moved over the
    destination with `os.replace`, which is atomic on one filesystem. A crash or
    an error while saving leaves the previous checkpoint intact and removes the
    temporary file. Remote paths (`gs://…`) fall back to Keras' direct write.
    Everything else (`save_best_only`, `save_freq`, `{epoch}` in the path,
    `.keras` models and `.weights.h5` weights) is Keras' behaviour.

    Args:
        filepath: str or `PathLike`. As in `keras.callbacks.ModelCheckpoint`:
            `.weights.h5` with `save_weights_only=True`, else `.keras`.
        **kwargs: the other `keras.callbacks.ModelCheckpoint` arguments.

    Example:
    ```python
    checkpoint = AtomicModelCheckpoint(
        "runs/demo/checkpoints/best.weights.h5",
        monitor="val_loss",
        save_best_only=True,
        save_weights_only=True,
    )
    model.fit(train, validation_data=val, epochs=10, callbacks=[checkpoint])
    model.load_weights("runs/demo/checkpoints/best.weights.h5")
    ```
    """

    def _save_model(self, epoch, batch, logs):
        filepath = self._get_file_path(epoch, batch, logs)
        if "://" in filepath:  # gs://, s3://, …: no os.replace there.
            return super()._save_model(epoch, batch, logs)
        if not self._should_save_model(epoch, batch, logs, filepath):
            return
        if os.path.isdir(filepath):
            raise IsADirectoryError(
                "Please specify a non-directory filepath for ModelCheckpoint. "
                f"Filepath used is an existing directory: {filepath}"
            )
        directory = os.path.dirname(os.path.abspath(filepath))
        os.makedirs(directory, exist_ok=True)
        name = os.path.basename(filepath)
        extension = next((e for e in _CHECKPOINT_EXTENSIONS if name.endswith(e)), "")
        with atomic_path(filepath, suffix=extension) as temp_path:
            if self.save_weights_only:
                self.model.save_weights(temp_path, overwrite=True)
            else:
                self.model.save(temp_path, overwrite=True)
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: finished saving model to {filepath}")


class ResumableBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` that survives any interruption.

    Two fixes over Keras 3.15:

    - Atomic backups. Keras writes `latest.weights.h5` and
      `training_metadata.json` in place, so a `kill -9` during a write leaves a
      truncated file and every rerun fails (`OSError: Unable to synchronously
      open file`). Here each file is written to a hidden temporary sibling,
      flushed and moved into place with `os.replace`; the epoch of the backup
      is also stored inside the weights file, which makes replacing the
      weights the single commit point (see `_save_model`). At every instant the
      folder holds a complete backup, the previous one, or none, and the
      epoch restored is always that of the weights restored. At the end of
      `fit` the folder is first renamed away, then deleted. Leftovers of an
      interrupted write or deletion are removed when training begins.
    - Epoch of mid-epoch backups. Keras records the epoch of a backup in
      `_current_epoch`, which only `on_epoch_end` updates and a new callback
      starts at 0. After a resume, a mid-epoch backup (integer `save_freq`)
      taken before the resumed epoch ends therefore records epoch 0, and a
      second interruption restarts training from epoch 0. Here
      `on_epoch_begin` records the epoch in progress.

    This overrides Keras' private `_save_model` and `_load_model` (tested with
    Keras 3.15; `setup.py` pins `keras>=3.15,<3.16`): they only rely on Keras
    calling `_save_model()` from `on_epoch_end` and `on_train_batch_end` and
    `_load_model()` from `on_train_begin`. Remote folders (`gs://…`) keep
    Keras' direct writes. Backups written by stock Keras (no epoch inside the
    weights file) are restored with the epoch of `training_metadata.json`.

    Args:
        backup_dir: str or `PathLike`. Folder of the backup; not shared with
            another run.
        read_only: bool. Only restore, never write or delete: the workers of
            a multi-worker run other than the chief, which restore the
            chief's backup from the shared run folder.
        **kwargs: the other `keras.callbacks.BackupAndRestore` arguments.

    Example:
    ```python
    backup = ResumableBackupAndRestore("runs/demo/backup", save_freq=100)
    model.fit(train, epochs=10, callbacks=[backup])  # rerun after a crash
    ```
    """

    # HDF5 attribute of the weights file holding the JSON training metadata.
    METADATA_ATTRIBUTE = "training_metadata"

    def __init__(self, backup_dir: str | os.PathLike, read_only: bool = False, **kwargs):
        super().__init__(os.fspath(backup_dir), **kwargs)
        self.read_only = read_only

    @property
    def _is_local(self) -> bool:
        return "://" not in self.backup_dir

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch

    def on_train_begin(self, logs=None):
        if self._is_local and not self.read_only:
            self._remove_leftovers()
        super().on_train_begin(logs)

    def _remove_leftovers(self):
        """Removes temporaries of writes and deletions that were interrupted."""
        backup_dir = os.path.abspath(self.backup_dir)
        parent, name = os.path.split(backup_dir)
        for leftover in glob.glob(
            os.path.join(glob.escape(parent), f".{name}.*.deleted")
        ):
            shutil.rmtree(leftover, ignore_errors=True)
        if not os.path.isdir(backup_dir):
            return
        for path in (self._weights_path, self._training_metadata_path):
            # `atomic_path` temporaries, also those of the `.bkp` copies.
            pattern = f".{os.path.basename(path)}.*.tmp*"
            for temp in glob.glob(os.path.join(glob.escape(backup_dir), pattern)):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp)

    def _save_model(self):
        if self.read_only:
            return
        if not self._is_local:
            return super()._save_model()
        os.makedirs(self.backup_dir, exist_ok=True)
        if getattr(self, "double_checkpoint", False):  # not in every Keras 3
            for path in (self._weights_path, self._training_metadata_path):
                if os.path.exists(path):
                    with atomic_path(f"{path}.bkp") as temp_path:
                        shutil.copyfile(path, temp_path)
        metadata = json.dumps(
            {"epoch": self._current_epoch, "batch": self._last_batch_seen}
        )
        # The weights file carries its own metadata and is moved into place
        # first: that `os.replace` commits the backup. The JSON file, written
        # after it, mirrors the metadata for Keras and for people. A kill
        # between the two replaces leaves the JSON one backup behind; the
        # restore reads the epoch from the weights file, so it never pairs
        # weights with the epoch of another backup. (Even a reader of the JSON
        # would see new weights with an older epoch and retrain part of an
        # epoch, never skip one.)
        with atomic_path(self._weights_path, suffix=".weights.h5") as temp_path:
            self.model.save_weights(temp_path, overwrite=True)
            # Our own new temporary, with no other writer: no HDF5 file lock,
            # which a handle Keras has not yet released can still hold (seen
            # in CI as "unable to lock file, errno = 11").
            with h5py.File(temp_path, "r+", locking=False) as weights_file:
                weights_file.attrs[self.METADATA_ATTRIBUTE] = metadata
        atomic_write_text(self._training_metadata_path, metadata)

    def _load_model(self):
        if not self._is_local:
            return super()._load_model()
        if not self.model.built:
            raise ValueError(
                "To use the BackupAndRestore callback, your model must be built "
                f"before you call `fit()`. Model {self.model} is unbuilt."
            )
        if not os.path.exists(self._weights_path):
            # Without weights there is no backup (a metadata file alone would
            # resume a fresh model at a later epoch): train from scratch.
            return
        with h5py.File(self._weights_path, "r", locking=False) as weights_file:
            metadata = weights_file.attrs.get(self.METADATA_ATTRIBUTE)
        if metadata is None and os.path.exists(self._training_metadata_path):
            with open(self._training_metadata_path) as stream:  # stock Keras backup
                metadata = stream.read()
        optimizer = self.model.optimizer
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)  # so it is restored
        self.model.load_weights(self._weights_path)
        if metadata is not None:
            self.model._initial_epoch = json.loads(metadata)["epoch"]

    def on_train_end(self, logs=None):
        if self.read_only:
            return
        if not self._is_local:
            return super().on_train_end(logs)
        if not (self.delete_checkpoint and os.path.exists(self.backup_dir)):
            return
        # Deleting file by file could leave metadata without weights; renaming
        # the folder away removes the whole backup in one step.
        backup_dir = os.path.abspath(self.backup_dir)
        parent, name = os.path.split(backup_dir)
        trash = tempfile.mkdtemp(dir=parent, prefix=f".{name}.", suffix=".deleted")
        os.replace(backup_dir, os.path.join(trash, name))
        shutil.rmtree(trash, ignore_errors=True)


class ScheduledLearningRate(keras.callbacks.Callback):
    """Sets the optimizer's learning rate from a schedule before every batch.

    Given a `keras.optimizers.schedules.LearningRateSchedule` object, Keras'
    `AdamW` evaluates it once per variable inside the traced training step
    (for the weight decay): thousands of graph ops that make every trace
    slow. Here the optimizer holds a plain rate, set to `schedule(step)` before
    each batch, which is the same rate at the same step.

    Args:
        schedule: callable. Maps the optimizer's step (`iterations`) to a rate.

    Example:
    ```python
    schedule = keras.optimizers.schedules.CosineDecay(1e-3, decay_steps=1000)
    model.compile(optimizer=keras.optimizers.AdamW(float(schedule(0))), loss=...)
    model.fit(train, epochs=10, callbacks=[ScheduledLearningRate(schedule)])
    ```
    """

    def __init__(self, schedule):
        super().__init__()
        self.schedule = schedule

    def on_train_batch_begin(self, batch, logs=None):
        optimizer = self.model.optimizer
        step = int(keras.ops.convert_to_numpy(optimizer.iterations))
        optimizer.learning_rate = float(self.schedule(step))


EPOCH_LOG = "epochs.csv"
# The column of `EPOCH_LOG` with each epoch's wall seconds (not a metric).
EPOCH_SECONDS = "epoch_seconds"


class LossWarmup(keras.callbacks.Callback):
    """Leaves one loss out of training for the first `epochs` epochs.

    For ALBEF's order: ITC aligns the towers first, then ITM learns from the
    hard negatives those aligned embeddings pick. The loss is still computed
    and logged every epoch (its curve shows what it would be); only the total
    that is trained on leaves it out, and the validation total counts it all
    along. The model is a `SimMIMPretrainer` or a task that trains one as
    `objectives` (`SimMIMRetriever`). Which losses count is fixed when a step
    is traced, so the train step is traced again when it changes: twice a run.

    Args:
        loss: str. A loss name, e.g. `"itm"`.
        epochs: int. Epochs without it.

    Example:
    ```python
    retriever.fit(batches, epochs=20, callbacks=[LossWarmup("itm", epochs=5)])
    ```
    """

    def __init__(self, loss: str, epochs: int):
        super().__init__()
        self.loss = loss
        self.epochs = epochs

    def _objectives(self):
        return getattr(self.model, "objectives", self.model)

    def on_epoch_begin(self, epoch, logs=None):
        paused = self._objectives().paused_losses
        pause = epoch < self.epochs
        if pause != (self.loss in paused):
            if pause:
                paused.add(self.loss)
            else:
                paused.discard(self.loss)
            self.model.make_train_function(force=True)

    def on_train_end(self, logs=None):
        self._objectives().paused_losses.discard(self.loss)


class EpochTimer(keras.callbacks.Callback):
    """Adds each epoch's wall seconds to its logs as `EPOCH_SECONDS`, so that
    `epochs.csv` records what a run cost, across resumes."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs[EPOCH_SECONDS] = time.perf_counter() - self._start


def epoch_history(run_dir: str | os.PathLike) -> dict[str, list[float]]:
    """Every epoch's logs of a run (`standard_callbacks`' `epochs.csv`),
    across resumes: metric name -> one float per epoch, in epoch order.

    Example:
    ```python
    epoch_history("runs/demo")["val_loss"]  # [2.1, 1.7, ...]
    ```
    """
    with open(os.path.join(os.fspath(run_dir), EPOCH_LOG), newline="") as stream:
        rows = {int(row.pop("epoch")): row for row in csv.DictReader(stream)}
    epochs = [rows[epoch] for epoch in sorted(rows)]
    keys = list(epochs[0]) if epochs else []
    return {key: [float(row[key]) for row in epochs] for key in keys}


def standard_callbacks(
    run_dir: str | os.PathLike,
    *,
    monitor: str = "val_loss",
    mode: str = "auto",
    patience: int | None = 5,
    backup_save_freq: int | str = "epoch",
    tensorboard: bool = True,
    writes: bool = True,
) -> list[keras.callbacks.Callback]:
    """The callbacks of a resumable run that keeps its best weights.

    In order:
    - `keras.callbacks.TensorBoard` logging to `run_dir/logs` (if `tensorboard`);
    - `EpochTimer` and `keras.callbacks.CSVLogger` appending each epoch's
      logs and wall seconds (`epoch_seconds`) to `run_dir/epochs.csv`, across
      resumes (see `epoch_history`); a run with no backup to resume from
      starts a new file;
    - `AtomicModelCheckpoint` of the weights to
      `run_dir/checkpoints/best.weights.h5` when `monitor` improves (weights
      only, so any subclassed model can be reloaded with `load_weights`);
    - `ResumableBackupAndRestore` (a `keras.callbacks.BackupAndRestore`) in
      `run_dir/backup`, deleted when `fit` completes;
    - `keras.callbacks.TerminateOnNaN`;
    - `keras.callbacks.EarlyStopping(monitor, patience,
      restore_best_weights=True)` unless `patience` is None.

    Resuming: rerun the same script with the same `run_dir` after a crash or a
    kill. On `fit`, the backup restores the weights and the optimizer state of
    the last backup, and training continues at the epoch that was in progress.
    With `backup_save_freq="epoch"`, backups are taken at each epoch end, so
    training resumes at the first unfinished epoch and loses its partial work.
    With an integer, a backup is also taken every `backup_save_freq` batches;
    Keras 3.15 restores those weights but ignores the batch: the interrupted
    epoch is restarted from its first batch (its first batches are trained
    twice) and `history` holds only the epochs run since the resume
    (`epoch_history(run_dir)` holds them all). The model
    must be built and compiled the same way before `fit`; a completed run has
    no backup, so its rerun trains from scratch. `best` values of the
    checkpoint and early stopping start afresh after a resume.

    Args:
        run_dir: str or `PathLike`. Folder of the run.
        monitor: str. Metric deciding the best weights and early stopping.
        mode: str. `"auto"`, `"min"` or `"max"` for `monitor`.
        patience: int or None. Epochs without improvement before stopping;
            None disables early stopping.
        backup_save_freq: int or `"epoch"`. Backup every that many batches, or
            at each epoch end.
        tensorboard: bool. Whether to log to TensorBoard.
        writes: bool. False for a multi-worker run's workers other than the
            chief: they write nothing (no logs, checkpoints or backups) and
            restore the chief's backup from the shared `run_dir`.

    Returns:
        A list of callbacks for `model.fit`.

    Example:
    ```python
    model.fit(
        train,
        validation_data=val,
        epochs=20,
        callbacks=standard_callbacks("runs/demo", backup_save_freq=500),
    )
    model.load_weights("runs/demo/checkpoints/best.weights.h5")
    ```
    """
    if patience is not None and patience < 0:
        raise ValueError(f"Patience {patience} must be >= 0 or None.")
    if backup_save_freq != "epoch" and (
        not isinstance(backup_save_freq, int) or backup_save_freq <= 0
    ):
        raise ValueError(
            f"Backup save frequency {backup_save_freq!r} must be 'epoch' or a "
            "positive number of batches."
        )
    run_dir = os.fspath(run_dir)
    backup_dir = os.path.join(run_dir, "backup")
    callbacks: list[keras.callbacks.Callback] = []
    if writes:
        epoch_log = os.path.join(run_dir, EPOCH_LOG)
        if not os.path.isdir(backup_dir):  # not a resume
            with contextlib.suppress(FileNotFoundError):
                os.remove(epoch_log)
        os.makedirs(run_dir, exist_ok=True)
        if tensorboard:
            callbacks.append(keras.callbacks.TensorBoard(os.path.join(run_dir, "logs")))
        callbacks += [
            EpochTimer(),  # before the logger, which writes the seconds it adds
            # Before the backup: an epoch is logged before its end-of-epoch
            # backup, so a kill in between logs it twice (`epoch_history`
            # keeps the last).
            keras.callbacks.CSVLogger(epoch_log, append=True),
            AtomicModelCheckpoint(
                os.path.join(run_dir, "checkpoints", "best.weights.h5"),
                monitor=monitor,
                mode=mode,
                save_best_only=True,
                save_weights_only=True,
            ),
        ]
    callbacks += [
        ResumableBackupAndRestore(
            backup_dir,
            save_freq=backup_save_freq,
            delete_checkpoint=True,
            read_only=not writes,
        ),
        keras.callbacks.TerminateOnNaN(),
    ]
    if patience is not None:  # all workers stop together: the logs are all-reduced
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=monitor, mode=mode, patience=patience, restore_best_weights=True
            )
        )
    return callbacks
