"""Result outputs: PNG figures, markdown tables and reports, atomic writes."""

import os
import re

import numpy as np
import pytest
from PIL import Image

from simmim_tf import atomic
from simmim_tf.atomic import atomic_write_bytes, atomic_write_text
from simmim_tf.evaluation import plots
from simmim_tf.evaluation.plots import plot_retrieval_grid, plot_training_curves
from simmim_tf.evaluation.report import format_table, print_table, write_results_markdown
from simmim_tf.training.config import default_config, save_config
from tests.conftest import load_tool

HISTORIES = {
    "SimMIM": {
        "loss": [2.0, 1.5, 1.2],
        "val_loss": [2.1, 1.8, 1.6],
        "accuracy": [0.2, 0.4, 0.5],
        "val_accuracy": [0.1, 0.3, 0.35],
        "recall_at_1": [0.1, 0.2, 0.3],
        "val_recall_at_1": [0.1, 0.15, 0.2],
        "learning_rate": [1e-3, 1e-3, 1e-3],
    },
    # Longer, and without validation.
    "Baseline": {
        "loss": [2.5, 2.0, 1.8, 1.5, 1.3],
        "accuracy": [0.1, 0.2, 0.3, 0.3, 0.4],
    },
}


def open_png(path):
    with Image.open(path) as image:
        image.verify()
    image = Image.open(path)
    assert image.format == "PNG"
    assert image.mode in ("RGB", "RGBA")
    assert image.width > 0 and image.height > 0
    return image


def retrieval_inputs(num_queries=2, gallery_size=6):
    """Plain grey images: no pixel of theirs looks green or red."""
    gallery = np.full((gallery_size, 8, 8, 3), 128, np.uint8)
    top = np.array([[0, 1, 2, 3, 4], [1, 2, 3, 4, 5]])[:num_queries]
    return ["grinning face", b"red heart"][:num_queries], gallery, top, np.zeros(2, int)


def test_training_curves_png(tmp_path):
    path = plot_training_curves(HISTORIES, tmp_path / "curves" / "training_curves.png")
    assert path == tmp_path / "curves" / "training_curves.png"
    open_png(path)
    assert os.listdir(path.parent) == ["training_curves.png"]


def test_failed_png_write_keeps_the_old_png(tmp_path, monkeypatch):
    path = tmp_path / "training_curves.png"
    path.write_bytes(b"old")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        plot_training_curves(HISTORIES, path)
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["training_curves.png"]


def test_training_curves_pick_metrics_with_val_twins():
    assert plots._curve_metrics(HISTORIES) == ["loss", "accuracy", "recall_at_1"]
    assert plots._curve_metrics({"a": {"loss": [1.0], "mse": [2.0]}}) == ["loss"]


def test_training_curves_errors(tmp_path):
    with pytest.raises(ValueError, match="`histories` is empty"):
        plot_training_curves({}, tmp_path / "a.png")
    with pytest.raises(ValueError, match=re.escape("No metric to plot") + ".*'mse'"):
        plot_training_curves({"run": {"mse": [1.0]}}, tmp_path / "a.png")
    assert not list(tmp_path.iterdir())


def test_retrieval_grid_borders_mark_the_relevant_image(tmp_path):
    # Query 0: the relevant image (0) ranks first; query 1: it is not in the top 5.
    queries, gallery, top, relevant = retrieval_inputs()
    path = plot_retrieval_grid(queries, gallery, top, relevant, tmp_path / "grid.png")
    pixels = np.asarray(open_png(path).convert("RGB")).astype(int)
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    is_green = (green > 140) & (red < 100) & (blue < 100)
    is_red = (red > 180) & (green < 80) & (blue < 80)
    half = pixels.shape[0] // 2
    # A border is a ~5 px line around a ~100 px image: hundreds of pixels.
    assert is_green[:half].sum() > 300
    assert is_red[:half].sum() > 300
    assert is_green[half:].sum() == 0
    assert is_red[half:].sum() > 1200
    # In the upper row, green is rank 1: left of every red border.
    green_columns = np.nonzero(is_green[:half].any(axis=0))[0]
    red_columns = np.nonzero(is_red[:half].any(axis=0))[0]
    assert green_columns.max() < red_columns.min()


