"""Benchmark: our attention conv vs TF-GNN's GATv2Conv, and the graph encoder.

    python tools/benchmark_graph.py [--batch-size 32] [--out runs/benchmark_graph.json]

Both convs run on the same GraphTensor (the demo's sizes: 4x4 image cells, 24
tokens, width 128, 4 heads) inside `tf.function`, forward only, interleaved in
one process so that their ratio is fair on a noisy machine. Prints a table and
writes JSON (atomically).
"""

import argparse
import json
import statistics
import time

# Before tensorflow_gnn: sets TF_USE_LEGACY_KERAS=1, which it needs.
import simmim_tf  # noqa: F401

# isort: split
import numpy as np
import tensorflow as tf
import tensorflow_gnn as tfgnn
from tensorflow_gnn.models import gat_v2

from simmim_tf.atomic import atomic_write_text
from simmim_tf.graph.build import build_multimodal_graph
from simmim_tf.graph.encoder import MultimodalGraphEncoder
from simmim_tf.graph.layers import GraphAttentionConv

UNITS, HEADS, GRID, SEQ_LEN = 128, 4, (4, 4), 24


def median_ms(fn, repeats: int) -> float:
    fn()  # trace
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--out", default="runs/benchmark_graph.json")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    batch = args.batch_size
    cells = GRID[0] * GRID[1]
    image = tf.constant(rng.normal(size=(batch, cells, UNITS)), tf.float32)
    text = tf.constant(rng.normal(size=(batch, SEQ_LEN, UNITS)), tf.float32)
    lengths = rng.integers(6, SEQ_LEN + 1, size=batch)
    mask = tf.constant(np.arange(SEQ_LEN)[None, :] < lengths[:, None])

    graph = build_multimodal_graph(image, text, mask, grid_shape=GRID)
    ours = GraphAttentionConv(num_heads=HEADS, per_head_channels=UNITS // HEADS)
    reference = gat_v2.GATv2Conv(
        num_heads=HEADS, per_head_channels=UNITS // HEADS, receiver_tag=tfgnn.TARGET
    )
    encoder = MultimodalGraphEncoder(
        units=UNITS, grid_shape=GRID, num_rounds=2, num_heads=HEADS
    )

    ours_fn = tf.function(lambda: ours(graph=graph, edge_set_name="text_to_image"))
    reference_fn = tf.function(lambda: reference(graph, edge_set_name="text_to_image"))
    build_fn = tf.function(
        lambda: build_multimodal_graph(image, text, mask, grid_shape=GRID)
    )
    encoder_fn = tf.function(lambda: encoder(image, text, mask))

    rows = {}
    for _ in range(3):  # interleave, keep the best median of each
        for name, fn in (
            ("GraphAttentionConv (ours), text_to_image", ours_fn),
            ("tfgnn GATv2Conv, text_to_image", reference_fn),
            ("build_multimodal_graph", build_fn),
            ("MultimodalGraphEncoder, K=2", encoder_fn),
        ):
            ms = median_ms(fn, args.repeats)
            rows[name] = min(rows.get(name, ms), ms)

    ratio = (
        rows["GraphAttentionConv (ours), text_to_image"]
        / rows["tfgnn GATv2Conv, text_to_image"]
    )
    edges = int(graph.edge_sets["text_to_image"].total_size)
    print(f"batch {batch}, {edges} text_to_image edges, width {UNITS}, {HEADS} heads")
    print(f"{'what':45}{'median ms':>12}{'examples/s':>14}")
    for name, ms in rows.items():
        print(f"{name:45}{ms:12.2f}{batch / ms * 1000:14.0f}")
    print(f"ours / tfgnn GATv2Conv time ratio: {ratio:.2f}")
    # Atomic (a temporary sibling, then os.replace); creates missing folders.
    atomic_write_text(
        args.out,
        json.dumps({"batch_size": batch, "median_ms": rows, "ratio": ratio}, indent=2),
    )


if __name__ == "__main__":
    main()
