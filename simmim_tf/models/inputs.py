"""The input signature shared by every model that `SimMIMPreprocessor` feeds."""

from __future__ import annotations

import keras
import tensorflow as tf

MODALITIES = ("image", "text")
# A frozen text encoder's token states `[B, L, H]`, computed before the step
# (`simmim_tf.training.text_states`), in place of running the encoder.
TEXT_ENCODER_STATES = "text_encoder_states"


def check_modalities(modalities) -> tuple[str, ...]:
    """`modalities` as a tuple, or a clear error if it is not a subset of both."""
    modalities = tuple(modalities)
    if not modalities or set(modalities) - set(MODALITIES):
        raise ValueError(
            f"Modalities {modalities} must be a non-empty subset of {MODALITIES}."
        )
    return modalities


def encode_tokens(text_encoder: keras.Model, token_ids, padding_mask):
    """A keras-hub `BertBackbone`'s token states `[B, L, H]` (one segment)."""
    return text_encoder(
        {
            "token_ids": token_ids,
            "segment_ids": keras.ops.zeros_like(token_ids),
            "padding_mask": padding_mask,
        }
    )["sequence_output"]


def mean_over_tokens(states, padding_mask):
    """The mean of `states` `[B, L, H]` over the real (unpadded) tokens: `[B, H]`."""
    mask = keras.ops.expand_dims(keras.ops.cast(padding_mask, states.dtype), -1)
    return keras.ops.sum(states * mask, axis=1) / keras.ops.maximum(
        keras.ops.sum(mask, axis=1), 1.0
    )


def model_inputs(
    image_shape: tuple[int, int, int] | None,
    modalities: tuple[str, ...] = MODALITIES,
) -> dict[str, keras.KerasTensor]:
    """Symbolic inputs: `images` for the image, `token_ids` + `padding_mask` for text.

    Args:
        image_shape: tuple of 3 ints. `(height, width, 3)` of the images (unused
            without the image).
        modalities: tuple of str. Which of `MODALITIES` the model reads.
    """
    inputs = {}
    if "image" in check_modalities(modalities):
        inputs["images"] = keras.Input(shape=image_shape, name="images")
    if "text" in modalities:
        inputs["token_ids"] = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        inputs["padding_mask"] = keras.Input(
            shape=(None,), dtype="int32", name="padding_mask"
        )
    return inputs


class RefusesEmptyPredict:
    """`predict` on zero examples is a clear error (Keras fails with an
    `UnboundLocalError` from inside its loop)."""

    def predict(self, x, *args, **kwargs):
        if _count_examples(x) == 0:
            raise ValueError(
                f"{type(self).__name__}.predict got zero examples; pass at least one."
            )
        return super().predict(x, *args, **kwargs)


def _count_examples(x) -> int | None:
    """Examples in `x` (arrays, a dict of them, or a tf.data set), None if unknown."""
    if isinstance(x, tf.data.Dataset):
        cardinality = int(x.cardinality())
        return cardinality if cardinality >= 0 else None
    leaves = tf.nest.flatten(x)
    shapes = [getattr(leaf, "shape", None) for leaf in leaves]
    sizes = [shape[0] for shape in shapes if shape is not None and len(shape)]
    return int(sizes[0]) if sizes and sizes[0] is not None else None
