"""`SimMIMRetriever`: dual-encoder retrieval re-ranked by the graph's ITM score."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from simmim_tf.models.backbone import SimMIMBackbone
from simmim_tf.models.pretrainer import SimMIMPretrainer

# Re-ranked candidates are lifted above every other gallery item by this much.
RERANK_OFFSET = 1e6


@keras.saving.register_keras_serializable(package="simmim_tf")
class SimMIMRetriever(keras.Model):
    """Text->image and image->text retrieval (CLIP / ALBEF style).

    Trained with the pre-training objectives ITC + ITM (`objectives`, a
    `SimMIMPretrainer` with MIM and MLM off, over the same backbone). To
    retrieve, the towers' unimodal embeddings (the dual encoder) score the
    whole gallery; the top `rerank_k` candidates of each query then go
    through the graph with the query, and ITC logit + ITM log-odds orders
    them.

    Args:
        backbone: `SimMIMBackbone`.
        itc_weight, itm_weight: float >= 0. Loss weights.
        initial_temperature: float. ITC's starting temperature.

    Example:
    ```python
    retriever = SimMIMRetriever(backbone)
    retriever.compile(optimizer=keras.optimizers.AdamW(1e-4))
    retriever.fit(pair_batches, epochs=10)
    encoded = retriever.encode(test_batches)
    scores = retriever.similarity(encoded, "text_to_image", rerank_k=10)
    recall_at_k(scores, np.arange(len(scores)))
    ```
    """

    def __init__(
        self,
        backbone: SimMIMBackbone,
        *,
        itc_weight: float = 1.0,
        itm_weight: float = 1.0,
        initial_temperature: float = 0.07,
        **kwargs,
    ):
        super().__init__(**kwargs)
        # === Layers ===
        self.backbone = backbone
        self.objectives = SimMIMPretrainer(
            backbone,
            mim_weight=0.0,
            mlm_weight=0.0,
            itc_weight=itc_weight,
            itm_weight=itm_weight,
            initial_temperature=initial_temperature,
            name="objectives",
        )
        # === Config ===
        self.itc_weight = itc_weight
        self.itm_weight = itm_weight
        self.initial_temperature = initial_temperature
        self._encode_fn = None
        self._score_fn = None

    def build(self, input_shape=None):
        self.objectives.build(input_shape)

    def call(self, inputs, training=False) -> dict:
        return self.objectives(inputs, training=training)

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        return self.objectives.compute_loss(x, y, y_pred, sample_weight, training)

    @property
    def metrics(self):
        return self.objectives.metrics

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            backbone=keras.layers.serialize(self.backbone),
            itc_weight=self.itc_weight,
            itm_weight=self.itm_weight,
            initial_temperature=self.initial_temperature,
        )
        return config

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        config["backbone"] = keras.layers.deserialize(config["backbone"])
        return cls(**config)

    def encode(self, batches: tf.data.Dataset) -> dict[str, np.ndarray]:
        """Encode a dataset of model inputs (or `(inputs, labels)`) once.

        Returns numpy arrays: the towers' `image_cell_states`,
        `text_token_states` and `padding_mask`, and the L2-normalised
        `image_unimodal_embedding` and `text_unimodal_embedding`.
        """
        if self._encode_fn is None:
            self._encode_fn = tf.function(self._encode_batch, reduce_retracing=True)
        parts: dict[str, list] = {}
        progress = keras.utils.Progbar(batches.cardinality().numpy(), unit_name="batch")
        for batch in batches:
            inputs = batch[0] if isinstance(batch, tuple) else batch
            for key, value in self._encode_fn(inputs).items():
                parts.setdefault(key, []).append(value.numpy())
            progress.add(1)
        width = max(part.shape[1] for part in parts["padding_mask"])
        for key in ("text_token_states", "padding_mask"):  # batches differ in length
            parts[key] = [_pad_to(part, width) for part in parts[key]]
        return {key: np.concatenate(values) for key, values in parts.items()}

    def _encode_batch(self, inputs):
        image = self.backbone.image_tower(inputs["images"])
        text = self.backbone.text_tower(
            {"token_ids": inputs["token_ids"], "padding_mask": inputs["padding_mask"]}
        )
        return {
            "image_cell_states": image["image_cell_states"],
            "text_token_states": text["text_token_states"],
            "padding_mask": tf.cast(inputs["padding_mask"], tf.bool),
            "image_unimodal_embedding": tf.math.l2_normalize(
                image["image_unimodal_embedding"], -1
            ),
            "text_unimodal_embedding": tf.math.l2_normalize(
                text["text_unimodal_embedding"], -1
            ),
        }

    def similarity(
        self,
        encoded: dict[str, np.ndarray],
        direction: str = "text_to_image",
        *,
        rerank_k: int = 0,
        batch_size: int = 256,
    ) -> np.ndarray:
        """Score every query against the whole gallery, `[queries, gallery]`.

        Queries and gallery are the texts and images of `encoded` (pair i is
        text i with image i). With `rerank_k > 0` each query's top `rerank_k`
        dual-encoder candidates are re-scored and placed first: ITC logit
        (cosine / T) plus the graph's ITM log-odds; the rest keep their
        dual-encoder order.

        Args:
            encoded: output of `encode`.
            direction: `"text_to_image"` or `"image_to_text"`.
            rerank_k: int. Candidates re-ranked by the graph per query.
            batch_size: int. Pairs per graph pass while re-ranking.
        """
        if direction not in ("text_to_image", "image_to_text"):
            raise ValueError(
                f"Direction {direction!r} must be 'text_to_image' or 'image_to_text'."
            )
        # float64: ITM scores lifted by RERANK_OFFSET must keep their order.
        texts = encoded["text_unimodal_embedding"].astype(np.float64)
        images = encoded["image_unimodal_embedding"].astype(np.float64)
        if direction == "text_to_image":
            scores = texts @ images.T
        else:
            scores = images @ texts.T
        if rerank_k <= 0:
            return scores
        rerank_k = min(rerank_k, scores.shape[1])
        candidates = np.argsort(-scores, axis=1)[:, :rerank_k]  # [Q, k]
        queries = np.repeat(np.arange(scores.shape[0]), rerank_k)
        if direction == "text_to_image":
            text_index, image_index = queries, candidates.ravel()
        else:
            image_index, text_index = queries, candidates.ravel()
        itm = self.matching_scores_for(encoded, image_index, text_index, batch_size)
        # ITC logit + ITM log-odds: the match head refines the dual score, it
        # does not replace it (a product of the two models' odds).
        itc = float(
            self.objectives.contrastive.inverse_temperature()
        ) * np.take_along_axis(scores, candidates, axis=1)
        reranked = scores.copy()
        np.put_along_axis(
            reranked,
            candidates,
            RERANK_OFFSET + itc + itm.astype(np.float64).reshape(candidates.shape),
            axis=1,
        )
        return reranked

    def matching_scores_for(
        self,
        encoded: dict[str, np.ndarray],
        image_index: np.ndarray,
        text_index: np.ndarray,
        batch_size: int = 256,
    ) -> np.ndarray:
        """ITM scores of the pairs (image `image_index[i]`, text `text_index[i]`)."""
        if self._score_fn is None:
            self._score_fn = tf.function(
                self.objectives.matching_scores, reduce_retracing=True
            )
        scores = []
        for start in range(0, len(image_index), batch_size):
            images = image_index[start : start + batch_size]
            texts = text_index[start : start + batch_size]
            scores.append(
                self._score_fn(
                    encoded["image_cell_states"][images],
                    encoded["text_token_states"][texts],
                    encoded["padding_mask"][texts],
                ).numpy()
            )
        return np.concatenate(scores)


def _pad_to(array: np.ndarray, width: int) -> np.ndarray:
    padding = [(0, 0), (0, width - array.shape[1])] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, padding)
