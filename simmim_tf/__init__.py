"""simmim_tf: image + text understanding through a TF-GNN graph, in Keras 3.

**Importing simmim_tf changes `tf.keras` for the whole process.**
tensorflow-gnn refuses to import unless `tf.keras` is Keras 2, so
`import simmim_tf` sets the environment variable `TF_USE_LEGACY_KERAS=1`
(unless it is already set) before TensorFlow is imported. From then on, in that
process:

* `import keras` is Keras 3 on the TensorFlow backend; all of simmim_tf uses
  it, never `tf.keras`;
* `tf.keras` is Keras 2 (the `tf_keras` package), also in the user's own code,
  and in child processes, which inherit the variable.

TensorFlow picks the Keras behind `tf.keras` on its first use and never again.
Importing `tensorflow` (or `keras`) before simmim_tf is fine; using `tf.keras`
before simmim_tf is not: it is then Keras 3 for good, tensorflow-gnn cannot load,
and `import simmim_tf` raises an `ImportError` saying so. Import simmim_tf
first, or start Python with `TF_USE_LEGACY_KERAS=1` in the environment.

simmim_tf runs on the TensorFlow backend only: `import simmim_tf` raises an
`ImportError` when `KERAS_BACKEND` names another backend (or when Keras was
configured with one, e.g. in `~/.keras/keras.json`), and when
`TF_USE_LEGACY_KERAS` is set to a value that TensorFlow does not read as true.

On a machine without an NVIDIA driver, TensorFlow's CUDA start-up lines are
dropped (see `simmim_tf.quiet`).
"""

# The imports below must follow the environment set-up: TensorFlow reads it once.
# ruff: noqa: E402
import os

# The values TensorFlow reads as "route tf.keras to tf_keras" (tf's lazy_loader).
_LEGACY_KERAS_TRUE = ("true", "True", "1")

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# INFO lines of TensorFlow's C++ runtime are noise here; warnings and errors stay.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")


def _check_environment() -> None:
    """Refuse, naming the variable, a Keras set-up simmim_tf cannot run on."""
    legacy = os.environ["TF_USE_LEGACY_KERAS"]
    if legacy not in _LEGACY_KERAS_TRUE:
        raise ImportError(
            f"simmim_tf needs TF_USE_LEGACY_KERAS=1 (tensorflow-gnn requires "
            f"tf.keras to be Keras 2), but the environment sets "
            f"TF_USE_LEGACY_KERAS={legacy!r}. Unset it or set it to 1."
        )
    backend = os.environ.get("KERAS_BACKEND")
    if backend and backend != "tensorflow":
        raise ImportError(
            f"simmim_tf runs on the TensorFlow backend only, but the environment "
            f"sets KERAS_BACKEND={backend!r}. Unset it or set "
            "KERAS_BACKEND=tensorflow before the first `import keras`."
        )


def _check_keras() -> None:
    """Refuse a Keras or `tf.keras` that was resolved wrongly before our import."""
    import keras
    import tensorflow as tf

    if keras.backend.backend() != "tensorflow":
        raise ImportError(
            f"simmim_tf runs on the TensorFlow backend only, but Keras uses the "
            f"{keras.backend.backend()!r} backend (from KERAS_BACKEND or "
            "~/.keras/keras.json). Set KERAS_BACKEND=tensorflow before the first "
            "`import keras`."
        )
    # The first use of `tf.keras` fixes its Keras version for the process.
    version = getattr(tf.keras, "version", None)
    if version is not None and version().startswith("3."):
        raise ImportError(
            "tf.keras is already Keras 3 in this process: it was used before "
            "`import simmim_tf` set TF_USE_LEGACY_KERAS=1, and tensorflow-gnn "
            "needs tf.keras to be Keras 2. Import simmim_tf before any use of "
            "tf.keras, or set TF_USE_LEGACY_KERAS=1 in the environment before "
            "Python starts."
        )


_check_environment()

from simmim_tf.quiet import import_tensorflow_quietly

import_tensorflow_quietly()
_check_keras()

from simmim_tf.graph.build import build_multimodal_graph
from simmim_tf.graph.encoder import MultimodalGraphEncoder
from simmim_tf.graph.fusion import SqrtTwoFusion
from simmim_tf.graph.layers import (
    GraphAttentionConv,
    GraphAttentionUpdate,
)
from simmim_tf.models.backbone import SimMIMBackbone
from simmim_tf.models.baseline import LateFusionBaseline
from simmim_tf.models.classifier import SimMIMClassifier
from simmim_tf.models.preprocessor import SimMIMPreprocessor

__version__ = "0.1.0"

__all__ = [
    "GraphAttentionConv",
    "GraphAttentionUpdate",
    "LateFusionBaseline",
    "MultimodalGraphEncoder",
    "SimMIMBackbone",
    "SimMIMClassifier",
    "SimMIMPreprocessor",
    "SqrtTwoFusion",
    "build_multimodal_graph",
]
