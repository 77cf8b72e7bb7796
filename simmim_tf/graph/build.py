"""Turn dense encoder outputs into one heterogeneous `tfgnn.GraphTensor`.

Schema (one graph component per example, all components merged per batch):

| piece | what |
|---|---|
| node set `image` | the h x w cells of the feature map, row-major |
| node set `text` | the real (non-padding) tokens, in order |
| edge set `image_grid` | image -> image, 4-neighbouring cells, both directions |
| edge set `text_seq` | text -> text, consecutive tokens, both directions |
| edge set `image_to_text` | every cell -> every token of the same example |
| edge set `text_to_image` | every token -> every cell of the same example |
| context | one row per example |

Padding tokens make no node, or with `padded=True` nodes of one extra
padding component.

All edges are built with vectorised tensor ops (broadcast, cumsum, scatter)
and grouped by component, as GraphTensor requires; no `tf.map_fn`, which would
force Flex ops into TFLite. With `padded=True` every count depends on tensor
shapes only (padding goes to one extra component), so XLA can compile it.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_gnn as tfgnn

IMAGE = "image"
TEXT = "text"
IMAGE_GRID = "image_grid"
TEXT_SEQ = "text_seq"
IMAGE_TO_TEXT = "image_to_text"
TEXT_TO_IMAGE = "text_to_image"
NODE_SET_NAMES = (IMAGE, TEXT)
EDGE_SET_NAMES = (IMAGE_GRID, TEXT_SEQ, IMAGE_TO_TEXT, TEXT_TO_IMAGE)


def grid_edges(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Source and target cell indices of the 4-neighbour grid of one image.

    Both directions are listed, so a cell in the middle receives 4 edges.
    """
    cells = np.arange(height * width).reshape(height, width)
    right = np.stack([cells[:, :-1].ravel(), cells[:, 1:].ravel()], axis=1)
    down = np.stack([cells[:-1, :].ravel(), cells[1:, :].ravel()], axis=1)
    pairs = np.concatenate([right, down], axis=0)
    both = np.concatenate([pairs, pairs[:, ::-1]], axis=0)
    order = np.lexsort((both[:, 1], both[:, 0]))
    return both[order, 0].astype(np.int32), both[order, 1].astype(np.int32)


