"""Losses across the replicas of a `tf.distribute` strategy."""

from __future__ import annotations

import tensorflow as tf


def gather_replicas(*tensors: tf.Tensor) -> tuple[list[tf.Tensor], tf.Tensor]:
    """Every replica's `tensors`, concatenated along axis 0 in replica order,
    and the row where this replica's own examples start.

    Gradients flow back to each replica's own rows (`all_gather`'s gradient
    sums the replicas' and keeps the local slice), so a loss over the gathered
    batch trains as one device would on the global batch, as CLIP's does.
    Outside a strategy of several replicas: the tensors themselves and row 0.

    Example:
    ```python
    (images, texts), first = gather_replicas(image_embeddings, text_embeddings)
    ```
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return list(tensors), tf.constant(0)
    gathered = [context.all_gather(tensor, axis=0) for tensor in tensors]
    sizes = context.all_gather(tf.shape(tensors[0])[:1], axis=0)
    return gathered, tf.reduce_sum(sizes[: context.replica_id_in_sync_group])


def replica_share(loss: tf.Tensor) -> tf.Tensor:
    """`loss` divided by the number of replicas in sync.

    Keras sums the replicas' gradients, so a model that returns its own loss
    from `compute_loss` returns this share of its local mean (as Keras' own
    losses do) to train on the global batch's mean.
    """
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss / replicas if replicas > 1 else loss
