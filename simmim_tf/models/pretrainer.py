"""`SimMIMPretrainer`: MIM, MLM, ITC and ITM losses on unlabelled image-text pairs."""

from __future__ import annotations

import math

import keras
import keras_hub
import tensorflow as tf
from keras_hub.src.utils.tensor_utils import preprocessing_function

from simmim_tf.models.backbone import SimMIMBackbone
from simmim_tf.models.preprocessor import SimMIMPreprocessor
from simmim_tf.pretraining.contrastive import ContrastiveLoss, sample_hard_negatives
from simmim_tf.pretraining.masking import (
    MaskTokenLayer,
    PixelReconstructionHead,
    check_mask_arguments,
    masked_l1_loss,
    simmim_mask,
)
from simmim_tf.pretraining.matching import MatchingHead

LOSS_NAMES = ("mim", "mlm", "itc", "itm")


@keras.saving.register_keras_serializable(package="simmim_tf")
class SimMIMPretrainerPreprocessor(SimMIMPreprocessor):
    """`SimMIMPreprocessor` plus the random masks of pre-training.

    Adds, per batch: `mim_mask` `[B, H, W]` (SimMIM patches, 1 = masked) and
    the BERT MLM targets from `keras_hub.layers.MaskedLMMaskGenerator`
    (ceil(15 %) of each text's real tokens, so about 20 % of a short emoji
    text; 80 % become [MASK], 10 % a random token, 10 % unchanged):
    `masked_token_ids`, `mlm_positions`, `mlm_ids`, `mlm_weights`. Takes
    batched input only.

    Args:
        tokenizer: `keras_hub.models.BertTokenizer`.
        image_size: tuple of 2 ints. Model image size.
        sequence_length: int. Padded token length.
        mask_ratio: float. Share of image patches masked (SimMIM: 0.6).
        mask_patch_size: int. Side of a mask patch in pixels; SimMIM uses 32 at
            224 px, i.e. the encoder's stride; at 64 px with stride 16, 16.
        mlm_probability: float. Share of real tokens selected for MLM.
    """

    def __init__(
        self,
        tokenizer,
        image_size: tuple[int, int] = (64, 64),
        sequence_length: int = 32,
        mask_ratio: float = 0.6,
        mask_patch_size: int = 16,
        mlm_probability: float = 0.15,
        **kwargs,
    ):
        super().__init__(tokenizer, image_size, sequence_length, **kwargs)
        check_mask_arguments(self.image_size, mask_patch_size, mask_ratio)
        if not 0.0 < mlm_probability < 1.0:
            raise ValueError(f"MLM probability {mlm_probability} must be in (0, 1).")
        self.mask_ratio = mask_ratio
        self.mask_patch_size = mask_patch_size
        self.mlm_probability = mlm_probability
        self.mlm_masker = None

    def build(self, input_shape=None):
        super().build(input_shape)
        self.mlm_masker = keras_hub.layers.MaskedLMMaskGenerator(
            vocabulary_size=self.tokenizer.vocabulary_size(),
            mask_selection_rate=self.mlm_probability,
            mask_token_id=self.tokenizer.mask_token_id,
            mask_selection_length=math.ceil(self.sequence_length * self.mlm_probability)
            + 1,
            unselectable_token_ids=[
                self.tokenizer.cls_token_id,
                self.tokenizer.sep_token_id,
                self.tokenizer.pad_token_id,
            ],
        )
        self.mlm_masker._allow_python_workflow = False

    @preprocessing_function
    def call(self, x, y=None, sample_weight=None):
        inputs = super().call(x)
        masked = self.mlm_masker(inputs["token_ids"])
        batch_size = tf.shape(inputs["images"])[0]
        seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)
        inputs.update(
            mim_mask=simmim_mask(
                batch_size,
                self.image_size,
                patch_size=self.mask_patch_size,
                mask_ratio=self.mask_ratio,
                seed=seed,
            ),
            masked_token_ids=masked["token_ids"],
            mlm_positions=masked["mask_positions"],
            mlm_ids=masked["mask_ids"],
            mlm_weights=masked["mask_weights"],
        )
        return keras.utils.pack_x_y_sample_weight(inputs, y, sample_weight)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            mask_ratio=self.mask_ratio,
            mask_patch_size=self.mask_patch_size,
            mlm_probability=self.mlm_probability,
        )
        return config


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
        **kwargs,
    ):
        super().__init__(**kwargs)
        weights = dict(mim=mim_weight, mlm=mlm_weight, itc=itc_weight, itm=itm_weight)
        if any(w < 0 for w in weights.values()) or not any(weights.values()):
            raise ValueError(
                f"Loss weights {weights} must be >= 0 with at least one > 0."
            )
        image_size = backbone.image_encoder.input_shape[1]
        # === Layers ===
        self.backbone = backbone
        self.mask_token = MaskTokenLayer(name="mim_mask_token")
        self.pixel_head = PixelReconstructionHead(
            stride=image_size // backbone.grid_shape[0], name="mim_head"
        )
        self.mlm_head = keras_hub.layers.MaskedLMHead(
            vocabulary_size=backbone.text_encoder.vocabulary_size,
            intermediate_activation="gelu",
            name="mlm_head",
        )
        self.contrastive = ContrastiveLoss(initial_temperature, name="itc")
        self.itm_head = MatchingHead(backbone.hidden_dim, name="itm_head")
        self.trackers = {
            name: keras.metrics.Mean(name=f"{name}_loss")
            for name in ("total",) + LOSS_NAMES
        }
        # === Config ===
        self.loss_weights_by_name = weights
        self.initial_temperature = initial_temperature

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
            token_ids = (
                inputs["masked_token_ids"] if weights["mlm"] else inputs["token_ids"]
            )
            feature_map, image_states = self.backbone.encode_images(images)
            if weights["mim"]:
                losses["mim"] = masked_l1_loss(
                    inputs["images"], self.pixel_head(feature_map), inputs["mim_mask"]
                )
            if weights["mlm"]:
                text_states = self.backbone.encode_texts(token_ids, mask)
                nodes = self.backbone.fuse(image_states, text_states, mask)[
                    "text_node_states"
                ]
                logits = self.mlm_head(nodes, mask_positions=inputs["mlm_positions"])
                losses["mlm"] = masked_cross_entropy(
                    inputs["mlm_ids"], logits, inputs["mlm_weights"]
                )
        if weights["itc"] or weights["itm"]:
            image_states, text_states, image_embedding, text_embedding = (
                self.encode_pairs(inputs)
            )
            if weights["itc"]:
                losses["itc"] = self.contrastive(image_embedding, text_embedding)
            if weights["itm"]:
                losses["itm"] = self.matching_loss(
                    image_states, text_states, mask, image_embedding, text_embedding
                )
        return losses

    def encode_pairs(self, inputs) -> tuple:
        """Clean-input states and unimodal embeddings, before any graph round.

        Returns `(image_states, text_states, image_embedding, text_embedding)`.
        """
        mask = inputs["padding_mask"]
        _, image_states = self.backbone.encode_images(inputs["images"])
        text_states = self.backbone.encode_texts(inputs["token_ids"], mask)
        image_embedding, text_embedding = self.backbone.unimodal_embeddings(
            image_states, text_states, mask
        )
        return image_states, text_states, image_embedding, text_embedding

    def matching_scores(self, image_states, text_states, padding_mask) -> tf.Tensor:
        """ITM logit (match minus no-match) of each aligned (image, text) pair."""
        logits = self.matching_logits(image_states, text_states, padding_mask)
        return logits[:, 1] - logits[:, 0]

    def matching_logits(self, image_states, text_states, padding_mask) -> tf.Tensor:
        """ITM logits `[B, 2]` (no match, match) of aligned pairs, after the graph."""
        fused = self.backbone.fuse(image_states, text_states, padding_mask)
        return self.itm_head(
            fused["fused_embedding"], fused["image_embedding"], fused["text_embedding"]
        )

    def matching_loss(self, image_states, text_states, mask, image_emb, text_emb):
        similarity = self.contrastive.similarity(image_emb, text_emb)  # [B, B]
        negative_texts = sample_hard_negatives(similarity)
        negative_images = sample_hard_negatives(tf.transpose(similarity))
        positives = tf.range(tf.shape(similarity)[0])
        image_index = tf.concat([positives, positives, negative_images], 0)
        text_index = tf.concat([positives, negative_texts, positives], 0)
        logits = self.matching_logits(
            tf.gather(image_states, image_index),
            tf.gather(text_states, text_index),
            tf.gather(mask, text_index),
        )
        labels = tf.cast(tf.equal(image_index, text_index), tf.int32)  # [3B]
        return tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        )

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        total = 0.0
        for name, value in y_pred.items():
            total += self.loss_weights_by_name[name] * value
            self.trackers[name].update_state(value)
        self.trackers["total"].update_state(total)
        return total

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
        )
        return config

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        config["backbone"] = keras.layers.deserialize(config["backbone"])
        return cls(**config)


def masked_cross_entropy(labels, logits, weights) -> tf.Tensor:
    """Sparse cross-entropy averaged over the positions whose weight is 1."""
    weights = tf.cast(weights, logits.dtype)
    per_position = keras.losses.sparse_categorical_crossentropy(
        labels, logits, from_logits=True
    )
    return tf.reduce_sum(per_position * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)
