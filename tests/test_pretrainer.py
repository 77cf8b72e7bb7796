"""SimMIMPretrainer, SimMIMRetriever and modality-absent classifiers."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import simmim_tf
from simmim_tf.evaluation.retrieval import recall_at_k
from simmim_tf.models.pretrainer import SimMIMPretrainer, SimMIMPretrainerPreprocessor
from simmim_tf.models.retriever import RERANK_OFFSET, SimMIMRetriever
from simmim_tf.pretraining.contrastive import sample_hard_negatives
from tests.conftest import tiny_backbone


@pytest.fixture(scope="module")
def pretraining_preprocessor(tokenizer):
    return SimMIMPretrainerPreprocessor(
        tokenizer=tokenizer, image_size=(16, 16), sequence_length=12, mask_patch_size=4
    )


@pytest.fixture(scope="module")
def pairs():
    rng = np.random.default_rng(0)
    return {
        "images": rng.integers(0, 256, size=(12, 16, 16, 3), dtype=np.uint8),
        "texts": np.array([f"thing {word}" for word in "abcdefghijkl"]),
    }


def test_pretraining_inputs_carry_masks(pretraining_preprocessor, pairs, tokenizer):
    x = {
        k: keras.ops.convert_to_numpy(v)
        for k, v in pretraining_preprocessor(pairs).items()
    }
    assert x["mim_mask"].shape == (12, 16, 16)
    assert x["mim_mask"].reshape(12, -1).mean(1) == pytest.approx(np.full(12, 10 / 16))
    selected = x["mlm_weights"] > 0
    positions = x["mlm_positions"][selected]
    rows = np.nonzero(selected)[0]
    # MLM never selects [CLS], [SEP] or padding; targets are the original ids.
    assert np.isin(x["token_ids"][rows, positions], [101, 102, 0]).sum() == 0
    np.testing.assert_array_equal(x["mlm_ids"][selected], x["token_ids"][rows, positions])


def test_hard_negatives_are_never_the_positive():
    similarity = tf.random.normal([16, 16], seed=3) + 10.0 * tf.eye(16)
    for seed in range(20):
        negatives = sample_hard_negatives(similarity, seed=seed).numpy()
        assert (negatives != np.arange(16)).all()


def test_hard_negatives_prefer_similar_pairs():
    similarity = np.full((4, 4), -5.0, np.float32)
    similarity[0, 2] = similarity[1, 3] = similarity[2, 0] = similarity[3, 1] = 5.0
    draws = np.stack([sample_hard_negatives(similarity).numpy() for _ in range(20)])
    assert (draws == [2, 3, 0, 1]).mean() > 0.95


def test_each_loss_switches_off(pretraining_preprocessor, pairs):
    x = pretraining_preprocessor(pairs)
    everything = SimMIMPretrainer(tiny_backbone())(x)
    assert set(everything) == {"mim", "mlm", "itc", "itm"}
    assert all(np.isfinite(float(v)) for v in everything.values())
    only_mim = SimMIMPretrainer(tiny_backbone(), mlm_weight=0, itc_weight=0, itm_weight=0)
    assert set(only_mim(x)) == {"mim"}
    with pytest.raises(ValueError, match="at least one > 0"):
        SimMIMPretrainer(
            tiny_backbone(), mim_weight=0, mlm_weight=0, itc_weight=0, itm_weight=0
        )


def test_itc_starts_at_temperature_0_07(pretraining_preprocessor, pairs):
    pretrainer = SimMIMPretrainer(tiny_backbone())
    assert float(pretrainer.contrastive.log_inverse_temperature) == pytest.approx(
        np.log(1 / 0.07)
    )


def test_pretrain_fit_lowers_losses_then_finetune_starts_from_it(
    tmp_path, pretraining_preprocessor, pairs, preprocessor
):
    batches = (
        tf.data.Dataset.from_tensor_slices(pairs)
        .repeat(3)
        .batch(6)
        .map(pretraining_preprocessor)
    )
    pretrainer = SimMIMPretrainer(tiny_backbone(), mlm_weight=0.1)
    pretrainer.compile(optimizer=keras.optimizers.Adam(2e-3))
    history = pretrainer.fit(batches, epochs=4, verbose=0).history
    assert history["total_loss"][-1] < history["total_loss"][0]
    assert history["itc_loss"][-1] < history["itc_loss"][0]

    pretrainer.backbone.save_to_preset(str(tmp_path / "pretrained"))
    backbone = simmim_tf.SimMIMBackbone.from_preset(str(tmp_path / "pretrained"))
    for ours, theirs in zip(backbone.weights, pretrainer.backbone.weights, strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    classifier = simmim_tf.SimMIMClassifier(backbone=backbone, num_classes=3)
    x = preprocessor(pairs)
    np.testing.assert_allclose(
        classifier.backbone(x)["fused_embedding"],
        pretrainer.backbone(x)["fused_embedding"],
        atol=1e-6,
    )


def test_retriever_reranks_only_the_top_k(preprocessor, pairs):
    retriever = SimMIMRetriever(tiny_backbone())
    encoded = retriever.encode(
        tf.data.Dataset.from_tensor_slices(pairs).batch(5).map(preprocessor)
    )
    assert encoded["text_states"].shape == (12, 12, 16)
    dual = retriever.similarity(encoded)
    np.testing.assert_allclose(
        dual, encoded["text_embedding"] @ encoded["image_embedding"].T, atol=1e-6
    )
    reranked = retriever.similarity(encoded, rerank_k=3)
    top3 = np.argsort(-dual, axis=1)[:, :3]
    lifted = reranked >= RERANK_OFFSET / 2
    assert lifted.sum() == 12 * 3
    np.testing.assert_array_equal(
        np.sort(np.nonzero(lifted)[1].reshape(12, 3)), np.sort(top3)
    )
    # The lifted scores: ITC logit + ITM log-odds of (query text, candidate image).
    itm = retriever.matching_scores_for(
        encoded, top3.ravel(), np.repeat(np.arange(12), 3)
    )
    np.testing.assert_allclose(
        np.take_along_axis(reranked, top3, 1) - RERANK_OFFSET,
        np.take_along_axis(dual, top3, 1) / 0.07 + itm.reshape(12, 3),
        atol=1e-3,
    )
    # Outside the top k, the dual order is kept.
    np.testing.assert_array_equal(reranked[~lifted], dual[~lifted])
    assert set(recall_at_k(reranked, np.arange(12))) == {"R@1", "R@5", "R@10"}


@pytest.mark.parametrize(
    "modalities, inputs",
    [
        (("image", "text"), {"images", "token_ids", "padding_mask"}),
        (("image",), {"images"}),
        (("text",), {"token_ids", "padding_mask"}),
    ],
)
def test_classifier_modalities(modalities, inputs, backbone, preprocessor, pairs):
    classifier = simmim_tf.SimMIMClassifier(
        backbone=backbone, num_classes=3, modalities=modalities
    )
    assert set(classifier.input) == inputs
    x = {k: v for k, v in preprocessor(pairs).items() if k in inputs}
    assert classifier(x).shape == (12, 3)


def test_absent_text_leaves_the_image_alone(backbone, preprocessor, pairs):
    x = preprocessor(pairs)
    _, image_states = backbone.encode_images(x["images"])
    out = backbone.fuse(image_states, tf.zeros([12, 0, 16]), tf.zeros([12, 0], tf.int32))
    assert float(tf.reduce_max(tf.abs(out["text_embedding"]))) == 0.0
    np.testing.assert_allclose(
        out["fused_embedding"], out["image_embedding"] / np.sqrt(2.0), atol=1e-6
    )
    with pytest.raises(ValueError, match="non-empty subset"):
        simmim_tf.SimMIMClassifier(
            backbone=backbone, num_classes=3, modalities=("audio",)
        )


def test_mlm_masking_statistics(tokenizer):
    preprocessor = SimMIMPretrainerPreprocessor(
        tokenizer=tokenizer, image_size=(16, 16), sequence_length=40, mask_patch_size=4
    )
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu"
    texts = np.array([f"{words} {i}" for i in range(400)])
    x = preprocessor({"images": np.zeros((400, 16, 16, 3), np.uint8), "texts": texts})
    x = {k: keras.ops.convert_to_numpy(v) for k, v in x.items()}
    selected = x["mlm_weights"] > 0
    real = x["padding_mask"].sum(1) - 2  # minus [CLS] and [SEP]
    # keras-hub (tf_text) selects ceil(15 % of the real tokens) per sequence.
    np.testing.assert_array_equal(selected.sum(1), np.ceil(0.15 * real))
    rows = np.nonzero(selected)[0]
    shown = x["masked_token_ids"][rows, x["mlm_positions"][selected]]
    original = x["mlm_ids"][selected]
    masked = shown == tokenizer.mask_token_id
    unchanged = (shown == original) & ~masked
    assert masked.mean() == pytest.approx(0.8, abs=0.04)
    assert unchanged.mean() == pytest.approx(0.1, abs=0.03)
    assert (1 - masked.mean() - unchanged.mean()) == pytest.approx(0.1, abs=0.03)


def test_pretrainer_builds_every_weight_before_the_first_batch(
    pretraining_preprocessor, pairs
):
    pretrainer = SimMIMPretrainer(tiny_backbone())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Keras warns when build() leaves state unbuilt
        pretrainer.build()
        names = sorted(w.path for w in pretrainer.weights)
        pretrainer(pretraining_preprocessor(pairs))
    # The first call creates nothing new: load_weights and backups see every weight.
    assert sorted(w.path for w in pretrainer.weights) == names


def test_a_switched_off_loss_leaves_its_head_without_weights():
    retriever = SimMIMRetriever(tiny_backbone())
    retriever.build()
    heads = {w.path.split("/")[1] for w in retriever.trainable_weights}
    assert "itm_head" in heads
    assert not heads & {"mim_mask_token", "mim_head", "mlm_head"}
