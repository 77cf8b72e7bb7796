"""The demo: what is hard about an artist the model has never seen, in three runs.

Every run is a `finetune` job (`simmim_tf.jobs`): the concept split, the
training loop and the evaluation of `simmim-tf finetune`, with a shorter
schedule. All train on the open artists' drawings (twitter, OpenMoji, Fluent
and EmojiOne 2.3 by default: `data.train_artists`; seen concepts) and are
tested on another artist's drawings of the same emoji (google):

- text→image retrieval over google's whole gallery with SimMIM's retriever:
  its two towers alone (the dual encoder, no graph) against the same
  candidates re-ranked by the graph (K=2 rounds, ITM);
- image-only subgroup classification: SimMIM's image tower + graph against
  a plain CNN (`LateFusionBaseline` with the image branch only).

Image+text classification is left out: the text carries the CLDR name of the
emoji, so it is a text lookup (docs/results.md keeps it as one labelled row).
"""

from __future__ import annotations

import copy
import json
import pathlib
import time
from collections.abc import Sequence

from simmim_tf import jobs
from simmim_tf.atomic import atomic_write_bytes, atomic_write_text
from simmim_tf.evaluation.plots import plot_training_curves
from simmim_tf.evaluation.report import print_table
from simmim_tf.training.config import default_config, load_config

# Each row: (name, what it measures, finetune overrides).
DEMO_RUNS: tuple[tuple[str, str, dict], ...] = (
    ("SimMIM retriever, K=2", "retrieval", {"finetune": {"task": "retrieve"}}),
    (
        "SimMIM, image only",
        "image only",
        {"finetune": {"task": "classify", "modalities": ["image"]}},
    ),
    (
        "CNN baseline, image only",
        "image only",
        {"finetune": {"task": "baseline", "modalities": ["image"]}},
    ),
)
# Few epochs on the 303 training pairs of the sample: enough to see the gap
# between seen and unseen artists, inside a few minutes on a 2-core CPU.
DEMO_EPOCHS = 3


def demo_config(
    output_dir: str | pathlib.Path = "runs/demo",
    overrides: Sequence[str] = (),
    **data,
) -> dict:
    """The finetune config the demo's runs share: the defaults, a shorter schedule.

    Args:
        output_dir: str or path. Folder of the demo; each run gets a subfolder.
        overrides: sequence of str. `key.sub=value` overrides, as `--set`.
        **data: `data` section values (e.g. `manual_dir`, `data_dir`).
    """
    config = default_config(
        run_dir=str(output_dir), data=data, finetune={"epochs": DEMO_EPOCHS}
    )
    return load_config(None, overrides, defaults=config)


def run_demo(config: dict) -> dict:
    """Run the demo runs of `config`; print and write a table and PNGs.

    Writes to `config["run_dir"]`: one folder per run, `results.json`,
    `training_curves.png` and `retrieval_<artist>.png` (text queries with
    their top-5 images, re-ranked by the K=2 graph).

    Args:
        config: dict. A finetune config, e.g. from `demo_config`.

    Returns:
        A dict of rows: run name -> metrics on the test artist and seconds.

    Example:
    ```python
    rows = run_demo(demo_config("runs/demo", ["finetune.epochs=2"]))
    ```
    """
    output_dir = pathlib.Path(config["run_dir"])
    artist = config["data"]["test_artist"]
    label = config["finetune"]["label"]
    rows, histories = {}, {}
    start = time.perf_counter()
    for index, (name, measures, overrides) in enumerate(DEMO_RUNS):
        run = copy.deepcopy(config)
        for section, values in overrides.items():
            run[section].update(values)
        run["run_dir"] = str(output_dir / f"run{index}")
        print(f"\n== {name} ({measures}) ==")
        result = jobs.run_finetune(run)
        histories[name] = result["history"]
        rows[name] = {
            "measures": measures,
            **_headline(result["metrics"], label),
            "parameters": result["model"].count_params(),
            "train s": result["seconds"],
        }
    trained_on = " + ".join(config["data"]["train_artists"])
    print_table(
        rows,
        title=f"trained on {trained_on} (seen concepts), "
        f"tested on {artist} — the whole gallery, "
        f"{config['finetune']['epochs']} epochs",
    )
    grid = output_dir / f"retrieval_{artist}.png"
    atomic_write_bytes(
        grid, (output_dir / "run0" / f"retrieval_rerank_{artist}.png").read_bytes()
    )
    plot_training_curves(histories, output_dir / "training_curves.png")
    atomic_write_text(
        output_dir / "results.json",
        json.dumps({"test_artist": artist, "rows": rows, "history": histories}, indent=2),
    )
    print(
        f"wrote {output_dir / 'results.json'}, {output_dir / 'training_curves.png'} "
        f"and {grid} in {time.perf_counter() - start:.0f} s"
    )
    return rows


def _headline(metrics: dict, label: str) -> dict:
    """The columns a person compares: R@1 / R@10 text→image, or accuracy."""
    if "retrieval" in metrics:
        text_to_image = metrics["retrieval"]["test"]["text_to_image"]
        return {
            "t→i R@1 dual": text_to_image["dual"]["R@1"],
            "t→i R@1 re-ranked": text_to_image["rerank"]["R@1"],
            "t→i R@10 dual": text_to_image["dual"]["R@10"],
        }
    return {f"{label} acc": metrics["accuracy"][label]}
