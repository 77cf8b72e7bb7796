"""SimMIMPreprocessor: encodings, truncation and clear errors on bad input."""

import io

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import simmim_tf
from simmim_tf.image_decoding import declared_size
from tests.bad_inputs import (
    BAD_INPUTS,
    SIGNATURE_MODALITIES,
    png_bomb,
    preprocessor_inputs,
)


def png_bytes(pixels: np.ndarray, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode).save(buffer, format="PNG")
    return buffer.getvalue()


def to_numpy(x):
    return {k: keras.ops.convert_to_numpy(v) for k, v in x.items()}


def test_png_bytes_and_pixel_arrays_give_the_same_inputs(preprocessor, raw_batch):
    encoded = dict(
        raw_batch, images=np.array([png_bytes(p) for p in raw_batch["images"]])
    )
    from_pixels, from_bytes = (
        to_numpy(preprocessor(raw_batch)),
        to_numpy(preprocessor(encoded)),
    )
    np.testing.assert_allclose(from_bytes["images"], from_pixels["images"], atol=1e-5)
    np.testing.assert_array_equal(from_bytes["token_ids"], from_pixels["token_ids"])


def test_transparent_png_is_composited_on_white(preprocessor):
    rgba = np.zeros((16, 16, 4), np.uint8)  # fully transparent black
    white = np.full((1, 16, 16, 3), 255, np.uint8)
    got = to_numpy(preprocessor({"images": [png_bytes(rgba, "RGBA")], "texts": ["x"]}))
    want = to_numpy(preprocessor({"images": white, "texts": ["x"]}))
    np.testing.assert_allclose(got["images"], want["images"], atol=1e-5)


def test_tokens_are_wrapped_padded_and_truncated(preprocessor, tokenizer):
    huge = " ".join(["heart"] * 10_000)
    out = to_numpy(
        preprocessor(
            {"images": np.zeros((2, 16, 16, 3), np.uint8), "texts": ["red heart", huge]}
        )
    )
    ids, mask = out["token_ids"], out["padding_mask"]
    assert ids.shape == (2, 12)
    assert ids[0, 0] == tokenizer.cls_token_id and ids[0, 3] == tokenizer.sep_token_id
    assert mask[0].tolist() == [True] * 4 + [False] * 8
    assert mask[1].all() and ids[1, -1] == tokenizer.sep_token_id


def test_float_images_in_unit_range_match_uint8(preprocessor, raw_batch):
    as_float = dict(raw_batch, images=raw_batch["images"].astype(np.float32) / 255.0)
    np.testing.assert_allclose(
        to_numpy(preprocessor(as_float))["images"],
        to_numpy(preprocessor(raw_batch))["images"],
        atol=1e-5,
    )


def test_empty_text_is_a_clear_error(preprocessor, raw_batch):
    texts = np.array(["ok", "   ", "fine", "good"])
    with pytest.raises(tf.errors.InvalidArgumentError, match="a text is empty"):
        preprocessor(dict(raw_batch, texts=texts))


def test_empty_text_is_a_clear_error_inside_tf_data(preprocessor, raw_batch):
    data = tf.data.Dataset.from_tensor_slices(dict(raw_batch, texts=["a", "", "b", "c"]))
    batches = data.batch(4).map(preprocessor)
    with pytest.raises(tf.errors.InvalidArgumentError, match="a text is empty"):
        list(batches)


def test_corrupt_png_is_a_clear_error(preprocessor):
    corrupt = png_bytes(np.zeros((16, 16, 3), np.uint8))[:40] + b"garbage"
    with pytest.raises(ValueError, match="could not decode an image"):
        preprocessor({"images": [corrupt], "texts": ["x"]})


@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((2, 16, 16), np.uint8), "must be .* RGB pixels"),
        (np.zeros((2, 16, 16, 4), np.uint8), "must be .* RGB pixels"),
        (np.zeros((2, 16, 16, 3), np.int64), "must be uint8 or float pixels"),
    ],
)
def test_wrong_image_shape_or_dtype_is_a_clear_error(preprocessor, images, message):
    with pytest.raises((ValueError, TypeError), match=message):
        preprocessor({"images": images, "texts": ["a", "b"]})


