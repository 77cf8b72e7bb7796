"""`SimMIMPreprocessor`: raw images and strings -> `SimMIMBackbone` inputs."""

from __future__ import annotations

import keras
import keras_hub
import tensorflow as tf
from keras_hub.layers import ResNetImageConverter

# keras-hub has no public form of this decorator (tested with keras-hub 0.32,
# which setup.py pins): it runs `call` on tf tensors in and out of tf.data.
from keras_hub.src.utils.tensor_utils import preprocessing_function

from simmim_tf.image_decoding import (
    DEFAULT_MAX_PIXELS,
    check_encoded_images,
    decode_on_white,
    refuse_where,
)
from simmim_tf.models.backbone import SimMIMBackbone
from simmim_tf.models.inputs import MODALITIES, check_modalities

# ImageNet statistics, as for keras-hub's ResNet presets.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


def resnet_image_converter(image_size: tuple[int, int]) -> ResNetImageConverter:
    """keras-hub's ResNet converter for [0, 1] pixels: resize, ImageNet-normalise.

    Bilinear with antialiasing, stretched to `image_size` (no crop).
    """
    return ResNetImageConverter(
        image_size=tuple(image_size),
        scale=[1.0 / std for std in IMAGE_STD],
        offset=[-mean / std for mean, std in zip(IMAGE_MEAN, IMAGE_STD, strict=True)],
        crop_to_aspect_ratio=False,
        interpolation="bilinear",
        antialias=True,
    )


