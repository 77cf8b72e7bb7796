"""Regenerate docs/results.md: every row of the evaluation protocol, one command.

    python tools/make_report.py --manual-dir ~/emoji_npm

(`simmim-tf data fetch --manual-dir ~/emoji_npm` first.) Trains on one
vendor (twitter, seen concepts), tests on another (google): the whole gallery
and the 20 % held-out concepts. Rows: LateFusionBaseline (image only, and with
the same frozen text tower as SimMIM); SimMIM without graph
rounds (K=0); SimMIM from scratch (also for as many epochs as pre-training
plus fine-tuning, the compute-matched control); SimMIM pre-trained with MIM
only, ITC only and all losses; dual-encoder retrieval vs graph re-ranking;
questions about emoji scenes (VQA) for K=0, 1, 2 (GATv2 and dot-product
attention) and the baseline.
Every run trains for its full epochs unless `--patience` is given; the
baselines train for `--baseline-epochs` (their training accuracy flattens
later than SimMIM's). Runs go to `--runs-dir`; rerunning resumes unfinished
runs and reuses finished ones whose saved config is the one asked for (a
finished run of another config is an error naming the keys that differ).
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
import yaml

from simmim_tf import jobs
from simmim_tf.atomic import atomic_write_bytes
from simmim_tf.evaluation.evaluate import (
    GALLERIES,
    RANKINGS,
    metrics_path,
    read_metrics,
)
from simmim_tf.evaluation.plots import plot_training_curves
from simmim_tf.evaluation.report import write_results_markdown
from simmim_tf.training.callbacks import EPOCH_LOG, EPOCH_SECONDS, epoch_history
from simmim_tf.training.config import DEFAULT_CONFIG, default_config, load_config

VQA_IMAGE_SIZE = 64
# Column of every table: the fine-tuning minutes of the row's runs (seeds
# together; pre-training not included), read from their `epochs.csv`.
COST = "train min"
PRETRAIN_VARIANTS = {
    "MIM only": dict(mim_weight=1.0, mlm_weight=0.0, itc_weight=0.0, itm_weight=0.0),
    "ITC only": dict(mim_weight=0.0, mlm_weight=0.0, itc_weight=1.0, itm_weight=0.0),
    "all losses": dict(mim_weight=1.0, mlm_weight=1.0, itc_weight=1.0, itm_weight=1.0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manual-dir", help="npm tarballs (default: bundled sample)")
    parser.add_argument("--data-dir", help="TFDS data folder")
    parser.add_argument("--runs-dir", default="runs/report")
    parser.add_argument("--out", default="docs/results.md")
    parser.add_argument(
        "--notes",
        default="docs/results_notes.md",
        help="hand-written markdown merged under the report's Notes heading",
    )
    defaults = DEFAULT_CONFIG
    parser.add_argument(
        "--pretrain-epochs", type=int, default=defaults["pretrain"]["epochs"]
    )
    parser.add_argument(
        "--finetune-epochs", type=int, default=defaults["finetune"]["epochs"]
    )
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
        "epochs: the validation loss on held-out twitter concepts stops "
        "improving long before cross-vendor recall does)",
    )
    parser.add_argument("--seeds", type=int, default=2, help="seeds of the key rows")
    parser.add_argument(
        "--sequence-length", type=int, default=defaults["data"]["sequence_length"]
    )
    args = parser.parse_args()

    start = time.perf_counter()
    runs = pathlib.Path(args.runs_dir)
    base = default_config(
        data=dict(
            manual_dir=args.manual_dir,
            data_dir=args.data_dir,
            sequence_length=args.sequence_length,
        ),
        pretrain=dict(epochs=args.pretrain_epochs),
        finetune=dict(epochs=args.finetune_epochs, patience=args.patience),
    )
    histories = {}
    runs_made, runs_reused = [], []

    def config(name, seed=0, **sections):
        result = copy.deepcopy(base)
        for key, value in sections.items():
            result[key].update(value)
        result.update(seed=seed, run_dir=str(runs / f"{name}-seed{seed}"))
        return result

    def finetune(name, seed=0, **sections):
        cfg = config(name, seed, **sections)
        metrics_file = metrics_path(cfg["run_dir"], cfg)
        if finished(cfg, metrics_file):
            runs_reused.append(name)
        else:
            jobs.run_finetune(cfg)
            runs_made.append(name)
        histories[name] = json.loads((metrics_file.parent / "history.json").read_text())
        return {
            **read_metrics(cfg["run_dir"], cfg),
            COST: training_minutes(cfg["run_dir"]),
        }

    def pretrain(name, weights):
        cfg = config(f"pretrain-{name}", pretrain=weights)
        backbone = pathlib.Path(cfg["run_dir"]) / "backbone"
        if finished(cfg, backbone):
            runs_reused.append(name)
        else:
            jobs.run_pretrain(cfg)
            runs_made.append(name)
        history = backbone.parent / "history.json"
        histories[f"pretrain {name}"] = json.loads(history.read_text())
        return str(backbone)

    seeds = range(args.seeds)
    retrieval, image_only, image_and_text = {}, {}, {}
    retrieval["SimMIM K=0, from scratch"] = [
        finetune("retrieve-k0", model=dict(num_rounds=0))
    ]
    retrieval["SimMIM K=2, from scratch"] = [
        finetune("retrieve-scratch", s) for s in seeds
    ]
    # As many epochs as pre-training + fine-tuning: the compute-matched control.
    matched = args.pretrain_epochs + args.finetune_epochs
    retrieval[f"SimMIM K=2, from scratch, {matched} epochs"] = [
        finetune("retrieve-scratch-matched", finetune=dict(epochs=matched))
    ]
    backbones = {name: pretrain(name, w) for name, w in PRETRAIN_VARIANTS.items()}
    for name, backbone in backbones.items():
        key = f"SimMIM K=2, pre-trained ({name})"
        count = seeds if name == "all losses" else range(1)
        retrieval[key] = [
            finetune(
                f"retrieve-{name.replace(' ', '-')}", s, model=dict(backbone=backbone)
            )
            for s in count
        ]
    classify = dict(task="classify", label="subgroup")
    baseline = dict(task="baseline", label="subgroup", epochs=args.baseline_epochs)
    image_only["LateFusionBaseline image only (a plain CNN)"] = [
        finetune("baseline-image", finetune=dict(baseline, modalities=["image"]))
    ]
    image_only["SimMIM image only, from scratch"] = [
        finetune("classify-image", finetune=dict(classify, modalities=["image"]))
    ]
    for name in ("ITC only", "all losses"):
        image_only[f"SimMIM image only, pre-trained ({name})"] = [
            finetune(
                f"classify-image-pretrained-{name.replace(' ', '-')}",
                finetune=dict(classify, modalities=["image"]),
                model=dict(backbone=backbones[name]),
            )
        ]
    image_and_text["LateFusionBaseline image+text (CNN + frozen MiniLM-L6)"] = [
        finetune("baseline-frozen-text", finetune=baseline)
    ]
    image_and_text["SimMIM image+text, from scratch"] = [
        finetune("classify-both", finetune=classify)
    ]
    # Scenes of four emoji and one question each; mixed_bfloat16 (1.3x on this
    # CPU, R@1 within 0.3 points) for SimMIM, float32 for the baseline (its
    # BatchNorm and pooling are slower in bf16 here).
    scenes = dict(scenes=True, image_size=VQA_IMAGE_SIZE)
    vqa = dict(task="vqa")
    # Rounds K, and GATv2's additive score against a dot product between a
    # token and a cell.
    simmim_on_scenes = {
        "SimMIM K=0, from scratch": ("vqa-k0", dict(num_rounds=0), seeds),
        "SimMIM K=1, from scratch": ("vqa-k1", dict(num_rounds=1), range(1)),
        "SimMIM K=2, from scratch": ("vqa-k2", dict(num_rounds=2), seeds),
        "SimMIM K=2, dot-product attention, from scratch": (
            "vqa-k2-dot-product",
            dict(attention_type="dot_product"),
            seeds,
        ),
    }
    answers = {
        name: [
            finetune(
                run,
                s,
                data=scenes,
                finetune=vqa,
                model=dict(
                    image_encoder=f"resnet18_{VQA_IMAGE_SIZE}px",
                    dtype="mixed_bfloat16",
                    **model,
                ),
            )
            for s in count
        ]
        for name, (run, model, count) in simmim_on_scenes.items()
    }
    answers["LateFusionBaseline (CNN + frozen MiniLM-L6)"] = [
        finetune("vqa-baseline", s, data=scenes, finetune=dict(task="baseline"))
        for s in seeds
    ]
    figures = []
    if histories:  # read back from every run, finished now or before
        curves = pathlib.Path(args.out).parent / "results_training_curves.png"
        plot_training_curves(histories, curves)
        figures.append(("training curves", str(curves)))
    for variant in ("dual", "rerank"):
        grid = runs / f"retrieve-all-losses-seed0/retrieval_{variant}_google.png"
        if grid.is_file():
            target = pathlib.Path(args.out).parent / f"results_retrieval_{variant}.png"
            atomic_write_bytes(target, grid.read_bytes())
            figures.append(
                (f"text queries and their top-5 google images ({variant})", str(target))
            )

    grid = runs / "vqa-k2-seed0/vqa_google.png"
    if grid.is_file():
        target = pathlib.Path(args.out).parent / "results_vqa.png"
        atomic_write_bytes(target, grid.read_bytes())
        figures.append(("google scenes, their questions and K=2's answers", str(target)))

    command = "python tools/make_report.py " + " ".join(
        shlex.quote(a) for a in sys.argv[1:]
    )
    write_results_markdown(
        args.out,
        title="simmim_tf results: train on twitter artwork, test on google artwork",
        sections=[
            (
                "Text → image retrieval",
                retrieval_rows(retrieval, "text_to_image"),
                RETRIEVAL_NOTE,
            ),
            (
                "Image → text retrieval",
                retrieval_rows(retrieval, "image_to_text"),
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
        wall_seconds=time.perf_counter() - start,
        wall_note=wall_note(runs_made, runs_reused, args.runs_dir),
        notes=pathlib.Path(args.notes).read_text() if args.notes else "",
        images=figures,
    )
    print(f"wrote {args.out}")


def wall_note(made: list, reused: list, runs_dir: str) -> str:
    """What the wall time covers: the runs trained now and those read back."""
    if not made:
        return (
            f"to read back {len(reused)} finished runs from {runs_dir}; none was "
            "trained in this invocation (the notes give their cost)"
        )
    note = f"on {os.cpu_count()} CPU cores for {len(made)} runs"
    if reused:
        note += (
            f"; {len(reused)} more were reused from an earlier invocation in {runs_dir}"
        )
    return note


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
    wanted = _dotted(yaml.safe_load(yaml.safe_dump(config)))
    saved = _dotted(saved)
    differ = sorted(
        key for key in wanted.keys() | saved.keys() if wanted.get(key) != saved.get(key)
    )
    if differ:
        raise ValueError(
            f"{config['run_dir']} holds a finished run of another config "
            f"({', '.join(differ)} differ); remove it or pass another --runs-dir."
        )
    return True


def _dotted(config: dict, prefix: str = "") -> dict:
    """`{"data.batch_size": 64, …}` from a nested config."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_dotted(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


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
    "R@k over the whole test gallery (every emoji drawn by the test vendor; "
    "queries are the CLDR texts) and over the held-out concepts only (never "
    "seen in training). `dual`: unimodal embeddings; `rerank`: top-16 re-scored "
    "by ITC logit + the graph's ITM log-odds. With several seeds: mean ± half the "
    "range. " + FROM_SCRATCH
)

