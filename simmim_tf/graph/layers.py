"""Attention message passing on the multimodal GraphTensor (Keras 3 layers).

The node update is the seed formula

    x_hat = sigma(W x + sum_{edge sets e} sum_{y in N_e(x)} alpha_e(y) W_e y)

followed by dropout, a residual connection and layer normalisation. The
attention weights alpha are computed per edge set (separate weights for each)
and normalised over each receiver's incoming edges of that edge set.

Keras 3 refuses a GraphTensor as a positional layer input, so every layer here
takes it by keyword: `layer(graph=graph)`.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
import tensorflow_gnn as tfgnn

from simmim_tf.graph.build import EDGE_SET_NAMES, NODE_SET_NAMES

ATTENTION_TYPES = ("gatv2", "dot_product")


@keras.saving.register_keras_serializable(package="simmim_tf")
class GraphAttentionConv(keras.layers.Layer):
    """Multi-head attention convolution over one edge set of a GraphTensor.

    Two ways to score an edge from sender y to receiver x, per head:
    - `"gatv2"` (Brody et al. 2022, eqs. 7-8): `q = W_q x`, `v = W_v y`,
      `e = a^T act(q + v)`; the message is `v`. With the same weights this is
      the function of TF-GNN's `GATv2Conv`.
    - `"dot_product"` (Vaswani et al. 2017): `q = W_q x`, `k = W_k y`,
      `v = W_v y`, `e = q . k / sqrt(channels)`; the message is `v`.
    Then `alpha = softmax(e)` over the receiver's incoming edges
    (`tfgnn.softmax`) and the result is `activation(sum alpha v)`, the heads
    concatenated.

    Args:
        num_heads: int. Number of attention heads.
        per_head_channels: int. Width of each head's messages.
        attention_type: str. `"gatv2"` or `"dot_product"`.
        attention_activation: str. Activation inside the GATv2 score.
        activation: str or None. Applied to the pooled messages.
        use_bias: bool. Whether the query and value transforms have a bias.
        attention_dropout: float. Dropout on the attention weights.
        kernel_initializer: str. Initializer of every kernel.

    Example:
    ```python
    conv = GraphAttentionConv(num_heads=2, per_head_channels=8)
    messages = conv(graph=graph, edge_set_name="text_to_image")
    # [num_image_nodes, 16]
    ```
    """

    def __init__(
        self,
        *,
        num_heads: int,
        per_head_channels: int,
        attention_type: str = "gatv2",
        attention_activation: str = "leaky_relu",
        activation: str | None = None,
        use_bias: bool = True,
        attention_dropout: float = 0.0,
        kernel_initializer: str = "glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if num_heads <= 0:
            raise ValueError(f"Number of heads {num_heads} must be greater than 0.")
        if per_head_channels <= 0:
            raise ValueError(
                f"Per-head channels {per_head_channels} must be greater than 0."
            )
        if attention_type not in ATTENTION_TYPES:
            raise ValueError(
                f"Attention type {attention_type!r} must be one of {ATTENTION_TYPES}."
            )
        if not 0.0 <= attention_dropout < 1.0:
            raise ValueError(f"Attention dropout {attention_dropout} must be in [0, 1).")
        # === Layers ===
        width = num_heads * per_head_channels
        # Sublayers compute in this layer's dtype policy (mixed precision).
        dense = dict(
            units=width,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            dtype=self.dtype_policy,
        )
        self.query = keras.layers.Dense(**dense, name="query")
        if attention_type == "gatv2":
            # GATv2 shares one transform of the sender for score and message.
            self.value_node = keras.layers.Dense(**dense, name="value_node")
            self.attn_logits = self.add_weight(
                shape=(per_head_channels, num_heads),
                initializer=kernel_initializer,
                name="attn_logits",
            )
        else:
            self.key = keras.layers.Dense(**dense, name="key")
            self.value_node = keras.layers.Dense(**dense, name="value_node")
        self.dropout = keras.layers.Dropout(attention_dropout, dtype=self.dtype_policy)
        self._attention_activation = keras.activations.get(attention_activation)
        self._activation = keras.activations.get(activation)
        # === Config ===
        self.num_heads = num_heads
        self.per_head_channels = per_head_channels
        self.attention_type = attention_type
        self.attention_activation = attention_activation
        self.activation = activation
        self.use_bias = use_bias
        self.attention_dropout = attention_dropout
        self.kernel_initializer = kernel_initializer

    def build(self, input_shape=None):
        # Sublayers build lazily on the first call, when node widths are known.
        self.built = True

    def attention(
        self,
        graph: tfgnn.GraphTensor,
        edge_set_name: str,
        receiver_tag: int = tfgnn.TARGET,
        training: bool | None = None,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Attention `[num_edges, heads]` and values `[num_edges, heads, channels]`."""
        sender_tag = tfgnn.reverse_tag(receiver_tag)
        adjacency = graph.edge_sets[edge_set_name].adjacency
        receiver_states = graph.node_sets[adjacency.node_set_name(receiver_tag)][
            tfgnn.HIDDEN_STATE
        ]
        sender_states = graph.node_sets[adjacency.node_set_name(sender_tag)][
            tfgnn.HIDDEN_STATE
        ]
        heads = (-1, self.num_heads, self.per_head_channels)

        def to_edges(node_values, tag):  # [num_nodes, H*C] -> [num_edges, H, C]
            edge_values = tfgnn.broadcast_node_to_edges(
                graph, edge_set_name, tag, feature_value=node_values
            )
            return tf.reshape(edge_values, heads)

        query = to_edges(self.query(receiver_states), receiver_tag)
        value = to_edges(self.value_node(sender_states), sender_tag)
        if self.attention_type == "gatv2":
            hidden = self._attention_activation(query + value)  # [E, H, C]
            logits = tf.einsum("ehc,ch->eh", hidden, self.attn_logits)  # [E, H]
        else:
            key = to_edges(self.key(sender_states), sender_tag)
            logits = tf.reduce_sum(query * key, axis=-1) / math.sqrt(
                self.per_head_channels
            )  # [E, H]
        attention = tfgnn.softmax(
            graph, receiver_tag, edge_set_name=edge_set_name, feature_value=logits
        )  # [E, H], sums to 1 over each receiver's incoming edges
        return self.dropout(attention, training=training), value

    def call(
        self,
        graph: tfgnn.GraphTensor,
        edge_set_name: str,
        receiver_tag: int = tfgnn.TARGET,
        training: bool | None = None,
    ) -> tf.Tensor:
        attention, value = self.attention(graph, edge_set_name, receiver_tag, training)
        messages = value * tf.expand_dims(attention, -1)  # [E, H, C]
        pooled = tfgnn.pool_edges_to_node(
            graph, edge_set_name, receiver_tag, "sum", feature_value=messages
        )  # [num_receivers, H, C]
        pooled = tf.reshape(pooled, (-1, self.num_heads * self.per_head_channels))
        return self._activation(pooled)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            per_head_channels=self.per_head_channels,
            attention_type=self.attention_type,
            attention_activation=self.attention_activation,
            activation=self.activation,
            use_bias=self.use_bias,
            attention_dropout=self.attention_dropout,
            kernel_initializer=self.kernel_initializer,
        )
        return config


