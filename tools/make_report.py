"""Regenerate docs/results.md: every row of the evaluation protocol, one command.

    python tools/make_report.py --manual-dir ~/emoji_npm

(`simmim-tf data fetch --manual-dir ~/emoji_npm` first.) Trains on the open
artists (twitter, OpenMoji, Fluent, EmojiOne 2.3: the default
`data.train_artists`), seen concepts only, and tests on google, an artist no
run ever trains on: the whole gallery and the 20 % held-out concepts. Rows:
text<->image retrieval with issue 11's plain CLIP recipe (K=0,
`configs/clip_96px.yaml`), the same recipe with two graph rounds and ITM (K=2,
dual and re-ranked), and the package defaults; image-only and image+text
classification against LateFusionBaseline; questions about emoji scenes (VQA)
for K=0, 1, 2 (GATv2 and dot-product attention) and the baseline.

Every finished run leaves a record (`simmim_tf.evaluation.run_records`: its
config, data digest, metrics, history and epoch seconds) in `--records`,
which is committed: the report reads its rows from the records, and trains
only the runs that have none, or whose record another config or other data
made. The runs take hours on a CPU; `--recorded-only` trains nothing and
shows the missing runs as pending, and `--train RUN…` trains only the named
ones, so a report can grow a row at a time.
Run folders go to `--runs-dir`; rerunning resumes unfinished runs and reuses
finished ones whose saved config is the one asked for (a finished run of
another config is an error naming the keys that differ).
"""

import argparse
import copy
import json
import os
import pathlib
import shlex
import sys
import time

import numpy as np
import tensorflow_datasets as tfds
import yaml

from simmim_tf import jobs
from simmim_tf.atomic import atomic_write_bytes
from simmim_tf.evaluation.evaluate import RANKINGS, metrics_path
from simmim_tf.evaluation.plots import plot_training_curves
from simmim_tf.evaluation.report import write_results_markdown
from simmim_tf.evaluation.run_records import (
    config_differences,
    read_record,
    record_differences,
    run_record,
    write_record,
)
from simmim_tf.hashing import sha256_file
from simmim_tf.training.config import DEFAULT_CONFIG, default_config, load_config
from simmim_tf.training.data import load_splits
from simmim_tf.training.splits import concept_held_out

CLIP_RECIPE = pathlib.Path(__file__).resolve().parents[1] / "configs" / "clip_96px.yaml"
VQA_IMAGE_SIZE = 64
# Columns of every table: the fine-tuning minutes of the row's runs (seeds
# together), read from their records, and how many of its seeds are recorded.
COST = "train min"
SEEDS = "seeds"
PENDING = "pending"
# Files of a run folder the report shows, kept (by sha256) in its record.
FIGURES = (
    "retrieval_dual_google.png",
    "retrieval_rerank_google.png",
    "vqa_google.png",
)


