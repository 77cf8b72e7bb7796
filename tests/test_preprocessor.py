"""SimMIMPreprocessor: encodings, truncation and clear errors on bad input."""

import io

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import simmim_tf


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
