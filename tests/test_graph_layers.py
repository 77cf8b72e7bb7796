"""Attention layers: TF-GNN GATv2 parity, normalisation, validation, invariances."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_gnn as tfgnn
from tensorflow_gnn.models import gat_v2

from simmim_tf.graph.build import build_multimodal_graph
from simmim_tf.graph.encoder import MultimodalGraphEncoder
from simmim_tf.graph.fusion import SqrtTwoFusion
from simmim_tf.graph.layers import GraphAttentionConv, GraphAttentionUpdate

LOG10 = float(np.log(10.0))


def bidi_cycle_graph(states):
    """TF-GNN's test graph: cycle 0->1->2->0 and its reverse, one node set."""
    return tfgnn.GraphTensor.from_pieces(
        node_sets={
            "nodes": tfgnn.NodeSet.from_fields(
                sizes=[3], features={tfgnn.HIDDEN_STATE: tf.constant(states)}
            )
        },
        edge_sets={
            "edges": tfgnn.EdgeSet.from_fields(
                sizes=[6],
                adjacency=tfgnn.Adjacency.from_indices(
                    ("nodes", tf.constant([0, 1, 2, 0, 2, 1])),
                    ("nodes", tf.constant([1, 2, 0, 2, 1, 0])),
                ),
            )
        },
    )


def test_gatv2_matches_tfgnn_hand_worked_case():
    # testBasic of tensorflow_gnn/models/gat_v2/layers_test.py, same weights.
    graph = bidi_cycle_graph([[1.0, 0, 0, 1], [0, 1, 0, 2], [0, 0, 1, 3]])
    conv = GraphAttentionConv(
        num_heads=1, per_head_channels=4, attention_activation="relu", activation="relu"
    )
    conv(graph=graph, edge_set_name="edges")
    conv.query.kernel.assign([[0.0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    conv.query.bias.assign(tf.zeros(4))
    conv.value_node.kernel.assign(
        [[0.0, -1, -1, 0], [-1, 0, -1, 0], [-1, -1, 0, 0], [0, 0, 0, 1.1]]
    )
    conv.value_node.bias.assign(tf.zeros(4))
    conv.attn_logits.assign([[LOG10], [LOG10], [LOG10], [0.0]])
    got = conv(graph=graph, edge_set_name="edges")
    want = [[0.0, 0, 0, 2.3], [0, 0, 0, 3.1], [0, 0, 0, 1.2]]
    np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.parametrize("num_heads", [1, 3])
def test_gatv2_equals_tfgnn_gatv2conv_with_same_weights(num_heads):
    rng = np.random.default_rng(num_heads)
    mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)
    graph = build_multimodal_graph(
        tf.constant(rng.normal(size=(2, 4, 6)), tf.float32),
        tf.constant(rng.normal(size=(2, 4, 6)), tf.float32),
        tf.constant(mask),
        grid_shape=(2, 2),
    )
    ours = GraphAttentionConv(num_heads=num_heads, per_head_channels=5, activation="relu")
    reference = gat_v2.GATv2Conv(
        num_heads=num_heads, per_head_channels=5, receiver_tag=tfgnn.TARGET
    )
    for edge_set in ("text_to_image", "image_to_text", "image_grid"):
        got = ours(graph=graph, edge_set_name=edge_set)
        reference(graph, edge_set_name=edge_set)
        weights = {
            v.name.split("/")[-2] + "/" + v.name.split("/")[-1]: v
            for v in reference.weights
        }
        weights["query/kernel:0"].assign(ours.query.kernel.numpy())
        weights["query/bias:0"].assign(ours.query.bias.numpy())
        weights["value_node/kernel:0"].assign(ours.value_node.kernel.numpy())
        weights["value_node/bias:0"].assign(ours.value_node.bias.numpy())
        weights["attn_logits/kernel:0"].assign(ours.attn_logits.numpy())
        want = reference(graph, edge_set_name=edge_set)
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=edge_set)


@pytest.mark.parametrize("attention_type", ["gatv2", "dot_product"])
def test_attention_sums_to_one_over_each_receivers_edges(attention_type):
    rng = np.random.default_rng(0)
    mask = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]], bool)
    graph = build_multimodal_graph(
        tf.constant(rng.normal(size=(2, 9, 8)), tf.float32),
        tf.constant(rng.normal(size=(2, 5, 8)), tf.float32),
        tf.constant(mask),
        grid_shape=(3, 3),
    )
    conv = GraphAttentionConv(
        num_heads=2, per_head_channels=4, attention_type=attention_type
    )
    for edge_set in ("image_grid", "text_seq", "image_to_text", "text_to_image"):
        attention, value = conv.attention(graph, edge_set)
        receivers = graph.edge_sets[edge_set].adjacency.target.numpy()
        num_receivers = graph.node_sets[
            graph.edge_sets[edge_set].adjacency.target_name
        ].total_size
        totals = tf.math.unsorted_segment_sum(attention, receivers, num_receivers).numpy()
        np.testing.assert_allclose(
            totals, np.ones_like(totals), atol=1e-5, err_msg=edge_set
        )
        assert value.shape[1:] == (2, 4)


