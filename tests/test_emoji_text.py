"""Tests of the `emoji_text` TFDS dataset, built from the committed sample."""

import io
import json
import os
import re
import shutil
import tarfile

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from simmim_tf.data import (
    SAMPLE_DIR,
    EmojiText,
    EmojiTextConfig,
    emoji_text_builder,
    fetch_emoji_tarballs,
    load_emoji_text,
)
from simmim_tf.data.fetch import UnlicensedArtworkWarning

VENDORS = ("twitter", "google")
EMOJIBASE = "emojibase-data-17.0.0.tgz"
FETCH_COMMAND = "simmim-tf data fetch --manual-dir DIR"


def datasource(vendor):
    return f"emoji-datasource-{vendor}-16.0.0.tgz"


def read_tar(path):
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def write_tar(path, files):
    with tarfile.open(path, "w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))


def norm(hexcode):
    return "-".join(p for p in hexcode.upper().split("-") if p != "FE0F")


def on_white(png):
    rgba = Image.open(io.BytesIO(png)).convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))


@pytest.fixture(scope="module")
def sample():
    """The sample's raw sources: emojibase data/messages and vendor PNGs by hexcode."""
    emojibase = read_tar(SAMPLE_DIR / EMOJIBASE)
    pngs = {}
    for vendor in VENDORS:
        files = read_tar(SAMPLE_DIR / datasource(vendor))
        pngs[vendor] = {}
        for e in json.loads(files["package/emoji.json"]):
            for v in [e, *(e.get("skin_variations") or {}).values()]:
                member = f"package/img/{vendor}/64/{v['image']}"
                if v[f"has_img_{vendor}"] and member in files:
                    pngs[vendor][norm(v["unified"])] = files[member]
    return {
        "data": json.loads(emojibase["package/en/data.json"]),
        "messages": json.loads(emojibase["package/en/messages.json"]),
        "pngs": pngs,
    }


def expected_count(sample, vendor, skins):
    groups = sorted(sample["messages"]["groups"], key=lambda g: g["order"])
    component = [g["key"] for g in groups].index("component")
    count = 0
    for e in sample["data"]:
        if e.get("group") in (None, component):
            continue
        for v in [e, *(e.get("skins", []) if skins else [])]:
            count += norm(v["hexcode"]) in sample["pngs"][vendor]
    return count


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="module")
def builder(data_dir):
    return emoji_text_builder(data_dir=data_dir)


@pytest.fixture(scope="module")
def examples(builder):
    return {v: list(builder.as_dataset(split=v).as_numpy_iterator()) for v in VENDORS}


def test_splits_are_the_vendors(builder):
    assert sorted(builder.info.splits.keys()) == sorted(VENDORS)


def test_example_counts_match_the_sample_sources(builder, examples, sample):
    for vendor in VENDORS:
        expected = expected_count(sample, vendor, skins=False)
        assert expected > 300
        assert builder.info.splits[vendor].num_examples == expected
        assert len(examples[vendor]) == expected


def test_features(builder):
    spec = builder.as_dataset(split="twitter").element_spec
    assert spec["image"].shape == (64, 64, 3)
    assert spec["image"].dtype == tf.uint8
    for key in ("text", "vendor", "hexcode"):
        assert spec[key].dtype == tf.string
    for key in ("label", "group", "subgroup"):
        assert spec[key].dtype == tf.int64


def test_images_are_composited_on_white(examples, sample):
    for vendor in VENDORS:
        for example in examples[vendor]:
            png = sample["pngs"][vendor][norm(example["hexcode"].decode())]
            alpha = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))[..., 3]
            for y, x in ((0, 0), (0, -1), (-1, 0), (-1, -1)):
                if alpha[y, x] == 0:
                    assert (example["image"][y, x] == 255).all()
    # Pillow as the reference: it composites in integers, TensorFlow in floats.
    for example in examples["google"][:20]:
        png = sample["pngs"]["google"][norm(example["hexcode"].decode())]
        reference = on_white(png).astype(int)
        np.testing.assert_allclose(example["image"], reference, atol=1)


