"""XLA: the padded graph and `jit_compile`.

A padded graph (`padded_graph=True`) has sizes that depend only on tensor
shapes, so XLA compiles it. Each check compares the XLA-compiled model with
the eager, unpadded one, computed the usual way.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from simmim_tf.data.emoji_scenes import ANSWERS
from simmim_tf.graph.encoder import MultimodalGraphEncoder
from simmim_tf.models.preprocessor import SimMIMPreprocessor
from simmim_tf.models.pretrainer import SimMIMPretrainer
from simmim_tf.models.pretrainer_preprocessor import SimMIMPretrainerPreprocessor
from simmim_tf.models.retriever import SimMIMRetriever
from simmim_tf.models.vqa import SimMIMVQA
from tests.conftest import tiny_backbone

# Rows of every kind: short, full, a lone token, none at all.
MASK = np.array(
    [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=bool
)


def _xla(fn):
    return tf.function(fn, jit_compile=True)


@pytest.mark.parametrize("modalities", [("image", "text"), ("image",), ("text",)])
def test_the_padded_graph_under_xla_gives_the_unpadded_outputs(modalities):
    rng = np.random.default_rng(0)
    image = tf.constant(rng.normal(size=(4, 6, 16)), tf.float32)
    text = tf.constant(rng.normal(size=(4, 5, 16)), tf.float32)
    inputs = dict(
        image_states=image if "image" in modalities else None,
        text_states=text if "text" in modalities else None,
        padding_mask=tf.constant(MASK) if "text" in modalities else None,
    )
    encoders = [
        MultimodalGraphEncoder(
            units=16, grid_shape=(2, 3), num_heads=2, padded_graph=padded
        )
        for padded in (False, True)
    ]
    expected = encoders[0](**inputs)
    encoders[1](**inputs)
    encoders[1].set_weights(encoders[0].get_weights())
    got = _xla(lambda: encoders[1](**inputs))()
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key].shape == value.shape, key
        np.testing.assert_allclose(got[key], value, atol=2e-5, err_msg=key)
    if "text" in modalities:
        assert not np.any(got["text_node_states"].numpy()[~MASK])


def test_the_padded_graph_is_saved_in_the_config():
    backbone = tiny_backbone(padded_graph=True)
    assert backbone.get_config()["padded_graph"]
    assert backbone.graph_encoder.padded_graph
    assert type(backbone).from_config(backbone.get_config()).graph_encoder.padded_graph


def _inputs(preprocessor, count=8):
    rng = np.random.default_rng(2)
    raw = {
        "images": rng.integers(0, 256, size=(count, 16, 16, 3), dtype=np.uint8),
        # Texts of several lengths: the padding differs from row to row.
        "texts": np.array(
            [
                f"thing {word}" + " and more" * (i % 3)
                for i, word in enumerate("abcdefgh"[:count])
            ]
        ),
    }
    return {k: keras.ops.convert_to_numpy(v) for k, v in preprocessor(raw).items()}


def _task(name: str, padded_graph: bool) -> keras.Model:
    """A tiny task model; the same weights for both graphs (one seed)."""
    backbone = tiny_backbone(padded_graph=padded_graph)
    if name == "pretrainer":  # ITM off for the comparison: it samples negatives
        return SimMIMPretrainer(backbone, itm_weight=0.0)
    if name == "retriever":
        return SimMIMRetriever(backbone, itm_weight=0.0)
    return SimMIMVQA(backbone, answers=ANSWERS)  # a classification head


def _loss_and_gradients(model, x, y):
    with tf.GradientTape() as tape:
        loss = model.compute_loss(x, y, model(x, training=False), training=False)
    return loss, tape.gradient(loss, model.trainable_variables)


@pytest.mark.parametrize("task", ["pretrainer", "retriever", "vqa"])
def test_tasks_compile_with_xla_and_match_the_eager_model(task, tokenizer):
    """From the same weights, the XLA-compiled padded model's loss and every
    gradient equal the eager unpadded model's (float32 round-off)."""
    if task == "pretrainer":
        preprocessor = SimMIMPretrainerPreprocessor(
            tokenizer=tokenizer,
            image_size=(16, 16),
            sequence_length=12,
            mask_patch_size=4,
        )
        keras.utils.set_random_seed(0)
    else:
        preprocessor = SimMIMPreprocessor(
            tokenizer=tokenizer, image_size=(16, 16), sequence_length=12
        )
    x = _inputs(preprocessor)
    y = np.arange(8) % len(ANSWERS) if task == "vqa" else None
    eager, compiled = (_task(task, padded) for padded in (False, True))
    eager(x)
    compiled(x)
    compiled.set_weights(eager.get_weights())

    loss, gradients = _loss_and_gradients(eager, x, y)
    xla_loss, xla_gradients = _xla(lambda: _loss_and_gradients(compiled, x, y))()
    assert float(xla_loss) == pytest.approx(float(loss), rel=1e-4)
    for variable, g, xla_g in zip(
        eager.trainable_variables, gradients, xla_gradients, strict=True
    ):
        if g is None:
            assert xla_g is None, variable.path
            continue
        g, xla_g = (tf.convert_to_tensor(value) for value in (g, xla_g))  # embeddings
        scale = max(float(tf.reduce_max(tf.abs(g))), 1e-3)
        np.testing.assert_allclose(xla_g, g, atol=1e-3 * scale, err_msg=variable.path)


def test_xla_trains_the_padded_graph_and_refuses_the_unpadded_one(tokenizer):
    """`fit` with `jit_compile=True` lowers the loss of a task that reads the
    graph (VQA answers from it). The unpadded graph's node counts are data
    (the segment counts of TF-GNN's pooling), so XLA refuses to train it."""
    preprocessor = SimMIMPreprocessor(
        tokenizer=tokenizer, image_size=(16, 16), sequence_length=12
    )
    x = _inputs(preprocessor)
    y = np.arange(8) % len(ANSWERS)
    vqa = _task("vqa", padded_graph=True)
    loss = float(_loss_and_gradients(vqa, x, y)[0])
    vqa.compile(optimizer=keras.optimizers.SGD(0.05), jit_compile=True)
    vqa.fit(x, y, batch_size=8, epochs=8, verbose=0, shuffle=False)
    assert float(_loss_and_gradients(vqa, x, y)[0]) < 0.9 * loss

    unpadded = SimMIMRetriever(tiny_backbone())  # with ITM, which runs the graph
    unpadded.compile(optimizer=keras.optimizers.SGD(0.05), jit_compile=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="compile-time const"):
        unpadded.fit(x, batch_size=8, epochs=1, verbose=0)
