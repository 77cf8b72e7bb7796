"""Recommend emoji for a text with a trained retriever: `simmim-tf recommend`.

The gallery is every emoji one artist draws, encoded once by
`SimMIMRetriever.index` and kept beside the model as
`index_<artist>.npz`; a text is then one text-tower pass, a cosine against
the gallery and, for the top `rerank_k`, one graph pass per candidate.
"""

from __future__ import annotations

import os
import pathlib

import keras
import numpy as np
import tensorflow as tf

from simmim_tf.evaluation.plots import plot_retrieval_grid
from simmim_tf.models.gallery_index import GalleryIndex
from simmim_tf.training.config import DEFAULT_CONFIG, load_config
from simmim_tf.training.data import load_splits, make_batches
from simmim_tf.training.tasks import build_preprocessor


def emoji_characters(hexcode: str) -> str:
    """The emoji itself from its hexcode, e.g. "1F355" -> "🍕"."""
    return "".join(chr(int(point, 16)) for point in hexcode.split("-"))


def recommend(
    run_dir: str | os.PathLike,
    texts: list[str],
    *,
    k: int = 5,
    artist: str | None = None,
    grid: str | os.PathLike | None = None,
) -> list[list[dict]]:
    """The top `k` emoji of `artist` for each text, from a retrieval run.

    Args:
        run_dir: a `finetune` run folder of task `retrieve` (`model.keras`,
            `config.yaml`).
        texts: list of str. Free-text queries.
        k: int. Emoji per text.
        artist: str. Whose drawings form the gallery (default: the run's
            test artist).
        grid: path. Optional PNG with each text and its top `k` drawings.

    Returns:
        Per text, `k` dicts best first: `emoji` (the characters), `name`,
        `hexcode`, `score` and `reranked`.

    Example:
    ```python
    recommend("runs/ret", ["I could eat a whole pizza"])[0][0]["emoji"]
    ```
    """
    run_dir = pathlib.Path(run_dir)
    config = load_config(run_dir / "config.yaml", defaults=DEFAULT_CONFIG)
    if config["finetune"]["task"] != "retrieve":
        raise ValueError(
            f"{run_dir} is a {config['finetune']['task']!r} run; recommending needs "
            "a retrieval run (finetune.task=retrieve)."
        )
    if artist is not None:
        config["data"]["test_vendor"] = artist
    retriever = keras.models.load_model(run_dir / "model.keras")
    preprocessor = build_preprocessor(config)
    gallery, examples = _gallery(retriever, config, preprocessor, run_dir)
    if not texts:
        raise ValueError("No text to recommend emoji for.")
    text_preprocessor = build_preprocessor(config, modalities=("text",))
    queries = retriever.index(
        tf.data.Dataset.from_tensors(text_preprocessor({"texts": texts})), "text"
    )
    found = retriever.search(
        queries, gallery, k=k, rerank_k=config["finetune"]["rerank_k"]
    )
    if grid is not None:
        images = np.stack([example["image"] for example in examples])
        plot_retrieval_grid(texts, images, found["indices"], None, grid, k=k)
    return [
        [
            {
                "emoji": emoji_characters(hexcode),
                "name": name,
                "hexcode": hexcode,
                "score": float(score),
                "reranked": bool(reranked),
            }
            for hexcode, name, score, reranked in zip(
                found["ids"][row],
                found["names"][row],
                found["scores"][row],
                found["reranked"][row],
                strict=True,
            )
        ]
        for row in range(len(texts))
    ]


def _gallery(retriever, config: dict, preprocessor, run_dir: pathlib.Path):
    """The artist's gallery index (cached beside the model) and its examples."""
    splits, builder = load_splits(config)
    examples = list(splits["test"].as_numpy_iterator())
    path = run_dir / f"index_{config['data']['test_vendor']}.npz"
    model_time = (run_dir / "model.keras").stat().st_mtime
    if path.is_file() and path.stat().st_mtime >= model_time:
        return GalleryIndex.load(path), examples
    labels = builder.info.features["label"]
    index = retriever.index(
        make_batches(config, splits["test"], preprocessor),
        "image",
        ids=[example["hexcode"].decode() for example in examples],
        names=[labels.int2str(int(example["label"])) for example in examples],
    )
    index.save(path)
    return index, examples