@pytest.mark.parametrize(
    "change, message",
    [
        (
            dict(gallery_images=np.zeros((6, 8, 8), np.uint8)),
            "must have shape [G, H, W, 3]",
        ),
        (
            dict(gallery_images=np.zeros((6, 8, 8, 3))),
            "must be uint8 (0-255); got float64",
        ),
        (dict(top_indices=np.zeros((1, 5), int)), "must have shape [2, >=5] (one row"),
        (dict(top_indices=np.zeros((2, 3), int)), "has 3 columns, fewer than k=5"),
        (dict(top_indices=np.zeros((2, 5))), "`top_indices` must be integers"),
        (dict(top_indices=np.full((2, 5), 6)), "index the gallery of 6 images; got"),
        (dict(relevant=np.zeros(3, int)), "`relevant` must have shape [2]"),
        (dict(relevant=np.array([0, -1])), "values in [-1, 0]"),
        (dict(queries=[]), "`queries` is empty"),
        (dict(k=0), "`k` must be a positive int; got 0"),
    ],
)
def test_retrieval_grid_validates_shapes(tmp_path, change, message):
    queries, gallery, top, relevant = retrieval_inputs()
    args = dict(
        queries=queries, gallery_images=gallery, top_indices=top, relevant=relevant
    )
    args.update(change)
    with pytest.raises(ValueError, match=re.escape(message)):
        plot_retrieval_grid(path=tmp_path / "grid.png", **args)
    assert not (tmp_path / "grid.png").exists()


def test_format_table():
    rows = [
        {
            "model": "SimMIM",
            "google accuracy": 0.875,
            "R@1": 0.5,
            "parameters": 1234567,
            "loss": 0.123456,
        },
        {
            "model": "Baseline | LSTM",
            "google accuracy": np.float32(0.8),
            "parameters": np.int64(98765),
            "loss": 1234.6,
            "note": "fast",
        },
    ]
    assert format_table(rows) == (
        "| model            | google accuracy |    R@1 | parameters |  loss | note |\n"
        "| ---------------- | --------------: | -----: | ---------: | ----: | ---- |\n"
        "| SimMIM           |          87.5 % | 50.0 % |  1,234,567 | 0.123 | –    |\n"
        "| Baseline \\| LSTM |          80.0 % |      – |     98,765 | 1,235 | fast |"
    )
    assert format_table(rows, columns=["loss", "R@1"]) == (
        "|  loss |    R@1 |\n| ----: | -----: |\n| 0.123 | 50.0 % |\n| 1,235 |      – |"
    )


def test_format_table_numbers():
    rows = [{"x": 12.0, "acc": 1.5, "R@5": 0.25, "n": 7, "ok": True, "tiny": 1.234e-5}]
    assert format_table(rows).splitlines()[-1] == (
        "| 12.0 | 1.50 | 25.0 % |   7 | True | 1.23e-05 |"
    )
    # "R@k" anywhere in the name is a recall; "R@" alone is not.
    rows = [{"full R@10": 0.5, "t→i R@1 dual": 0.25, "R@": 0.5, "Recall": 0.5}]
    assert format_table(rows).splitlines()[-1] == (
        "|    50.0 % |       25.0 % | 0.500 |  0.500 |"
    )
    with pytest.raises(ValueError, match="at least one row"):
        format_table([])
    assert format_table([], columns=["a"]) == "| a   |\n| --- |"


def test_print_table(capsys):
    rows = {
        "SimMIM": {"accuracy": 0.5, "parameters": 1234, "t→i R@1 dual": 0.125},
        "Baseline": {"accuracy": 0.25, "loss": 1.23456},
    }
    print_table(rows, title="subgroup")
    # The same table, cells and number rules as the markdown reports.
    assert capsys.readouterr().out == (
        "\nsubgroup\n" + format_table([{"model": k, **v} for k, v in rows.items()]) + "\n"
    )
    print_table(rows, title="subgroup")
    assert capsys.readouterr().out == (
        "\nsubgroup\n"
        "| model    | accuracy | parameters | t→i R@1 dual | loss |\n"
        "| -------- | -------: | ---------: | -----------: | ---: |\n"
        "| SimMIM   |   50.0 % |      1,234 |       12.5 % |    – |\n"
        "| Baseline |   25.0 % |          – |            – | 1.23 |\n"
    )


def test_print_table_name_column_and_empty(capsys):
    print_table({"loss": {"value": 0.5}}, title="run", name_column="metric")
    assert capsys.readouterr().out == (
        "\nrun\n| metric | value |\n| ------ | ----: |\n| loss   | 0.500 |\n"
    )
    print_table({}, title="run")
    assert capsys.readouterr().out == "\nrun\n(no rows)\n"
    with pytest.raises(ValueError, match="metric named 'model'"):
        print_table({"a": {"model": "x"}}, title="run")


