"""Result tables and markdown result reports.

One table renderer, `format_table`, formats every table: the markdown reports
(`write_results_markdown`) and the console (`print_table`) show numbers alike.
"""

from __future__ import annotations

import math
import numbers
import os
import pathlib
import re
from collections.abc import Mapping, Sequence

import numpy as np

from simmim_tf.atomic import atomic_write_text

MISSING = "–"  # An en dash: the cell of a metric a row does not have.


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def _is_percentage_column(column: str) -> bool:
    """Accuracy ("acc" in any case) or recall ("R@k") columns hold fractions."""
    return "acc" in column.lower() or re.search(r"R@\d", column) is not None


def _format_float(value: float) -> str:
    """Three significant digits, without scientific notation from 1e-3 to 1e15."""
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    if abs(value) >= 999.5:  # Would round to 4+ digits: show an integer.
        return f"{value:,.0f}"
    if abs(value) < 1e-3:
        return f"{value:.2e}"
    return f"{value:#.3g}".rstrip(".")


def _format_cell(column: str, value) -> str:
    if value is None:
        return MISSING
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    if isinstance(value, numbers.Real):
        value = float(value)
        if _is_percentage_column(column) and 0.0 <= value <= 1.0:
            return f"{100 * value:.1f} %"
        return _format_float(value)
    return " ".join(str(value).split()).replace("|", "\\|")


