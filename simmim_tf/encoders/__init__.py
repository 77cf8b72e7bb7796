"""Unimodal encoders: keras-hub ResNet for images, keras-hub BERT for text."""

from simmim_tf.encoders.image import IMAGE_ENCODER_CONFIGS, build_image_encoder
from simmim_tf.encoders.minilm import fetch_minilm, minilm_preset
from simmim_tf.encoders.text import (
    TEXT_ENCODER_CONFIGS,
    build_text_encoder,
    build_tokenizer,
)

__all__ = [
    "IMAGE_ENCODER_CONFIGS",
    "TEXT_ENCODER_CONFIGS",
    "build_image_encoder",
    "build_text_encoder",
    "build_tokenizer",
    "fetch_minilm",
    "minilm_preset",
]
