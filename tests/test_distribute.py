"""Training under `tf.distribute`: two replicas train as one device does on the
global batch, and two worker processes on loopback ports train one model,
agree on it, and resume together after a kill.

Strategies over several devices are set up before TensorFlow starts, so each
case runs `tests/distribute_child.py` in processes of its own.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import yaml

from simmim_tf.model_files import load_model_file
from simmim_tf.training.callbacks import epoch_history
from simmim_tf.training.config import default_config
from simmim_tf.training.data import load_splits
from simmim_tf.training.distribute import is_chief, make_strategy
from tests.conftest import TINY_RUN

CHILD = Path(__file__).with_name("distribute_child.py")
ROOT = CHILD.parents[1]
ENV = {
    **os.environ,
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "CUDA_VISIBLE_DEVICES": "",
    "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
}


def start_child(*args: str, tf_config: dict | None = None) -> subprocess.Popen:
    env = {**ENV, "TF_CONFIG": json.dumps(tf_config)} if tf_config else ENV
    return subprocess.Popen(
        [sys.executable, str(CHILD), *map(str, args)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(child: subprocess.Popen, timeout: float = 600) -> str:
    output, _ = child.communicate(timeout=timeout)
    assert child.returncode == 0, output[-4000:]
    return output


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    """The bundled sample, built once here: workers only read it."""
    folder = str(tmp_path_factory.mktemp("distribute") / "tfds")
    load_splits(default_config(data={**TINY_RUN["data"], "data_dir": folder}))
    return folder


def job_config(folder: Path, data_dir: str, epochs: int, **distribute) -> Path:
    config = default_config(
        run_dir=str(folder / "run"),
        data={**TINY_RUN["data"], "data_dir": data_dir},
        model=TINY_RUN["model"],
        finetune={**TINY_RUN["finetune"], "epochs": epochs},
        distribute=distribute,
    )
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_two_replicas_follow_the_loss_trajectory_of_one_device(tmp_path):
    out = tmp_path / "trajectories.json"
    finish(start_child("trajectories", out))
    losses = {
        name: np.array(values) for name, values in json.loads(out.read_text()).items()
    }
    # Same global batches of 8, split 4 + 4 over two replicas: the same 4
    # epochs of losses as one device, to float tolerance.
    np.testing.assert_allclose(losses["mirrored"], losses["one_device"], rtol=1e-5)
    # Each ingredient matters (the controls): batch-norm statistics of the
    # local half, and negatives of the local half only, change the trajectory.
    for control in ("mirrored_local_batch_norm", "mirrored_local_negatives"):
        gap = np.max(np.abs(losses[control] - losses["one_device"]))
        assert gap > 1e-3, (control, gap)


def test_finetune_job_trains_on_two_devices_and_evaluates(tmp_path, data_dir):
    config = job_config(
        tmp_path, data_dir, epochs=2, strategy="mirrored", devices=["/cpu:0", "/cpu:1"]
    )
    out = tmp_path / "job.json"
    finish(start_child("job", out, config))
    record = json.loads(out.read_text())
    assert record == {"epochs": [0, 1], "replicas": 2, "evaluated": True}
    run = tmp_path / "run"
    model = load_model_file(run / "model.keras")  # the trained weights, one device
    trained = np.load(f"{out}.npz")
    for index, weight in enumerate(model.weights):
        np.testing.assert_array_equal(weight.numpy(), trained[f"w{index}"])
    model.load_weights(run / "checkpoints" / "best.weights.h5")
    assert (run / "metrics_google.json").is_file()
    assert len(epoch_history(run)["total_loss"]) == 2


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("localhost", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def test_two_workers_train_one_model_and_resume_after_a_kill(tmp_path, data_dir):
    epochs = 4  # 9 steps each; the chief backs up every 20 steps (in epoch 2)
    config = job_config(tmp_path, data_dir, epochs=epochs, strategy="multi_worker")
    run = tmp_path / "run"
    workers = [f"localhost:{port}" for port in free_ports(2)]

    def start_workers(attempt: str) -> list[subprocess.Popen]:
        return [
            start_child(
                "job",
                tmp_path / f"{attempt}-worker{index}.json",
                config,
                tf_config={
                    "cluster": {"worker": workers},
                    "task": {"type": "worker", "index": index},
                },
            )
            for index in range(2)
        ]

    # A first attempt, killed (worker 1 first) once the chief has backed up.
    killed = start_workers("killed")
    backup = run / "backup" / "latest.weights.h5"
    deadline = time.monotonic() + 300
    while not backup.exists():
        assert all(w.poll() is None for w in killed), finish(killed[0], 1)
        assert time.monotonic() < deadline, "no backup within 300 s"
        time.sleep(0.2)
    for worker in reversed(killed):
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    assert not (run / "model.keras").exists()

    resumed = start_workers("resumed")
    for worker in resumed:
        finish(worker)
    records = [
        json.loads((tmp_path / f"resumed-worker{i}.json").read_text()) for i in (0, 1)
    ]
    # Both restart from the chief's backup, at the same epoch past the first,
    # train the rest with 2 replicas, and only the chief evaluates.
    first = records[0]["epochs"][0]
    assert 0 < first < epochs
    for index, record in enumerate(records):
        assert record["epochs"] == list(range(first, epochs))
        assert record["replicas"] == 2
        assert record["evaluated"] == (index == 0)
    chief, other = (np.load(tmp_path / f"resumed-worker{i}.json.npz") for i in (0, 1))
    assert sorted(chief.files) == sorted(other.files)
    for name in chief.files:
        np.testing.assert_allclose(chief[name], other[name], atol=1e-6, err_msg=name)
    # The chief's model and checkpoint restore; its log holds every epoch once.
    model = load_model_file(run / "model.keras")
    model.load_weights(run / "checkpoints" / "best.weights.h5")
    assert len(epoch_history(run)["total_loss"]) == epochs
    assert not (run / "backup").exists()


def test_strategy_settings_are_checked():
    assert (
        make_strategy({"strategy": "default", "devices": None})
        is tf.distribute.get_strategy()
    )
    for settings, message in [
        ({"strategy": "horovod"}, "must be one of"),
        ({"strategy": "default", "devices": ["/cpu:0"]}, "only applies to the mirrored"),
        ({"strategy": "mirrored", "devices": ["/gpu:7"]}, "not devices of this host"),
        ({"strategy": "default", "tpu": "my-tpu"}, "only applies to the tpu"),
        ({"strategy": "tpu"}, "set model.jit_compile true"),
    ]:
        with pytest.raises(ValueError, match=message):
            make_strategy(settings)
    # This machine has no TPU: the error says so and how to name one.
    with pytest.raises(ValueError, match="found no TPU at 'local'.*distribute.tpu"):
        make_strategy({"strategy": "tpu"}, jit_compile=True)


def test_multi_worker_needs_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        make_strategy({"strategy": "multi_worker"})


@pytest.mark.parametrize(
    "cluster, task, chief",
    [
        ({"worker": ["a:1", "b:1"]}, ("worker", 0), True),
        ({"worker": ["a:1", "b:1"]}, ("worker", 1), False),
        ({"chief": ["c:1"], "worker": ["a:1"]}, ("chief", 0), True),
        ({"chief": ["c:1"], "worker": ["a:1"]}, ("worker", 0), False),
    ],
)
def test_only_the_chief_writes(cluster, task, chief):
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type=task[0], task_id=task[1]
    )

    class Strategy:  # what `is_chief` reads of a multi-worker strategy
        cluster_resolver = resolver

    assert is_chief(Strategy()) == chief
    assert is_chief(tf.distribute.get_strategy())
