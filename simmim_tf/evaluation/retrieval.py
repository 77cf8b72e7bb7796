"""Retrieval metrics over a whole gallery, vectorised."""

from __future__ import annotations

import numpy as np


def recall_at_k(
    similarity: np.ndarray, relevant: np.ndarray, ks: tuple[int, ...] = (1, 5, 10)
) -> dict[str, float]:
    """Recall@k: the share of queries whose relevant item ranks in the top k.

    The rank of the relevant item is the number of gallery items scored
    strictly higher, so ties count in the query's favour (as in CLIP's
    evaluation code).

    Args:
        similarity: `[num_queries, gallery_size]` scores, higher is closer.
        relevant: `[num_queries]` int, the gallery index that is correct.
        ks: the cut-offs.

    Example:
    ```python
    recall_at_k(np.array([[0.9, 0.1], [0.8, 0.3]]), np.array([0, 1]), ks=(1, 2))
    # {"R@1": 0.5, "R@2": 1.0}
    ```
    """
    similarity = np.asarray(similarity)
    relevant = np.asarray(relevant)
    if similarity.ndim != 2 or relevant.shape != (similarity.shape[0],):
        raise ValueError(
            f"Expected similarity [queries, gallery] and relevant [queries]; got "
            f"{similarity.shape} and {relevant.shape}."
        )
    correct = np.take_along_axis(similarity, relevant[:, None], axis=1)
    ranks = (similarity > correct).sum(axis=1)
    return {f"R@{k}": float((ranks < k).mean()) for k in ks}
