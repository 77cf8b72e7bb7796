"""`SimMIMBackbone`: ResNet + BERT encoders fused by graph attention."""

from __future__ import annotations

import keras
import keras_hub

from simmim_tf.encoders.image import build_image_encoder, feature_grid
from simmim_tf.encoders.text import build_text_encoder
from simmim_tf.graph.encoder import MultimodalGraphEncoder
from simmim_tf.graph.fusion import SqrtTwoFusion
from simmim_tf.models.inputs import model_inputs


@keras.saving.register_keras_serializable(package="simmim_tf")
class SimMIMBackbone(keras_hub.models.Backbone):
    """Image + text backbone whose modalities meet in a TF-GNN graph.

    The image encoder's feature map (h x w cells) and the text encoder's
    non-padding token states are projected to `hidden_dim`, become the `image`
    and `text` node sets of a GraphTensor (see `simmim_tf.graph.build`), and
    exchange attention messages for `num_rounds` rounds. The readouts are the
    mean image node state x and mean text node state y; the fused embedding is
    `(x + y) / sqrt(2)`.

    Args:
        image_encoder: `keras_hub.models.ResNetBackbone` with a fixed
            `image_shape`; its feature map is the image node grid.
        text_encoder: `keras_hub.models.BertBackbone`.
        hidden_dim: int. Width of node states and embeddings.
        num_rounds: int. Rounds of message passing K (0 keeps the modalities
            apart until the fusion).
        num_heads: int. Attention heads per edge set.
        attention_type: str. `"gatv2"` or `"dot_product"`.
        dropout: float. Dropout inside the graph rounds.
        dtype: Keras dtype policy of the new layers.

    Inputs: a dict with `images` `[batch, H, W, 3]` float (normalised pixels),
    `token_ids` `[batch, seq_len]` int and `padding_mask` `[batch, seq_len]`.

    Outputs: a dict of plain tensors: `image_node_states`, `text_node_states`,
    `image_unimodal_embedding` and `text_unimodal_embedding` (means before the
    graph), `image_embedding` (x), `text_embedding` (y), `fused_embedding` (z).

    Example:
    ```python
    backbone = SimMIMBackbone.from_encoder_configs(
        image_encoder="tiny_16px", text_encoder="tiny", hidden_dim=16,
        num_heads=2)
    outputs = backbone({
        "images": np.zeros([2, 16, 16, 3], "float32"),
        "token_ids": np.array([[101, 2000, 102, 0]] * 2),
        "padding_mask": np.array([[1, 1, 1, 0]] * 2),
    })
    outputs["fused_embedding"].shape  # (2, 16)
    ```
    """

    def __init__(
        self,
        image_encoder: keras.Model,
        text_encoder: keras.Model,
        hidden_dim: int = 256,
        num_rounds: int = 2,
        num_heads: int = 4,
        attention_type: str = "gatv2",
        dropout: float = 0.1,
        dtype=None,
        **kwargs,
    ):
        height, width = feature_grid(image_encoder)
        num_cells = height * width
        # === Layers ===
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.image_projection = keras.layers.Dense(
            hidden_dim, dtype=dtype, name="image_projection"
        )
        self.image_position_embedding = keras_hub.layers.PositionEmbedding(
            sequence_length=num_cells, dtype=dtype, name="image_position_embedding"
        )
        self.text_projection = keras.layers.Dense(
            hidden_dim, dtype=dtype, name="text_projection"
        )
        self.graph_encoder = MultimodalGraphEncoder(
            units=hidden_dim,
            grid_shape=(height, width),
            num_rounds=num_rounds,
            num_heads=num_heads,
            attention_type=attention_type,
            dropout=dropout,
            dtype=dtype,
            name="graph_encoder",
        )
        self.fusion = SqrtTwoFusion(dtype=dtype, name="fusion")

        self.image_cells = keras.layers.Reshape(
            (num_cells, image_encoder.output_shape[-1]), dtype=dtype, name="image_cells"
        )

        # === Functional Model ===
        inputs = model_inputs(image_encoder.input_shape[1:])
        _, image_states = self.encode_images(inputs["images"])
        text_states = self.encode_texts(inputs["token_ids"], inputs["padding_mask"])
        outputs = self.fuse(image_states, text_states, inputs["padding_mask"])
        super().__init__(
            inputs=inputs,
            outputs=outputs,
            dtype=dtype,
            **kwargs,
        )

        # === Config ===
        self.hidden_dim = hidden_dim
        self.num_rounds = num_rounds
        self.num_heads = num_heads
        self.attention_type = attention_type
        self.dropout = dropout
        self.grid_shape = (height, width)

    def encode_images(self, images):
        """Feature map `[B, h, w, c]` and projected cell states `[B, h*w, d]`.

        The cell states are what the graph's image nodes start from; their
        mean is the unimodal image embedding (before any cross-modal edge).
        """
        feature_map = self.image_encoder(images)
        states = self.image_projection(self.image_cells(feature_map))
        return feature_map, states + self.image_position_embedding(states)

    def encode_texts(self, token_ids, padding_mask):
        """Projected token states `[B, L, d]`, the graph's text nodes to be."""
        token_states = self.text_encoder(
            {
                "token_ids": token_ids,
                "segment_ids": keras.ops.zeros_like(token_ids),
                "padding_mask": padding_mask,
            }
        )["sequence_output"]
        return self.text_projection(token_states)

    def unimodal_embeddings(self, image_states, text_states, padding_mask):
        """Mean cell state and mean real-token state, before any graph round."""
        mask = keras.ops.expand_dims(keras.ops.cast(padding_mask, text_states.dtype), -1)
        text_mean = keras.ops.sum(text_states * mask, axis=1) / keras.ops.maximum(
            keras.ops.sum(mask, axis=1), 1.0
        )
        return keras.ops.mean(image_states, axis=1), text_mean

    def fuse(self, image_states, text_states, padding_mask) -> dict:
        """Run the graph on encoded states; returns the backbone's output dict.

        `image_unimodal_embedding` and `text_unimodal_embedding` are the means
        of the states before message passing (what a dual encoder compares);
        `image_embedding`, `text_embedding` and `fused_embedding` come after.
        """
        graph_outputs = self.graph_encoder(image_states, text_states, padding_mask)
        image_unimodal, text_unimodal = self.unimodal_embeddings(
            image_states, text_states, padding_mask
        )
        return {
            "image_node_states": graph_outputs["image_node_states"],
            "text_node_states": graph_outputs["text_node_states"],
            "image_unimodal_embedding": image_unimodal,
            "text_unimodal_embedding": text_unimodal,
            "image_embedding": graph_outputs["image_readout"],
            "text_embedding": graph_outputs["text_readout"],
            "fused_embedding": self.fusion(
                graph_outputs["image_readout"], graph_outputs["text_readout"]
            ),
        }

    @classmethod
    def from_encoder_configs(
        cls,
        image_encoder: str | dict = "resnet18_64px",
        text_encoder: str | None = None,
        image_encoder_weights: str | None = None,
        **kwargs,
    ) -> SimMIMBackbone:
        """Build with encoders named by config (see `simmim_tf.encoders`).

        Args:
            image_encoder: str or dict. An image encoder config name or dict.
            text_encoder: str or None. A text encoder config name or any
                keras-hub preset handle; None means the pretrained MiniLM-L6
                (see `build_text_encoder`).
            image_encoder_weights: str. Optional local `.weights.h5` file.
            **kwargs: the other `SimMIMBackbone` arguments.
        """
        return cls(
            image_encoder=build_image_encoder(image_encoder, image_encoder_weights),
            text_encoder=build_text_encoder(text_encoder),
            **kwargs,
        )

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            image_encoder=keras.layers.serialize(self.image_encoder),
            text_encoder=keras.layers.serialize(self.text_encoder),
            hidden_dim=self.hidden_dim,
            num_rounds=self.num_rounds,
            num_heads=self.num_heads,
            attention_type=self.attention_type,
            dropout=self.dropout,
        )
        return config

    @classmethod
    def from_config(cls, config: dict) -> SimMIMBackbone:
        config = dict(config)
        for key in ("image_encoder", "text_encoder"):
            if isinstance(config[key], dict):
                config[key] = keras.layers.deserialize(config[key])
        return cls(**config)