def test_text_starts_with_the_label(builder, examples):
    names = builder.info.features["label"]
    for example in examples["twitter"]:
        text = example["text"].decode()
        label = names.int2str(example["label"])
        assert text == label or text.startswith(label + ": ")
    assert any(
        e["text"].decode().startswith("grinning face: ") for e in examples["twitter"]
    )


def test_group_and_subgroup_classes_match_messages(builder, sample):
    messages = sample["messages"]
    features = builder.info.features
    assert features["group"].num_classes == len(messages["groups"]) == 10
    assert features["group"].names == [
        g["key"] for g in sorted(messages["groups"], key=lambda g: g["order"])
    ]
    # emojibase numbers subgroups by `order`; messages.json 17.0.0 also lists a
    # stale key with a taken order (food-marine, 46), so count orders, not keys.
    orders = {s["order"]: s["key"] for s in messages["subgroups"]}
    assert features["subgroup"].num_classes == len(orders)
    for i, key in enumerate(features["subgroup"].names):
        assert any(s["key"] == key and s["order"] == i for s in messages["subgroups"])


def test_same_hexcode_same_classes_across_vendors(examples):
    def classes(vendor):
        return {
            e["hexcode"]: (e["label"], e["group"], e["subgroup"], e["text"])
            for e in examples[vendor]
        }

    twitter, google = classes("twitter"), classes("google")
    assert twitter == google
    assert {e["vendor"] for e in examples["google"]} == {b"google"}


def test_skin_tones_config_adds_examples(builder, examples, data_dir, sample):
    skins = emoji_text_builder(data_dir=data_dir, config="skin_tones")
    for vendor in VENDORS:
        count = skins.info.splits[vendor].num_examples
        assert count >= builder.info.splits[vendor].num_examples
        assert count == expected_count(sample, vendor, skins=True)
    names = skins.info.features["label"]
    assert names.num_classes == builder.info.features["label"].num_classes
    extra = skins.info.splits["twitter"].num_examples - len(examples["twitter"])
    variants = [
        e
        for e in skins.as_dataset(split="twitter").as_numpy_iterator()
        if "skin tone" in names.int2str(e["label"])
    ]
    assert len(variants) == extra  # 0 if the sample was made without variants
    for e in variants:  # variant label + the base emoji's tags
        assert e["text"].decode().startswith(names.int2str(e["label"]) + ": ")


def test_load_emoji_text_reuses_the_prepared_data(builder, data_dir):
    ds = load_emoji_text("google[:5]", data_dir=data_dir)
    assert isinstance(ds, tf.data.Dataset)
    assert len(list(ds)) == 5


def test_cache_is_keyed_by_the_source_tarballs(tmp_path, monkeypatch):
    config = EmojiTextConfig(name="twitter_only", vendors=("twitter",))
    data_dir = tmp_path / "tfds"
    first, second, same = (tmp_path / n for n in ("first", "second", "same"))
    for folder in (first, second, same):
        folder.mkdir()
        for name in (datasource("twitter"), EMOJIBASE):
            shutil.copy(SAMPLE_DIR / name, folder / name)
    files = read_tar(second / datasource("twitter"))
    del files["package/img/twitter/64/1f600.png"]  # grinning face
    write_tar(second / datasource("twitter"), files)

    built = emoji_text_builder(manual_dir=first, data_dir=data_dir, config=config)
    count = built.info.splits["twitter"].num_examples
    other = emoji_text_builder(manual_dir=second, data_dir=data_dir, config=config)
    assert other.info.splits["twitter"].num_examples == count - 1
    assert other.data_dir != built.data_dir
    assert str(data_dir) in built.data_dir and str(data_dir) in other.data_dir

    info = f"{built.data_dir}/dataset_info.json"
    modified = os.stat(info).st_mtime_ns

    def rebuild(*args, **kwargs):
        raise AssertionError("the prepared data was built again")

    monkeypatch.setattr(EmojiText, "_split_generators", rebuild)
    for folder in (first, same):  # same contents, any folder: the cache is reused
        again = emoji_text_builder(manual_dir=folder, data_dir=data_dir, config=config)
        assert again.data_dir == built.data_dir
        assert again.info.splits["twitter"].num_examples == count
    assert os.stat(info).st_mtime_ns == modified


