"""`LateFusionBaseline`: the comparison model without a graph.

A small CNN over the image and an LSTM over the tokens, their features simply
concatenated and classified: no pretrained encoders, no graph. With
`modalities=("image",)` it is a plain CNN classifier.

It is a classifier only: docs/results.md reports it in the classification table
(image+text) and the demo as its image-only CNN row; the retrieval tables have no
baseline row.
"""

from __future__ import annotations

import keras

from simmim_tf.models.classifier import ClassifierDefaults
from simmim_tf.models.inputs import MODALITIES, check_modalities, model_inputs


@keras.saving.register_keras_serializable(package="simmim_tf")
class LateFusionBaseline(ClassifierDefaults, keras.Model):
    """CNN image features + LSTM text features -> concatenation -> dense head.

    Takes the same inputs as `SimMIMBackbone` (what `SimMIMPreprocessor`
    produces), so both train on one pipeline.

    Args:
        num_classes: int. Number of classes.
        vocabulary_size: int. Token id range of the text input.
        image_shape: tuple of 3 ints. Input image shape.
        conv_filters: tuple of int. Filters of the CNN's conv blocks.
        embedding_dim: int. Token embedding width.
        lstm_units: int. LSTM width.
        hidden_dim: int. Width of the fused dense layer.
        dropout: float. Dropout before the output layer.
        modalities: tuple of str. `("image", "text")`, `("image",)` or
            `("text",)`: the branches (and inputs) the model has.

    Example:
    ```python
    baseline = LateFusionBaseline(num_classes=10, vocabulary_size=30522,
                                  image_shape=(64, 64, 3))
    baseline.compile("adam", "sparse_categorical_crossentropy")
    ```
    """

    def __init__(
        self,
        num_classes: int,
        vocabulary_size: int,
        image_shape: tuple[int, int, int] = (64, 64, 3),
        conv_filters: tuple[int, ...] = (32, 64, 128),
        embedding_dim: int = 64,
        lstm_units: int = 64,
        hidden_dim: int = 128,
        dropout: float = 0.2,
        modalities: tuple[str, ...] = MODALITIES,
        **kwargs,
    ):
        modalities = check_modalities(modalities)
        inputs = model_inputs(image_shape, modalities)
        features = []
        if "image" in modalities:
            x = inputs["images"]
            for filters in conv_filters:
                x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
                x = keras.layers.BatchNormalization()(x)
                x = keras.layers.MaxPooling2D()(x)
            features.append(keras.layers.GlobalAveragePooling2D()(x))
        if "text" in modalities:
            embedded = keras.layers.Embedding(vocabulary_size, embedding_dim)(
                inputs["token_ids"]
            )
            mask = keras.ops.cast(inputs["padding_mask"], "bool")
            features.append(keras.layers.LSTM(lstm_units)(embedded, mask=mask))
        fused = keras.layers.Concatenate()(features) if len(features) > 1 else features[0]
        fused = keras.layers.Dense(hidden_dim, activation="relu")(fused)
        fused = keras.layers.Dropout(dropout)(fused)
        logits = keras.layers.Dense(num_classes, name="logits")(fused)
        super().__init__(
            inputs=inputs,
            outputs=logits,
            **kwargs,
        )
        self.num_classes = num_classes
        self.vocabulary_size = vocabulary_size
        self.image_shape = tuple(image_shape)
        self.conv_filters = tuple(conv_filters)
        self.embedding_dim = embedding_dim
        self.lstm_units = lstm_units
        self.hidden_dim = hidden_dim
        self.dropout = dropout
        self.modalities = modalities

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "num_classes": self.num_classes,
            "vocabulary_size": self.vocabulary_size,
            "image_shape": self.image_shape,
            "conv_filters": self.conv_filters,
            "embedding_dim": self.embedding_dim,
            "lstm_units": self.lstm_units,
            "hidden_dim": self.hidden_dim,
            "dropout": self.dropout,
            "modalities": self.modalities,
        }

    @classmethod
    def from_config(cls, config: dict) -> LateFusionBaseline:
        return cls(**config)