@keras.saving.register_keras_serializable(package="simmim_tf")
class GraphAttentionUpdate(keras.layers.Layer):
    """One round of message passing: every node set attends to its neighbours.

    For each node set, `x_hat = sigma(W x + sum_e conv_e(graph))` over the edge
    sets e that end at it, then dropout, `x + x_hat` (residual) and layer
    normalisation. Returns the graph with new `hidden_state`s.

    Args:
        units: int. Width of node states (input and output).
        num_heads: int. Attention heads; must divide `units`.
        attention_type: str. `"gatv2"` or `"dot_product"`.
        activation: str. The sigma of the node update.
        dropout: float. Dropout on the update and on attention weights.
        use_residual: bool. Add the input state to the update.
        use_layer_norm: bool. Normalise the result.
        node_set_names: tuple of str. Node sets to update.
        edge_set_names: tuple of str. Edge sets to pass messages over.

    Example:
    ```python
    update = GraphAttentionUpdate(units=32, num_heads=4)
    graph = update(graph=graph)
    ```
    """

    def __init__(
        self,
        *,
        units: int,
        num_heads: int = 4,
        attention_type: str = "gatv2",
        activation: str = "gelu",
        dropout: float = 0.0,
        use_residual: bool = True,
        use_layer_norm: bool = True,
        node_set_names: tuple[str, ...] = NODE_SET_NAMES,
        edge_set_names: tuple[str, ...] = EDGE_SET_NAMES,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if units <= 0 or num_heads <= 0 or units % num_heads:
            raise ValueError(
                f"Units {units} must be a positive multiple of num_heads {num_heads}."
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"Dropout {dropout} must be in [0, 1).")
        # === Layers ===
        # Sublayers compute in this layer's dtype policy (mixed precision).
        policy = self.dtype_policy
        self.self_transforms = {
            name: keras.layers.Dense(units, dtype=policy, name=f"self_{name}")
            for name in node_set_names
        }
        self.convs = {
            name: GraphAttentionConv(
                num_heads=num_heads,
                per_head_channels=units // num_heads,
                attention_type=attention_type,
                attention_dropout=dropout,
                use_bias=False,  # the self transform carries the bias
                dtype=policy,
                name=f"conv_{name}",
            )
            for name in edge_set_names
        }
        self.dropouts = {
            name: keras.layers.Dropout(dropout, dtype=policy) for name in node_set_names
        }
        self.norms = {
            name: keras.layers.LayerNormalization(
                epsilon=1e-6, dtype=policy, name=f"norm_{name}"
            )
            for name in node_set_names
        }
        self._activation = keras.activations.get(activation)
        # === Config ===
        self.units = units
        self.num_heads = num_heads
        self.attention_type = attention_type
        self.activation = activation
        self.dropout = dropout
        self.use_residual = use_residual
        self.use_layer_norm = use_layer_norm
        self.node_set_names = tuple(node_set_names)
        self.edge_set_names = tuple(edge_set_names)

    def build(self, input_shape=None):
        self.built = True

    def call(
        self, graph: tfgnn.GraphTensor, training: bool | None = None
    ) -> tfgnn.GraphTensor:
        new_states = {}
        for node_set in self.node_set_names:
            states = graph.node_sets[node_set][tfgnn.HIDDEN_STATE]
            update = self.self_transforms[node_set](states)
            for edge_set in self.edge_set_names:
                if graph.edge_sets[edge_set].adjacency.target_name == node_set:
                    update += self.convs[edge_set](
                        graph=graph, edge_set_name=edge_set, training=training
                    )
            update = self.dropouts[node_set](self._activation(update), training=training)
            if self.use_residual:
                update = states + update
            if self.use_layer_norm:
                update = self.norms[node_set](update)
            new_states[node_set] = {tfgnn.HIDDEN_STATE: update}
        return graph.replace_features(node_sets=new_states)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            units=self.units,
            num_heads=self.num_heads,
            attention_type=self.attention_type,
            activation=self.activation,
            dropout=self.dropout,
            use_residual=self.use_residual,
            use_layer_norm=self.use_layer_norm,
            node_set_names=self.node_set_names,
            edge_set_names=self.edge_set_names,
        )
        return config
