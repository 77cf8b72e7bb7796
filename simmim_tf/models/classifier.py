"""`SimMIMClassifier`: a classification head on the fused embedding."""

from __future__ import annotations

import keras
import keras_hub

from simmim_tf.models.backbone import SimMIMBackbone
from simmim_tf.models.inputs import (
    MODALITIES,
    RefusesEmptyPredict,
    check_modalities,
    model_inputs,
)
from simmim_tf.models.preprocessor import SimMIMPreprocessor


class ClassifierDefaults(RefusesEmptyPredict):
    """`compile()` defaults shared by the classification models."""

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


@keras.saving.register_keras_serializable(package="simmim_tf")
class SimMIMClassifier(ClassifierDefaults, keras_hub.models.Task):
    """Classify an image+text pair from the fused embedding z = (x + y) / sqrt(2).

    Args:
        backbone: `SimMIMBackbone`.
        num_classes: int. Number of classes.
        preprocessor: `SimMIMPreprocessor` or None. When given, `fit`,
            `predict` and `evaluate` take raw `{"images", "texts"}` inputs.
        dropout: float. Dropout before the output layer.
        activation: str or None. Output activation; None gives logits, which is
            what the default loss expects.
        modalities: tuple of str. `("image", "text")`, `("image",)` or
            `("text",)`. A missing modality is absent from the graph (no nodes,
            no edges; its readout is 0, so z = x / sqrt(2) for image only) and
            from the model inputs, and its tower is frozen.

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
        modalities: tuple[str, ...] = MODALITIES,
        **kwargs,
    ):
        if num_classes < 2:
            raise ValueError(f"Number of classes {num_classes} must be >= 2.")
        modalities = check_modalities(modalities)
        # A tower this task never reads gets no gradient: freeze it, so the
        # optimizer neither warns about it nor keeps state for it.
        towers = {"image": backbone.image_tower, "text": backbone.text_tower}
        for modality, tower in towers.items():
            if modality not in modalities:
                tower.trainable = False
        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.output_dropout = keras.layers.Dropout(
            dropout, dtype=backbone.dtype_policy, name="output_dropout"
        )
        # float32 logits under any policy (the Keras mixed-precision advice):
        # an exact softmax and loss, and float32 outputs for serving.
        self.output_dense = keras.layers.Dense(
            num_classes, activation=activation, dtype="float32", name="logits"
        )
        # === Functional Model ===
        inputs = model_inputs(backbone.image_encoder.input_shape[1:], modalities)
        fused = backbone.encode(inputs, modalities)["fused_embedding"]
        outputs = self.output_dense(self.output_dropout(fused))
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        # === Config ===
        self.num_classes = num_classes
        self.dropout = dropout
        self.activation = keras.activations.get(activation)
        self.modalities = modalities

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            dropout=self.dropout,
            activation=keras.activations.serialize(self.activation),
            modalities=self.modalities,
        )
        return config
