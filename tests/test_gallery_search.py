"""`GalleryIndex.nearest`: exact search, faiss HNSW, and the choice between them."""

import dataclasses
import importlib.util

import numpy as np
import pytest

from simmim_tf.models import gallery_index
from simmim_tf.models.gallery_index import (
    GalleryIndex,
    search_method,
    top_k_by_similarity,
)


def _clustered_gallery(size: int, width: int = 32, seed: int = 0) -> GalleryIndex:
    """Unit vectors around 200 centres (neighbours mean something), with
    queries drawn the same way."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(size=(200, width))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    noise = rng.normal(scale=0.6 / np.sqrt(width), size=(size, width))
    items = centres[rng.integers(0, 200, size)] + noise
    items = (items / np.linalg.norm(items, axis=1, keepdims=True)).astype(np.float32)
    return GalleryIndex(
        modality="image",
        embeddings=items,
        states=np.zeros((size, 1, 1), np.float32),
        padding_mask=np.ones((size, 1), bool),
        ids=np.arange(size).astype(str),
        names=np.arange(size).astype(str),
    )


def test_hnsw_finds_nearly_the_exact_neighbours_with_their_true_scores():
    pytest.importorskip("faiss")
    gallery = _clustered_gallery(5000)
    queries = _clustered_gallery(300, seed=1).embeddings
    exact_scores, exact = gallery.nearest(queries, 10, method="exact")
    scores, found = gallery.nearest(queries, 10, method="hnsw")
    hits = [len(set(f) & set(e)) for f, e in zip(found, exact, strict=True)]
    assert np.sum(hits) / exact.size > 0.95
    # Each score is the cosine of the item it names, best first.
    cosines = np.einsum("qd,qkd->qk", queries, gallery.embeddings[found])
    np.testing.assert_allclose(scores, cosines, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    assert found.dtype == np.int64 and exact_scores.shape == scores.shape
    assert "_hnsw_index" in gallery.__dict__  # built once, kept


def test_auto_is_exact_below_the_threshold_and_hnsw_above(monkeypatch):
    gallery = _clustered_gallery(400)
    queries = _clustered_gallery(20, seed=2).embeddings
    scores, indices = gallery.nearest(queries, 5)
    np.testing.assert_array_equal(
        indices, top_k_by_similarity(queries, gallery.embeddings, 5)[1]
    )
    assert "_hnsw_index" not in gallery.__dict__
    monkeypatch.setattr(gallery_index, "APPROXIMATE_FROM", 100)
    expected = "hnsw" if importlib.util.find_spec("faiss") else "exact"
    assert search_method("auto", len(gallery)) == expected


def test_without_faiss_auto_falls_back_and_hnsw_says_how_to_install(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "faiss" else real_find_spec(name, *args),
    )
    assert search_method("auto", 10**7) == "exact"
    with pytest.raises(ImportError, match=r"pip install 'simmim_tf\[faiss\]'"):
        search_method("hnsw", 10)
    with pytest.raises(ValueError, match="must be one of"):
        search_method("annoy", 10)


def test_the_retriever_searches_with_the_method_asked_for():
    pytest.importorskip("faiss")
    from simmim_tf.models.retriever import SimMIMRetriever
    from tests.conftest import tiny_backbone

    retriever = SimMIMRetriever(tiny_backbone())
    gallery = _clustered_gallery(2000)
    queries = dataclasses.replace(_clustered_gallery(50, seed=3), modality="text")
    exact = retriever.search(queries, gallery, k=5, method="exact")
    approximate = retriever.search(queries, gallery, k=5, method="hnsw")
    assert "_hnsw_index" in gallery.__dict__
    assert np.mean(exact["indices"] == approximate["indices"]) > 0.95
    np.testing.assert_allclose(
        exact["scores"][:, 0], approximate["scores"][:, 0], rtol=1e-5
    )
