"""Reading a run's `model.keras`, with errors that say what is wrong with it."""

from __future__ import annotations

import os
import pathlib
import zipfile

import keras


def load_model_file(path: str | os.PathLike) -> keras.Model:
    """`keras.models.load_model(path)`, refusing a missing or damaged file by name.

    Keras reports a truncated archive as "File not found"; here a missing
    file is `FileNotFoundError` and a file that is not a complete `.keras`
    zip archive (cut short by a crash or a copy) is `ValueError`.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {path.parent} a finetune run?")
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except zipfile.BadZipFile as error:
        raise ValueError(
            f"{path} is not a complete .keras archive (truncated or corrupt: {error}); "
            "re-run the job or restore the file."
        ) from None
    if damaged is not None:
        raise ValueError(
            f"{path} is corrupt: its member {damaged!r} fails its CRC check."
        )
    return keras.models.load_model(path)
