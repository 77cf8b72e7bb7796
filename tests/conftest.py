"""Shared fixtures: tiny models (fast on a 2-core CPU) and the MiniLM tokenizer."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import simmim_tf
from simmim_tf.encoders import build_tokenizer

TINY_BACKBONE = dict(
    image_encoder="tiny_16px",
    text_encoder="tiny",
    hidden_dim=16,
    num_heads=2,
    dropout=0.0,
)


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
