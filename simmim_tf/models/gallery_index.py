"""`GalleryIndex`: a gallery encoded once, searched many times, saved and loaded."""

from __future__ import annotations

import dataclasses
import io
import os
import pathlib
import zipfile

import numpy as np

from simmim_tf.atomic import atomic_write_bytes
from simmim_tf.models.inputs import MODALITIES

# Stored in the .npz beside the arrays; a file of another layout is refused.
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class GalleryIndex:
    """What `SimMIMRetriever.search` needs of a gallery, for either modality.

    Attributes:
        modality: `"image"` or `"text"`: what the gallery holds; queries are
            of the other modality.
        embeddings: float32 `[N, d]`. The L2-normalised unimodal embeddings
            (the dual encoder's side of the search).
        states: float32 `[N, nodes, d]`. The tower states the graph re-ranks
            with: `image_cell_states`, or `text_token_states`.
        padding_mask: bool `[N, nodes]`. Real tokens (all true for images).
        ids: str `[N]`. Stable item ids (e.g. hexcodes).
        names: str `[N]`. What a person reads (e.g. the emoji's name).

    Example:
    ```python
    index = retriever.index(gallery_batches, ids=hexcodes, names=labels)
    index.save("runs/ret/index_google.npz")
    index = GalleryIndex.load("runs/ret/index_google.npz")
    ```
    """

    modality: str
    embeddings: np.ndarray
    states: np.ndarray
    padding_mask: np.ndarray
    ids: np.ndarray
    names: np.ndarray

    def __post_init__(self):
        if self.modality not in MODALITIES:
            raise ValueError(f"Modality {self.modality!r} must be one of {MODALITIES}.")
        size = len(self.embeddings)
        for field in ("states", "padding_mask", "ids", "names"):
            if len(getattr(self, field)) != size:
                raise ValueError(
                    f"GalleryIndex: {field} has {len(getattr(self, field))} items, "
                    f"embeddings {size}."
                )
        if self.states.shape[:2] != self.padding_mask.shape:
            raise ValueError(
                f"GalleryIndex: states {self.states.shape} and padding mask "
                f"{self.padding_mask.shape} disagree."
            )

    def __len__(self) -> int:
        return len(self.embeddings)

    def save(self, path: str | os.PathLike) -> pathlib.Path:
        """Write one `.npz` file, atomically."""
        buffer = io.BytesIO()
        np.savez(
            buffer,
            format_version=FORMAT_VERSION,
            modality=self.modality,
            embeddings=self.embeddings,
            states=self.states,
            padding_mask=self.padding_mask,
            ids=self.ids.astype(str),
            names=self.names.astype(str),
        )
        return atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike) -> GalleryIndex:
        """Read a file `save` wrote; a missing or foreign file is a clear error."""
        path = pathlib.Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"No gallery index at {path}.")
        if not zipfile.is_zipfile(path):
            raise ValueError(f"{path} is not a gallery index: not an .npz file.")
        try:
            with np.load(path, allow_pickle=False) as stored:
                version = int(stored["format_version"])
                if version != FORMAT_VERSION:
                    raise ValueError(
                        f"{path} is a gallery index of format {version}; this "
                        f"simmim_tf reads format {FORMAT_VERSION}: index it again."
                    )
                return cls(
                    modality=str(stored["modality"]),
                    embeddings=stored["embeddings"],
                    states=stored["states"],
                    padding_mask=stored["padding_mask"],
                    ids=stored["ids"],
                    names=stored["names"],
                )
        except (KeyError, OSError, EOFError) as error:
            raise ValueError(f"{path} is not a gallery index: {error}") from None
