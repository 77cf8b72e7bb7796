"""Data: the `emoji_text` TFDS dataset (emoji images + CLDR text) and its sources."""

from simmim_tf.data.emoji_text import SAMPLE_DIR as SAMPLE_DIR
from simmim_tf.data.emoji_text import EmojiText as EmojiText
from simmim_tf.data.emoji_text import EmojiTextConfig as EmojiTextConfig
from simmim_tf.data.emoji_text import emoji_text_builder as emoji_text_builder
from simmim_tf.data.emoji_text import load_emoji_text as load_emoji_text
from simmim_tf.data.fetch import fetch_emoji_tarballs as fetch_emoji_tarballs