VQA_NOTE = (
    "One question per scene of 2×2 emoji on a white canvas, at 64 px (the "
    "128 px recipe costs 4× the time: ResNet-18's 4×4 cells, each emoji on 2×2 "
    "of them), drawn afresh each "
    "training epoch from twitter's seen concepts; test scenes are google's "
    "drawings (`test`) and google's drawings of held-out concepts only "
    "(`held-out`). Accuracy over 25 answer classes, overall and per question "
    "type (chance: where 25 %, exists 50 %, count 20 %; group has 10 classes). SimMIM "
    "rows train in mixed_bfloat16, the baseline in float32; all from random "
    "weights except the frozen MiniLM-L6 text tower, for the same epochs."
)


def training_minutes(run_dir: str) -> float | None:
    """Minutes the run's epochs took (`epochs.csv`), or None for a run made
    before epochs were logged or timed."""
    if not (pathlib.Path(run_dir) / EPOCH_LOG).is_file():
        return None
    seconds = epoch_history(run_dir).get(EPOCH_SECONDS)
    return sum(seconds) / 60 if seconds else None


def _cost(runs: list[dict]) -> str:
    """The training minutes of a row's runs, all seeds together."""
    minutes = [run[COST] for run in runs]
    if any(m is None for m in minutes):
        return "–"
    return f"{sum(minutes):.0f}"


