"""`GalleryIndex`: a gallery encoded once, searched many times, saved and loaded."""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import mmap
import os
import pathlib
import zipfile

import numpy as np
import tensorflow as tf

from simmim_tf.atomic import atomic_path, atomic_write_bytes
from simmim_tf.models.inputs import MODALITIES

# Stored in the .npz beside the arrays; a file of another layout is refused.
# 2: the re-ranking states moved to a raw file beside it, memory-mapped.
FORMAT_VERSION = 2
STATES_DTYPE = np.float32
# Gallery items whose states are written to disk at once.
STATES_CHUNK = 4096
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
            with: `image_cell_states`, or `text_token_states`. 8 KB per image
            at the default sizes, 16 times the embedding: an index that was
            saved (or built with `retriever.index(…, path=…)`) maps them from disk
            (`np.memmap`), and re-ranking reads only the candidates' rows.
        padding_mask: bool `[N, nodes]`. Real tokens (all true for images).
        ids: str `[N]`. Stable item ids (e.g. hexcodes).
        names: str `[N]`. What a person reads (e.g. the emoji's name).

    Example:
    ```python
    index = retriever.index(gallery_batches, ids=hexcodes, names=labels)
    index.save("runs/ret/index_google.npz")
    index = GalleryIndex.load("runs/ret/index_google.npz")  # states on disk
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
        """Write the index: `path` (an `.npz`) and its states beside it
        (`states_path(path)`, raw float32), each atomically, states first.

        States already mapped from that file are not written again.
        """
        path = pathlib.Path(path)
        if getattr(self.states, "filename", None) != os.path.abspath(states_path(path)):
            with StatesWriter(path) as writer:
                for start in range(0, len(self.states), STATES_CHUNK):
                    writer.write(self.states[start : start + STATES_CHUNK])
        buffer = io.BytesIO()
        np.savez(
            buffer,
            format_version=FORMAT_VERSION,
            modality=self.modality,
            embeddings=self.embeddings,
            states_shape=np.asarray(self.states.shape, np.int64),
            padding_mask=self.padding_mask,
            ids=self.ids.astype(str),
            names=self.names.astype(str),
        )
        return atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike) -> GalleryIndex:
        """Read an index `save` wrote, its states memory-mapped (read-only);
        a missing, foreign or incomplete file is a clear error."""
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
                fields = {
                    key: stored[key]
                    for key in ("embeddings", "padding_mask", "ids", "names")
                }
                modality = str(stored["modality"])
                shape = tuple(int(size) for size in stored["states_shape"])
        except (KeyError, OSError, EOFError) as error:
            raise ValueError(f"{path} is not a gallery index: {error}") from None
        return cls(
            modality=modality, states=map_states(states_path(path), shape), **fields
        )


def pad_nodes(array: np.ndarray, width: int) -> np.ndarray:
    """`array` `[N, nodes, ...]` zero-padded along its nodes to `width`
    (text batches of one gallery can differ in length)."""
    padding = [(0, 0), (0, width - array.shape[1])] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, padding)


def states_path(path: str | os.PathLike) -> pathlib.Path:
    """Where the states of the index saved at `path` lie: `<stem>.states`."""
    path = pathlib.Path(path)
    return path.with_name(f"{path.stem}.states")


class StatesWriter:
    """Writes the states file of the index saved at `index_path`, in parts,
    atomically: the file appears, whole, when the `with` block succeeds.

    Parts of `[n, nodes, d]` states are appended as they come. A part with
    fewer nodes (a batch of shorter texts) is zero-padded to the first part's
    width; more is an error (the width of a row in the file is fixed).

    Example:
    ```python
    with StatesWriter("runs/ret/index_google.npz") as writer:
        for batch_states in parts:
            writer.write(batch_states)
    states = writer.mapped()
    ```
    """

    def __init__(self, index_path: str | os.PathLike):
        self.path = states_path(index_path)
        self.rows = 0
        self.row_shape: tuple[int, ...] | None = None

    def __enter__(self) -> StatesWriter:
        self._atomic = atomic_path(self.path)
        self._stream = open(self._atomic.__enter__(), "wb")
        return self

    def write(self, states: np.ndarray) -> None:
        if self.row_shape is None:
            self.row_shape = tuple(states.shape[1:])
        nodes, width = self.row_shape[0], states.shape[1]
        if width > nodes or states.shape[2:] != self.row_shape[1:]:
            raise ValueError(
                f"States of shape {states.shape[1:]} follow states of shape "
                f"{self.row_shape}: the items of one gallery share one shape."
            )
        self._stream.write(pad_nodes(states, nodes).astype(STATES_DTYPE).tobytes())
        self.rows += len(states)

    def __exit__(self, *error) -> bool:
        self._stream.close()
        return self._atomic.__exit__(*error)

    def mapped(self) -> np.ndarray:
        """The states written, mapped read-only from the file."""
        if self.row_shape is None:
            raise ValueError("No states were written: the gallery is empty.")
        return map_states(self.path, (self.rows, *self.row_shape))


def map_states(path: pathlib.Path, shape: tuple[int, ...]) -> np.ndarray:
    """The raw float32 states file at `path`, mapped read-only as `shape`."""
    if not path.is_file():
        raise FileNotFoundError(f"The gallery index's states file {path} is missing.")
    expected = int(np.prod(shape)) * np.dtype(STATES_DTYPE).itemsize
    if path.stat().st_size != expected:
        raise ValueError(
            f"The states file {path} holds {path.stat().st_size} bytes where "
            f"{shape} float32 states need {expected}: index the gallery again."
        )
    if expected == 0:  # mmap cannot map an empty file
        return np.zeros(shape, STATES_DTYPE)
    states = np.memmap(path, STATES_DTYPE, mode="r", shape=shape)
    # Re-ranking reads scattered rows: no read-ahead of their neighbours,
    # which would page most of the file in (docs/performance.md).
    states._mmap.madvise(mmap.MADV_RANDOM)
    return states
