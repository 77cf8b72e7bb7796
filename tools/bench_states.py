"""Benchmark: re-ranking states on disk, for galleries past memory.

    python tools/bench_states.py [--sizes 100000 1000000] [--queries 1000] \
        [--out runs/bench_states.json]

A gallery's re-ranking states (`GalleryIndex.states`, `[N, 16, 128]` float32
at the default sizes: 8 KB per image) are written with `StatesWriter` and
mapped back by `GalleryIndex.load`. For each gallery size, in one process:

- write: seconds and MB/s to write the states file (synthetic values);
- resident: the process's resident memory (RSS) that loading the index adds,
  per gallery item, and what gathering the candidates then adds;
- gather: milliseconds per query to read its `rerank_k` (16) candidates'
  states, from a cold file (its pages dropped from the page cache with
  `posix_fadvise`) and warm;
- against that, the graph's re-ranking itself: milliseconds per query for the
  ITM scores of 16 candidates with the default-size retriever (untrained
  weights: the cost is the same), on `--model-queries` queries.

Prints a table and writes JSON. Needs about 8.2 GB of disk per 1 M items.
"""

import argparse
import json
import os
import pathlib
import tempfile
import time

import numpy as np

NODES, WIDTH, RERANK_K = 16, 128, 16


def resident_bytes() -> int:
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def synthetic_index(size: int, path: pathlib.Path, rng):
    from simmim_tf.models.gallery_index import STATES_CHUNK, GalleryIndex, StatesWriter

    block = rng.normal(size=(STATES_CHUNK, NODES, WIDTH)).astype(np.float32)
    start = time.perf_counter()
    with StatesWriter(path) as writer:
        for first in range(0, size, STATES_CHUNK):
            writer.write(block[: min(STATES_CHUNK, size - first)])
    seconds = time.perf_counter() - start
    embeddings = rng.normal(size=(size, WIDTH)).astype(np.float32)
    index = GalleryIndex(
        modality="image",
        embeddings=embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True),
        states=writer.mapped(),
        padding_mask=np.ones((size, NODES), bool),
        ids=np.arange(size).astype(str),
        names=np.arange(size).astype(str),
    )
    index.save(path)  # the states are written already: the small arrays only
    return seconds


def drop_from_page_cache(path: pathlib.Path) -> None:
    with open(path, "rb") as stream:
        os.posix_fadvise(stream.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def gather_ms(states: np.ndarray, candidates: np.ndarray) -> float:
    start = time.perf_counter()
    for rows in candidates:  # one query's candidates at a time, as served
        np.asarray(states[rows])
    return 1000 * (time.perf_counter() - start) / len(candidates)


def rerank_ms(queries: int) -> float:
    """ms per query of the ITM scores of its RERANK_K candidates, default model."""
    import tensorflow as tf

    from simmim_tf.models.retriever import SimMIMRetriever
    from simmim_tf.training.config import default_config
    from simmim_tf.training.tasks import build_backbone

    retriever = SimMIMRetriever(build_backbone(default_config()))
    score = tf.function(retriever.objectives.matching_scores, reduce_retracing=True)
    rng = np.random.default_rng(1)
    pairs, batch = queries * RERANK_K, 64
    images = rng.normal(size=(batch, NODES, WIDTH)).astype(np.float32)
    texts = rng.normal(size=(batch, 16, WIDTH)).astype(np.float32)
    mask = np.arange(16)[None, :] < rng.integers(4, 16, size=(batch, 1))
    score(images, texts, mask)  # trace
    start = time.perf_counter()
    for _ in range(0, pairs, batch):
        score(images, texts, mask).numpy()
    return 1000 * (time.perf_counter() - start) / queries


def main() -> None:
    from simmim_tf.atomic import atomic_write_text
    from simmim_tf.evaluation.report import print_table
    from simmim_tf.models.gallery_index import GalleryIndex, states_path

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--model-queries", type=int, default=50)
    parser.add_argument("--dir", default=None, help="scratch folder (default: tmp)")
    parser.add_argument("--out", default="runs/bench_states.json")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    rows, record = {}, {"rerank_ms_per_query": rerank_ms(args.model_queries)}
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        for size in args.sizes:
            path = pathlib.Path(scratch) / f"index_{size}.npz"
            write_seconds = synthetic_index(size, path, rng)
            states_file = states_path(path)
            drop_from_page_cache(states_file)
            before = resident_bytes()
            index = GalleryIndex.load(path)
            loaded = resident_bytes()
            candidates = rng.integers(0, size, size=(args.queries, RERANK_K))
            cold = gather_ms(index.states, candidates)
            gathered = resident_bytes()
            warm = gather_ms(index.states, candidates)
            file_bytes = states_file.stat().st_size
            record[size] = {
                "states_file_bytes": file_bytes,
                "write_s": write_seconds,
                "write_mb_per_s": file_bytes / write_seconds / 1e6,
                "resident_bytes_per_item_loaded": (loaded - before) / size,
                "resident_mb_after_gather": (gathered - before) / 1e6,
                "gather_ms_per_query_cold": cold,
                "gather_ms_per_query_warm": warm,
            }
            rows[f"{size:,}"] = {
                "states GB": file_bytes / 1e9,
                "write MB/s": file_bytes / write_seconds / 1e6,
                "RSS B/item, loaded": (loaded - before) / size,
                "RSS MB after gather": (gathered - before) / 1e6,
                "gather ms/query cold": cold,
                "gather ms/query warm": warm,
            }
            del index
            path.unlink()
            states_file.unlink()
    print_table(
        rows,
        f"states on disk: {args.queries} queries x {RERANK_K} candidates of "
        f"{NODES}x{WIDTH} float32; the graph re-ranks them in "
        f"{record['rerank_ms_per_query']:.1f} ms/query",
        name_column="gallery items",
    )
    atomic_write_text(args.out, json.dumps(record, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
