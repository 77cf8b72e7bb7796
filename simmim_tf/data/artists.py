"""The artists of `emoji_text`: which npm package holds each one's artwork,
under which licence, and how to find an emoji's drawing in it.

Four layouts occur:

* `datasource_png`: emoji-datasource's 64 px PNGs, `package/img/{name}/64/`,
  listed by `package/emoji.json` (twitter, google, apple, facebook).
* `hexcode_svg`: one SVG per emoji named by its hexcode (OpenMoji).
* `slug_svg`: one SVG per emoji named by its slugged CLDR name, skin-toned
  emoji with a `-default` suffix (Fluent).
* `iconify_json`: an Iconify icon set, `package/icons.json`, keyed by slugged
  names (EmojiOne 2.3, Noto v1).

Named layouts are matched by slug: the CLDR label first, then the Unicode
name and the iamcal / JoyPixels shortcodes (older sets name emoji that way),
each name given to one emoji only.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import re
import unicodedata
from collections.abc import Container, Iterable
from typing import NamedTuple

from simmim_tf.data.tarballs import npm_tarball_name, read_tar_members

DATASOURCE_VERSION = "16.0.0"
LAYOUTS = ("datasource_png", "hexcode_svg", "slug_svg", "iconify_json")
ICONIFY_ICONS = "package/icons.json"


@dataclasses.dataclass(frozen=True)
class Artist:
    """One artist's emoji artwork, as an npm package.

    Args:
        name: str. The split name in `emoji_text`.
        package: str. The npm package.
        version: str. Its pinned version.
        licence: str. SPDX identifier of the artwork's licence.
        attribution: str. Who drew it, as the licence asks to credit.
        layout: str. One of `LAYOUTS`.
        folder: str. Member folder of the SVG files (`*_svg` layouts).
        redistributable: bool. False for artwork never fetched by default.
        earlier_art_of: str or None. The artist whose earlier design this is:
            never train on it for a model tested on that artist.
    """

    name: str
    package: str
    version: str
    licence: str
    attribution: str
    layout: str
    folder: str = ""
    redistributable: bool = True
    earlier_art_of: str | None = None

    @property
    def spec(self) -> str:
        """What `npm pack` takes: `package@version`."""
        return f"{self.package}@{self.version}"

    @property
    def tarball_name(self) -> str:
        """The file `npm pack` writes for `spec`."""
        return npm_tarball_name(self.package, self.version)


def _datasource(name: str, licence: str, attribution: str, **kwargs) -> Artist:
    return Artist(
        name,
        f"emoji-datasource-{name}",
        DATASOURCE_VERSION,
        licence,
        attribution,
        "datasource_png",
        folder=f"package/img/{name}/64/",
        **kwargs,
    )


ARTISTS: dict[str, Artist] = {
    a.name: a
    for a in (
        _datasource("twitter", "CC-BY-4.0", "Twemoji by Twitter, Inc and contributors"),
        _datasource("google", "Apache-2.0", "Noto Emoji by Google"),
        _datasource("apple", "proprietary", "Apple", redistributable=False),
        _datasource("facebook", "proprietary", "Facebook", redistributable=False),
        Artist(
            "openmoji",
            "openmoji",
            "17.0.0",
            "CC-BY-SA-4.0",
            "OpenMoji, the open-source emoji and icon project",
            "hexcode_svg",
            folder="package/color/svg/",
        ),
        Artist(
            "fluent",
            "fluentui-emoji",
            "1.3.0",
            "MIT",
            "Fluent Emoji by Microsoft",
            "slug_svg",
            folder="package/icons/modern/",
        ),
        Artist(
            "emojione",
            "@iconify-json/emojione",
            "1.2.3",
            "CC-BY-4.0",
            "Emoji One 2.3 by Emoji One",
            "iconify_json",
        ),
        Artist(
            "noto_v1",
            "@iconify-json/noto-v1",
            "1.2.5",
            "Apache-2.0",
            "Noto Emoji v1 by Google",
            "iconify_json",
            earlier_art_of="google",
        ),
    )
}
# Every artist whose artwork may be fetched and shared.
OPEN_ARTISTS = tuple(name for name, a in ARTISTS.items() if a.redistributable)


def get_artist(name: str) -> Artist:
    """The registered artist called `name`.

    Raises:
        ValueError: no such artist; the message lists the known ones.
    """
    if name not in ARTISTS:
        raise ValueError(f"Unknown emoji artist {name!r}: use one of {sorted(ARTISTS)}.")
    return ARTISTS[name]


class Artwork(NamedTuple):
    """One emoji's drawing: where it was found, its bytes, and whether it is SVG."""

    member: str
    data: bytes
    is_svg: bool


