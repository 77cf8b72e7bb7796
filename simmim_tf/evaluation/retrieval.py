"""Retrieval metrics from rankings, vectorised."""

from __future__ import annotations

import numpy as np


def recall_at_k(
    rankings: np.ndarray, relevant: np.ndarray, ks: tuple[int, ...] = (1, 5, 10)
) -> dict[str, float]:
    """Recall@k: the share of queries whose relevant item ranks in the top k.

    Args:
        rankings: `[num_queries, depth]` int gallery indices, best first, with
            `depth >= max(ks)` or the whole gallery (e.g. `search`'s
            `indices`).
        relevant: `[num_queries]` int, the gallery index that is correct.
        ks: the cut-offs.

    Example:
    ```python
    recall_at_k(np.array([[0, 1], [0, 1]]), np.array([0, 1]), ks=(1, 2))
    # {"R@1": 0.5, "R@2": 1.0}
    ```
    """
    rankings = np.asarray(rankings)
    relevant = np.asarray(relevant)
    if rankings.ndim != 2 or relevant.shape != (rankings.shape[0],):
        raise ValueError(
            f"Expected rankings [queries, depth] and relevant [queries]; got "
            f"{rankings.shape} and {relevant.shape}."
        )
    hits = rankings == relevant[:, None]  # [Q, depth], at most one True per row
    return {f"R@{k}": float(hits[:, :k].any(axis=1).mean()) for k in ks}
