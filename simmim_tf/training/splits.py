"""Held-out-concept splits: whole emoji classes kept out of training.

An emoji is held out by hashing its class id, not by drawing random numbers,
so the same emoji is held out for every vendor, every run and every machine,
and the test inside `tf.data.Dataset.filter` needs no state.
"""

from __future__ import annotations

import tensorflow as tf

_NUM_BUCKETS = 1_000_000


def concept_held_out(
    label: tf.Tensor | int, *, fraction: float = 0.2, seed: int = 0
) -> tf.Tensor:
    """Whether emoji class ids belong to the held-out concepts.

    The id and the seed are hashed together with `tf.strings.to_hash_bucket_fast`
    (FarmHash Fingerprint64, stable across platforms and TF versions) into
    1,000,000 buckets; the ids falling in the first `fraction` of the buckets
    are held out. About `fraction` of the classes are held out, and changing
    `seed` draws another set.

    Args:
        label: integer scalar or tensor of class ids (e.g. emoji_text's `label`).
        fraction: float in (0, 1). Expected fraction of held-out classes.
        seed: int. Which held-out set.

    Returns:
        A bool tensor of `label`'s shape.

    Example:
    ```python
    held_out = concept_held_out(tf.range(4000, dtype=tf.int64), fraction=0.2)
    float(tf.reduce_mean(tf.cast(held_out, tf.float32)))  # about 0.2
    ```
    """
    _check_split_args(fraction, seed)
    label = tf.convert_to_tensor(label)
    if not label.dtype.is_integer:
        raise ValueError(
            f"Labels must be integer class ids, got dtype {label.dtype.name}."
        )
    keys = tf.strings.join([tf.strings.as_string(label), f"/{seed}"])
    buckets = tf.strings.to_hash_bucket_fast(keys, _NUM_BUCKETS)
    return buckets < int(round(fraction * _NUM_BUCKETS))


def split_by_concept(
    examples: tf.data.Dataset,
    *,
    fraction: float = 0.2,
    seed: int = 0,
    label_key: str = "label",
) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """Split unbatched feature dicts into seen and held-out concepts.

    Args:
        examples: `tf.data.Dataset` of feature dicts with a scalar integer
            `label_key` (split before batching).
        fraction: float in (0, 1). Expected fraction of held-out classes.
        seed: int. Which held-out set.
        label_key: str. Feature holding the class id.

    Returns:
        `(seen, held_out)`: the examples whose class is not held out, and the
        others. Together they hold every example exactly once.

    Example:
    ```python
    train, held_out = split_by_concept(builder.as_dataset(split="twitter"))
    ```
    """
    _check_split_args(fraction, seed)
    spec = examples.element_spec
    if not isinstance(spec, dict) or label_key not in spec:
        keys = sorted(spec) if isinstance(spec, dict) else type(spec).__name__
        raise ValueError(
            f"Examples must be feature dicts with a {label_key!r} feature; got {keys}."
        )
    if spec[label_key].shape.rank != 0:
        raise ValueError(
            f"Feature {label_key!r} must be a scalar per example (split before "
            f"batching); got shape {spec[label_key].shape}."
        )

    def held_out(example):
        return concept_held_out(example[label_key], fraction=fraction, seed=seed)

    seen = examples.filter(lambda example: tf.logical_not(held_out(example)))
    return seen, examples.filter(held_out)


def _check_split_args(fraction: float, seed: int) -> None:
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"Held-out fraction {fraction} must be in (0, 1).")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"Seed {seed!r} must be a Python int.")
