"""Callbacks for long runs: atomic checkpoints and a resumable standard set."""

from __future__ import annotations

import os

import keras

from simmim_tf.atomic import atomic_path

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
    """`keras.callbacks.BackupAndRestore` that survives being interrupted twice.

    Keras 3.15 records the epoch of a backup in `_current_epoch`, which only
    `on_epoch_end` updates and a new callback starts at 0. After a resume, a
    mid-epoch backup (integer `save_freq`) taken before the resumed epoch ends
    therefore records epoch 0, and a second interruption restarts training
    from epoch 0. Here `on_epoch_begin` records the epoch in progress.

    Args:
        backup_dir: str or `PathLike`. Folder of the backup; not shared.
        **kwargs: the other `keras.callbacks.BackupAndRestore` arguments.

    Example:
    ```python
    backup = ResumableBackupAndRestore("runs/demo/backup", save_freq=100)
    model.fit(train, epochs=10, callbacks=[backup])  # rerun after a crash
    ```
    """

    def __init__(self, backup_dir: str | os.PathLike, **kwargs):
        super().__init__(os.fspath(backup_dir), **kwargs)

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch


def standard_callbacks(
    run_dir: str | os.PathLike,
    *,
    monitor: str = "val_loss",
    mode: str = "auto",
    patience: int | None = 5,
    backup_save_freq: int | str = "epoch",
    tensorboard: bool = True,
) -> list[keras.callbacks.Callback]:
    """The callbacks of a resumable run that keeps its best weights.

    In order:
    - `keras.callbacks.TensorBoard` logging to `run_dir/logs` (if `tensorboard`);
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
    twice) and `history` holds only the epochs run since the resume. The model
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
    callbacks: list[keras.callbacks.Callback] = []
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(run_dir, "logs")))
    callbacks += [
        AtomicModelCheckpoint(
            os.path.join(run_dir, "checkpoints", "best.weights.h5"),
            monitor=monitor,
            mode=mode,
            save_best_only=True,
            save_weights_only=True,
        ),
        ResumableBackupAndRestore(
            os.path.join(run_dir, "backup"),
            save_freq=backup_save_freq,
            delete_checkpoint=True,
        ),
        keras.callbacks.TerminateOnNaN(),
    ]
    if patience is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=monitor, mode=mode, patience=patience, restore_best_weights=True
            )
        )
    return callbacks
