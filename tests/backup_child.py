"""Child process of `test_backup_kill.py`: trains, backs up, and `SIGKILL`s itself.

Usage: `python tests/backup_child.py WORK_DIR [--stock] [--kill JSON]`.

Trains `build_model()` for `EPOCHS` epochs of `STEPS` steps with a backup in
`WORK_DIR/backup` taken after every step (`save_freq=1`), by
`ResumableBackupAndRestore` or, with `--stock`, by
`keras.callbacks.BackupAndRestore`. Before each backup write `save` (1, 2, …)
it stores the state being backed up in `WORK_DIR/save{save}.npz` and logs
`start` to `WORK_DIR/log.jsonl`, with the optimizer step and the epoch the
backup records; after it, it logs `done`; `finished` when `fit` returns.

`--kill '{"phase": "save", "save": 3, "kind": "h5write", "n": 8, "when": "after"}'`
sends `SIGKILL` to this process right before or after the `n`-th operation of
`kind` inside that backup write (`"phase": "end"`: inside the deletion of the
backup when `fit` ends). Kinds: `h5open` (an HDF5 file opened for writing),
`h5write` (an HDF5 group or dataset created), `h5attr` (an HDF5 attribute
set), `h5close`, `open_w` (a file opened for writing), `fsync`, `replace`
(`os.replace` or `os.rename`) and `unlink` (`os.unlink` or `os.rmdir`). With
`BACKUP_CHILD_TRACE=1` in the environment, every such operation is logged.
"""

from __future__ import annotations

import argparse
import builtins
import importlib
import json
import os
import pathlib
import signal
import sys
import types

import numpy as np

EPOCHS, STEPS, BATCH = 2, 4, 8  # with `save_freq=1`: 8 backups in all


def build_model():
    """The same model, with the same initial weights, in every process."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(1),
        ]
    )
    # Eager: no tracing, a child starts killing sooner (backups are the same).
    model.compile(keras.optimizers.Adam(0.01), "mse", run_eagerly=True)
    model.optimizer.build(model.trainable_variables)
    return model


def fit(model, callbacks):
    x = np.random.default_rng(0).normal(size=(STEPS * BATCH, 4)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    return model.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=EPOCHS,
        shuffle=False,
        callbacks=callbacks,
        verbose=0,
    )


def training_state(model) -> list[np.ndarray]:
    """The weights, then the optimizer variables (its step first)."""
    import keras

    variables = list(model.weights) + list(model.optimizer.variables)
    return [np.array(keras.ops.convert_to_numpy(v)) for v in variables]


def _import_without_package_init(module: str):
    """Imports `simmim_tf.….module` from its file, without running the packages'
    `__init__` (they import keras-hub and the models: seconds per child)."""
    root = pathlib.Path(__file__).resolve().parents[1]
    parts = module.split(".")
    for depth in range(1, len(parts)):
        name = ".".join(parts[:depth])
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [str(root.joinpath(*parts[:depth]))]
            sys.modules[name] = package
    return importlib.import_module(module)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("work_dir", type=pathlib.Path)
    parser.add_argument("--stock", action="store_true")
    parser.add_argument("--kill", type=json.loads, default=None)
    args = parser.parse_args()

    import keras

    trace = bool(os.environ.get("BACKUP_CHILD_TRACE"))
    kill = args.kill
    phase = None  # ("save", index) or ("end",) while a backup is written or deleted
    counts: dict[str, int] = {}
    unpatched_open = builtins.open

    def log(event: dict):
        with unpatched_open(args.work_dir / "log.jsonl", "a") as stream:
            stream.write(json.dumps(event) + "\n")

    def tick(kind: str, when: str):
        if phase is None:
            return
        if when == "before":
            counts[phase, kind] = counts.get((phase, kind), 0) + 1
            if trace:
                log({"event": "op", "phase": phase, "kind": kind})
        if kill is None or kind != kill["kind"] or when != kill["when"]:
            return
        target = ("save", kill["save"]) if kill["phase"] == "save" else ("end",)
        if phase == target and counts[phase, kind] == kill["n"]:
            os.kill(os.getpid(), signal.SIGKILL)

    def count(owner, name: str, kind: str, applies=None):
        original = getattr(owner, name)

        def counted(*args, **kwargs):
            counts_this = applies is None or applies(*args, **kwargs)
            if counts_this:
                tick(kind, "before")
            result = original(*args, **kwargs)
            if counts_this:
                tick(kind, "after")
            return result

        setattr(owner, name, counted)

    import h5py

    def h5_writable(self, name, mode="r", *args, **kwargs):
        return mode != "r"

    def for_writing(file, mode="r", *args, **kwargs):
        return "w" in mode or "a" in mode

    count(h5py.File, "__init__", "h5open", h5_writable)
    count(h5py.Group, "create_dataset", "h5write")  # also `group[name] = array`
    count(h5py.Group, "create_group", "h5write")
    count(h5py.AttributeManager, "__setitem__", "h5attr")
    count(h5py.File, "close", "h5close")
    count(builtins, "open", "open_w", for_writing)
    count(os, "fsync", "fsync")
    count(os, "replace", "replace")
    count(os, "rename", "replace")
    count(os, "unlink", "unlink")
    count(os, "rmdir", "unlink")

    if args.stock:
        backup_class = keras.callbacks.BackupAndRestore
    else:
        callbacks = _import_without_package_init("simmim_tf.training.callbacks")
        backup_class = callbacks.ResumableBackupAndRestore

    class Probe(backup_class):
        """Snapshots and logs each backup write; marks the phases to kill in."""

        saves = 0

        def _save_model(self):
            nonlocal phase
            Probe.saves += 1
            save = Probe.saves
            np.savez(args.work_dir / f"save{save}.npz", *training_state(self.model))
            step = int(self.model.optimizer.iterations)
            event = {"save": save, "iterations": step, "epoch": self._current_epoch}
            log({"event": "start", **event})
            phase = ("save", save)
            super()._save_model()
            phase = None
            log({"event": "done", **event})

        def on_train_end(self, logs=None):
            nonlocal phase
            phase = ("end",)
            super().on_train_end(logs)
            phase = None

    backup = Probe(str(args.work_dir / "backup"), save_freq=1)
    history = fit(build_model(), [backup])
    log({"event": "finished", "epochs": history.epoch})


if __name__ == "__main__":
    main()
