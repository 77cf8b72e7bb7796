"""The dense -> GraphTensor builder: node and edge counts, padding, components."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_gnn as tfgnn

from simmim_tf.graph.build import (
    EDGE_SET_NAMES,
    IMAGE,
    TEXT,
    build_multimodal_graph,
    grid_edges,
    text_nodes_to_dense,
)

GRID = (3, 4)
CELLS = 12
MASK = np.array(
    [
        [1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1],
        [1, 0, 0, 0, 0],
    ],
    dtype=bool,
)


@pytest.fixture(scope="module")
def graph():
    batch, seq_len = MASK.shape
    # Feature = (example, position) so every node says where it came from;
    # padding positions carry -1 so any leak would show.
    image = np.stack(
        np.meshgrid(np.arange(batch), np.arange(CELLS), indexing="ij"), -1
    ).astype(np.float32)
    text = np.stack(
        np.meshgrid(np.arange(batch), np.arange(seq_len), indexing="ij"), -1
    ).astype(np.float32)
    text[~MASK] = -1.0
    return build_multimodal_graph(
        tf.constant(image), tf.constant(text), tf.constant(MASK), grid_shape=GRID
    )


def test_node_counts_are_cells_and_real_tokens(graph):
    assert graph.node_sets[IMAGE].sizes.numpy().tolist() == [CELLS] * 3
    assert graph.node_sets[TEXT].sizes.numpy().tolist() == MASK.sum(1).tolist()
    assert graph.context.sizes.numpy().tolist() == [1, 1, 1]


def test_no_node_comes_from_padding(graph):
    text = graph.node_sets[TEXT][tfgnn.HIDDEN_STATE].numpy()
    assert (text >= 0).all()
    expected = [(b, t) for b, t in zip(*np.nonzero(MASK), strict=True)]
    assert [tuple(row) for row in text.astype(int)] == expected


def test_edge_counts_per_edge_set(graph):
    tokens = MASK.sum(1)
    # 3x4 grid: 3*3 horizontal + 2*4 vertical neighbour pairs, both directions.
    assert graph.edge_sets["image_grid"].sizes.numpy().tolist() == [2 * 17] * 3
    assert (
        graph.edge_sets["text_seq"].sizes.numpy().tolist() == (2 * (tokens - 1)).tolist()
    )
    for name in ("image_to_text", "text_to_image"):
        assert graph.edge_sets[name].sizes.numpy().tolist() == (CELLS * tokens).tolist()


def test_edges_stay_inside_their_example(graph):
    node_example = {
        name: graph.node_sets[name][tfgnn.HIDDEN_STATE].numpy()[:, 0]
        for name in (IMAGE, TEXT)
    }
    for name in EDGE_SET_NAMES:
        edge_set = graph.edge_sets[name]
        adjacency = edge_set.adjacency
        source = node_example[adjacency.source_name][adjacency.source.numpy()]
        target = node_example[adjacency.target_name][adjacency.target.numpy()]
        component = np.repeat(np.arange(3), edge_set.sizes.numpy())
        np.testing.assert_array_equal(source, component, err_msg=name)
        np.testing.assert_array_equal(target, component, err_msg=name)


def test_text_seq_links_consecutive_tokens_only(graph):
    text = graph.node_sets[TEXT][tfgnn.HIDDEN_STATE].numpy()
    adjacency = graph.edge_sets["text_seq"].adjacency
    positions = text[:, 1]
    gap = positions[adjacency.target.numpy()] - positions[adjacency.source.numpy()]
    assert set(np.abs(gap).tolist()) == {1.0}


def test_cross_edges_are_complete_bipartite(graph):
    adjacency = graph.edge_sets["image_to_text"].adjacency
    pairs = set(zip(adjacency.source.numpy(), adjacency.target.numpy(), strict=True))
    reverse = graph.edge_sets["text_to_image"].adjacency
    assert pairs == set(zip(reverse.target.numpy(), reverse.source.numpy(), strict=True))
    assert len(pairs) == CELLS * MASK.sum()


def test_grid_edges_are_four_neighbours():
    source, target = grid_edges(3, 4)
    rows, cols = np.divmod(source, 4), np.divmod(target, 4)
    distance = np.abs(rows[0] - cols[0]) + np.abs(rows[1] - cols[1])
    assert (distance == 1).all()
    in_degree = np.bincount(target, minlength=12).reshape(3, 4)
    assert in_degree[1, 1] == 4 and in_degree[0, 0] == 2 and in_degree[0, 1] == 3


def test_text_nodes_to_dense_inverts_the_mask(graph):
    text = graph.node_sets[TEXT][tfgnn.HIDDEN_STATE]
    dense = text_nodes_to_dense(text, MASK).numpy()
    assert dense.shape == (*MASK.shape, 2)
    assert (dense[~MASK] == 0).all()
    np.testing.assert_array_equal(dense[MASK], text.numpy())


def test_graph_validates(graph):
    # GraphTensor's own consistency checks over sizes and adjacency indices.
    tfgnn.check_scalar_graph_tensor(graph)
    assert graph.num_components.numpy() == 3


def _padded_graph():
    batch, seq_len = MASK.shape
    rng = np.random.default_rng(0)
    image = tf.constant(rng.normal(size=(batch, CELLS, 2)), tf.float32)
    text = tf.constant(rng.normal(size=(batch, seq_len, 2)), tf.float32)
    return [
        build_multimodal_graph(image, text, MASK, grid_shape=GRID, padded=padded)
        for padded in (False, True)
    ]


def test_a_padded_graph_is_the_graph_plus_one_padding_component():
    graph, padded = _padded_graph()
    batch, seq_len = MASK.shape
    # Totals from the shapes alone: every cell and token position (and one
    # zero node per node set), every candidate edge.
    totals = {
        IMAGE: batch * CELLS + 1,
        TEXT: batch * seq_len + 1,
        "image_grid": len(grid_edges(*GRID)[0]) * batch,
        "text_seq": 2 * batch * (seq_len - 1),
        "image_to_text": batch * CELLS * seq_len,
        "text_to_image": batch * CELLS * seq_len,
    }
    pieces = {**padded.node_sets, **padded.edge_sets}
    assert {name: int(piece.total_size) for name, piece in pieces.items()} == totals
    assert padded.num_components.numpy() == batch + 1
    for name, piece in pieces.items():
        sizes = piece.sizes.numpy()
        real = {**graph.node_sets, **graph.edge_sets}[name]
        # The examples' components are the unpadded graph's, piece by piece.
        np.testing.assert_array_equal(sizes[:batch], real.sizes.numpy(), name)
        count = int(real.total_size)
        if name in (IMAGE, TEXT):
            np.testing.assert_array_equal(
                piece[tfgnn.HIDDEN_STATE][:count], real[tfgnn.HIDDEN_STATE], name
            )
            continue
        adjacency = piece.adjacency
        for tag in (tfgnn.SOURCE, tfgnn.TARGET):
            ids = adjacency[tag].numpy()
            np.testing.assert_array_equal(ids[:count], real.adjacency[tag], name)
            # Padding edges join the padding component's zero nodes only.
            zero_node = totals[adjacency.node_set_name(tag)] - 1
            assert (ids[count:] == zero_node).all(), name
    zeros = [padded.node_sets[name][tfgnn.HIDDEN_STATE][-1] for name in (IMAGE, TEXT)]
    assert not np.any(zeros)
    tfgnn.check_scalar_graph_tensor(padded)


def test_text_nodes_to_dense_reads_a_padded_graph():
    graph, padded = _padded_graph()
    dense = text_nodes_to_dense(graph.node_sets[TEXT][tfgnn.HIDDEN_STATE], MASK)
    padded_dense = text_nodes_to_dense(padded.node_sets[TEXT][tfgnn.HIDDEN_STATE], MASK)
    np.testing.assert_array_equal(padded_dense, dense)