def real_first_positions(valid: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Where each of `N` candidates goes when the valid ones move to the front.

    A stable partition without sorting: valid candidates keep their order at
    positions `0 .. count - 1`, the others follow in theirs. Every shape is
    static, so XLA compiles it.

    Args:
        valid: bool tensor `[N]`.

    Returns:
        `positions` int32 `[N]`, a permutation of `0 .. N - 1`, and `count`,
        the number of valid candidates (an int32 scalar).
    """
    valid_ints = tf.cast(valid, tf.int32)
    count = tf.reduce_sum(valid_ints)
    positions = tf.where(
        valid, tf.cumsum(valid_ints) - 1, count + tf.cumsum(1 - valid_ints) - 1
    )
    return positions, count


def _move(values: tf.Tensor, positions: tf.Tensor) -> tf.Tensor:
    """`values[i]` placed at row `positions[i]` (a permutation)."""
    return tf.scatter_nd(tf.expand_dims(positions, 1), values, tf.shape(values))


def build_multimodal_graph(
    image_states: tf.Tensor,
    text_states: tf.Tensor,
    padding_mask: tf.Tensor,
    *,
    grid_shape: tuple[int, int],
    padded: bool = False,
) -> tfgnn.GraphTensor:
    """Build the image+text GraphTensor of a batch.

    Args:
        image_states: float tensor `[batch, height * width, dim]`, the cells of
            the feature map in row-major order.
        text_states: float tensor `[batch, seq_len, dim]`, the token states.
        padding_mask: bool or int tensor `[batch, seq_len]`, true for real
            tokens. Padding tokens touch no edge of a real example.
        grid_shape: `(height, width)` of the feature map.
        padded: bool. False: padding tokens make no node, and the node and
            edge counts depend on the mask. True: every size depends only on
            the tensor shapes, as XLA (`jit_compile`) and TPUs need. Each
            padding token is still a node, and one extra graph component
            after the examples (TF-GNN's padding convention, as
            `tfgnn.pad_to_total_sizes` makes) holds them, one zero node of
            each node set and every edge a real example does not have; its
            edges join those two nodes. Real examples get the same graph
            either way.

    A modality can be absent: `seq_len` 0 (or an all-false mask) leaves the
    `text` node set without real nodes, `image_states` with 0 cells the
    `image` node set; the other modality then has no cross-modal edges.

    Returns:
        A scalar `tfgnn.GraphTensor` with one component per example (and the
        padding component last when `padded`) whose node sets carry the
        states as feature `tfgnn.HIDDEN_STATE`.

    Example:
    ```python
    graph = build_multimodal_graph(
        tf.zeros([2, 4, 8]), tf.zeros([2, 3, 8]),
        tf.constant([[1, 1, 0], [1, 1, 1]]), grid_shape=(2, 2))
    graph.node_sets["text"].sizes  # [2, 3]
    ```
    """
    if image_states.shape[1] == 0:  # image absent: no image nodes, no image edges
        grid_shape = (0, 0)
    height, width = grid_shape
    num_cells = height * width
    dim = image_states.shape[-1]
    mask = tf.cast(padding_mask, tf.bool)
    batch_size = tf.shape(mask)[0]
    seq_len = tf.shape(mask)[1]
    num_image_nodes = batch_size * num_cells
    num_text_positions = batch_size * seq_len

    # Every token position gets a merged-graph node id, real tokens first in
    # example order; padded graphs keep the rest, others cut them off.
    text_positions, num_real_tokens = real_first_positions(tf.reshape(mask, [-1]))
    text_node_ids = tf.reshape(text_positions, tf.shape(mask))  # [batch, seq_len]
    text_nodes = _move(tf.reshape(text_states, [-1, dim]), text_positions)
    image_nodes = tf.reshape(image_states, [-1, dim])  # [batch * cells, dim]
    num_tokens = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)  # [batch]
    # The padding component's zero nodes, the ends of every padding edge.
    image_pad_node, text_pad_node = num_image_nodes, num_text_positions

    # image_grid: one fixed template, offset per example. (tf.expand_dims, not
    # [:, None]: TFLite's builtin StridedSlice has no new-axis mask.)
    grid_source, grid_target = grid_edges(height, width)
    cell_offsets = tf.expand_dims(tf.range(batch_size) * num_cells, 1)  # [batch, 1]
    grid_sizes = tf.fill([batch_size], len(grid_source))

    # text_seq: consecutive real tokens, both directions kept adjacent so that
    # edges stay grouped by component.
    linked = mask[:, :-1] & mask[:, 1:]  # [batch, seq_len - 1]
    left, right = text_node_ids[:, :-1], text_node_ids[:, 1:]
    seq_sizes = 2 * tf.reduce_sum(tf.cast(linked, tf.int32), axis=1)

    # image <-> text: the full bipartite graph of each example.
    cross_shape = [batch_size, num_cells, seq_len]
    cross = tf.broadcast_to(tf.expand_dims(mask, 1), cross_shape)
    cell_ids = tf.expand_dims(cell_offsets, 2) + tf.reshape(
        tf.range(num_cells), [1, num_cells, 1]
    )
    cell_ids = tf.broadcast_to(cell_ids, cross_shape)
    token_ids = tf.broadcast_to(tf.expand_dims(text_node_ids, 1), cross_shape)
    cross_sizes = num_cells * num_tokens

    def edges(valid, source, target, pads):
        """Valid candidate edges first, in order; the rest join the pad nodes."""
        valid = tf.reshape(valid, [-1])
        positions, count = real_first_positions(valid)
        ends = [
            _move(tf.where(valid, tf.reshape(ids, [-1]), pad), positions)
            for ids, pad in zip((source, target), pads, strict=True)
        ]
        return [ids if padded else ids[:count] for ids in ends]

    def stack_both_ways(first, second):  # a <-> b, the two directions adjacent
        return tf.stack([first, second], axis=-1), tf.stack([second, first], axis=-1)

    text_pads = (text_pad_node, text_pad_node)
    seq_linked = tf.stack([linked, linked], axis=-1)
    seq_source, seq_target = edges(seq_linked, *stack_both_ways(left, right), text_pads)
    image_to_text = edges(cross, cell_ids, token_ids, (image_pad_node, text_pad_node))
    text_to_image = edges(cross, token_ids, cell_ids, (text_pad_node, image_pad_node))
    image_node_sizes = tf.fill([batch_size], num_cells)
    grid_source = tf.reshape(tf.expand_dims(grid_source, 0) + cell_offsets, [-1])
    grid_target = tf.reshape(tf.expand_dims(grid_target, 0) + cell_offsets, [-1])

    if padded:
        num_seq_candidates = 2 * batch_size * tf.maximum(seq_len - 1, 0)
        num_cross_candidates = num_image_nodes * seq_len

        def with_padding(sizes, total):  # the padding component holds the rest
            return tf.concat([sizes, [total - tf.reduce_sum(sizes)]], 0)

        image_nodes = tf.concat([image_nodes, tf.zeros([1, dim], image_nodes.dtype)], 0)
        text_nodes = tf.concat([text_nodes, tf.zeros([1, dim], text_nodes.dtype)], 0)
        image_node_sizes = with_padding(image_node_sizes, num_image_nodes + 1)
        num_tokens = with_padding(num_tokens, num_text_positions + 1)
        grid_sizes = with_padding(grid_sizes, tf.size(grid_source))
        seq_sizes = with_padding(seq_sizes, num_seq_candidates)
        cross_sizes = with_padding(cross_sizes, num_cross_candidates)
        num_components = batch_size + 1
    else:
        text_nodes = text_nodes[:num_real_tokens]
        num_components = batch_size

    def edge_set(sizes, source, target):
        return tfgnn.EdgeSet.from_fields(
            sizes=sizes,
            adjacency=tfgnn.Adjacency.from_indices(source=source, target=target),
        )

    return tfgnn.GraphTensor.from_pieces(
        context=tfgnn.Context.from_fields(sizes=tf.ones([num_components], tf.int32)),
        node_sets={
            IMAGE: tfgnn.NodeSet.from_fields(
                sizes=image_node_sizes, features={tfgnn.HIDDEN_STATE: image_nodes}
            ),
            TEXT: tfgnn.NodeSet.from_fields(
                sizes=num_tokens, features={tfgnn.HIDDEN_STATE: text_nodes}
            ),
        },
        edge_sets={
            IMAGE_GRID: edge_set(grid_sizes, (IMAGE, grid_source), (IMAGE, grid_target)),
            TEXT_SEQ: edge_set(seq_sizes, (TEXT, seq_source), (TEXT, seq_target)),
            IMAGE_TO_TEXT: edge_set(
                cross_sizes, (IMAGE, image_to_text[0]), (TEXT, image_to_text[1])
            ),
            TEXT_TO_IMAGE: edge_set(
                cross_sizes, (TEXT, text_to_image[0]), (IMAGE, text_to_image[1])
            ),
        },
    )


def text_nodes_to_dense(text_nodes: tf.Tensor, padding_mask: tf.Tensor) -> tf.Tensor:
    """Text node states back to `[batch, seq_len, dim]`, zeros at padding.

    Takes the text nodes of a padded or an unpadded graph: either way the
    real tokens come first, in order (`real_first_positions`).
    """
    mask = tf.cast(padding_mask, tf.bool)
    positions, _ = real_first_positions(tf.reshape(mask, [-1]))
    # Rows enough for every position: an unpadded graph has only real tokens.
    width = tf.shape(text_nodes)[1:]
    rows = tf.concat(
        [text_nodes, tf.zeros(tf.concat([[tf.size(mask)], width], 0), text_nodes.dtype)],
        0,
    )
    dense = tf.reshape(tf.gather(rows, positions), tf.concat([tf.shape(mask), width], 0))
    return tf.where(tf.expand_dims(mask, -1), dense, tf.zeros_like(dense))
