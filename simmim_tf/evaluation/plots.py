"""Result figures (training curves, retrieval grids) saved as PNG files.

Figures are drawn on a `matplotlib.figure.Figure` with an explicit Agg canvas,
so nothing here touches pyplot's global backend (an interactive session keeps
its own) and matplotlib is only imported when a figure is drawn. Each PNG is
rendered in memory, then written with `simmim_tf.atomic.atomic_write_bytes` (a
temporary file in the same folder, moved in place with `os.replace`): a reader
sees the old PNG or the new one, never a partial file.
"""

from __future__ import annotations

import io
import os
import pathlib
import sys
import textwrap
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from simmim_tf.atomic import atomic_write_bytes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Border colours of the retrieval grid: the correct image, any other image.
HIT_COLOUR = "#00b000"
MISS_COLOUR = "#e00000"

# Metrics that always get a subplot; others only when they have a `val_` twin.
_MAIN_METRICS = ("loss", "accuracy")


def save_figure(figure: Figure, path: str | os.PathLike) -> pathlib.Path:
    """Render a figure to PNG in memory, write it atomically and close the figure.

    Rendering first means a failed render never leaves a truncated PNG behind.
    The figure is closed (released from pyplot, if pyplot manages it) even
    when rendering or writing fails.

    Args:
        figure: `matplotlib.figure.Figure`. The figure to save.
        path: str or path-like. The `.png` file to (over)write.

    Returns:
        `path` as a `pathlib.Path`.

    Example:
    ```python
    from matplotlib.figure import Figure

    figure = Figure(figsize=(3, 2))
    figure.add_subplot().plot([0, 1], [1, 0])
    save_figure(figure, "runs/demo/line.png")
    ```
    """
    try:
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)
        return atomic_write_bytes(path, buffer.getvalue())
    finally:
        # Only a figure made with pyplot needs closing, and then pyplot is loaded.
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:
            pyplot.close(figure)


def plot_recall_curves(
    curves: Mapping[str, Sequence[Mapping[str, float]]],
    path: str | os.PathLike,
    metrics: Sequence[str] = ("R@1", "R@10"),
    title: str = "",
) -> pathlib.Path:
    """Recall against training steps, one line per training set; one panel per metric.

    Args:
        curves: dict. Line name -> points, each a dict with `step` and the
            `metrics` (fractions in [0, 1]; drawn as %).
        path: str or path-like. The `.png` file to write.
        metrics: sequence of str. The point keys to draw, one panel each.
        title: str. The figure's title.

    Example:
    ```python
    points = [
        {"step": 100, "R@1": 0.1, "R@10": 0.3},
        {"step": 200, "R@1": 0.2, "R@10": 0.4},
    ]
    plot_recall_curves({"twitter": points}, "runs/recall_vs_steps.png")
    ```
    """
    figure = _new_figure(figsize=(5 * len(metrics), 3.6), layout="constrained")
    for i, metric in enumerate(metrics):
        axes = figure.add_subplot(1, len(metrics), i + 1)
        for name, points in curves.items():
            steps = [p["step"] for p in points]
            axes.plot(steps, [100 * p[metric] for p in points], marker="o", label=name)
        axes.set_xlabel("optimizer steps")
        axes.set_ylabel(f"{metric} (%)")
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    if title:
        figure.suptitle(title)
    return save_figure(figure, path)


