"""TensorFlow's CUDA start-up noise is dropped on CPU machines; real messages stay."""

import os
import pathlib
import subprocess
import sys

import pytest

from simmim_tf import quiet

QUIET_PY = pathlib.Path(quiet.__file__)


def _run(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
    )


@pytest.mark.skipif(quiet.has_nvidia_driver(), reason="CUDA lines matter with a GPU")
def test_import_simmim_tf_prints_no_cuda_noise():
    stderr = _run("import simmim_tf").stderr
    for noise in (
        "cuInit",
        "cudart_stub",
        "cpu_feature_guard",
        "absl::InitializeLog",
        "jax profiler",  # Grain, imported by keras-hub where installed (dev)
    ):
        assert noise not in stderr


@pytest.mark.skipif(quiet.has_nvidia_driver(), reason="CUDA lines matter with a GPU")
def test_only_the_known_lines_are_dropped(tmp_path):
    # A stand-in `tensorflow` that prints TF's real noise lines and one real
    # message from C++ (fd 2) while importing and scanning devices.
    fake = tmp_path / "tensorflow"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "import os, types\n"
        "os.write(2, b'W0000 All log messages before absl::InitializeLog() is called"
        " are written to STDERR\\n')\n"
        "os.write(2, b'I0000 cudart_stub.cc:31] Could not find cuda drivers on your"
        " machine, GPU will not be used.\\n')\n"
        "os.write(2, b'W0000 op_kernel.cc:1] a real problem\\n')\n"
        "def _scan():\n"
        "    os.write(2, b'E0000 cuda_platform.cc:52] failed call to cuInit: x\\n')\n"
        "    return []\n"
        "config = types.SimpleNamespace(list_physical_devices=_scan)\n"
    )
    code = (
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('q', {str(QUIET_PY)!r})\n"
        "q = importlib.util.module_from_spec(spec); spec.loader.exec_module(q)\n"
        "q.import_tensorflow_quietly(also=())\n"
    )
    stderr = _run(code, PYTHONPATH=str(tmp_path)).stderr
    assert stderr == "W0000 op_kernel.cc:1] a real problem\n"
