"""The text encoder: a keras-hub `BertBackbone` and its `BertTokenizer`.

Both take any keras-hub preset handle: a local preset folder (keras-hub or
Hugging Face layout), `hf://…`, `kaggle://…` or a keras-hub preset name. The
default is the pretrained MiniLM-L6-H384, fetched into the Keras cache on
first use without PyTorch (see `simmim_tf.encoders.minilm`).
"""

from __future__ import annotations

import keras
import keras_hub

from simmim_tf.encoders.minilm import minilm_preset

TEXT_ENCODER_CONFIGS: dict[str, dict] = {
    # Tests: a random one-layer BERT over MiniLM's vocabulary.
    "tiny": {
        "vocabulary_size": 30522,
        "num_layers": 1,
        "num_heads": 2,
        "hidden_dim": 16,
        "intermediate_dim": 32,
        "max_sequence_length": 64,
    },
}


def build_text_encoder(
    preset: str | None = None,
    dtype: str | keras.DTypePolicy | None = None,
    frozen: bool = False,
) -> keras_hub.models.BertBackbone:
    """Build a keras-hub `BertBackbone` from a preset handle or a config name.

    Args:
        preset: str or None. A key of `TEXT_ENCODER_CONFIGS` (random weights),
            or any handle `keras_hub.models.BertBackbone.from_preset` accepts: a
            local folder, `"hf://sentence-transformers/all-MiniLM-L6-v2"`,
            `"kaggle://keras/bert/keras/bert_tiny_en_uncased"`,
            `"bert_tiny_en_uncased"`. None: the pretrained MiniLM-L6 in the
            Keras cache, fetched on first use.
        dtype: Keras dtype policy (e.g. `"mixed_bfloat16"`); None: the
            preset's (or the global one).
        frozen: bool. Build it frozen: `trainable` False and dropout 0 (the
            same weights). Keras 3 `trainable=False` freezes the weights, not
            the dropout, and a model built over the encoder hands its training
            flag to it: a frozen encoder's dropout would only add noise to
            states that no step trains.

    Example:
    ```python
    encoder = build_text_encoder("tiny")
    encoder.hidden_dim  # 16
    ```
    """
    overrides = {"dropout": 0.0} if frozen else {}
    if preset in TEXT_ENCODER_CONFIGS:
        config = {**TEXT_ENCODER_CONFIGS[preset], **overrides}
        encoder = keras_hub.models.BertBackbone(**config, dtype=dtype)
    else:
        encoder = _from_preset(
            keras_hub.models.BertBackbone, preset, dtype=dtype, **overrides
        )
    encoder.trainable = not frozen
    return encoder


def build_tokenizer(preset: str | None = None) -> keras_hub.models.BertTokenizer:
    """The `BertTokenizer` of a preset handle (default: MiniLM-L6's vocabulary).

    An uncased (lower-casing) tokenizer also strips accents, as BERT's and
    Hugging Face's uncased tokenizers do.

    Args:
        preset: str or None. Any handle `BertTokenizer.from_preset` accepts (see
            `build_text_encoder`); None: the cached MiniLM-L6 folder.
    """
    tokenizer = _from_preset(keras_hub.models.BertTokenizer, preset)
    # Uncased BERT strips accents (Hugging Face: `strip_accents=None` follows
    # `do_lower_case`); keras-hub's converter keeps them, so "café" became [UNK].
    if tokenizer.lowercase:
        tokenizer.strip_accents = True
    return tokenizer


def _from_preset(cls, preset: str | None, **kwargs):
    handle = minilm_preset() if preset is None else preset
    kwargs = {key: value for key, value in kwargs.items() if value is not None}
    try:
        return cls.from_preset(handle, **kwargs)
    except Exception as error:  # keras-hub raises many types; name the handle.
        raise ValueError(
            f"Cannot load text preset {handle!r} with keras_hub.models."
            f"{cls.__name__}.from_preset: {type(error).__name__}: {error}. "
            "Use a local preset folder, hf://…, kaggle://… (needs network), a "
            f"keras-hub preset name, or one of {sorted(TEXT_ENCODER_CONFIGS)}."
        ) from error
