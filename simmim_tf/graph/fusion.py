"""The fusion of the two readouts: z = (x + y) / sqrt(2)."""

from __future__ import annotations

import math

import keras


@keras.saving.register_keras_serializable(package="simmim_tf")
class SqrtTwoFusion(keras.layers.Layer):
    """Fuse the image readout x and the text readout y as `(x + y) / sqrt(2)`.

    If x and y are independent with unit variance, so is the result: the
    fused vector keeps the scale of its inputs, whatever the modality mix.

    Example:
    ```python
    SqrtTwoFusion()(keras.ops.ones([1, 2]), keras.ops.ones([1, 2]))
    # [[1.4142135, 1.4142135]]
    ```
    """

    def call(self, image_readout, text_readout):
        return (image_readout + text_readout) * (1.0 / math.sqrt(2.0))

    def compute_output_shape(self, image_readout_shape, text_readout_shape):
        return image_readout_shape