def test_permuting_text_nodes_permutes_their_states():
    # Without the order-dependent text_seq edges, message passing is
    # permutation-equivariant: shuffling tokens shuffles their new states.
    rng = np.random.default_rng(1)
    image = tf.constant(rng.normal(size=(1, 4, 8)), tf.float32)
    text = rng.normal(size=(1, 5, 8)).astype(np.float32)
    mask = tf.ones([1, 5], tf.bool)
    update = GraphAttentionUpdate(
        units=8,
        num_heads=2,
        edge_set_names=("image_grid", "image_to_text", "text_to_image"),
    )
    permutation = np.array([3, 0, 4, 1, 2])

    def text_states(tokens):
        graph = build_multimodal_graph(
            image, tf.constant(tokens), mask, grid_shape=(2, 2)
        )
        graph = update(graph=graph)
        return graph.node_sets["text"][tfgnn.HIDDEN_STATE].numpy()

    np.testing.assert_allclose(
        text_states(text[:, permutation]), text_states(text)[permutation], atol=1e-5
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(num_heads=0, per_head_channels=4),
            "Number of heads 0 must be greater than 0.",
        ),
        (
            dict(num_heads=2, per_head_channels=0),
            "Per-head channels 0 must be greater than 0.",
        ),
        (
            dict(num_heads=2, per_head_channels=4, attention_type="additive"),
            "Attention type 'additive' must be one of",
        ),
        (
            dict(num_heads=2, per_head_channels=4, attention_dropout=1.5),
            "Attention dropout 1.5 must be in [0, 1).",
        ),
    ],
)
def test_conv_validates_arguments(kwargs, message):
    with pytest.raises(
        ValueError,
        match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)"),
    ):
        GraphAttentionConv(**kwargs)


def test_update_and_encoder_validate_arguments():
    with pytest.raises(
        ValueError, match="Units 10 must be a positive multiple of num_heads 4"
    ):
        GraphAttentionUpdate(units=10, num_heads=4)
    with pytest.raises(ValueError, match="Number of rounds -1 must be >= 0"):
        MultimodalGraphEncoder(units=8, grid_shape=(2, 2), num_rounds=-1)


def test_layer_configs_round_trip():
    for layer in (
        GraphAttentionConv(
            num_heads=2, per_head_channels=3, attention_type="dot_product"
        ),
        GraphAttentionUpdate(units=8, num_heads=2, dropout=0.1, use_residual=False),
        MultimodalGraphEncoder(units=8, grid_shape=(2, 3), num_rounds=3, num_heads=2),
    ):
        clone = layer.__class__.from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()


def test_fusion_is_sum_over_sqrt_two():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(2, 5, 7)).astype(np.float32)
    got = keras.ops.convert_to_numpy(SqrtTwoFusion()(x, y))
    np.testing.assert_allclose(got, (x.astype(np.float64) + y) / np.sqrt(2.0), rtol=1e-6)
