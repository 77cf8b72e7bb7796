"""Benchmark: a training step of each task in float32 and in mixed_bfloat16.

    python tools/bench_precision.py [--steps 20] [--rounds 3] \
        [--out runs/bench_precision.json]

Every task model at the default recipe's sizes (ResNet-18 at 64 px, frozen
MiniLM-L6, hidden 128, batch 64, 16 tokens), built by
`simmim_tf.training.tasks` from the default config with `model.dtype` set,
on random inputs of those shapes: a step costs the same whatever the pixels.
The policies take turns, `--rounds` times, `--steps` timed steps each after a
warm-up, so that both see the same machine; the median step (each step timed
on its own) is reported.
Prints a table and writes JSON.
"""

import argparse
import json
import time

import keras
import numpy as np
import tensorflow as tf

from simmim_tf.atomic import atomic_write_text
from simmim_tf.evaluation.report import print_table
from simmim_tf.models.inputs import TEXT_ENCODER_STATES, encode_tokens
from simmim_tf.training.config import default_config
from simmim_tf.training.tasks import build_task_model

POLICIES = ("float32", "mixed_bfloat16")
TASKS = {
    "retriever (ITC + ITM)": dict(task="retrieve"),
    "classifier (image+text)": dict(task="classify"),
    "LateFusionBaseline (image+text)": dict(task="baseline"),
}
NUM_CLASSES = 92  # subgroups of the emoji data set


def training_batch(config: dict) -> dict:
    data = config["data"]
    rng = np.random.default_rng(0)
    size, batch, length = data["image_size"], data["batch_size"], data["sequence_length"]
    return {
        "images": rng.normal(size=(batch, size, size, 3)).astype("float32"),
        "token_ids": rng.integers(1000, 29000, size=(batch, length)).astype("int32"),
        "padding_mask": (
            np.arange(length)[None, :] < rng.integers(4, length, (batch, 1))
        ).astype("int32"),
    }


class StepTimes(keras.callbacks.Callback):
    """Wall seconds of each training step of a `fit` (Keras calls the batch
    hooks around every step)."""

    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def step_timer(config: dict, model: keras.Model | None = None):
    """A function that runs `steps` training steps and returns the median
    step's seconds.

    The model is the config's task model unless `model` is given. Each call
    is one `fit` over the same batch; its first step, which also starts the
    input iterator, is left out of the median.
    """
    model = model or build_task_model(config, num_classes=NUM_CLASSES)
    x = training_batch(config)
    retrieval = config["finetune"]["task"] == "retrieve"
    frozen = not model.backbone.text_encoder.trainable
    if retrieval and frozen and config["model"]["cache_text_states"]:
        # As `simmim-tf finetune` trains it: the frozen states computed once
        # (simmim_tf.training.text_states).
        text = (tf.constant(x["token_ids"]), tf.constant(x["padding_mask"]))
        x[TEXT_ENCODER_STATES] = encode_tokens(model.backbone.text_encoder, *text)
    y = None if retrieval else np.arange(len(x["images"])) % NUM_CLASSES
    model(x)
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-4),
        jit_compile=config["model"]["jit_compile"],
    )
    batches = tf.data.Dataset.from_tensors((x, y) if y is not None else x)
    timer = StepTimes()

    def run(steps: int) -> float:
        model.fit(batches.repeat(steps + 1), verbose=0, callbacks=[timer])
        return float(np.median(timer.seconds[1:]))

    run(3)  # trace and warm up
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="runs/bench_precision.json")
    args = parser.parse_args()

    records = []
    batch = default_config()["data"]["batch_size"]
    for name, task in TASKS.items():
        timers = {
            dtype: step_timer(default_config(model=dict(dtype=dtype), finetune=task))
            for dtype in POLICIES
        }
        seconds = {dtype: [] for dtype in POLICIES}
        for _ in range(args.rounds):
            for dtype, run in timers.items():
                seconds[dtype].append(run(args.steps))
        reference = float(np.median(seconds["float32"]))
        for dtype in POLICIES:
            step = float(np.median(seconds[dtype]))
            records.append(
                {
                    "task": name,
                    "dtype": dtype,
                    "ms/step": round(1000 * step, 1),
                    "examples/s": round(batch / step, 1),
                    "speed-up": round(reference / step, 2),
                }
            )
    print_table(
        {
            f"{r['task']}, {r['dtype']}": {
                k: v for k, v in r.items() if k not in ("task", "dtype")
            }
            for r in records
        },
        f"training step, batch {batch}, median of {args.rounds} rounds of "
        f"{args.steps} steps, one process",
        name_column="task, dtype",
    )
    atomic_write_text(args.out, json.dumps(records, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
