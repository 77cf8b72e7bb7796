"""A frozen text encoder's states: computed once, looked up by every step."""

from unittest import mock

import keras
import numpy as np
import pytest
import tensorflow as tf

from simmim_tf.models.inputs import TEXT_ENCODER_STATES, encode_tokens
from simmim_tf.models.retriever import SimMIMRetriever
from simmim_tf.training.config import default_config
from simmim_tf.training.tasks import build_task_model
from simmim_tf.training.text_states import FrozenTextStates, with_frozen_text_states
from tests.conftest import TINY_RUN, tiny_backbone

TEXTS = ["grinning face", "red heart: love", "cat face", "rocket: space", "sun"]


def pair_batches(preprocessor, texts, batch_size=4, seed=0):
    """Preprocessed `(inputs)` batches of `texts` with random images."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(len(texts), 16, 16, 3), dtype=np.uint8)
    inputs = preprocessor({"images": images, "texts": np.array(texts)})
    inputs = {key: np.asarray(value) for key, value in inputs.items()}
    inputs["pair_ids"] = np.arange(len(texts))
    return tf.data.Dataset.from_tensor_slices(inputs).batch(batch_size)


@pytest.fixture
def frozen_backbone():
    backbone = tiny_backbone()
    backbone.text_encoder.trainable = False
    return backbone


def test_states_are_the_encoders_inference_states_of_each_distinct_text(
    preprocessor, frozen_backbone
):
    # Repeated texts, in two datasets: one entry per distinct text.
    train = pair_batches(preprocessor, TEXTS + TEXTS[:3])
    validation = pair_batches(preprocessor, TEXTS[1:2] + ["owl"])
    encoder = frozen_backbone.text_encoder
    # "SUN" tokenises as "sun" does (uncased): one entry for both.
    states = FrozenTextStates.compute(encoder, preprocessor, TEXTS + ["owl", "SUN"])
    assert len(states) == len(TEXTS) + 1
    for batch in states.attach(train).concatenate(states.attach(validation)):
        expected = encode_tokens(encoder, batch["token_ids"], batch["padding_mask"])
        np.testing.assert_allclose(batch[TEXT_ENCODER_STATES], expected, atol=1e-6)


def test_a_text_outside_the_cache_is_a_clear_error(preprocessor, frozen_backbone):
    states = FrozenTextStates.compute(frozen_backbone.text_encoder, preprocessor, TEXTS)
    unseen = states.attach(pair_batches(preprocessor, ["an unseen text", "sun"]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="not among the frozen"):
        next(iter(unseen))


def test_retriever_losses_and_gradients_equal_with_cached_states(
    preprocessor, frozen_backbone
):
    batches = pair_batches(preprocessor, TEXTS, batch_size=5)
    states = FrozenTextStates.compute(frozen_backbone.text_encoder, preprocessor, TEXTS)
    plain = next(iter(batches))
    cached = next(iter(states.attach(batches)))
    retriever = SimMIMRetriever(frozen_backbone)

    def losses_and_gradients(inputs):
        # Seeded: ITM draws its hard negatives at random.
        keras.utils.set_random_seed(1)
        with tf.GradientTape() as tape:
            losses = retriever(inputs, training=True)
            total = sum(losses.values())
        return losses, tape.gradient(total, retriever.trainable_variables)

    plain_losses, plain_gradients = losses_and_gradients(plain)
    cached_losses, cached_gradients = losses_and_gradients(cached)
    assert set(plain_losses) == {"itc", "itm"}
    for name, value in plain_losses.items():
        np.testing.assert_allclose(cached_losses[name], value, rtol=1e-5)
    for plain_gradient, cached_gradient in zip(
        plain_gradients, cached_gradients, strict=True
    ):
        np.testing.assert_allclose(cached_gradient, plain_gradient, atol=1e-5)


def test_a_frozen_encoder_runs_in_inference_mode_a_trained_one_does_not(
    preprocessor,
):
    inputs = next(iter(pair_batches(preprocessor, TEXTS)))
    backbone = tiny_backbone()  # the tiny BERT has dropout 0.1
    assert backbone.text_encoder.dropout > 0
    inference = backbone.encode_text(inputs)["text_token_states"]
    trained = backbone.encode_text(inputs, training=True)["text_token_states"]
    assert not np.allclose(trained, inference)
    backbone.text_encoder.trainable = False
    frozen = backbone.encode_text(inputs, training=True)["text_token_states"]
    np.testing.assert_allclose(frozen, inference, atol=1e-6)


@pytest.mark.parametrize(
    "task, modalities",
    [("classify", ["text"]), ("baseline", ["text"]), ("vqa", ["image", "text"])],
)
@pytest.mark.parametrize("train_text_encoder", [False, True])
def test_a_tasks_frozen_text_encoder_drops_nothing_in_training(
    preprocessor, task, modalities, train_text_encoder
):
    # Models built over the encoder hand it their training flag; a frozen one
    # (the default) must still give its inference states.
    config = default_config(
        data={**TINY_RUN["data"], "scenes": task == "vqa"},
        model={
            **TINY_RUN["model"],
            "train_text_encoder": train_text_encoder,
            "dropout": 0.0,  # the graph's
        },
        finetune={"task": task, "modalities": modalities},
    )
    model = build_task_model(config, num_classes=3)
    encoder = model.text_encoder if task == "baseline" else model.backbone.text_encoder
    in_encoder = {id(layer) for layer in encoder._flatten_layers()}
    for layer in model._flatten_layers():  # all else in inference mode
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
        if isinstance(layer, keras.layers.Dropout) and id(layer) not in in_encoder:
            layer.rate = 0.0
    batch = next(iter(pair_batches(preprocessor, TEXTS)))
    inputs = {key: batch[key] for key in model.input}
    inference = model(inputs, training=False)
    trained = model(inputs, training=True)
    if train_text_encoder:  # the tiny BERT's dropout 0.1 is on: it trains
        assert not np.allclose(trained, inference, atol=1e-5)
    else:
        np.testing.assert_allclose(trained, inference, atol=1e-5)


def test_fit_on_cached_states_never_runs_the_text_encoder(preprocessor, frozen_backbone):
    batches = pair_batches(preprocessor, TEXTS * 2, batch_size=5)
    states = FrozenTextStates.compute(frozen_backbone.text_encoder, preprocessor, TEXTS)
    retriever = SimMIMRetriever(frozen_backbone)
    retriever.compile(optimizer=keras.optimizers.AdamW(1e-3))
    # Observed, not replaced: a call of the encoder would fail the fit.
    with mock.patch.object(
        frozen_backbone.text_encoder,
        "call",
        side_effect=AssertionError("the frozen text encoder ran in a step"),
    ):
        history = retriever.fit(states.attach(batches), epochs=2, verbose=0)
    assert np.isfinite(history.history["total_loss"]).all()


def test_a_run_caches_every_text_of_its_splits_unless_the_encoder_trains(
    preprocessor,
):
    backbone = tiny_backbone()
    # Training batches drop a remainder: the texts come from the examples.
    examples = tf.data.Dataset.from_tensor_slices({"text": TEXTS})
    batches = pair_batches(preprocessor, TEXTS[:4])
    trains = default_config(model={"train_text_encoder": True})
    (unchanged,) = with_frozen_text_states(
        trains, backbone.text_encoder, preprocessor, [examples], batches
    )
    assert TEXT_ENCODER_STATES not in next(iter(unchanged))
    with pytest.raises(ValueError, match="trainable"):
        FrozenTextStates.compute(backbone.text_encoder, preprocessor, TEXTS)

    backbone.text_encoder.trainable = False
    (cached,) = with_frozen_text_states(
        default_config(), backbone.text_encoder, preprocessor, [examples], batches
    )
    inputs = next(iter(cached))
    expected = encode_tokens(
        backbone.text_encoder, inputs["token_ids"], inputs["padding_mask"]
    )
    np.testing.assert_allclose(inputs[TEXT_ENCODER_STATES], expected, atol=1e-6)
    backbone.text_encoder.trainable = True
    with pytest.raises(ValueError, match="trains its text encoder"):
        backbone.encode_text(inputs)
