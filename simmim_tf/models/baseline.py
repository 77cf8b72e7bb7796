"""`LateFusionBaseline`: the comparison model without a graph.

A small CNN over the image (trained from scratch, as SimMIM's ResNet is) and
the same frozen text encoder SimMIM uses (MiniLM-L6 by default), mean-pooled
over the real tokens; the two feature vectors are concatenated and classified.
No graph, no pretraining: only the fusion differs from SimMIM, not the text
encoder. With `modalities=("image",)` it is a plain CNN classifier.

It is a classifier only: docs/results.md reports it in the classification table
and the demo as its image-only CNN row; the retrieval tables have no baseline
row.
"""

from __future__ import annotations

import keras

from simmim_tf.models.classifier import ClassifierDefaults
from simmim_tf.models.inputs import (
    MODALITIES,
    check_modalities,
    encode_tokens,
    mean_over_tokens,
    model_inputs,
)


@keras.saving.register_keras_serializable(package="simmim_tf")
class LateFusionBaseline(ClassifierDefaults, keras.Model):
    """CNN image features + mean-pooled text-encoder states -> concatenation -> head.

    Takes the same inputs as `SimMIMBackbone` (what `SimMIMPreprocessor`
    produces), so both train on one pipeline.

    Args:
        num_classes: int. Number of classes.
        text_encoder: keras-hub `BertBackbone` or None. The text branch's
            encoder (frozen unless its `trainable` is set); needed with the
            text modality.
        image_shape: tuple of 3 ints. Input image shape.
        conv_filters: tuple of int. Filters of the CNN's conv blocks.
        hidden_dim: int. Width of the fused dense layer.
        dropout: float. Dropout before the output layer.
        modalities: tuple of str. `("image", "text")`, `("image",)` or
            `("text",)`: the branches (and inputs) the model has.
        dtype: Keras dtype policy of the CNN and the head (build the text
            encoder with the same one).

    Example:
    ```python
    baseline = LateFusionBaseline(num_classes=10, text_encoder=build_text_encoder(),
                                  image_shape=(64, 64, 3))
    baseline.compile("adam", "sparse_categorical_crossentropy")
    ```
    """

    def __init__(
        self,
        num_classes: int,
        text_encoder: keras.Model | None = None,
        image_shape: tuple[int, int, int] = (64, 64, 3),
        conv_filters: tuple[int, ...] = (32, 64, 128),
        hidden_dim: int = 128,
        dropout: float = 0.2,
        modalities: tuple[str, ...] = MODALITIES,
        dtype: str | keras.DTypePolicy | None = None,
        **kwargs,
    ):
        modalities = check_modalities(modalities)
        if "text" in modalities and text_encoder is None:
            raise ValueError(
                "LateFusionBaseline's text branch needs a `text_encoder` (e.g. "
                "`build_text_encoder()`); pass modalities=('image',) for a CNN."
            )
        inputs = model_inputs(image_shape, modalities)
        features = []
        if "image" in modalities:
            x = inputs["images"]
            for filters in conv_filters:
                x = keras.layers.Conv2D(
                    filters, 3, padding="same", activation="relu", dtype=dtype
                )(x)
                x = keras.layers.BatchNormalization(dtype=dtype)(x)
                x = keras.layers.MaxPooling2D(dtype=dtype)(x)
            features.append(keras.layers.GlobalAveragePooling2D(dtype=dtype)(x))
        if "text" in modalities:
            states = encode_tokens(
                text_encoder, inputs["token_ids"], inputs["padding_mask"]
            )
            features.append(mean_over_tokens(states, inputs["padding_mask"]))
        if len(features) > 1:
            fused = keras.layers.Concatenate(dtype=dtype)(features)
        else:
            fused = features[0]
        fused = keras.layers.Dense(hidden_dim, activation="relu", dtype=dtype)(fused)
        fused = keras.layers.Dropout(dropout, dtype=dtype)(fused)
        # float32 logits under any policy, as SimMIMClassifier's.
        logits = keras.layers.Dense(num_classes, dtype="float32", name="logits")(fused)
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        if dtype is not None:
            # A functional model ignores `dtype`; `compile` reads the policy
            # (mixed_float16 gets a LossScaleOptimizer). As keras-hub's Task.
            self.dtype_policy = keras.dtype_policies.get(dtype)
        self.num_classes = num_classes
        self.text_encoder = text_encoder if "text" in modalities else None
        self.image_shape = tuple(image_shape)
        self.conv_filters = tuple(conv_filters)
        self.hidden_dim = hidden_dim
        self.dropout = dropout
        self.modalities = modalities

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "num_classes": self.num_classes,
            "text_encoder": (
                keras.layers.serialize(self.text_encoder)
                if self.text_encoder is not None
                else None
            ),
            "image_shape": self.image_shape,
            "conv_filters": self.conv_filters,
            "hidden_dim": self.hidden_dim,
            "dropout": self.dropout,
            "modalities": self.modalities,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
        }

    @classmethod
    def from_config(cls, config: dict) -> LateFusionBaseline:
        config = dict(config)
        if config.get("text_encoder") is not None:
            config["text_encoder"] = keras.layers.deserialize(config["text_encoder"])
        return cls(**config)
