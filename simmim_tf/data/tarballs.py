"""npm tarballs: the names `npm pack` gives them, and reading members in one pass."""

from __future__ import annotations

import os
import tarfile
from collections.abc import Callable


def npm_file_stem(package: str) -> str:
    """`package` as `npm pack` spells it in file names: no `@`, `/` as `-`."""
    return package.lstrip("@").replace("/", "-")


def npm_tarball_name(package: str, version: str) -> str:
    """The file `npm pack package@version` writes.

    Example:

    ```python
    assert npm_tarball_name("@iconify-json/emojione", "1.2.3") == (
        "iconify-json-emojione-1.2.3.tgz"
    )
    ```
    """
    return f"{npm_file_stem(package)}-{version}.tgz"


def read_tar_members(
    tarball: os.PathLike | str, keep: Callable[[str], bool]
) -> dict[str, bytes]:
    """Reads the regular members of `tarball` whose names pass `keep`, in one pass.

    Args:
        tarball: path. A tar file, compressed or not (gzip, bz2, xz).
        keep: callable. Takes a member name, returns whether to read it.

    Returns:
        Member name -> its bytes, for the regular files that `keep` accepts.

    Raises:
        ValueError: the file cannot be read as a tarball; the message names it.

    Example:

    ```python
    files = read_tar_members(
        SAMPLE_DIR / "emojibase-data-17.0.0.tgz",
        lambda n: n == "package/en/data.json",
    )
    data = json.loads(files["package/en/data.json"])
    ```
    """
    try:
        with tarfile.open(tarball, "r:*") as tar:
            return {
                m.name: tar.extractfile(m).read()
                for m in tar
                if m.isfile() and keep(m.name)
            }
    except (tarfile.TarError, OSError, EOFError) as error:
        raise ValueError(f"Cannot read tarball {tarball}: {error}") from error
