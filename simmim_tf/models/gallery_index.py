"""`GalleryIndex`: a gallery encoded once, searched many times, saved and loaded."""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import os
import pathlib
import zipfile

import numpy as np
import tensorflow as tf

from simmim_tf.atomic import atomic_write_bytes
from simmim_tf.models.inputs import MODALITIES

# Stored in the .npz beside the arrays; a file of another layout is refused.
FORMAT_VERSION = 1
# Queries scored at once by `top_k_by_similarity`: memory is this many x N scores.
QUERY_BLOCK = 1024
# `method="auto"` searches galleries this large approximately, when faiss is
# installed: exact search serves 2 475 queries/s at 100 k items but 175 at
# 1 M, HNSW 8 000 (docs/performance.md).
APPROXIMATE_FROM = 100_000
SEARCH_METHODS = ("auto", "exact", "hnsw")
# HNSW (faiss): links per node, and the search breadth for k results:
# max(HNSW_EF_SEARCH, 4 k) (recall@10 at 1 M items in docs/performance.md).
HNSW_LINKS = 32
HNSW_EF_SEARCH = 256


def top_k_by_similarity(
    queries: np.ndarray, items: np.ndarray, k: int, block: int = QUERY_BLOCK
) -> tuple[np.ndarray, np.ndarray]:
    """Exact search: each query's `k` items of largest dot product, best first.

    With L2-normalised embeddings the dot product is the cosine. Queries are
    scored `block` at a time in float32 (one matmul and one `tf.math.top_k`
    per block), so memory grows with `block x len(items)`, never with
    `len(queries) x len(items)`, and no full sort is done. Equal scores keep
    the lower item index first.

    Args:
        queries: float `[Q, d]`.
        items: float `[N, d]`.
        k: int. Results per query; at most N are returned.
        block: int. Queries per matmul.

    Returns:
        `scores` float32 `[Q, min(k, N)]` and `indices` int `[Q, min(k, N)]`.

    Example:
    ```python
    scores, indices = top_k_by_similarity(text_embeddings, image_embeddings, 10)
    ```
    """
    if k <= 0 or block <= 0:
        raise ValueError(f"k={k} and block={block} must be > 0.")
    items = tf.constant(items, tf.float32)
    depth = min(k, int(items.shape[0]))
    scores = np.zeros((len(queries), depth), np.float32)
    indices = np.zeros((len(queries), depth), np.int64)
    for start in range(0, len(queries), block):
        chunk = tf.constant(queries[start : start + block], tf.float32)
        top = tf.math.top_k(tf.matmul(chunk, items, transpose_b=True), depth)
        scores[start : start + block] = top.values.numpy()
        indices[start : start + block] = top.indices.numpy()
    return scores, indices


def search_method(method: str, size: int) -> str:
    """`"exact"` or `"hnsw"`: what `method` means for a gallery of `size` items.

    Raises:
        ValueError: an unknown method.
        ImportError: `"hnsw"` without faiss installed.
    """
    if method not in SEARCH_METHODS:
        raise ValueError(f"Search method {method!r} must be one of {SEARCH_METHODS}.")
    if method == "auto":
        if size < APPROXIMATE_FROM or importlib.util.find_spec("faiss") is None:
            return "exact"
        return "hnsw"
    if method == "hnsw" and importlib.util.find_spec("faiss") is None:
        raise ImportError(
            "Approximate search needs faiss: pip install 'simmim_tf[faiss]' "
            "(or search with method='exact')."
        )
    return method


