"""README command (1), `simmim-tf demo`, shortened by flags: tiny models, one epoch."""

import json

from simmim_tf.demo import DEMO_RUNS
from tests.conftest import run_python_reporting_pytorch

TINY_DEMO = [
    "--epochs=1",
    "--set=model.image_encoder=tiny_16px",
    "--set=model.text_encoder=tiny",
    "--set=model.hidden_dim=16",
    "--set=data.image_size=16",
    "--set=finetune.rerank_k=4",
]


def test_demo_runs_every_row_writes_its_outputs_and_never_imports_pytorch(tmp_path):
    output = tmp_path / "demo"
    args = [*TINY_DEMO, f"--output-dir={output}", f"--data-dir={tmp_path / 'tfds'}"]
    result, pytorch_modules = run_python_reporting_pytorch(
        f"from simmim_tf.cli import main\nassert main(['demo', *{args!r}]) == 0\n"
    )
    assert pytorch_modules == []
    # The table names the artists and every row.
    trained_on = "twitter + openmoji + fluent + emojione (seen concepts)"
    assert f"trained on {trained_on}, tested on google" in result.stdout
    for name, _, _ in DEMO_RUNS:
        assert name in result.stdout
    results = json.loads((output / "results.json").read_text())
    assert results["test_artist"] == "google"
    assert list(results["rows"]) == [name for name, _, _ in DEMO_RUNS]
    for row in results["rows"].values():
        metric = row.get("t→i R@1 dual", row.get("subgroup acc"))
        assert 0.0 <= metric <= 1.0
    for png in ("training_curves.png", "retrieval_google.png"):
        assert (output / png).read_bytes().startswith(b"\x89PNG")
