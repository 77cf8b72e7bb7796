"""A backup survives a real `kill -9` at any point of its write (or deletion).

Each case runs `tests/backup_child.py` in a child process that trains with
`ResumableBackupAndRestore(save_freq=1)` and sends itself `SIGKILL` at a chosen
operation inside one backup write (counted by wrapping h5py, `open`,
`os.fsync`, `os.replace`, …). This process then resumes from what the kill
left, and checks that training restarts from one complete backup: the weights
and optimizer state the child was backing up, and the epoch that backup
recorded. The control shows that stock Keras fails this test.

About 44 operations make one backup write of the tiny model (in order: 2 HDF5
opens, 29 groups or datasets, attributes, closes, 2 fsyncs, 2 replaces).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from simmim_tf.training.callbacks import ResumableBackupAndRestore
from tests.backup_child import EPOCHS, STEPS, build_model, fit, training_state

CHILD = Path(__file__).with_name("backup_child.py")
ROOT = CHILD.parents[1]

# Steps 1-4 are epoch 0, steps 5-8 epoch 1: backup 5 is the first one of
# epoch 1, so killing between its two files would pair epochs 0 and 1.
KILLS = {
    # name: (where the child kills itself, the backup expected on resume)
    "first_backup_mid_weights": (("save", 1, "h5write", 15, "after"), "none"),
    "weights_file_just_created": (("save", 3, "h5open", 1, "after"), "previous"),
    "mid_weights": (("save", 3, "h5write", 15, "after"), "previous"),
    "weights_written_not_closed": (("save", 3, "h5close", 1, "before"), "previous"),
    "between_weights_and_metadata": (("save", 5, "replace", 1, "after"), "new"),
    "metadata_file_opened": (("save", 5, "open_w", 1, "after"), "new"),
    "mid_deletion_at_train_end": (("end", None, "unlink", 1, "after"), "none"),
}


def run_child(work_dir: Path, kill, stock: bool = False) -> list[dict]:
    """Runs the child until it kills itself there; returns its log."""
    phase, save, kind, n, when = kill
    spec = {"phase": phase, "save": save, "kind": kind, "n": n, "when": when}
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "CUDA_VISIBLE_DEVICES": "",
        "TF_USE_LEGACY_KERAS": "1",  # as `import simmim_tf` sets it
        "TF_NUM_INTRAOP_THREADS": "1",  # a tiny model; children run side by side
        "TF_NUM_INTEROP_THREADS": "1",
    }
    command = [sys.executable, str(CHILD), str(work_dir), "--kill", json.dumps(spec)]
    if stock:
        command.append("--stock")
    child = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert child.returncode == -signal.SIGKILL, (
        f"the child was not killed (exit {child.returncode}): {child.stderr[-3000:]}"
    )
    with open(work_dir / "log.jsonl") as stream:
        log = [json.loads(line) for line in stream]
    if phase == "save":  # killed inside that write, after the earlier ones
        starts = [e["save"] for e in log if e["event"] == "start"]
        dones = [e["save"] for e in log if e["event"] == "done"]
        assert starts == list(range(1, save + 1)) and dones == starts[:-1]
    else:
        assert log[-1]["event"] == "done" and log[-1]["save"] == EPOCHS * STEPS
    return log


@pytest.fixture(scope="module")
def killed_runs(tmp_path_factory):
    """Starts every kill in its own folder, side by side (the children mostly
    import TensorFlow); name -> (folder, future of the child's log). `stock`
    is the control. A child that fails fails only its own test."""
    runs = {name: (kill, False) for name, (kill, _) in KILLS.items()}
    runs["stock"] = (KILLS["mid_weights"][0], True)
    with concurrent.futures.ThreadPoolExecutor(max(2, os.cpu_count() or 2)) as pool:
        folders = {name: tmp_path_factory.mktemp(name) for name in runs}
        yield {
            name: (folders[name], pool.submit(run_child, folders[name], kill, stock))
            for name, (kill, stock) in runs.items()
        }


class Recorder(keras.callbacks.Callback):
    """After the backup's restore: the state and epoch training starts from."""

    def __init__(self, backup_dir: Path):
        super().__init__()
        self.backup_dir, self.first_epoch = backup_dir, None

    def on_train_begin(self, logs=None):
        self.state = training_state(self.model)
        self.iterations = int(self.model.optimizer.iterations)
        names = os.listdir(self.backup_dir) if self.backup_dir.exists() else []
        self.hidden = [name for name in names if name.startswith(".")]

    def on_epoch_begin(self, epoch, logs=None):
        if self.first_epoch is None:
            self.first_epoch = epoch


def assert_same_state(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        np.testing.assert_array_equal(a, e)


@pytest.mark.parametrize("name", list(KILLS))
def test_resumes_from_a_complete_backup_after_kill(killed_runs, name):
    expected = KILLS[name][1]
    tmp_path, child = killed_runs[name]
    log = child.result()
    backup_dir = tmp_path / "backup"

    # What the kill left: at most the two backup files, both complete, plus
    # maybe hidden temporaries of the interrupted write.
    files = sorted(os.listdir(backup_dir)) if backup_dir.exists() else []
    visible = [f for f in files if not f.startswith(".")]
    assert visible in (
        [],
        ["latest.weights.h5"],
        ["latest.weights.h5", "training_metadata.json"],
    )
    assert bool(visible) == (expected != "none")
    if visible:
        with h5py.File(backup_dir / "latest.weights.h5", "r") as weights_file:
            in_weights = json.loads(weights_file.attrs["training_metadata"])
    if "training_metadata.json" in visible:
        in_json = json.loads((backup_dir / "training_metadata.json").read_text())
    if name == "mid_weights":
        assert any(f.startswith(".latest.weights.h5.") for f in files)  # a temporary
    if name == "between_weights_and_metadata":
        # The kill landed between the two files: the JSON still describes
        # backup 4 (epoch 0), the weights are backup 5's (epoch 1).
        assert in_json["epoch"] == 0 and in_weights["epoch"] == 1
    if name == "mid_deletion_at_train_end":  # the half-deleted backup, renamed
        assert [f for f in os.listdir(tmp_path) if f.startswith(".backup.")]

    if expected == "none":
        start, state = {"epoch": 0, "iterations": 0}, training_state(build_model())
    else:
        killed_save = max(e["save"] for e in log if e["event"] == "start")
        save = killed_save if expected == "new" else killed_save - 1
        start = next(e for e in log if e["event"] == "start" and e["save"] == save)
        with np.load(tmp_path / f"save{save}.npz") as arrays:
            state = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
        assert in_weights["epoch"] == start["epoch"]

    recorder = Recorder(backup_dir)
    history = fit(
        build_model(), [ResumableBackupAndRestore(backup_dir, save_freq=1), recorder]
    )
    assert recorder.first_epoch == start["epoch"]
    assert history.epoch == list(range(start["epoch"], EPOCHS))
    assert recorder.iterations == start["iterations"]
    assert_same_state(recorder.state, state)  # weights and optimizer state
    assert recorder.hidden == []  # temporaries of the killed write removed
    # The completed run deleted its backup, and the leftovers of a killed one.
    assert not backup_dir.exists()
    assert [f for f in os.listdir(tmp_path) if f.startswith(".")] == []


def test_stock_keras_backup_breaks_when_killed_mid_write(killed_runs):
    """Control: the same kill as `mid_weights` breaks stock Keras for good.

    Keras 3.15 rewrites `latest.weights.h5` in place; killed in the middle, it
    leaves a truncated file that every rerun fails to open. If this test
    fails, Keras (or h5py) changed and the kill test above may no longer be
    able to see the bug it guards against.
    """
    folder, child = killed_runs["stock"]
    child.result()
    backup_dir = folder / "backup"
    assert sorted(os.listdir(backup_dir)) == [
        "latest.weights.h5",
        "training_metadata.json",
    ]
    for _ in range(2):  # every rerun
        with pytest.raises(OSError, match="Unable to synchronously open file"):
            fit(build_model(), [keras.callbacks.BackupAndRestore(str(backup_dir))])


def test_double_checkpoint_falls_back_to_the_previous_backup(tmp_path):
    """With `double_checkpoint`, Keras restores the previous backup (`.bkp`)
    when the latest cannot be read, e.g. damaged on disk after it was written."""
    backup_dir = tmp_path / "backup"

    class Stop(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 2:  # after backups 1, 2 and 3
                raise RuntimeError("killed")

    backup = ResumableBackupAndRestore(
        backup_dir, save_freq=1, double_checkpoint=True, delete_checkpoint=False
    )
    with pytest.raises(RuntimeError, match="killed"):
        fit(build_model(), [backup, Stop()])
    assert sorted(os.listdir(backup_dir)) == [
        "latest.weights.h5",
        "latest.weights.h5.bkp",
        "training_metadata.json",
        "training_metadata.json.bkp",
    ]
    with h5py.File(backup_dir / "latest.weights.h5.bkp", "r") as previous:
        assert json.loads(previous.attrs["training_metadata"]) == {
            "epoch": 0,
            "batch": 1,
        }
    latest = backup_dir / "latest.weights.h5"
    latest.write_bytes(latest.read_bytes()[:1000])

    recorder = Recorder(backup_dir)
    backup = ResumableBackupAndRestore(backup_dir, save_freq=1, double_checkpoint=True)
    fit(build_model(), [backup, recorder])
    assert recorder.iterations == 2 and recorder.first_epoch == 0
