"""tf.data pipelines from emoji_text examples to model inputs.

Nothing is decoded here: the examples arrive with `image` already a uint8
`[H, W, 3]` tensor (TFDS decodes it). Training: shuffle -> light augmentation
-> batch -> `SimMIMPreprocessor` (resize, normalise, tokenise, pack) ->
prefetch; evaluation skips the shuffle and the augmentation and keeps order.

Randomness (training only): the shuffle is seeded with `seed`, and each
augmentation op is a stateless op seeded by a per-example seed drawn from
`tf.data.Dataset.random(seed)`. Both are redrawn every epoch
(`reshuffle_each_iteration`, `rerandomize_each_iteration`), so consecutive
epochs differ in order and augmentation; two pipelines built with the same
`seed` (and the same TensorFlow global seed, `tf.random.set_seed`, which
`keras.utils.set_random_seed` also sets) yield the same batches, epoch for
epoch.
"""

from __future__ import annotations

import math

import tensorflow as tf

from simmim_tf.pretraining.contrastive import PAIR_IDS

WHITE = 255


def augment(
    image: tf.Tensor,
    seed: tf.Tensor,
    max_shift: int = 4,
    rotation_degrees: float = 0.0,
    grayscale_probability: float = 0.0,
) -> tf.Tensor:
    """Label-preserving augmentation of one uint8 `[H, W, 3]` image, in [0, 1].

    Vendors draw the same emoji at other scales, positions, angles and
    colours, so: a random zoom (a random square crop whose side is 75 % up
    to, not including, 100 % of the height, resized back to `[H, W]`), a
    random rotation of up to `rotation_degrees` either way about the centre
    (corners filled with white), a random shift of up to `max_shift` pixels
    along each axis (pad with white by `max_shift`, crop `[H, W]` back at a
    random offset), jitter of brightness, contrast, saturation and hue, and
    with `grayscale_probability` the image in grey. No flips: many emoji are
    not mirror-symmetric in meaning (arrows, hands).

    Args:
        image: uint8 tensor `[H, W, 3]`.
        seed: int tensor of shape `[2]`, the stateless seed of this example.
        max_shift: int. Largest shift in pixels.
        rotation_degrees: float. Largest rotation; 0 turns it off.
        grayscale_probability: float. Chance of a grey image.
    """
    seeds = tf.random.experimental.stateless_split(seed, num=9)
    height, width = image.shape[0], image.shape[1]
    side = tf.random.stateless_uniform([], seeds[0], 0.75, 1.0)
    crop = tf.cast(side * height, tf.int32)
    image = tf.image.stateless_random_crop(image, [crop, crop, 3], seed=seeds[1])
    image = tf.image.resize(image, [height, width])
    if rotation_degrees:
        limit = rotation_degrees * math.pi / 180.0
        angle = tf.random.stateless_uniform([], seeds[7], -limit, limit)
        image = rotate_on_white(image, angle)
    image = tf.cast(image, tf.uint8)
    padded = tf.pad(
        image,
        [[max_shift, max_shift], [max_shift, max_shift], [0, 0]],
        constant_values=WHITE,
    )
    image = tf.image.stateless_random_crop(padded, [height, width, 3], seed=seeds[2])
    image = tf.cast(image, tf.float32) / 255.0
    image = tf.image.stateless_random_brightness(image, 0.1, seed=seeds[3])
    image = tf.image.stateless_random_contrast(image, 0.8, 1.2, seed=seeds[4])
    image = tf.image.stateless_random_saturation(image, 0.7, 1.3, seed=seeds[5])
    image = tf.image.stateless_random_hue(image, 0.05, seed=seeds[6])
    if grayscale_probability:
        grey = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))
        draw = tf.random.stateless_uniform([], seeds[8])
        image = tf.where(draw < grayscale_probability, grey, image)
    return tf.clip_by_value(image, 0.0, 1.0)


