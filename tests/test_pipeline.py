"""tf.data pipeline on the committed sample: batches, augmentation, determinism."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from simmim_tf.data import load_emoji_text
from simmim_tf.data.pipeline import augment, make_dataset, rotate_on_white


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    return load_emoji_text("twitter", data_dir=str(tmp_path_factory.mktemp("tfds"))).take(
        40
    )


def first_batch(dataset):
    inputs, labels = next(iter(dataset))
    return {k: keras.ops.convert_to_numpy(v) for k, v in inputs.items()}, labels.numpy()


def test_batches_have_model_inputs_and_labels(examples, preprocessor):
    inputs, labels = first_batch(make_dataset(examples, preprocessor, batch_size=8))
    assert inputs["images"].shape == (8, 16, 16, 3)
    assert inputs["token_ids"].shape == (8, 12)
    assert labels.shape == (8,) and labels.dtype == np.int64


def test_training_pipeline_is_deterministic_under_a_seed(examples, preprocessor):
    def batch(seed):
        return first_batch(
            make_dataset(examples, preprocessor, batch_size=8, training=True, seed=seed)
        )

    (a, labels_a), (b, labels_b), (c, _) = batch(3), batch(3), batch(4)
    np.testing.assert_array_equal(a["images"], b["images"])
    np.testing.assert_array_equal(labels_a, labels_b)
    assert not np.array_equal(a["images"], c["images"])


def test_training_epochs_differ_and_repeat_under_the_same_seed():
    # Shuffle and augmentation are redrawn every epoch; a pipeline rebuilt with
    # the same seed replays the same sequence of epochs.
    rng = np.random.default_rng(0)
    examples = tf.data.Dataset.from_tensor_slices(
        {
            "image": rng.integers(0, 255, (12, 16, 16, 3)).astype(np.uint8),
            "text": [str(i) for i in range(12)],
            "subgroup": np.arange(12),
        }
    )

    def epochs(seed, count=2):
        dataset = make_dataset(
            examples, lambda *batch: batch, batch_size=4, training=True, seed=seed
        )
        result = []
        for _ in range(count):  # one pass over the dataset is one epoch
            batches = [(x["images"].numpy(), y.numpy()) for x, y in dataset]
            result.append(
                tuple(np.concatenate(part) for part in zip(*batches, strict=True))
            )
        return result

    first, second = epochs(seed=3)
    (images_1, labels_1), (images_2, labels_2) = first, second
    assert sorted(labels_1) == sorted(labels_2) == list(range(12))
    assert not np.array_equal(labels_1, labels_2)  # reshuffled
    by_example_1, by_example_2 = (
        images_1[np.argsort(labels_1)],
        images_2[np.argsort(labels_2)],
    )
    assert not np.any(
        [np.array_equal(a, b) for a, b in zip(by_example_1, by_example_2, strict=True)]
    )  # augmented anew
    for replayed, original in zip(epochs(seed=3), (first, second), strict=True):
        np.testing.assert_array_equal(replayed[1], original[1])
        np.testing.assert_array_equal(replayed[0], original[0])


def test_evaluation_pipeline_keeps_order_and_pixels(examples, preprocessor):
    inputs, labels = first_batch(make_dataset(examples, preprocessor, batch_size=8))
    direct = [example for example in examples.take(8).as_numpy_iterator()]
    np.testing.assert_array_equal(labels, [example["subgroup"] for example in direct])
    pixels = np.stack([example["image"] for example in direct])
    expected = preprocessor({"images": pixels, "texts": [e["text"] for e in direct]})
    np.testing.assert_allclose(
        inputs["images"], keras.ops.convert_to_numpy(expected["images"]), atol=1e-6
    )


def shifted(image, offset, max_shift):
    """`image` padded with white by `max_shift`, cropped at `offset`, in [0, 1]."""
    pad = [(max_shift, max_shift), (max_shift, max_shift), (0, 0)]
    padded = np.pad(image, pad, constant_values=255)
    (top, left), (height, width) = offset, image.shape[:2]
    return padded[top : top + height, left : left + width].astype(np.float32) / 255.0


def test_augment_shifts_the_pixels_and_fills_the_vacated_border_with_white(
    monkeypatch,
):
    # Isolate the shift: the zoom side is drawn from [0.75, 1) by
    # tf.random.stateless_uniform; pinned to 1.0 the zoom crops the whole image
    # and resizes it to its own size, which is the identity. The colour jitter
    # becomes the identity. What is left must be exactly "pad with white by
    # max_shift, crop back at a random offset".
    def side_of_one(shape, seed, minval=0, maxval=None, **kwargs):
        return tf.fill(shape, tf.constant(maxval, tf.float32))

    monkeypatch.setattr(tf.random, "stateless_uniform", side_of_one)
    for jitter in ("brightness", "contrast", "saturation", "hue"):
        monkeypatch.setattr(
            tf.image, f"stateless_random_{jitter}", lambda image, *a, **k: image
        )
    max_shift = 3
    image = np.random.default_rng(0).integers(0, 200, (12, 12, 3)).astype(np.uint8)
    offsets = set()
    for seed in range(10):
        out = augment(tf.constant(image), tf.constant([seed, 5], tf.int64), max_shift)
        out = out.numpy()
        matches = [
            (top, left)
            for top in range(2 * max_shift + 1)
            for left in range(2 * max_shift + 1)
            if np.array_equal(out, shifted(image, (top, left), max_shift))
        ]
        assert len(matches) == 1, f"seed {seed}: not a white-padded shift"
        (top, left) = matches[0]
        offsets.add((top - max_shift, left - max_shift))
        # The vacated rows and columns are exactly white (1.0; the input has
        # no pixel above 200 / 255).
        rows = np.r_[0 : max(0, max_shift - top), 12 - max(0, top - max_shift) : 12]
        cols = np.r_[0 : max(0, max_shift - left), 12 - max(0, left - max_shift) : 12]
        assert (out[rows] == 1.0).all() and (out[:, cols] == 1.0).all()
    assert len(offsets) >= 5, offsets  # random, not one fixed offset
    assert any(offset != (0, 0) for offset in offsets)


def test_augment_shows_a_bright_border_on_a_black_image_and_keeps_range():
    # The real augmentation, zoom and colour jitter included. A black image
    # stays uniform under the zoom, and the jitter maps every grey level by one
    # increasing function, so the output has two levels: the dark input,
    # moved by the shift, and a bright frame where the white padding came in.
    max_shift = 4
    image = tf.zeros([32, 32, 3], tf.uint8)
    shifts = []
    for seed in range(8):
        out = augment(image, tf.constant([seed, 7], tf.int64), max_shift).numpy()
        assert out.shape == (32, 32, 3) and out.min() >= 0.0 and out.max() <= 1.0
        np.testing.assert_array_equal(out, out[..., :1].repeat(3, -1))  # grey
        levels = np.unique(out)
        assert len(levels) <= 2, levels
        dark = out[..., 0] == levels[0]
        rows, cols = np.flatnonzero(dark.any(1)), np.flatnonzero(dark.any(0))
        # The dark part is one rectangle that reaches one edge of each axis...
        assert dark[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].all()
        assert dark.sum() == len(rows) * len(cols)
        assert rows[0] == 0 or rows[-1] == 31
        assert cols[0] == 0 or cols[-1] == 31
        # ...and the frame around it, at most max_shift wide, is bright.
        shift = (32 - len(rows), 32 - len(cols))
        assert max(shift) <= max_shift
        if shift != (0, 0):
            assert levels[1] > 0.6 and levels[1] - levels[0] > 0.6, levels
        shifts.append(shift)
    assert sum(shift != (0, 0) for shift in shifts) >= 4, shifts


def test_batch_size_is_validated(examples, preprocessor):
    with pytest.raises(ValueError, match="Batch size 0 must be greater than 0"):
        make_dataset(examples, preprocessor, batch_size=0)


def test_rotate_on_white_turns_about_the_centre_counter_clockwise():
    image = np.random.default_rng(3).integers(0, 200, (9, 9, 3)).astype(np.float32)
    turn = rotate_on_white(tf.constant(image), tf.constant(np.pi / 2)).numpy()
    # A quarter turn reads whole pixels: numpy's own rot90, to float round-off.
    np.testing.assert_allclose(turn, np.rot90(image, k=1), atol=1e-3)
    still = rotate_on_white(tf.constant(image), tf.constant(0.0)).numpy()
    np.testing.assert_allclose(still, image, atol=1e-4)
    # An eighth of a turn brings the corners in from outside: white.
    black = tf.zeros([9, 9, 3])
    corners = rotate_on_white(black, tf.constant(np.pi / 4)).numpy()
    assert (corners[0, 0] == 255).all() and (corners[4, 4] == 0).all()


def test_augment_options_leave_the_default_draws_alone():
    seed = tf.constant([4, 2], tf.int64)
    # The rotation and grey draws come after the others: the default recipe
    # draws what it drew before they existed.
    np.testing.assert_array_equal(
        tf.random.experimental.stateless_split(seed, num=9)[:7],
        tf.random.experimental.stateless_split(seed, num=7),
    )
    image = tf.constant(np.random.default_rng(1).integers(0, 256, (16, 16, 3)), tf.uint8)
    colour = augment(image, seed).numpy()
    assert not np.allclose(colour, colour[..., :1])
    grey = augment(image, seed, grayscale_probability=1.0).numpy()
    np.testing.assert_allclose(grey, grey[..., :1].repeat(3, -1), atol=1e-6)
    turned = augment(image, seed, rotation_degrees=15.0).numpy()
    assert turned.shape == colour.shape and 0.0 <= turned.min() <= turned.max() <= 1.0
    assert not np.allclose(turned, colour)
    np.testing.assert_array_equal(augment(image, seed, rotation_degrees=15.0), turned)
