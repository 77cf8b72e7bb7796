"""Shared fixtures: tiny models (fast on a 2-core CPU) and the MiniLM tokenizer."""

import importlib.util
import io
import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image

import simmim_tf
from simmim_tf.data import load_emoji_text
from simmim_tf.encoders import build_tokenizer
from simmim_tf.models.retriever import SimMIMRetriever
from simmim_tf.training.config import default_config, save_config

TINY_BACKBONE = dict(
    image_encoder="tiny_16px",
    text_encoder="tiny",
    hidden_dim=16,
    num_heads=2,
    dropout=0.0,
)


TOOLS = pathlib.Path(__file__).resolve().parents[1] / "tools"


def load_tool(name: str):
    """The module `tools/{name}.py` (tools are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_backbone(**overrides) -> simmim_tf.SimMIMBackbone:
    keras.utils.set_random_seed(0)
    return simmim_tf.SimMIMBackbone.from_encoder_configs(**{**TINY_BACKBONE, **overrides})


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def preprocessor(tokenizer):
    return simmim_tf.SimMIMPreprocessor(
        tokenizer=tokenizer, image_size=(16, 16), sequence_length=12
    )


@pytest.fixture(scope="session")
def backbone():
    return tiny_backbone()


@pytest.fixture
def raw_batch():
    rng = np.random.default_rng(0)
    return {
        "images": rng.integers(0, 256, size=(4, 16, 16, 3), dtype=np.uint8),
        "texts": np.array(
            ["grinning face: face, grin", "red heart: love", "cat face", "rocket: space"]
        ),
    }


def run_python_reporting_pytorch(code: str) -> tuple[subprocess.CompletedProcess, list]:
    """Run `code` in a new Python; return the result and the PyTorch modules it loaded.

    The check reads `sys.modules` at the end of the same process, so an import
    anywhere (ours or a dependency's) counts.
    """
    report = (
        "\nimport json, sys\nprint(json.dumps(sorted(m for m in sys.modules"
        " if m.split('.')[0] in ('torch', 'transformers'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code + report],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result, json.loads(result.stdout.strip().splitlines()[-1])


TINY_RUN = dict(
    data={"image_size": 16, "batch_size": 32, "sequence_length": 12},
    model={"image_encoder": "tiny_16px", "text_encoder": "tiny", "hidden_dim": 16},
    finetune={"rerank_k": 4},
)


def export_run_folder(folder, model, data=None, **finetune) -> tuple:
    """Save `model` and its config as a tiny finetune run would (no training:
    export and serving do not care how good the weights are); `data` updates
    the config's data section."""
    config = default_config(
        run_dir=str(folder),
        data={
            **TINY_RUN["data"],
            "data_dir": str(folder.parent / "tfds"),
            **(data or {}),
        },
        model=TINY_RUN["model"],
        finetune={**TINY_RUN["finetune"], **finetune},
    )
    folder.mkdir(parents=True)
    save_config(config, folder / "config.yaml")
    if not model.built:  # as fit leaves it: every head has its weights
        model.build()
    model.save(folder / "model.keras")
    return folder, config


@pytest.fixture(scope="session")
def retrieval_run(tmp_path_factory):
    return export_run_folder(
        tmp_path_factory.mktemp("export") / "ret", SimMIMRetriever(tiny_backbone())
    )


@pytest.fixture(scope="session")
def exported_retriever(retrieval_run, tmp_path_factory):
    """`retrieval_run` exported once as `emoji` version 1; tests only read it
    (test_serving adds other models beside it)."""
    from simmim_tf.export import export_run

    return export_run(
        retrieval_run[0], "emoji", base=tmp_path_factory.mktemp("shared") / "savedmodels"
    )


@pytest.fixture(scope="session")
def google_examples(retrieval_run):
    """Eight google drawings as PNG bytes, with their texts."""
    _, config = retrieval_run
    rows = list(load_emoji_text("google", data_dir=config["data"]["data_dir"]))[:8]
    encoded = []
    for row in rows:
        buffer = io.BytesIO()
        Image.fromarray(row["image"].numpy()).save(buffer, "PNG")
        encoded.append(buffer.getvalue())
    return np.array(encoded, dtype=object), np.array([r["text"].numpy() for r in rows])
