"""`SimMIMPretrainerPreprocessor`: model inputs plus the random masks of pre-training."""

from __future__ import annotations

import math

import keras
import keras_hub
import tensorflow as tf

# keras-hub has no public form of this decorator (tested with keras-hub 0.32,
# which setup.py pins).
from keras_hub.src.utils.tensor_utils import preprocessing_function

from simmim_tf.models.preprocessor import SimMIMPreprocessor
from simmim_tf.pretraining.masking import check_mask_arguments, simmim_mask


@keras.saving.register_keras_serializable(package="simmim_tf")
class SimMIMPretrainerPreprocessor(SimMIMPreprocessor):
    """`SimMIMPreprocessor` plus the random masks of pre-training.

    Adds, per batch: `mim_mask` `[B, H, W]` (SimMIM patches, 1 = masked) and
    the BERT MLM targets from `keras_hub.layers.MaskedLMMaskGenerator`
    (ceil(15 %) of each text's real tokens, so about 20 % of a short emoji
    text; 80 % become [MASK], 10 % a random token, 10 % unchanged):
    `masked_token_ids`, `mlm_positions`, `mlm_ids`, `mlm_weights`. Takes
    batched input only.

    Args:
        tokenizer: `keras_hub.models.BertTokenizer`.
        image_size: tuple of 2 ints. Model image size.
        sequence_length: int. Padded token length.
        mask_ratio: float. Share of image patches masked (SimMIM: 0.6).
        mask_patch_size: int. Side of a mask patch in pixels; SimMIM uses 32 at
            224 px, i.e. the encoder's stride; at 64 px with stride 16, 16.
        mlm_probability: float. Share of real tokens selected for MLM.
    """

    def __init__(
        self,
        tokenizer,
        image_size: tuple[int, int] = (64, 64),
        sequence_length: int = 32,
        mask_ratio: float = 0.6,
        mask_patch_size: int = 16,
        mlm_probability: float = 0.15,
        **kwargs,
    ):
        super().__init__(
            tokenizer, image_size=image_size, sequence_length=sequence_length, **kwargs
        )
        check_mask_arguments(self.image_size, mask_patch_size, mask_ratio)
        if not 0.0 < mlm_probability < 1.0:
            raise ValueError(f"MLM probability {mlm_probability} must be in (0, 1).")
        self.mask_ratio = mask_ratio
        self.mask_patch_size = mask_patch_size
        self.mlm_probability = mlm_probability
        self.mlm_masker = None

    def build(self, input_shape=None):
        super().build(input_shape)
        self.mlm_masker = keras_hub.layers.MaskedLMMaskGenerator(
            vocabulary_size=self.tokenizer.vocabulary_size(),
            mask_selection_rate=self.mlm_probability,
            mask_token_id=self.tokenizer.mask_token_id,
            mask_selection_length=math.ceil(self.sequence_length * self.mlm_probability)
            + 1,
            unselectable_token_ids=[
                self.tokenizer.cls_token_id,
                self.tokenizer.sep_token_id,
                self.tokenizer.pad_token_id,
            ],
        )
        self.mlm_masker._allow_python_workflow = False

    @preprocessing_function
    def call(self, x, y=None, sample_weight=None):
        inputs = super().call(x)
        masked = self.mlm_masker(inputs["token_ids"])
        batch_size = tf.shape(inputs["images"])[0]
        seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)
        inputs.update(
            mim_mask=simmim_mask(
                batch_size,
                self.image_size,
                patch_size=self.mask_patch_size,
                mask_ratio=self.mask_ratio,
                seed=seed,
            ),
            masked_token_ids=masked["token_ids"],
            mlm_positions=masked["mask_positions"],
            mlm_ids=masked["mask_ids"],
            mlm_weights=masked["mask_weights"],
        )
        return keras.utils.pack_x_y_sample_weight(inputs, y, sample_weight)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            mask_ratio=self.mask_ratio,
            mask_patch_size=self.mask_patch_size,
            mlm_probability=self.mlm_probability,
        )
        return config
