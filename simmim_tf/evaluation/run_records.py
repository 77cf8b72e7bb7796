"""Run records: what a finished run measured, small enough to commit.

A run folder holds the model, checkpoints and logs (hundreds of MB); its record
is one JSON file with the run's config, the digest of the data it read, its
metrics, its training history and its epoch seconds. A report whose runs take
hours on a CPU (`tools/make_report.py`) keeps a record per run under version
control, so it regenerates from the records on any machine, and a new row
needs only its own runs, not all of them again.

Where a run's folder and data live is not part of what it measured: the record
leaves `run_dir`, `data.manual_dir` and `data.data_dir` out of its config and
names the data by the digest of its tarballs (`sources_digest`) instead.
"""

from __future__ import annotations

import copy
import json
import os
import pathlib

from simmim_tf.atomic import atomic_write_text
from simmim_tf.data.emoji_text import SAMPLE_DIR, sources_digest
from simmim_tf.evaluation.evaluate import read_metrics
from simmim_tf.hashing import sha256_file
from simmim_tf.training.callbacks import EPOCH_LOG, EPOCH_SECONDS, epoch_history
from simmim_tf.training.data import training_artists

# Where a run was made, not what it measured.
LOCATION_KEYS = (("run_dir",), ("data", "manual_dir"), ("data", "data_dir"))


def measured_config(config: dict) -> dict:
    """`config` without the keys that say where its run and data live."""
    measured = copy.deepcopy(config)
    for *sections, key in LOCATION_KEYS:
        section = measured
        for name in sections:
            section = section.get(name, {})
        section.pop(key, None)
    return measured


def data_digest(config: dict) -> str:
    """The digest of the tarballs a run of `config` reads (train and test artists)."""
    data = config["data"]
    artists = (*training_artists(data), data["test_artist"])
    return sources_digest(data["manual_dir"] or SAMPLE_DIR, tuple(dict.fromkeys(artists)))


def run_record(config: dict, figures: tuple[str, ...] = ()) -> dict:
    """The record of the finished run of `config` (in `config["run_dir"]`).

    Args:
        config: dict. The run's config; its `run_dir` holds the metrics,
            `history.json` and `epochs.csv` that `simmim_tf.jobs` wrote.
        figures: tuple of str. Files of the run folder (e.g. retrieval grids)
            whose sha256 the record keeps, so a copy of them elsewhere can be
            checked to be this run's; absent ones are skipped.
    """
    run_dir = pathlib.Path(config["run_dir"])
    epochs = run_dir / EPOCH_LOG
    seconds = epoch_history(run_dir).get(EPOCH_SECONDS) if epochs.is_file() else None
    return {
        "config": measured_config(config),
        "data_digest": data_digest(config),
        "metrics": read_metrics(run_dir, config),
        "history": json.loads((run_dir / "history.json").read_text()),
        "epoch_seconds": seconds,
        "figures": {
            name: sha256_file(run_dir / name)
            for name in figures
            if (run_dir / name).is_file()
        },
    }


def record_differences(record: dict, config: dict) -> list[str]:
    """The dotted config keys (and `data_digest`) where `record` was not made
    by `config`; empty when the record is `config`'s run."""
    differ = config_differences(
        json.loads(json.dumps(measured_config(config))), record["config"]
    )
    if record.get("data_digest") != data_digest(config):
        differ.append("data_digest")
    return differ


def write_record(path: str | os.PathLike, record: dict) -> pathlib.Path:
    """Write `record` as JSON, keys sorted: rewriting the same run changes nothing."""
    return atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True) + "\n")


def read_record(path: str | os.PathLike) -> dict | None:
    """The record at `path`, or None when there is none."""
    path = pathlib.Path(path)
    return json.loads(path.read_text()) if path.is_file() else None


def config_differences(first: dict, second: dict) -> list[str]:
    """The dotted keys (sorted) whose values differ between two nested configs,
    a key missing from one of them included."""
    first, second = dotted_config(first), dotted_config(second)
    return sorted(
        key for key in first.keys() | second.keys() if first.get(key) != second.get(key)
    )


def dotted_config(config: dict, prefix: str = "") -> dict:
    """`{"data.batch_size": 64, …}` from a nested config."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(dotted_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