def _new_figure(**kwargs) -> Figure:
    """A figure on an Agg canvas, independent of pyplot's global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(**kwargs)
    FigureCanvasAgg(figure)
    return figure


def _curve_metrics(histories: Mapping[str, Mapping[str, Sequence[float]]]) -> list[str]:
    """The metrics to plot: loss, accuracy, then every other key with a `val_` twin."""
    keys: dict[str, None] = {}  # An ordered set.
    for history in histories.values():
        keys.update(dict.fromkeys(history))
    names = [m for m in _MAIN_METRICS if m in keys or f"val_{m}" in keys]
    names += [
        key
        for key in keys
        if key not in _MAIN_METRICS
        and not key.startswith("val_")
        and f"val_{key}" in keys
    ]
    return names


def plot_training_curves(
    histories: Mapping[str, Mapping[str, Sequence[float]]],
    path: str | os.PathLike,
    *,
    val_label: str = "validation",
) -> pathlib.Path:
    """Plot per-epoch training curves of one or more runs to a PNG file.

    One subplot per metric: `loss` and `accuracy` when present, and every other
    metric that has a `val_` twin (e.g. `recall_at_1`); keys without a twin,
    such as `learning_rate`, are skipped. Training values are solid lines,
    `val_` values dashed, one colour per run; the x axis counts epochs from 1.
    Runs may have different lengths and may lack `val_` keys.

    Args:
        histories: dict. Run name -> Keras `History.history` (metric name ->
            one value per epoch).
        path: str or path-like. The `.png` file to (over)write.
        val_label: str. Legend name of the dashed `val_` curves.

    Returns:
        `path` as a `pathlib.Path`.

    Example:
    ```python
    history = model.fit(train, validation_data=test, epochs=5)
    plot_training_curves({"SimMIM": history.history}, "runs/demo/curves.png")
    ```
    """
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    if not histories:
        raise ValueError("`histories` is empty: there is no run to plot.")
    metrics = _curve_metrics(histories)
    if not metrics:
        keys = sorted({key for history in histories.values() for key in history})
        raise ValueError(
            "No metric to plot: expected `loss`, `accuracy` or a metric with a "
            f"`val_` twin; got keys {keys}."
        )
    num_columns = min(len(metrics), 3)
    num_rows = -(-len(metrics) // num_columns)
    figure = _new_figure(
        figsize=(4.2 * num_columns, 3.2 * num_rows + 0.5), layout="constrained"
    )
    axes = figure.subplots(num_rows, num_columns, squeeze=False).ravel()
    for axis in axes[len(metrics) :]:
        axis.set_visible(False)
    for axis, metric in zip(axes, metrics, strict=False):
        for index, history in enumerate(histories.values()):
            for key, style in ((metric, "-"), (f"val_{metric}", "--")):
                values = np.asarray(history.get(key, ()), dtype=float).ravel()
                if values.size:
                    axis.plot(
                        np.arange(1, values.size + 1),
                        values,
                        style,
                        color=f"C{index}",
                        marker="o" if values.size == 1 else None,
                    )
        axis.set_title(metric)
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
    handles = [
        Line2D([], [], color=f"C{index}", label=name)
        for index, name in enumerate(histories)
    ]
    handles += [
        Line2D([], [], color="0.3", linestyle="-", label="train"),
        Line2D([], [], color="0.3", linestyle="--", label=val_label),
    ]
    figure.legend(
        handles=handles,
        loc="outside lower center",
        ncol=min(len(handles), 4),
        fontsize=8,
        frameon=False,
    )
    return save_figure(figure, path)


def _query_text(query: str | bytes, width: int = 28, max_lines: int = 6) -> str:
    """Wrap a query to `width` characters, at most `max_lines` lines."""
    if isinstance(query, bytes):
        query = query.decode("utf-8", errors="replace")
    lines = textwrap.wrap(str(query), width=width) or [""]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: width - 1] + "…"
    return "\n".join(lines)


def plot_retrieval_grid(
    queries: Sequence[str],
    gallery_images: np.ndarray,
    top_indices: np.ndarray,
    relevant: np.ndarray | None,
    path: str | os.PathLike,
    *,
    k: int = 5,
) -> pathlib.Path:
    """Draw text-to-image retrieval results: one row per query, its top-k images.

    Each row shows the query text (wrapped) and then the first `k` gallery
    images of its ranking, each titled with its rank. The correct image has a
    green border and a check mark; the others have a red border. A row whose
    correct image is not in the top k says so under the query.

    Args:
        queries: sequence of str (or UTF-8 bytes). The `Q` text queries.
        gallery_images: `[G, H, W, 3]` uint8 array. The image gallery.
        top_indices: `[Q, >=k]` int array. Gallery indices of each query's
            ranking, best first (e.g. `np.argsort(-similarity, axis=1)`).
        relevant: `[Q]` int array. The gallery index of each query's correct
            image; None when there is none (a free-text query): no marks.
        path: str or path-like. The `.png` file to (over)write.
        k: int. How many images to show per query.

    Returns:
        `path` as a `pathlib.Path`.

    Example:
    ```python
    similarity = text_embeddings @ image_embeddings.T  # [Q, G]
    plot_retrieval_grid(
        texts, images, np.argsort(-similarity, axis=1), np.arange(len(texts)),
        "runs/demo/retrieval.png", k=5)
    ```
    """
    gallery_images = np.asarray(gallery_images)
    top_indices = np.asarray(top_indices)
    num_queries = len(queries)
    marked = relevant is not None
    relevant = np.asarray(relevant) if marked else np.zeros(num_queries, int)
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"`k` must be a positive int; got {k!r}.")
    if num_queries == 0:
        raise ValueError("`queries` is empty: there is nothing to plot.")
    if gallery_images.ndim != 4 or gallery_images.shape[-1] != 3:
        raise ValueError(
            f"`gallery_images` must have shape [G, H, W, 3]; got {gallery_images.shape}."
        )
    if gallery_images.dtype != np.uint8:
        raise ValueError(
            f"`gallery_images` must be uint8 (0-255); got {gallery_images.dtype}."
        )
    gallery_size = gallery_images.shape[0]
    if top_indices.ndim != 2 or top_indices.shape[0] != num_queries:
        raise ValueError(
            f"`top_indices` must have shape [{num_queries}, >={k}] (one row per "
            f"query); got {top_indices.shape}."
        )
    if top_indices.shape[1] < k:
        raise ValueError(
            f"`top_indices` has {top_indices.shape[1]} columns, fewer than k={k}."
        )
    if relevant.shape != (num_queries,):
        raise ValueError(
            f"`relevant` must have shape [{num_queries}] (one index per query); got "
            f"{relevant.shape}."
        )
    for name, indices in (("top_indices", top_indices[:, :k]), ("relevant", relevant)):
        if not np.issubdtype(indices.dtype, np.integer):
            raise ValueError(f"`{name}` must be integers; got {indices.dtype}.")
        if indices.size and (indices.min() < 0 or indices.max() >= gallery_size):
            raise ValueError(
                f"`{name}` must index the gallery of {gallery_size} images; got "
                f"values in [{indices.min()}, {indices.max()}]."
            )

    figure = _new_figure(figsize=(2.6 + 1.3 * k, 0.3 + 1.5 * num_queries))
    grid = figure.add_gridspec(
        num_queries,
        k + 1,
        width_ratios=[2.0] + [1.0] * k,
        left=0.02,
        right=0.99,
        top=1 - 0.25 / figure.get_figheight(),
        bottom=0.05 / figure.get_figheight(),
        wspace=0.12,
        hspace=0.35,
    )
    for row, query in enumerate(queries):
        ranking = top_indices[row, :k]  # [k]
        text_axis = figure.add_subplot(grid[row, 0])
        text_axis.axis("off")
        text_axis.text(0.0, 0.5, _query_text(query), va="center", ha="left", fontsize=9)
        if marked and relevant[row] not in ranking:
            text_axis.text(
                0.0,
                0.0,
                f"correct image not in top {k}",
                va="bottom",
                ha="left",
                fontsize=7,
                style="italic",
                color="0.4",
            )
        for rank, index in enumerate(ranking, start=1):
            hit = marked and index == relevant[row]
            axis = figure.add_subplot(grid[row, rank])
            axis.imshow(gallery_images[index], interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_title(
                f"#{rank} ✓" if hit else f"#{rank}",
                fontsize=9,
                color=HIT_COLOUR if hit else "black",
                pad=3,
            )
            for spine in axis.spines.values():
                if marked:
                    spine.set_color(HIT_COLOUR if hit else MISS_COLOUR)
                    spine.set_linewidth(4)
    return save_figure(figure, path)


def plot_vqa_grid(
    scenes: np.ndarray,
    questions: Sequence[str],
    predicted: Sequence[str],
    true: Sequence[str],
    path: str | os.PathLike,
    *,
    columns: int = 4,
) -> pathlib.Path:
    """Draw scenes with their question, the predicted and the true answer.

    Each panel shows a scene, titled with its question and "predicted / true"
    in green when they agree, red when not.

    Args:
        scenes: `[N, H, W, 3]` uint8 array.
        questions, predicted, true: N strings each.
        path: str or path-like. The `.png` file to (over)write.
        columns: int. Panels per row.

    Returns:
        `path` as a `pathlib.Path`.

    Example:
    ```python
    plot_vqa_grid(scenes["image"][:8], scenes["question"][:8],
                  vqa.answer(x)[:8], scenes["answer"][:8], "runs/vqa/vqa.png")
    ```
    """
    scenes = np.asarray(scenes)
    count = len(scenes)
    if not count or not len(questions) == len(predicted) == len(true) == count:
        raise ValueError(
            f"Need as many questions and answers as scenes (> 0); got {count} scenes, "
            f"{len(questions)} questions, {len(predicted)} predicted, {len(true)} true."
        )
    rows = -(-count // columns)
    figure = _new_figure(figsize=(2.6 * columns, 3.0 * rows))
    for index, (scene, question, guess, answer) in enumerate(
        zip(scenes, questions, predicted, true, strict=True)
    ):
        axes = figure.add_subplot(rows, columns, index + 1)
        axes.imshow(scene)
        axes.set_xticks([])
        axes.set_yticks([])
        right = guess == answer
        axes.set_title(
            f"{_query_text(question, width=30, max_lines=2)}\n{guess} / {answer}",
            fontsize=8,
            color="green" if right else "red",
        )
    figure.suptitle("question — predicted / true answer", fontsize=10)
    return save_figure(figure, path)