def rotate_on_white(image: tf.Tensor, angle: tf.Tensor) -> tf.Tensor:
    """`image` (float `[H, W, 3]`, 0-255) turned by `angle` radians
    counter-clockwise about its centre, bilinear; corners come in white."""
    height, width = image.shape[0], image.shape[1]
    cos, sin = tf.cos(angle), tf.sin(angle)
    centre_x, centre_y = (width - 1) / 2.0, (height - 1) / 2.0
    # Each output pixel (x, y) reads the input at the point turned back.
    transform = tf.stack(
        [
            cos,
            -sin,
            centre_x - cos * centre_x + sin * centre_y,
            sin,
            cos,
            centre_y - sin * centre_x - cos * centre_y,
            0.0,
            0.0,
        ]
    )
    turned = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.expand_dims(tf.cast(image, tf.float32), 0),
        transforms=tf.expand_dims(transform, 0),
        output_shape=[height, width],
        fill_value=float(WHITE),
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )
    return turned[0]


def make_dataset(
    examples: tf.data.Dataset,
    preprocessor,
    *,
    label_key: str | None = "subgroup",
    batch_size: int = 32,
    training: bool = False,
    seed: int = 0,
    shuffle_buffer: int = 4096,
    drop_remainder: bool = False,
    pair_key: str | None = None,
    augmentation: bool = True,
    rotation_degrees: float = 0.0,
    grayscale_probability: float = 0.0,
) -> tf.data.Dataset:
    """Turn emoji_text feature dicts into batches of `(inputs, labels)`.

    Args:
        examples: dataset of dicts with `image` (uint8 `[H, W, 3]`), `text` and
            the label feature, e.g. from `simmim_tf.data.load_emoji_text`.
        preprocessor: a `SimMIMPreprocessor`.
        label_key: str or None. Feature used as label; None yields inputs only.
        batch_size: int. Examples per batch.
        training: bool. Shuffle and augment, both redrawn every epoch.
        seed: int. Seed of the shuffle and of the augmentation (together with
            TensorFlow's global seed).
        shuffle_buffer: int. Shuffle buffer size.
        drop_remainder: bool. Drop a last, smaller batch (every batch then has
            one shape, so a training step is traced once, not twice).
        pair_key: str or None. Feature copied into the inputs as `pair_ids`
            (e.g. "label": one emoji drawn by two artists is one pair).
        augmentation: bool. With `training`, augment the images (`augment`).
        rotation_degrees, grayscale_probability: float. `augment`'s rotation
            and grey images (0: none).

    Example:
    ```python
    train = make_dataset(load_emoji_text("twitter"), preprocessor,
                         training=True, seed=1)
    inputs, labels = next(iter(train))
    ```
    """
    if batch_size <= 0:
        raise ValueError(f"Batch size {batch_size} must be greater than 0.")
    if training:
        examples = examples.shuffle(
            shuffle_buffer, seed=seed, reshuffle_each_iteration=True
        )
    if training and augmentation:
        # One independent stateless seed per example; a new draw every epoch.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(
            2
        )
        examples = tf.data.Dataset.zip(examples, seeds).map(
            lambda example, example_seed: {
                **example,
                "image": augment(
                    example["image"],
                    example_seed,
                    rotation_degrees=rotation_degrees,
                    grayscale_probability=grayscale_probability,
                ),
            },
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )

    def to_parts(example):
        parts = {"features": {"images": example["image"], "texts": example["text"]}}
        if label_key is not None:
            parts["labels"] = example[label_key]
        if pair_key is not None:
            parts[PAIR_IDS] = example[pair_key]
        return parts

    def to_inputs(parts):
        if label_key is None:
            inputs = preprocessor(parts["features"])
        else:
            inputs, labels = preprocessor(parts["features"], parts["labels"])
        if pair_key is not None:
            inputs = {**inputs, PAIR_IDS: parts[PAIR_IDS]}
        batch = inputs if label_key is None else (inputs, labels)
        if not drop_remainder:
            return batch
        # One static shape, what XLA compiles (the tokenizer loses the size).
        return tf.nest.map_structure(
            lambda tensor: tf.ensure_shape(tensor, [batch_size, *tensor.shape[1:]]),
            batch,
        )

    batches = examples.map(to_parts).batch(batch_size, drop_remainder=drop_remainder)
    return batches.map(
        to_inputs, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    ).prefetch(tf.data.AUTOTUNE)
