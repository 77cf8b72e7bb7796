"""`SimMIMPretrainer`: MIM, MLM, ITC and ITM losses on unlabelled image-text pairs.

Each loss lives in `simmim_tf.pretraining` (masking.py: MIM, mlm.py: MLM,
contrastive.py: ITC, matching.py: ITM); this task wires them to the backbone.
"""

from __future__ import annotations

import keras
import keras_hub
import tensorflow as tf

from simmim_tf.models.backbone import SimMIMBackbone
from simmim_tf.pretraining.contrastive import (
    PAIR_IDS,
    ContrastiveLoss,
    positive_pairs,
    sample_hard_negatives,
)
from simmim_tf.pretraining.masking import (
    MaskTokenLayer,
    PixelReconstructionHead,
    masked_l1_loss,
)
from simmim_tf.pretraining.matching import MatchingHead
from simmim_tf.pretraining.mlm import masked_cross_entropy
from simmim_tf.pretraining.replicas import replica_share

LOSS_NAMES = ("mim", "mlm", "itc", "itm")


@keras.saving.register_keras_serializable(package="simmim_tf")
class SimMIMPretrainer(keras.Model):
    """Pre-train a `SimMIMBackbone` on image-text pairs, without labels.

    Four losses, each switched off by a weight of 0:
    - **MIM** (SimMIM): masked pixels are replaced by a learnable mask token
      before the image encoder; a 1x1 conv + pixel shuffle head regresses the
      normalised pixels from the feature map; L1 on masked pixels only.
    - **MLM**: BERT masking; predicted from the text node states *after*
      message passing, so the image helps fill the blanks.
    - **ITC**: InfoNCE between the unimodal embeddings (before cross-modal
      edges), learnable temperature from 0.07, both directions.
    - **ITM**: a binary match head (`MatchingHead`) on the fused embedding
      and the readouts' product x * y; each image gets a
      hard negative text and each text a hard negative image, sampled from
      the ITC similarities (never the positive).
    MIM and MLM share one pass over the masked inputs; ITC and ITM share one
    pass over the clean inputs, and ITM reuses its encoder states for the
    negative pairs (only the graph runs again).

    Args:
        backbone: `SimMIMBackbone`.
        mim_weight, mlm_weight, itc_weight, itm_weight: float >= 0.
        initial_temperature: float. ITC's starting temperature.
        itm_stop_gradient: bool. ITM trains the graph and its head only: its
            gradient stops at the towers' states, so the encoders learn from
            the other losses (the dual embeddings from ITC alone).

    Inputs: what `SimMIMPretrainerPreprocessor` produces. `fit` needs no `y`.
    `call` returns the dict of the enabled (unweighted) losses.

    Example:
    ```python
    pretrainer = SimMIMPretrainer(backbone, mlm_weight=0.5)
    pretrainer.compile(optimizer=keras.optimizers.AdamW(1e-4))
    pretrainer.fit(pretraining_batches, epochs=10)
    pretrainer.backbone.save_to_preset("pretrained/")
    ```
    """

    def __init__(
        self,
        backbone: SimMIMBackbone,
        *,
        mim_weight: float = 1.0,
        mlm_weight: float = 1.0,
        itc_weight: float = 1.0,
        itm_weight: float = 1.0,
        initial_temperature: float = 0.07,
        itm_stop_gradient: bool = False,
        **kwargs,
    ):
        # The heads compute in the backbone's precision (losses in float32).
        kwargs.setdefault("dtype", backbone.dtype_policy)
        super().__init__(**kwargs)
        weights = dict(mim=mim_weight, mlm=mlm_weight, itc=itc_weight, itm=itm_weight)
        if any(w < 0 for w in weights.values()) or not any(weights.values()):
            raise ValueError(
                f"Loss weights {weights} must be >= 0 with at least one > 0."
            )
        image_size = backbone.image_encoder.input_shape[1]
        # === Layers ===
        self.backbone = backbone
        dtype = self.dtype_policy
        self.mask_token = MaskTokenLayer(dtype=dtype, name="mim_mask_token")
        self.pixel_head = PixelReconstructionHead(
            stride=image_size // backbone.grid_shape[0], dtype=dtype, name="mim_head"
        )
        # float32 under any policy: keras-hub's head adds a float32 bias to
        # outputs cast to the compute dtype (it fails under a mixed policy),
        # and a softmax over 30k tokens wants float32 anyway. It reads only the
        # masked positions, a small share of the step.
        self.mlm_head = keras_hub.layers.MaskedLMHead(
            vocabulary_size=backbone.text_encoder.vocabulary_size,
            intermediate_activation="gelu",
            dtype="float32",
            name="mlm_head",
        )
        self.contrastive = ContrastiveLoss(initial_temperature, name="itc")
        self.itm_head = MatchingHead(backbone.hidden_dim, dtype=dtype, name="itm_head")
        self.trackers = {
            name: keras.metrics.Mean(name=f"{name}_loss")
            for name in ("total",) + LOSS_NAMES
        }
        # === Config ===
        self.loss_weights_by_name = weights
        self.initial_temperature = initial_temperature
        self.itm_stop_gradient = itm_stop_gradient
        # Losses computed and logged but left out of the trained total for now
        # (`simmim_tf.training.callbacks.LossWarmup`); read when a step is traced.
        self.paused_losses: set[str] = set()

    def build(self, input_shape=None):
        # The shapes of the enabled heads follow from the backbone: build them up
        # front, so each weight exists before the first batch (load_weights,
        # backups). A head whose loss is off stays unbuilt and without weights.
        weights = self.loss_weights_by_name
        hidden_dim = self.backbone.hidden_dim
        if weights["mim"]:
            self.mask_token.build(self.backbone.image_encoder.input_shape)
            self.pixel_head.build(self.backbone.image_encoder.output_shape)
        if weights["mlm"]:
            self.mlm_head.build((None, None, hidden_dim), (None, None))
        if weights["itm"]:
            self.itm_head.build((None, hidden_dim))

    def call(self, inputs, training=False) -> dict:
        weights = self.loss_weights_by_name
        mask = inputs["padding_mask"]
        losses = {}
        if weights["mim"] or weights["mlm"]:
            images = inputs["images"]
            if weights["mim"]:
                images = self.mask_token(images, inputs["mim_mask"])
            if weights["mlm"]:
                masked = self.backbone(
                    {
                        "images": images,
                        "token_ids": inputs["masked_token_ids"],
                        "padding_mask": mask,
                    }
                )
                logits = self.mlm_head(
                    masked["text_node_states"], mask_positions=inputs["mlm_positions"]
                )
                losses["mlm"] = masked_cross_entropy(
                    inputs["mlm_ids"], logits, inputs["mlm_weights"]
                )
            else:
                masked = self.backbone.image_tower(images)
            if weights["mim"]:
                losses["mim"] = masked_l1_loss(
                    inputs["images"],
                    self.pixel_head(masked["image_feature_map"]),
                    inputs["mim_mask"],
                )
        if weights["itc"] or weights["itm"]:
            image = self.backbone.image_tower(inputs["images"])
            text = self.backbone.encode_text(inputs, training=training)
            image_embedding = image["image_unimodal_embedding"]
            text_embedding = text["text_unimodal_embedding"]
            pair_ids = inputs.get(PAIR_IDS)
            if weights["itc"]:
                losses["itc"] = self.contrastive(
                    image_embedding, text_embedding, pair_ids=pair_ids
                )
            if weights["itm"]:
                states = (image["image_cell_states"], text["text_token_states"])
                if self.itm_stop_gradient:
                    states = tuple(tf.stop_gradient(state) for state in states)
                losses["itm"] = self.matching_loss(
                    *states,
                    mask,
                    image_embedding,
                    text_embedding,
                    pair_ids,
                )
        return losses

    def matching_scores(self, image_states, text_states, padding_mask) -> tf.Tensor:
        """ITM logit (match minus no-match) of each aligned (image, text) pair."""
        logits = self.matching_logits(image_states, text_states, padding_mask)
        return logits[:, 1] - logits[:, 0]

    def matching_logits(self, image_states, text_states, padding_mask) -> tf.Tensor:
        """ITM logits `[B, 2]` (no match, match) of aligned pairs, after the graph.

        `image_states` and `text_states` are the towers' `image_cell_states`
        and `text_token_states`.
        """
        fused = self.backbone.graph_fusion(
            {
                "image_cell_states": image_states,
                "text_token_states": text_states,
                "padding_mask": padding_mask,
            }
        )
        return self.itm_head(
            fused["fused_embedding"],
            fused["image_graph_embedding"],
            fused["text_graph_embedding"],
        )

    def matching_loss(
        self, image_states, text_states, mask, image_emb, text_emb, pair_ids=None
    ):
        similarity = self.contrastive.similarity(image_emb, text_emb)  # [B, B]
        batch = tf.shape(similarity)[0]
        positives = positive_pairs(batch, pair_ids)
        negative_texts = sample_hard_negatives(similarity, positives)
        negative_images = sample_hard_negatives(tf.transpose(similarity), positives)
        aligned = tf.range(batch)
        image_index = tf.concat([aligned, aligned, negative_images], 0)
        text_index = tf.concat([aligned, negative_texts, aligned], 0)
        logits = self.matching_logits(
            tf.gather(image_states, image_index),
            tf.gather(text_states, text_index),
            tf.gather(mask, text_index),
        )
        # A pair matches when its image and text are of one emoji.
        matches = tf.gather_nd(positives, tf.stack([image_index, text_index], axis=1))
        labels = tf.cast(matches, tf.int32)  # [3B]
        logits = tf.cast(logits, tf.float32)  # the loss in float32 under any policy
        return tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        )

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        total = 0.0
        for name, value in y_pred.items():
            # A paused loss leaves the trained total only: the validation
            # total counts every loss, epoch after epoch (what a checkpoint
            # monitors compares like with like).
            if not (training and name in self.paused_losses):
                total += self.loss_weights_by_name[name] * value
            self.trackers[name].update_state(value)
        self.trackers["total"].update_state(total)
        return replica_share(total)

    @property
    def metrics(self):
        enabled = [name for name in LOSS_NAMES if self.loss_weights_by_name[name]]
        return [self.trackers[name] for name in ("total", *enabled)]

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            backbone=keras.layers.serialize(self.backbone),
            mim_weight=self.loss_weights_by_name["mim"],
            mlm_weight=self.loss_weights_by_name["mlm"],
            itc_weight=self.loss_weights_by_name["itc"],
            itm_weight=self.loss_weights_by_name["itm"],
            initial_temperature=self.initial_temperature,
            itm_stop_gradient=self.itm_stop_gradient,
        )
        return config

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        config["backbone"] = keras.layers.deserialize(config["backbone"])
        return cls(**config)
