"""simmim_tf: image + text understanding through a TF-GNN graph, in Keras 3.

tensorflow-gnn refuses to import unless `TF_USE_LEGACY_KERAS=1` is set before
TensorFlow loads, so this is set first; our own code always uses Keras 3
(`import keras`), never `tf.keras`.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from simmim_tf.graph.build import build_multimodal_graph  # noqa: E402
from simmim_tf.graph.encoder import MultimodalGraphEncoder  # noqa: E402
from simmim_tf.graph.fusion import SqrtTwoFusion  # noqa: E402
from simmim_tf.graph.layers import (
    GraphAttentionConv,  # noqa: E402
    GraphAttentionUpdate,  # noqa: E402
)
from simmim_tf.models.backbone import SimMIMBackbone  # noqa: E402
from simmim_tf.models.baseline import LateFusionBaseline  # noqa: E402
from simmim_tf.models.classifier import SimMIMClassifier  # noqa: E402
from simmim_tf.models.preprocessor import SimMIMPreprocessor  # noqa: E402

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
