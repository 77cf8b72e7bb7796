"""`SimMIMBackbone`: ResNet + BERT encoders fused by graph attention."""

from __future__ import annotations

import copy

import keras
import keras_hub

from simmim_tf.encoders.image import build_image_encoder, feature_grid
from simmim_tf.encoders.text import build_text_encoder
from simmim_tf.graph.encoder import MultimodalGraphEncoder
from simmim_tf.graph.fusion import SqrtTwoFusion
from simmim_tf.models.inputs import (
    MODALITIES,
    TEXT_ENCODER_STATES,
    check_modalities,
    encode_tokens,
    mean_over_tokens,
    model_inputs,
)


@keras.saving.register_keras_serializable(package="simmim_tf")
class SimMIMBackbone(keras_hub.models.Backbone):
    """Image + text backbone whose modalities meet in a TF-GNN graph.

    Three named functional sub-models share the backbone's weights, so a task
    takes only what it needs:

    - `image_tower`: `images` -> `image_feature_map` `[B, h, w, c]` (the
      ResNet's), `image_cell_states` `[B, h*w, d]` (projected cells plus a
      position embedding: the graph's image nodes to be) and
      `image_unimodal_embedding` `[B, d]` (their mean, before any graph
      round: what a dual encoder compares).
    - `text_tower`: `token_ids`, `padding_mask` -> `text_token_states`
      `[B, L, d]` (projected BERT states) and `text_unimodal_embedding`
      `[B, d]` (mean over real tokens).
    - `graph_fusion`: `image_cell_states`, `text_token_states`,
      `padding_mask` -> `image_node_states`, `text_node_states` (after
      `num_rounds` rounds of attention on the GraphTensor, see
      `simmim_tf.graph.build`), their means `image_graph_embedding` (x) and
      `text_graph_embedding` (y), and `fused_embedding` z = (x + y) / sqrt(2).
      `graph_fusion_for(modalities)` gives the same graph over one modality
      (the other is an empty node set: no nodes, no edges, readout 0).

    The backbone itself is the functional model over all three; its outputs
    are the union of theirs.

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
        padded_graph: bool. Static graph sizes, for `jit_compile` (XLA) and
            TPUs; the same outputs (see `MultimodalGraphEncoder`).
        dtype: Keras dtype policy of the new layers; build the encoders with
            the same one (`from_encoder_configs(dtype=…)` does).

    Inputs: a dict with `images` `[batch, H, W, 3]` float (normalised pixels),
    `token_ids` `[batch, seq_len]` int and `padding_mask` `[batch, seq_len]`.

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
    backbone.image_tower(np.zeros([2, 16, 16, 3], "float32"))[
        "image_unimodal_embedding"].shape  # (2, 16)
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
        padded_graph: bool = False,
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
            padded_graph=padded_graph,
            dtype=dtype,
            name="graph_encoder",
        )
        self.fusion = SqrtTwoFusion(dtype=dtype, name="fusion")
        self.image_cells = keras.layers.Reshape(
            (num_cells, image_encoder.output_shape[-1]), dtype=dtype, name="image_cells"
        )
        self.image_tower = self._image_tower(image_encoder.input_shape[1:])
        self.text_tower = self._text_tower()
        self.graph_fusion = self.graph_fusion_for(MODALITIES)

        # === Functional Model ===
        inputs = model_inputs(image_encoder.input_shape[1:])
        outputs = self.encode(inputs)
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)

        # === Config ===
        self.hidden_dim = hidden_dim
        self.num_rounds = num_rounds
        self.num_heads = num_heads
        self.attention_type = attention_type
        self.dropout = dropout
        self.padded_graph = padded_graph
        self.grid_shape = (height, width)

    def _image_tower(self, image_shape) -> keras.Model:
        images = keras.Input(shape=image_shape, name="images")
        feature_map = self.image_encoder(images)
        cells = self.image_projection(self.image_cells(feature_map))
        cells = cells + self.image_position_embedding(cells)
        outputs = {
            "image_feature_map": feature_map,
            "image_cell_states": cells,
            "image_unimodal_embedding": keras.ops.mean(cells, axis=1),
        }
        return keras.Model(images, outputs, name="image_tower")

    def _text_tower(self) -> keras.Model:
        inputs = model_inputs(None, modalities=("text",))
        token_states = encode_tokens(
            self.text_encoder, inputs["token_ids"], inputs["padding_mask"]
        )
        outputs = self._project_text(token_states, inputs["padding_mask"])
        return keras.Model(inputs, outputs, name="text_tower")

    def _project_text(self, encoder_states, padding_mask) -> dict:
        states = self.text_projection(encoder_states)
        mean = mean_over_tokens(states, padding_mask)
        return {"text_token_states": states, "text_unimodal_embedding": mean}

    def encode_text(self, inputs: dict, training: bool | None = None) -> dict:
        """`text_tower`'s outputs for `inputs`, the way a training step wants them.

        A frozen text encoder (`text_encoder.trainable` False) runs in
        inference mode: its dropout would only add noise to states no step
        trains. Its states may also come precomputed, as
        `inputs["text_encoder_states"]` `[B, L, H]` (what
        `simmim_tf.training.text_states` adds to batches): then only the
        projection runs.

        Args:
            inputs: dict with `padding_mask` and `token_ids` or
                `text_encoder_states`.
            training: bool or None. The step's training flag.
        """
        mask = inputs["padding_mask"]
        if TEXT_ENCODER_STATES in inputs:
            if self.text_encoder.trainable:
                raise ValueError(
                    f"`{TEXT_ENCODER_STATES}` are a frozen text encoder's states, "
                    "but this backbone trains its text encoder "
                    "(`text_encoder.trainable` is True): pass `token_ids` instead."
                )
            return self._project_text(inputs[TEXT_ENCODER_STATES], mask)
        text = {"token_ids": inputs["token_ids"], "padding_mask": mask}
        return self.text_tower(
            text, training=bool(training) and self.text_encoder.trainable
        )

    def graph_fusion_for(self, modalities=MODALITIES) -> keras.Model:
        """The graph and the fusion over `modalities`, a functional model.

        Inputs: `image_cell_states` for the image; `text_token_states` and
        `padding_mask` for text. Outputs: `image_node_states`,
        `text_node_states`, `image_graph_embedding`, `text_graph_embedding`,
        `fused_embedding`. Shares the backbone's weights.
        """
        modalities = check_modalities(modalities)
        hidden_dim = self.graph_encoder.units
        inputs = {}
        if "image" in modalities:
            inputs["image_cell_states"] = keras.Input(
                shape=(self.image_position_embedding.sequence_length, hidden_dim),
                name="image_cell_states",
            )
        if "text" in modalities:
            inputs["text_token_states"] = keras.Input(
                shape=(None, hidden_dim), name="text_token_states"
            )
            inputs["padding_mask"] = keras.Input(
                shape=(None,), dtype="int32", name="padding_mask"
            )
        graph = self.graph_encoder(
            image_states=inputs.get("image_cell_states"),
            text_states=inputs.get("text_token_states"),
            padding_mask=inputs.get("padding_mask"),
        )
        outputs = {
            "image_node_states": graph["image_node_states"],
            "text_node_states": graph["text_node_states"],
            "image_graph_embedding": graph["image_readout"],
            "text_graph_embedding": graph["text_readout"],
            "fused_embedding": self.fusion(graph["image_readout"], graph["text_readout"]),
        }
        return keras.Model(inputs, outputs, name="_".join(("graph_fusion",) + modalities))

    def encode(self, inputs: dict, modalities=MODALITIES) -> dict:
        """Every backbone output for `inputs` (symbolic or real), tower by tower.

        Only `modalities` are read: `images` for the image, `token_ids` and
        `padding_mask` for text; an absent modality is absent from the graph.
        """
        modalities = check_modalities(modalities)
        outputs, graph_inputs = {}, {}
        if "image" in modalities:
            outputs.update(self.image_tower(inputs["images"]))
            graph_inputs["image_cell_states"] = outputs["image_cell_states"]
        if "text" in modalities:
            text = {key: inputs[key] for key in ("token_ids", "padding_mask")}
            outputs.update(self.text_tower(text))
            graph_inputs.update(
                text_token_states=outputs["text_token_states"],
                padding_mask=text["padding_mask"],
            )
        if len(modalities) == len(MODALITIES):
            fusion = self.graph_fusion
        else:
            fusion = self.graph_fusion_for(modalities)
        outputs.update(fusion(graph_inputs))
        return outputs

    @classmethod
    def from_encoder_configs(
        cls,
        image_encoder: str | dict = "resnet18_64px",
        text_encoder: str | None = None,
        image_encoder_weights: str | None = None,
        dtype: str | keras.DTypePolicy | None = None,
        freeze_text_encoder: bool = False,
        **kwargs,
    ) -> SimMIMBackbone:
        """Build with encoders named by config (see `simmim_tf.encoders`).

        Args:
            image_encoder: str or dict. An image encoder config name or dict.
            text_encoder: str or None. A text encoder config name or any
                keras-hub preset handle; None means the pretrained MiniLM-L6
                (see `build_text_encoder`).
            image_encoder_weights: str. Optional local `.weights.h5` file.
            dtype: Keras dtype policy of the whole backbone, encoders included
                (e.g. `"mixed_bfloat16"`: bfloat16 compute, float32 weights).
            freeze_text_encoder: bool. A frozen text encoder, without dropout
                (see `build_text_encoder`'s `frozen`).
            **kwargs: the other `SimMIMBackbone` arguments.
        """
        return cls(
            image_encoder=build_image_encoder(
                image_encoder, image_encoder_weights, dtype=dtype
            ),
            text_encoder=build_text_encoder(
                text_encoder, dtype=dtype, frozen=freeze_text_encoder
            ),
            dtype=dtype,
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
            padded_graph=self.padded_graph,
        )
        return config

    @classmethod
    def from_config(cls, config: dict) -> SimMIMBackbone:
        config = dict(config)
        for key in ("image_encoder", "text_encoder"):
            if isinstance(config[key], dict):
                encoder = copy.deepcopy(config[key])
                # One policy for the whole backbone. `from_preset` passes the
                # dtype asked for, or None for Keras' global policy (keras-hub
                # does not restore a saved float policy); so do the encoders.
                if "dtype" in config:
                    encoder["config"]["dtype"] = config["dtype"]
                config[key] = keras.layers.deserialize(encoder)
        return cls(**config)