class Report:
    """The runs of a report: made, read back from a record, or pending.

    Args:
        base: dict. The config every run starts from.
        runs_dir: path. Where run folders go.
        records_dir: path. Where run records go (one `{run}.json` each).
        train: tuple of str, or None. Which runs without a record train: those
            whose name starts with one of these (`()`: none); None: all. The
            others are pending.
    """

    def __init__(self, base: dict, runs_dir, records_dir, train=None):
        self.base = base
        self.runs_dir = pathlib.Path(runs_dir)
        self.records_dir = pathlib.Path(records_dir)
        self.train = None if train is None else tuple(train)
        self.made, self.reused, self.pending = [], [], []
        self.histories = {}
        # Only the runs trained now: reading records back takes seconds, and a
        # report made from records alone regenerates byte for byte.
        self.training_seconds = 0.0

    def config(self, name: str, seed: int = 0, recipe=None, **sections) -> dict:
        """`base`, then the `recipe` file, then `sections`' values, for one run."""
        result = (
            load_config(recipe, defaults=self.base)
            if recipe
            else copy.deepcopy(self.base)
        )
        for key, value in sections.items():
            result[key].update(value)
        result.update(seed=seed, run_dir=str(self.runs_dir / f"{name}-seed{seed}"))
        return result

    def run(self, name: str, seed: int = 0, recipe=None, **sections) -> dict | None:
        """The record of one fine-tuning run (trained if needed), or None if pending."""
        config = self.config(name, seed, recipe, **sections)
        run_name = pathlib.Path(config["run_dir"]).name
        record_file = self.records_dir / f"{run_name}.json"
        record = read_record(record_file)
        differ = None if record is None else record_differences(record, config)
        if finished(config, metrics_path(config["run_dir"], config)):
            record = self._record_of(config, record_file, record)
            self.reused.append(run_name)
        elif differ == []:
            self.reused.append(run_name)
        elif self.train is not None and not run_name.startswith(self.train):
            if differ:
                print(
                    f"{record_file} was made by another run "
                    f"({', '.join(differ)} differ): pending"
                )
            self.pending.append(run_name)
            return None
        else:
            start = time.perf_counter()
            jobs.run_finetune(config)
            self.training_seconds += time.perf_counter() - start
            record = self._record_of(config, record_file, None)
            self.made.append(run_name)
        if seed == 0:
            self.histories[name] = record["history"]
        return {**record, "run_name": run_name}

    def _record_of(self, config: dict, record_file, old: dict | None) -> dict:
        """The finished run's record, written where it changed."""
        record = run_record(config, FIGURES)
        if record != old:
            write_record(record_file, record)
        return record

    def figure(self, record: dict | None, name: str, target) -> str | None:
        """`target`, a copy of the run's figure `name`: copied from its folder
        when there, kept when an earlier copy is the recorded run's; else None."""
        if record is None or name not in record["figures"]:
            return None
        source = self.runs_dir / record["run_name"] / name
        if source.is_file():
            atomic_write_bytes(target, source.read_bytes())
        target = pathlib.Path(target)
        if target.is_file() and sha256_file(target) == record["figures"][name]:
            return str(target)
        return None

    def wall_note(self) -> str:
        """What the wall time covers (the runs trained now), what was read
        back, and what is pending."""
        note = f"on {os.cpu_count()} CPU cores to train {_runs(len(self.made))} now"
        if self.reused:
            note += (
                f"; {_runs(len(self.reused))} read back from the records in "
                f"{self.records_dir} (their own minutes are in `train min`)"
            )
        if self.pending:
            note += (
                f"; {_runs(len(self.pending))} pending (not trained in this "
                f"invocation): {', '.join(self.pending)}"
            )
        return note