def normalize_hexcode(hexcode: str) -> str:
    """Upper-cases `hexcode` and drops the FE0F variation selectors.

    Args:
        hexcode: str. Code points joined by "-", e.g. "0023-fe0f-20e3".

    Example:

    ```python
    assert normalize_hexcode("0023-fe0f-20e3") == "0023-20E3"
    ```
    """
    return "-".join(p for p in hexcode.upper().split("-") if p != "FE0F")


def slug(name: str) -> str:
    """`name` as icon sets spell it: ASCII, lower case, words joined by "-".

    Example:

    ```python
    assert slug("flag: Åland Islands") == "flag-aland-islands"
    assert slug("man’s shoe") == "mans-shoe"
    ```
    """
    ascii_name = unicodedata.normalize("NFKD", name)
    ascii_name = "".join(c for c in ascii_name if not unicodedata.combining(c))
    ascii_name = ascii_name.lower().replace("’", "").replace("'", "")
    return re.sub(r"[^a-z0-9]+", "-", ascii_name).strip("-")


def artwork_names(
    label: str, unicode_name: str | None = None, shortcodes: Iterable[str] = ()
) -> list[str]:
    """The slugs an icon set may file an emoji under, most specific first.

    Args:
        label: str. The CLDR label.
        unicode_name: str or None. The Unicode character name.
        shortcodes: iterable of str. Shortcodes (iamcal, JoyPixels).

    Example:

    ```python
    names = artwork_names("flag: Kazakhstan", shortcodes=["flag-kz"])
    assert names[:3] == ["flag-kazakhstan", "flag-for-flag-kazakhstan",
                         "flag-for-kazakhstan"]
    ```
    """
    names = [slug(label)]
    if label.startswith("flag: "):
        names += ["flag-for-" + slug(label), "flag-for-" + slug(label[len("flag: ") :])]
    if unicode_name:
        names.append(slug(unicode_name))
    names += [slug(s) for s in shortcodes]
    return list(dict.fromkeys(n for n in names if n))


def match_names(
    emoji: list[dict], available: Container[str], suffixes: tuple[str, ...] = ("",)
) -> dict[str, str]:
    """Gives each emoji the first of its `names` that the icon set has.

    Names are handed out rank by rank: every emoji's first name, then every
    unmatched emoji's second name, and so on. A name wanted by several emoji
    at the same rank, or already given, goes to none of them at that rank, so
    a shortcode shared by two emoji never gives both the same drawing.

    Args:
        emoji: list of dicts with `key` and `names` (see `artwork_names`).
        available: container of str. The names the icon set has.
        suffixes: tuple of str. Also try each name with these appended
            (Fluent files skin-toned emoji as `{name}-default`).

    Returns:
        key -> the matched name, suffix included.
    """
    matched: dict[str, str] = {}
    given: set[str] = set()
    depth = max((len(e["names"]) for e in emoji), default=0)
    for rank in range(depth):
        wanted = collections.defaultdict(list)
        for e in emoji:
            if e["key"] in matched or rank >= len(e["names"]):
                continue
            for suffix in suffixes:
                name = e["names"][rank] + suffix
                if name in available and name not in given:
                    wanted[name].append(e["key"])
                    break
        for name, keys in wanted.items():
            if len(keys) == 1:
                matched[keys[0]] = name
                given.add(name)
    return matched


def datasource_image_members(
    emoji: list[dict], vendor: str, members: Container[str]
) -> dict[str, str]:
    """Maps the normalized hexcode of each emoji `vendor` draws to its PNG member.

    An emoji (or skin-tone variant) counts as drawn when its PNG is among
    `members` and `has_img_{vendor}` is not false in `package/emoji.json`.

    Args:
        emoji: list of dicts. The entries of the tarball's `package/emoji.json`.
        vendor: str. The emoji-datasource vendor, as in the tarball's name.
        members: container of str. Member names of the tarball.

    Example:

    ```python
    entry = {"unified": "1F600", "image": "1f600.png", "has_img_google": True}
    members = {"package/img/google/64/1f600.png"}
    images = datasource_image_members([entry], "google", members)
    assert images == {"1F600": "package/img/google/64/1f600.png"}
    ```
    """
    prefix = get_artist(vendor).folder
    images = {}
    for entry in emoji:
        for e in [entry, *(entry.get("skin_variations") or {}).values()]:
            member = prefix + e["image"]
            if e.get(f"has_img_{vendor}", True) and member in members:
                images[normalize_hexcode(e["unified"])] = member
    return images


