"""The BERT tokenizer in plain Python, for apps that run the TFLite models.

TF Text's normalisation ops have no TFLite kernels, so tokenisation stays
outside the `.tflite` files: an app tokenises with this file (standard
library only, one screen to port to Kotlin or Swift) and `vocab.txt`. It
gives exactly the ids of the keras-hub `BertTokenizer` + `StartEndPacker`
that `SimMIMPreprocessor` runs (tested on every text of the data set), by
the same steps:

1. CJK ideographs get spaces around them.
2. With `strip_accents`: NFD, then combining marks (category Mn) removed.
3. Split on ASCII whitespace and control/format characters (dropped) and on
   punctuation (kept as words): ASCII symbols and Unicode category P*.
4. With `lowercase`: each word NFKC-casefolded, default-ignorable code points
   dropped (TF Text's `case_fold_utf8`).
5. WordPiece, greedy longest match first, `##` continuations; a word with no
   full match or over 100 UTF-8 bytes is `[UNK]`.
6. `[CLS] ... [SEP]`, truncated to `sequence_length`, padded with `[PAD]`.

Example:
```python
tokenizer = ReferenceTokenizer.from_file("vocab.txt", sequence_length=32)
token_ids, padding_mask = tokenizer("I could eat a whole pizza")
```
"""

from __future__ import annotations

import unicodedata

# FastWordpieceTokenizer's limit, as keras-hub sets it.
MAX_BYTES_PER_WORD = 100
_CJK = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)
_DEFAULT_IGNORABLE = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)


def _in(ranges: tuple, char: str) -> bool:
    point = ord(char)
    return any(low <= point <= high for low, high in ranges)


def _is_space(char: str) -> bool:
    return char in " \t\n\r\f" or unicodedata.category(char) in ("Cc", "Cf")


def _is_punctuation(char: str) -> bool:
    point = ord(char)
    ascii_symbol = 33 <= point <= 47 or 58 <= point <= 64 or 91 <= point <= 96
    return (
        ascii_symbol or 123 <= point <= 126 or unicodedata.category(char).startswith("P")
    )


class ReferenceTokenizer:
    """Text -> `(token_ids, padding_mask)`, both lists of `sequence_length` ints.

    Args:
        vocabulary: list of str. Token i is line i of `vocab.txt`.
        sequence_length: int. Padded length, `[CLS]` and `[SEP]` included.
        lowercase: bool. Case-fold words (uncased BERT).
        strip_accents: bool. Remove combining marks.
    """

    def __init__(
        self,
        vocabulary: list[str],
        sequence_length: int,
        lowercase: bool = True,
        strip_accents: bool = True,
    ):
        self.ids = {token: index for index, token in enumerate(vocabulary)}
        self.sequence_length = sequence_length
        self.lowercase = lowercase
        self.strip_accents = strip_accents
        self.unknown = self.ids["[UNK]"]
        self.start, self.end, self.pad = (
            self.ids["[CLS]"],
            self.ids["[SEP]"],
            self.ids["[PAD]"],
        )

    @classmethod
    def from_file(cls, path: str, sequence_length: int, **kwargs) -> ReferenceTokenizer:
        """Read `vocab.txt` (one token a line, UTF-8)."""
        with open(path, encoding="utf-8") as file:
            vocabulary = file.read().split("\n")
        if vocabulary and vocabulary[-1] == "":
            vocabulary.pop()
        return cls(vocabulary, sequence_length, **kwargs)

    def words(self, text: str) -> list[str]:
        """Steps 1-4: normalised words and punctuation."""
        text = "".join(f" {c} " if _in(_CJK, c) else c for c in text)
        if self.strip_accents:
            text = unicodedata.normalize("NFD", text)
            text = "".join(c for c in text if unicodedata.category(c) != "Mn")
        words, word = [], []
        for char in text:
            if _is_space(char) or _is_punctuation(char) or _in(_CJK, char):
                if word:
                    words.append("".join(word))
                    word = []
                if not _is_space(char):
                    words.append(char)
            else:
                word.append(char)
        if word:
            words.append("".join(word))
        if self.lowercase:
            words = [self._casefold(word) for word in words]
        return words

    @staticmethod
    def _casefold(word: str) -> str:
        word = unicodedata.normalize("NFKC", word).casefold()
        word = unicodedata.normalize("NFKC", word)
        return "".join(c for c in word if not _in(_DEFAULT_IGNORABLE, c))

    def word_pieces(self, word: str) -> list[int]:
        """Step 5: one word's WordPiece ids."""
        if not word:
            return []
        if len(word.encode("utf-8")) > MAX_BYTES_PER_WORD:
            return [self.unknown]
        pieces, start = [], 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.ids:
                    pieces.append(self.ids[piece])
                    start = end
                    break
            else:
                return [self.unknown]
        return pieces

    def __call__(self, text: str) -> tuple[list[int], list[int]]:
        """Step 6: packed ids and the padding mask (1 for real tokens)."""
        ids = [piece for word in self.words(text) for piece in self.word_pieces(word)]
        ids = [self.start, *ids[: self.sequence_length - 2], self.end]
        padding = self.sequence_length - len(ids)
        return ids + [self.pad] * padding, [1] * len(ids) + [0] * padding
