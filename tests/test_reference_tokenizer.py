"""The plain-Python tokenizer shipped beside the TFLite models gives the ids
of the keras-hub tokenizer that `SimMIMPreprocessor` runs, text for text."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest

import simmim_tf
from simmim_tf.data.emoji_text import SAMPLE_DIR, emojibase_tarball_name, read_emojibase
from simmim_tf.reference_tokenizer import ReferenceTokenizer

# Beyond the data set: accents, CJK, scripts without case, control and format
# characters, non-ASCII spaces, emoji, a word over 100 bytes, a long text.
HARD_TEXTS = [
    "Café Piñata: naïve résumé",
    "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ ﬁ ligature Straße İstanbul",
    "日本語のテキスト 中文 한국어",
    "tab\tnew\nline\rcarriage\x0bvt\x0cff",
    "zero\u200bwidth soft\u00adhyphen nbsp\u00a0space ideographic\u3000space",
    "emoji 😀🍕 flags 🇫🇷 zwj 👩\u200d💻 keycap #\ufe0f\u20e3",
    "punctuation!?¿¡…—«quotes» “curly” ‘single’ $^`~|<>",
    "x" * 120,
    "Ελληνικά ΣΊΣΥΦΟΣ кириллица עברית العربية हिन्दी",
    " ".join(["pizza"] * 200),
    "a",
]


def _texts() -> list[str]:
    tarball = SAMPLE_DIR / emojibase_tarball_name()
    return [record["text"] for record in read_emojibase(tarball, True)] + HARD_TEXTS


@pytest.fixture(scope="module")
def vocab_file(tokenizer, tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(tokenizer.get_vocabulary()) + "\n", encoding="utf-8")
    return path


def test_ids_equal_keras_hub_on_every_text_of_the_data_set(tokenizer, vocab_file):
    texts = _texts()
    assert len(texts) > 600
    preprocessor = simmim_tf.SimMIMPreprocessor(
        tokenizer=tokenizer, sequence_length=32, modalities=("text",)
    )
    expected = preprocessor({"texts": np.array(texts)})
    reference = ReferenceTokenizer.from_file(str(vocab_file), sequence_length=32)
    ids, masks = zip(*(reference(text) for text in texts), strict=True)
    mismatched = [
        text
        for text, row, want in zip(texts, ids, expected["token_ids"].numpy(), strict=True)
        if list(row) != list(want)
    ]
    assert not mismatched, mismatched[:5]
    np.testing.assert_array_equal(np.array(masks, bool), expected["padding_mask"])
    assert reference(HARD_TEXTS[7])[0][1] == reference.unknown  # over 100 bytes


def test_it_runs_in_a_python_without_site_packages(vocab_file):
    source = pathlib.Path(simmim_tf.__file__).parent / "reference_tokenizer.py"
    code = (
        source.read_text()
        + f"\nprint(ReferenceTokenizer.from_file({str(vocab_file)!r}, 8)('Pizza!'))"
    )
    # -I -S: isolated, no site-packages: nothing but the standard library.
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    pizza = ReferenceTokenizer.from_file(str(vocab_file), 8)("Pizza!")
    assert result.stdout.strip() == str(pizza)
    assert pizza[1] == [1, 1, 1, 1, 0, 0, 0, 0]  # [CLS] pizza ! [SEP]