def test_missing_inputs_and_bad_config_are_clear_errors(preprocessor, tokenizer):
    with pytest.raises(ValueError, match=r"expects x = \{'images'"):
        preprocessor({"images": np.zeros((1, 16, 16, 3), np.uint8)})
    with pytest.raises(TypeError, match="`texts` must be strings"):
        preprocessor({"images": np.zeros((1, 16, 16, 3), np.uint8), "texts": [3]})
    with pytest.raises(ValueError, match="Sequence length 2 must be >= 3"):
        simmim_tf.SimMIMPreprocessor(tokenizer=tokenizer, sequence_length=2)


def test_preset_round_trip(tmp_path, backbone, preprocessor, raw_batch):
    # keras-hub presets pair a preprocessor with its backbone's folder.
    backbone.save_to_preset(str(tmp_path))
    preprocessor.save_to_preset(str(tmp_path))
    clone = simmim_tf.SimMIMPreprocessor.from_preset(str(tmp_path))
    assert clone.image_size == (16, 16) and clone.sequence_length == 12
    np.testing.assert_array_equal(
        to_numpy(clone(raw_batch))["token_ids"],
        to_numpy(preprocessor(raw_batch))["token_ids"],
    )


def _encode(image: Image.Image, file_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=file_format, **options)
    return buffer.getvalue()


def _half_transparent_rgba() -> np.ndarray:
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, size=(16, 16, 4), dtype=np.uint8)
    rgba[..., 3] = np.where(np.arange(16)[:, None] < 8, 255, 96)
    return rgba


