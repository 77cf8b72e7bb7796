"""Image-text contrastive learning (CLIP's InfoNCE with learnable temperature)."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from simmim_tf.pretraining.replicas import gather_replicas

# The optional model input that names each example's pair: examples with
# equal ids are positives of each other in the contrastive losses.
PAIR_IDS = "pair_ids"


@keras.saving.register_keras_serializable(package="simmim_tf")
class ContrastiveLoss(keras.layers.Layer):
    """Symmetric InfoNCE between paired image and text embeddings.

    Embeddings are L2-normalised; `logits = cos(image_i, text_j) / T`; the loss
    is the mean of cross-entropy image->text and text->image with the matching
    pair as the target. With `pair_ids`, every pair with the same id is a
    positive (multi-positive InfoNCE, as in SupCon): the target of row i is
    spread evenly over them, so one emoji drawn by two artists in a batch is
    never pushed away from its own text. Under a `tf.distribute` strategy of
    several replicas the negatives are every replica's (all-gathered), as
    CLIP trains. The temperature T is learnable, stored as
    `log(1 / T)`, initialised at `initial_temperature` (0.07, as in CLIP) and
    clipped so that 1/T stays <= 100. The layer computes in float32 whatever
    the model's dtype policy.

    Args:
        initial_temperature: float. Starting temperature.

    Example:
    ```python
    loss = ContrastiveLoss()(image_embeddings, text_embeddings)
    loss = ContrastiveLoss()(image_embeddings, text_embeddings, pair_ids=emoji_ids)
    ```
    """

    def __init__(self, initial_temperature: float = 0.07, **kwargs):
        # Softmax over logits up to 100 wants float32 under any mixed policy.
        super().__init__(**{**kwargs, "dtype": "float32"})
        if initial_temperature <= 0:
            raise ValueError(f"Temperature {initial_temperature} must be greater than 0.")
        self.initial_temperature = initial_temperature
        self.log_inverse_temperature = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(math.log(1.0 / initial_temperature)),
            name="log_inverse_temperature",
            # Read in float32 even from the call of a mixed-precision model.
            autocast=False,
        )

    def similarity(self, image_embeddings, text_embeddings) -> tf.Tensor:
        """Temperature-scaled cosine similarities `[num_images, num_texts]`, float32.

        Computed in float32 whatever the model's compute dtype: a bfloat16
        logit of 100 is off by up to 0.4, enough to reorder near ties.
        """
        images = tf.math.l2_normalize(tf.cast(image_embeddings, tf.float32), axis=-1)
        texts = tf.math.l2_normalize(tf.cast(text_embeddings, tf.float32), axis=-1)
        return self.inverse_temperature() * tf.matmul(images, texts, transpose_b=True)

    def inverse_temperature(self) -> tf.Tensor:
        """1 / T, clipped at 100 as in CLIP."""
        return tf.exp(tf.minimum(self.log_inverse_temperature, math.log(100.0)))

    def call(self, image_embeddings, text_embeddings, pair_ids=None):
        # Under a strategy of several replicas each one scores its own rows
        # against every replica's columns: the negatives of the global batch.
        local = tf.shape(image_embeddings)[0]
        if pair_ids is None:
            (images, texts), first = gather_replicas(image_embeddings, text_embeddings)
            rows, columns = first + tf.range(local), tf.range(tf.shape(images)[0])
        else:
            rows = tf.reshape(pair_ids, [-1])
            (images, texts, columns), _ = gather_replicas(
                image_embeddings, text_embeddings, rows
            )
        targets = tf.cast(tf.equal(rows[:, None], columns[None, :]), tf.float32)
        targets /= tf.reduce_sum(targets, axis=1, keepdims=True)
        # Positives are symmetric, so one target matrix serves both ways.
        image_to_text = tf.nn.softmax_cross_entropy_with_logits(
            targets, self.similarity(image_embeddings, texts)
        )
        text_to_image = tf.nn.softmax_cross_entropy_with_logits(
            targets, self.similarity(text_embeddings, images)
        )
        return 0.5 * (tf.reduce_mean(image_to_text) + tf.reduce_mean(text_to_image))

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(initial_temperature=self.initial_temperature)
        return config


def positive_pairs(batch_size, pair_ids=None) -> tf.Tensor:
    """bool `[batch, batch]`: whether example i and example j are a positive pair.

    Without `pair_ids` only the diagonal (each image with its own text);
    with them, every two examples whose ids are equal.
    """
    if pair_ids is None:
        return tf.eye(batch_size, dtype=tf.bool)
    pair_ids = tf.reshape(pair_ids, [-1])
    return tf.equal(pair_ids[:, None], pair_ids[None, :])


def sample_hard_negatives(
    similarity: tf.Tensor, positives: tf.Tensor | None = None, seed: int | None = None
) -> tf.Tensor:
    """For each row, draw a negative column index, harder ones more likely.

    ALBEF's recipe: sample from `softmax(similarity)` over the row with the
    positive entries removed, so the negative is never a positive and
    similar-looking mistakes are picked most often. A row whose columns are
    all positives (every example of the batch is one emoji) draws any column
    but its own; the caller labels such a pair by its ids.

    Args:
        similarity: `[batch, batch]` scores of row i against column j; the
            diagonal holds the positive pairs. Needs batch >= 2.
        positives: bool `[batch, batch]` or None. The positive pairs
            (`positive_pairs`); None means the diagonal.
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
    if positives is None:
        positives = diagonal
    only_positives = tf.reduce_all(positives, axis=1, keepdims=True)
    excluded = tf.where(only_positives, diagonal, positives)
    logits = tf.where(excluded, tf.fill(tf.shape(similarity), -1e9), similarity)
    return tf.cast(tf.random.categorical(logits, 1, seed=seed)[:, 0], tf.int32)
