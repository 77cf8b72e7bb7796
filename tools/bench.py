"""Benchmarks: what a training step costs, what the graph adds, what limits speed.

    python tools/bench.py [--sections peak training attention scaling input] \
        [--out runs/bench.json] [--plot runs/bench_scaling.png]

Every section runs in this one process, its variants taking turns, so that
their ratios are fair on a noisy machine; each prints a table, and all go to
one JSON file (and the scaling series to a PNG plot). Timings are medians.

- `peak`: this machine's float32 and bfloat16 matmul FLOP/s (2048² matrices).
- `training`: examples/s of a training step at each image size (64, 96 px),
  default sizes otherwise (ResNet-18, frozen MiniLM-L6, hidden 128, batch 64,
  16 tokens): SimMIM K=2 (the retriever: ITC + ITM) with the frozen text
  encoder's states computed once (the default) and run every step, K=0,
  SimMIM with ITC only (no graph is built), and LateFusionBaseline. The
  graph's share of a step is measured by ablation; the step's FLOPs are
  counted by TensorFlow's profiler (forward, ×3 for the trained parts) and
  compared with the matmul peak.
- `compile`: the K=2 training step at the first image size with the graph
  as usual, with the padded graph (static sizes), and XLA-compiled
  (`model.jit_compile`, which pads), in float32 and in mixed_bfloat16.
- `attention`: our `GraphAttentionConv` against TF-GNN's `GATv2Conv` and
  `MultiHeadAttentionConv` on one GraphTensor, forward and backward.
- `construction`: what building that GraphTensor costs (usual and padded),
  beside the graph encoder's K=2 rounds on it, forward.
- `scaling`: the graph encoder (K=2, forward + backward) as image cells,
  tokens and the batch grow: step time, peak memory, edges, and the growth
  exponent of time in edges.
- `input`: examples/s of the training input pipeline alone (decode, augment,
  tokenise, batch, look up the frozen text states) on the bundled sample,
  against the training step's.
"""

import argparse
import json
import pathlib
import statistics
import time

# Before tensorflow_gnn: sets TF_USE_LEGACY_KERAS=1, which it needs.
import simmim_tf  # noqa: F401

# isort: split
import keras
import numpy as np
import tensorflow as tf
import tensorflow_gnn as tfgnn
from bench_precision import step_timer, training_batch
from tensorflow_gnn.models import gat_v2, multi_head_attention

from simmim_tf.atomic import atomic_write_text
from simmim_tf.evaluation.report import print_table
from simmim_tf.graph.build import TEXT_TO_IMAGE, build_multimodal_graph
from simmim_tf.graph.encoder import MultimodalGraphEncoder
from simmim_tf.graph.layers import GraphAttentionConv
from simmim_tf.models.inputs import encode_tokens
from simmim_tf.models.retriever import SimMIMRetriever
from simmim_tf.training.config import default_config
from simmim_tf.training.data import load_splits, make_batches
from simmim_tf.training.tasks import build_backbone, build_preprocessor
from simmim_tf.training.text_states import with_frozen_text_states

SECTIONS = (
    "peak",
    "training",
    "compile",
    "attention",
    "construction",
    "scaling",
    "input",
)
UNITS, HEADS = 128, 4


def median_seconds(fn, repeats: int) -> float:
    fn()  # trace, warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak(repeats: int) -> dict:
    size = 2048
    result = {}
    for dtype in ("float32", "bfloat16"):
        matrix = tf.cast(tf.random.normal([size, size]), dtype)
        multiply = tf.function(lambda m=matrix: tf.matmul(m, m))
        seconds = median_seconds(lambda f=multiply: f().numpy(), repeats)
        result[dtype] = 2 * size**3 / seconds
    print_table(
        {dtype: {"GFLOP/s": flops / 1e9} for dtype, flops in result.items()},
        f"matmul {size}x{size}, median of {repeats}",
        name_column="dtype",
    )
    return result


