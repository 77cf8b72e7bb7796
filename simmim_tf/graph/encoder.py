"""Dense states in, graph message passing inside, dense states and readouts out."""

from __future__ import annotations

import keras
import tensorflow as tf
import tensorflow_gnn as tfgnn

from simmim_tf.graph.build import IMAGE, TEXT, build_multimodal_graph, text_nodes_to_dense
from simmim_tf.graph.layers import GraphAttentionUpdate


@keras.saving.register_keras_serializable(package="simmim_tf")
class MultimodalGraphEncoder(keras.layers.Layer):
    """Build the image+text GraphTensor and run K rounds of attention on it.

    Inputs and outputs are plain tensors, so the layer sits in a functional
    Keras model that `fit`, `export` and the TFLite converter accept; the
    GraphTensor lives only inside `call`.

    Args:
        units: int. Width of node states.
        grid_shape: tuple of 2 ints. `(height, width)` of the image grid.
        num_rounds: int. Rounds K of message passing (0: no cross-modal mixing).
        num_heads: int. Attention heads per edge set.
        attention_type: str. `"gatv2"` or `"dot_product"`.
        activation: str. The sigma of the node update.
        dropout: float. Dropout inside each round.
        padded_graph: bool. Build the graph with static sizes (padding tokens
            in one extra component, see `build_multimodal_graph`): the same
            outputs, what `jit_compile` (XLA) and TPUs need, at the cost of
            message passing over the padding too.

    Call arguments:
        image_states: `[batch, cells, units]`, or None when the image is absent.
        text_states: `[batch, seq_len, units]`, or None when the text is absent.
        padding_mask: `[batch, seq_len]`, true at real tokens; None with the
            text.

    An absent modality is an empty node set: no nodes, no edges, a readout
    of zeros (TF-GNN's mean over no nodes).

    Returns:
        A dict with `image_node_states` `[batch, cells, units]`,
        `text_node_states` `[batch, seq_len, units]` (zeros at padding), and the
        per-example means `image_readout` and `text_readout` `[batch, units]`.

    Example:
    ```python
    encoder = MultimodalGraphEncoder(units=16, grid_shape=(2, 2), num_rounds=1)
    out = encoder(tf.zeros([2, 4, 16]), tf.zeros([2, 3, 16]), tf.ones([2, 3]))
    out["image_readout"].shape  # (2, 16)
    ```
    """

    def __init__(
        self,
        *,
        units: int,
        grid_shape: tuple[int, int],
        num_rounds: int = 2,
        num_heads: int = 4,
        attention_type: str = "gatv2",
        activation: str = "gelu",
        dropout: float = 0.0,
        padded_graph: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if num_rounds < 0:
            raise ValueError(f"Number of rounds {num_rounds} must be >= 0.")
        if len(grid_shape) != 2 or min(grid_shape) <= 0:
            raise ValueError(f"Grid shape {grid_shape} must be (height, width) > 0.")
        # === Layers ===
        self.rounds = [
            GraphAttentionUpdate(
                units=units,
                num_heads=num_heads,
                attention_type=attention_type,
                activation=activation,
                dropout=dropout,
                dtype=self.dtype_policy,
                name=f"round_{index}",
            )
            for index in range(num_rounds)
        ]
        # === Config ===
        self.units = units
        self.grid_shape = tuple(grid_shape)
        self.num_rounds = num_rounds
        self.num_heads = num_heads
        self.attention_type = attention_type
        self.activation = activation
        self.dropout = dropout
        self.padded_graph = padded_graph

    def call(self, image_states=None, text_states=None, padding_mask=None, training=None):
        if image_states is None and text_states is None:
            raise ValueError("The graph needs image states, text states or both.")
        if (text_states is None) != (padding_mask is None):
            raise ValueError("Text states and their padding mask come together.")
        if text_states is None:
            text_states = image_states[:, :0, :]
            padding_mask = tf.zeros_like(image_states[:, :0, 0], dtype=tf.bool)
        if image_states is None:
            image_states = text_states[:, :0, :]
        graph = build_multimodal_graph(
            image_states,
            text_states,
            padding_mask,
            grid_shape=self.grid_shape,
            padded=self.padded_graph,
        )
        for update in self.rounds:
            graph = update(graph=graph, training=training)
        image_nodes = graph.node_sets[IMAGE][tfgnn.HIDDEN_STATE]
        text_nodes = graph.node_sets[TEXT][tfgnn.HIDDEN_STATE]
        batch_size = tf.shape(padding_mask)[0]
        num_cells = image_states.shape[1]

        def readout(node_set, nodes):  # the examples' components, not the padding
            means = tfgnn.pool_nodes_to_context(
                graph, node_set, "mean", feature_value=nodes
            )
            return means[:batch_size]

        return {
            "image_node_states": tf.reshape(
                image_nodes[: batch_size * num_cells], [batch_size, num_cells, self.units]
            ),
            "text_node_states": text_nodes_to_dense(text_nodes, padding_mask),
            "image_readout": readout(IMAGE, image_nodes),
            "text_readout": readout(TEXT, text_nodes),
        }

    def compute_output_shape(
        self, image_states_shape=None, text_states_shape=None, padding_mask_shape=None
    ):
        reference = image_states_shape or text_states_shape
        batch = reference[0]
        cells = image_states_shape[1] if image_states_shape else 0
        tokens = text_states_shape[1] if text_states_shape else 0
        return {
            "image_node_states": (batch, cells, self.units),
            "text_node_states": (batch, tokens, self.units),
            "image_readout": (batch, self.units),
            "text_readout": (batch, self.units),
        }

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            units=self.units,
            grid_shape=self.grid_shape,
            num_rounds=self.num_rounds,
            num_heads=self.num_heads,
            attention_type=self.attention_type,
            activation=self.activation,
            dropout=self.dropout,
            padded_graph=self.padded_graph,
        )
        return config