def format_table(rows: Sequence[Mapping], columns: Sequence[str] | None = None) -> str:
    """Format result rows as a GitHub-markdown table.

    Cells are formatted by type: floats in [0, 1] in a column whose name
    contains "acc" (any case) or "R@" and a digit as percentages with one
    decimal (`87.5 %`); other floats with three significant digits (`0.123`,
    `12.3`, integers with separators from 1,000 on); ints with thousands
    separators (`1,234,567`); a missing key or `None` as `–`. Columns whose
    values are all numbers are right-aligned. The raw text is padded so that it
    reads as a table too.

    Args:
        rows: list of dicts. One dict per table row, column name -> value.
        columns: sequence of str. The columns, in order; default: every key of
            `rows`, in order of first appearance.

    Returns:
        The table as one string of lines, without a trailing newline.

    Example:
    ```python
    print(format_table([{"model": "SimMIM", "accuracy": 0.875, "parameters": 1234}]))
    # | model  | accuracy | parameters |
    # | ------ | -------: | ---------: |
    # | SimMIM |   87.5 % |      1,234 |
    ```
    """
    if columns is None:
        if not rows:
            raise ValueError("format_table needs at least one row or explicit `columns`.")
        columns = list({key: None for row in rows for key in row})
    columns = [str(column) for column in columns]
    if not columns:
        raise ValueError("format_table needs at least one column; got none.")
    cells = [
        [_format_cell(column, row.get(column)) for column in columns] for row in rows
    ]
    numeric = [
        any(column in row for row in rows)
        and all(_is_number(row[column]) for row in rows if row.get(column) is not None)
        for column in columns
    ]
    headers = [_format_cell("", column) for column in columns]
    widths = [
        max([3, len(header)] + [len(line[i]) for line in cells])
        for i, header in enumerate(headers)
    ]

    def line(values: list[str]) -> str:
        padded = [
            value.rjust(width) if right else value.ljust(width)
            for value, width, right in zip(values, widths, numeric, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = [
        "-" * (width - 1) + ":" if right else "-" * width
        for width, right in zip(widths, numeric, strict=True)
    ]
    return "\n".join([line(headers), line(rule)] + [line(values) for values in cells])


def print_table(
    rows: Mapping[str, Mapping], title: str, *, name_column: str = "model"
) -> None:
    """Print a result table to the console: one row per name, one column per metric.

    The table is `format_table`'s (the same cells and number rules as the
    markdown reports), with the row names in a first column `name_column`, under
    a blank line and `title`.

    Args:
        rows: dict. Row name (e.g. the model) -> dict of metric name -> value.
        title: str. Printed above the table.
        name_column: str. Header of the column of row names.

    Example:
    ```python
    print_table({"SimMIM": {"google accuracy": 0.875, "parameters": 1234}}, "emoji")
    #
    # emoji
    # | model  | google accuracy | parameters |
    # | ------ | --------------: | ---------: |
    # | SimMIM |          87.5 % |      1,234 |
    ```
    """
    if not rows:
        print(f"\n{title}\n(no rows)")
        return
    for name, row in rows.items():
        if name_column in row:
            raise ValueError(
                f"Row {name!r} has a metric named {name_column!r}, the header of the "
                "row names: pass another `name_column`."
            )
    table = format_table([{name_column: name, **row} for name, row in rows.items()])
    print(f"\n{title}\n{table}")


def _inline_code(text: str) -> str:
    """Markdown inline code that survives backticks inside `text`."""
    fence = "`"
    while fence in text:
        fence += "`"
    padding = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{padding}{text}{padding}{fence}"


def _image_link(alt: str, image: str | os.PathLike, folder: pathlib.Path) -> str:
    target = pathlib.Path(os.path.relpath(pathlib.Path(image).absolute(), folder))
    target = target.as_posix()
    if any(character in target for character in " ()<>"):
        target = f"<{target}>"
    alt = alt.replace("[", "\\[").replace("]", "\\]")
    return f"![{alt}]({target})"


def write_results_markdown(
    path: str | os.PathLike,
    *,
    title: str,
    sections: Sequence[tuple[str, Sequence[Mapping], str]],
    command: str,
    wall_seconds: float,
    wall_note: str = "",
    notes: str = "",
    images: Sequence[tuple[str, str | os.PathLike]] = (),
) -> pathlib.Path:
    """Write a markdown results report, atomically.

    The report has the title, the command that regenerates it, the wall time
    in minutes, then per section a heading, a table (`format_table`) and a
    paragraph, then the images, then the notes.

    Args:
        path: str or path-like. The `.md` file to (over)write.
        title: str. The report's top heading.
        sections: list of `(heading, rows, paragraph)`: `rows` is a list of
            dicts as for `format_table`; an empty `paragraph` is left out.
        command: str. The shell command that regenerates the results.
        wall_seconds: float. How long the run took, in seconds.
        wall_note: str. Said after the wall time (e.g. what it covers).
        notes: str. Markdown appended under a "Notes" heading, if not empty.
        images: sequence of `(alt text, image path)`. Image paths are file
            paths (absolute, or relative to the current directory); the
            report links them relative to its own folder.

    Returns:
        `path` as a `pathlib.Path`.

    Example:
    ```python
    write_results_markdown(
        "runs/demo/RESULTS.md",
        title="Emoji subgroups, twitter -> google",
        sections=[("Accuracy", [{"model": "SimMIM", "google accuracy": 0.62}], "")],
        command="python -m simmim_tf.cli demo",
        wall_seconds=754.0,
        images=[("Training curves", "runs/demo/training_curves.png")],
    )
    ```
    """
    if not (math.isfinite(wall_seconds) and wall_seconds >= 0):
        raise ValueError(f"`wall_seconds` must be >= 0; got {wall_seconds!r}.")
    path = pathlib.Path(path)
    folder = path.absolute().parent
    blocks = [
        f"# {title}",
        f"Regenerate with: {_inline_code(command)}",
        f"Wall time: {wall_seconds / 60:.1f} min"
        + (f" {wall_note}" if wall_note else ""),
    ]
    for heading, rows, paragraph in sections:
        blocks.append(f"## {heading}")
        blocks.append(format_table(rows) if rows else "_No results._")
        if paragraph.strip():
            blocks.append(paragraph.strip())
    if images:
        blocks.append("## Figures")
        blocks += [_image_link(alt, image, folder) for alt, image in images]
    if notes.strip():
        blocks += ["## Notes", notes.strip()]
    return atomic_write_text(path, "\n\n".join(blocks) + "\n")
