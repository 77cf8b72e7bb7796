"""The catalogue of bad inputs, tried at every level that takes raw data:
the preprocessor, the SavedModel signatures and the served endpoints.

Each case is `(signature, inputs by the signature's names, message regex)`;
the message names the problem and, in a batch, the index at fault.
"""

import io
import struct
import zlib

import numpy as np
from PIL import Image


def png_bomb(width: int, height: int) -> bytes:
    """A real PNG of `width x height` 1-bit grey zeros: tiny file, huge image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    pixels = b"".join(compressor.compress(row) for _ in range(height))
    pixels += compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", pixels)
        + chunk(b"IEND", b"")
    )


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


PNG = _png()
NO_STRINGS = np.array([], dtype=object)
BAD_INPUTS = {
    "0-byte image": (
        "embed_image",
        {"image_bytes": [PNG, b""]},
        r"(?s)empty or not PNG.*\[1\]",
    ),
    "bytes of no image format": (
        "embed_image",
        {"image_bytes": [b"hello, world"]},
        r"(?s)empty or not PNG.*\[0\]",
    ),
    "truncated PNG": (
        "embed_image",
        {"image_bytes": [PNG, PNG[: len(PNG) // 2]]},
        r"(?s)cut short.*\[1\]",
    ),
    "20 000 x 20 000 PNG (decompression bomb)": (
        "embed_image",
        {"image_bytes": [png_bomb(20_000, 20_000)]},
        r"(?s)max_pixels.*\[0\]",
    ),
    "zero images": ("embed_image", {"image_bytes": NO_STRINGS}, "zero examples"),
    "empty text": ("embed_text", {"text": ["a cat", ""]}, r"(?s)a text is empty.*\[1\]"),
    "whitespace text": ("embed_text", {"text": [" \t\n"]}, r"(?s)a text is empty.*\[0\]"),
    "NUL-only text": ("embed_text", {"text": ["\0\0"]}, r"(?s)a text is empty.*\[0\]"),
    "non-UTF-8 text": (
        "embed_text",
        {"text": ["ok", b"caf\xe9"]},
        r"(?s)not valid UTF-8.*\[1\]",
    ),
    "zero texts": ("embed_text", {"text": NO_STRINGS}, "zero examples"),
    "two images, one text": (
        "match",
        {"image_bytes": [PNG, PNG], "text": ["a cat"]},
        "different batch sizes",
    ),
}
# Legitimate, if unusual: answered, not refused.
HANDLED_TEXTS = {
    "100 000-character text (truncated)": "pizza " * 16_667,
    "NUL inside a text": "piz\0za slice",
}
SIGNATURE_MODALITIES = {
    "embed_image": ("image",),
    "embed_text": ("text",),
    "match": ("image", "text"),
}


def preprocessor_inputs(inputs: dict) -> dict:
    """Served input names -> `SimMIMPreprocessor` keys."""
    keys = {"image_bytes": "images", "text": "texts"}
    return {
        keys[name]: np.array(
            [v.encode() if isinstance(v, str) else v for v in value], dtype=object
        )
        if len(value)
        else np.array([], dtype=object)
        for name, value in inputs.items()
    }