def forward_flops(fn, inputs) -> int:
    """Floating-point operations of one call of `fn` (TensorFlow's profiler)."""
    specs = tf.nest.map_structure(lambda x: tf.TensorSpec(x.shape, x.dtype), inputs)
    graph = tf.function(fn).get_concrete_function(specs).graph
    options = (
        tf.compat.v1.profiler.ProfileOptionBuilder(
            tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        )
        .with_empty_output()
        .build()
    )
    return tf.compat.v1.profiler.profile(graph, options=options).total_float_ops


def step_flops(config: dict) -> float:
    """FLOPs of one retriever training step: forward ×3 (forward, gradients of
    inputs and of weights) for the trained parts, and the frozen text
    encoder's forward only when the config runs it every step (nothing before
    it needs its gradients; `model.cache_text_states` runs it once a run)."""
    model = SimMIMRetriever(build_backbone(config))
    x = training_batch(config)
    x = {key: tf.constant(value) for key, value in x.items()}
    total = forward_flops(lambda inputs: model(inputs, training=True), x)
    text = forward_flops(
        lambda inputs: encode_tokens(model.backbone.text_encoder, *inputs),
        (x["token_ids"], x["padding_mask"]),
    )
    return 3 * (total - text) + (0 if config["model"]["cache_text_states"] else text)


def training_throughput(sizes, steps: int, rounds: int, peak: dict | None) -> dict:
    rows, records = {}, {}
    for size in sizes:
        base = dict(
            data=dict(image_size=size), model=dict(image_encoder=f"resnet18_{size}px")
        )

        def config(rounds_=2, task="retrieve", cache=True, base=base):
            return default_config(
                data=base["data"],
                model={
                    **base["model"],
                    "num_rounds": rounds_,
                    "cache_text_states": cache,
                },
                finetune=dict(task=task),
            )

        itc_only = config()
        timers = {
            "SimMIM K=2, ITC + ITM": step_timer(config()),
            "SimMIM K=2, ITC + ITM, text encoder every step": step_timer(
                config(cache=False)
            ),
            "SimMIM K=0, ITC + ITM": step_timer(config(0)),
            "SimMIM, ITC only (no graph)": step_timer(
                itc_only, SimMIMRetriever(build_backbone(itc_only), itm_weight=0.0)
            ),
            "LateFusionBaseline, image+text": step_timer(config(task="baseline")),
        }
        seconds = {name: [] for name in timers}
        for _ in range(rounds):
            for name, run in timers.items():
                seconds[name].append(run(steps))
        step = {name: statistics.median(values) for name, values in seconds.items()}
        batch = config()["data"]["batch_size"]
        full = step["SimMIM K=2, ITC + ITM"]
        for name, value in step.items():
            rows[f"{size} px, {name}"] = {
                "ms/step": 1000 * value,
                "examples/s": batch / value,
                "× K=2 time": value / full,
            }
        record = {
            "ms_per_step": {name: 1000 * value for name, value in step.items()},
            "graph_share": 1 - step["SimMIM, ITC only (no graph)"] / full,
            "message_passing_share": 1 - step["SimMIM K=0, ITC + ITM"] / full,
        }
        if size == sizes[0]:
            flops = step_flops(config())
            record["step_gflop"] = flops / 1e9
            record["achieved_gflops"] = flops / full / 1e9
            if peak:
                record["fraction_of_fp32_peak"] = flops / full / peak["float32"]
        records[f"{size}px"] = record
    print_table(
        rows,
        f"training step, batch 64, float32, median of {rounds} rounds of {steps}",
        name_column="image size, model",
    )
    for size, record in records.items():
        print(
            f"{size}: graph (construction + message passing + ITM) "
            f"{100 * record['graph_share']:.0f} % of a K=2 step; message passing "
            f"rounds alone {100 * record['message_passing_share']:.0f} %"
        )
        if "achieved_gflops" in record:
            print(
                f"{size}: {record['step_gflop']:.1f} GFLOP per step, "
                f"{record['achieved_gflops']:.1f} GFLOP/s achieved"
                + (
                    f", {100 * record['fraction_of_fp32_peak']:.0f} % of the fp32 peak"
                    if "fraction_of_fp32_peak" in record
                    else ""
                )
            )
    return records