def _runs(count: int) -> str:
    return f"{count} run" if count == 1 else f"{count} runs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manual-dir", help="npm tarballs (default: bundled sample)")
    parser.add_argument("--data-dir", help="TFDS data folder")
    parser.add_argument("--runs-dir", default="runs/report")
    parser.add_argument("--records", default="docs/report_runs")
    parser.add_argument(
        "--recorded-only",
        action="store_true",
        help="train nothing: rows without records are shown as pending",
    )
    parser.add_argument(
        "--train",
        nargs="+",
        metavar="RUN",
        help="train only the runs without a record whose names start with these "
        "(e.g. retrieve-clip-k2 vqa-k0-seed1); the others are pending",
    )
    parser.add_argument("--out", default="docs/results.md")
    parser.add_argument(
        "--notes",
        default="docs/results_notes.md",
        help="hand-written markdown merged under the report's Notes heading",
    )
    defaults = DEFAULT_CONFIG
    parser.add_argument(
        "--baseline-epochs",
        type=int,
        default=3 * defaults["finetune"]["epochs"],
        help="epochs of the LateFusionBaseline runs",
    )
    parser.add_argument(
        "--patience",
        type=int,
        help="early-stopping patience (default: off, every run trains all its "
        "epochs: the validation loss on held-out training concepts stops "
        "improving long before cross-artist recall does)",
    )
    parser.add_argument("--seeds", type=int, default=2, help="seeds of the key rows")
    parser.add_argument(
        "--recall-vs-steps",
        default="docs/recall_vs_steps",
        help="tools/recall_vs_steps.py's output (.png and .json), shown when there",
    )
    args = parser.parse_args()

    base = default_config(
        data=dict(manual_dir=args.manual_dir, data_dir=args.data_dir),
        finetune=dict(patience=args.patience),
    )
    report = Report(
        base, args.runs_dir, args.records, () if args.recorded_only else args.train
    )
    run = report.run
    seeds, one = range(args.seeds), range(1)

    graph = dict(model=dict(num_rounds=2), finetune=dict(itm_weight=1.0))
    retrieval = {
        "K=0, ITC only: the CLIP recipe, 96 px": [
            run("retrieve-clip-k0", s, CLIP_RECIPE) for s in seeds
        ],
        "K=2, ITC + ITM: the CLIP recipe with the graph, 96 px": [
            run("retrieve-clip-k2", s, CLIP_RECIPE, **graph) for s in seeds
        ],
        "K=2, ITC + ITM: package defaults, 64 px": [
            run("retrieve-defaults-k2", s) for s in one
        ],
    }
    # The CLIP recipe trains no ITM head: its re-ranking would be noise.
    rankings = {name: RANKINGS for name in retrieval}
    rankings["K=0, ITC only: the CLIP recipe, 96 px"] = ("dual",)
    classify = dict(task="classify", label="subgroup")
    baseline = dict(task="baseline", label="subgroup", epochs=args.baseline_epochs)
    image_only = {
        "LateFusionBaseline image only (a plain CNN)": [
            run("baseline-image", finetune=dict(baseline, modalities=["image"]))
        ],
        "SimMIM image only, from scratch": [
            run("classify-image", finetune=dict(classify, modalities=["image"]))
        ],
    }
    image_and_text = {
        "LateFusionBaseline image+text (CNN + frozen MiniLM-L6)": [
            run("baseline-frozen-text", finetune=baseline)
        ],
        "SimMIM image+text, from scratch": [run("classify-both", finetune=classify)],
    }
    # Scenes of four emoji and one question each, one scene per training
    # drawing and epoch; mixed_bfloat16 (1.3x on this CPU, R@1 within 0.3
    # points) for SimMIM, float32 for the baseline (its BatchNorm and pooling
    # are slower in bf16 here).
    scenes = dict(scenes=True, image_size=VQA_IMAGE_SIZE, scenes_per_drawing=1)
    simmim_on_scenes = {
        "SimMIM K=0": ("vqa-k0", dict(num_rounds=0), seeds),
        "SimMIM K=1": ("vqa-k1", dict(num_rounds=1), one),
        "SimMIM K=2": ("vqa-k2", dict(num_rounds=2), one),
        "SimMIM K=2, dot-product attention": (
            "vqa-k2-dot-product",
            dict(attention_type="dot_product"),
            seeds,
        ),
    }
    answers = {
        name: [
            run(
                name_of_run,
                s,
                data=scenes,
                finetune=dict(task="vqa"),
                model=dict(
                    image_encoder=f"resnet18_{VQA_IMAGE_SIZE}px",
                    dtype="mixed_bfloat16",
                    **model,
                ),
            )
            for s in count
        ]
        for name, (name_of_run, model, count) in simmim_on_scenes.items()
    }
    answers["LateFusionBaseline (CNN + frozen MiniLM-L6)"] = [
        run("vqa-baseline", s, data=scenes, finetune=dict(task="baseline")) for s in seeds
    ]

    out_dir = pathlib.Path(args.out).parent
    figures = []
    curve = pathlib.Path(args.recall_vs_steps)
    if curve.with_suffix(".png").is_file():
        command_of_curve = json.loads(curve.with_suffix(".json").read_text())["command"]
        figures.append(
            (
                f"text→image recall on google against optimizer steps, per training "
                f"set (`{command_of_curve}`)",
                str(curve.with_suffix(".png")),
            )
        )
    if report.histories:
        curves = out_dir / "results_training_curves.png"
        plot_training_curves(report.histories, curves)
        figures.append(("training curves (seed 0 of each row)", str(curves)))
    # The headline recipe's own ranking, and the graph's re-ranking.
    grids = {
        "dual": ("K=0", retrieval["K=0, ITC only: the CLIP recipe, 96 px"][0]),
        "rerank": (
            "K=2",
            retrieval["K=2, ITC + ITM: the CLIP recipe with the graph, 96 px"][0],
        ),
    }
    for ranking, (model, record) in grids.items():
        shown = report.figure(
            record,
            f"retrieval_{ranking}_google.png",
            out_dir / f"results_retrieval_{ranking}.png",
        )
        if shown:
            figures.append(
                (
                    f"text queries and their top-5 google images ({model}, {ranking})",
                    shown,
                )
            )
    shown = report.figure(
        answers["SimMIM K=2, dot-product attention"][0],
        "vqa_google.png",
        out_dir / "results_vqa.png",
    )
    if shown:
        figures.append(("google scenes, their questions and K=2's answers", shown))

    command = "python tools/make_report.py " + " ".join(
        shlex.quote(a) for a in sys.argv[1:]
    )
    write_results_markdown(
        args.out,
        title="simmim_tf results: train on open artists, test on google artwork",
        sections=[
            ("The artists", artist_rows(base), ARTISTS_NOTE),
            (
                "Text → image retrieval",
                retrieval_rows(retrieval, rankings, "text_to_image"),
                RETRIEVAL_NOTE,
            ),
            (
                "Image → text retrieval",
                retrieval_rows(retrieval, rankings, "image_to_text"),
                RETRIEVAL_NOTE,
            ),
            (
                "Image-only classification (test artist)",
                classification_rows(image_only),
                FROM_SCRATCH,
            ),
            (
                "Image+text classification (test artist): a text lookup",
                classification_rows(image_and_text),
                TEXT_LOOKUP,
            ),
            ("Questions about emoji scenes (test artist)", vqa_rows(answers), VQA_NOTE),
        ],
        command=command,
        wall_seconds=report.training_seconds,
        wall_note=report.wall_note(),
        notes=pathlib.Path(args.notes).read_text() if args.notes else "",
        images=figures,
    )
    print(f"wrote {args.out}")


