"""Training on several devices and hosts with `tf.distribute`.

A run's `distribute` config section picks the strategy every job builds its
models, optimiser and `fit` under:

- `"default"`: one device (TensorFlow's default strategy);
- `"mirrored"`: `tf.distribute.MirroredStrategy` over `distribute.devices`
  (None: every GPU of the host, else its CPU);
- `"multi_worker"`: `tf.distribute.MultiWorkerMirroredStrategy` over the hosts
  that the `TF_CONFIG` environment variable describes (one process per host,
  each with the same command);
- `"tpu"`: `tf.distribute.TPUStrategy` on the TPU `distribute.tpu` names
  (None: the chips of this TPU VM); the step must compile with XLA, so it
  needs `model.jit_compile` (which builds the graph with static sizes).

`data.batch_size` is the **global** batch: Keras splits each batch over the
replicas, and each worker keeps its share of the input (`tf.data` DATA
sharding). The contrastive loss gathers every replica's embeddings, so its
negatives are the global batch's (`simmim_tf.pretraining.contrastive`); batch
normalisation averages its statistics over the global batch
(`synchronize_batch_norm`). Only the chief (`is_chief`) writes the run folder.
See docs/distributed.md.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import keras
import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


def make_strategy(settings: dict, jit_compile: bool = False) -> tf.distribute.Strategy:
    """The `tf.distribute.Strategy` of a config's `distribute` section.

    Create it before any other TensorFlow work of the process:
    `MultiWorkerMirroredStrategy` configures collective ops, which TensorFlow
    only allows at program start.

    Args:
        settings: dict with `strategy` (one of `STRATEGIES`), `devices`
            (list of device names for `"mirrored"`, e.g. `["/gpu:0",
            "/gpu:1"]`; None: all GPUs, else the CPU) and `tpu` (for
            `"tpu"`: a TPU name or `grpc://` address; None: this TPU VM's).
        jit_compile: bool. The config's `model.jit_compile`; a TPU needs it.

    Raises:
        ValueError: an unknown strategy, devices or a TPU given to another
            strategy, `"multi_worker"` without `TF_CONFIG`, `"tpu"` without
            `jit_compile` or without a TPU.
    """
    name, devices = settings["strategy"], settings.get("devices")
    tpu = settings.get("tpu")
    if name not in STRATEGIES:
        raise ValueError(f"distribute.strategy {name!r} must be one of {STRATEGIES}.")
    if devices and name != "mirrored":
        raise ValueError(
            f"distribute.devices {devices!r} only applies to the mirrored strategy, "
            f"not {name!r}."
        )
    if tpu and name != "tpu":
        raise ValueError(f"distribute.tpu {tpu!r} only applies to the tpu strategy.")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=_devices(devices))
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError(
                "distribute.strategy multi_worker reads the cluster from the "
                "TF_CONFIG environment variable, which is not set (see "
                "docs/distributed.md for its form)."
            )
        _mean_scalar_logs_across_workers()
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        _prepare_keras_saving()
        return strategy
    if not jit_compile:
        raise ValueError(
            "distribute.strategy tpu compiles every step with XLA, which needs "
            "static graph sizes: set model.jit_compile true."
        )
    return _tpu_strategy(tpu or "local")


def _tpu_strategy(tpu: str) -> tf.distribute.TPUStrategy:
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.OpError) as error:
        first_line = str(error).strip().splitlines()[0]
        raise ValueError(
            f"distribute.strategy tpu found no TPU at {tpu!r} ({first_line}). "
            "Set distribute.tpu to the TPU's name or grpc:// address, or leave "
            "it null on a TPU VM."
        ) from error
    return tf.distribute.TPUStrategy(resolver)


def _devices(devices: Sequence[str] | None) -> list[str] | None:
    if devices is None:
        return None
    known = {_canonical(device.name) for device in tf.config.list_logical_devices()}
    unknown = [device for device in devices if _canonical(device) not in known]
    if unknown:
        raise ValueError(
            f"distribute.devices {unknown} are not devices of this host; it has "
            f"{sorted(known)}."
        )
    return list(devices)


def _canonical(device: str) -> str:
    """`"/cpu:0"` and `"/device:CPU:0"` alike as `"/device:CPU:0"`."""
    return tf.DeviceSpec.from_string(device).to_string()


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
    """Whether this process writes the run folder: always, but for the workers
    of a multi-worker run other than the chief (the `chief` task, or worker 0
    of a cluster without one)."""
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def synchronize_batch_norm(model: keras.Model) -> int:
    """Under a strategy of several replicas, make every `BatchNormalization`
    of `model` average its training statistics over all of them, as one
    device would over the global batch.

    Call it on a new model under the strategy's scope, before training.
    Inference (moving statistics) is unchanged. Returns how many layers were
    switched (0 with one replica: nothing to synchronise).
    """
    if tf.distribute.get_strategy().num_replicas_in_sync == 1:
        return 0
    # `_flatten_layers` reaches layers nested in layers too, not only in models.
    layers = [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    for layer in layers:
        layer.synchronized = True
    return len(layers)


def build_from_a_local_batch(model: keras.Model) -> None:
    """Let `model.fit` start under a strategy of several replicas.

    Keras 3.15's `fit` builds the model from its first batch averaged over the
    replicas (`_maybe_symbolic_build`), which fails on any bool tensor (a
    padding mask) and, under `MultiWorkerMirroredStrategy`, on any dict of
    inputs (keras-team/keras#20329). The build only needs shapes and dtypes,
    so here it reads the first replica's share of that batch instead. Call it
    before `fit`; one device needs nothing.
    """
    strategy = model.distribute_strategy
    if strategy.num_replicas_in_sync == 1:
        return
    keras_build = model._maybe_symbolic_build

    def build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(
                    lambda value: strategy.experimental_local_results(value)[0],
                    next(batches),
                )
                break
        keras_build(data_batch=data_batch)

    model._maybe_symbolic_build = build


def _mean_scalar_logs_across_workers() -> None:
    """Let Keras 3.15's `fit` reduce the step's logs of a multi-worker run.

    Keras averages each per-replica log of a multi-worker step with
    `strategy.reduce("MEAN", value, axis=0)`, which fails on a scalar (every
    loss and metric is one), so no multi-worker `fit` runs
    (keras-team/keras#20585). This wraps Keras' `reduce_per_replica` to
    average scalars across the replicas (`axis=None`) and leaves every other
    case to Keras. Idempotent.
    """
    from keras.src.backend.tensorflow import trainer  # the function `fit` calls

    keras_reduce = trainer.reduce_per_replica
    if getattr(keras_reduce, "averages_scalars", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        def reduce(value):
            local = strategy.experimental_local_results(value)[0]
            if reduction in ("auto", "mean") and local.shape.rank == 0:
                return strategy.reduce("MEAN", value, axis=None)
            return keras_reduce(value, strategy, reduction)

        if not trainer._collective_all_reduce_multi_worker(strategy):
            return keras_reduce(values, strategy, reduction)
        return tf.nest.map_structure(reduce, values)

    reduce_per_replica.averages_scalars = True
    trainer.reduce_per_replica = reduce_per_replica


def _prepare_keras_saving() -> None:
    """Let the chief of a multi-worker run save alone.

    On every save Keras 3.15 builds a throwaway reference object of each kind
    it walks (an `Optimizer` among them) to learn which attributes to skip:
    its cache is written under one key and read under another, so it never
    hits. Built inside a multi-worker `fit`, the reference optimizer's
    variables start collective ops the other workers never join, and the run
    fails. Here each kind is built once, on every worker and outside the
    strategy's scope, and stored under the key Keras reads.
    """
    from keras.src.backend.common import global_state
    from keras.src.saving import saving_lib

    for kind in ("Operation", "Layer", "Functional", "Sequential", "Metric", "Optimizer"):
        global_state.set_global_attribute(
            f"saving_attr_skiplist_{kind}", saving_lib.get_attr_skipset(kind)
        )
