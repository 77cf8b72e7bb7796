"""SimMIM masked image modelling, adapted to a CNN (Xie et al. 2022).

Random square patches cover `mask_ratio` of each image; the masked pixels are
replaced by a learnable mask token before the encoder; a light linear head
(1x1 conv + pixel shuffle) regresses the raw normalised pixels from the
feature map; the L1 loss counts masked pixels only.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def check_mask_arguments(
    image_size: tuple[int, int], patch_size: int, mask_ratio: float
) -> None:
    """Raise a clear `ValueError` unless `simmim_mask` can use these arguments."""
    height, width = image_size
    if patch_size <= 0 or height % patch_size or width % patch_size:
        raise ValueError(
            f"Image size {image_size} must be divisible by patch size {patch_size}."
        )
    if not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"Mask ratio {mask_ratio} must be in (0, 1).")


def simmim_mask(
    batch_size: int | tf.Tensor,
    image_size: tuple[int, int],
    *,
    patch_size: int,
    mask_ratio: float = 0.6,
    seed: tf.Tensor | tuple[int, int] = (0, 0),
) -> tf.Tensor:
    """Patch-aligned random masks, `[batch, height, width]` float (1 = masked).

    Every image gets exactly `round(mask_ratio * num_patches)` masked patches,
    drawn independently per image (argsort of stateless uniform noise, so one
    vectorised op and the same masks for the same seed).

    Args:
        batch_size: int. Number of masks.
        image_size: `(height, width)`, each divisible by `patch_size`.
        patch_size: int. Side of the square mask patches in pixels (32 at
            224 px in SimMIM; scale it with the input, e.g. 8 or 16 at 64 px).
        mask_ratio: float in (0, 1). Fraction of patches masked.
        seed: shape-[2] int seed of the stateless random draw.

    Example:
    ```python
    mask = simmim_mask(2, (64, 64), patch_size=16, mask_ratio=0.5)
    mask.shape  # (2, 64, 64); each image has 8 of its 16 patches masked
    ```
    """
    check_mask_arguments(image_size, patch_size, mask_ratio)
    height, width = image_size
    rows, cols = height // patch_size, width // patch_size
    num_patches = rows * cols
    num_masked = int(round(mask_ratio * num_patches))
    noise = tf.random.stateless_uniform([batch_size, num_patches], seed=seed)
    ranks = tf.argsort(tf.argsort(noise, axis=1), axis=1)  # [batch, patches]
    patches = tf.cast(ranks < num_masked, tf.float32)
    patches = tf.reshape(patches, [-1, rows, cols])
    pixels = tf.repeat(tf.repeat(patches, patch_size, axis=1), patch_size, axis=2)
    return pixels


@keras.saving.register_keras_serializable(package="simmim_tf")
class MaskTokenLayer(keras.layers.Layer):
    """Replace masked pixels by a learnable mask token (one value per channel).

    Call with `(images [B, H, W, C], mask [B, H, W])`.
    """

    def build(self, images_shape, mask_shape=None):
        self.mask_token = self.add_weight(
            shape=(images_shape[-1],), initializer="zeros", name="mask_token"
        )

    def call(self, images, mask):
        mask = keras.ops.expand_dims(keras.ops.cast(mask, images.dtype), -1)
        return images * (1.0 - mask) + self.mask_token * mask


@keras.saving.register_keras_serializable(package="simmim_tf")
class PixelReconstructionHead(keras.layers.Layer):
    """SimMIM's linear head: 1x1 conv to `stride^2 * 3` channels, pixel shuffle.

    Args:
        stride: int. Ratio of image size to feature-map size.
        channels: int. Image channels to predict.
    """

    def __init__(self, stride: int, channels: int = 3, **kwargs):
        super().__init__(**kwargs)
        if stride <= 0:
            raise ValueError(f"Stride {stride} must be greater than 0.")
        self.stride = stride
        self.channels = channels
        self.projection = keras.layers.Conv2D(
            stride * stride * channels, 1, dtype=self.dtype_policy, name="projection"
        )

    def build(self, feature_map_shape):
        self.projection.build(feature_map_shape)

    def call(self, feature_map):
        return tf.nn.depth_to_space(self.projection(feature_map), self.stride)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(stride=self.stride, channels=self.channels)
        return config


def masked_l1_loss(
    target: tf.Tensor, prediction: tf.Tensor, mask: tf.Tensor
) -> tf.Tensor:
    """Mean absolute error over masked pixels only (SimMIM's loss).

    Args:
        target: `[B, H, W, C]` normalised pixels of the unmasked image.
        prediction: `[B, H, W, C]` reconstruction.
        mask: `[B, H, W]`, 1 where masked.

    Computed in float32, whatever the dtype of `prediction`.
    """
    prediction = tf.cast(prediction, tf.float32)
    mask = tf.cast(mask, prediction.dtype)[..., None]
    channels = tf.cast(tf.shape(prediction)[-1], prediction.dtype)
    error = tf.abs(tf.cast(target, prediction.dtype) - prediction) * mask
    return tf.reduce_sum(error) / (tf.reduce_sum(mask) * channels + 1e-5)
