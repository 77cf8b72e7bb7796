"""Image-text contrastive learning (CLIP's InfoNCE with learnable temperature)."""

from __future__ import annotations

import math

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="simmim_tf")
class ContrastiveLoss(keras.layers.Layer):
    """Symmetric InfoNCE between paired image and text embeddings.

    Embeddings are L2-normalised; `logits = cos(image_i, text_j) / T`; the loss
    is the mean of cross-entropy image->text and text->image with the matching
    pair as the target. The temperature T is learnable, stored as
    `log(1 / T)`, initialised at `initial_temperature` (0.07, as in CLIP) and
    clipped so that 1/T stays <= 100.

    Args:
        initial_temperature: float. Starting temperature.

    Example:
    ```python
    loss = ContrastiveLoss()(image_embeddings, text_embeddings)
    ```
    """

    def __init__(self, initial_temperature: float = 0.07, **kwargs):
        super().__init__(**kwargs)
        if initial_temperature <= 0:
            raise ValueError(f"Temperature {initial_temperature} must be greater than 0.")
        self.initial_temperature = initial_temperature
        self.log_inverse_temperature = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(math.log(1.0 / initial_temperature)),
            name="log_inverse_temperature",
        )

    def similarity(self, image_embeddings, text_embeddings) -> tf.Tensor:
        """Temperature-scaled cosine similarities `[num_images, num_texts]`."""
        images = tf.math.l2_normalize(image_embeddings, axis=-1)
        texts = tf.math.l2_normalize(text_embeddings, axis=-1)
        return self.inverse_temperature() * tf.matmul(images, texts, transpose_b=True)

    def inverse_temperature(self) -> tf.Tensor:
        """1 / T, clipped at 100 as in CLIP."""
        return tf.exp(tf.minimum(self.log_inverse_temperature, math.log(100.0)))

    def call(self, image_embeddings, text_embeddings):
        logits = self.similarity(image_embeddings, text_embeddings)
        targets = tf.range(tf.shape(logits)[0])
        image_to_text = tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits)
        text_to_image = tf.nn.sparse_softmax_cross_entropy_with_logits(
            targets, tf.transpose(logits)
        )
        return 0.5 * (tf.reduce_mean(image_to_text) + tf.reduce_mean(text_to_image))

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(initial_temperature=self.initial_temperature)
        return config


def sample_hard_negatives(similarity: tf.Tensor, seed: int | None = None) -> tf.Tensor:
    """For each row, draw a negative column index, harder ones more likely.

    ALBEF's recipe: sample from `softmax(similarity)` over the row with the
    matching (diagonal) entry removed, so the negative is never the positive
    and similar-looking mistakes are picked most often.

    Args:
        similarity: `[batch, batch]` scores of row i against column j; the
            diagonal holds the positive pairs. Needs batch >= 2.
        seed: int. Optional op seed.

    Returns:
        int32 `[batch]` column indices, never equal to the row index.
    """
    similarity = tf.stop_gradient(tf.convert_to_tensor(similarity))
    batch = tf.shape(similarity)[0]
    tf.debugging.assert_greater_equal(
        batch, 2, message="Hard negatives need a batch of at least 2 pairs."
    )
    diagonal = tf.eye(batch, dtype=tf.bool)
    logits = tf.where(diagonal, tf.fill(tf.shape(similarity), -1e9), similarity)
    return tf.cast(tf.random.categorical(logits, 1, seed=seed)[:, 0], tf.int32)
