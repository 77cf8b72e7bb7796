"""The input signature shared by every model that `SimMIMPreprocessor` feeds."""

from __future__ import annotations

import keras


def model_inputs(image_shape: tuple[int, int, int]) -> dict[str, keras.KerasTensor]:
    """Symbolic `images`, `token_ids` and `padding_mask` inputs.

    Args:
        image_shape: tuple of 3 ints. `(height, width, 3)` of the images.
    """
    return {
        "images": keras.Input(shape=image_shape, name="images"),
        "token_ids": keras.Input(shape=(None,), dtype="int32", name="token_ids"),
        "padding_mask": keras.Input(shape=(None,), dtype="int32", name="padding_mask"),
    }
