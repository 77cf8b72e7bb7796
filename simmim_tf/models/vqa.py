"""`SimMIMVQA`: answer a question about an image from the graph's readouts."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import keras_hub
import numpy as np

from simmim_tf.models.backbone import SimMIMBackbone
from simmim_tf.models.classifier import ClassifierDefaults
from simmim_tf.models.inputs import model_inputs
from simmim_tf.models.preprocessor import SimMIMPreprocessor


@keras.saving.register_keras_serializable(package="simmim_tf")
class SimMIMVQA(ClassifierDefaults, keras_hub.models.Task):
    """Visual question answering as classification over a fixed answer list.

    The question is the text: its tokens are the graph's text nodes. After
    `num_rounds` rounds of attention between the question's tokens and the
    image cells (which carry a position embedding), the readouts x (image)
    and y (question) feed `[x, y, x * y]` -> Dense(gelu) -> Dense(answers).
    With K=0 the question never sees a cell, only the mean of them: it can
    tell *what* is in the image, hardly *where*. That is the point of the task.

    Args:
        backbone: `SimMIMBackbone` whose image encoder takes the scenes (e.g.
            `resnet18_128px` for 128 px scenes).
        answers: sequence of str. The answer classes, in order (e.g.
            `simmim_tf.data.emoji_scenes.ANSWERS`).
        preprocessor: `SimMIMPreprocessor` or None. When given, `fit` and
            `predict` take raw `{"images", "texts"}` (texts = questions).
        hidden_dim: int or None. Width of the hidden layer (None: twice the
            backbone's).
        dropout: float. Dropout before the output layer.

    Example:
    ```python
    vqa = SimMIMVQA(backbone, answers=ANSWERS, preprocessor=preprocessor)
    vqa.fit({"images": scenes["image"], "texts": scenes["question"]},
            scenes["answer_id"], epochs=10)
    vqa.answer({"images": scene[None], "texts": ["where is the red heart?"]})
    ```
    """

    backbone_cls = SimMIMBackbone
    preprocessor_cls = SimMIMPreprocessor

    def __init__(
        self,
        backbone: SimMIMBackbone,
        answers: Sequence[str],
        preprocessor: SimMIMPreprocessor | None = None,
        hidden_dim: int | None = None,
        dropout: float = 0.1,
        **kwargs,
    ):
        answers = tuple(answers)
        if len(answers) < 2 or len(set(answers)) != len(answers):
            raise ValueError(
                f"Answers must be at least 2 distinct strings; got {len(answers)} "
                f"with {len(answers) - len(set(answers))} repeated."
            )
        hidden_dim = hidden_dim or 2 * backbone.hidden_dim
        dtype = backbone.dtype_policy
        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.interaction = keras.layers.Multiply(dtype=dtype, name="interaction")
        self.features = keras.layers.Concatenate(dtype=dtype, name="features")
        self.hidden = keras.layers.Dense(
            hidden_dim, activation="gelu", dtype=dtype, name="hidden"
        )
        self.output_dropout = keras.layers.Dropout(
            dropout, dtype=dtype, name="output_dropout"
        )
        # float32 logits under any policy, as SimMIMClassifier's.
        self.output_dense = keras.layers.Dense(
            len(answers), dtype="float32", name="logits"
        )
        # === Functional Model ===
        inputs = model_inputs(backbone.image_encoder.input_shape[1:])
        encoded = backbone.encode(inputs)
        image, question = (
            encoded["image_graph_embedding"],
            encoded["text_graph_embedding"],
        )
        features = self.features([image, question, self.interaction([image, question])])
        outputs = self.output_dense(self.output_dropout(self.hidden(features)))
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        # === Config ===
        self.answers = answers
        self.hidden_dim = hidden_dim
        self.dropout = dropout

    def answer(self, x, **kwargs) -> np.ndarray:
        """The most likely answer (str) of each example of `x` (as `predict`)."""
        logits = self.predict(x, verbose=0, **kwargs)
        return np.asarray(self.answers)[np.argmax(logits, axis=-1)]

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            answers=self.answers, hidden_dim=self.hidden_dim, dropout=self.dropout
        )
        return config
