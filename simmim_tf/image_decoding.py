"""Encoded image bytes -> RGB pixels in [0, 1], composited on white, in TF ops.

One decoder for every image that enters the package: the emoji data set
builds its examples with it and `SimMIMPreprocessor` decodes caller bytes with
it, so training and serving see the same pixels. Any format
`tf.io.decode_image` reads (PNG in any mode including 16-bit, JPEG, GIF, BMP,
WebP where TensorFlow has it); transparency is composited on white, as
emoji are drawn. A header that declares more than `max_pixels` pixels is
refused before anything is decoded (a decompression bomb).
"""

from __future__ import annotations

import tensorflow as tf

# 4096 x 4096: far above any emoji or photo the model resizes to 64 px, far
# below a decompression bomb (a 1 MB PNG can declare 20 000 x 20 000).
DEFAULT_MAX_PIXELS = 4096 * 4096


def decode_on_white(data: tf.Tensor, max_pixels: int = DEFAULT_MAX_PIXELS) -> tf.Tensor:
    """Decode one encoded image to float32 `[H, W, 3]` in [0, 1], on white.

    Args:
        data: scalar `tf.string`. The encoded image.
        max_pixels: int. Largest height x width the header may declare.

    Raises (when run): `InvalidArgumentError` for undecodable bytes or a
    header over `max_pixels`.

    Example:
    ```python
    pixels = decode_on_white(tf.io.encode_png(tf.zeros([2, 2, 4], tf.uint8)))
    pixels.numpy().min()  # 1.0: fully transparent is white
    ```
    """
    height, width = declared_size(data)
    too_large = tf.debugging.Assert(
        tf.cast(height, tf.int64) * tf.cast(width, tf.int64) <= max_pixels,
        [
            "An image's header declares more than "
            f"max_pixels={max_pixels} pixels; refused before decoding. "
            "Height and width:",
            height,
            width,
        ],
    )
    with tf.control_dependencies([too_large]):
        data = tf.identity(data)
    # Native channels: JPEG has no alpha and GIF no single channel, so asking
    # every format for 4 channels fails. JPEG with the exact IDCT, as Pillow
    # decodes it; the default fast one is up to 7/255 off.
    # expand_animations=False: a GIF gives its first frame, `[H, W, C]`.
    image = tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.io.decode_jpeg(data, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(data, expand_animations=False),
    )
    rgb, alpha = _rgb_and_alpha(tf.image.convert_image_dtype(image, tf.float32))
    return rgb * alpha + (1.0 - alpha)


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


def declared_size(data: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Height and width an encoded image's header declares (0, 0 if unknown).

    Reads PNG (IHDR), GIF (logical screen), BMP (info header), WebP (VP8,
    VP8L, VP8X) and JPEG (frame header, via `tf.image.extract_jpeg_shape`)
    headers only: nothing is decoded.
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

    png, gif, bmp, webp = _formats(data)
    webp_kind = tf.strings.substr(tf.strings.join([data, b"\0" * 16]), 12, 4)
    # VP8X: 24-bit sizes minus one; VP8L: 14-bit sizes minus one, bit-packed;
    # VP8 (lossy): 14-bit sizes in the key frame header.
    vp8l = little_endian(21, 4)
    webp_size = tf.case(
        [
            (
                tf.equal(webp_kind, b"VP8X"),
                lambda: tf.stack([little_endian(27, 3) + 1, little_endian(24, 3) + 1]),
            ),
            (
                tf.equal(webp_kind, b"VP8L"),
                lambda: tf.stack(
                    [vp8l // (1 << 14) % (1 << 14) + 1, vp8l % (1 << 14) + 1]
                ),
            ),
        ],
        default=lambda: tf.stack(
            [little_endian(28, 2) % (1 << 14), little_endian(26, 2) % (1 << 14)]
        ),
    )
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
            (webp, lambda: webp_size[0]),
        ],
        default=lambda: jpeg_shape[0],
    )
    width = tf.case(
        [
            (png, lambda: big_endian(16)),
            (gif, lambda: little_endian(6, 2)),
            (bmp, lambda: signed_32(little_endian(18, 4))),
            (webp, lambda: webp_size[1]),
        ],
        default=lambda: jpeg_shape[1],
    )
    return height, width


