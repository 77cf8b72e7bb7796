"""A frozen text encoder's states, computed once per run and read by every step.

A run's texts are few (one CLDR text per emoji: about 1 900) and a frozen
encoder maps each to the same states every time, so running it in every
training step (about a fifth of a 64 px step with MiniLM-L6) is wasted work.
`FrozenTextStates.compute` encodes each distinct text once, in inference
mode, and `attach` adds its states to batches as `text_encoder_states`,
which `SimMIMBackbone.encode_text` reads in place of running the encoder
(`model.cache_text_states`, on by default, for retrieval and pre-training).
The lookup is a hash of the token ids and a sorted search over plain
tensors (no lookup-table resource), so the batches shard under any
`tf.distribute` strategy.

Example:
```python
backbone.text_encoder.trainable = False
states = FrozenTextStates.compute(
    backbone.text_encoder, preprocessor, split_texts(train_examples)
)
retriever.fit(states.attach(train_batches), epochs=20)
```
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import keras
import numpy as np
import tensorflow as tf

from simmim_tf.models.inputs import TEXT_ENCODER_STATES, encode_tokens

ENCODE_BATCH_SIZE = 256


def text_keys(token_ids: tf.Tensor) -> tf.Tensor:
    """One int64 key per row of `token_ids` `[N, L]`: a hash of the row."""
    rows = tf.strings.reduce_join(tf.strings.as_string(token_ids), axis=-1, separator=" ")
    return tf.strings.to_hash_bucket_fast(rows, np.iinfo(np.int64).max)


class FrozenTextStates:
    """The states of a frozen text encoder for a fixed set of texts.

    Args:
        keys: int64 `[N]`, sorted: `text_keys` of the texts.
        states: float32 `[N, L, H]`: the encoder's token states of each text.
    """

    def __init__(self, keys: np.ndarray, states: np.ndarray):
        if len(keys) != len(states) or np.any(np.diff(keys) <= 0):
            raise ValueError(
                f"Keys ({len(keys)}) must be sorted, distinct (two texts whose "
                f"keys collide cannot be cached apart) and one per state "
                f"({len(states)})."
            )
        self.keys = tf.constant(keys, tf.int64)
        self.states = tf.constant(states, tf.float32)

    @classmethod
    def compute(
        cls, text_encoder: keras.Model, preprocessor, texts: Iterable
    ) -> FrozenTextStates:
        """Encode each distinct text once, in inference mode.

        Args:
            text_encoder: keras-hub `BertBackbone`, frozen.
            preprocessor: the `SimMIMPreprocessor` (or pretraining one) whose
                `tokenize` makes the batches' `token_ids`.
            texts: str or bytes: every text the batches hold (training
                batches drop a different remainder every epoch, so take them
                from the examples, see `split_texts`).
        """
        if text_encoder.trainable:
            raise ValueError(
                "Only a frozen text encoder's states can be computed once: this "
                "one is trainable (model.train_text_encoder)."
            )
        texts = sorted(
            {text.encode() if isinstance(text, str) else text for text in texts}
        )
        if not texts:
            raise ValueError("No texts to compute frozen text states of.")
        # Tokenised as the pipeline does (in a graph: eager keras-hub
        # tokenizers return lists); texts that differ only in what the
        # tokenizer drops are one row.
        tokenized = (
            tf.data.Dataset.from_tensor_slices(texts)
            .batch(ENCODE_BATCH_SIZE)
            .map(preprocessor.tokenize)
        )
        rows = np.unique(
            np.concatenate(
                [np.concatenate(text, 1) for text in tokenized.as_numpy_iterator()]
            ),
            axis=0,
        )
        token_ids, padding_mask = np.split(rows, 2, axis=1)
        keys = text_keys(tf.constant(token_ids)).numpy()
        order = np.argsort(keys)
        encode = tf.function(lambda *text: encode_tokens(text_encoder, *text))
        states = [
            tf.cast(encode(token_ids[part], padding_mask[part]), "float32").numpy()
            for part in np.array_split(order, -(-len(order) // ENCODE_BATCH_SIZE))
        ]
        return cls(keys[order], np.concatenate(states))

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    def lookup(self, token_ids: tf.Tensor) -> tf.Tensor:
        """The states `[B, L, H]` of each row of `token_ids` `[B, L]`.

        A text the cache does not hold is an error that says so.
        """
        keys = text_keys(token_ids)
        index = tf.minimum(tf.searchsorted(self.keys, keys), len(self) - 1)
        found = tf.gather(self.keys, index) == keys
        with tf.control_dependencies(
            [
                tf.debugging.Assert(
                    tf.reduce_all(found),
                    ["A text is not among the frozen text states computed for this run."],
                )
            ]
        ):
            return tf.gather(self.states, index)

    def attach(self, batches: tf.data.Dataset) -> tf.data.Dataset:
        """`batches` with `text_encoder_states` added to their inputs."""

        def add_states(inputs, *rest):
            inputs = {**inputs, TEXT_ENCODER_STATES: self.lookup(inputs["token_ids"])}
            return (inputs, *rest) if rest else inputs

        return batches.map(add_states, num_parallel_calls=tf.data.AUTOTUNE)


def split_texts(*examples: tf.data.Dataset) -> Iterator[bytes]:
    """Every `text` of emoji_text example datasets (`compute` keeps one of each)."""
    for dataset in examples:
        yield from dataset.map(lambda example: example["text"]).as_numpy_iterator()


def with_frozen_text_states(
    config: dict,
    text_encoder: keras.Model,
    preprocessor,
    examples: Iterable[tf.data.Dataset],
    *batches: tf.data.Dataset,
) -> tuple[tf.data.Dataset, ...]:
    """`batches` with their frozen text states attached, when the config says so.

    With `model.cache_text_states` and a frozen text encoder
    (`model.train_text_encoder` false), the states of every text of
    `examples` (the splits `batches` were made of) are computed once here;
    otherwise `batches` come back unchanged.
    """
    model = config["model"]
    if not model["cache_text_states"] or model["train_text_encoder"]:
        return batches
    states = FrozenTextStates.compute(text_encoder, preprocessor, split_texts(*examples))
    return tuple(states.attach(dataset) for dataset in batches)
