"""Benchmark: ScaNN against faiss on the galleries of tools/bench_search.py.

    python3 -m venv /tmp/scann && /tmp/scann/bin/pip install numpy faiss-cpu scann
    /tmp/scann/bin/python tools/bench_scann.py [--sizes 10000 100000 1000000] \
        [--out runs/bench_scann.json]

A virtualenv of its own: `import scann` loads ScaNN's TensorFlow ops, and
scann 1.4.2's are built for TensorFlow 2.20, so they fail to load beside this
package's TensorFlow 2.21 (an undefined absl symbol). The same synthetic
clustered embeddings as `bench_search.py` (same seed, width 128, 1 000
queries, top 10), in one process:

* `faiss flat`: exact, the reference of recall@10 (and the bridge to
  bench_search.py's table);
* `faiss hnsw`: HNSW, 32 links, efSearch 256 (what `GalleryIndex` uses);
* `scann`: ScaNN's recommended set-up: a tree of about sqrt(N) leaves,
  searching 5 % of them, anisotropic 4-bit product quantisation, exact
  re-ranking of the best 100 (`--reorder`).

Each row: queries per second, build seconds, bytes per item (the serialised
index) and recall@10. Prints a table and writes JSON.
"""

import argparse
import json
import math
import os
import pathlib
import tempfile

import faiss
import numpy as np
import scann
from bench_search import (
    CENTRES,
    QUERIES,
    WIDTH,
    K,
    clustered_unit_vectors,
    recall_at_k,
    timed,
)


def folder_bytes(folder: str) -> int:
    return sum(path.stat().st_size for path in pathlib.Path(folder).rglob("*"))


def scann_searcher(items: np.ndarray, reorder: int):
    leaves = max(16, int(math.sqrt(len(items))))
    return (
        scann.scann_ops_pybind.builder(items, K, "dot_product")
        .tree(
            num_leaves=leaves,
            num_leaves_to_search=max(1, leaves // 20),
            training_sample_size=min(len(items), 250_000),
        )
        .score_ah(2, anisotropic_quantization_threshold=0.2)
        .reorder(reorder)
        .build()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000]
    )
    parser.add_argument("--reorder", type=int, default=100)
    parser.add_argument("--out", default="runs/bench_scann.json")
    args = parser.parse_args()

    rng = np.random.default_rng(0)  # the galleries of bench_search.py
    centres = clustered_unit_vectors(CENTRES, rng.normal(size=(CENTRES, WIDTH)), rng)
    queries = clustered_unit_vectors(QUERIES, centres, rng)
    records = []
    for size in args.sizes:
        items = clustered_unit_vectors(size, centres, rng)
        flat = faiss.IndexFlatIP(WIDTH)
        flat.add(items)
        seconds, (_, exact) = timed(lambda flat=flat: flat.search(queries, K))
        rows = {"faiss flat": (seconds, 0.0, exact, items.nbytes)}
        hnsw = faiss.IndexHNSWFlat(WIDTH, 32, faiss.METRIC_INNER_PRODUCT)
        build, _ = timed(lambda hnsw=hnsw, items=items: hnsw.add(items))
        hnsw.hnsw.efSearch = 256
        seconds, (_, found) = timed(lambda hnsw=hnsw: hnsw.search(queries, K))
        rows["faiss hnsw"] = (seconds, build, found, faiss.serialize_index(hnsw).nbytes)
        build, searcher = timed(lambda items=items: scann_searcher(items, args.reorder))
        searcher.search_batched(queries[:8])  # warm up
        seconds, (found, _) = timed(lambda s=searcher: s.search_batched(queries))
        with tempfile.TemporaryDirectory() as folder:
            searcher.serialize(folder)
            memory = folder_bytes(folder)
        rows["scann"] = (seconds, build, found, memory)
        for method, (seconds, build, found, memory) in rows.items():
            records.append(
                {
                    "gallery": size,
                    "method": method,
                    "queries/s": round(QUERIES / seconds),
                    "build s": round(build, 2),
                    "bytes/item": round(memory / size),
                    "recall@10": round(recall_at_k(found, exact), 3),
                }
            )
            print(records[-1], flush=True)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.with_name(f".{out.name}.tmp")  # whole or not at all
    temp.write_text(json.dumps(records, indent=1))
    os.replace(temp, out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
