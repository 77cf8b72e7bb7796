"""Every layer, the backbone and the tasks follow a Keras dtype policy.

As keras-hub's `run_precision_test`: each sublayer carries the policy it
was given, variables are stored in the policy's variable dtype, outputs come
in its compute dtype, and the numbers stay close to float32 with the same
weights. (Regression: any policy but float32 crashed in
`GraphAttentionUpdate.call`, "AddV2 ... expected half ... float".)
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_gnn as tfgnn

from simmim_tf.graph.build import build_multimodal_graph
from simmim_tf.graph.encoder import MultimodalGraphEncoder
from simmim_tf.graph.layers import GraphAttentionConv, GraphAttentionUpdate
from simmim_tf.models.backbone import SimMIMBackbone
from simmim_tf.models.classifier import SimMIMClassifier
from simmim_tf.models.pretrainer import SimMIMPretrainer
from simmim_tf.models.pretrainer_preprocessor import SimMIMPretrainerPreprocessor
from simmim_tf.models.retriever import SimMIMRetriever
from simmim_tf.training.config import default_config
from simmim_tf.training.tasks import build_task_model
from tests.conftest import TINY_RUN, tiny_backbone

# (policy, variable dtype, compute dtype, tolerance of normalised outputs)
POLICIES = [
    ("mixed_float16", "float32", "float16", 5e-3),
    ("mixed_bfloat16", "float32", "bfloat16", 5e-2),
    ("bfloat16", "bfloat16", "bfloat16", 5e-2),
]


def _graph(dtype: str) -> tfgnn.GraphTensor:
    rng = np.random.default_rng(0)
    image = tf.constant(rng.normal(size=(2, 4, 8)), dtype)
    text = tf.constant(rng.normal(size=(2, 5, 8)), dtype)
    mask = tf.constant([[True] * 3 + [False] * 2, [True] * 5])
    return build_multimodal_graph(image, text, mask, grid_shape=(2, 2))


def _copy_weights(source, target) -> None:
    for theirs, ours in zip(source.weights, target.weights, strict=True):
        # The same weight, up to the auto-numbered name of the outer layer.
        assert theirs.path.split("/", 1)[-1] == ours.path.split("/", 1)[-1]
        ours.assign(theirs.numpy().astype(ours.dtype))


def _owned_layers(layer):
    """Every layer this package builds that computes: not keras-hub's encoders
    (they keep the policy they were built with), not the functional towers
    (containers whose layers are checked one by one) nor their inputs."""
    skip = {id(sub) for enc in _encoders(layer) for sub in enc._flatten_layers()}
    return [
        sub
        for sub in layer._flatten_layers()
        if id(sub) not in skip
        and not isinstance(sub, (keras.Model, keras.layers.InputLayer))
    ]


def _encoders(layer):
    return [
        getattr(layer, name)
        for name in ("image_encoder", "text_encoder")
        if hasattr(layer, name)
    ]


def _assert_policy(layer, policy, variable_dtype):
    for sub in _owned_layers(layer):
        assert sub.dtype_policy.name == policy, sub.name
        for weight in sub.weights:
            assert weight.dtype == variable_dtype, weight.path


@pytest.mark.parametrize("policy, variable_dtype, compute_dtype, tolerance", POLICIES)
@pytest.mark.parametrize("layer_class", [GraphAttentionConv, GraphAttentionUpdate])
def test_graph_layers_follow_the_policy(
    layer_class, policy, variable_dtype, compute_dtype, tolerance
):
    def make(dtype):
        if layer_class is GraphAttentionConv:
            layer = GraphAttentionConv(num_heads=2, per_head_channels=4, dtype=dtype)
            return layer, lambda graph: layer(graph=graph, edge_set_name="text_to_image")
        layer = GraphAttentionUpdate(units=8, num_heads=2, dtype=dtype)
        return layer, lambda graph: layer(graph=graph).node_sets["text"][
            tfgnn.HIDDEN_STATE
        ]

    reference, run_reference = make("float32")
    expected = run_reference(_graph("float32"))
    layer, run = make(policy)
    run(_graph(compute_dtype))  # builds the weights
    _copy_weights(reference, layer)
    got = run(_graph(compute_dtype))
    assert got.dtype == compute_dtype
    _assert_policy(layer, policy, variable_dtype)
    scale = float(tf.reduce_max(tf.abs(expected)))
    np.testing.assert_allclose(
        tf.cast(got, tf.float32), expected, atol=tolerance * max(scale, 1.0)
    )


@pytest.mark.parametrize("policy, variable_dtype, compute_dtype, tolerance", POLICIES)
def test_graph_encoder_and_backbone_follow_the_policy(
    policy, variable_dtype, compute_dtype, tolerance
):
    encoder = MultimodalGraphEncoder(
        units=8, grid_shape=(2, 2), num_heads=2, dtype=policy
    )
    assert all(r.dtype_policy.name == policy for r in encoder.rounds)

    rng = np.random.default_rng(1)
    inputs = {
        "images": rng.uniform(size=(2, 16, 16, 3)).astype("float32"),
        "token_ids": rng.integers(1, 100, size=(2, 12)).astype("int32"),
        "padding_mask": np.arange(12)[None, :] < np.array([[7], [12]]),
    }
    reference = tiny_backbone()
    model = tiny_backbone(dtype=policy)
    _copy_weights(reference, model)
    expected, got = reference(inputs), model(inputs)
    _assert_policy(model, policy, variable_dtype)
    for key in ("image_unimodal_embedding", "text_graph_embedding", "fused_embedding"):
        assert got[key].dtype == compute_dtype, key
        cosine = tf.reduce_sum(
            tf.math.l2_normalize(tf.cast(got[key], tf.float32), -1)
            * tf.math.l2_normalize(expected[key], -1),
            -1,
        )
        assert float(tf.reduce_min(cosine)) > 1 - tolerance, (key, cosine.numpy())


def test_the_encoders_follow_the_backbone_policy_through_a_preset(tmp_path):
    backbone = tiny_backbone(dtype="mixed_bfloat16")
    whole = (backbone, backbone.image_encoder, backbone.text_encoder)
    assert {layer.dtype_policy.name for layer in whole} == {"mixed_bfloat16"}
    backbone.save_to_preset(str(tmp_path))

    # As keras-hub: `from_preset(dtype=…)` chooses the policy, of every layer
    # (the encoders' too); without it, Keras' global policy.
    for dtype, policy in ((None, "float32"), ("mixed_bfloat16", "mixed_bfloat16")):
        loaded = SimMIMBackbone.from_preset(str(tmp_path), dtype=dtype)
        _assert_policy(loaded, policy, "float32")
        for encoder in _encoders(loaded):
            computing = [
                sub
                for sub in encoder._flatten_layers()
                if not isinstance(sub, keras.layers.InputLayer)
            ]
            assert {sub.dtype_policy.name for sub in computing} == {policy}
        for theirs, ours in zip(backbone.weights, loaded.weights, strict=True):
            np.testing.assert_array_equal(theirs.numpy(), ours.numpy())


def test_a_mixed_precision_task_keeps_its_policy_through_a_keras_file(tmp_path):
    retriever = SimMIMRetriever(tiny_backbone(dtype="mixed_bfloat16"))
    retriever.build()
    retriever.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    backbone = loaded.backbone
    layers = (loaded, backbone, backbone.image_encoder, backbone.text_encoder)
    assert {layer.dtype_policy.name for layer in layers} == {"mixed_bfloat16"}
    assert loaded.objectives.contrastive.dtype_policy.name == "float32"


def _retrieval_pairs(preprocessor, count=8):
    rng = np.random.default_rng(2)
    return preprocessor(
        {
            "images": rng.integers(0, 256, size=(count, 16, 16, 3), dtype=np.uint8),
            "texts": np.array([f"thing number {word}" for word in "abcdefgh"[:count]]),
        }
    )


def _task(name: str, dtype: str):
    """A tiny task model whose weights are all the same for every `dtype`."""
    backbone = tiny_backbone(dtype=dtype)
    if name == "pretrainer":  # ITM off: its negatives are sampled at random
        return SimMIMPretrainer(backbone, itm_weight=0.0)
    if name == "retriever":
        return SimMIMRetriever(backbone, itm_weight=0.0)
    return SimMIMClassifier(backbone, num_classes=3)


@pytest.mark.parametrize("task", ["pretrainer", "retriever", "classifier"])
def test_tasks_train_in_mixed_bfloat16_as_in_float32(
    task, preprocessor, pretraining_inputs
):
    """From the same weights, the mixed_bfloat16 loss is within 2 % of float32's
    and its gradient points the same way (cosine > 0.99); its losses and
    variables are float32, and `fit` lowers its loss."""
    if task == "pretrainer":
        x, y = pretraining_inputs, None
    else:
        x = _retrieval_pairs(preprocessor)
        y = np.array([0, 1, 2, 0, 1, 2, 0, 1]) if task == "classifier" else None
    models = {dtype: _task(task, dtype) for dtype in ("float32", "mixed_bfloat16")}
    for model in models.values():
        model(x)
        model.compile(optimizer=keras.optimizers.SGD(0.05))
    model = models["mixed_bfloat16"]
    _copy_weights(models["float32"], model)
    assert {w.dtype for w in model.weights} == {"float32"}
    (loss, gradient), (reference_loss, reference_gradient) = (
        _loss_and_gradient(models[dtype], x, y) for dtype in ("mixed_bfloat16", "float32")
    )
    assert loss.dtype == "float32"
    assert float(loss) == pytest.approx(float(reference_loss), rel=2e-2)
    cosine = tf.reduce_sum(
        tf.math.l2_normalize(gradient, 0) * tf.math.l2_normalize(reference_gradient, 0)
    )
    assert float(cosine) > 0.99
    if task == "classifier":
        assert model(x).dtype == "float32"  # logits for an exact softmax
    model.fit(x, y, batch_size=8, epochs=10, verbose=0, shuffle=False)
    assert float(_loss_and_gradient(model, x, y)[0]) < 0.9 * float(loss)


def _loss_and_gradient(model, x, y):
    """The loss without dropout, and its gradient as one flat vector."""
    with tf.GradientTape() as tape:
        loss = model.compute_loss(x, y, model(x, training=False), training=False)
    gradients = tape.gradient(loss, model.trainable_variables)
    flat = [tf.reshape(g, [-1]) for g in gradients if g is not None]
    return loss, tf.cast(tf.concat(flat, 0), tf.float32)


@pytest.fixture
def pretraining_inputs(tokenizer):
    preprocessor = SimMIMPretrainerPreprocessor(
        tokenizer=tokenizer, image_size=(16, 16), sequence_length=12, mask_patch_size=4
    )
    keras.utils.set_random_seed(0)
    return {
        key: keras.ops.convert_to_numpy(value)
        for key, value in _retrieval_pairs(preprocessor).items()
    }


def test_itm_and_every_pretraining_loss_run_in_mixed_bfloat16(pretraining_inputs):
    pretrainer = SimMIMPretrainer(tiny_backbone(dtype="mixed_bfloat16"))
    losses = pretrainer(pretraining_inputs, training=True)
    assert set(losses) == {"mim", "mlm", "itc", "itm"}
    for name, value in losses.items():
        assert value.dtype == "float32", name
        assert np.isfinite(float(value)), name


def test_mixed_float16_scales_the_loss():
    """Keras wraps the optimizer in a LossScaleOptimizer for a mixed_float16
    task (float16 gradients underflow otherwise); not for mixed_bfloat16."""
    for dtype, scaled in (("mixed_float16", True), ("mixed_bfloat16", False)):
        retriever = SimMIMRetriever(tiny_backbone(dtype=dtype))
        retriever.compile(optimizer=keras.optimizers.AdamW(1e-3))
        wrapped = isinstance(retriever.optimizer, keras.optimizers.LossScaleOptimizer)
        assert wrapped == scaled, dtype


@pytest.mark.parametrize("modalities", [["image"], ["image", "text"]])
def test_the_config_dtype_builds_every_task_in_that_policy(modalities):
    config = default_config(
        data=TINY_RUN["data"],
        model={**TINY_RUN["model"], "dtype": "mixed_bfloat16"},
        finetune=dict(task="baseline", modalities=modalities),
    )
    baseline = build_task_model(config, num_classes=3)
    assert baseline.dtype_policy.name == "mixed_bfloat16"
    layers = [
        layer
        for layer in baseline._flatten_layers()
        if layer.weights and layer.name != "logits"
    ]
    assert {layer.dtype_policy.name for layer in layers} == {"mixed_bfloat16"}
    config["finetune"]["task"] = "retrieve"
    retriever = build_task_model(config)
    assert retriever.backbone.text_encoder.dtype_policy.name == "mixed_bfloat16"
    config["model"]["dtype"] = "half"
    with pytest.raises(ValueError, match="model.dtype 'half' must be one of"):
        build_task_model(config)
