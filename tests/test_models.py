"""Backbone, classifier and baseline: invariances, cross-modal flow, fit, saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import simmim_tf
from simmim_tf.encoders import build_text_encoder
from simmim_tf.models.retriever import SimMIMRetriever
from tests.conftest import tiny_backbone


def run(backbone, inputs):
    return {
        k: keras.ops.convert_to_numpy(v)
        for k, v in backbone(inputs, training=False).items()
    }


def test_towers_compute_their_documented_values(backbone, preprocessor, raw_batch):
    """Each tower output, recomputed in numpy from the encoders and weights."""
    inputs = preprocessor(raw_batch)
    out = run(backbone, inputs)
    feature_map = keras.ops.convert_to_numpy(backbone.image_encoder(inputs["images"]))
    kernel, bias = (w.numpy() for w in backbone.image_projection.weights)
    positions = backbone.image_position_embedding.weights[0].numpy()
    cells = feature_map.reshape(4, 16, -1) @ kernel + bias + positions
    np.testing.assert_allclose(out["image_cell_states"], cells, atol=1e-4)
    np.testing.assert_allclose(out["image_unimodal_embedding"], cells.mean(1), atol=1e-4)

    token_states = backbone.text_encoder(
        {
            "token_ids": inputs["token_ids"],
            "segment_ids": tf.zeros_like(inputs["token_ids"]),
            "padding_mask": inputs["padding_mask"],
        }
    )["sequence_output"]
    kernel, bias = (w.numpy() for w in backbone.text_projection.weights)
    tokens = keras.ops.convert_to_numpy(token_states) @ kernel + bias
    mask = keras.ops.convert_to_numpy(inputs["padding_mask"]).astype(bool)
    np.testing.assert_allclose(out["text_token_states"], tokens, atol=1e-4)
    mean = (tokens * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    np.testing.assert_allclose(out["text_unimodal_embedding"], mean, atol=1e-4)
    assert out["image_node_states"].shape == (4, 16, 16)  # 4x4 cells
    assert out["text_node_states"].shape == (4, 12, 16)


def test_fused_embedding_is_sqrt_two_fusion_of_readouts(
    backbone, preprocessor, raw_batch
):
    out = run(backbone, preprocessor(raw_batch))
    expected = (
        out["image_graph_embedding"].astype(np.float64) + out["text_graph_embedding"]
    ) / np.sqrt(2)
    np.testing.assert_allclose(out["fused_embedding"], expected, rtol=1e-6, atol=1e-7)


def test_readouts_are_means_of_real_node_states(backbone, preprocessor, raw_batch):
    inputs = preprocessor(raw_batch)
    out = run(backbone, inputs)
    mask = keras.ops.convert_to_numpy(inputs["padding_mask"]).astype(bool)
    text_mean = (out["text_node_states"] * mask[..., None]).sum(1) / mask.sum(
        1, keepdims=True
    )
    np.testing.assert_allclose(out["text_graph_embedding"], text_mean, atol=1e-5)
    np.testing.assert_allclose(
        out["image_graph_embedding"], out["image_node_states"].mean(1), atol=1e-5
    )
    assert (out["text_node_states"][~mask] == 0).all()


def test_padding_tokens_change_nothing(backbone, tokenizer, raw_batch):
    short = simmim_tf.SimMIMPreprocessor(
        tokenizer=tokenizer, image_size=(16, 16), sequence_length=12
    )
    long = simmim_tf.SimMIMPreprocessor(
        tokenizer=tokenizer, image_size=(16, 16), sequence_length=20
    )
    a, b = short(raw_batch), long(raw_batch)
    # Also put junk ids under the padding: the mask alone must hide them.
    mask = keras.ops.convert_to_numpy(b["padding_mask"]).astype(bool)
    b["token_ids"] = tf.where(mask, b["token_ids"], 1234)
    out_a, out_b = run(backbone, a), run(backbone, b)
    for key in (
        "image_graph_embedding",
        "text_graph_embedding",
        "fused_embedding",
        "image_node_states",
    ):
        np.testing.assert_allclose(out_a[key], out_b[key], atol=1e-5, err_msg=key)
    np.testing.assert_allclose(
        out_a["text_node_states"], out_b["text_node_states"][:, :12], atol=1e-5
    )


@pytest.mark.parametrize("num_rounds, crosses", [(2, True), (0, False)])
def test_messages_cross_modalities_only_with_rounds(
    num_rounds, crosses, preprocessor, raw_batch
):
    backbone = tiny_backbone(num_rounds=num_rounds)
    other = dict(
        raw_batch, texts=np.array(["dog", "blue car driving fast", "moon", "ok"])
    )
    image_a = run(backbone, preprocessor(raw_batch))["image_graph_embedding"]
    image_b = run(backbone, preprocessor(other))["image_graph_embedding"]
    assert (np.abs(image_a - image_b).max() > 1e-4) == crosses


def test_config_round_trip_gives_same_architecture(backbone):
    clone = simmim_tf.SimMIMBackbone.from_config(backbone.get_config())
    assert clone.get_config() == backbone.get_config()
    assert clone.count_params() == backbone.count_params()


def test_fit_lowers_the_loss_on_a_learnable_task(preprocessor):
    # Label = which of two words the text holds; images are noise.
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=32)
    raw = {
        "images": rng.integers(0, 256, size=(32, 16, 16, 3), dtype=np.uint8),
        "texts": np.where(labels == 1, "red heart", "blue car"),
    }
    classifier = simmim_tf.SimMIMClassifier(
        backbone=tiny_backbone(), num_classes=2, preprocessor=preprocessor
    )
    classifier.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = classifier.fit(raw, labels, epochs=8, batch_size=8, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    assert history.history["accuracy"][-1] == 1.0


def test_classifier_keras_file_round_trip(tmp_path, preprocessor, raw_batch):
    classifier = simmim_tf.SimMIMClassifier(
        backbone=tiny_backbone(), num_classes=3, preprocessor=preprocessor
    )
    expected = classifier.predict(raw_batch, verbose=0)
    classifier.save(tmp_path / "model.keras")
    restored = keras.models.load_model(tmp_path / "model.keras")
    assert isinstance(restored, simmim_tf.SimMIMClassifier)
    assert isinstance(restored.preprocessor, simmim_tf.SimMIMPreprocessor)
    np.testing.assert_array_equal(restored.predict(raw_batch, verbose=0), expected)


def test_preset_folder_round_trip(tmp_path, preprocessor, raw_batch):
    # keras-hub's Backbone / Preprocessor / Task presets, all from one folder.
    classifier = simmim_tf.SimMIMClassifier(
        backbone=tiny_backbone(), num_classes=3, preprocessor=preprocessor
    )
    classifier.save_to_preset(str(tmp_path))
    restored = simmim_tf.SimMIMClassifier.from_preset(str(tmp_path))
    np.testing.assert_array_equal(
        restored.predict(raw_batch, verbose=0), classifier.predict(raw_batch, verbose=0)
    )
    backbone = simmim_tf.SimMIMBackbone.from_preset(str(tmp_path))
    inputs = preprocessor(raw_batch)
    np.testing.assert_array_equal(
        run(backbone, inputs)["fused_embedding"],
        run(classifier.backbone, inputs)["fused_embedding"],
    )


def test_baseline_trains_and_round_trips(tmp_path, preprocessor, raw_batch):
    inputs = preprocessor(raw_batch)
    text_encoder = build_text_encoder("tiny")
    text_encoder.trainable = False
    frozen = [w.numpy() for w in text_encoder.weights]
    baseline = simmim_tf.LateFusionBaseline(
        num_classes=3,
        text_encoder=text_encoder,
        image_shape=(16, 16, 3),
        conv_filters=(8, 16),
    )
    baseline.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = baseline.fit(inputs, np.array([0, 1, 2, 0]), epochs=5, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    # The text encoder stays frozen: only the CNN and the head learn.
    for before, after in zip(frozen, text_encoder.weights, strict=True):
        np.testing.assert_array_equal(before, after.numpy())
    baseline.save(tmp_path / "baseline.keras")
    restored = keras.models.load_model(tmp_path / "baseline.keras")
    np.testing.assert_allclose(
        restored.predict(inputs, verbose=0),
        baseline.predict(inputs, verbose=0),
        atol=1e-6,
    )
    # Its text features are the encoder's states averaged over real tokens:
    # padding more tokens changes nothing.
    padded = {
        key: np.pad(np.asarray(value), ((0, 0), (0, 4))) if key != "images" else value
        for key, value in inputs.items()
    }
    np.testing.assert_allclose(
        baseline.predict(padded, verbose=0),
        baseline.predict(inputs, verbose=0),
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="text branch needs a `text_encoder`"):
        simmim_tf.LateFusionBaseline(num_classes=3)


def test_classifier_validates_num_classes(backbone):
    with pytest.raises(ValueError, match="Number of classes 1 must be >= 2"):
        simmim_tf.SimMIMClassifier(backbone=backbone, num_classes=1)


def test_graph_model_runs_in_a_tf_function(backbone, preprocessor, raw_batch):
    # Dynamic batch and sequence sizes through one traced function, with the
    # eager values: each example's result depends on that example alone.
    inputs = preprocessor(raw_batch)
    fn = tf.function(lambda x: backbone(x)["fused_embedding"], reduce_retracing=True)
    eager = run(backbone, inputs)["fused_embedding"]
    np.testing.assert_allclose(fn(inputs), eager, atol=1e-5)
    smaller = {k: v[:2] for k, v in inputs.items()}
    np.testing.assert_allclose(fn(smaller), eager[:2], atol=1e-5)
    shorter = {
        "images": inputs["images"],
        "token_ids": inputs["token_ids"][:, :8],
        "padding_mask": inputs["padding_mask"][:, :8],
    }
    assert not keras.ops.convert_to_numpy(inputs["padding_mask"])[:, 8:].any()
    np.testing.assert_allclose(fn(shorter), eager, atol=1e-5)


@pytest.mark.parametrize("task", ["classifier", "baseline", "retriever"])
def test_predict_on_zero_examples_is_a_clear_error(task, preprocessor):
    # Regression: Keras raised UnboundLocalError from inside its predict loop.
    models = {
        "classifier": lambda: simmim_tf.SimMIMClassifier(
            backbone=tiny_backbone(), num_classes=5, preprocessor=preprocessor
        ),
        "baseline": lambda: simmim_tf.LateFusionBaseline(
            num_classes=5, text_encoder=build_text_encoder("tiny")
        ),
        "retriever": lambda: SimMIMRetriever(tiny_backbone()),
    }
    empty = {
        "images": np.zeros((0, 16, 16, 3), np.uint8),
        "texts": np.array([], dtype=object),
    }
    with pytest.raises(ValueError, match="predict got zero examples"):
        models[task]().predict(empty)
    with pytest.raises(ValueError, match="predict got zero examples"):
        models[task]().predict(tf.data.Dataset.from_tensor_slices(empty).batch(2))
