"""The demo: SimMIM vs the late-fusion baseline, trained on one vendor's art.

Both models learn to predict an emoji's `subgroup` from its image and its
CLDR text, train on one vendor (twitter) with `model.fit`, and are evaluated
on another vendor's drawings of the same emoji (google).
"""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
import time

import keras
import numpy as np

from simmim_tf.data import emoji_text_builder
from simmim_tf.data.pipeline import make_dataset
from simmim_tf.encoders import build_tokenizer
from simmim_tf.models.backbone import SimMIMBackbone
from simmim_tf.models.baseline import LateFusionBaseline
from simmim_tf.models.classifier import SimMIMClassifier
from simmim_tf.models.preprocessor import SimMIMPreprocessor


def run_demo(
    *,
    manual_dir: str | None = None,
    data_dir: str | None = None,
    output_dir: str = "runs/demo",
    train_vendor: str = "twitter",
    test_vendor: str = "google",
    label_key: str = "subgroup",
    epochs: int = 20,
    batch_size: int = 32,
    sequence_length: int = 24,
    seed: int = 0,
    verbose: int = 1,
) -> dict:
    """Train SimMIMClassifier and LateFusionBaseline; print and return a table.

    Args:
        manual_dir: str. Folder with the npm tarballs; None uses the bundled
            sample.
        data_dir: str. TFDS data folder (default: see `load_emoji_text`).
        output_dir: str. Where `results.json` and `training_curves.png` go.
        train_vendor: str. Split to train on.
        test_vendor: str. Split to evaluate on (another vendor's artwork).
        label_key: str. `"subgroup"` or `"group"`.
        epochs: int. Training epochs for each model.
        batch_size: int. Batch size.
        sequence_length: int. Token sequence length.
        seed: int. Seed of weights, shuffling and augmentation.
        verbose: int. Keras verbosity (1: progress bars).

    Returns:
        A dict with one row per model: accuracies, parameter counts, seconds.
    """
    keras.utils.set_random_seed(seed)
    builder = emoji_text_builder(manual_dir=manual_dir, data_dir=data_dir)
    num_classes = builder.info.features[label_key].num_classes
    preprocessor = SimMIMPreprocessor(
        tokenizer=build_tokenizer(), image_size=(64, 64), sequence_length=sequence_length
    )

    def split(name, training):
        batches = make_dataset(
            builder.as_dataset(split=name),
            preprocessor,
            label_key=label_key,
            batch_size=batch_size,
            training=training,
            seed=seed,
        )
        # Evaluation batches never change: preprocess them once.
        return batches if training else batches.cache()

    train, test = split(train_vendor, True), split(test_vendor, False)
    same_vendor = split(train_vendor, False)

    backbone = SimMIMBackbone.from_encoder_configs(
        image_encoder="resnet18_64px", hidden_dim=128, num_rounds=2, num_heads=4
    )
    # MiniLM stays frozen: it already knows English, and the CPU budget is small.
    backbone.text_encoder.trainable = False
    models = {
        "SimMIMClassifier (graph, K=2)": SimMIMClassifier(
            backbone=backbone, num_classes=num_classes
        ),
        "LateFusionBaseline (CNN+LSTM)": LateFusionBaseline(
            num_classes=num_classes,
            vocabulary_size=preprocessor.tokenizer.vocabulary_size(),
        ),
    }
    rows, histories = {}, {}
    for name, model in models.items():
        if isinstance(model, LateFusionBaseline):
            model.compile(
                optimizer=keras.optimizers.AdamW(1e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            )
        else:
            model.compile(optimizer=keras.optimizers.AdamW(1e-3))
        print(f"\n== {name} ==")
        start = time.perf_counter()
        # The pipeline shuffles (seeded); Keras cannot shuffle a tf.data.Dataset.
        history = model.fit(
            train, epochs=epochs, validation_data=test, shuffle=False, verbose=verbose
        )
        seconds = time.perf_counter() - start
        histories[name] = history.history
        rows[name] = {
            f"{train_vendor} accuracy": model.evaluate(
                same_vendor, verbose=0, return_dict=True
            )["accuracy"],
            f"{test_vendor} accuracy": model.evaluate(test, verbose=0, return_dict=True)[
                "accuracy"
            ],
            "parameters": model.count_params(),
            "train seconds": seconds,
        }
    print_table(
        rows,
        title=f"{label_key} ({num_classes} classes), "
        f"train {train_vendor} -> test {test_vendor}",
    )
    write_outputs(pathlib.Path(output_dir), rows, histories)
    return rows


def print_table(rows: dict[str, dict], title: str) -> None:
    """Print a result table: one row per model, one column per metric."""
    columns = list(next(iter(rows.values())))
    name_width = max(len(name) for name in rows) + 2
    header = "model".ljust(name_width) + "".join(f"{c:>20}" for c in columns)
    print(f"\n{title}\n{header}\n{'-' * len(header)}")
    for name, row in rows.items():
        cells = "".join(
            f"{v:>20.3f}" if isinstance(v, float) else f"{v:>20,}" for v in row.values()
        )
        print(name.ljust(name_width) + cells)


def write_outputs(output_dir: pathlib.Path, rows: dict, histories: dict) -> None:
    """Write results.json and training_curves.png, each atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        output_dir / "results.json",
        json.dumps({"results": rows, "history": histories}, indent=2),
    )
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, history in histories.items():
        epochs = np.arange(1, len(history["loss"]) + 1)
        axes[0].plot(epochs, history["loss"], label=f"{name} train")
        axes[0].plot(epochs, history["val_loss"], "--", label=f"{name} test")
        axes[1].plot(epochs, history["accuracy"], label=f"{name} train")
        axes[1].plot(epochs, history["val_accuracy"], "--", label=f"{name} test")
    for axis, metric in zip(axes, ("loss", "accuracy"), strict=True):
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    figure.tight_layout()
    with tempfile.NamedTemporaryFile(dir=output_dir, suffix=".png", delete=False) as tmp:
        figure.savefig(tmp.name, dpi=100)
    os.replace(tmp.name, output_dir / "training_curves.png")
    plt.close(figure)
    print(f"wrote {output_dir / 'results.json'} and {output_dir / 'training_curves.png'}")


def atomic_write_text(path: pathlib.Path, text: str) -> None:
    """Write a text file so that readers see the old or the new file, never half."""
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, delete=False, suffix=".tmp"
    ) as tmp:
        tmp.write(text)
    os.replace(tmp.name, path)
