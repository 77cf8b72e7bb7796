"""Attention layers: TF-GNN GATv2 parity, normalisation, validation, invariances."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_gnn as tfgnn
from tensorflow_gnn.models import gat_v2, multi_head_attention

from simmim_tf.graph.build import build_multimodal_graph, grid_edges
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


def dense_dot_product_attention(conv, receivers, senders, adjacency):
    """Masked multi-head dot-product attention on dense arrays, in float64.

    An independent oracle for `GraphAttentionConv(attention_type="dot_product")`
    with the conv's own weights: receiver `r` of example `b` attends to sender
    `s` of the same example iff `adjacency[b, r, s]`. Receivers without any
    incoming edge get zeros (an empty sum). `conv.activation` must be None.

    Args:
        receivers: `[batch, num_receivers, dim]`.
        senders: `[batch, num_senders, dim]`.
        adjacency: bool `[batch, num_receivers, num_senders]`.

    Returns:
        `[batch, num_receivers, num_heads * per_head_channels]`.
    """
    assert conv.activation is None
    heads, channels = conv.num_heads, conv.per_head_channels

    def project(dense, states):  # [B, N, dim] -> [B, N, H, C]
        out = states.astype(np.float64) @ dense.kernel.numpy().astype(np.float64)
        if dense.bias is not None:
            out = out + dense.bias.numpy()
        return out.reshape(*states.shape[:2], heads, channels)

    query = project(conv.query, receivers)
    key = project(conv.key, senders)
    value = project(conv.value_node, senders)
    scores = np.einsum("brhc,bshc->bhrs", query, key) / math.sqrt(channels)
    scores = np.where(adjacency[:, None], scores, -np.inf)
    peak = scores.max(axis=-1, keepdims=True)
    weights = np.exp(scores - np.where(np.isfinite(peak), peak, 0.0))
    totals = weights.sum(axis=-1, keepdims=True)
    weights = np.divide(weights, totals, out=np.zeros_like(weights), where=totals > 0)
    out = np.einsum("bhrs,bshc->brhc", weights, value)
    return out.reshape(*receivers.shape[:2], heads * channels)


def randomise_weights(layer, seed):
    """Replace every weight (biases and norm scales too) with random values."""
    rng = np.random.default_rng(seed)
    for weight in layer.weights:
        weight.assign(0.5 * rng.normal(size=weight.shape).astype(np.float32))


def cross_modal_batch(seed, dim=6, mask=((1, 1, 1, 0, 0), (1, 1, 1, 1, 1))):
    """Dense image and text states (padding tokens hold junk) and their graph."""
    rng = np.random.default_rng(seed)
    mask = np.array(mask, bool)
    image = rng.normal(size=(len(mask), 4, dim)).astype(np.float32)
    text = rng.normal(size=(len(mask), mask.shape[1], dim)).astype(np.float32)
    text[~mask] = 100.0  # would dominate any attention that let padding in
    graph = build_multimodal_graph(
        tf.constant(image), tf.constant(text), tf.constant(mask), grid_shape=(2, 2)
    )
    return image, text, mask, graph


@pytest.mark.parametrize("num_heads", [1, 3])
@pytest.mark.parametrize("edge_set", ["text_to_image", "image_to_text"])
def test_dot_product_conv_equals_dense_masked_multi_head_attention(num_heads, edge_set):
    # The cross-modal edge sets are complete bipartite per example, so the conv
    # is exactly dense multi-head attention of one modality over the other,
    # with padding tokens masked out and no attention across examples.
    image, text, mask, graph = cross_modal_batch(num_heads)
    conv = GraphAttentionConv(
        num_heads=num_heads, per_head_channels=5, attention_type="dot_product"
    )
    conv(graph=graph, edge_set_name=edge_set)
    randomise_weights(conv, seed=num_heads)  # non-zero biases too
    got = conv(graph=graph, edge_set_name=edge_set).numpy()
    if edge_set == "text_to_image":
        adjacency = np.broadcast_to(mask[:, None, :], (2, 4, mask.shape[1]))
        want = dense_dot_product_attention(conv, image, text, adjacency)
        want = want.reshape(-1, want.shape[-1])  # image nodes are row-major
    else:
        adjacency = np.ones((2, mask.shape[1], 4), bool)
        want = dense_dot_product_attention(conv, text, image, adjacency)[mask]
    assert got.shape == want.shape == (len(want), num_heads * 5)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_dot_product_update_equals_dense_reference():
    # The whole round on all four edge sets, against numpy: for each node set,
    # LayerNorm(x + gelu(W x + b + sum over incoming edge sets of attention)).
    image, text, mask, graph = cross_modal_batch(7, dim=8, mask=((1, 0, 1, 1, 0),))
    update = GraphAttentionUpdate(units=8, num_heads=2, attention_type="dot_product")
    update(graph=graph)
    randomise_weights(update, seed=7)
    got = update(graph=graph)

    grid = np.zeros((1, 4, 4), bool)
    grid[0, grid_edges(2, 2)[1], grid_edges(2, 2)[0]] = True  # [receiver, sender]
    real = mask[0]
    seq = np.zeros((1, 5, 5), bool)
    for i in range(4):
        seq[0, i, i + 1] = seq[0, i + 1, i] = real[i] and real[i + 1]
    incoming = {
        "image": [
            ("image_grid", image, grid),
            ("text_to_image", text, np.broadcast_to(mask[:, None], (1, 4, 5))),
        ],
        "text": [
            ("text_seq", text, seq),
            ("image_to_text", image, np.ones((1, 5, 4), bool)),
        ],
    }
    gelu = np.vectorize(lambda x: 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0))))
    for node_set, states in (("image", image), ("text", text)):
        dense = update.self_transforms[node_set]
        pre = states @ dense.kernel.numpy() + dense.bias.numpy()
        for edge_set, senders, adjacency in incoming[node_set]:
            pre = pre + dense_dot_product_attention(
                update.convs[edge_set], states, senders, adjacency
            )
        out = states + gelu(pre)
        out = (out - out.mean(-1, keepdims=True)) / np.sqrt(
            out.var(-1, keepdims=True) + 1e-6
        )
        norm = update.norms[node_set]
        out = out * norm.gamma.numpy() + norm.beta.numpy()
        if node_set == "text":
            out = out[mask]  # padding makes no node
        else:
            out = out.reshape(-1, 8)
        np.testing.assert_allclose(
            got.node_sets[node_set][tfgnn.HIDDEN_STATE].numpy(),
            out,
            rtol=1e-4,
            atol=1e-4,
            err_msg=node_set,
        )


@pytest.mark.parametrize("num_heads", [1, 3])
def test_dot_product_equals_tfgnn_multi_head_attention_conv_with_same_weights(
    num_heads,
):
    # TF-GNN's defaults are already our math: transform_keys=True (separate
    # query and key projections), score_scaling="rsqrt_dim" (divide by
    # sqrt(per_head_channels) since keys are projected), no
    # attention_activation, values transformed before pooling. Only the final
    # activation differs by default ("relu" there, None here): set it to linear.
    # Its layers are tf_keras layers, called positionally on the GraphTensor.
    _, _, _, graph = cross_modal_batch(num_heads + 10)
    ours = GraphAttentionConv(
        num_heads=num_heads, per_head_channels=5, attention_type="dot_product"
    )
    reference = multi_head_attention.MultiHeadAttentionConv(
        num_heads=num_heads,
        per_head_channels=5,
        receiver_tag=tfgnn.TARGET,
        activation="linear",
        transform_keys=True,
        score_scaling="rsqrt_dim",
    )
    for edge_set in ("text_to_image", "image_to_text", "image_grid", "text_seq"):
        ours(graph=graph, edge_set_name=edge_set)
        randomise_weights(ours, seed=num_heads)  # non-zero biases too
        got = ours(graph=graph, edge_set_name=edge_set)
        reference(graph, edge_set_name=edge_set)
        weights = {
            v.name.split("/")[-2] + "/" + v.name.split("/")[-1]: v
            for v in reference.weights
        }
        assert len(weights) == len(reference.weights) == 6
        for theirs, mine in (
            ("query", ours.query),
            ("key_node", ours.key),
            ("value_node", ours.value_node),
        ):
            weights[f"{theirs}/kernel:0"].assign(mine.kernel.numpy())
            weights[f"{theirs}/bias:0"].assign(mine.bias.numpy())
        want = reference(graph, edge_set_name=edge_set)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=edge_set)


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
