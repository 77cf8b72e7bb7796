"""tf.data pipeline on the committed sample: batches, augmentation, determinism."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from simmim_tf.data import load_emoji_text
from simmim_tf.data.pipeline import augment, make_dataset


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


def test_evaluation_pipeline_keeps_order_and_pixels(examples, preprocessor):
    inputs, labels = first_batch(make_dataset(examples, preprocessor, batch_size=8))
    direct = [example for example in examples.take(8).as_numpy_iterator()]
    np.testing.assert_array_equal(labels, [example["subgroup"] for example in direct])
    pixels = np.stack([example["image"] for example in direct])
    expected = preprocessor({"images": pixels, "texts": [e["text"] for e in direct]})
    np.testing.assert_allclose(
        inputs["images"], keras.ops.convert_to_numpy(expected["images"]), atol=1e-6
    )


def test_augment_shifts_with_white_and_keeps_range():
    image = tf.zeros([64, 64, 3], tf.uint8)  # black
    out = augment(image, tf.constant([1, 2], tf.int64), max_shift=4).numpy()
    assert out.shape == (64, 64, 3) and out.min() >= 0.0 and out.max() <= 1.0
    # A shift shows white (bright) border rows or columns, or none when the
    # crop lands in the middle; the black interior stays dark.
    assert out[8:56, 8:56].max() < 0.2


def test_batch_size_is_validated(examples, preprocessor):
    with pytest.raises(ValueError, match="Batch size 0 must be greater than 0"):
        make_dataset(examples, preprocessor, batch_size=0)
