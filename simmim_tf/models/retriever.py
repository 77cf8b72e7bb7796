"""`SimMIMRetriever`: dual-encoder retrieval re-ranked by the graph's ITM score."""

from __future__ import annotations

import contextlib
import os

import keras
import numpy as np
import tensorflow as tf

from simmim_tf.models.backbone import SimMIMBackbone
from simmim_tf.models.gallery_index import GalleryIndex, StatesWriter, pad_nodes
from simmim_tf.models.inputs import MODALITIES, RefusesEmptyPredict
from simmim_tf.models.pretrainer import SimMIMPretrainer


@keras.saving.register_keras_serializable(package="simmim_tf")
class SimMIMRetriever(RefusesEmptyPredict, keras.Model):
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
        itm_stop_gradient: bool. ITM trains the graph and its head only (see
            `SimMIMPretrainer`).
        initial_temperature: float. ITC's starting temperature.

    Example:
    ```python
    retriever = SimMIMRetriever(backbone)
    retriever.compile(optimizer=keras.optimizers.AdamW(1e-4))
    retriever.fit(pair_batches, epochs=10)
    images = retriever.index(test_batches, "image", ids=hexcodes, names=labels)
    texts = retriever.index(test_batches, "text")
    found = retriever.search(texts, images, k=10, rerank_k=16)
    recall_at_k(found["indices"], np.arange(len(texts)))
    ```
    """

    def __init__(
        self,
        backbone: SimMIMBackbone,
        *,
        itc_weight: float = 1.0,
        itm_weight: float = 1.0,
        initial_temperature: float = 0.07,
        itm_stop_gradient: bool = False,
        **kwargs,
    ):
        kwargs.setdefault("dtype", backbone.dtype_policy)
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
            itm_stop_gradient=itm_stop_gradient,
            dtype=self.dtype_policy,
            name="objectives",
        )
        # === Config ===
        self.itc_weight = itc_weight
        self.itm_weight = itm_weight
        self.initial_temperature = initial_temperature
        self.itm_stop_gradient = itm_stop_gradient
        self._encode_fns = {}
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
            itm_stop_gradient=self.itm_stop_gradient,
        )
        return config

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        config["backbone"] = keras.layers.deserialize(config["backbone"])
        return cls(**config)

    def index(
        self,
        batches: tf.data.Dataset,
        modality: str = "image",
        *,
        ids=None,
        names=None,
        path: str | os.PathLike | None = None,
    ) -> GalleryIndex:
        """Encode the `modality` side of batched model inputs once.

        Args:
            batches: dataset of model-input dicts (or `(inputs, labels)`)
                holding `images`, or `token_ids` and `padding_mask`.
            modality: `"image"` or `"text"`.
            ids: sequence of str, one per item (default: "0", "1", ...).
            names: sequence of str, one per item (default: the ids).
            path: str or None. Save the index there (`GalleryIndex.save`).
                Its states then go to disk batch by batch as they are
                computed, so a gallery whose states pass memory (8 KB per
                image) is indexed in the memory of its embeddings (512 B);
                the index returned maps them from the file.

        Returns:
            A `GalleryIndex`: a gallery to search, or queries to search with.
        """
        if modality not in MODALITIES:
            raise ValueError(f"Modality {modality!r} must be one of {MODALITIES}.")
        if modality not in self._encode_fns:
            self._encode_fns[modality] = tf.function(
                getattr(self, f"_encode_{modality}s"), reduce_retracing=True
            )
        parts: dict[str, list] = {}
        progress = keras.utils.Progbar(batches.cardinality().numpy(), unit_name="batch")
        with contextlib.ExitStack() as stack:
            writer = None if path is None else stack.enter_context(StatesWriter(path))
            for batch in batches:
                inputs = batch[0] if isinstance(batch, tuple) else batch
                encoded = self._encode_fns[modality](inputs)
                encoded = {key: value.numpy() for key, value in encoded.items()}
                if writer is not None:
                    writer.write(encoded.pop("states"))
                for key, value in encoded.items():
                    parts.setdefault(key, []).append(value)
                progress.add(1)
        if writer is None:
            width = max(part.shape[1] for part in parts["padding_mask"])
        else:
            width = writer.row_shape[0] if writer.row_shape else 0
        for key in ("states", "padding_mask"):  # text batches differ in length
            if key in parts:
                parts[key] = [pad_nodes(part, width) for part in parts[key]]
        encoded = {key: np.concatenate(values) for key, values in parts.items()}
        if writer is not None:
            encoded["states"] = writer.mapped()
        ids = np.arange(len(encoded["embeddings"])).astype(str) if ids is None else ids
        index = GalleryIndex(
            modality=modality,
            ids=np.asarray(ids, dtype=str),
            names=np.asarray(ids if names is None else names, dtype=str),
            **encoded,
        )
        if path is not None:
            index.save(path)  # the states are there already
        return index

    def _encode_images(self, inputs) -> dict:
        image = self.backbone.image_tower(inputs["images"])
        states = image["image_cell_states"]
        return {
            "embeddings": tf.math.l2_normalize(image["image_unimodal_embedding"], -1),
            "states": states,
            "padding_mask": tf.ones(tf.shape(states)[:2], tf.bool),
        }

    def _encode_texts(self, inputs) -> dict:
        text = self.backbone.text_tower(
            {"token_ids": inputs["token_ids"], "padding_mask": inputs["padding_mask"]}
        )
        return {
            "embeddings": tf.math.l2_normalize(text["text_unimodal_embedding"], -1),
            "states": text["text_token_states"],
            "padding_mask": tf.cast(inputs["padding_mask"], tf.bool),
        }

    def search(
        self,
        queries: GalleryIndex,
        gallery: GalleryIndex,
        k: int = 10,
        *,
        rerank_k: int = 0,
        batch_size: int = 256,
        method: str = "auto",
    ) -> dict[str, np.ndarray]:
        """The top `k` gallery items of each query, best first.

        The dual encoder ranks the whole gallery by cosine
        (`GalleryIndex.nearest`: exact in float32 blocks, or faiss HNSW from
        100 k items when faiss is installed, see `method`); with
        `rerank_k > 0` each query's first `rerank_k` candidates are re-scored
        by ITC logit (cosine / T) plus the graph's ITM log-odds, computed on
        the query and the candidate together, and re-ordered; the rest keep
        the dual order below them.

        Args:
            queries: `GalleryIndex` of the other modality (from `index`).
            gallery: `GalleryIndex` to search.
            k: int. Results per query (at most the gallery size).
            rerank_k: int. Candidates re-ranked by the graph per query.
            batch_size: int. Pairs per graph pass while re-ranking.
            method: str. `"auto"`, `"exact"` or `"hnsw"` (`GalleryIndex.nearest`).

        Returns:
            A dict: `indices` int `[Q, k]` (rows of the gallery), `ids` and
            `names` str `[Q, k]`, `scores` float `[Q, k]` (ITC logit, plus the
            ITM log-odds where re-ranked) and `reranked` bool `[Q, k]`.
        """
        if queries.modality == gallery.modality:
            raise ValueError(
                f"Queries and gallery are both {gallery.modality}s; search one "
                "modality with the other."
            )
        if k <= 0 or rerank_k < 0:
            raise ValueError(f"k={k} must be > 0 and rerank_k={rerank_k} >= 0.")
        depth = min(max(k, rerank_k), len(gallery))
        cosine, top = gallery.nearest(queries.embeddings, depth, method)
        inverse_temperature = float(self.objectives.contrastive.inverse_temperature())
        scores = inverse_temperature * cosine
        reranked = np.zeros(top.shape, bool)
        rerank_k = min(rerank_k, depth)
        if rerank_k:
            itm = self._matching_scores(queries, gallery, top[:, :rerank_k], batch_size)
            scores, top = (
                tensor.numpy()
                for tensor in rerank_candidates(scores, top, itm.astype(scores.dtype))
            )
            reranked[:, :rerank_k] = True
        top, scores, reranked = top[:, :k], scores[:, :k], reranked[:, :k]
        return {
            "indices": top,
            "ids": gallery.ids[top],
            "names": gallery.names[top],
            "scores": scores,
            "reranked": reranked,
        }

    def _matching_scores(
        self,
        queries: GalleryIndex,
        gallery: GalleryIndex,
        candidates: np.ndarray,
        batch_size: int,
    ) -> np.ndarray:
        """ITM log-odds `[Q, r]` of each query with each of its candidates."""
        if self._score_fn is None:
            self._score_fn = tf.function(
                self.objectives.matching_scores, reduce_retracing=True
            )
        query_rows = np.repeat(np.arange(len(candidates)), candidates.shape[1])
        gallery_rows = candidates.ravel()
        if queries.modality == "image":
            images, texts = queries, gallery
            image_rows, text_rows = query_rows, gallery_rows
        else:
            images, texts = gallery, queries
            image_rows, text_rows = gallery_rows, query_rows
        scores = []
        for start in range(0, len(query_rows), batch_size):
            image_batch = image_rows[start : start + batch_size]
            text_batch = text_rows[start : start + batch_size]
            scores.append(
                self._score_fn(
                    images.states[image_batch],
                    texts.states[text_batch],
                    texts.padding_mask[text_batch],
                ).numpy()
            )
        return np.concatenate(scores).reshape(candidates.shape)


def rerank_candidates(
    scores: tf.Tensor, top: tf.Tensor, itm_log_odds: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Re-order each query's first `r` candidates by ITC logit + ITM log-odds.

    One piece of logic for `SimMIMRetriever.search` and the exported `search`
    signature. Ties keep the dual order (top_k puts the lower index first).

    Args:
        scores: `[Q, depth]` ITC logits of the candidates, best first.
        top: `[Q, depth]` their gallery rows.
        itm_log_odds: `[Q, r]`, `r <= depth`: the graph's ITM log-odds of
            each query with its first `r` candidates.

    Returns:
        `(scores, top)`, `[Q, depth]`: the first `r` re-scored and re-ordered,
        the rest unchanged below them.
    """
    rerank = tf.shape(itm_log_odds)[1]
    rescored = scores[:, :rerank] + itm_log_odds
    best, order = tf.math.top_k(rescored, k=rerank)
    reordered = tf.gather(top[:, :rerank], order, batch_dims=1)
    return (
        tf.concat([best, scores[:, rerank:]], axis=1),
        tf.concat([reordered, top[:, rerank:]], axis=1),
    )
