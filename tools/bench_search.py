"""Benchmark: searching a gallery of 10 k, 100 k and 1 M embeddings.

    python tools/bench_search.py [--sizes 10000 100000 1000000] \
        [--out runs/bench_search.json]

Synthetic, clustered embeddings (width 128, the default `hidden_dim`; 1 000
queries): unit vectors drawn around 2 000 random centres, so that nearest
neighbours mean something, as they do for trained embeddings. Methods, each
timed in the same process:

* `dense argsort`: the retriever's search before `top_k_by_similarity`, a
  full `[Q, N]` score matrix and a full sort (skipped where that matrix
  would pass `--dense-limit` bytes);
* `exact top_k`: `simmim_tf.models.gallery_index.top_k_by_similarity`;
* with `faiss-cpu` installed (`pip install faiss-cpu`): `faiss flat` (exact)
  and `faiss hnsw` (approximate: HNSW, 32 links, efSearch `--ef-search`).

Each row: queries per second, build seconds, bytes per gallery item, and
recall@10 against the exact top 10. Prints a table and writes JSON.
"""

import argparse
import json
import time

import numpy as np

WIDTH, QUERIES, CENTRES, K = 128, 1000, 2000, 10


def clustered_unit_vectors(count: int, centres: np.ndarray, rng) -> np.ndarray:
    """Unit vectors near randomly chosen `centres` (noise of norm ~0.6)."""
    picked = centres[rng.integers(0, len(centres), size=count)]
    noisy = picked + rng.normal(scale=0.6 / np.sqrt(WIDTH), size=picked.shape)
    return (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Share of the exact top-k that `found` holds, averaged over queries."""
    hits = [len(set(f) & set(e)) for f, e in zip(found, exact, strict=True)]
    return float(np.sum(hits) / exact.size)


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    # Here, not at the top: tools/bench_scann.py reuses this file's data in a
    # virtualenv without TensorFlow (ScaNN's wheel clashes with it).
    from simmim_tf.atomic import atomic_write_text
    from simmim_tf.evaluation.report import print_table

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000]
    )
    parser.add_argument("--ef-search", type=int, default=64)
    parser.add_argument("--dense-limit", type=float, default=2e9, help="bytes")
    parser.add_argument("--out", default="runs/bench_search.json")
    args = parser.parse_args()
    try:
        import faiss
    except ImportError:
        faiss = None
        print("faiss-cpu is not installed: its rows are left out")

    rng = np.random.default_rng(0)
    centres = clustered_unit_vectors(CENTRES, rng.normal(size=(CENTRES, WIDTH)), rng)
    queries = clustered_unit_vectors(QUERIES, centres, rng)
    rows, records = {}, []
    for size in args.sizes:
        items = clustered_unit_vectors(size, centres, rng)
        for method, (seconds, build, found, exact, memory) in bench_gallery(
            items, queries, faiss, args
        ).items():
            record = {
                "gallery": size,
                "method": method,
                "queries/s": round(QUERIES / seconds),
                "build s": round(build, 2),
                "bytes/item": round(memory / size),
                "recall@10": recall_at_k(found, exact),
            }
            records.append(record)
            rows[f"{size:,} {method}"] = {
                k: v for k, v in record.items() if k not in ("gallery", "method")
            }
    print_table(
        rows,
        f"search, {QUERIES} queries, width {WIDTH}, top {K}, one process",
        name_column="gallery, method",
    )
    atomic_write_text(args.out, json.dumps(records, indent=1))
    print(f"wrote {args.out}")


def bench_gallery(items: np.ndarray, queries: np.ndarray, faiss, args) -> dict:
    """Method -> (search seconds, build seconds, found, exact, index bytes)."""
    from simmim_tf.models.gallery_index import top_k_by_similarity

    top_k_by_similarity(queries[:8], items, K)  # warm up TensorFlow
    seconds, (_, exact) = timed(lambda: top_k_by_similarity(queries, items, K))
    results = {"exact top_k": (seconds, 0.0, exact, exact, items.nbytes)}
    if len(queries) * len(items) * 12 <= args.dense_limit:  # float32 + int64 order

        def dense():
            scores = queries @ items.T
            return np.argsort(-scores, axis=1, kind="stable")[:, :K]

        seconds, found = timed(dense)
        results["dense argsort"] = (seconds, 0.0, found, exact, items.nbytes)
    if faiss is None:
        return results
    build, flat = timed(lambda: _faiss_index(faiss.IndexFlatIP(WIDTH), items))
    seconds, (_, found) = timed(lambda: flat.search(queries, K))
    results["faiss flat"] = (seconds, build, found, exact, items.nbytes)
    hnsw = faiss.IndexHNSWFlat(WIDTH, 32, faiss.METRIC_INNER_PRODUCT)
    build, _ = timed(lambda: _faiss_index(hnsw, items))
    hnsw.hnsw.efSearch = args.ef_search
    seconds, (_, found) = timed(lambda: hnsw.search(queries, K))
    memory = faiss.serialize_index(hnsw).nbytes
    results["faiss hnsw"] = (seconds, build, found, exact, memory)
    return results


def _faiss_index(index, items: np.ndarray):
    index.add(items)
    return index


if __name__ == "__main__":
    main()
