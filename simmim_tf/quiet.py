"""Start TensorFlow without the start-up lines that are noise on a CPU-only machine.

On a machine without an NVIDIA driver, TensorFlow prints "Could not find cuda
drivers", a CPU-feature note and "failed call to cuInit" at every start, from
C++ before its log level applies. `import_tensorflow_quietly` runs the import
(of TensorFlow and keras-hub) and the device scan with the process' stderr
sent to a file, then writes back
every line except those known ones, so a real message still reaches the user.
Where a GPU driver exists nothing is filtered: there these lines matter.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pathlib
import re
import sys
import tempfile

NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|cudart_stub\.cc.*Could not find cuda drivers"
    r"|cpu_feature_guard\.cc.*This TensorFlow binary is optimized"
    r"|To enable the following instructions: .*rebuild TensorFlow"
    r"|cuda_platform\.cc.*failed call to cuInit"
    r"|cuda_executor\.cc.*Could not find cuda"
    # keras-hub imports Grain where installed (our dev extra); Grain looks for
    # JAX's profiler, which a TensorFlow install has no use for.
    r"|Failed to load jax profiler: No module named 'jax'"
)


def has_nvidia_driver() -> bool:
    """Whether the NVIDIA kernel driver is loaded (then CUDA lines are not noise)."""
    return pathlib.Path("/proc/driver/nvidia").exists()


def import_tensorflow_quietly(also: tuple[str, ...] = ("keras_hub",)) -> None:
    """Import TensorFlow (then the modules `also`) and scan devices, quietly.

    Only the `NOISE` lines are dropped; everything else reaches stderr.
    """
    if has_nvidia_driver() or "tensorflow" in sys.modules:
        return
    with tempfile.TemporaryFile(mode="w+b") as captured:
        with _stderr_to(captured):
            import tensorflow as tf

            for module in also:
                importlib.import_module(module)
            tf.config.list_physical_devices()
        captured.seek(0)
        kept = [
            line
            for line in captured.read().decode("utf-8", "replace").splitlines(True)
            if not NOISE.search(line)
        ]
    sys.stderr.write("".join(kept))


@contextlib.contextmanager
def _stderr_to(stream):
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(stream.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
