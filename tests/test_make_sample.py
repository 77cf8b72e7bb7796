"""tools/make_sample.py: reuses the dataset's code and reproduces the sample."""

import filecmp
import json
import pathlib
import shutil

import pytest

from simmim_tf.data import artists, emoji_text, tarballs
from tests.conftest import load_tool

EMOJIBASE = emoji_text.emojibase_tarball_name()
# Emoji of the `component` group, which the sample's en/data.json leaves out:
# a skin-tone swatch (subgroup skin-tone) and a hair component (hair-style).
COMPONENTS = [
    {"label": "light skin tone", "hexcode": "1F3FB", "group": 2, "subgroup": 32},
    {"label": "red hair", "hexcode": "1F9B0", "group": 2, "subgroup": 33},
]


@pytest.fixture(scope="module")
def tool():
    return load_tool("make_sample")


def test_tool_uses_the_package_definitions(tool):
    for name in ("COMPONENT_GROUP", "EMOJIBASE_VERSION", "is_dataset_emoji"):
        assert getattr(tool, name) is getattr(emoji_text, name), name
    for name in ("DATASOURCE_VERSION", "datasource_image_members", "read_artwork"):
        assert getattr(tool, name) is getattr(artists, name), name
    assert tool.read_tar_members is tarballs.read_tar_members
    assert tool.SAMPLE_VENDORS == emoji_text.DEFAULT_VENDORS


def source_from_sample(tool, folder: pathlib.Path, data_extra: list[dict]):
    """The committed sample's tarballs, with `data_extra` added to en/data.json."""
    folder.mkdir()
    for artist in (*emoji_text.DEFAULT_VENDORS, *tool.SAMPLE_SVG_ARTISTS):
        name = artists.ARTISTS[artist].tarball_name
        shutil.copy(emoji_text.SAMPLE_DIR / name, folder / name)
    files = tarballs.read_tar_members(
        emoji_text.SAMPLE_DIR / EMOJIBASE, lambda name: True
    )
    data = json.loads(files["package/en/data.json"])
    files["package/en/data.json"] = json.dumps(data + data_extra).encode()
    tool.write_tarball(folder / EMOJIBASE, files)
    return folder


def test_sample_of_the_sample_is_the_sample(tool, tmp_path):
    # The sample as the source (plus the component emoji that the full data has)
    # gives back the same files, byte for byte.
    source = source_from_sample(tool, tmp_path / "source", COMPONENTS)
    out, labels = tmp_path / "sample", tmp_path / "emoji_labels.json"
    tool.main(["--source", str(source), "--out", str(out), "--labels", str(labels)])
    names = sorted(p.name for p in emoji_text.SAMPLE_DIR.iterdir())
    assert sorted(filecmp.dircmp(out, emoji_text.SAMPLE_DIR).common) == names
    match, mismatch, errors = filecmp.cmpfiles(
        out,
        emoji_text.SAMPLE_DIR,
        [str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()],
        shallow=False,
    )
    assert not mismatch and not errors and match
    # Labels made from it: the committed groups; classes of the sample's emoji.
    full = json.loads(emoji_text.LABELS_PATH.read_text(encoding="utf-8"))
    meta = json.loads(labels.read_text(encoding="utf-8"))
    for key in ("groups", "subgroups", "subgroup_groups"):
        assert meta[key] == full[key], key
    assert {h for h, _ in meta["classes"]} < {h for h, _ in full["classes"]}


def test_groups_of_subgroups_need_an_emoji_in_each(tool, tmp_path):
    source = source_from_sample(tool, tmp_path / "source", COMPONENTS[:1])
    with pytest.raises(ValueError, match=r"no emoji in subgroups \[33\]"):
        tool.main(
            ["--source", str(source), "--out", str(tmp_path / "out")]
            + ["--labels", str(tmp_path / "labels.json")]
        )
    assert not (tmp_path / "labels.json").exists()
