"""`SimMIMPreprocessor`: raw images and strings -> `SimMIMBackbone` inputs."""

from __future__ import annotations

import keras
import keras_hub
import tensorflow as tf
from keras_hub.src.utils.tensor_utils import preprocessing_function

from simmim_tf.models.backbone import SimMIMBackbone

# ImageNet statistics, as for keras-hub's ResNet presets.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


# 4096 x 4096: far above any emoji or photo the model resizes to 64 px, far
# below a decompression bomb (a 1 MB PNG can declare 20 000 x 20 000).
DEFAULT_MAX_PIXELS = 4096 * 4096


@keras.saving.register_keras_serializable(package="simmim_tf")
class SimMIMPreprocessor(keras_hub.models.Preprocessor):
    """Turn raw images and texts into the inputs of `SimMIMBackbone`.

    Images may be encoded bytes (PNG in any mode, including 16-bit, JPEG, GIF,
    BMP; a `tf.string` tensor) or pixel arrays `[H, W, 3]` / `[batch, H, W, 3]`
    of any size, uint8 in [0, 255] or float in [0, 1]: float pixels outside
    [0, 1] (e.g. [0, 255] floats), NaN or infinity are refused, never rescaled
    silently. Images and texts must have one batch size. They are resized to
    `image_size` and
    normalised with ImageNet statistics. Texts are tokenised with the BERT
    tokenizer, wrapped in `[CLS] ... [SEP]`, truncated to `sequence_length`
    (a huge text is cut, never an error) and padded.

    Args:
        tokenizer: `keras_hub.models.BertTokenizer`.
        image_size: tuple of 2 ints. `(height, width)` the model expects.
        sequence_length: int. Padded length of token sequences.
        max_pixels: int. Largest width x height an encoded image may declare;
            larger ones (decompression bombs) are refused from their header,
            before anything is decoded.

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

    def __init__(
        self,
        tokenizer: keras_hub.models.BertTokenizer,
        image_size: tuple[int, int] = (64, 64),
        sequence_length: int = 32,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if max_pixels <= 0:
            raise ValueError(f"Pixel limit {max_pixels} must be greater than 0.")
        if sequence_length < 3:
            raise ValueError(
                f"Sequence length {sequence_length} must be >= 3 ([CLS], a token, [SEP])."
            )
        # === Layers ===
        self.tokenizer = tokenizer
        self.packer = None
        # === Config ===
        self.image_size = tuple(image_size)
        self.sequence_length = sequence_length
        self.max_pixels = max_pixels

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
    def image_size(self) -> tuple[int, int]:
        return self._image_size

    @image_size.setter
    def image_size(self, value) -> None:
        self._image_size = tuple(value)

    @preprocessing_function
    def call(self, x, y=None, sample_weight=None):
        if not isinstance(x, dict) or {"images", "texts"} - set(x):
            keys = sorted(x) if isinstance(x, dict) else None
            raise ValueError(
                "SimMIMPreprocessor expects x = {'images': ..., 'texts': ...}; "
                f"got {type(x).__name__} with keys {keys}."
            )
        texts = tf.convert_to_tensor(x["texts"])
        if texts.dtype != tf.string:
            raise TypeError(f"`texts` must be strings; got dtype {texts.dtype.name}.")
        tf.debugging.assert_greater(
            tf.strings.length(tf.strings.strip(texts)),
            0,
            message="SimMIMPreprocessor: a text is empty (or only whitespace); "
            "every example needs at least one word.",
        )
        token_ids, padding_mask = self.packer(self.tokenizer(texts))
        images = self._images(x["images"])
        if texts.shape.rank == 1:
            tf.debugging.assert_equal(
                tf.shape(images)[0],
                tf.shape(texts)[0],
                message="SimMIMPreprocessor: `images` and `texts` have different "
                "batch sizes; pass one text per image.",
            )
        inputs = {
            "images": images,
            "token_ids": token_ids,
            "padding_mask": padding_mask,
        }
        return keras.utils.pack_x_y_sample_weight(inputs, y, sample_weight)

    def _images(self, images) -> tf.Tensor:
        images = tf.convert_to_tensor(images)
        # Decoded bytes are already [0, 1] floats (resizing may overshoot by
        # rounding); the pixel contract below is for arrays a caller passes.
        decoded = images.dtype == tf.string
        if decoded:
            images = self._decode(images)
        if images.shape.rank not in (3, 4) or images.shape[-1] != 3:
            raise ValueError(
                "`images` must be [H, W, 3] or [batch, H, W, 3] RGB pixels or "
                f"encoded image bytes; got shape {images.shape} ({images.dtype.name})."
            )
        if images.dtype == tf.uint8:
            images = tf.cast(images, tf.float32) / 255.0
        elif images.dtype.is_floating:
            images = tf.cast(images, tf.float32)
            if not decoded:
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
        images = tf.image.resize(images, self.image_size, antialias=True)
        return (images - IMAGE_MEAN) / IMAGE_STD

    def _decode(self, encoded: tf.Tensor) -> tf.Tensor:
        def decode_one(data):
            height, width = _declared_size(data)
            too_large = tf.debugging.Assert(
                tf.cast(height, tf.int64) * tf.cast(width, tf.int64) <= self.max_pixels,
                [
                    "SimMIMPreprocessor: an image's header declares more than "
                    f"max_pixels={self.max_pixels} pixels; refused before decoding. "
                    "Height and width:",
                    height,
                    width,
                ],
            )
            with tf.control_dependencies([too_large]):
                data = tf.identity(data)
            # Native channels: JPEG has no alpha and GIF no single channel, so
            # asking every format for 4 channels fails. JPEG with the exact IDCT,
            # as Pillow (and so the training data) decodes it; the default fast
            # one is up to 7/255 off. expand_animations=False: a GIF gives its
            # first frame, shape [H, W, C].
            image = tf.cond(
                tf.io.is_jpeg(data),
                lambda: tf.io.decode_jpeg(data, dct_method="INTEGER_ACCURATE"),
                lambda: tf.io.decode_image(data, expand_animations=False),
            )
            rgb, alpha = _rgb_and_alpha(tf.image.convert_image_dtype(image, tf.float32))
            # Composite transparency on white, as the emoji data set does.
            composited = rgb * alpha + (1.0 - alpha)
            return tf.image.resize(composited, self.image_size, antialias=True)

        try:
            if encoded.shape.rank == 0:
                return decode_one(encoded)
            return tf.map_fn(
                decode_one,
                encoded,
                fn_output_signature=tf.TensorSpec([*self.image_size, 3], tf.float32),
            )
        except tf.errors.InvalidArgumentError as error:
            raise ValueError(
                f"SimMIMPreprocessor could not decode an image: {error.message}"
            ) from None

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            image_size=self.image_size,
            sequence_length=self.sequence_length,
            max_pixels=self.max_pixels,
        )
        return config


def _rgb_and_alpha(image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """RGB and alpha of `[H, W, C]` pixels: C is 1 (grey), 2 (+alpha), 3 (RGB) or 4."""
    channels = tf.shape(image)[-1]
    grey = tf.tile(image[..., :1], [1, 1, 3])
    rgb = tf.cond(channels >= 3, lambda: image[..., :3], lambda: grey)
    has_alpha = tf.logical_or(tf.equal(channels, 2), tf.equal(channels, 4))
    alpha = tf.cond(
        has_alpha, lambda: image[..., -1:], lambda: tf.ones_like(image[..., :1])
    )
    rgb.set_shape([None, None, 3])
    alpha.set_shape([None, None, 1])
    return rgb, alpha


def _declared_size(data: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Height and width an encoded image's header declares (0, 0 if unknown).

    Reads PNG (IHDR), GIF (logical screen), BMP (info header) and JPEG (frame
    header, via `tf.image.extract_jpeg_shape`) headers only: nothing is decoded.
    """
    header = tf.io.decode_raw(
        tf.strings.substr(
            tf.strings.join([tf.strings.substr(data, 0, 32), b"\0" * 32]), 0, 32
        ),
        tf.uint8,
    )
    header = tf.cast(header, tf.int64)

    def big_endian(offset: int) -> tf.Tensor:
        return tf.reduce_sum(header[offset : offset + 4] * [1 << 24, 1 << 16, 1 << 8, 1])

    def little_endian(offset: int, length: int) -> tf.Tensor:
        return tf.reduce_sum(
            header[offset : offset + length] * [1 << (8 * i) for i in range(length)]
        )

    def signed_32(value: tf.Tensor) -> tf.Tensor:
        return tf.abs(tf.where(value >= 1 << 31, value - (1 << 32), value))

    prefix = tf.strings.substr(data, 0, 8)
    png = tf.equal(prefix, b"\x89PNG\r\n\x1a\n")
    gif = tf.equal(tf.strings.substr(data, 0, 4), b"GIF8")
    bmp = tf.equal(tf.strings.substr(data, 0, 2), b"BM")
    zero = tf.constant(0, tf.int64)
    jpeg_shape = tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.cast(tf.image.extract_jpeg_shape(data)[:2], tf.int64),
        lambda: tf.stack([zero, zero]),
    )
    height = tf.case(
        [
            (png, lambda: big_endian(20)),
            (gif, lambda: little_endian(8, 2)),
            (bmp, lambda: signed_32(little_endian(22, 4))),
        ],
        default=lambda: jpeg_shape[0],
    )
    width = tf.case(
        [
            (png, lambda: big_endian(16)),
            (gif, lambda: little_endian(6, 2)),
            (bmp, lambda: signed_32(little_endian(18, 4))),
        ],
        default=lambda: jpeg_shape[1],
    )
    return height, width
