"""Child process of `test_distribute.py`: trains under a `tf.distribute` strategy.

A strategy over several devices or hosts must be set up before TensorFlow
starts its devices, hence a process of its own. Usage:

- `python tests/distribute_child.py trajectories OUT.json`: splits the CPU
  into two logical devices and fits one tiny retriever (ITC only, no dropout)
  on the same 16 examples in global batches of 8, four ways: on one device,
  under `MirroredStrategy` over the two, and the latter without synchronised
  batch normalisation or with local negatives only (the controls). Writes
  each way's per-epoch loss.
- `python tests/distribute_child.py job OUT.json CONFIG.yaml`: runs
  `run_finetune` on the config (its `distribute` section picks the
  strategy; `mirrored` over the two logical CPUs). `TF_CONFIG` in the
  environment makes it one worker of a multi-worker run. Writes the replicas
  it trained with, the epochs it ran (the first is above 0 after a resume),
  whether it evaluated (the chief only), and its final weights
  (`OUT.json.npz`).
"""

from __future__ import annotations

import json
import sys

import tensorflow as tf

import simmim_tf  # first: it sets up tf.keras for tensorflow-gnn

# Two logical CPUs, before anything starts TensorFlow's devices (a
# multi-worker strategy uses the first).
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration()] * 2,
)

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402

from simmim_tf.encoders.image import build_image_encoder  # noqa: E402
from simmim_tf.encoders.text import TEXT_ENCODER_CONFIGS  # noqa: E402
from simmim_tf.jobs import run_finetune  # noqa: E402
from simmim_tf.models.retriever import SimMIMRetriever  # noqa: E402
from simmim_tf.pretraining import contrastive  # noqa: E402
from simmim_tf.training.config import load_config  # noqa: E402
from simmim_tf.training.distribute import synchronize_batch_norm  # noqa: E402

TWO_CPUS = ["/cpu:0", "/cpu:1"]


def examples() -> dict:
    rng = np.random.default_rng(0)
    count = 16
    return {
        "images": rng.normal(size=(count, 16, 16, 3)).astype("float32"),
        "token_ids": rng.integers(1000, 2000, size=(count, 8)).astype("int32"),
        "padding_mask": np.ones((count, 8), "int32"),
        # Two emoji twice, one pair of each in the other replica's half.
        "pair_ids": np.array([0, 1, 2, 3, 0, 5, 6, 7, 8, 9, 10, 1, 12, 13, 14, 15]),
    }


def fit_retriever(strategy, sync_batch_norm: bool = True) -> list[float]:
    with strategy.scope():
        keras.utils.set_random_seed(0)
        backbone = simmim_tf.SimMIMBackbone(
            image_encoder=build_image_encoder("tiny_16px"),
            text_encoder=keras_hub.models.BertBackbone(
                **TEXT_ENCODER_CONFIGS["tiny"], dropout=0.0
            ),
            hidden_dim=16,
            num_heads=2,
            dropout=0.0,
        )
        model = SimMIMRetriever(backbone, itm_weight=0.0)
        if sync_batch_norm:
            synchronize_batch_norm(model)
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        batches = tf.data.Dataset.from_tensor_slices(examples()).batch(8)
        history = model.fit(batches, epochs=4, verbose=0)
    return history.history["itc_loss"]


def trajectories() -> dict:
    mirrored = tf.distribute.MirroredStrategy(TWO_CPUS)
    result = {
        "one_device": fit_retriever(tf.distribute.get_strategy()),
        "mirrored": fit_retriever(mirrored),
        "mirrored_local_batch_norm": fit_retriever(mirrored, sync_batch_norm=False),
    }
    contrastive.gather_replicas = lambda *tensors: (list(tensors), tf.constant(0))
    result["mirrored_local_negatives"] = fit_retriever(mirrored)
    return result


class Record(keras.callbacks.Callback):
    """The epochs `fit` runs and the replicas it trains with."""

    def __init__(self):
        super().__init__()
        self.epochs, self.replicas = [], None

    def on_train_begin(self, logs=None):
        self.replicas = self.model.distribute_strategy.num_replicas_in_sync

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


def job(out: str, config_file: str) -> dict:
    config = load_config(config_file, defaults=simmim_tf.training.config.DEFAULT_CONFIG)
    record = Record()
    result = run_finetune(config, callbacks=[record])
    weights = {f"w{i}": w.numpy() for i, w in enumerate(result["model"].weights)}
    np.savez(out + ".npz", **weights)
    return {
        "epochs": record.epochs,
        "replicas": record.replicas,
        "evaluated": result["metrics"] is not None,
    }


if __name__ == "__main__":
    mode, out = sys.argv[1], sys.argv[2]
    record = trajectories() if mode == "trajectories" else job(out, sys.argv[3])
    with open(out, "w") as stream:
        json.dump(record, stream)