FORMATS = "PNG, JPEG, GIF, BMP or WebP"


def _formats(data: tf.Tensor) -> tuple[tf.Tensor, ...]:
    """Whether `data` starts as a PNG, GIF, BMP or WebP file does (elementwise)."""
    png = tf.equal(tf.strings.substr(data, 0, 8), b"\x89PNG\r\n\x1a\n")
    gif = tf.equal(tf.strings.substr(data, 0, 4), b"GIF8")
    bmp = tf.equal(tf.strings.substr(data, 0, 2), b"BM")
    padded = tf.strings.join([data, b"\0" * 12])  # substr fails past the end
    webp = tf.logical_and(
        tf.equal(tf.strings.substr(data, 0, 4), b"RIFF"),
        tf.equal(tf.strings.substr(padded, 8, 4), b"WEBP"),
    )
    return png, gif, bmp, webp


def check_encoded_images(
    images: tf.Tensor, max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "images"
) -> tf.Tensor:
    """`images` (a `[B]` string tensor), once every one passes the header checks.

    Refuses, naming `name` and the indices at fault, before anything is
    decoded: a batch of zero, empty bytes, bytes of no known format, a PNG
    or GIF cut short (no end chunk / trailer), and headers declaring more
    than `max_pixels` pixels. A body corrupt in the middle is left to the
    decoder, whose error names no index in a graph.
    """
    size = tf.size(images)
    png, gif, bmp, webp = _formats(images)
    known = tf.reduce_any(tf.stack([png, gif, bmp, webp, _is_jpeg(images)]), axis=0)
    # The last 12 bytes, left-padded: a PNG ends with the IEND chunk (its
    # type at 4..8 of them), a GIF with the trailer byte 0x3B.
    length = tf.strings.length(images)
    tail = tf.strings.substr(
        tf.strings.join([b"\0" * 12, images]), length, tf.fill(tf.shape(length), 12)
    )
    png_end = tf.equal(tf.strings.substr(tail, 4, 4), b"IEND")
    gif_end = tf.equal(tf.strings.substr(tail, 11, 1), b"\x3b")
    truncated = (png & ~png_end) | (gif & ~gif_end)
    sizes = tf.map_fn(
        lambda data: tf.stack(declared_size(data)),
        images,
        fn_output_signature=tf.TensorSpec([2], tf.int64),
    )
    too_large = sizes[:, 0] * sizes[:, 1] > max_pixels

    checks = [
        refuse_where(tf.reshape(size == 0, [1]), f"`{name}` holds zero examples."),
        refuse_where(~known, f"`{name}` at these indices are empty or not {FORMATS}:"),
        refuse_where(truncated, f"`{name}` at these indices are cut short (truncated):"),
        refuse_where(
            too_large,
            f"`{name}` at these indices declare more than max_pixels={max_pixels} "
            "pixels; refused before decoding:",
        ),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(images)


def _is_jpeg(images: tf.Tensor) -> tf.Tensor:
    return tf.equal(tf.strings.substr(images, 0, 3), b"\xff\xd8\xff")


def refuse_where(bad: tf.Tensor, message: str):
    """Fail with `message` and the indices where the `[B]` mask `bad` is true.

    Eagerly it raises `InvalidArgumentError` at once with a plain message;
    in a graph it returns the `tf.debugging.Assert` op to depend on.
    """
    indices = tf.reshape(tf.where(bad), [-1])
    if tf.executing_eagerly():
        if tf.size(indices) > 0:
            raise tf.errors.InvalidArgumentError(
                None, None, f"{message} {indices.numpy().tolist()}"
            )
        return tf.no_op()
    return tf.debugging.Assert(tf.size(indices) == 0, [message, indices], summarize=16)
