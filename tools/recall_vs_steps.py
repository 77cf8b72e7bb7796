"""Text->image recall on the test artist against training steps, per training set.

    python tools/recall_vs_steps.py --manual-dir ~/emoji_npm --steps 1400 \\
        --train-artists twitter --train-artists twitter,openmoji,fluent,emojione

(`simmim-tf data fetch --manual-dir ~/emoji_npm --artists twitter google
openmoji fluent emojione` first.) Each training set gets one retrieval
fine-tuning run (the default recipe, `--set` to change it) of about `--steps`
optimizer steps: the epochs are the steps over that set's steps per epoch, so
every set sees about the same number of batches under the same schedule.
`--points` times during each run, the run is evaluated like `simmim-tf
evaluate` (the test artist's whole gallery and its held-out concepts, dual
and re-ranked), and the validation loss is recorded beside it. The test
artist is only measured here, never used to choose anything: choose steps and
settings by the validation loss.

Writes `<out>.json` (every point), `<out>.png` (R@1 and R@10 against steps)
and prints a table. Runs go to `--runs-dir/<training set>`; a finished run
is not redone (its points are read back from its `recall_points.json`), an
interrupted one resumes from its backup with the points it had.
"""

import argparse
import json
import math
import pathlib
import shlex
import sys
import time

import keras

from simmim_tf import jobs
from simmim_tf.atomic import atomic_write_text
from simmim_tf.evaluation.evaluate import evaluate_model
from simmim_tf.evaluation.plots import plot_recall_curves
from simmim_tf.evaluation.report import print_table
from simmim_tf.training.config import DEFAULT_CONFIG, load_config
from simmim_tf.training.data import load_splits, make_batches
from simmim_tf.training.tasks import build_preprocessor

POINTS_FILE = "recall_points.json"
PARTIAL_FILE = "recall_points.partial.json"


class RecallPoints(keras.callbacks.Callback):
    """Evaluates the retriever being trained every `every` epochs (and at the end).

    Each point: `epoch`, `step`, `val_total_loss` and the text->image `R@1`,
    `R@10` (dual, whole gallery), `rerank R@1` and `held-out R@1`.
    """

    def __init__(self, config: dict, splits: dict, every: int, steps_per_epoch: int):
        super().__init__()
        self.config = config
        self.splits = splits
        self.preprocessor = build_preprocessor(config)
        self.every = every
        self.steps_per_epoch = steps_per_epoch
        self.partial = pathlib.Path(config["run_dir"]) / PARTIAL_FILE
        self.points: list[dict] = (
            json.loads(self.partial.read_text()) if self.partial.is_file() else []
        )

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        epochs = self.config["finetune"]["epochs"]
        if (epoch + 1) % self.every and epoch + 1 != epochs:
            return
        metrics = evaluate_model(self.model, self.config, self.splits, self.preprocessor)
        retrieval = metrics["retrieval"]
        whole = retrieval["test"]["text_to_image"]
        self.points.append(
            {
                "epoch": epoch + 1,
                "step": (epoch + 1) * self.steps_per_epoch,
                "val_total_loss": float((logs or {}).get("val_total_loss", math.nan)),
                "R@1": whole["dual"]["R@1"],
                "R@10": whole["dual"]["R@10"],
                "rerank R@1": whole["rerank"]["R@1"],
                "held-out R@1": retrieval["test_held_out"]["text_to_image"]["dual"][
                    "R@1"
                ],
            }
        )
        atomic_write_text(self.partial, json.dumps(self.points, indent=1))
        print(f"\n{self.points[-1]}", flush=True)


def run_curve(config: dict, steps: int, points: int) -> tuple[list[dict], float]:
    """One run of about `steps` steps; its recall points and training seconds."""
    run_dir = pathlib.Path(config["run_dir"])
    if (run_dir / POINTS_FILE).is_file():
        saved = json.loads((run_dir / POINTS_FILE).read_text())
        return saved["points"], saved["seconds"]
    splits, _ = load_splits(config)
    steps_per_epoch = int(
        make_batches(
            config,
            splits["train"],
            build_preprocessor(config),
            training=True,
            contrastive=True,
        ).cardinality()
    )
    epochs = max(1, round(steps / steps_per_epoch))
    config["finetune"]["epochs"] = epochs
    recorder = RecallPoints(
        config, splits, max(1, epochs // points), steps_per_epoch=steps_per_epoch
    )
    result = jobs.run_finetune(config, callbacks=[recorder])
    atomic_write_text(
        run_dir / POINTS_FILE,
        json.dumps({"points": recorder.points, "seconds": result["seconds"]}, indent=1),
    )
    recorder.partial.unlink()
    return recorder.points, result["seconds"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manual-dir", help="npm tarballs (default: bundled sample)")
    parser.add_argument("--data-dir", help="TFDS data folder")
    parser.add_argument(
        "--train-artists",
        action="append",
        required=True,
        help="a training set, artists joined by commas; repeat for each set",
    )
    parser.add_argument("--steps", type=int, default=1400)
    parser.add_argument("--points", type=int, default=6, help="evaluations per run")
    parser.add_argument("--runs-dir", default="runs/recall_vs_steps")
    parser.add_argument("--out", default="docs/recall_vs_steps")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)

    curves, rows = {}, {}
    for artists in args.train_artists:
        name = "+".join(artists.split(","))
        config = load_config(None, args.set, defaults=DEFAULT_CONFIG)
        config["data"].update(
            manual_dir=args.manual_dir,
            data_dir=args.data_dir,
            train_artists=artists.split(","),
        )
        config["finetune"]["task"] = "retrieve"
        config["run_dir"] = str(pathlib.Path(args.runs_dir) / name)
        points, seconds = run_curve(config, args.steps, args.points)
        curves[name] = points
        last = points[-1]
        rows[name] = {
            "steps": last["step"],
            "epochs": last["epoch"],
            "train s": round(seconds),
            **{key: last[key] for key in ("R@1", "R@10", "rerank R@1", "held-out R@1")},
        }
    test_artist = config["data"]["test_artist"]
    title = f"text->image on {test_artist} (whole gallery), about {args.steps} steps"
    print_table(rows, title, name_column="training artists")
    out = pathlib.Path(args.out)
    command = "python tools/recall_vs_steps.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    atomic_write_text(
        out.with_suffix(".json"),
        json.dumps(
            {"command": command, "date": time.strftime("%Y-%m-%d"), "curves": curves},
            indent=1,
        ),
    )
    plot_recall_curves(curves, out.with_suffix(".png"), title=title)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
