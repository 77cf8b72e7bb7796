"""Every graph layer and the backbone follow a Keras dtype policy.

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
from tests.conftest import tiny_backbone

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