def compiled_steps(size: int, steps: int, rounds: int) -> dict:
    """ms per K=2 retriever step: usual graph, padded graph, XLA; per policy."""
    timers = {}
    for dtype in ("float32", "mixed_bfloat16"):

        def config(jit_compile, dtype=dtype):
            return default_config(
                data=dict(image_size=size),
                model=dict(
                    image_encoder=f"resnet18_{size}px",
                    dtype=dtype,
                    jit_compile=jit_compile,
                ),
            )

        padded = SimMIMRetriever(build_backbone(config(jit_compile=True)))
        timers[f"{dtype}, graph as usual"] = step_timer(config(jit_compile=False))
        timers[f"{dtype}, padded graph"] = step_timer(config(jit_compile=False), padded)
        timers[f"{dtype}, padded graph + XLA"] = step_timer(config(jit_compile=True))
    seconds = {name: [] for name in timers}
    for _ in range(rounds):
        for name, run in timers.items():
            seconds[name].append(run(steps))
    step = {name: 1000 * statistics.median(values) for name, values in seconds.items()}
    rows = {
        name: {"ms/step": ms, "× float32 as usual": step["float32, graph as usual"] / ms}
        for name, ms in step.items()
    }
    print_table(
        rows,
        f"K=2 training step, {size} px, batch 64, median of {rounds} rounds of {steps}",
        name_column="precision, graph, compiler",
    )
    return step


