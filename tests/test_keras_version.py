"""`import simmim_tf` and the Keras versions of the process (see its docstring).

Each case runs in a fresh interpreter, so that the import order is the one the
test writes: TensorFlow picks the Keras behind `tf.keras` once per process.
"""

import os
import subprocess
import sys
import textwrap

import pytest

# The variables under test are removed from the child's environment unless a
# test sets them.
KERAS_VARIABLES = ("TF_USE_LEGACY_KERAS", "KERAS_BACKEND")


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    child_env = {k: v for k, v in os.environ.items() if k not in KERAS_VARIABLES}
    child_env.update(env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=child_env,
        timeout=300,
    )


def last_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


# Prints the Keras 3 version and backend, and which package `tf.keras` is.
REPORT = """
import keras
import tensorflow as tf
import tf_keras

print(
    keras.__version__.split(".")[0],
    keras.backend.backend(),
    tf.keras.layers.Dense is tf_keras.layers.Dense,
    tf_keras.__version__.split(".")[0],
    __import__("os").environ["TF_USE_LEGACY_KERAS"],
)
"""


@pytest.mark.parametrize(
    "before",
    [
        "",  # simmim_tf first
        "import tensorflow",  # TensorFlow imported, tf.keras not used yet
        "import keras",  # Keras 3 imported first
    ],
)
def test_keras_is_3_and_tf_keras_is_keras_2(before):
    result = run_python(f"{before}\nimport simmim_tf\n{REPORT}")
    assert last_line(result) == "3 tensorflow True 2 1"


def test_explicit_tensorflow_backend_is_accepted():
    result = run_python(f"import simmim_tf\n{REPORT}", KERAS_BACKEND="tensorflow")
    assert last_line(result) == "3 tensorflow True 2 1"


def test_tf_keras_used_before_import_gives_a_clear_error():
    # tf.keras is resolved to Keras 3 on first use; tensorflow-gnn cannot load then.
    result = run_python(
        """
        import tensorflow as tf
        assert tf.keras.version().startswith("3.")
        import simmim_tf
        """
    )
    assert result.returncode != 0
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("ImportError: tf.keras is already Keras 3")
    assert "TF_USE_LEGACY_KERAS=1" in error


def test_tf_use_legacy_keras_in_the_environment_allows_any_order():
    result = run_python(
        f"import tensorflow as tf\ntf.keras.layers\nimport simmim_tf\n{REPORT}",
        TF_USE_LEGACY_KERAS="1",
    )
    assert last_line(result) == "3 tensorflow True 2 1"


@pytest.mark.parametrize(
    "env, message",
    [
        (
            {"KERAS_BACKEND": "jax"},
            "ImportError: simmim_tf runs on the TensorFlow backend only, but the "
            "environment sets KERAS_BACKEND='jax'.",
        ),
        (
            {"TF_USE_LEGACY_KERAS": "0"},
            "ImportError: simmim_tf needs TF_USE_LEGACY_KERAS=1",
        ),
    ],
)
def test_unsupported_environment_is_refused_by_name(env, message):
    result = run_python("import simmim_tf", **env)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith(message)
    # Refused before TensorFlow is imported: no traceback from inside it.
    assert "site-packages/tensorflow" not in result.stderr
