"""The image encoder: a keras-hub `ResNetBackbone` whose output is a feature map.

Each cell of the feature map becomes one `image` node of the graph, so a config
fixes both the network and the grid: the stem divides the input by 4 and each
stage stride after it by its value. At 64 px, ResNet-18's usual four stages
(stride 32) would leave a 2x2 grid; `resnet18_64px` keeps three stages
(stride 16) and gives a 4x4 grid: 16 image nodes per example.
"""

from __future__ import annotations

import keras
import keras_hub

# ResNet-18 basic blocks, three stages: a 16x smaller feature map.
_RESNET18 = {
    "input_conv_filters": [64],
    "input_conv_kernel_sizes": [7],
    "stackwise_num_filters": [64, 128, 256],
    "stackwise_num_blocks": [2, 2, 2],
    "stackwise_num_strides": [1, 2, 2],
    "block_type": "basic_block",
    "use_pre_activation": False,
}
IMAGE_ENCODER_CONFIGS: dict[str, dict] = {
    # CPU default: 64 px -> 4x4 cells.
    "resnet18_64px": {**_RESNET18, "image_shape": (64, 64, 3)},
    # The plain CLIP recipe of issue 11: 96 px -> 6x6 cells.
    "resnet18_96px": {**_RESNET18, "image_shape": (96, 96, 3)},
    # Emoji scenes (VQA): 128 px -> 8x8 cells, so each emoji of a 2x2 scene
    # covers 4x4 image nodes.
    "resnet18_128px": {**_RESNET18, "image_shape": (128, 128, 3)},
    # GPU: ResNet-50 at 224 px -> 7x7 cells.
    "resnet50_224px": {
        "input_conv_filters": [64],
        "input_conv_kernel_sizes": [7],
        "stackwise_num_filters": [64, 128, 256, 512],
        "stackwise_num_blocks": [3, 4, 6, 3],
        "stackwise_num_strides": [1, 2, 2, 2],
        "block_type": "bottleneck_block",
        "use_pre_activation": False,
        "image_shape": (224, 224, 3),
    },
    # Tests: one stage, 16 px -> 4x4 cells, ~75k weights.
    "tiny_16px": {
        "input_conv_filters": [64],
        "input_conv_kernel_sizes": [3],
        "stackwise_num_filters": [64],
        "stackwise_num_blocks": [1],
        "stackwise_num_strides": [1],
        "block_type": "basic_block",
        "use_pre_activation": False,
        "image_shape": (16, 16, 3),
    },
}


def build_image_encoder(
    config: str | dict = "resnet18_64px",
    weights_path: str | None = None,
    dtype: str | keras.DTypePolicy | None = None,
) -> keras_hub.models.ResNetBackbone:
    """Build a keras-hub `ResNetBackbone`, optionally loading local weights.

    Args:
        config: str or dict. A key of `IMAGE_ENCODER_CONFIGS` or the keyword
            arguments of `keras_hub.models.ResNetBackbone`.
        weights_path: str. Optional path of a `.weights.h5` file saved from a
            backbone with the same config. Weights are never downloaded.
        dtype: Keras dtype policy (e.g. `"mixed_bfloat16"`); None: the global one.

    Example:
    ```python
    encoder = build_image_encoder("tiny_16px")
    encoder.output_shape  # (None, 4, 4, 64)
    ```
    """
    if isinstance(config, str):
        if config not in IMAGE_ENCODER_CONFIGS:
            raise ValueError(
                f"Unknown image encoder config {config!r}; expected one of "
                f"{sorted(IMAGE_ENCODER_CONFIGS)} or a dict of ResNetBackbone "
                "arguments."
            )
        config = IMAGE_ENCODER_CONFIGS[config]
    encoder = keras_hub.models.ResNetBackbone(**config, dtype=dtype)
    if weights_path is not None:
        encoder.load_weights(weights_path)
    return encoder


def feature_grid(encoder: keras.Model) -> tuple[int, int]:
    """The (height, width) of the feature map, i.e. the image node grid."""
    _, height, width, _ = encoder.output_shape
    if height is None or width is None:
        raise ValueError(
            "The image encoder needs a fixed `image_shape` so that the number of "
            f"image nodes is known; got output shape {encoder.output_shape}."
        )
    return height, width
