"""Phone-ready models: `simmim-tf tflite --run-dir R --out DIR`.

Each model of a run is converted in four variants, builtin TFLite ops only
(conversion fails, naming the model, on anything that would need Flex ops):

- `float32`; `float16` (weights stored as float16);
- `dynamic_int8` (int8 weights, float activations);
- `full_int8` (int8 weights and activations, calibrated on the training
  split; float inputs and outputs, so the app code is the same).

Inputs have batch size 1: `pixels` float32 `[1, H, W, 3]`, RGB in [0, 1] at
the model's image size (the app resizes; normalisation is inside);
`token_ids` and `padding_mask` int32 `[1, L]`, from `vocab.txt` and
`simmim_tf/reference_tokenizer.py` (TF Text's ops have no TFLite kernels).

- classifier and VQA runs: `classifier_<variant>.tflite` -> `probabilities`
  `[1, C]`, class names (VQA: the answers) in `labels.txt`.
- retrieval runs: `image_tower_<variant>.tflite` and
  `text_tower_<variant>.tflite` -> `embedding` `[1, d]` (L2-normalised
  unimodal embeddings), and the test artist's gallery as
  `gallery_embeddings.npy` (float32 `[N, d]`) + `gallery.json` (ids, names):
  a phone suggests emoji offline from the text tower and the gallery alone
  (dual-encoder ranking; graph re-ranking stays on the server).

Every variant is verified before it is written: LiteRT runs it on examples
of the validation split (held-out training concepts, never the test artist)
and its outputs are compared with the float model it was converted from. A
variant below the bar (`min_cosine` for embeddings, `min_agreement` top-1 for
a classifier) or one that LiteRT cannot run is refused: not written, and
listed with the reason and the measured number under `refused` in the
manifest. Full int8 of the MiniLM text tower is refused this way (see
docs/deployment.md: its residual stream has outlier features that a
per-tensor int8 scale cannot hold).

`manifest.json` lists every file with its inputs, size and agreement.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pathlib
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from simmim_tf.atomic import atomic_write_bytes, atomic_write_text
from simmim_tf.export import CLASSIFYING_TASKS, class_names, load_run
from simmim_tf.models.inputs import MODALITIES
from simmim_tf.training.data import load_splits
from simmim_tf.training.tasks import build_preprocessor

VARIANTS = ("float32", "float16", "dynamic_int8", "full_int8")
# Calibration examples for full int8 (TFLite's guidance: a few hundred).
CALIBRATION_EXAMPLES = 200
# Validation examples every variant must agree on before it is written.
VERIFICATION_EXAMPLES = 64
# Embeddings: the smallest cosine to the float model's (int8 towers that
# keep their ranking measure 0.99 and more; a broken one 0.4).
MIN_COSINE = 0.9
# Classifiers: top-1 agreement with the float model.
MIN_AGREEMENT = 0.9


def export_tflite(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    variants: tuple[str, ...] = VARIANTS,
    calibration_examples: int = CALIBRATION_EXAMPLES,
    min_cosine: float = MIN_COSINE,
    min_agreement: float = MIN_AGREEMENT,
) -> dict:
    """Convert a finetune run's models to TFLite; returns the manifest.

    Variants that fail verification (see the module docstring) are not
    written; `manifest["refused"]` says why.

    Example:
    ```python
    manifest = export_tflite("runs/ret", "phone")
    manifest["files"]["image_tower_full_int8.tflite"]["agreement"]
    manifest["refused"]  # {"text_tower_full_int8.tflite": {"reason": ...}}
    ```
    """
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"Unknown variants {sorted(unknown)}; choose from {VARIANTS}.")
    model, config = load_run(run_dir)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    preprocessor = build_preprocessor(config)
    modules = phone_models(model, preprocessor, config["finetune"]["task"])
    splits, _ = load_splits(config)
    calibration = calibration_inputs(preprocessor, splits["train"], calibration_examples)
    validation = phone_inputs(
        preprocess_first(preprocessor, splits["validation"], VERIFICATION_EXAMPLES),
        preprocessor.image_converter,
    )
    files, refused = {}, {}
    # Functional models and layers only: SavedModel cannot trace a subclassed task.
    classifying = config["finetune"]["task"] in CLASSIFYING_TASKS
    owner = model if classifying else model.backbone
    for name, (function, specs) in modules.items():
        inputs = {spec.name: validation[spec.name] for spec in specs}
        expected = {
            key: value.numpy()
            for key, value in function(
                {key: tf.constant(value) for key, value in inputs.items()}
            ).items()
        }
        for variant in variants:
            flatbuffer = convert(function, owner, specs, variant, calibration, name)
            filename = f"{name}_{variant}.tflite"
            agreement, failure = verify(
                flatbuffer, inputs, expected, min_cosine, min_agreement
            )
            if failure:
                refused[filename] = {"model": name, "variant": variant, "reason": failure}
                continue
            atomic_write_bytes(out / filename, flatbuffer)
            files[filename] = {
                "model": name,
                "variant": variant,
                "bytes": len(flatbuffer),
                "inputs": {
                    spec.name: [spec.dtype.name, spec.shape.as_list()] for spec in specs
                },
                "agreement": agreement,
            }
    vocabulary = preprocessor.tokenizer.get_vocabulary()
    atomic_write_text(out / "vocab.txt", "\n".join(vocabulary) + "\n")
    if classifying:
        atomic_write_text(out / "labels.txt", "\n".join(class_names(config)) + "\n")
    else:
        from simmim_tf.recommend import gallery_index

        gallery = gallery_index(model, config)
        buffer = _npy_bytes(gallery.embeddings.astype(np.float32))
        atomic_write_bytes(out / "gallery_embeddings.npy", buffer)
        atomic_write_text(
            out / "gallery.json",
            json.dumps({"ids": list(gallery.ids), "names": list(gallery.names)}),
        )
    manifest = {
        "task": config["finetune"]["task"],
        "image_size": list(preprocessor.image_size),
        "sequence_length": preprocessor.sequence_length,
        "tokenizer": {
            "lowercase": bool(preprocessor.tokenizer.lowercase),
            "strip_accents": bool(preprocessor.tokenizer.strip_accents),
        },
        "files": files,
        "refused": refused,
    }
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2))
    return manifest


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def phone_models(model, preprocessor, task: str) -> dict[str, tuple]:
    """`{name: (function, input specs)}`: what each `.tflite` file computes."""
    converter = preprocessor.image_converter
    scale = tf.constant(converter.scale, tf.float32)
    offset = tf.constant(converter.offset, tf.float32)
    height, width = preprocessor.image_size
    length = preprocessor.sequence_length
    pixels = tf.TensorSpec([1, height, width, 3], tf.float32, name="pixels")
    token_ids = tf.TensorSpec([1, length], tf.int32, name="token_ids")
    padding_mask = tf.TensorSpec([1, length], tf.int32, name="padding_mask")

    def images(inputs: dict) -> tf.Tensor:
        return inputs["pixels"] * scale + offset

    def texts(inputs: dict) -> dict:
        return {
            "token_ids": inputs["token_ids"],
            "padding_mask": tf.cast(inputs["padding_mask"], tf.bool),
        }

    if task in CLASSIFYING_TASKS:
        modalities = getattr(model, "modalities", MODALITIES)
        specs = []
        if "image" in modalities:
            specs.append(pixels)
        if "text" in modalities:
            specs += [token_ids, padding_mask]

        def classify(inputs: dict) -> dict:
            features = texts(inputs) if "token_ids" in inputs else {}
            if "pixels" in inputs:
                features["images"] = images(inputs)
            return {"probabilities": tf.nn.softmax(model(features, training=False), -1)}

        return {"classifier": (classify, specs)}
    backbone = model.backbone

    def image_tower(inputs: dict) -> dict:
        tower = backbone.image_tower(images(inputs), training=False)
        return {"embedding": tf.math.l2_normalize(tower["image_unimodal_embedding"], -1)}

    def text_tower(inputs: dict) -> dict:
        tower = backbone.text_tower(texts(inputs), training=False)
        return {"embedding": tf.math.l2_normalize(tower["text_unimodal_embedding"], -1)}

    return {
        "image_tower": (image_tower, [pixels]),
        "text_tower": (text_tower, [token_ids, padding_mask]),
    }


def phone_inputs(x: dict, converter) -> dict[str, np.ndarray]:
    """`SimMIMPreprocessor` outputs as the phone models' batched inputs.

    Pixels go back to [0, 1] (the preprocessor's resize kept, its
    normalisation by `converter` undone); token ids and mask become int32.
    """
    pixels = (np.asarray(x["images"]) - np.array(converter.offset)) / np.array(
        converter.scale
    )
    return {
        "pixels": np.clip(pixels, 0.0, 1.0).astype(np.float32),
        "token_ids": np.asarray(x["token_ids"]).astype(np.int32),
        "padding_mask": np.asarray(x["padding_mask"]).astype(np.int32),
    }


def preprocess_first(preprocessor, examples: tf.data.Dataset, count: int) -> dict:
    """The first `count` feature dicts of `examples`, preprocessed in one batch."""
    batch = next(iter(examples.take(count).batch(count)))
    return preprocessor({"images": batch["image"], "texts": batch["text"]})


def calibration_inputs(
    preprocessor, examples: tf.data.Dataset, count: int
) -> list[dict[str, np.ndarray]]:
    """The first `count` of `examples` (the training split) as phone inputs,
    one example each."""
    phone = phone_inputs(
        preprocess_first(preprocessor, examples, count), preprocessor.image_converter
    )
    return [
        {name: value[i : i + 1] for name, value in phone.items()}
        for i in range(len(phone["pixels"]))
    ]


def verify(
    flatbuffer: bytes,
    inputs: dict[str, np.ndarray],
    expected: dict[str, np.ndarray],
    min_cosine: float,
    min_agreement: float,
) -> tuple[dict, str | None]:
    """Run a converted model in LiteRT on every example of `inputs` and
    compare with `expected` (the float model's outputs).

    Returns the agreement figures and, when the model misses the bar or
    LiteRT cannot run it, the reason to refuse it (else None).
    """
    count = len(next(iter(inputs.values())))
    try:
        lite = LiteModel(flatbuffer)
        answers = [
            lite({key: value[i : i + 1] for key, value in inputs.items()})
            for i in range(count)
        ]
    except RuntimeError as error:  # a kernel refusing at run time
        return {}, f"LiteRT could not run it: {str(error).strip()[:200]}"
    if "embedding" in expected:
        got = np.concatenate([a["embedding"] for a in answers])
        cosine = float(np.min(np.sum(got * expected["embedding"], -1)))
        agreement = {"examples": count, "min_cosine": cosine}
        if not cosine >= min_cosine:  # NaN fails too
            return agreement, (
                f"smallest cosine to the float model {cosine:.3f} on {count} "
                f"validation examples (needs >= {min_cosine})"
            )
        return agreement, None
    got = np.concatenate([a["probabilities"] for a in answers])
    top1 = float(np.mean(got.argmax(-1) == expected["probabilities"].argmax(-1)))
    agreement = {"examples": count, "top1_agreement": top1}
    if not top1 >= min_agreement:
        return agreement, (
            f"top-1 agreement with the float model {top1:.1%} on {count} "
            f"validation examples (needs >= {min_agreement:.0%})"
        )
    return agreement, None


@contextlib.contextmanager
def tflite_converter(
    function,
    owner: tf.Module,
    specs: list[tf.TensorSpec],
    variant: str,
    calibration: list[dict[str, np.ndarray]],
):
    """A `TFLiteConverter` set up for one variant, builtin ops only.

    Goes through Keras's `ExportArchive` SavedModel, as Keras's own LiteRT
    export does: on that path the converter freezes Keras 3 variables into
    constants (a plain `tf.Module` leaves them as resource variables). The
    SavedModel is deleted when the context exits.
    """
    archive = keras.export.ExportArchive()
    archive.track(owner)  # Keras's way of saving its variables as constants-to-be
    archive.add_endpoint(
        "serving_default",
        lambda *args: function(dict(zip([s.name for s in specs], args, strict=True))),
        input_signature=specs,
    )
    folder = tempfile.mkdtemp(prefix="simmim_tflite_")
    try:
        archive.write_out(folder, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if variant != "float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if variant == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if variant == "full_int8":
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.representative_dataset = lambda: (
                [example[spec.name] for spec in specs] for example in calibration
            )
        yield converter
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def convert(
    function,
    owner: tf.Module,
    specs: list[tf.TensorSpec],
    variant: str,
    calibration: list[dict[str, np.ndarray]],
    name: str,
) -> bytes:
    """One variant's flatbuffer, builtin ops only (see `tflite_converter`)."""
    with tflite_converter(function, owner, specs, variant, calibration) as converter:
        try:
            return converter.convert()
        except Exception as error:  # ConverterError and friends: name what failed
            raise ValueError(
                f"TFLite conversion of {name} ({variant}, builtin ops only) "
                f"failed: {error}"
            ) from None


class LiteModel:
    """One `.tflite` model (a file, or its bytes) in LiteRT's interpreter,
    called with a dict.

    Example:
    ```python
    text_tower = LiteModel("phone/text_tower_float32.tflite")
    text_tower({"token_ids": ids, "padding_mask": mask})["embedding"]
    ```
    """

    def __init__(self, model: str | os.PathLike | bytes):
        from ai_edge_litert.interpreter import Interpreter

        if isinstance(model, bytes):
            self.interpreter = Interpreter(model_content=model)
        else:
            self.interpreter = Interpreter(model_path=str(model))
        self.runner = self.interpreter.get_signature_runner("serving_default")

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.runner(**inputs)
