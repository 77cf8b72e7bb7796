"""Recommend emoji for a text with a trained retriever: `simmim-tf recommend`.

The gallery is every emoji one artist draws, encoded once by
`SimMIMRetriever.index` and kept beside the model as
`index_<artist>.npz`; a text is then one text-tower pass, a cosine against
the gallery and, for the top `rerank_k`, one graph pass per candidate.
"""

from __future__ import annotations

import contextlib
import os
import pathlib

import numpy as np
import tensorflow as tf

from simmim_tf.evaluation.plots import plot_retrieval_grid
from simmim_tf.model_files import load_model_file
from simmim_tf.models.gallery_index import GalleryIndex
from simmim_tf.training.config import load_run_config
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
    config = load_run_config(
        run_dir,
        ("retrieve",),
        "recommending needs a retrieval run (finetune.task=retrieve).",
    )
    if not texts:
        raise ValueError("No text to recommend emoji for.")
    if artist is not None:
        config["data"]["test_artist"] = artist
    model_file = run_dir / "model.keras"
    retriever = load_model_file(model_file)
    # The gallery is encoded once per model: rebuilt when the model is newer.
    cache = run_dir / f"index_{config['data']['test_artist']}.npz"
    gallery = None
    if cache.is_file() and cache.stat().st_mtime >= model_file.stat().st_mtime:
        with contextlib.suppress(ValueError, FileNotFoundError):  # stale: rebuild
            gallery = GalleryIndex.load(cache)
    if gallery is None:
        gallery = gallery_index(retriever, config, path=cache)
    text_preprocessor = build_preprocessor(config, modalities=("text",))
    queries = retriever.index(
        tf.data.Dataset.from_tensors(text_preprocessor({"texts": texts})), "text"
    )
    found = retriever.search(
        queries, gallery, k=k, rerank_k=config["finetune"]["rerank_k"]
    )
    if grid is not None:
        splits, _ = load_splits(config)
        images = np.stack([e["image"] for e in splits["test"].as_numpy_iterator()])
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


def gallery_index(
    retriever, config: dict, path: str | os.PathLike | None = None
) -> GalleryIndex:
    """The test artist's drawings as a `GalleryIndex` (ids: hexcodes, names:
    labels), in the order of the data set's test split; saved at `path`."""
    splits, builder = load_splits(config)
    labels = builder.info.features["label"]
    examples = splits["test"]
    keys = examples.map(lambda e: (e["hexcode"], e["label"])).as_numpy_iterator()
    ids, label_ids = zip(*keys, strict=True)
    return retriever.index(
        make_batches(config, examples, build_preprocessor(config)),
        "image",
        ids=[hexcode.decode() for hexcode in ids],
        names=[labels.int2str(int(label)) for label in label_ids],
        path=path,
    )