@dataclasses.dataclass(frozen=True)
class GalleryIndex:
    """What `SimMIMRetriever.search` needs of a gallery, for either modality.

    Attributes:
        modality: `"image"` or `"text"`: what the gallery holds; queries are
            of the other modality.
        embeddings: float32 `[N, d]`. The L2-normalised unimodal embeddings
            (the dual encoder's side of the search).
        states: float32 `[N, nodes, d]`. The tower states the graph re-ranks
            with: `image_cell_states`, or `text_token_states`.
        padding_mask: bool `[N, nodes]`. Real tokens (all true for images).
        ids: str `[N]`. Stable item ids (e.g. hexcodes).
        names: str `[N]`. What a person reads (e.g. the emoji's name).

    Example:
    ```python
    index = retriever.index(gallery_batches, ids=hexcodes, names=labels)
    index.save("runs/ret/index_google.npz")
    index = GalleryIndex.load("runs/ret/index_google.npz")
    ```
    """

    modality: str
    embeddings: np.ndarray
    states: np.ndarray
    padding_mask: np.ndarray
    ids: np.ndarray
    names: np.ndarray

    def __post_init__(self):
        if self.modality not in MODALITIES:
            raise ValueError(f"Modality {self.modality!r} must be one of {MODALITIES}.")
        size = len(self.embeddings)
        for field in ("states", "padding_mask", "ids", "names"):
            if len(getattr(self, field)) != size:
                raise ValueError(
                    f"GalleryIndex: {field} has {len(getattr(self, field))} items, "
                    f"embeddings {size}."
                )
        if self.states.shape[:2] != self.padding_mask.shape:
            raise ValueError(
                f"GalleryIndex: states {self.states.shape} and padding mask "
                f"{self.padding_mask.shape} disagree."
            )

    def __len__(self) -> int:
        return len(self.embeddings)

    def nearest(
        self, queries: np.ndarray, k: int, method: str = "auto"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each query's `k` items of largest cosine, best first.

        `method`: `"exact"` (`top_k_by_similarity`), `"hnsw"` (faiss's HNSW
        graph over the embeddings, built on first use and kept with this
        index; approximate) or `"auto"`: HNSW from `APPROXIMATE_FROM` items
        when faiss is installed, else exact.

        Args:
            queries: float `[Q, d]`, L2-normalised.
            k: int. Results per query (at most `len(self)`).
            method: str. One of `SEARCH_METHODS`.

        Returns:
            `scores` float32 and `indices` int64, `[Q, min(k, N)]`.
        """
        if search_method(method, len(self)) == "exact":
            return top_k_by_similarity(queries, self.embeddings, k)
        if k <= 0:
            raise ValueError(f"k={k} must be > 0.")
        depth = min(k, len(self))
        index = self._hnsw()
        index.hnsw.efSearch = max(HNSW_EF_SEARCH, 4 * depth)
        scores, indices = index.search(np.ascontiguousarray(queries, np.float32), depth)
        return scores, indices.astype(np.int64)

    def _hnsw(self):
        """The faiss HNSW index of the embeddings, built once per `GalleryIndex`."""
        if "_hnsw_index" not in self.__dict__:
            import faiss

            index = faiss.IndexHNSWFlat(
                self.embeddings.shape[1], HNSW_LINKS, faiss.METRIC_INNER_PRODUCT
            )
            index.add(np.ascontiguousarray(self.embeddings, np.float32))
            # A frozen dataclass: the cache is not a field (not saved, compared).
            object.__setattr__(self, "_hnsw_index", index)
        return self.__dict__["_hnsw_index"]

    def save(self, path: str | os.PathLike) -> pathlib.Path:
        """Write one `.npz` file, atomically."""
        buffer = io.BytesIO()
        np.savez(
            buffer,
            format_version=FORMAT_VERSION,
            modality=self.modality,
            embeddings=self.embeddings,
            states=self.states,
            padding_mask=self.padding_mask,
            ids=self.ids.astype(str),
            names=self.names.astype(str),
        )
        return atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike) -> GalleryIndex:
        """Read a file `save` wrote; a missing or foreign file is a clear error."""
        path = pathlib.Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"No gallery index at {path}.")
        if not zipfile.is_zipfile(path):
            raise ValueError(f"{path} is not a gallery index: not an .npz file.")
        try:
            with np.load(path, allow_pickle=False) as stored:
                version = int(stored["format_version"])
                if version != FORMAT_VERSION:
                    raise ValueError(
                        f"{path} is a gallery index of format {version}; this "
                        f"simmim_tf reads format {FORMAT_VERSION}: index it again."
                    )
                return cls(
                    modality=str(stored["modality"]),
                    embeddings=stored["embeddings"],
                    states=stored["states"],
                    padding_mask=stored["padding_mask"],
                    ids=stored["ids"],
                    names=stored["names"],
                )
        except (KeyError, OSError, EOFError) as error:
            raise ValueError(f"{path} is not a gallery index: {error}") from None
