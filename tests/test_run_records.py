"""Run records (`simmim_tf.evaluation.run_records`) and the report that reads
them (`tools/make_report.py`): a row comes from its record on a machine
without the run, only missing runs train, and a stale record is never used.

The run folders here are written by hand, as `simmim_tf.jobs.run_finetune`
lays them out (config, metrics, history, epoch log, a figure): the records only
read those files, and training a real run for each case would take minutes.
"""

import json
import pathlib

import pytest

from simmim_tf.evaluation import run_records
from simmim_tf.evaluation.evaluate import write_metrics
from simmim_tf.training.config import save_config
from simmim_tf.training.data import load_splits
from tests.conftest import load_tool

RECALLS = {"R@1": 0.25, "R@5": 0.5, "R@10": 0.75}


def retrieval_metrics(r_at_1: float) -> dict:
    by_ranking = {"dual": {**RECALLS, "R@1": r_at_1}, "rerank": RECALLS}
    direction = {"text_to_image": by_ranking, "image_to_text": by_ranking}
    return {"retrieval": {"test": direction, "test_held_out": direction}}


def write_finished_run(config: dict, r_at_1: float, seconds=(60.0, 90.0)) -> None:
    """A finished run folder of `config`, as `run_finetune` leaves it."""
    folder = pathlib.Path(config["run_dir"])
    folder.mkdir(parents=True)
    save_config(config, folder / "config.yaml")
    write_metrics(folder, config, retrieval_metrics(r_at_1))
    (folder / "history.json").write_text(json.dumps({"itc_loss": [2.0, 1.5]}))
    log = "epoch,epoch_seconds,itc_loss\n" + "".join(
        f"{i},{s},{2.0 - i / 2}\n" for i, s in enumerate(seconds)
    )
    (folder / "epochs.csv").write_text(log)
    (folder / "retrieval_dual_google.png").write_bytes(b"a png of this run")


@pytest.fixture()
def report(tmp_path):
    make_report = load_tool("make_report")
    base = make_report.default_config()

    def new_report(train=None, runs="runs"):
        return make_report.Report(base, tmp_path / runs, tmp_path / "records", train)

    return make_report, new_report


def test_a_record_holds_what_the_run_measured_not_where_it_ran(tmp_path):
    make_report = load_tool("make_report")
    config = make_report.default_config(run_dir=str(tmp_path / "a"))
    write_finished_run(config, 0.4)
    record = run_records.run_record(config, ("retrieval_dual_google.png", "absent.png"))
    assert record["metrics"] == retrieval_metrics(0.4)
    assert record["history"] == {"itc_loss": [2.0, 1.5]}
    assert record["epoch_seconds"] == [60.0, 90.0]
    assert list(record["figures"]) == ["retrieval_dual_google.png"]
    assert "run_dir" not in record["config"]
    assert "manual_dir" not in record["config"]["data"]
    # Written and read back: the same record, and its config matches.
    path = run_records.write_record(tmp_path / "records" / "a.json", record)
    assert run_records.read_record(path) == record
    assert run_records.read_record(tmp_path / "none.json") is None
    # Another folder and data dir: the same run. Another value: not.
    moved = make_report.default_config(
        run_dir=str(tmp_path / "elsewhere"), data={"data_dir": str(tmp_path / "tfds")}
    )
    assert run_records.record_differences(record, moved) == []
    longer = make_report.default_config(finetune={"epochs": 60})
    assert run_records.record_differences(record, longer) == ["finetune.epochs"]
    # Other tarballs (another artist's) are other data, even in the same config.
    record["data_digest"] = "0" * 12
    assert run_records.record_differences(record, moved) == ["data_digest"]