def iconify_icon(icon_set: dict, name: str) -> dict:
    """Icon `name` of a parsed Iconify `icons.json`, following aliases to it."""
    aliases = icon_set.get("aliases", {})
    while name not in icon_set["icons"]:
        name = aliases[name]["parent"]
    return icon_set["icons"][name]


def iconify_svg(icon_set: dict, name: str) -> str:
    """The SVG document of icon `name` of an Iconify icon set (aliases resolved).

    Args:
        icon_set: dict. The parsed `icons.json`.
        name: str. An icon or alias name.
    """
    icon = iconify_icon(icon_set, name)

    def dimension(key: str, default: int) -> int:
        return icon.get(key, icon_set.get(key, default))

    box = " ".join(
        str(dimension(k, d))
        for k, d in (("left", 0), ("top", 0), ("width", 16), ("height", 16))
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" '
        f'xmlns:xlink="http://www.w3.org/1999/xlink" viewBox="{box}">'
        f"{icon['body']}</svg>"
    )


def iconify_names(icon_set: dict) -> set[str]:
    """The names an Iconify set answers to: its icons, and aliases that only rename.

    Aliases that also flip or rotate their parent draw something else.
    """
    renames = {
        name
        for name, alias in icon_set.get("aliases", {}).items()
        if set(alias) == {"parent"}
    }
    return set(icon_set["icons"]) | renames


def read_artwork(artist: Artist, tarball, emoji: list[dict]) -> dict[str, Artwork]:
    """Reads an artist's tarball once; maps each drawn emoji's key to its artwork.

    Args:
        artist: Artist.
        tarball: path. The artist's npm tarball.
        emoji: list of dicts with `key` (normalized hexcode) and `names`
            (`artwork_names`): the emoji to look for.

    Raises:
        ValueError: the tarball does not have the artist's layout; the message
            names the file it lacks.
    """
    if artist.layout == "datasource_png":
        files = read_tar_members(
            tarball,
            lambda n: n == "package/emoji.json" or n.startswith(artist.folder),
        )
        _require(files, "package/emoji.json", tarball, "an emoji-datasource")
        index = json.loads(files["package/emoji.json"])
        members = datasource_image_members(index, artist.name, files)
        return {k: Artwork(m, files[m], False) for k, m in members.items()}
    if artist.layout == "iconify_json":
        files = read_tar_members(tarball, lambda n: n == ICONIFY_ICONS)
        _require(files, ICONIFY_ICONS, tarball, "an Iconify icon set")
        icon_set = json.loads(files[ICONIFY_ICONS])
        matched = match_names(emoji, iconify_names(icon_set))
        return {
            key: Artwork(
                f"{ICONIFY_ICONS}#{name}", iconify_svg(icon_set, name).encode(), True
            )
            for key, name in matched.items()
        }
    files = read_tar_members(
        tarball, lambda n: n.startswith(artist.folder) and n.endswith(".svg")
    )
    if not files:
        raise ValueError(
            f"{tarball} has no SVG under {artist.folder}: not {artist.spec}?"
        )
    stems = {m[len(artist.folder) : -len(".svg")]: m for m in files}
    if artist.layout == "hexcode_svg":
        by_key = {normalize_hexcode(stem): m for stem, m in stems.items()}
        wanted = {e["key"] for e in emoji}
        members = {k: m for k, m in by_key.items() if k in wanted}
    else:
        matched = match_names(emoji, stems, suffixes=("", "-default"))
        members = {key: stems[name] for key, name in matched.items()}
    return {k: Artwork(m, files[m], True) for k, m in members.items()}


def _require(files: dict, member: str, tarball, what: str) -> None:
    if member not in files:
        raise ValueError(f"{tarball} has no {member}: not {what} tarball?")
