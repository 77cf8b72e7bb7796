"""Atomic writes: readers see the old file (or folder) or the new one, never half.

Everything goes to a hidden temporary sibling first and is moved into place
with `os.replace` only once complete; on any error the temporary is removed
and the destination is left as it was.

The result gets the permissions a plain `open()` or `os.mkdir` would give it under
the current umask (`0o666 & ~umask` for files, `0o777 & ~umask` for folders), or
keeps the mode of the file or folder it replaces.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import tempfile
from collections.abc import Iterator


def current_umask() -> int:
    """Returns the process's umask without changing it (where the OS allows).

    Linux reports it in `/proc/self/status`; elsewhere it is read by setting it
    and restoring it at once (`os.umask` has no read-only form).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """Yield a temporary file path that replaces `path` when the block succeeds.

    The file keeps the mode of the `path` it replaces; a new one gets
    `0o666 & ~umask`, like a file made with `open()`.

    Args:
        path: the destination file. Missing parent folders are created.
        suffix: str. Extension the temporary needs (e.g. `.weights.h5`, for
            writers that dispatch on it).

    Example:
    ```python
    with atomic_path("runs/model.keras", suffix=".keras") as temp:
        model.save(temp)
    ```
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o666 & ~current_umask()
    descriptor, temp_name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{suffix}"
    )
    os.close(descriptor)
    try:
        yield temp_name
        with open(temp_name, "rb+") as stream:
            os.fsync(stream.fileno())
        os.chmod(temp_name, mode)
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> pathlib.Path:
    """Write `data` to `path` atomically; returns `path` as a `pathlib.Path`."""
    with atomic_path(path) as temp_name, open(temp_name, "wb") as stream:
        stream.write(data)
    return pathlib.Path(path)


def atomic_write_text(
    path: str | os.PathLike, text: str, encoding: str = "utf-8"
) -> pathlib.Path:
    """Write `text` to `path` atomically; returns `path` as a `pathlib.Path`."""
    return atomic_write_bytes(path, text.encode(encoding))


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary folder that replaces the folder `path` on success.

    The folder keeps the mode of the `path` it replaces; a new one gets
    `0o777 & ~umask`, like a folder made with `os.mkdir` (not the 0o700 of
    `tempfile.mkdtemp`). The modes of what is written inside are left alone.

    Args:
        path: the destination folder. Missing parent folders are created.

    Example:
    ```python
    with atomic_directory("runs/pretrain/backbone") as temp:
        backbone.save_to_preset(temp)
    ```
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp_dir = tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        yield temp_dir
        if path.is_dir():
            mode = path.stat().st_mode & 0o7777
        else:
            mode = 0o777 & ~current_umask()
        os.chmod(temp_dir, mode)
        if path.exists():
            # Directories cannot be replaced in one step: move the old one aside.
            old = tempfile.mkdtemp(
                dir=path.parent, prefix=f".{path.name}.", suffix=".old"
            )
            os.replace(path, os.path.join(old, "previous"))
            os.replace(temp_dir, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temp_dir, path)
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