def artist_rows(config: dict) -> list[dict]:
    """One row per artist of the protocol: its package, licence, coverage,
    and how many of its drawings are of seen and of held-out concepts."""
    data = config["data"]
    _, builder = load_splits(config)
    split = dict(fraction=data["held_out_fraction"], seed=data["split_seed"])
    rows = []
    for artist, meta in builder.info.metadata["artists"].items():
        labels = builder.as_dataset(
            split=artist, decoders={"image": tfds.decode.SkipDecoding()}
        ).map(lambda example: example["label"])
        held_out = concept_held_out(np.fromiter(labels.as_numpy_iterator(), int), **split)
        rows.append(
            {
                "artist": artist,
                "role": "test" if artist == data["test_artist"] else "train",
                "package": f"`{meta['package']}`",
                "licence": meta["licence"],
                "drawn": f"{meta['drawn']} of {meta['of']}",
                "seen concepts": int(np.sum(~held_out.numpy())),
                "held-out concepts": int(np.sum(held_out.numpy())),
            }
        )
    return rows


def finished(config: dict, output: pathlib.Path) -> bool:
    """Whether the run of `config` has finished (`output` exists).

    Raises:
        ValueError: a finished run in that folder had another config; reusing
            it would report the wrong run under this row's name.
    """
    if not output.exists():
        return False
    saved = load_config(
        pathlib.Path(config["run_dir"]) / "config.yaml", defaults=DEFAULT_CONFIG
    )
    differ = config_differences(yaml.safe_load(yaml.safe_dump(config)), saved)
    if differ:
        raise ValueError(
            f"{config['run_dir']} holds a finished run of another config "
            f"({', '.join(differ)} differ); remove it or pass another --runs-dir."
        )
    return True


ARTISTS_NOTE = (
    "Training uses the seen concepts of the training artists; the held-out "
    "concepts (the same for every artist, `data.split_seed`) of the training "
    "artists are the validation split, and the test artist's drawings are "
    "the test galleries: all of them (`full`), and those of held-out concepts "
    "(`held-out`). Coverage counts the emoji of emojibase-data 17.0.0 "
    "(CLDR, no skin-tone variants) each package draws."
)
FROM_SCRATCH = (
    '"From scratch": the ResNet image tower, the projections and the graph start '
    "from random weights; the text tower is always the pretrained MiniLM-L6, "
    "frozen."
)
TEXT_LOOKUP = (
    "Every artist's drawing of an emoji has the same text, and the text names "
    "the emoji, so with the text as input the subgroup is read off the text: "
    "these rows measure the text encoder, not the image or the fusion. Both "
    "models have the same frozen pretrained MiniLM-L6 text tower; the image "
    "tower is a small CNN for the baseline and the ResNet + graph for SimMIM, "
    "both from random weights."
)
RETRIEVAL_NOTE = (
    "R@k over the whole test gallery (`full`: every emoji drawn by the test "
    "artist; queries are the CLDR texts), the same split by the query's "
    "concept (`seen` in training, or held out: `unseen`; each against the "
    "whole gallery), and over a gallery of the held-out concepts' drawings "
    "alone (`held-out`: fewer wrong answers than `unseen` has). `dual`: unimodal "
    "embeddings; `rerank`: top-16 re-scored by ITC logit + the graph's ITM "
    "log-odds (none for the CLIP recipe, which trains no ITM head). `seeds`: "
    "recorded / asked; several seeds give mean ± half the "
    "range. " + FROM_SCRATCH
)
VQA_NOTE = (
    "One question per scene of 2×2 emoji on a white canvas, at 64 px (the "
    "128 px recipe costs 4× the time: ResNet-18's 4×4 cells, each emoji on 2×2 "
    "of them), drawn afresh each training epoch (one scene per training "
    "drawing) from the training artists' seen concepts; test scenes are "
    "google's drawings (`test`) and google's drawings of held-out concepts "
    "only (`held-out`). Accuracy over 25 answer classes, overall and per "
    "question type (chance: where 25 %, exists 50 %, count 20 %; group has 10 "
    "classes). SimMIM rows train in mixed_bfloat16, the baseline in float32; "
    "all from random weights except the frozen MiniLM-L6 text tower, for the "
    "same epochs."
)


