"""`SimMIMClassifier`: a classification head on the fused embedding."""

from __future__ import annotations

import keras
import keras_hub

from simmim_tf.models.backbone import SimMIMBackbone
from simmim_tf.models.preprocessor import SimMIMPreprocessor


@keras.saving.register_keras_serializable(package="simmim_tf")
class SimMIMClassifier(keras_hub.models.Task):
    """Classify an image+text pair from the fused embedding z = (x + y) / sqrt(2).

    Args:
        backbone: `SimMIMBackbone`.
        num_classes: int. Number of classes.
        preprocessor: `SimMIMPreprocessor` or None. When given, `fit`,
            `predict` and `evaluate` take raw `{"images", "texts"}` inputs.
        dropout: float. Dropout before the output layer.
        activation: str or None. Output activation; None gives logits, which is
            what the default loss expects.

    Example:
    ```python
    classifier = SimMIMClassifier(backbone=backbone, num_classes=10,
                                  preprocessor=preprocessor)
    classifier.fit(x={"images": images, "texts": texts}, y=labels, epochs=2)
    ```
    """

    backbone_cls = SimMIMBackbone
    preprocessor_cls = SimMIMPreprocessor

    def __init__(
        self,
        backbone: SimMIMBackbone,
        num_classes: int,
        preprocessor: SimMIMPreprocessor | None = None,
        dropout: float = 0.1,
        activation: str | None = None,
        **kwargs,
    ):
        if num_classes < 2:
            raise ValueError(f"Number of classes {num_classes} must be >= 2.")
        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.output_dropout = keras.layers.Dropout(dropout, name="output_dropout")
        self.output_dense = keras.layers.Dense(
            num_classes, activation=activation, name="logits"
        )
        # === Functional Model ===
        inputs = backbone.input
        fused = backbone(inputs)["fused_embedding"]
        outputs = self.output_dense(self.output_dropout(fused))
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        # === Config ===
        self.num_classes = num_classes
        self.dropout = dropout
        self.activation = keras.activations.get(activation)

    def compile(self, optimizer="auto", loss="auto", *, metrics="auto", **kwargs):
        """Compile with AdamW(1e-3), sparse cross-entropy and accuracy by default."""
        if optimizer == "auto":
            optimizer = keras.optimizers.AdamW(1e-3)
        if loss == "auto":
            # Task.__init__ compiles before `activation` is set.
            activation = keras.activations.get(getattr(self, "activation", None))
            from_logits = activation is not keras.activations.softmax
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
        if metrics == "auto":
            metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            dropout=self.dropout,
            activation=keras.activations.serialize(self.activation),
        )
        return config