def _image_formats() -> dict[str, tuple[bytes, np.ndarray]]:
    """Encoded bytes and what they show on white, decoded by Pillow (the reference)."""
    rgba = Image.fromarray(_half_transparent_rgba(), "RGBA")
    images = {
        "RGB JPEG": (rgba.convert("RGB"), "JPEG", {"quality": 95}),
        "RGB PNG": (rgba.convert("RGB"), "PNG", {}),
        "RGBA PNG": (rgba, "PNG", {}),
        "grey PNG": (rgba.convert("L"), "PNG", {}),
        "grey+alpha PNG": (rgba.convert("LA"), "PNG", {}),
        "palette PNG": (rgba.convert("RGB").convert("P"), "PNG", {}),
        "16-bit grey PNG": (
            Image.fromarray(np.asarray(rgba.convert("L"), np.uint16) * 257),
            "PNG",
            {},
        ),
        "GIF": (rgba.convert("RGB").convert("P"), "GIF", {}),
        "BMP": (rgba.convert("RGB"), "BMP", {}),
        "grey JPEG": (rgba.convert("L"), "JPEG", {"quality": 95}),
        "RGB WebP": (rgba.convert("RGB"), "WEBP", {"lossless": True}),
        "RGBA WebP": (rgba, "WEBP", {"lossless": True}),
    }
    cases = {}
    for name, (image, file_format, options) in images.items():
        data = _encode(image, file_format, **options)
        decoded = Image.open(io.BytesIO(data))
        if decoded.mode == "I;16":
            decoded = Image.fromarray((np.asarray(decoded) // 257).astype(np.uint8))
        on_white = Image.alpha_composite(
            Image.new("RGBA", decoded.size, "white"), decoded.convert("RGBA")
        )
        cases[name] = (data, np.asarray(on_white.convert("RGB")))
    return cases


@pytest.mark.parametrize("name", list(_image_formats()))
def test_every_common_image_format_decodes_like_pillow(preprocessor, name):
    # Regression: JPEG, GIF and BMP bytes were always refused ("JPEG does not
    # support 4 channels"), grey and palette PNGs too.
    data, reference = _image_formats()[name]
    got = to_numpy(preprocessor({"images": [data], "texts": ["x"]}))["images"]
    want = to_numpy(preprocessor({"images": reference[None], "texts": ["x"]}))["images"]
    # Same decoders (JPEG with the exact IDCT); Pillow composites alpha in
    # integers: one uint8 step is 1/255/0.225 = 0.0174 after normalisation.
    np.testing.assert_allclose(got, want, atol=0.018)


def test_a_batch_of_mixed_formats_decodes_each_one(preprocessor):
    cases = _image_formats()
    names = ["RGB JPEG", "RGBA PNG", "GIF", "grey PNG"]
    batch = np.array([cases[name][0] for name in names], dtype=object)
    got = to_numpy(preprocessor({"images": batch, "texts": ["x"] * 4}))["images"]
    want = to_numpy(
        preprocessor(
            {"images": np.stack([cases[n][1] for n in names]), "texts": ["x"] * 4}
        )
    )["images"]
    np.testing.assert_allclose(got, want, atol=0.018)


@pytest.mark.parametrize(
    "images, message",
    [
        # Regression: [0, 255] floats were read as [0, 1], NaN gave finite logits.
        (np.full((2, 16, 16, 3), 200.0, np.float32), r"must lie in \[0, 1\]"),
        (np.full((2, 16, 16, 3), -0.1, np.float32), r"must lie in \[0, 1\]"),
        (np.full((2, 16, 16, 3), np.nan, np.float32), "NaN or infinite"),
        (np.full((2, 16, 16, 3), np.inf, np.float32), "NaN or infinite"),
        # Regression: different batch sizes failed late, deep in the model.
        (np.zeros((3, 16, 16, 3), np.uint8), "different batch sizes"),
    ],
)
def test_pixels_outside_the_contract_are_refused_by_name(preprocessor, images, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        preprocessor({"images": images, "texts": ["a", "b"]})


def test_a_decompression_bomb_is_refused_from_its_header(preprocessor):
    bomb = png_bomb(20_000, 20_000)  # 400 M pixels; float RGB would be 4.8 GB
    assert len(bomb) < 200_000
    with pytest.raises(ValueError, match="refused before decoding"):
        preprocessor({"images": [bomb], "texts": ["x"]})


@pytest.mark.parametrize(
    "file_format, mode, options",
    [
        ("PNG", "RGB", {}),
        ("GIF", "RGB", {}),
        ("BMP", "RGB", {}),
        ("JPEG", "RGB", {}),
        ("WEBP", "RGB", {}),  # VP8, lossy
        ("WEBP", "RGB", {"lossless": True}),  # VP8L
        ("WEBP", "RGBA", {"exif": Image.Exif().tobytes()}),  # VP8X, extended
    ],
)
def test_declared_size_is_read_from_the_header(file_format, mode, options):
    data = _encode(Image.new(mode, (100, 60), "red"), file_format, **options)
    height, width = declared_size(tf.constant(data))
    assert (int(height), int(width)) == (60, 100)


def test_unknown_or_short_bytes_declare_no_size():
    for data in (b"", b"garbage", b"\x89PNG"):
        assert [int(v) for v in declared_size(tf.constant(data))] == [0, 0]


def test_pixel_limit_is_configurable_and_serialised(tokenizer):
    small = simmim_tf.SimMIMPreprocessor(
        tokenizer=tokenizer, image_size=(16, 16), sequence_length=8, max_pixels=50 * 50
    )
    large = _encode(Image.new("RGB", (100, 60), "red"), "PNG")
    fits = _encode(Image.new("RGB", (40, 40), "red"), "PNG")
    assert small({"images": [fits], "texts": ["x"]})["images"].shape == (1, 16, 16, 3)
    with pytest.raises(ValueError, match="max_pixels=2500"):
        small({"images": [fits, large], "texts": ["x", "y"]})
    assert small.get_config()["max_pixels"] == 2500
    with pytest.raises(ValueError, match="Pixel limit 0 must be greater than 0"):
        simmim_tf.SimMIMPreprocessor(tokenizer=tokenizer, max_pixels=0)


def test_encoded_images_in_a_tf_data_pipeline_decode_and_bombs_are_refused(
    preprocessor,
):
    # Graph mode (tf.data): decoded pixels may overshoot 1.0 by rounding after
    # the antialiased resize and must not trip the float-pixel contract.
    formats = ("PNG", "JPEG", "GIF", "BMP")
    images = [_encode(Image.new("RGB", (20, 30), "red"), f) for f in formats]
    batches = (
        tf.data.Dataset.from_tensor_slices({"images": images, "texts": list("abcd")})
        .batch(4)
        .map(preprocessor)
    )
    assert next(iter(batches))["images"].shape == (4, 16, 16, 3)
    bomb = _encode(Image.new("1", (5000, 4000)), "PNG")
    batches = (
        tf.data.Dataset.from_tensor_slices({"images": [bomb], "texts": ["a"]})
        .batch(1)
        .map(preprocessor)
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="refused before decoding"):
        next(iter(batches))


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_the_bad_input_catalogue_is_refused_by_name(tokenizer, case):
    signature, inputs, message = BAD_INPUTS[case]
    preprocessor = simmim_tf.SimMIMPreprocessor(
        tokenizer=tokenizer,
        image_size=(16, 16),
        modalities=SIGNATURE_MODALITIES[signature],
    )
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match=message):
        preprocessor(preprocessor_inputs(inputs))
