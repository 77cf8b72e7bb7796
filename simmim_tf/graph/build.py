"""Turn dense encoder outputs into one heterogeneous `tfgnn.GraphTensor`.

Schema (one graph component per example, all components merged per batch):

| piece | what |
|---|---|
| node set `image` | the h x w cells of the feature map, row-major |
| node set `text` | the non-padding tokens, in order (padding makes no node) |
| edge set `image_grid` | image -> image, 4-neighbouring cells, both directions |
| edge set `text_seq` | text -> text, consecutive tokens, both directions |
| edge set `image_to_text` | every cell -> every token of the same example |
| edge set `text_to_image` | every token -> every cell of the same example |
| context | one row per example |

All edges are built with vectorised tensor ops (broadcast, boolean_mask,
cumsum) and sorted by component, as GraphTensor requires; no `tf.map_fn`, which
would force Flex ops into TFLite.
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


def build_multimodal_graph(
    image_states: tf.Tensor,
    text_states: tf.Tensor,
    padding_mask: tf.Tensor,
    *,
    grid_shape: tuple[int, int],
) -> tfgnn.GraphTensor:
    """Build the image+text GraphTensor of a batch.

    Args:
        image_states: float tensor `[batch, height * width, dim]`, the cells of
            the feature map in row-major order.
        text_states: float tensor `[batch, seq_len, dim]`, the token states.
        padding_mask: bool or int tensor `[batch, seq_len]`, true for real
            tokens. Padding tokens become no node and touch no edge.
        grid_shape: `(height, width)` of the feature map.

    A modality can be absent: `seq_len` 0 (or an all-false mask) leaves the
    `text` node set empty, `image_states` with 0 cells the `image` node set;
    the other modality then has no cross-modal edges at all.

    Returns:
        A scalar `tfgnn.GraphTensor` with one component per example whose node
        sets carry the states as feature `tfgnn.HIDDEN_STATE`.

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

    # Merged-graph node id of every real token ([batch, seq_len]; junk at padding).
    text_node_ids = (
        tf.reshape(tf.cumsum(tf.cast(tf.reshape(mask, [-1]), tf.int32)), tf.shape(mask))
        - 1
    )
    num_tokens = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)  # [batch]
    image_nodes = tf.reshape(image_states, [-1, dim])  # [batch * cells, dim]
    text_nodes = tf.boolean_mask(text_states, mask)  # [num_tokens, dim]

    # image_grid: one fixed template, offset per example. (tf.expand_dims, not
    # [:, None]: TFLite's builtin StridedSlice has no new-axis mask.)
    grid_source, grid_target = grid_edges(height, width)
    cell_offsets = tf.expand_dims(tf.range(batch_size) * num_cells, 1)  # [batch, 1]
    grid_sizes = tf.fill([batch_size], len(grid_source))

    # text_seq: consecutive real tokens, both directions kept adjacent so that
    # edges stay grouped by component.
    linked = mask[:, :-1] & mask[:, 1:]  # [batch, seq_len - 1]
    left = tf.boolean_mask(text_node_ids[:, :-1], linked)
    right = tf.boolean_mask(text_node_ids[:, 1:], linked)
    seq_sizes = 2 * tf.reduce_sum(tf.cast(linked, tf.int32), axis=1)

    # image <-> text: the full bipartite graph of each example.
    cross = tf.broadcast_to(tf.expand_dims(mask, 1), [batch_size, num_cells, seq_len])
    cell_ids = tf.expand_dims(cell_offsets, 2) + tf.reshape(
        tf.range(num_cells), [1, num_cells, 1]
    )
    cell_ids = tf.broadcast_to(cell_ids, [batch_size, num_cells, seq_len])
    token_ids = tf.broadcast_to(
        tf.expand_dims(text_node_ids, 1), [batch_size, num_cells, seq_len]
    )
    cross_cells = tf.boolean_mask(cell_ids, cross)  # [num_cross_edges]
    cross_tokens = tf.boolean_mask(token_ids, cross)
    cross_sizes = num_cells * num_tokens

    def edge_set(sizes, source, target):
        return tfgnn.EdgeSet.from_fields(
            sizes=sizes,
            adjacency=tfgnn.Adjacency.from_indices(source=source, target=target),
        )

    return tfgnn.GraphTensor.from_pieces(
        context=tfgnn.Context.from_fields(sizes=tf.ones([batch_size], tf.int32)),
        node_sets={
            IMAGE: tfgnn.NodeSet.from_fields(
                sizes=tf.fill([batch_size], num_cells),
                features={tfgnn.HIDDEN_STATE: image_nodes},
            ),
            TEXT: tfgnn.NodeSet.from_fields(
                sizes=num_tokens, features={tfgnn.HIDDEN_STATE: text_nodes}
            ),
        },
        edge_sets={
            IMAGE_GRID: edge_set(
                grid_sizes,
                (IMAGE, tf.reshape(tf.expand_dims(grid_source, 0) + cell_offsets, [-1])),
                (IMAGE, tf.reshape(tf.expand_dims(grid_target, 0) + cell_offsets, [-1])),
            ),
            TEXT_SEQ: edge_set(
                seq_sizes,
                (TEXT, tf.reshape(tf.stack([left, right], axis=1), [-1])),
                (TEXT, tf.reshape(tf.stack([right, left], axis=1), [-1])),
            ),
            IMAGE_TO_TEXT: edge_set(
                cross_sizes, (IMAGE, cross_cells), (TEXT, cross_tokens)
            ),
            TEXT_TO_IMAGE: edge_set(
                cross_sizes, (TEXT, cross_tokens), (IMAGE, cross_cells)
            ),
        },
    )


def text_nodes_to_dense(text_nodes: tf.Tensor, padding_mask: tf.Tensor) -> tf.Tensor:
    """Scatter text node states back to `[batch, seq_len, dim]`, zeros at padding."""
    mask = tf.cast(padding_mask, tf.bool)
    shape = tf.concat(
        [tf.shape(mask, out_type=tf.int64), tf.shape(text_nodes, out_type=tf.int64)[1:]],
        0,
    )
    return tf.scatter_nd(tf.where(mask), text_nodes, shape)