def test_write_results_markdown(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_results_markdown(
        "report/RESULTS.md",
        title="Emoji retrieval",
        sections=[
            ("Accuracy", [{"model": "SimMIM", "google accuracy": 0.625}], "SimMIM wins."),
            ("Empty", [], ""),
        ],
        command="python -m simmim_tf.cli demo --epochs 2",
        wall_seconds=150.0,
        wall_note="for 3 runs",
        notes="CPU only.\n",
        images=[
            ("Training curves", tmp_path / "report" / "figs" / "curves.png"),
            ("Other", "other.png"),  # Relative to the current directory.
        ],
    )
    assert path.read_text() == (
        "# Emoji retrieval\n\n"
        "Regenerate with: `python -m simmim_tf.cli demo --epochs 2`\n\n"
        "Wall time: 2.5 min for 3 runs\n\n"
        "## Accuracy\n\n"
        "| model  | google accuracy |\n"
        "| ------ | --------------: |\n"
        "| SimMIM |          62.5 % |\n\n"
        "SimMIM wins.\n\n"
        "## Empty\n\n_No results._\n\n"
        "## Figures\n\n"
        "![Training curves](figs/curves.png)\n\n"
        "![Other](../other.png)\n\n"
        "## Notes\n\nCPU only.\n"
    )
    with pytest.raises(ValueError, match="`wall_seconds` must be >= 0; got -1"):
        write_results_markdown(path, title="t", sections=[], command="c", wall_seconds=-1)


def test_atomic_write_replaces_without_leftovers(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("old")
    assert atomic_write_text(target, "new ✓") == target
    assert target.read_text(encoding="utf-8") == "new ✓"
    atomic_write_bytes(tmp_path / "sub" / "data.bin", b"\x00\x01")
    assert (tmp_path / "sub" / "data.bin").read_bytes() == b"\x00\x01"
    assert sorted(os.listdir(tmp_path)) == ["results.json", "sub"]


class HalfWriter:
    """A file whose write stops half-way with an error, like a full disk."""

    def __init__(self, file):
        self.file = file

    def write(self, data):
        self.file.write(data[: len(data) // 2])
        self.file.flush()
        raise OSError("disk full")

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.file.close()


@pytest.mark.parametrize("failure", ["write", "fsync", "replace"])
def test_failed_atomic_write_keeps_old_file(tmp_path, monkeypatch, failure):
    def fail(*args, **kwargs):
        raise OSError("disk full")

    if failure == "write":
        monkeypatch.setattr(
            atomic,
            "open",
            lambda *args, **kw: HalfWriter(open(*args, **kw)),
            raising=False,
        )
    else:
        monkeypatch.setattr(atomic.os, failure, fail)
    target = tmp_path / "training_curves.png"
    target.write_bytes(b"old")
    try:
        with pytest.raises(OSError, match="disk full"):
            atomic_write_text(target, "new" * 1000)
    finally:
        monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["training_curves.png"]


def test_the_report_reuses_a_finished_run_only_under_its_own_config(tmp_path):
    make_report = load_tool("make_report")
    config = default_config(run_dir=str(tmp_path / "run"))
    marker = tmp_path / "run" / "metrics_google.json"
    assert not make_report.finished(config, marker)  # nothing there yet
    save_config(config, tmp_path / "run" / "config.yaml")
    marker.write_text("{}")
    assert make_report.finished(config, marker)
    longer = default_config(run_dir=str(tmp_path / "run"), finetune=dict(epochs=60))
    with pytest.raises(ValueError, match=r"another config \(finetune.epochs differ\)"):
        make_report.finished(longer, marker)


def test_vqa_grid_draws_each_scene_and_refuses_missing_answers(tmp_path):
    scenes = np.full((3, 32, 32, 3), 255, np.uint8)
    questions = ["where is the cat?", "is there a dog?", "how many red heart?"]
    path = plots.plot_vqa_grid(
        scenes,
        questions,
        ["top left", "no", "2"],
        ["top left", "yes", "2"],
        tmp_path / "v.png",
    )
    assert Image.open(path).size[0] > 500
    with pytest.raises(ValueError, match="as many questions and answers as scenes"):
        plots.plot_vqa_grid(scenes, questions, ["no"], ["yes"], tmp_path / "w.png")
    assert not (tmp_path / "w.png").exists()
