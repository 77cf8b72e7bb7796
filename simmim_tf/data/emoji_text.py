"""`emoji_text`: emoji artwork paired with CLDR names and keywords, as a TFDS builder.

Each example is one emoji drawn by one artist: a 64x64 RGB image (the artist's
PNG composited on white, or its SVG rasterised, cropped to the drawing and
composited on white), the English CLDR label and tags as text, and the emoji's
class, group and subgroup. There is one split per artist, so that a model can
be trained on some artists' artwork and tested on another's.

Sources (npm tarballs, read directly from the manual dir, never extracted):

* each artist's package (`simmim_tf.data.artists.ARTISTS`: emoji-datasource
  PNGs for twitter and google; OpenMoji, Fluent, EmojiOne 2.3 and Noto v1 as
  SVG);
* `emojibase-data-17.0.0.tgz`: `package/en/data.json` (labels, tags, groups),
  `package/en/messages.json` (group and subgroup keys), and the Unicode names
  and shortcodes that older icon sets file their emoji under.

Emoji are matched by hexcode (upper-cased, without the FE0F variation
selectors) or, for icon sets named by slug, by name (`artists.match_names`).
Entries without a group (regional indicators) and the `component` group
(skin-tone swatches, hair components) are skipped; emoji an artist does not
draw (e.g. emoji newer than its artwork) are skipped for it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import pathlib
import re
from typing import ClassVar

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from etils import epath

from simmim_tf.data.artists import (
    ARTISTS,
    Artwork,
    artwork_names,
    get_artist,
    normalize_hexcode,
    read_artwork,
)
from simmim_tf.data.rasterize import rasterize_svg
from simmim_tf.data.tarballs import npm_tarball_name, read_tar_members
from simmim_tf.hashing import sha256_file
from simmim_tf.image_decoding import decode_on_white

EMOJIBASE_VERSION = "17.0.0"
DEFAULT_VENDORS = ("twitter", "google")
IMAGE_SIZE = 64
COMPONENT_GROUP = "component"
LABELS_PATH = pathlib.Path(__file__).with_name("emoji_labels.json")
SAMPLE_DIR = pathlib.Path(__file__).with_name("sample")
FETCH_COMMAND = "simmim-tf data fetch --manual-dir DIR"
# emojibase files with the names older icon sets file emoji under.
UNICODE_NAMES = "package/meta/unicode-names.json"
SHORTCODES = ("package/en/shortcodes/iamcal.json", "package/en/shortcodes/joypixels.json")

_VENDOR_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def emojibase_tarball_name() -> str:
    """File name of the emojibase-data tarball (as `npm pack` names it)."""
    return npm_tarball_name("emojibase-data", EMOJIBASE_VERSION)


def expected_tarballs(vendors: tuple[str, ...] = DEFAULT_VENDORS) -> list[str]:
    """File names the manual dir must hold for the artists `vendors`."""
    return [get_artist(v).tarball_name for v in vendors] + [emojibase_tarball_name()]


def is_dataset_emoji(entry: dict, component_group: int) -> bool:
    """Whether an emojibase `en/data.json` entry is an emoji of the dataset.

    Entries without a group or subgroup (regional indicators) and those of the
    `component` group (skin-tone swatches, hair components) are not.

    Args:
        entry: dict. One entry of emojibase's `en/data.json`.
        component_group: int. The group number of `COMPONENT_GROUP`.
    """
    return "group" in entry and "subgroup" in entry and entry["group"] != component_group


def format_text(label: str, tags: list[str] | tuple[str, ...]) -> str:
    """Formats an emoji's text as `"{label}: {tag1}, {tag2}, ..."`.

    Tags are de-duplicated (first occurrence kept) and tags equal to the label are
    skipped; without tags the text is just the label.

    Args:
        label: str. The CLDR label, e.g. "grinning face".
        tags: list of str. The CLDR tags (keywords).

    Example:

    ```python
    assert format_text("cat", ["cat", "pet", "pet"]) == "cat: pet"
    ```
    """
    kept = [t for t in dict.fromkeys(tags) if t != label]
    return f"{label}: {', '.join(kept)}" if kept else label


def composite_on_white(png: bytes, size: int = IMAGE_SIZE) -> np.ndarray:
    """Decodes an image, composites it on white and returns `[size, size, 3]` uint8.

    The same decoder as `SimMIMPreprocessor` (`simmim_tf.image_decoding`), so
    the data set and a served model see the same pixels; other sizes are
    resized (bilinear, antialiased) after compositing.

    Args:
        png: bytes. The encoded image (PNG in any mode, or another format
            TensorFlow decodes).
        size: int. Output height and width.

    Example:

    ```python
    buffer = io.BytesIO()
    Image.new("RGBA", (72, 72), (0, 0, 0, 0)).save(buffer, "PNG")  # transparent
    image = composite_on_white(buffer.getvalue())
    assert image.shape == (64, 64, 3) and image.min() == 255
    ```
    """
    pixels = decode_on_white(tf.constant(png))
    if pixels.shape[:2] != (size, size):
        pixels = tf.image.resize(pixels, (size, size), antialias=True)
    return np.round(np.clip(pixels.numpy(), 0.0, 1.0) * 255.0).astype(np.uint8)


@functools.cache
def load_label_metadata() -> dict:
    """Reads `emoji_labels.json`: group keys, subgroup keys and the emoji classes.

    `subgroups[i]` is the key of emojibase subgroup number `i` and
    `subgroup_groups[i]` the number of its group; `classes` lists
    `[normalized hexcode, unique label]` per emoji (skin-tone variants included)
    in emojibase order. Generated by `tools/make_sample.py` from the full data.
    """
    return json.loads(LABELS_PATH.read_text(encoding="utf-8"))


def missing_tarballs_message(manual_dir: os.PathLike | str, names: list[str]) -> str:
    """The error message for tarballs missing from `manual_dir`."""
    files = "\n".join(f"  {n}" for n in names)
    where = f"The emoji_text manual dir {str(manual_dir)!r}"
    if os.path.isdir(manual_dir):
        where += " is missing these npm tarballs:"
    else:
        where += " does not exist. It must hold these npm tarballs:"
    return (
        f"{where}\n{files}\n"
        f"Get them with `{FETCH_COMMAND}` (it runs `npm pack`), or put files "
        "with exactly these names in that directory by hand."
    )


def check_manual_dir(
    manual_dir: os.PathLike | str | None, vendors: tuple[str, ...]
) -> pathlib.Path:
    """Returns `manual_dir` as a path if it holds every tarball `vendors` needs.

    Args:
        manual_dir: path or None. The directory with the npm tarballs.
        vendors: tuple of str. The vendors whose tarballs are required.

    Raises:
        FileNotFoundError: the directory or some tarballs are missing; the message
            names the expected files, the directory and the fetch command.
    """
    names = expected_tarballs(vendors)
    if manual_dir is None:
        raise FileNotFoundError(missing_tarballs_message("(not set)", names))
    path = pathlib.Path(manual_dir).expanduser()
    missing = [n for n in names if not (path / n).is_file()]
    if missing:
        raise FileNotFoundError(missing_tarballs_message(path, missing))
    return path


# sha256 of each tarball already hashed in this process, by (path, size, mtime, inode).
_FILE_DIGESTS: dict[tuple[str, int, int, int], str] = {}


def _file_digest(path: pathlib.Path) -> str:
    """sha256 of the file at `path`, read in chunks; cached while it is unchanged."""
    path = path.resolve()
    info = path.stat()
    key = (str(path), info.st_size, info.st_mtime_ns, info.st_ino)
    if key not in _FILE_DIGESTS:
        _FILE_DIGESTS[key] = sha256_file(path)
    return _FILE_DIGESTS[key]


def sources_digest(manual_dir: os.PathLike | str, vendors: tuple[str, ...]) -> str:
    """A short hash of the tarballs that `vendors` need, names and contents.

    The tarballs are hashed in sorted name order with sha256, each read once per
    process while its size and modification time stay the same.
    `emoji_text_builder` prepares the dataset under `sources-{digest}/` in the
    data dir, so other tarballs are never served from an old cache.

    Args:
        manual_dir: path. The directory with the npm tarballs.
        vendors: tuple of str. The vendors whose tarballs to hash (emojibase-data
            is always included).

    Returns:
        The first 12 hex digits of the hash.

    Raises:
        FileNotFoundError: as `check_manual_dir`, if a tarball is missing.

    Example:

    ```python
    digest = sources_digest(SAMPLE_DIR, ("twitter", "google"))
    assert len(digest) == 12
    ```
    """
    manual_dir = check_manual_dir(manual_dir, vendors)
    combined = hashlib.sha256()
    for name in sorted(expected_tarballs(vendors)):
        combined.update(f"{name}\0{_file_digest(manual_dir / name)}\n".encode())
    return combined.hexdigest()[:12]


@dataclasses.dataclass(eq=False)
class EmojiTextConfig(tfds.core.BuilderConfig):
    """Configuration of the `emoji_text` dataset.

    Args:
        name: str. Config name (also the cache sub-directory).
        vendors: tuple of str. One split per artist of
            `simmim_tf.data.artists.ARTISTS`, read from its npm tarball in the
            manual dir.
        include_skin_tones: bool. Add the skin-tone variants as extra examples.

    Example:

    ```python
    config = EmojiTextConfig(name="mine", vendors=("twitter", "openmoji"))
    builder = EmojiText(config=config, data_dir="/tmp/tfds")
    ```
    """

    vendors: tuple[str, ...] = DEFAULT_VENDORS
    include_skin_tones: bool = False

    def __post_init__(self):
        if isinstance(self.vendors, str):
            raise TypeError(
                f"`vendors` must be a tuple of vendor names, not the string "
                f"{self.vendors!r}."
            )
        self.vendors = tuple(self.vendors)
        if not self.vendors:
            raise ValueError("`vendors` must name at least one vendor, got ().")
        for vendor in self.vendors:
            if not isinstance(vendor, str) or not _VENDOR_RE.match(vendor):
                raise ValueError(
                    f"Vendor {vendor!r} is not a valid split name: use lower-case "
                    "letters, digits and underscores, starting with a letter."
                )
            get_artist(vendor)
        if len(set(self.vendors)) != len(self.vendors):
            raise ValueError(f"`vendors` has duplicates: {self.vendors!r}.")


class EmojiText(tfds.core.GeneratorBasedBuilder):
    """Emoji images (one split per artist) with their CLDR label and tags.

    Features: `image` (64, 64, 3) uint8 composited on white; `text`
    "{label}: {tag1}, {tag2}, ..."; `label` (one class per emoji, skin-tone
    variants included), `group` (10 classes) and `subgroup` (100 classes,
    indexed like emojibase); `vendor` (the artist); `hexcode` (emojibase's).
    The dataset's metadata holds each artist's package, licence, attribution
    and coverage (`builder.info.metadata["artists"]`).

    Args:
        config: str or EmojiTextConfig. "base" (default) or "skin_tones", or a
            custom `EmojiTextConfig` with other vendors.
        data_dir: str. Where the prepared dataset is cached.

    Example:

    ```python
    builder = EmojiText(config="base", data_dir="/tmp/tfds")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(SAMPLE_DIR))
    )
    ds = builder.as_dataset(split="twitter")
    ```
    """

    VERSION = tfds.core.Version("1.2.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Initial release.",
        "1.1.0": "Images decoded and composited on white by the preprocessor's "
        "TensorFlow decoder (was Pillow): within one uint8 step.",
        "1.2.0": "SVG artists (OpenMoji, Fluent, EmojiOne 2.3, Noto v1), "
        "rasterised with resvg; artist licences and coverage in the metadata.",
    }
    BUILDER_CONFIGS: ClassVar[list[EmojiTextConfig]] = [
        EmojiTextConfig(name="base", description="Base emoji only."),
        EmojiTextConfig(
            name="skin_tones",
            include_skin_tones=True,
            description="Base emoji plus their skin-tone variants.",
        ),
    ]
    DEFAULT_CONFIG_NAME = "base"
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Put these npm tarballs, as `npm pack` names them, in the manual dir:
  {ARTISTS["twitter"].tarball_name}
  {ARTISTS["google"].tarball_name}
  {emojibase_tarball_name()}
(for a config with other artists, each artist's package as
`simmim_tf.data.artists.ARTISTS` names it, e.g. {ARTISTS["openmoji"].tarball_name}).
`{FETCH_COMMAND}` fetches them with `npm pack`. A small sample with the same
names ships in simmim_tf/data/sample.
"""

    # TFDS derives `code_path` (only used to look for a checksums file) through
    # `importlib_resources`, which tensorflow-datasets 4.9.10 imports without
    # declaring it as a dependency; the class's own file is the right answer.
    code_path: ClassVar[epath.Path] = epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        meta = load_label_metadata()
        return self.dataset_info_from_configs(
            description=__doc__.split("\n\n")[1],
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(
                        shape=(IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8
                    ),
                    "text": tfds.features.Text(),
                    "label": tfds.features.ClassLabel(
                        names=[label for _, label in meta["classes"]]
                    ),
                    "group": tfds.features.ClassLabel(names=meta["groups"]),
                    "subgroup": tfds.features.ClassLabel(names=meta["subgroups"]),
                    "vendor": tfds.features.Text(),
                    "hexcode": tfds.features.Text(),
                }
            ),
            supervised_keys=("image", "label"),
            metadata=tfds.core.MetadataDict(),
            homepage="https://github.com/iamcal/emoji-data",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        vendors = self.builder_config.vendors
        # `dl_manager.manual_dir` raises a generic AssertionError when the folder
        # is missing; read the configured path to name the expected files instead.
        if hasattr(dl_manager, "_manual_dir"):
            manual_dir = dl_manager._manual_dir
        else:
            manual_dir = dl_manager.manual_dir
        manual_dir = check_manual_dir(manual_dir, vendors)
        emoji = read_emojibase(
            manual_dir / emojibase_tarball_name(),
            include_skin_tones=self.builder_config.include_skin_tones,
        )
        splits, artists = {}, {}
        for vendor in vendors:
            artist = get_artist(vendor)
            tarball = manual_dir / artist.tarball_name
            artwork = read_artwork(artist, tarball, emoji)
            drawn = [e for e in emoji if e["key"] in artwork]
            if not drawn:
                raise ValueError(
                    f"Artist {vendor!r} has no drawing of any emoji in {tarball} "
                    f"(layout {artist.layout}): is it {artist.spec}?"
                )
            artists[vendor] = {
                "package": artist.spec,
                "licence": artist.licence,
                "attribution": artist.attribution,
                "drawn": len(drawn),
                "of": len(emoji),
            }
            splits[vendor] = self._generate_examples(vendor, tarball, drawn, artwork)
        self.info.metadata["artists"] = artists
        return splits

    def _generate_examples(self, vendor, tarball, emoji, artwork):
        for e in emoji:
            drawing = artwork[e["key"]]
            try:
                image = artwork_pixels(drawing)
            except Exception as error:  # decoders raise many types
                raise ValueError(
                    f"Cannot decode {drawing.member} in {tarball} (emoji "
                    f"{e['hexcode']}, artist {vendor!r}): {error}"
                ) from error
            example = {
                "image": image,
                "text": e["text"],
                "label": e["label"],
                "group": e["group"],
                "subgroup": e["subgroup"],
                "vendor": vendor,
                "hexcode": e["hexcode"],
            }
            yield e["key"], example


def read_emojibase(tarball: pathlib.Path, include_skin_tones: bool) -> list[dict]:
    """Reads the emojibase tarball once; returns one record per usable emoji.

    A record holds `key` (normalized hexcode), `hexcode`, `text`, the class
    indices `label`, `group` and `subgroup`, and `names` (the slugs icon sets
    may file it under), in emojibase order.
    """
    wanted = ("package/en/data.json", "package/en/messages.json")
    files = read_tar_members(
        tarball, lambda name: name in wanted or name in (UNICODE_NAMES, *SHORTCODES)
    )
    for name in wanted:
        if name not in files:
            raise ValueError(f"{tarball} has no {name}: not an emojibase-data tarball?")
    data = json.loads(files["package/en/data.json"])
    messages = json.loads(files["package/en/messages.json"])
    unicode_names = json.loads(files.get(UNICODE_NAMES, b"{}"))
    shortcodes = [json.loads(files[name]) for name in SHORTCODES if name in files]
    meta = load_label_metadata()
    _check_messages(tarball, messages, meta)
    class_of = {h: i for i, (h, _) in enumerate(meta["classes"])}
    component = meta["groups"].index(COMPONENT_GROUP)
    records = []
    for entry in data:
        if not is_dataset_emoji(entry, component):
            continue
        variants = entry.get("skins", []) if include_skin_tones else []
        for e in [entry, *variants]:
            key = normalize_hexcode(e["hexcode"])
            if key not in class_of:
                raise ValueError(
                    f"Emoji {e['hexcode']} ({e['label']!r}) of {tarball} is not in "
                    f"{LABELS_PATH.name}: is it emojibase-data {EMOJIBASE_VERSION}? "
                    "(After a version bump, regenerate that file with "
                    "tools/make_sample.py.)"
                )
            records.append(
                {
                    "key": key,
                    "hexcode": e["hexcode"],
                    # Skin-tone variants carry no tags: use the base emoji's.
                    "text": format_text(e["label"], entry.get("tags", [])),
                    "label": class_of[key],
                    "group": e.get("group", entry["group"]),
                    "subgroup": e.get("subgroup", entry["subgroup"]),
                    "names": artwork_names(
                        e["label"],
                        unicode_names.get(e["hexcode"]),
                        [
                            c
                            for codes in shortcodes
                            for c in _as_list(codes.get(e["hexcode"]))
                        ],
                    ),
                }
            )
    return records


def _as_list(codes: str | list[str] | None) -> list[str]:
    """emojibase gives one shortcode as a string, several as a list."""
    if codes is None:
        return []
    return [codes] if isinstance(codes, str) else list(codes)


def artwork_pixels(artwork: Artwork, size: int = IMAGE_SIZE) -> np.ndarray:
    """An emoji's drawing as uint8 `[size, size, 3]` on white.

    PNGs go through `composite_on_white`, SVGs through `rasterize_svg` (which
    crops them to the drawing, as the PNG artists' drawings fill their canvas).
    """
    if artwork.is_svg:
        return rasterize_svg(artwork.data, size)
    return composite_on_white(artwork.data, size)


def _check_messages(tarball: pathlib.Path, messages: dict, meta: dict) -> None:
    """Checks that messages.json numbers groups and subgroups like the metadata."""
    orders = {}
    for kind in ("groups", "subgroups"):
        for entry in messages.get(kind, []):
            orders[(kind, entry["key"])] = entry["order"]
    for kind in ("groups", "subgroups"):
        for i, key in enumerate(meta[kind]):
            if orders.get((kind, key)) != i:
                raise ValueError(
                    f"{tarball}: package/en/messages.json gives {kind[:-1]} {key!r} "
                    f"order {orders.get((kind, key))}, {LABELS_PATH.name} expects {i}."
                )


def emoji_text_builder(
    manual_dir: os.PathLike | str | None = None,
    data_dir: os.PathLike | str | None = None,
    config: str | EmojiTextConfig = "base",
) -> EmojiText:
    """Returns the `emoji_text` builder, prepared (built on first use).

    The prepared data is cached by the content of the source tarballs: it goes to
    `{data_dir}/sources-{digest}/emoji_text/{config}/{version}`, where `digest`
    is `sources_digest(manual_dir, vendors)`. The same tarballs reuse the cache
    from any folder; changed or other tarballs are prepared anew.

    Args:
        manual_dir: path or None. Folder with the npm tarballs; None means the
            committed sample (`SAMPLE_DIR`).
        data_dir: path or None. TFDS cache root; None means
            `~/tensorflow_datasets/simmim_tf_sample` for the sample and
            `~/tensorflow_datasets` (or `$TFDS_DATA_DIR`) otherwise, so that the
            sample and the full data never share a cache root.
        config: str or EmojiTextConfig. "base", "skin_tones" or a custom config.

    Raises:
        FileNotFoundError: `manual_dir` or some of the tarballs are missing; the
            message names the expected files and the fetch command.

    Example:

    ```python
    builder = emoji_text_builder()  # the committed sample
    num_subgroups = builder.info.features["subgroup"].num_classes
    ```
    """
    default_root = os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
    if manual_dir is None:
        manual_dir = SAMPLE_DIR
        if data_dir is None:
            data_dir = os.path.join(default_root, "simmim_tf_sample")
    if data_dir is None:
        data_dir = default_root
    data_dir = os.path.expanduser(os.fspath(data_dir))
    manual_dir = os.path.expanduser(os.fspath(manual_dir))
    if isinstance(config, str):
        if config not in EmojiText.builder_configs:
            raise ValueError(
                f"Unknown emoji_text config {config!r}: use one of "
                f"{sorted(EmojiText.builder_configs)} or an `EmojiTextConfig`."
            )
        vendors = EmojiText.builder_configs[config].vendors
    else:
        vendors = config.vendors
    digest = sources_digest(manual_dir, vendors)
    data_dir = os.path.join(data_dir, f"sources-{digest}")
    builder = EmojiText(config=config, data_dir=data_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
    )
    return builder


def load_emoji_text(
    split: str,
    *,
    manual_dir: os.PathLike | str | None = None,
    data_dir: os.PathLike | str | None = None,
    config: str | EmojiTextConfig = "base",
    shuffle_files: bool = False,
) -> tf.data.Dataset:
    """Loads one split of `emoji_text` as a `tf.data.Dataset` of feature dicts.

    Builds the dataset first if needed (see `emoji_text_builder`).

    Args:
        split: str. A vendor name ("twitter", "google") or any TFDS split
            expression such as "twitter[:80%]".
        manual_dir: path or None. Folder with the npm tarballs; None means the
            committed sample.
        data_dir: path or None. TFDS cache (default depends on `manual_dir`).
        config: str or EmojiTextConfig. "base", "skin_tones" or a custom config.
        shuffle_files: bool. Shuffle the order of the record files.

    Example:

    ```python
    ds = load_emoji_text("twitter")  # the committed sample
    for example in ds.take(1):
        print(example["text"].numpy().decode(), example["image"].shape)
    ```
    """
    builder = emoji_text_builder(manual_dir=manual_dir, data_dir=data_dir, config=config)
    return builder.as_dataset(split=split, shuffle_files=shuffle_files)