@keras.saving.register_keras_serializable(package="simmim_tf")
class SimMIMPreprocessor(keras_hub.models.Preprocessor):
    """Turn raw images and texts into the inputs of `SimMIMBackbone`.

    Images may be encoded bytes (PNG in any mode, including 16-bit, JPEG, GIF,
    BMP; a `tf.string` tensor) or pixel arrays `[H, W, 3]` / `[batch, H, W, 3]`
    of any size, uint8 in [0, 255] or float in [0, 1]: float pixels outside
    [0, 1] (e.g. [0, 255] floats), NaN or infinity are refused, never rescaled
    silently. Images and texts must have one batch size. The image converter
    (by default keras-hub's `ResNetImageConverter`: bilinear resize to
    `image_size`, ImageNet statistics) makes them model inputs; bytes are
    decoded by `simmim_tf.image_decoding`, transparency on white. Texts are
    tokenised with the BERT
    tokenizer, wrapped in `[CLS] ... [SEP]`, truncated to `sequence_length`
    (a huge text is cut, never an error) and padded.

    Args:
        tokenizer: `keras_hub.models.BertTokenizer`.
        image_size: tuple of 2 ints. `(height, width)` of the default image
            converter; ignored when `image_converter` is given.
        sequence_length: int. Padded length of token sequences (settable).
        max_pixels: int. Largest width x height an encoded image may declare;
            larger ones (decompression bombs) are refused from their header,
            before anything is decoded.
        modalities: tuple of str. What the model reads: `"image"` (input
            `images`, output `images`) and/or `"text"` (input `texts`, outputs
            `token_ids` and `padding_mask`). Other keys of `x` are ignored.
        image_converter: `keras_hub.layers.ImageConverter` or None. Takes
            [0, 1] pixels to model inputs; None gives `resnet_image_converter`
            at `image_size`. Serialised with the preprocessor (and presets).

    Call with `x = {"images": ..., "texts": ...}` (and optional `y`,
    `sample_weight`); returns `{"images", "token_ids", "padding_mask"}`. An
    empty (or all-whitespace) text, undecodable image bytes or an image of the
    wrong rank or channel count raise an error that names the problem.

    Example:
    ```python
    preprocessor = SimMIMPreprocessor(
        tokenizer=build_tokenizer(), image_size=(64, 64), sequence_length=32)
    inputs = preprocessor({
        "images": np.zeros([2, 64, 64, 3], "uint8"),
        "texts": ["grinning face: face, grin", "red heart: heart, love"],
    })
    inputs["token_ids"].shape  # (2, 32)
    ```
    """

    backbone_cls = SimMIMBackbone
    tokenizer_cls = keras_hub.models.BertTokenizer
    image_converter_cls = ResNetImageConverter

    def __init__(
        self,
        tokenizer: keras_hub.models.BertTokenizer,
        image_size: tuple[int, int] = (64, 64),
        sequence_length: int = 32,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        modalities: tuple[str, ...] = MODALITIES,
        image_converter: keras_hub.layers.ImageConverter | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        modalities = check_modalities(modalities)
        if max_pixels <= 0:
            raise ValueError(f"Pixel limit {max_pixels} must be greater than 0.")
        if sequence_length < 3:
            raise ValueError(
                f"Sequence length {sequence_length} must be >= 3 ([CLS], a token, [SEP])."
            )
        # === Layers ===
        self.tokenizer = tokenizer
        self.image_converter = image_converter or resnet_image_converter(image_size)
        self.packer = None
        # === Config ===
        self.sequence_length = sequence_length
        self.max_pixels = max_pixels
        self.modalities = modalities

    def build(self, input_shape=None):
        super().build(input_shape)
        self.packer = keras_hub.layers.StartEndPacker(
            start_value=self.tokenizer.cls_token_id,
            end_value=self.tokenizer.sep_token_id,
            pad_value=self.tokenizer.pad_token_id,
            sequence_length=self.sequence_length,
            return_padding_mask=True,
        )
        # One code path (TensorFlow's) in eager calls and in tf.data alike.
        for layer in (self.tokenizer, self.packer):
            layer._allow_python_workflow = False

    @property
    def sequence_length(self) -> int:
        """Padded length of token sequences; setting it re-pads from then on."""
        return self._sequence_length

    @sequence_length.setter
    def sequence_length(self, value: int) -> None:
        self._sequence_length = value
        if self.packer is not None:
            self.packer.sequence_length = value

    @preprocessing_function
    def call(self, x, y=None, sample_weight=None):
        expected = [f"{modality}s" for modality in self.modalities]
        if not isinstance(x, dict) or set(expected) - set(x):
            keys = sorted(x) if isinstance(x, dict) else None
            raise ValueError(
                "SimMIMPreprocessor expects x = {"
                + ", ".join(f"'{key}': ..." for key in expected)
                + f"}}; got {type(x).__name__} with keys {keys}."
            )
        inputs = {}
        if "image" in self.modalities:
            inputs["images"] = self._images(x["images"])
        if "text" in self.modalities:
            inputs["token_ids"], inputs["padding_mask"] = self.tokenize(x["texts"])
        if len(inputs) == 3 and inputs["token_ids"].shape.rank == 2:
            tf.debugging.assert_equal(
                tf.shape(inputs["images"])[0],
                tf.shape(inputs["token_ids"])[0],
                message="SimMIMPreprocessor: `images` and `texts` have different "
                "batch sizes; pass one text per image.",
            )
        return keras.utils.pack_x_y_sample_weight(inputs, y, sample_weight)

    def tokenize(self, texts, name: str = "texts") -> tuple[tf.Tensor, tf.Tensor]:
        """`token_ids` and `padding_mask` of strings; errors name `name`.

        Refused, naming the indices at fault: a batch of zero, invalid UTF-8,
        a text with no token (only whitespace or control characters).
        """
        if not self.built:
            self.build()
        texts = tf.convert_to_tensor(texts)
        if texts.dtype != tf.string:
            raise TypeError(f"`{name}` must be strings; got dtype {texts.dtype.name}.")
        tokens = self.tokenizer(check_texts(texts, name))
        counts = tf.reshape(
            tokens.row_lengths()
            if isinstance(tokens, tf.RaggedTensor)
            else tf.size(tokens),
            [-1],
        )
        empty = refuse_where(
            counts == 0,
            "SimMIMPreprocessor: a text is empty (no word, only whitespace or "
            f"control characters) in `{name}` at these indices:",
        )
        with tf.control_dependencies([empty]):
            return self.packer(tokens)

    def _images(self, images) -> tf.Tensor:
        images = tf.convert_to_tensor(images)
        if images.dtype == tf.string:
            return self.decode_images(images)
        if images.shape.rank not in (3, 4) or images.shape[-1] != 3:
            raise ValueError(
                "`images` must be [H, W, 3] or [batch, H, W, 3] RGB pixels or "
                f"encoded image bytes; got shape {images.shape} ({images.dtype.name})."
            )
        if images.shape.rank == 4:
            tf.debugging.assert_positive(
                tf.shape(images)[0],
                message="SimMIMPreprocessor: `images` holds zero examples.",
            )
        if images.dtype == tf.uint8:
            images = tf.cast(images, tf.float32) / 255.0
        elif images.dtype.is_floating:
            images = tf.cast(images, tf.float32)
            tf.debugging.assert_all_finite(
                images, "SimMIMPreprocessor: `images` hold NaN or infinite pixels."
            )
            tf.debugging.assert_less_equal(
                tf.reduce_max(tf.abs(images - 0.5)),
                0.5,
                message="SimMIMPreprocessor: float `images` must lie in [0, 1] "
                "(uint8 arrays take [0, 255]); divide [0, 255] floats by 255.",
            )
        else:
            raise TypeError(
                f"`images` must be uint8 or float pixels; got {images.dtype.name}."
            )
        return self.image_converter(images)

    def decode_images(self, encoded: tf.Tensor, name: str = "images") -> tf.Tensor:
        """Encoded image bytes to model inputs, image by image (their sizes
        differ); errors name `name` and the indices at fault."""

        def decode_one(data):
            return self.image_converter(decode_on_white(data, self.max_pixels))

        batch = tf.reshape(encoded, [-1])
        try:
            checked = check_encoded_images(batch, self.max_pixels, name)
            decoded = tf.map_fn(
                decode_one,
                checked,
                fn_output_signature=tf.TensorSpec([*self.image_size, 3], tf.float32),
            )
        except tf.errors.InvalidArgumentError as error:
            raise ValueError(
                "SimMIMPreprocessor could not decode an image: "
                + _first_undecodable(batch, decode_one, error.message, name)
            ) from None
        return decoded[0] if encoded.shape.rank == 0 else decoded

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            sequence_length=self.sequence_length,
            max_pixels=self.max_pixels,
            modalities=self.modalities,
        )
        return config


def check_texts(texts: tf.Tensor, name: str = "texts") -> tf.Tensor:
    """`texts` once they pass: not a batch of zero, every one valid UTF-8.

    Errors name `name` and the indices at fault. (Empty texts are found
    after tokenising: a text of spaces or control characters has no word.)
    """
    flat = tf.reshape(texts, [-1])
    utf8 = tf.equal(
        tf.strings.unicode_transcode(flat, "UTF-8", "UTF-8", errors="replace"), flat
    )
    checks = [
        refuse_where(
            tf.reshape(tf.size(flat) == 0, [1]), f"`{name}` holds zero examples."
        ),
        refuse_where(~utf8, f"`{name}` at these indices are not valid UTF-8:"),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(texts)


def _first_undecodable(batch: tf.Tensor, decode, message: str, name: str) -> str:
    """`message`, with the index of the first image that fails (eager only).

    The header checks name their indices; a body that fails to decode does
    not, so each image is decoded alone until one fails (the error path only).
    """
    if "at these indices" in message or not tf.executing_eagerly():
        return message
    for index in range(int(tf.size(batch))):
        try:
            decode(batch[index])
        except tf.errors.InvalidArgumentError as error:
            return f"`{name}` at index {index}: {error.message}"
    return message
