"""The models of a config: backbone, preprocessor and the task that is trained."""

from __future__ import annotations

import keras

from simmim_tf.data.emoji_scenes import ANSWERS
from simmim_tf.encoders import build_text_encoder, build_tokenizer
from simmim_tf.models.backbone import SimMIMBackbone
from simmim_tf.models.baseline import LateFusionBaseline
from simmim_tf.models.classifier import SimMIMClassifier
from simmim_tf.models.inputs import MODALITIES
from simmim_tf.models.preprocessor import SimMIMPreprocessor
from simmim_tf.models.pretrainer import SimMIMPretrainer
from simmim_tf.models.pretrainer_preprocessor import SimMIMPretrainerPreprocessor
from simmim_tf.models.retriever import SimMIMRetriever
from simmim_tf.models.vqa import SimMIMVQA
from simmim_tf.training.config import DTYPES, TASKS

PRETRAIN_LOSS_WEIGHTS = ("mim_weight", "mlm_weight", "itc_weight", "itm_weight")


def build_backbone(config: dict) -> SimMIMBackbone:
    """The backbone of a config: a preset folder, or new encoders."""
    model = config["model"]
    dtype = model_dtype(config)
    padded_graph = bool(model["jit_compile"])  # XLA needs static graph sizes
    if model["backbone"]:
        backbone = SimMIMBackbone.from_preset(
            str(model["backbone"]), dtype=dtype, padded_graph=padded_graph
        )
    else:
        backbone = SimMIMBackbone.from_encoder_configs(
            image_encoder=model["image_encoder"],
            text_encoder=model["text_encoder"],
            hidden_dim=model["hidden_dim"],
            num_rounds=model["num_rounds"],
            num_heads=model["num_heads"],
            attention_type=model["attention_type"],
            dropout=model["dropout"],
            padded_graph=padded_graph,
            dtype=dtype,
            freeze_text_encoder=not model["train_text_encoder"],
        )
    # A preset's encoder keeps the dropout it was saved with; frozen, it runs
    # in inference mode in retrieval and pre-training (`encode_text`).
    backbone.text_encoder.trainable = bool(model["train_text_encoder"])
    return backbone


def model_dtype(config: dict) -> str:
    """`model.dtype`, the Keras dtype policy of every model of the run.

    Raises:
        ValueError: not one of `DTYPES`.
    """
    dtype = config["model"]["dtype"]
    if dtype not in DTYPES:
        raise ValueError(f"model.dtype {dtype!r} must be one of {DTYPES}.")
    return dtype


def task_modalities(config: dict) -> tuple[str, ...]:
    """What the fine-tuned task reads: both for retrieval, else `finetune.modalities`."""
    if config["finetune"]["task"] == "retrieve":
        return MODALITIES
    return tuple(config["finetune"]["modalities"])


def build_preprocessor(
    config: dict,
    pretraining: bool = False,
    modalities: tuple[str, ...] | None = None,
) -> SimMIMPreprocessor:
    """The fine-tuned task's preprocessor, or with `pretraining` the pretrainer's.

    `modalities` overrides what it reads (e.g. `("text",)` for text queries).
    """
    data = config["data"]
    kwargs = dict(
        tokenizer=build_tokenizer(),
        image_size=(data["image_size"], data["image_size"]),
        sequence_length=data["sequence_length"],
    )
    if pretraining:
        return SimMIMPretrainerPreprocessor(
            **kwargs,
            mask_ratio=config["pretrain"]["mask_ratio"],
            mask_patch_size=config["pretrain"]["mask_patch_size"],
        )
    return SimMIMPreprocessor(**kwargs, modalities=modalities or task_modalities(config))


def build_pretrainer(config: dict) -> SimMIMPretrainer:
    """A new `SimMIMPretrainer` with the `pretrain` section's loss weights."""
    weights = {name: config["pretrain"][name] for name in PRETRAIN_LOSS_WEIGHTS}
    return SimMIMPretrainer(build_backbone(config), **weights)


def build_task_model(config: dict, num_classes: int | None = None) -> keras.Model:
    """A new task model for `finetune.task`: retriever, classifier, baseline or
    VQA.

    Args:
        config: dict. A run config.
        num_classes: int. Classes of `finetune.label` (classification only).
    """
    task = config["finetune"]["task"]
    if task not in TASKS:
        raise ValueError(f"Task {task!r} must be one of {TASKS}.")
    if task == "retrieve":
        return SimMIMRetriever(
            build_backbone(config),
            itm_weight=config["finetune"]["itm_weight"],
            itm_stop_gradient=bool(config["finetune"]["itm_stop_gradient"]),
        )
    if task == "vqa":
        if not config["data"]["scenes"]:
            raise ValueError(
                "finetune.task vqa answers questions about scenes: set data.scenes "
                "true (and see its recipe in the config defaults)."
            )
        return SimMIMVQA(build_backbone(config), answers=ANSWERS)
    if task == "classify":
        return SimMIMClassifier(
            backbone=build_backbone(config),
            num_classes=num_classes,
            modalities=task_modalities(config),
        )
    image_size = config["data"]["image_size"]
    modalities = task_modalities(config)
    text_encoder = None
    if "text" in modalities:
        # The same text tower as SimMIM's, frozen the same way: the comparison
        # measures the fusion, not the text encoder.
        text_encoder = build_text_encoder(
            config["model"]["text_encoder"],
            dtype=model_dtype(config),
            frozen=not config["model"]["train_text_encoder"],
        )
    return LateFusionBaseline(
        num_classes=num_classes,
        text_encoder=text_encoder,
        image_shape=(image_size, image_size, 3),
        modalities=modalities,
        dtype=model_dtype(config),
    )
