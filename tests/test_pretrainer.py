"""SimMIMPretrainer, SimMIMRetriever and modality-absent classifiers."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import simmim_tf
from simmim_tf.models.gallery_index import GalleryIndex, states_path, top_k_by_similarity
from simmim_tf.models.pretrainer import SimMIMPretrainer
from simmim_tf.models.pretrainer_preprocessor import SimMIMPretrainerPreprocessor
from simmim_tf.models.retriever import SimMIMRetriever
from simmim_tf.pretraining.contrastive import positive_pairs, sample_hard_negatives
from simmim_tf.training.callbacks import LossWarmup
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


def test_hard_negatives_are_never_a_positive_pair():
    # Examples 0, 1, 2 are one emoji (three artists): their texts are equal,
    # so none of them is a negative for another; the most similar still wins.
    ids = tf.constant([4, 4, 4, 9, 8])
    positives = positive_pairs(5, ids)
    similarity = tf.random.normal([5, 5], seed=4) + 10.0 * tf.cast(positives, tf.float32)
    for seed in range(20):
        negatives = sample_hard_negatives(similarity, positives, seed=seed).numpy()
        assert (negatives[:3] >= 3).all() and (negatives[3:] != [3, 4]).all()
    # A batch of one emoji only: any other column (labelled a match by its ids).
    alike = positive_pairs(3, tf.constant([1, 1, 1]))
    negatives = sample_hard_negatives(tf.zeros([3, 3]), alike, seed=0).numpy()
    assert (negatives != np.arange(3)).all()


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
    with pytest.raises(ValueError, match="at least one > 0"):
        SimMIMPretrainer(
            tiny_backbone(), mim_weight=0, mlm_weight=0, itc_weight=0, itm_weight=0
        )


def test_mim_loss_is_l1_over_the_masked_pixels_only(pretraining_preprocessor, pairs):
    x = pretraining_preprocessor(pairs)
    only_mim = SimMIMPretrainer(tiny_backbone(), mlm_weight=0, itc_weight=0, itm_weight=0)
    losses = only_mim(x)
    assert set(losses) == {"mim"}
    # Recomputed: mask token in, image tower, pixel head, mean |error| on masked pixels.
    masked = only_mim.mask_token(x["images"], x["mim_mask"])
    feature_map = only_mim.backbone.image_tower(masked)["image_feature_map"]
    error = np.abs(only_mim.pixel_head(feature_map).numpy() - x["images"].numpy())
    mask = x["mim_mask"].numpy().astype(bool)
    assert mask.any() and (~mask).any()
    np.testing.assert_allclose(float(losses["mim"]), error[mask].mean(), rtol=1e-5)


def test_mlm_loss_is_cross_entropy_at_the_masked_positions(
    pretraining_preprocessor, pairs
):
    x = pretraining_preprocessor(pairs)
    only_mlm = SimMIMPretrainer(tiny_backbone(), mim_weight=0, itc_weight=0, itm_weight=0)
    loss = float(only_mlm(x)["mlm"])
    # Recomputed: the masked texts through the whole backbone (with the clean
    # images), the MLM head at the masked positions, numpy cross-entropy.
    nodes = only_mlm.backbone(
        {
            "images": x["images"],
            "token_ids": x["masked_token_ids"],
            "padding_mask": x["padding_mask"],
        }
    )["text_node_states"]
    logits = only_mlm.mlm_head(nodes, mask_positions=x["mlm_positions"]).numpy()
    logits = logits.astype(np.float64) - logits.max(-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    targets = np.take_along_axis(log_probs, x["mlm_ids"].numpy()[..., None], -1)[..., 0]
    weights = x["mlm_weights"].numpy()
    assert weights.sum() > 0 and (weights == 0).any()
    assert loss == pytest.approx(-(targets * weights).sum() / weights.sum(), rel=1e-4)


def test_itc_loss_is_infonce_of_the_unimodal_embeddings(pretraining_preprocessor, pairs):
    x = pretraining_preprocessor(pairs)
    only_itc = SimMIMPretrainer(tiny_backbone(), mim_weight=0, mlm_weight=0, itm_weight=0)
    outputs = only_itc.backbone(
        {key: x[key] for key in ("images", "token_ids", "padding_mask")}
    )
    image = tf.math.l2_normalize(outputs["image_unimodal_embedding"], -1).numpy()
    text = tf.math.l2_normalize(outputs["text_unimodal_embedding"], -1).numpy()
    logits = image.astype(np.float64) @ text.T / 0.07

    def cross_entropy(rows):
        rows = rows - rows.max(1, keepdims=True)
        log_softmax = rows - np.log(np.exp(rows).sum(1, keepdims=True))
        return -np.mean(np.diag(log_softmax))

    expected = 0.5 * (cross_entropy(logits) + cross_entropy(logits.T))
    assert float(only_itc(x)["itc"]) == pytest.approx(expected, rel=1e-4)
    # With pair ids, the loss reads them: the first two examples as one emoji
    # spread row 0's and row 1's targets over both.
    ids = np.arange(len(logits))
    ids[1] = ids[0]
    targets = (ids[:, None] == ids[None, :]).astype(np.float64)
    targets /= targets.sum(1, keepdims=True)

    def soft_cross_entropy(rows):
        rows = rows - rows.max(1, keepdims=True)
        log_softmax = rows - np.log(np.exp(rows).sum(1, keepdims=True))
        return -np.mean((targets * log_softmax).sum(1))

    multi = 0.5 * (soft_cross_entropy(logits) + soft_cross_entropy(logits.T))
    with_ids = float(only_itc({**x, "pair_ids": tf.constant(ids)})["itc"])
    assert with_ids == pytest.approx(multi, rel=1e-4) and multi != pytest.approx(expected)


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


@pytest.mark.parametrize("stop", [False, True])
def test_itm_stop_gradient_keeps_itm_out_of_the_towers(preprocessor, pairs, stop):
    """ITM alone (ITC off): its gradient reaches the graph rounds and the ITM
    head either way, the towers (encoders, projections) only without the
    stop."""
    retriever = SimMIMRetriever(tiny_backbone(), itc_weight=0.0, itm_stop_gradient=stop)
    x = preprocessor(pairs)
    with tf.GradientTape() as tape:
        loss = retriever.compute_loss(x, None, retriever(x, training=True))
    variables = retriever.trainable_variables
    paths = [variable.path for variable in variables]
    gradients = dict(zip(paths, tape.gradient(loss, variables), strict=True))

    def reached(prefix):
        return any(
            g is not None and float(tf.reduce_max(tf.abs(g))) > 0
            for path, g in gradients.items()
            if prefix in path
        )

    assert reached("graph_encoder") and reached("itm_head")
    # The ResNet's first conv, the BERT's first layer, the two projections.
    for tower in (
        "conv1_conv",
        "transformer_layer_0",
        "image_projection",
        "text_projection",
    ):
        assert reached(tower) != stop, tower
    assert type(retriever).from_config(retriever.get_config()).itm_stop_gradient == stop


def test_itm_warmup_trains_itc_alone_first_and_still_logs_itm(preprocessor, pairs):
    retriever = SimMIMRetriever(tiny_backbone())
    batches = tf.data.Dataset.from_tensor_slices(preprocessor(pairs)).batch(6)
    retriever.compile(optimizer=keras.optimizers.AdamW(1e-2))
    retriever(next(iter(batches)))
    head = retriever.objectives.itm_head
    snapshots = [[w.numpy().copy() for w in head.weights]]

    class SnapshotHead(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots.append([w.numpy().copy() for w in head.weights])

    history = retriever.fit(
        batches,
        validation_data=batches,
        epochs=3,
        verbose=0,
        callbacks=[LossWarmup("itm", epochs=2), SnapshotHead()],
    ).history
    changed = [
        any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))
        for before, after in zip(snapshots, snapshots[1:], strict=False)
    ]
    # Only ITM trains its head: still during warm-up, moving after it.
    assert changed == [False, False, True]
    assert len(history["itm_loss"]) == 3
    # Trained totals leave ITM out during warm-up, then count it; validation
    # totals count it every epoch (a monitored checkpoint compares like with like).
    itc, itm, total = (history[f"{name}_loss"] for name in ("itc", "itm", "total"))
    np.testing.assert_allclose(total[:2], itc[:2], rtol=1e-5)
    np.testing.assert_allclose(total[2], itc[2] + itm[2], rtol=1e-5)
    itc, itm, total = (history[f"val_{name}_loss"] for name in ("itc", "itm", "total"))
    np.testing.assert_allclose(total, np.add(itc, itm), rtol=1e-5)
    assert not retriever.objectives.paused_losses


def test_retriever_search_reranks_only_the_top_k(preprocessor, pairs):
    retriever = SimMIMRetriever(tiny_backbone())
    batches = tf.data.Dataset.from_tensor_slices(pairs).batch(5).map(preprocessor)
    images = retriever.index(batches, "image", names=[f"image {i}" for i in range(12)])
    texts = retriever.index(batches, "text")
    assert texts.states.shape == (12, 12, 16) and images.states.shape == (12, 16, 16)
    # The dual scores, computed another way: the backbone's unimodal embeddings.
    outputs = retriever.backbone(preprocessor(pairs))
    image = tf.math.l2_normalize(outputs["image_unimodal_embedding"], -1).numpy()
    text = tf.math.l2_normalize(outputs["text_unimodal_embedding"], -1).numpy()
    cosine = text @ image.T
    dual = retriever.search(texts, images, k=12)
    np.testing.assert_array_equal(dual["indices"], np.argsort(-cosine, axis=1))
    np.testing.assert_allclose(dual["scores"], -np.sort(-cosine, 1) / 0.07, atol=1e-4)
    assert dual["names"][0, 0] == f"image {dual['indices'][0, 0]}"
    assert not dual["reranked"].any()

    found = retriever.search(texts, images, k=5, rerank_k=3)
    top3 = dual["indices"][:, :3]
    np.testing.assert_array_equal(np.sort(found["indices"][:, :3]), np.sort(top3))
    np.testing.assert_array_equal(found["indices"][:, 3:], dual["indices"][:, 3:5])
    assert found["reranked"][:, :3].all() and not found["reranked"][:, 3:].any()
    # The re-ranked scores, computed another way: the whole backbone on the
    # raw (query text, candidate image) pairs, then the ITM head on its readouts.
    candidates = found["indices"][:, :3].ravel()
    queries = np.repeat(np.arange(12), 3)
    pair_outputs = retriever.backbone(
        preprocessor(
            {"images": pairs["images"][candidates], "texts": pairs["texts"][queries]}
        )
    )
    logits = retriever.objectives.itm_head(
        pair_outputs["fused_embedding"],
        pair_outputs["image_graph_embedding"],
        pair_outputs["text_graph_embedding"],
    ).numpy()
    itm = (logits[:, 1] - logits[:, 0]).reshape(12, 3)
    itc = np.take_along_axis(cosine, found["indices"][:, :3], 1) / 0.07
    np.testing.assert_allclose(found["scores"][:, :3], itc + itm, atol=1e-3)
    assert (np.diff(found["scores"][:, :3], axis=1) <= 1e-6).all()  # best first

    # Image queries over a text gallery; same-modality search is refused.
    backwards = retriever.search(images, texts, k=12)
    np.testing.assert_array_equal(backwards["indices"], np.argsort(-cosine.T, axis=1))
    with pytest.raises(ValueError, match="both images"):
        retriever.search(images, images)


def test_exact_search_matches_a_full_sort_block_by_block():
    rng = np.random.default_rng(0)

    def unit(x):
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    items = unit(rng.normal(size=(300, 8)))
    items[7] = items[3]  # a tie: the lower index comes first
    queries = unit(rng.normal(size=(2 * 64 + 1, 8)))
    queries[0] = items[3]
    scores, indices = top_k_by_similarity(queries, items, 10, block=64)
    reference = queries.astype(np.float64) @ items.T.astype(np.float64)
    expected = np.argsort(-reference, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_allclose(
        scores, np.take_along_axis(reference, expected, axis=1), rtol=1e-5
    )
    assert list(indices[0, :2]) == [3, 7]
    # More results asked than items: all of them, ranked.
    assert top_k_by_similarity(queries[:2], items[:4], 10)[1].shape == (2, 4)
    with pytest.raises(ValueError, match="must be > 0"):
        top_k_by_similarity(queries, items, 0)


def test_gallery_index_round_trips_maps_states_and_refuses_foreign_files(
    tmp_path, preprocessor, pairs
):
    retriever = SimMIMRetriever(tiny_backbone())
    batches = tf.data.Dataset.from_tensor_slices(pairs).batch(5).map(preprocessor)
    index = retriever.index(batches, "text", ids=list("abcdefghijkl"))
    loaded = GalleryIndex.load(index.save(tmp_path / "index.npz"))
    assert loaded.modality == "text" and list(loaded.ids) == list("abcdefghijkl")
    for field in ("embeddings", "states", "padding_mask", "names"):
        np.testing.assert_array_equal(getattr(loaded, field), getattr(index, field))
    # The states stay on disk, mapped: 12 texts x 12 tokens x 16 float32.
    assert isinstance(loaded.states, np.memmap)
    assert states_path(tmp_path / "index.npz").stat().st_size == 12 * 12 * 16 * 4
    # Streamed to disk while indexing, an image gallery gives the same index
    # and the same re-ranked search as one held in memory.
    images = retriever.index(batches, "image")
    streamed = retriever.index(batches, "image", path=tmp_path / "images.npz")
    assert isinstance(streamed.states, np.memmap)
    for field in ("embeddings", "states", "padding_mask", "ids"):
        np.testing.assert_array_equal(getattr(streamed, field), getattr(images, field))
    in_memory = retriever.search(index, images, k=6, rerank_k=4)
    for gallery in (streamed, GalleryIndex.load(tmp_path / "images.npz")):
        found = retriever.search(loaded, gallery, k=6, rerank_k=4)
        np.testing.assert_array_equal(found["indices"], in_memory["indices"])
        np.testing.assert_allclose(found["scores"], in_memory["scores"], rtol=1e-6)
    # A states file cut short (a crash while copying it) is refused by name.
    states = states_path(tmp_path / "images.npz")
    states.write_bytes(states.read_bytes()[:-4])
    with pytest.raises(ValueError, match="images.states holds .* index the gallery"):
        GalleryIndex.load(tmp_path / "images.npz")
    states.unlink()
    with pytest.raises(FileNotFoundError, match="states file .*images.states"):
        GalleryIndex.load(tmp_path / "images.npz")
    with pytest.raises(FileNotFoundError, match="No gallery index"):
        GalleryIndex.load(tmp_path / "missing.npz")
    (tmp_path / "other.npz").write_bytes(b"not an index")
    with pytest.raises(ValueError, match="not a gallery index"):
        GalleryIndex.load(tmp_path / "other.npz")
    with pytest.raises(ValueError, match="names has 2 items"):
        GalleryIndex(**{**vars(index), "names": np.array(["x", "y"])})


def test_classifier_modalities_read_only_their_inputs(backbone, preprocessor, pairs):
    x = preprocessor(pairs)
    # Image only: the graph of the full backbone with every token masked out.
    no_text = dict(x, padding_mask=tf.zeros_like(x["padding_mask"]))
    image_only = simmim_tf.SimMIMClassifier(
        backbone=backbone, num_classes=3, modalities=("image",)
    )
    assert set(image_only.input) == {"images"}
    fused = backbone(no_text)["fused_embedding"]
    np.testing.assert_allclose(
        image_only({"images": x["images"]}),
        image_only.output_dense(fused),
        atol=1e-5,
    )
    # Text only, without graph rounds: z = (mean real-token state) / sqrt(2).
    flat = tiny_backbone(num_rounds=0)
    text_only = simmim_tf.SimMIMClassifier(
        backbone=flat, num_classes=3, modalities=("text",)
    )
    assert set(text_only.input) == {"token_ids", "padding_mask"}
    text = {k: x[k] for k in ("token_ids", "padding_mask")}
    unimodal = flat.text_tower(text)["text_unimodal_embedding"]
    np.testing.assert_allclose(
        text_only(text), text_only.output_dense(unimodal / np.sqrt(2.0)), atol=1e-5
    )
    both = simmim_tf.SimMIMClassifier(backbone=backbone, num_classes=3)
    assert set(both.input) == {"images", "token_ids", "padding_mask"}
    np.testing.assert_allclose(
        both(x), both.output_dense(backbone(x)["fused_embedding"]), atol=1e-5
    )


def test_absent_text_is_an_empty_node_set(backbone, preprocessor, pairs):
    x = preprocessor(pairs)
    cells = backbone.image_tower(x["images"])["image_cell_states"]
    out = backbone.graph_fusion_for(("image",))({"image_cell_states": cells})
    assert out["text_node_states"].shape == (12, 0, 16)
    assert float(tf.reduce_max(tf.abs(out["text_graph_embedding"]))) == 0.0
    np.testing.assert_allclose(
        out["fused_embedding"], out["image_graph_embedding"] / np.sqrt(2.0), atol=1e-6
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
    objectives = retriever.objectives
    assert objectives.itm_head.weights
    for head in (objectives.mask_token, objectives.pixel_head, objectives.mlm_head):
        assert not head.weights
    expected = [
        *retriever.backbone.trainable_weights,
        *objectives.contrastive.trainable_weights,
        *objectives.itm_head.trainable_weights,
    ]
    assert {id(w) for w in retriever.trainable_weights} == {id(w) for w in expected}
    assert len(retriever.trainable_weights) == len(expected)
