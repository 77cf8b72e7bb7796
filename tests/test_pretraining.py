"""Pre-training pieces: SimMIM masks and loss, InfoNCE, retrieval metrics."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from simmim_tf.evaluation.retrieval import recall_at_k
from simmim_tf.pretraining.contrastive import ContrastiveLoss, positive_pairs
from simmim_tf.pretraining.masking import (
    MaskTokenLayer,
    PixelReconstructionHead,
    masked_l1_loss,
    simmim_mask,
)
from simmim_tf.pretraining.matching import MatchingHead


def test_mask_has_exact_ratio_and_is_patch_aligned():
    mask = simmim_mask(8, (64, 64), patch_size=16, mask_ratio=0.6, seed=(1, 2)).numpy()
    assert mask.shape == (8, 64, 64)
    patches = mask.reshape(8, 4, 16, 4, 16)
    # Constant inside every 16x16 patch.
    assert (patches.min(axis=(2, 4)) == patches.max(axis=(2, 4))).all()
    assert (patches[:, :, 0, :, 0].sum(axis=(1, 2)) == round(0.6 * 16)).all()
    assert len({m.tobytes() for m in mask}) > 1  # independent per image


def test_mask_is_deterministic_under_a_seed():
    a = simmim_mask(4, (32, 32), patch_size=8, seed=(3, 4))
    b = simmim_mask(4, (32, 32), patch_size=8, seed=(3, 4))
    c = simmim_mask(4, (32, 32), patch_size=8, seed=(5, 4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_mask_validates_arguments():
    with pytest.raises(ValueError, match=r"divisible by patch size 10"):
        simmim_mask(1, (64, 64), patch_size=10)
    with pytest.raises(ValueError, match=r"Mask ratio 1.0 must be in \(0, 1\)"):
        simmim_mask(1, (64, 64), patch_size=16, mask_ratio=1.0)


def test_l1_loss_ignores_unmasked_pixels():
    rng = np.random.default_rng(0)
    mask = simmim_mask(2, (16, 16), patch_size=4, seed=(0, 1))
    target = rng.normal(size=(2, 16, 16, 3)).astype(np.float32)
    prediction = rng.normal(size=(2, 16, 16, 3)).astype(np.float32)
    loss = masked_l1_loss(target, prediction, mask).numpy()
    changed = np.where(mask.numpy()[..., None] == 1, target, target + 100.0)
    assert masked_l1_loss(changed, prediction, mask).numpy() == pytest.approx(loss)
    m = mask.numpy()[..., None].repeat(3, -1).astype(bool)
    assert loss == pytest.approx(np.abs(target - prediction)[m].mean(), rel=1e-5)


def test_mask_token_replaces_only_masked_pixels():
    images = tf.ones([1, 8, 8, 3])
    mask = simmim_mask(1, (8, 8), patch_size=4, mask_ratio=0.5)
    layer = MaskTokenLayer()
    layer.build(images.shape)
    layer.mask_token.assign([-1.0, -2.0, -3.0])
    out = layer(images, mask).numpy()
    masked = mask.numpy()[0].astype(bool)
    np.testing.assert_array_equal(
        out[0][masked], np.tile([-1.0, -2.0, -3.0], (masked.sum(), 1))
    )
    assert (out[0][~masked] == 1.0).all()


def test_reconstruction_head_restores_image_resolution():
    head = PixelReconstructionHead(stride=16)
    assert head(tf.zeros([2, 4, 4, 64])).shape == (2, 64, 64, 3)


def test_infonce_matches_numpy_reference():
    rng = np.random.default_rng(0)
    images, texts = rng.normal(size=(2, 6, 8))
    loss = ContrastiveLoss()(images, texts).numpy()

    def normalise(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    logits = normalise(images) @ normalise(texts).T / 0.07

    def cross_entropy(rows):
        rows = rows - rows.max(axis=1, keepdims=True)
        log_softmax = rows - np.log(np.exp(rows).sum(axis=1, keepdims=True))
        return -np.diag(log_softmax).mean()

    expected = 0.5 * (cross_entropy(logits) + cross_entropy(logits.T))
    assert loss == pytest.approx(expected, rel=1e-4)


def test_multi_positive_infonce_on_a_hand_worked_case():
    # Two images and texts of one emoji (ids 7, 7) and one of another (id 3).
    # Logits (T fixed at 1): image i -> text j.
    logits = np.array([[2.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 1.0]])
    layer = ContrastiveLoss(initial_temperature=1.0)
    layer.similarity = lambda images, texts: tf.constant(logits, tf.float32)
    three = tf.zeros([3, 4])  # three examples; their scores are the logits above
    loss = float(layer(three, three, pair_ids=tf.constant([7, 7, 3])))
    # Rows 0 and 1: half the target on each of texts 0 and 1.
    # log-softmax of [2, 1, 0]: [2, 1, 0] - log(e^2 + e + 1).
    z = math.log(math.exp(2) + math.exp(1) + 1)
    row_01 = -0.5 * ((2 - z) + (1 - z))
    # Row 2: its one positive, text 2: -(1 - log(1 + 1 + e)).
    row_2 = -(1 - math.log(2 + math.e))
    # The logits are symmetric, so text -> image gives the same rows.
    assert loss == pytest.approx((2 * row_01 + row_2) / 3, rel=1e-6)
    # Without ids, each row has one positive: plain InfoNCE.
    plain = float(layer(three, three))
    diagonal = -np.mean([2 - z, 2 - z, 1 - math.log(2 + math.e)])
    assert plain == pytest.approx(diagonal, rel=1e-6)
    # Distinct ids are the same as no ids.
    assert float(layer(three, three, pair_ids=tf.constant([0, 1, 2]))) == pytest.approx(
        plain
    )


def test_positive_pairs_are_equal_ids():
    np.testing.assert_array_equal(
        positive_pairs(3, tf.constant([5, 1, 5])),
        [[True, False, True], [False, True, False], [True, False, True]],
    )
    np.testing.assert_array_equal(positive_pairs(2), np.eye(2, dtype=bool))


def test_infonce_temperature_is_learnable():
    loss_layer = ContrastiveLoss()
    images = tf.random.normal([4, 8], seed=1)
    with tf.GradientTape() as tape:
        loss = loss_layer(images, images + 0.1)
    gradient = tape.gradient(loss, loss_layer.log_inverse_temperature)
    assert gradient is not None and float(gradient) != 0.0
    assert float(loss_layer.log_inverse_temperature) == pytest.approx(np.log(1 / 0.07))


def test_recall_at_k_on_a_hand_computed_example():
    rankings = np.array(
        [
            [0, 2, 1, 3],  # relevant 0 ranks 1st
            [3, 2, 0, 1],  # relevant 1 ranks 4th
            [1, 2, 0, 3],  # relevant 2 ranks 2nd
        ]
    )
    got = recall_at_k(rankings, np.array([0, 1, 2]), ks=(1, 2, 4))
    assert got == {"R@1": 1 / 3, "R@2": 2 / 3, "R@4": 1.0}
    # A ranking cut at depth 2: an item below it counts as missed.
    assert recall_at_k(rankings[:, :2], np.array([0, 1, 2]), ks=(2,)) == {"R@2": 2 / 3}
    with pytest.raises(ValueError, match="Expected rankings"):
        recall_at_k(rankings, np.array([0, 1]))


def _matching_pairs(count: int, width: int, seed: int):
    """Readouts whose fused z says nothing about the match; half the pairs match.

    z is drawn first, the same way for both classes; a matching pair has
    x = y = z / sqrt(2), a mismatched one x = z / sqrt(2) + d, y = z / sqrt(2) - d
    with a random offset d. Either way z = (x + y) / sqrt(2) as in
    `SqrtTwoFusion`, so z has one distribution for both classes and no head on
    z alone, linear or not, beats chance. (With unit readouts and y = x for a
    match, |z| = sqrt(2) exactly for matches: an MLP on z learns that.)
    The match shows only in the interaction: x * y = z**2 / 2 - d**2.
    """
    rng = np.random.default_rng(seed)
    fused = rng.normal(size=(count, width)).astype("float32")
    labels = (np.arange(count) % 2).astype("int32")
    offsets = 4.0 * rng.normal(size=(count, width)).astype("float32") / np.sqrt(width)
    offsets *= (1 - labels)[:, None]  # zero for the matches
    images = fused / np.sqrt(2.0) + offsets
    texts = fused / np.sqrt(2.0) - offsets
    return fused, images, texts, labels


def test_matching_head_learns_what_a_linear_head_on_z_cannot():
    fused, images, texts, labels = _matching_pairs(512, 8, seed=0)
    test = _matching_pairs(256, 8, seed=1)

    def accuracy(model, inputs, targets):
        return np.mean(np.argmax(model.predict(inputs, verbose=0), -1) == targets)

    keras.utils.set_random_seed(0)
    readouts = [keras.Input((8,)) for _ in range(3)]
    head = keras.Model(readouts, MatchingHead(32)(*readouts))
    # Controls on z alone: a linear head, and the MatchingHead's own layers
    # without the x * y input.
    linear = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
    mlp = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(32, "gelu"), keras.layers.Dense(2)]
    )
    for model in (head, linear, mlp):
        model.compile(
            keras.optimizers.Adam(1e-2),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    head.fit([fused, images, texts], labels, epochs=20, batch_size=64, verbose=0)
    for model in (linear, mlp):
        model.fit(fused, labels, epochs=20, batch_size=64, verbose=0)
    # Measured over data/init seeds 0-2: the head 0.977-0.992; linear and MLP
    # on z 0.47-0.53 (chance is 0.5; one binomial sd on 256 pairs is 0.031).
    assert accuracy(head, list(test[:3]), test[3]) > 0.95
    assert accuracy(linear, test[0], test[3]) < 0.6
    assert accuracy(mlp, test[0], test[3]) < 0.6