def training_minutes(record: dict) -> float | None:
    """Minutes the recorded run's epochs took, or None for a run made before
    epochs were timed."""
    seconds = record["epoch_seconds"]
    return sum(seconds) / 60 if seconds else None


def _cost(runs: list[dict]) -> str:
    """The training minutes of a row's recorded runs, all seeds together."""
    minutes = [training_minutes(run) for run in runs]
    if any(m is None for m in minutes):
        return "–"
    return f"{sum(minutes):.0f}"


def _mean_spread(values: list[float]) -> str:
    mean = float(np.mean(values))
    if len(values) == 1:
        return f"{100 * mean:.1f} %"
    return f"{100 * mean:.1f} ± {50 * (max(values) - min(values)):.1f} %"


def _row(name: str, runs: list[dict | None], values) -> dict:
    """A table row of the recorded runs among `runs` (None: pending).

    `values(recorded)` gives the row's value columns; with nothing recorded
    the columns `values` would give read `pending`.
    """
    recorded = [run for run in runs if run is not None]
    row = {"model": name, SEEDS: f"{len(recorded)}/{len(runs)}"}
    if not recorded:
        return {**row, COST: PENDING}
    return {**row, COST: _cost(recorded), **values(recorded)}


# (metrics gallery, column prefix, recalls): the whole gallery, its queries of
# seen and of held-out concepts, and a gallery of the held-out concepts alone.
RETRIEVAL_COLUMNS = (
    ("test", "full", ("R@1", "R@5", "R@10")),
    ("test_seen_queries", "seen", ("R@1",)),
    ("test_held_out_queries", "unseen", ("R@1",)),
    ("test_held_out", "held-out", ("R@1", "R@10")),
)


def retrieval_rows(
    results: dict[str, list[dict | None]],
    rankings: dict[str, tuple[str, ...]],
    direction: str,
) -> list[dict]:
    def recalls(ranking):
        def values(runs):
            row = {}
            for gallery, short, ks in RETRIEVAL_COLUMNS:
                for k in ks:
                    found = [
                        run["metrics"]["retrieval"].get(gallery, {}).get(direction)
                        for run in runs
                    ]
                    # None (shown as –): a record made before this gallery was measured.
                    row[f"{short} {k}"] = (
                        _mean_spread([f[ranking][k] for f in found])
                        if all(found)
                        else None
                    )
            return row

        return values

    return [
        _row(f"{name}, {ranking}", runs, recalls(ranking))
        for name, runs in results.items()
        for ranking in rankings[name]
    ]


def classification_rows(results: dict[str, list[dict | None]]) -> list[dict]:
    def accuracies(runs):
        return {
            f"{label} acc": _mean_spread([r["metrics"]["accuracy"][label] for r in runs])
            for label in ("subgroup", "group")
        }

    return [_row(name, runs, accuracies) for name, runs in results.items()]


def vqa_rows(results: dict[str, list[dict | None]]) -> list[dict]:
    def accuracies(gallery):
        def values(runs):
            by_type = [run["metrics"]["vqa"][gallery] for run in runs]
            return {kind: _mean_spread([r[kind] for r in by_type]) for kind in by_type[0]}

        return values

    return [
        _row(f"{name}, {short}", runs, accuracies(gallery))
        for name, runs in results.items()
        for gallery, short in (("test", "test"), ("test_held_out", "held-out"))
    ]


if __name__ == "__main__":
    main()
