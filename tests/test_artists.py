"""The SVG artists of `emoji_text`: name matching, Iconify sets, rasterising,
and their splits built from the committed sample."""

import json
import re
import tarfile

import numpy as np
import pytest

from simmim_tf.data import SAMPLE_DIR, EmojiTextConfig, emoji_text_builder
from simmim_tf.data.artists import (
    ARTISTS,
    ICONIFY_ICONS,
    OPEN_ARTISTS,
    artwork_names,
    iconify_names,
    iconify_svg,
    match_names,
    slug,
)
from simmim_tf.data.fetch import fetch_emoji_tarballs
from simmim_tf.data.rasterize import rasterize_svg

SVG_ARTISTS = ("openmoji", "fluent", "emojione", "noto_v1")
RED = (255, 0, 0)
WHITE = (255, 255, 255)


def svg(body: str, box: str = "0 0 10 10") -> str:
    return f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="{box}">{body}</svg>'


def test_slugs_are_how_icon_sets_spell_names():
    assert slug("flag: Åland Islands") == "flag-aland-islands"
    assert slug("man’s shoe") == "mans-shoe"
    assert slug("A button (blood type)") == "a-button-blood-type"
    assert slug("keycap: *") == "keycap"
    names = artwork_names("robot", "ROBOT FACE", ["robot_face", "robot"])
    assert names == ["robot", "robot-face"]
    flag = artwork_names("flag: Kazakhstan", None, ["flag-kz"])
    assert flag == [
        "flag-kazakhstan",
        "flag-for-flag-kazakhstan",
        "flag-for-kazakhstan",
        "flag-kz",
    ]


def test_names_are_given_rank_by_rank_and_never_twice():
    emoji = [
        {"key": "A", "names": ["cat-face", "cat"]},
        {"key": "B", "names": ["cat", "kitty"]},  # its first name is A's second
        {"key": "C", "names": ["keycap", "keycap-1"]},
        {"key": "D", "names": ["keycap", "keycap-2"]},  # tie at rank 0: neither
        {"key": "E", "names": ["waving-hand"]},
        {"key": "F", "names": ["nothing-here"]},
    ]
    available = {
        "cat-face",
        "cat",
        "keycap",
        "keycap-1",
        "keycap-2",
        "waving-hand-default",
    }
    matched = match_names(emoji, available, suffixes=("", "-default"))
    assert matched == {
        "A": "cat-face",
        "B": "cat",
        "C": "keycap-1",
        "D": "keycap-2",
        "E": "waving-hand-default",
    }


def test_iconify_aliases_resolve_and_transforms_are_not_renames():
    icon_set = {
        "width": 64,
        "height": 32,
        "icons": {
            "bear-face": {"body": "<rect/>"},
            "tall": {"body": "<g/>", "height": 48},
        },
        "aliases": {
            "bear": {"parent": "bear-face"},
            "teddy": {"parent": "bear"},
            "bear-left": {"parent": "bear-face", "hFlip": True},
        },
    }
    assert iconify_names(icon_set) == {"bear-face", "tall", "bear", "teddy"}
    document = iconify_svg(icon_set, "teddy")
    assert 'viewBox="0 0 64 32"' in document and document.endswith("<rect/></svg>")
    assert 'viewBox="0 0 64 48"' in iconify_svg(icon_set, "tall")


def test_rasterize_crops_to_the_drawing_and_composites_on_white():
    # A red square in a corner of a wide margin fills the output once cropped.
    corner = rasterize_svg(svg('<rect x="1" y="1" width="3" height="3" fill="red"/>'), 32)
    assert corner.shape == (32, 32, 3) and corner.dtype == np.uint8
    assert (corner[1:-1, 1:-1] == RED).all()
    # A 2:1 bar is centred in a square: white above and below, red across.
    bar = rasterize_svg(svg('<rect x="1" y="6" width="8" height="4" fill="red"/>'), 32)
    assert (bar[16, 1:-1] == RED).all()
    assert (bar[:6] == WHITE).all() and (bar[-6:] == WHITE).all()
    # Half-transparent black on white is mid grey.
    grey = rasterize_svg(svg('<rect width="10" height="10" fill-opacity="0.5"/>'), 8)
    assert np.abs(grey.astype(int) - 128).max() <= 1


def test_rasterize_refuses_empty_and_broken_svg():
    with pytest.raises(ValueError, match="draws nothing"):
        rasterize_svg(svg('<rect width="10" height="10" fill="none"/>'), 16)
    with pytest.raises(ValueError, match="resvg cannot render"):
        rasterize_svg("<svg this is not xml", 16)


def sample_drawings(artist) -> int:
    """How many drawings an artist's sample tarball holds, counted from its files."""
    with tarfile.open(SAMPLE_DIR / artist.tarball_name) as tar:
        names = [m.name for m in tar if m.isfile()]
        if artist.layout == "iconify_json":
            return len(json.loads(tar.extractfile(ICONIFY_ICONS).read())["icons"])
    return sum(n.startswith(artist.folder) and n.endswith(".svg") for n in names)


@pytest.fixture(scope="module")
def open_builder(tmp_path_factory):
    config = EmojiTextConfig(name="open", vendors=("twitter", *SVG_ARTISTS))
    return emoji_text_builder(data_dir=tmp_path_factory.mktemp("tfds"), config=config)


def test_every_svg_drawing_of_the_sample_becomes_an_example(open_builder):
    metadata = open_builder.info.metadata["artists"]
    for name in SVG_ARTISTS:
        artist = ARTISTS[name]
        drawings = sample_drawings(artist)
        assert drawings > 90, name  # about one per subgroup
        assert open_builder.info.splits[name].num_examples == drawings, name
        assert metadata[name]["drawn"] == drawings
        assert metadata[name]["licence"] == artist.licence
        assert metadata[name]["package"] == artist.spec


def test_svg_examples_are_their_artwork_rasterised(open_builder):
    with tarfile.open(SAMPLE_DIR / ARTISTS["openmoji"].tarball_name) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
    twitter = {
        e["hexcode"]: e
        for e in open_builder.as_dataset(split="twitter").as_numpy_iterator()
    }
    for example in open_builder.as_dataset(split="openmoji").take(5).as_numpy_iterator():
        hexcode = example["hexcode"].decode()
        member = f"package/color/svg/{hexcode.upper()}.svg"
        np.testing.assert_array_equal(example["image"], rasterize_svg(files[member], 64))
        # Same emoji, same text and classes as the PNG artist's drawing.
        if hexcode.encode() in twitter:
            for key in ("text", "label", "group", "subgroup"):
                assert example[key] == twitter[hexcode.encode()][key], key


def test_fetch_names_each_artist_package(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm: the error names the files
    with pytest.raises(RuntimeError) as error:
        fetch_emoji_tarballs(tmp_path / "manual", vendors=OPEN_ARTISTS)
    message = str(error.value)
    for name in OPEN_ARTISTS:
        assert ARTISTS[name].tarball_name in message and ARTISTS[name].spec in message
    assert "iconify-json-noto-v1-1.2.5.tgz" in message
    assert not re.search("apple|facebook", message)