def synthetic_graph_inputs(batch: int, grid: int, tokens: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    image = tf.constant(rng.normal(size=(batch, grid * grid, UNITS)), tf.float32)
    text = tf.constant(rng.normal(size=(batch, tokens, UNITS)), tf.float32)
    lengths = rng.integers(tokens // 2, tokens + 1, size=batch)
    mask = tf.constant(np.arange(tokens)[None, :] < lengths[:, None])
    return image, text, mask


def attention_convs(repeats: int) -> dict:
    batch, grid, tokens = 64, 4, 16
    image, text, mask = synthetic_graph_inputs(batch, grid, tokens)
    graph = build_multimodal_graph(image, text, mask, grid_shape=(grid, grid))
    image_states = graph.node_sets["image"][tfgnn.HIDDEN_STATE]
    text_states = graph.node_sets["text"][tfgnn.HIDDEN_STATE]
    channels = UNITS // HEADS
    convs = {
        "GraphAttentionConv (ours), gatv2": GraphAttentionConv(
            num_heads=HEADS, per_head_channels=channels
        ),
        "GraphAttentionConv (ours), dot_product": GraphAttentionConv(
            num_heads=HEADS, per_head_channels=channels, attention_type="dot_product"
        ),
        "tfgnn GATv2Conv": gat_v2.GATv2Conv(
            num_heads=HEADS, per_head_channels=channels, receiver_tag=tfgnn.TARGET
        ),
        "tfgnn MultiHeadAttentionConv": multi_head_attention.MultiHeadAttentionConv(
            num_heads=HEADS, per_head_channels=channels, receiver_tag=tfgnn.TARGET
        ),
    }

    def call(name, conv, g):
        if name.startswith("GraphAttentionConv"):
            return conv(graph=g, edge_set_name=TEXT_TO_IMAGE)
        return conv(g, edge_set_name=TEXT_TO_IMAGE)

    def forward_backward(name, conv):
        call(name, conv, graph)  # build

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                tape.watch([image_states, text_states])
                g = graph.replace_features(
                    node_sets={
                        "image": {tfgnn.HIDDEN_STATE: image_states},
                        "text": {tfgnn.HIDDEN_STATE: text_states},
                    }
                )
                loss = tf.reduce_sum(call(name, conv, g))
            return tape.gradient(
                loss, [image_states, text_states, *conv.trainable_variables]
            )

        return lambda: [t.numpy() for t in step()]

    def forward(name, conv):
        function = tf.function(lambda: call(name, conv, graph))
        return lambda: function().numpy()

    timers = {}
    for name, conv in convs.items():
        timers[(name, "forward")] = forward(name, conv)
        timers[(name, "forward + backward")] = forward_backward(name, conv)
    seconds = {key: [] for key in timers}
    for _ in range(3):
        for key, fn in timers.items():
            seconds[key].append(median_seconds(fn, repeats))
    best = {key: min(values) for key, values in seconds.items()}
    reference = "tfgnn GATv2Conv"
    rows = {
        f"{name}, {mode}": {
            "ms": 1000 * value,
            "× GATv2Conv": value / best[(reference, mode)],
        }
        for (name, mode), value in best.items()
    }
    edges = int(graph.edge_sets[TEXT_TO_IMAGE].total_size)
    print_table(
        rows,
        f"one conv over {TEXT_TO_IMAGE} ({edges} edges, batch {batch}, width "
        f"{UNITS}, {HEADS} heads), best of 3 medians of {repeats}",
        name_column="conv, pass",
    )
    return {f"{name}, {mode}": 1000 * value for (name, mode), value in best.items()}


def graph_construction(repeats: int) -> dict:
    """ms to build the default batch's GraphTensor, and K=2 rounds on it."""
    batch, grid, tokens = 64, 4, 16
    image, text, mask = synthetic_graph_inputs(batch, grid, tokens)
    encoder = MultimodalGraphEncoder(
        units=UNITS, grid_shape=(grid, grid), num_heads=HEADS
    )
    timers = {
        f"build_multimodal_graph{', padded' * padded}": tf.function(
            lambda padded=padded: build_multimodal_graph(
                image, text, mask, grid_shape=(grid, grid), padded=padded
            ).node_sets["text"][tfgnn.HIDDEN_STATE]
        )
        for padded in (False, True)
    }
    timers["MultimodalGraphEncoder K=2 (build + 2 rounds), forward"] = tf.function(
        lambda: encoder(image, text, mask)["text_readout"]
    )
    seconds = {name: [] for name in timers}
    for _ in range(3):
        for name, fn in timers.items():
            seconds[name].append(median_seconds(lambda fn=fn: fn().numpy(), repeats))
    best = {name: 1000 * min(values) for name, values in seconds.items()}
    print_table(
        {name: {"ms": ms} for name, ms in best.items()},
        f"graph of a batch of {batch} ({grid}x{grid} cells, up to {tokens} tokens), "
        f"best of 3 medians of {repeats}",
        name_column="what",
    )
    return best


def scaling(repeats: int, plot: str | None) -> dict:
    series = {
        "image cells (4x4 → 16x16), 16 tokens, batch 64": [
            (64, grid, 16) for grid in (4, 8, 16)
        ],
        "tokens (16 → 128), 4x4 cells, batch 64": [
            (64, 4, tokens) for tokens in (16, 32, 64, 128)
        ],
        "tokens (16 → 128), 8x8 cells, batch 64": [
            (64, 8, tokens) for tokens in (16, 32, 64, 128)
        ],
        "batch (16 → 128), 4x4 cells, 16 tokens": [
            (batch, 4, 16) for batch in (16, 32, 64, 128)
        ],
    }
    results = {}
    for name, points in series.items():
        rows = []
        for batch, grid, tokens in points:
            encoder = MultimodalGraphEncoder(
                units=UNITS, grid_shape=(grid, grid), num_rounds=2, num_heads=HEADS
            )
            image, text, mask = synthetic_graph_inputs(batch, grid, tokens)
            graph = build_multimodal_graph(image, text, mask, grid_shape=(grid, grid))
            edges = {n: int(e.total_size) for n, e in graph.edge_sets.items()}
            encoder(image, text, mask)  # build

            @tf.function
            def step(encoder=encoder, image=image, text=text, mask=mask):
                with tf.GradientTape() as tape:
                    tape.watch([image, text])
                    out = encoder(image, text, mask)
                    loss = tf.reduce_sum(out["image_readout"]) + tf.reduce_sum(
                        out["text_readout"]
                    )
                return tape.gradient(loss, [image, text, *encoder.trainable_variables])

            run = lambda step=step: [t.numpy() for t in step()]  # noqa: E731
            run()
            tf.config.experimental.reset_memory_stats("CPU:0")
            before = tf.config.experimental.get_memory_info("CPU:0")["current"]
            seconds = median_seconds(run, repeats)
            peak = tf.config.experimental.get_memory_info("CPU:0")["peak"] - before
            cross = edges["image_to_text"] + edges["text_to_image"]
            rows.append(
                {
                    "batch": batch,
                    "cells": grid * grid,
                    "tokens": tokens,
                    "edges": sum(edges.values()),
                    "cross-modal share": cross / sum(edges.values()),
                    "ms": 1000 * seconds,
                    "peak MB": peak / 2**20,
                }
            )
        slope = np.polyfit(
            np.log([r["edges"] for r in rows]), np.log([r["ms"] for r in rows]), 1
        )[0]
        results[name] = {"points": rows, "time_exponent_in_edges": float(slope)}
        print_table(
            {f"B{r['batch']} {r['cells']} cells {r['tokens']} tok": r for r in rows},
            f"graph encoder K=2, forward + backward: {name}; time ~ edges^{slope:.2f}",
            name_column="point",
        )
    if plot:
        plot_scaling(results, plot)
    return results


def plot_scaling(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, result in results.items():
        points = result["points"]
        edges = [p["edges"] for p in points]
        label = f"{name} (~edges^{result['time_exponent_in_edges']:.2f})"
        axes[0].loglog(edges, [p["ms"] for p in points], "o-", label=label)
        axes[1].loglog(edges, [max(p["peak MB"], 1e-3) for p in points], "o-")
    axes[0].set(xlabel="edges", ylabel="ms per forward + backward", title="time")
    axes[1].set(xlabel="edges", ylabel="peak MB", title="memory")
    axes[0].legend(fontsize=7)
    figure.suptitle("graph encoder K=2 (width 128, 4 heads) as the graph grows")
    figure.tight_layout()
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def input_pipeline(batches: int, data_dir: str) -> dict:
    config = default_config(data=dict(data_dir=data_dir))
    splits, _ = load_splits(config)
    preprocessor = build_preprocessor(config)
    train = make_batches(
        config, splits["train"], preprocessor, training=True, contrastive=True
    )
    # With the frozen text states looked up, as `simmim-tf finetune` feeds them.
    (train,) = with_frozen_text_states(
        config,
        build_backbone(config).text_encoder,
        preprocessor,
        (splits["train"],),
        train,
    )
    train = train.repeat()
    iterator = iter(train)
    next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    seconds = (time.perf_counter() - start) / batches
    batch = config["data"]["batch_size"]
    result = {"ms_per_batch": 1000 * seconds, "examples_per_s": batch / seconds}
    print_table(
        {"training input (64 px, augmented)": result},
        f"input pipeline alone, {batches} batches of {batch}",
        name_column="pipeline",
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--sizes", nargs="+", type=int, default=[64, 96])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--data-dir", default="runs/bench_tfds")
    parser.add_argument("--out", default="runs/bench.json")
    parser.add_argument("--plot", default="runs/bench_scaling.png")
    args = parser.parse_args()
    keras.utils.set_random_seed(0)

    record = {}
    if "peak" in args.sections:
        record["matmul_peak_flops"] = matmul_peak(args.repeats)
    if "training" in args.sections:
        record["training"] = training_throughput(
            args.sizes, args.steps, args.rounds, record.get("matmul_peak_flops")
        )
    if "compile" in args.sections:
        record["compile_ms_per_step"] = compiled_steps(
            args.sizes[0], args.steps, args.rounds
        )
    if "attention" in args.sections:
        record["attention_ms"] = attention_convs(args.repeats)
    if "construction" in args.sections:
        record["graph_construction_ms"] = graph_construction(args.repeats)
    if "scaling" in args.sections:
        record["scaling"] = scaling(max(args.repeats // 2, 3), args.plot)
    if "input" in args.sections:
        record["input"] = input_pipeline(4 * args.repeats, args.data_dir)
        training = record.get("training", {}).get(f"{args.sizes[0]}px")
        if training:
            step = training["ms_per_step"]["SimMIM K=2, ITC + ITM"] / 1000
            ratio = record["input"]["examples_per_s"] / (64 / step)
            record["input"]["times_training_throughput"] = ratio
            print(f"input pipeline: {ratio:.1f}× the K=2 training step's examples/s")
    atomic_write_text(args.out, json.dumps(record, indent=1, default=float))
    print(
        f"wrote {args.out}" + (f" and {args.plot}" if "scaling" in args.sections else "")
    )


if __name__ == "__main__":
    main()
