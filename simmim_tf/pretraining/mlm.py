"""Masked language modelling (MLM): the loss on BERT-masked token positions.

The masks come from `keras_hub.layers.MaskedLMMaskGenerator` (in
`SimMIMPretrainerPreprocessor`) and the logits from
`keras_hub.layers.MaskedLMHead` on the text node states after the graph.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def masked_cross_entropy(labels, logits, weights) -> tf.Tensor:
    """Sparse cross-entropy averaged over the positions whose weight is 1 (in
    float32, whatever the dtype of `logits`)."""
    logits = tf.cast(logits, tf.float32)
    weights = tf.cast(weights, tf.float32)
    per_position = keras.losses.sparse_categorical_crossentropy(
        labels, logits, from_logits=True
    )
    return tf.reduce_sum(per_position * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)
