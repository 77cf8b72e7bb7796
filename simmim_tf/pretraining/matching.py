"""The image-text matching (ITM) head."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="simmim_tf")
class MatchingHead(keras.layers.Layer):
    """Binary match logits from the fused embedding and the two readouts.

    A linear head on z = (x + y) / sqrt(2) alone cannot tell a matching pair
    from a mismatched one: "x agrees with y" is a product of x and y, not a
    sum. ALBEF's head sees a [CLS] state built by cross-attention layers; our
    readouts are means, so the head is given the interaction explicitly:
    `[z, x * y]` -> Dense(gelu) -> Dense(2) (logits of no-match, match).

    Args:
        hidden_dim: int. Width of the hidden layer.

    Example:
    ```python
    head = MatchingHead(32)
    logits = head(fused, image_readout, text_readout)  # [batch, 2]
    ```
    """

    def __init__(self, hidden_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim = hidden_dim
        self.hidden = keras.layers.Dense(
            hidden_dim, activation="gelu", dtype=self.dtype_policy, name="hidden"
        )
        self.logits = keras.layers.Dense(2, dtype=self.dtype_policy, name="logits")

    def build(self, fused_shape, image_readout_shape=None, text_readout_shape=None):
        self.hidden.build((*fused_shape[:-1], 2 * fused_shape[-1]))
        self.logits.build((*fused_shape[:-1], self.hidden_dim))

    def call(self, fused, image_readout, text_readout):
        features = keras.ops.concatenate([fused, image_readout * text_readout], axis=-1)
        return self.logits(self.hidden(features))

    def compute_output_shape(
        self, fused_shape, image_readout_shape=None, text_readout_shape=None
    ):
        return (*fused_shape[:-1], 2)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(hidden_dim=self.hidden_dim)
        return config