def test_the_report_reads_a_recorded_row_without_its_run_and_trains_only_what_is_missing(
    report, tmp_path, monkeypatch
):
    make_report, new_report = report
    first = new_report()
    write_finished_run(first.config("retrieve", 0), 0.4)
    trained = []

    def run_finetune(config):  # trains the missing run: here, writes its folder
        trained.append(pathlib.Path(config["run_dir"]).name)
        write_finished_run(config, 0.6)

    monkeypatch.setattr(make_report.jobs, "run_finetune", run_finetune)
    runs = [first.run("retrieve", s) for s in range(2)]
    assert trained == ["retrieve-seed1"]
    assert (first.reused, first.made) == (["retrieve-seed0"], ["retrieve-seed1"])
    assert first.training_seconds > 0 and "to train 1 run now" in first.wall_note()
    records = sorted(p.name for p in (tmp_path / "records").iterdir())
    assert records == ["retrieve-seed0.json", "retrieve-seed1.json"]

    # Another machine: the records, no run folders. Nothing trains.
    monkeypatch.setattr(make_report.jobs, "run_finetune", None)
    again = new_report(train=(), runs="other_runs")
    read_back = [again.run("retrieve", s) for s in range(2)]
    strip = [{k: v for k, v in r.items() if k != "run_name"} for r in runs]
    assert [{k: v for k, v in r.items() if k != "run_name"} for r in read_back] == strip
    assert again.reused == ["retrieve-seed0", "retrieve-seed1"] and not again.pending
    # A third seed and a run of another config have no record: pending.
    assert again.run("retrieve", 2) is None
    assert again.run("retrieve", 0, finetune={"epochs": 60}) is None
    assert again.pending == ["retrieve-seed2", "retrieve-seed0"]
    assert (
        again.wall_note().startswith("on ") and "to train 0 runs now" in again.wall_note()
    )
    assert "2 runs pending" in again.wall_note() and again.training_seconds == 0
    # Asked to train one of them by name: only that one trains.
    monkeypatch.setattr(make_report.jobs, "run_finetune", run_finetune)
    named = new_report(train=("retrieve-seed2",), runs="other_runs")
    assert named.run("retrieve", 3) is None and named.run("retrieve", 2) is not None
    assert trained == ["retrieve-seed1", "retrieve-seed2"]
    assert named.pending == ["retrieve-seed3"]

    rows = make_report.retrieval_rows(
        {"two of three": read_back + [None], "none yet": [None]},
        {"two of three": ("dual", "rerank"), "none yet": ("dual",)},
        "text_to_image",
    )
    assert rows[0]["seeds"] == "2/3"
    assert rows[0]["full R@1"] == "50.0 ± 10.0 %"  # 0.4 and 0.6
    assert rows[0]["train min"] == "5"  # 2.5 min per run, recorded
    assert rows[0]["seen R@1"] is None  # not in these records: shown as –
    assert len(rows) == 3 and rows[1]["model"] == "two of three, rerank"
    assert rows[2] == {
        "model": "none yet, dual",
        "seeds": "0/1",
        "train min": "pending",
    }


def test_the_report_shows_a_figure_only_when_it_is_the_recorded_runs(report, tmp_path):
    _, new_report = report
    made = new_report()
    write_finished_run(made.config("retrieve", 0), 0.4)
    record = made.run("retrieve", 0)
    target = tmp_path / "docs" / "dual.png"
    target.parent.mkdir()
    assert made.figure(record, "retrieval_dual_google.png", target) == str(target)
    assert target.read_bytes() == b"a png of this run"
    assert made.figure(record, "vqa_google.png", tmp_path / "docs" / "v.png") is None
    # Without the run folder the copy is kept while it is this run's.
    elsewhere = new_report(train=(), runs="other_runs")
    record = elsewhere.run("retrieve", 0)
    assert elsewhere.figure(record, "retrieval_dual_google.png", target) == str(target)
    target.write_bytes(b"another run's png")
    assert elsewhere.figure(record, "retrieval_dual_google.png", target) is None
    assert elsewhere.figure(None, "retrieval_dual_google.png", target) is None


def test_the_report_counts_each_artists_seen_and_held_out_drawings(tmp_path):
    make_report = load_tool("make_report")
    config = make_report.default_config(data={"data_dir": str(tmp_path / "tfds")})
    rows = {row["artist"]: row for row in make_report.artist_rows(config)}
    assert list(rows) == [*config["data"]["train_artists"], "google"]
    assert [row["role"] for row in rows.values()] == ["train"] * 4 + ["test"]
    splits, builder = load_splits(config)
    for artist, row in rows.items():
        drawings = builder.info.splits[artist].num_examples
        assert row["seen concepts"] + row["held-out concepts"] == drawings
    # The test artist's held-out drawings are the held-out gallery.
    held_out_gallery = sum(1 for _ in splits["test_held_out"])
    assert rows["google"]["held-out concepts"] == held_out_gallery > 0