def _mean_spread(values: list[float]) -> str:
    mean = float(np.mean(values))
    if len(values) == 1:
        return f"{100 * mean:.1f} %"
    return f"{100 * mean:.1f} ± {50 * (max(values) - min(values)):.1f} %"


def retrieval_rows(results: dict[str, list[dict]], direction: str) -> list[dict]:
    rows = []
    for name, runs in results.items():
        for ranking in RANKINGS:
            row = {"model": f"{name}, {ranking}", COST: _cost(runs)}
            for gallery, short in zip(GALLERIES, ("full", "held-out"), strict=True):
                for k in ("R@1", "R@5", "R@10"):
                    row[f"{short} {k}"] = _mean_spread(
                        [run["retrieval"][gallery][direction][ranking][k] for run in runs]
                    )
            rows.append(row)
    return rows


def classification_rows(results: dict[str, list[dict]]) -> list[dict]:
    return [
        {
            "model": name,
            COST: _cost(runs),
            **{
                f"{label} acc": _mean_spread([r["accuracy"][label] for r in runs])
                for label in ("subgroup", "group")
            },
        }
        for name, runs in results.items()
    ]


def vqa_rows(results: dict[str, list[dict]]) -> list[dict]:
    rows = []
    for name, runs in results.items():
        for gallery, short in (("test", "test"), ("test_held_out", "held-out")):
            by_type = [run["vqa"][gallery] for run in runs]
            rows.append(
                {
                    "model": f"{name}, {short}",
                    COST: _cost(runs),
                    **{
                        kind: _mean_spread([r[kind] for r in by_type])
                        for kind in by_type[0]
                    },
                }
            )
    return rows


if __name__ == "__main__":
    main()
