"""Run configs: the schema and its defaults, YAML/JSON files, `--set` overrides.

`DEFAULT_CONFIG` is every key a job reads, with its default: the documented
recipe of docs/results.md. Files and `key.sub=value` overrides are merged over
it by `load_config`, which refuses keys the schema does not have.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from simmim_tf.atomic import atomic_write_text

DEFAULT_CONFIG: dict = {
    "seed": 0,
    "run_dir": "runs/experiment",
    "data": {
        "manual_dir": None,  # None: the bundled sample
        "data_dir": None,
        # Artists (`simmim_tf.data.artists.ARTISTS`) drawn for training, and
        # the unseen one tested on; never train on the test artist's art (nor
        # its earlier art: noto_v1 is Google's). Every open artist but
        # google's: variety of artists, not epochs, is what carries recall to
        # an unseen artist (issue 11).
        "train_artists": ["twitter", "openmoji", "fluent", "emojione"],
        "test_artist": "google",
        "held_out_fraction": 0.2,
        # Which concepts are held out: one split for pre-training and every
        # fine-tuning seed, so no stage trains on another's held-out concepts.
        "split_seed": 0,
        "batch_size": 64,  # contrastive losses want many in-batch negatives
        "sequence_length": 16,  # longer texts are truncated
        "image_size": 64,
        # Training augmentation beyond zoom, shift and colour jitter
        # (`simmim_tf.data.pipeline.augment`); issue 11's CLIP recipe uses
        # 15 degrees and 0.1.
        "rotation_degrees": 0.0,
        "grayscale_probability": 0.0,
        # Emoji scenes with questions (VQA, `simmim_tf.data.emoji_scenes`)
        # in place of single drawings: every split becomes scenes of its own
        # drawings, the label is the answer. The recipe: image_size 128,
        # model.image_encoder resnet18_128px, finetune.task vqa.
        "scenes": False,
        "scene_grid": 2,
        "scenes_per_drawing": 2,
    },
    "model": {
        "backbone": None,  # a preset folder (e.g. a pretrain run's backbone/)
        "image_encoder": "resnet18_64px",
        "text_encoder": None,  # None: pretrained MiniLM-L6
        "train_text_encoder": False,
        # Retrieval and pre-training: a frozen text encoder's states are
        # computed once per run (inference mode) and looked up every step.
        "cache_text_states": True,
        "hidden_dim": 128,
        "num_rounds": 2,
        "num_heads": 4,
        "attention_type": "gatv2",
        "dropout": 0.1,
        # Keras dtype policy of every model: "mixed_bfloat16" computes in
        # bfloat16 with float32 weights and losses (1.4x a float32 step on
        # this repo's 2-core AVX512-BF16 CPU); "mixed_float16" for GPUs.
        "dtype": "float32",
        # Compile each training step with XLA (Keras `jit_compile`); the graph
        # is then built with static sizes (`padded_graph`), as XLA needs.
        "jit_compile": False,
    },
    "pretrain": {
        "epochs": 10,
        "learning_rate": 1e-3,
        "weight_decay": 0.004,  # AdamW's, on every weight (Keras's default)
        "schedule": "cosine",
        "mim_weight": 1.0,
        "mlm_weight": 1.0,
        "itc_weight": 1.0,
        "itm_weight": 1.0,
        "mask_ratio": 0.6,
        "mask_patch_size": 16,
    },
    "finetune": {
        "task": "retrieve",  # retrieve | classify | baseline | vqa (scenes)
        "label": "subgroup",
        "modalities": ["image", "text"],
        "epochs": 20,
        "learning_rate": 1e-3,
        "weight_decay": 0.004,
        "schedule": "cosine",
        # None: train every epoch. Validation loss on the training artists' held-out
        # concepts stops improving long before cross-artist recall does.
        "patience": None,
        "rerank_k": 16,
        # Retrieval: the ITM loss's weight, and whether its gradient stops at
        # the towers (ITM then trains the graph and its head, ITC the towers).
        "itm_weight": 1.0,
        "itm_stop_gradient": False,
        # Epochs of ITC alone before ITM joins (ALBEF's order); 0: from the start.
        "itm_warmup_epochs": 0,
    },
    # Devices and hosts (`simmim_tf.training.distribute`, docs/distributed.md):
    # default | mirrored (several devices of a host) | multi_worker (hosts of
    # TF_CONFIG) | tpu (needs model.jit_compile). data.batch_size is the
    # global batch.
    "distribute": {
        "strategy": "default",
        "devices": None,  # mirrored: e.g. ["/gpu:0", "/gpu:1"]; None: every GPU
        "tpu": None,  # tpu: a TPU name or grpc:// address; None: this TPU VM's
    },
}
TASKS = ("retrieve", "classify", "baseline", "vqa")
DTYPES = ("float32", "mixed_bfloat16", "mixed_float16", "bfloat16", "float16")
SCHEDULES = ("cosine", "constant")


def default_config(**sections) -> dict:
    """A deep copy of `DEFAULT_CONFIG` with some sections updated."""
    config = copy.deepcopy(DEFAULT_CONFIG)
    for key, value in sections.items():
        if isinstance(value, dict):
            config[key].update(value)
        else:
            config[key] = value
    return config


_PARSERS = {".yaml": "YAML", ".yml": "YAML", ".json": "JSON"}


def load_config(
    path: str | os.PathLike | None,
    overrides: Sequence[str] = (),
    defaults: Mapping[str, Any] | None = None,
) -> dict:
    """Load a config file, deep-merge it over `defaults`, then apply overrides.

    Nested mappings merge key by key; any other value (lists included) in the
    file replaces the default. Overrides are applied last, in order. Each is
    `dotted.key=value`, the value parsed with `yaml.safe_load`, so `3`, `0.5`,
    `true`, `null` and `[1, 2]` get their types and a plain word stays a string.
    When `defaults` are given they are the schema of the overrides: a key they
    do not have is an error, so a typo never silently does nothing.

    Args:
        path: str, `PathLike` or None. A `.yaml`, `.yml` or `.json` file whose
            top level is a mapping; None uses `defaults` alone.
        overrides: sequence of str. `key.sub=value` overrides, e.g. from the CLI.
        defaults: mapping or None. Default values; not modified.

    Returns:
        A new dict.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: unknown extension, malformed file, an override without `=`,
            or an override of a key that `defaults` do not have.

    Example:
    ```python
    config = load_config(
        None,
        overrides=["train.epochs=3", "train.lr=5e-4"],
        defaults={"train": {"epochs": 20, "lr": 1e-3}, "name": "demo"},
    )
    config  # {"train": {"epochs": 3, "lr": 0.0005}, "name": "demo"}
    ```
    """
    config = copy.deepcopy(dict(defaults)) if defaults is not None else {}
    if path is not None:
        config = _deep_merge(config, _read_config_file(path))
    for override in overrides:
        _apply_override(config, override, defaults)
    return config


def load_run_config(run_dir: str | os.PathLike, tasks: Sequence[str], needs: str) -> dict:
    """A finetune run's `config.yaml` (over the defaults), if its task is one of `tasks`.

    Raises:
        ValueError: another task: "{run_dir} is a '{task}' run; {needs}".
    """
    config = load_config(os.path.join(run_dir, "config.yaml"), defaults=DEFAULT_CONFIG)
    task = config["finetune"]["task"]
    if task not in tasks:
        raise ValueError(f"{run_dir} is a {task!r} run; {needs}")
    return config


def save_config(config: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write `config` as YAML, atomically.

    The YAML goes to a temporary file in the destination folder, which then
    replaces `path` with `os.replace`: readers see the old file or the new one,
    never a half-written one, and a failed write leaves no temporary file.

    Args:
        config: mapping of plain YAML types (str, numbers, bool, None, lists,
            mappings).
        path: str or `PathLike`. Destination, usually `run_dir/config.yaml`.

    Example:
    ```python
    save_config({"train": {"epochs": 3}}, "runs/demo/config.yaml")
    load_config("runs/demo/config.yaml")  # {"train": {"epochs": 3}}
    ```
    """
    atomic_write_text(path, yaml.safe_dump(dict(config), sort_keys=False))


