"""tools/recall_vs_steps.py: recall points during training, on the sample, tiny models."""

import json

import pytest

from tests.conftest import load_tool

TINY = [
    "data.image_size=16",
    "data.batch_size=32",
    "data.sequence_length=12",
    "model.image_encoder=tiny_16px",
    "model.text_encoder=tiny",
    "model.hidden_dim=16",
    "finetune.rerank_k=4",
]


@pytest.fixture(scope="module")
def tool():
    return load_tool("recall_vs_steps")


def test_each_training_set_gets_its_recall_points(tool, tmp_path, capsys):
    runs, out = tmp_path / "runs", tmp_path / "curve"
    argv = ["--data-dir", str(tmp_path / "tfds"), "--runs-dir", str(runs)]
    argv += ["--out", str(out), "--steps", "20", "--points", "2"]
    argv += ["--train-artists", "twitter", "--train-artists", "twitter,openmoji"]
    for setting in TINY:
        argv += ["--set", setting]
    tool.main(argv)
    curves = json.loads(out.with_suffix(".json").read_text())["curves"]
    assert list(curves) == ["twitter", "twitter+openmoji"]
    for name, points in curves.items():
        steps = [p["step"] for p in points]
        assert len(points) == 2 and steps == sorted(steps) and steps[0] > 0, name
        # The last point is the finished model: what the run's own evaluation wrote.
        metrics = json.loads((runs / name / "metrics_google.json").read_text())
        dual = metrics["metrics"]["retrieval"]["test"]["text_to_image"]["dual"]
        assert points[-1]["R@1"] == pytest.approx(dual["R@1"])
        assert points[-1]["R@10"] == pytest.approx(dual["R@10"])
        assert points[-1]["val_total_loss"] > 0
    assert out.with_suffix(".png").read_bytes().startswith(b"\x89PNG")
    assert "training artists" in capsys.readouterr().out
    # A finished run is read back, not redone.
    (runs / "twitter" / "model.keras").unlink()
    tool.main(argv)
    assert not (runs / "twitter" / "model.keras").exists()
