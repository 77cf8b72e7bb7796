"""Ask a VQA run a question about an image: `simmim-tf ask`."""

from __future__ import annotations

import os
import pathlib

import numpy as np
import tensorflow as tf

from simmim_tf.model_files import load_model_file
from simmim_tf.training.config import load_run_config
from simmim_tf.training.tasks import build_preprocessor


def ask(
    run_dir: str | os.PathLike, image: str | os.PathLike, questions: list[str], k: int = 3
) -> list[list[tuple[str, float]]]:
    """Each question's `k` likeliest answers about one image, with probabilities.

    Args:
        run_dir: a `finetune.task vqa` run folder (`model.keras`, `config.yaml`).
        image: a PNG or JPEG file, e.g. a scene (any size: it is resized).
        questions: the questions, as `emoji_scenes` phrases them.
        k: int. Answers per question.

    Raises:
        FileNotFoundError: no such image or run.
        ValueError: not a VQA run, no question, or an image that does not decode.

    Example:
    ```python
    ask("runs/vqa", "scene.png", ["where is the cat face?"])
    # [[("top left", 0.71), ("bottom left", 0.12), ("top right", 0.09)]]
    ```
    """
    run_dir, image = pathlib.Path(run_dir), pathlib.Path(image)
    config = load_run_config(run_dir, ("vqa",), "ask needs a finetune.task vqa run.")
    if not questions:
        raise ValueError("Ask at least one question.")
    if not image.is_file():
        raise FileNotFoundError(f"No image at {image}.")
    data = image.read_bytes()
    try:  # before the model: name the file, not a batch row
        tf.io.decode_image(data, channels=3, expand_animations=False)
    except tf.errors.InvalidArgumentError:
        raise ValueError(f"{image} is not a PNG, JPEG, GIF or BMP image.") from None
    model = load_model_file(run_dir / "model.keras")
    image_bytes = np.array([data] * len(questions))
    inputs = build_preprocessor(config)(
        {"images": image_bytes, "texts": np.array(questions)}
    )
    probabilities = tf.nn.softmax(model.predict(inputs, verbose=0), -1).numpy()
    top = np.argsort(-probabilities, axis=-1)[:, :k]
    return [
        [(model.answers[i], float(row[i])) for i in ranked]
        for ranked, row in zip(top, probabilities, strict=True)
    ]