def _read_config_file(path: str | os.PathLike) -> dict:
    path = os.fspath(path)
    extension = os.path.splitext(path)[1].lower()
    if extension not in _PARSERS:
        raise ValueError(
            f"Config file {path!r} has unknown extension {extension!r}; "
            f"expected one of {sorted(_PARSERS)}."
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Config file {path!r} does not exist.")
    with open(path, encoding="utf-8") as stream:
        text = stream.read()
    parser = _PARSERS[extension]
    try:
        loaded = json.loads(text) if parser == "JSON" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"Malformed {parser} config file {path!r}: {error}") from error
    if loaded is None:  # An empty YAML file.
        return {}
    if not isinstance(loaded, dict):
        raise ValueError(
            f"Config file {path!r} must hold a mapping at the top level, "
            f"not a {type(loaded).__name__}."
        )
    return loaded


def _deep_merge(base: dict, update: Mapping[str, Any]) -> dict:
    """Return `base` updated in place with `update`, merging nested dicts."""
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def _apply_override(
    config: dict, override: str, defaults: Mapping[str, Any] | None
) -> None:
    if "=" not in override:
        raise ValueError(
            f"Override {override!r} must have the form `key.sub=value` (no `=` found)."
        )
    dotted_key, text = override.split("=", 1)
    keys = dotted_key.strip().split(".")
    if not all(keys):
        raise ValueError(f"Override {override!r} has an empty key in {dotted_key!r}.")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(
            f"Cannot parse the value of override {override!r}: {error}"
        ) from error
    schema = defaults
    node = config
    for depth, key in enumerate(keys):
        prefix = ".".join(keys[: depth + 1])
        if schema is not None:
            if not isinstance(schema, Mapping):
                raise ValueError(
                    f"Override {override!r}: {'.'.join(keys[:depth])!r} is a "
                    f"{type(schema).__name__} in the defaults, not a mapping."
                )
            if key not in schema:
                level = ".".join(keys[:depth]) or "the top level"
                raise ValueError(
                    f"Override {override!r}: unknown config key {prefix!r}. "
                    f"Valid keys at {level}: {sorted(schema)}."
                )
            schema = schema[key]
        if depth == len(keys) - 1:
            node[key] = value
        else:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ValueError(
                    f"Override {override!r}: {prefix!r} is a "
                    f"{type(child).__name__}, not a mapping."
                )
            node = child