def test_unknown_config_name_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"'nope'.*'base', 'skin_tones'"):
        emoji_text_builder(data_dir=tmp_path, config="nope")


def test_missing_manual_dir_names_the_tarballs(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        emoji_text_builder(manual_dir=tmp_path / "nope", data_dir=tmp_path)
    message = str(error.value)
    for name in (datasource("twitter"), datasource("google"), EMOJIBASE):
        assert name in message
    assert str(tmp_path / "nope") in message
    assert FETCH_COMMAND in message


def test_missing_tarball_is_named(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    for name in (datasource("google"), EMOJIBASE):
        shutil.copy(SAMPLE_DIR / name, manual / name)
    with pytest.raises(FileNotFoundError, match=re.escape(datasource("twitter"))):
        emoji_text_builder(manual_dir=manual, data_dir=tmp_path / "tfds")


def test_corrupt_png_is_named(tmp_path):
    manual = tmp_path / "manual"
    shutil.copytree(SAMPLE_DIR, manual)
    files = read_tar(manual / datasource("twitter"))
    png = sorted(n for n in files if n.endswith(".png"))[7]
    files[png] = b"not a png at all"
    write_tar(manual / datasource("twitter"), files)
    with pytest.raises(ValueError, match=re.escape(png)) as error:
        emoji_text_builder(manual_dir=manual, data_dir=tmp_path / "tfds")
    assert datasource("twitter") in str(error.value)


def test_artist_without_images_is_reported(tmp_path):
    manual = tmp_path / "manual"
    shutil.copytree(SAMPLE_DIR, manual)
    # Same layout, but its PNGs are under img/twitter/, none under img/apple/.
    shutil.copy(manual / datasource("twitter"), manual / datasource("apple"))
    config = EmojiTextConfig(name="mine", vendors=("twitter", "apple"))
    with pytest.raises(ValueError, match="'apple' has no drawing of any emoji"):
        emoji_text_builder(manual_dir=manual, data_dir=tmp_path / "tfds", config=config)


def test_config_validates_vendors():
    with pytest.raises(ValueError, match="'Bad-Name' is not a valid split name"):
        EmojiTextConfig(name="x", vendors=("Bad-Name",))
    with pytest.raises(ValueError, match="duplicates"):
        EmojiTextConfig(name="x", vendors=("twitter", "twitter"))
    with pytest.raises(ValueError, match=r"Unknown emoji artist 'myvendor'.*'openmoji'"):
        EmojiTextConfig(name="x", vendors=("twitter", "myvendor"))
    assert EmojiText.BUILDER_CONFIGS[0].vendors == VENDORS


def test_fetch_without_npm_names_the_files(tmp_path, monkeypatch):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    manual = tmp_path / "manual"
    with pytest.raises(RuntimeError) as error:
        fetch_emoji_tarballs(manual)
    message = str(error.value)
    assert "npm" in message and str(manual) in message
    for name in (datasource("twitter"), datasource("google"), EMOJIBASE):
        assert name in message


def test_fetch_keeps_present_tarballs(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm: nothing may be fetched
    paths = fetch_emoji_tarballs(SAMPLE_DIR)
    assert [p.name for p in paths] == [
        datasource("twitter"),
        datasource("google"),
        EMOJIBASE,
    ]


def test_fetch_refuses_unlicensed_vendors(tmp_path):
    with pytest.raises(ValueError, match=r"\['apple'\].*not licensed") as error:
        fetch_emoji_tarballs(tmp_path, vendors=("twitter", "apple"))
    assert "--i-have-the-rights" in str(error.value)


def test_fetch_warns_before_fetching_unlicensed_vendors(tmp_path, monkeypatch):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no npm: nothing can be downloaded
    with (
        pytest.warns(UnlicensedArtworkWarning, match=r"\['apple'\].*never redistribute"),
        pytest.raises(RuntimeError, match="`npm` is not on PATH"),
    ):
        fetch_emoji_tarballs(
            tmp_path / "manual", vendors=("apple",), allow_unlicensed_vendors=True
        )
