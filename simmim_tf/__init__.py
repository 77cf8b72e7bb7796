"""simmim_tf: image + text understanding through a TF-GNN graph, in Keras 3.

tensorflow-gnn refuses to import unless `TF_USE_LEGACY_KERAS=1` is set before
TensorFlow loads, so this is set first; our own code always uses Keras 3
(`import keras`), never `tf.keras`. On a machine without an NVIDIA driver,
TensorFlow's CUDA start-up lines are dropped (see `simmim_tf.quiet`).
"""

# The imports below must follow the environment set-up: TensorFlow reads it once.
# ruff: noqa: E402
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# INFO lines of TensorFlow's C++ runtime are noise here; warnings and errors stay.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from simmim_tf.quiet import import_tensorflow_quietly

import_tensorflow_quietly()

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
