"""Export a run as a versioned SavedModel for TensorFlow Serving: `simmim-tf export`.

`savedmodels/NAME/VERSION/` is TF Serving's layout; `savedmodels/models.config`
lists every exported model (TF Serving's model config text proto, base paths
under `/models`, where the container mounts `savedmodels/`). Each version is
written into a temporary folder and renamed into place: an existing version
is never overwritten, and a failed export leaves nothing behind.

Every signature takes raw data; decoding, resizing, normalising and the BERT
tokenizer (TF Text ops) run inside the graph, so a client needs only
`tensorflow` and `tensorflow_text`:

- classifier runs, `serving_default`: `image_bytes` string `[B]` and/or `text`
  string `[B]` (the run's modalities) -> `probabilities` `[B, C]`, `class_id`
  int64 `[B]`, `class_name` string `[B]`, `fused_embedding` `[B, d]`.
- VQA runs, `serving_default`: `image_bytes` (a scene) and `text` (a
  question) -> `probabilities` over the answers, `class_id`, `class_name`
  (the answer).
- retrieval runs: `embed_image` (`image_bytes`) and `embed_text` (`text`) ->
  `embedding` `[B, d]` (L2-normalised unimodal embeddings); `match`
  (`image_bytes`, `text`) -> `itm_probability` and `itc_score` `[B]`;
  `search` (`text` `[B]`, `k` int32 scalar) -> `ids`, `names`, `scores`
  `[B, k]` over the run's test-artist gallery (baked into the model),
  re-ranked by the graph like `SimMIMRetriever.search`.

`assets/serving.json` records the TensorFlow and TF Text versions the model
was exported with and the minimum TF Serving release that loads it.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import tempfile

import keras
import tensorflow as tf
import tensorflow_text

from simmim_tf.atomic import atomic_write_text
from simmim_tf.data.emoji_scenes import ANSWERS
from simmim_tf.model_files import load_model_file
from simmim_tf.models.classifier import SimMIMClassifier
from simmim_tf.models.inputs import MODALITIES
from simmim_tf.models.retriever import rerank_candidates
from simmim_tf.training.config import load_run_config
from simmim_tf.training.data import load_splits
from simmim_tf.training.tasks import build_preprocessor

EXPORTED_TASKS = ("retrieve", "classify", "vqa")
# Tasks whose model maps inputs to class logits (VQA: answers).
CLASSIFYING_TASKS = ("classify", "vqa")
MODELS_CONFIG = "models.config"
# Where the tensorflow/serving container sees `savedmodels/` (see README).
SERVING_ROOT = "/models"
_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def export_run(
    run_dir: str | os.PathLike,
    name: str,
    *,
    base: str | os.PathLike = "savedmodels",
    version: int | None = None,
) -> pathlib.Path:
    """Export a `finetune` run's `model.keras` as `base/name/version/`.

    Args:
        run_dir: a finetune run folder (task `retrieve` or `classify`).
        name: str. The TF Serving model name (letters, digits, `_.-`).
        base: the TF Serving base folder that holds `models.config`.
        version: int. Default: one more than the highest existing version.

    Returns:
        The new version folder.

    Example:
    ```python
    export_run("runs/ret", "emoji")  # savedmodels/emoji/1/
    ```
    """
    if not _NAME.fullmatch(name):
        raise ValueError(f"Model name {name!r} must match {_NAME.pattern}.")
    model, config = load_run(run_dir)
    model_dir = pathlib.Path(base) / name
    versions = [int(p.name) for p in model_dir.glob("*") if p.name.isdigit()]
    version = max(versions, default=0) + 1 if version is None else version
    if version <= 0:
        raise ValueError(f"Version {version} must be a positive integer.")
    target = model_dir / str(version)
    if target.exists():
        raise FileExistsError(f"{target} exists; versions are never overwritten.")
    if config["finetune"]["task"] == "retrieve":
        module = retrieval_module(model, config)
    else:
        module = classifier_module(model, config)
    model_dir.mkdir(parents=True, exist_ok=True)
    temp = tempfile.mkdtemp(dir=model_dir, prefix=f".{version}.", suffix=".tmp")
    try:
        tf.saved_model.save(module, temp, signatures=module.serving_signatures())
        assets = pathlib.Path(temp) / "assets"
        assets.mkdir(exist_ok=True)
        (assets / "serving.json").write_text(json.dumps(serving_versions(), indent=2))
        os.rename(temp, target)  # fails, rather than overwrite, if it appeared
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    write_models_config(base)
    return target


def load_run(run_dir: str | os.PathLike) -> tuple[keras.Model, dict]:
    """A SimMIM finetune run's model and config (task `retrieve`, `classify` or
    `vqa`)."""
    config = load_run_config(
        run_dir,
        EXPORTED_TASKS,
        f"export takes SimMIM runs (finetune.task one of {EXPORTED_TASKS}).",
    )
    return load_model_file(pathlib.Path(run_dir) / "model.keras"), config


def serving_versions() -> dict[str, str]:
    """TensorFlow and TF Text versions, and the oldest TF Serving that loads them.

    TF Serving links one TF Text release: 2.20 and later the same minor version
    as itself; 2.12-2.19 bundle TF Text 2.12.1.
    """
    text_version = ".".join(tensorflow_text.__version__.split(".")[:2])
    return {
        "tensorflow": tf.__version__,
        "tensorflow_text": tensorflow_text.__version__,
        "min_tensorflow_serving": text_version,
    }


def write_models_config(
    base: str | os.PathLike, root: str = SERVING_ROOT
) -> pathlib.Path:
    """(Re)write `base/models.config` listing every model folder under `base`.

    Base paths are `root/NAME`: where the server sees `base` (the container's
    mount point by default).
    """
    base = pathlib.Path(base)
    names = sorted(
        path.name
        for path in base.iterdir()
        if path.is_dir() and _NAME.fullmatch(path.name) and not path.name.startswith(".")
    )
    entries = "".join(
        "  config {\n"
        f'    name: "{name}"\n'
        f'    base_path: "{root}/{name}"\n'
        '    model_platform: "tensorflow"\n'
        "  }\n"
        for name in names
    )
    return atomic_write_text(
        base / MODELS_CONFIG, "model_config_list {\n" + entries + "}\n"
    )


class _ServingModule(tf.Module):
    """Holds what the signatures use, so that its state is saved.

    Only functional models and layers are attached: a subclassed task (the
    retriever, its objectives) would be traced by SavedModel with a default
    signature it cannot give.
    """

    def __init__(self, model, config: dict):
        super().__init__()
        self.backbone = model.backbone
        self.preprocessors = {
            modality: build_preprocessor(config, modalities=(modality,))
            for modality in ("image", "text")
        }

    # Errors name the signature's own inputs.
    def images(self, image_bytes):
        return self.preprocessors["image"].decode_images(image_bytes, "image_bytes")

    def texts(self, text) -> dict:
        token_ids, padding_mask = self.preprocessors["text"].tokenize(text, "text")
        return {"token_ids": token_ids, "padding_mask": padding_mask}

    @staticmethod
    def paired(image_bytes, text):
        """Control dependencies: one text per image."""
        return [
            tf.debugging.assert_equal(
                tf.size(image_bytes),
                tf.size(text),
                message="`image_bytes` and `text` have different batch sizes; "
                "send one text per image.",
            )
        ]


_IMAGE_BYTES = tf.TensorSpec([None], tf.string, name="image_bytes")
_TEXT = tf.TensorSpec([None], tf.string, name="text")


def classifier_module(model, config: dict) -> _ServingModule:
    """A module whose `serving_default` classifies raw image bytes and/or text.

    A VQA model is a classifier of (scene, question) pairs whose classes are
    the answers: `class_name` is the answer.
    """
    module = _ServingModule(model, config)
    module.class_names = tf.constant(class_names(config))
    modalities = getattr(model, "modalities", MODALITIES)
    outputs = {"logits": model.output}
    if isinstance(model, SimMIMClassifier):
        # The task is functional: its fused embedding is one more output.
        outputs["fused_embedding"] = model.output_dropout.input
    module.heads = keras.Model(model.input, outputs)

    def classify(inputs: dict) -> dict:
        if len(inputs) == 2:
            with tf.control_dependencies(module.paired(**inputs)):
                inputs = {key: tf.identity(value) for key, value in inputs.items()}
        features = {}
        if "image_bytes" in inputs:
            features["images"] = module.images(inputs["image_bytes"])
        if "text" in inputs:
            features.update(module.texts(inputs["text"]))
        outputs = module.heads(features, training=False)
        class_id = tf.argmax(outputs["logits"], axis=-1)
        return {
            "probabilities": tf.nn.softmax(outputs["logits"], axis=-1),
            "class_id": class_id,
            "class_name": tf.gather(module.class_names, class_id),
        } | {key: outputs[key] for key in ("fused_embedding",) if key in outputs}

    specs = {}
    if "image" in modalities:
        specs["image_bytes"] = _IMAGE_BYTES
    if "text" in modalities:
        specs["text"] = _TEXT
    serving_default = tf.function(classify, input_signature=[specs])
    module.serving_signatures = lambda: {"serving_default": serving_default}
    return module


def class_names(config: dict) -> list[str]:
    """The class names of a classifying run: the answers for scene questions,
    else the names of `finetune.label`."""
    if config["data"]["scenes"]:
        return list(ANSWERS)
    return load_splits(config)[1].info.features[config["finetune"]["label"]].names


def retrieval_module(model, config: dict) -> _ServingModule:
    """A module with `embed_image`, `embed_text`, `match` and `search`."""
    from simmim_tf.recommend import gallery_index

    module = _ServingModule(model, config)
    gallery = gallery_index(model, config)
    module.gallery = {
        "embeddings": tf.constant(gallery.embeddings),
        "states": tf.constant(gallery.states),
        "ids": tf.constant(gallery.ids),
        "names": tf.constant(gallery.names),
    }
    rerank_k = int(config["finetune"]["rerank_k"])
    objectives = model.objectives
    module.itm_head = objectives.itm_head
    module.contrastive = objectives.contrastive

    @tf.function(input_signature=[_IMAGE_BYTES])
    def embed_image(image_bytes):
        tower = module.backbone.image_tower(module.images(image_bytes))
        return {"embedding": tf.math.l2_normalize(tower["image_unimodal_embedding"], -1)}

    @tf.function(input_signature=[_TEXT])
    def embed_text(text):
        tower = module.backbone.text_tower(module.texts(text))
        return {"embedding": tf.math.l2_normalize(tower["text_unimodal_embedding"], -1)}

    @tf.function(input_signature=[_IMAGE_BYTES, _TEXT])
    def match(image_bytes, text):
        with tf.control_dependencies(module.paired(image_bytes, text)):
            image_bytes = tf.identity(image_bytes)
        image = module.backbone.image_tower(module.images(image_bytes))
        texts = module.texts(text)
        tower = module.backbone.text_tower(texts)
        cosine = tf.reduce_sum(
            tf.math.l2_normalize(image["image_unimodal_embedding"], -1)
            * tf.math.l2_normalize(tower["text_unimodal_embedding"], -1),
            axis=-1,
        )
        itm = objectives.matching_scores(
            image["image_cell_states"], tower["text_token_states"], texts["padding_mask"]
        )
        return {
            "itm_probability": tf.sigmoid(itm),
            "itc_score": objectives.contrastive.inverse_temperature() * cosine,
        }

    @tf.function(input_signature=[_TEXT, tf.TensorSpec([], tf.int32, name="k")])
    def search(text, k):
        positive = tf.debugging.assert_positive(k, message="`k` must be at least 1.")
        with tf.control_dependencies([positive]):
            k = tf.identity(k)
        texts = module.texts(text)
        tower = module.backbone.text_tower(texts)
        query = tf.math.l2_normalize(tower["text_unimodal_embedding"], -1)
        size = tf.shape(module.gallery["embeddings"])[0]
        k = tf.minimum(k, size)
        depth = tf.maximum(k, tf.minimum(rerank_k, size))
        itc = objectives.contrastive.inverse_temperature() * tf.matmul(
            query, module.gallery["embeddings"], transpose_b=True
        )
        scores, top = tf.math.top_k(itc, k=depth)
        if rerank_k:
            scores, top = _rerank(texts, tower, scores, top)
        return {
            "ids": tf.gather(module.gallery["ids"], top[:, :k]),
            "names": tf.gather(module.gallery["names"], top[:, :k]),
            "scores": scores[:, :k],
        }

    def _rerank(texts, tower, scores, top):
        """As `SimMIMRetriever.search`: ITC logit + ITM log-odds on the top r."""
        rerank = tf.minimum(rerank_k, tf.shape(top)[1])
        candidates = top[:, :rerank]  # [Q, r]
        queries = tf.shape(candidates)[0]
        image_states = tf.gather(module.gallery["states"], tf.reshape(candidates, [-1]))
        repeat = tf.repeat(tf.range(queries), rerank)
        itm = objectives.matching_scores(
            image_states,
            tf.gather(tower["text_token_states"], repeat),
            tf.gather(texts["padding_mask"], repeat),
        )
        return rerank_candidates(scores, top, tf.reshape(itm, [queries, rerank]))

    module.serving_signatures = lambda: {
        "embed_image": embed_image,
        "embed_text": embed_text,
        "match": match,
        "search": search,
    }
    return module
