"""Make the small committed sample of the `emoji_text` dataset.

Reads the full npm tarballs (`emoji-datasource-{twitter,google}-16.0.0.tgz`,
the SVG artists' packages and `emojibase-data-17.0.0.tgz`, fetched with
`simmim-tf data fetch --artists twitter google openmoji fluent emojione noto_v1`)
and writes tarballs with the same names and layout but only a subset of the
emoji:

* up to `--per-subgroup` (4) base emoji per subgroup that every sample vendor
  draws, evenly spaced over the subgroup in emojibase order;
* their skin-tone variants too, when the sample then stays within
  `--max-bytes-with-skins` (4 MiB); otherwise base emoji only, and the
  `skin_tones` config has no extra examples on the sample;
* of each SVG artist, one of those base emoji per subgroup (its SVGs are large:
  Fluent's average 34 kB), the middle one of those it draws;
* `en/data.json` filtered to the chosen emoji, `en/messages.json` whole, the
  Unicode names and shortcodes filtered, `emoji.json` filtered, `package.json`
  and the licence files kept (an Iconify set's `icons.json` keeps the chosen
  icons, aliases resolved, and its `info.json` with the licence).

It also writes `simmim_tf/data/emoji_labels.json` (group keys, subgroup keys, the
group of each subgroup and one class per emoji, skin-tone variants included)
from the FULL emojibase data:
`EmojiText._info()` reads it, so that the class names are known without the
manual dir. The output is byte-for-byte reproducible (fixed mtimes and order).

Example:

```
python tools/make_sample.py --source /tmp/npm --out simmim_tf/data/sample
du -sh simmim_tf/data/sample
```
"""

from __future__ import annotations

import argparse
import collections
import gzip
import io
import json
import pathlib
import shutil
import tarfile
import textwrap

# The dataset's own versions, names and parsing: one copy, in the package.
from simmim_tf.atomic import atomic_write_text
from simmim_tf.data.artists import (
    ARTISTS,
    DATASOURCE_VERSION,
    ICONIFY_ICONS,
    datasource_image_members,
    iconify_icon,
    normalize_hexcode,
    read_artwork,
)
from simmim_tf.data.emoji_text import (
    COMPONENT_GROUP,
    DEFAULT_VENDORS,
    EMOJIBASE_VERSION,
    LABELS_PATH,
    SHORTCODES,
    UNICODE_NAMES,
    emojibase_tarball_name,
    is_dataset_emoji,
    read_emojibase,
)
from simmim_tf.data.tarballs import npm_file_stem, read_tar_members

# The sample must hold the default config's vendors: it is the default data.
SAMPLE_VENDORS = DEFAULT_VENDORS
# The open SVG artists: a few drawings each, enough to test their layouts.
SAMPLE_SVG_ARTISTS = ("openmoji", "fluent", "emojione", "noto_v1")
# Files kept whole in an SVG artist's sample tarball.
SVG_ARTIST_FILES = (
    "package/package.json",
    "package/LICENSE",
    "package/LICENSE.txt",
    "package/info.json",
)
MAX_SAMPLE_BYTES = 5 * 1024 * 1024

LICENSES_MD = """\
# Licenses of the emoji sample

The tarballs in this folder are subsets of the npm packages named below
(same file names and layout as the originals), made by `tools/make_sample.py`.
Each package's own license file is copied under `LICENSES/`.

| Content | Source package | License | Copyright |
|---|---|---|---|
| Twemoji graphics (`package/img/twitter/64/*.png`) | `emoji-datasource-twitter` \
{ds} | CC-BY 4.0 | Twitter, Inc and other contributors |
| Noto Emoji graphics (`package/img/google/64/*.png`) | `emoji-datasource-google` \
{ds} | Apache-2.0 | Google |
| `emoji.json` metadata | `emoji-datasource-*` {ds} | MIT | Cal Henderson (iamcal) |
| `en/data.json`, `en/messages.json` (CLDR labels and tags), \
`meta/unicode-names.json`, `en/shortcodes/` | `emojibase-data` {eb} | MIT | \
Miles Johnson |
{svg_rows}

The emoji-datasource LICENSE file (MIT) covers its code and data; the images it
bundles keep the licenses of their artwork: Twemoji is CC-BY 4.0 (attribution:
"Twemoji graphics by Twitter, Inc and other contributors, CC-BY 4.0"), Noto Emoji
is Apache-2.0. Apple and Facebook artwork is not licensed for redistribution and
is neither shipped nor fetched by default.

## What the sample holds

{contents}
"""


def write_tarball(path: pathlib.Path, files: dict[str, bytes]) -> None:
    """Writes a reproducible .tgz (sorted names, fixed mtime, root owner)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            info.mtime = 499162500  # what npm uses: 1985-10-26
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(files[name]))
    with (
        open(path, "wb") as f,
        gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0) as gz,
    ):
        gz.write(buffer.getvalue())


def subgroup_keys(messages: dict, data: list[dict], datasource: list[dict]) -> list:
    """Subgroup keys indexed by emojibase's `subgroup` number (the `order` field).

    messages.json can list a stale key with the same `order` as a live one
    (17.0.0: `food-marine` and `food-sweet` are both 46). The tie is broken with
    emoji-datasource's `subcategory` of the emoji in that subgroup.
    """
    by_order = collections.defaultdict(list)
    for entry in messages["subgroups"]:
        by_order[entry["order"]].append(entry["key"])
    subcategory = {normalize_hexcode(e["unified"]): e["subcategory"] for e in datasource}
    used = collections.defaultdict(set)
    for entry in data:
        hexcode = normalize_hexcode(entry["hexcode"])
        if "subgroup" in entry and hexcode in subcategory:
            used[entry["subgroup"]].add(subcategory[hexcode])
    keys = []
    for order in range(max(by_order) + 1):
        candidates = by_order.get(order)
        if not candidates:
            raise ValueError(f"messages.json has no subgroup with order {order}.")
        if len(candidates) > 1:
            matching = [k for k in candidates if k in used[order]]
            if len(matching) != 1:
                raise ValueError(
                    f"Cannot tell which of subgroups {candidates} has order {order}."
                )
            print(f"subgroup order {order}: {candidates} -> {matching[0]}")
            candidates = matching
        keys.append(candidates[0])
    return keys


def subgroup_groups(data: list[dict], num_subgroups: int) -> list[int]:
    """The group number of each subgroup, read from the emoji of `data`.

    Every subgroup must have an emoji in `data` (the full emojibase data does;
    the sample's `en/data.json` lacks the `component` group).
    """
    group_of: dict[int, int] = {}
    for entry in data:
        if "group" in entry and "subgroup" in entry:
            group = group_of.setdefault(entry["subgroup"], entry["group"])
            if group != entry["group"]:
                raise ValueError(
                    f"Subgroup {entry['subgroup']} is in groups {group} and "
                    f"{entry['group']}."
                )
    missing = [i for i in range(num_subgroups) if i not in group_of]
    if missing:
        raise ValueError(
            f"en/data.json has no emoji in subgroups {missing}, so their groups are "
            "unknown: pass the full emojibase-data tarball as --source."
        )
    return [group_of[i] for i in range(num_subgroups)]


def label_classes(data: list[dict], component: int) -> list[tuple[str, str]]:
    """(normalized hexcode, unique label) per emoji in emojibase order.

    Skips entries without group (regional indicators) and the component group
    (skin-tone swatches, hair components); skin-tone variants are included.
    """
    entries = []
    for entry in data:
        if not is_dataset_emoji(entry, component):
            continue
        entries.append(entry)
        entries.extend(entry.get("skins", []))
    entries.sort(key=lambda e: e["order"])
    counts = collections.Counter(e["label"] for e in entries)
    classes = []
    for e in entries:
        label = e["label"]
        if counts[label] > 1:
            label = f"{label} ({normalize_hexcode(e['hexcode'])})"
        classes.append((normalize_hexcode(e["hexcode"]), label))
    assert len({label for _, label in classes}) == len(classes)
    return classes


def write_labels(path, groups, subgroups, groups_of_subgroups, classes) -> None:
    """Writes emoji_labels.json, one class per line so that diffs stay readable."""
    lines = [
        "{",
        f'  "emojibase_version": {json.dumps(EMOJIBASE_VERSION)},',
        '  "generated_by": "tools/make_sample.py",',
        f'  "groups": {json.dumps(groups)},',
        f'  "subgroups": {json.dumps(subgroups)},',
        f'  "subgroup_groups": {json.dumps(groups_of_subgroups)},',
        '  "classes": [',
    ]
    rows = [f"    {json.dumps([h, label], ensure_ascii=False)}" for h, label in classes]
    lines.append(",\n".join(rows))
    lines += ["  ]", "}"]
    atomic_write_text(path, "\n".join(lines) + "\n")


def evenly_spaced(items: list, k: int) -> list:
    """Up to `k` items spread over `items`, both ends included."""
    if len(items) <= k:
        return list(items)
    if k == 1:
        return [items[len(items) // 2]]
    return [items[round(i * (len(items) - 1) / (k - 1))] for i in range(k)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=pathlib.Path, required=True)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--labels", type=pathlib.Path, default=LABELS_PATH)
    parser.add_argument("--per-subgroup", type=int, default=4)
    parser.add_argument(
        "--max-bytes-with-skins",
        type=int,
        default=4 * 1024 * 1024,
        help="leave the skin-tone variants out when the sample would be larger",
    )
    args = parser.parse_args(argv)

    emojibase = read_tar_members(
        args.source / emojibase_tarball_name(),
        lambda n: (
            n.split("/", 1)[1]
            in ("LICENSE", "package.json", "en/data.json", "en/messages.json")
            or n in (UNICODE_NAMES, *SHORTCODES)
        ),
    )
    data = json.loads(emojibase["package/en/data.json"])
    messages = json.loads(emojibase["package/en/messages.json"])

    vendor_files, vendor_emoji, vendor_images = {}, {}, {}
    for vendor in SAMPLE_VENDORS:
        prefix = ARTISTS[vendor].folder
        files = read_tar_members(
            args.source / ARTISTS[vendor].tarball_name,
            lambda n, p=prefix: (
                n.startswith(p)
                or n.split("/", 1)[1] in ("LICENSE", "package.json", "emoji.json")
            ),
        )
        vendor_files[vendor] = files
        vendor_emoji[vendor] = json.loads(files["package/emoji.json"])
        # normalized hexcode -> member name
        vendor_images[vendor] = datasource_image_members(
            vendor_emoji[vendor], vendor, files
        )

    groups = [g["key"] for g in sorted(messages["groups"], key=lambda g: g["order"])]
    assert [g["order"] for g in messages["groups"]] == list(range(len(groups)))
    component = groups.index(COMPONENT_GROUP)
    subgroups = subgroup_keys(messages, data, vendor_emoji[SAMPLE_VENDORS[0]])
    groups_of_subgroups = subgroup_groups(data, len(subgroups))
    classes = label_classes(data, component)
    write_labels(args.labels, groups, subgroups, groups_of_subgroups, classes)
    print(
        f"wrote {args.labels}: {len(groups)} groups, {len(subgroups)} subgroups, "
        f"{len(classes)} classes"
    )

    # Choose the sample: base emoji that every sample vendor draws.
    def drawn(hexcode: str) -> bool:
        return all(normalize_hexcode(hexcode) in vendor_images[v] for v in SAMPLE_VENDORS)

    by_subgroup = collections.defaultdict(list)
    for entry in sorted(data, key=lambda e: e.get("order", 0)):
        if is_dataset_emoji(entry, component) and drawn(entry["hexcode"]):
            by_subgroup[entry["subgroup"]].append(entry)
    chosen = [
        e
        for s in sorted(by_subgroup)
        for e in evenly_spaced(by_subgroup[s], args.per_subgroup)
    ]
    skins = [s for e in chosen for s in e.get("skins", []) if drawn(s["hexcode"])]
    skin_bytes = sum(
        len(vendor_files[v][vendor_images[v][normalize_hexcode(s["hexcode"])]])
        for v in SAMPLE_VENDORS
        for s in skins
    )
    print(
        f"chose {len(chosen)} base emoji in {len(by_subgroup)} subgroups; "
        f"they have {len(skins)} skin-tone variants ({skin_bytes / 1e6:.2f} MB of "
        "PNG, all vendors)"
    )
    keep = {normalize_hexcode(e["hexcode"]) for e in chosen}
    svg_artwork = choose_svg_artwork(args.source, chosen)
    total = write_sample(
        args.out,
        keep | {normalize_hexcode(s["hexcode"]) for s in skins},
        data,
        emojibase,
        vendor_files,
        vendor_emoji,
        vendor_images,
    )
    if total > args.max_bytes_with_skins:
        print(f"with skin tones the sample is {total / 1e6:.2f} MB: leaving them out")
        total = write_sample(
            args.out, keep, data, emojibase, vendor_files, vendor_emoji, vendor_images
        )
    else:
        print("skin-tone variants included")
    total += write_svg_artists(args.out, args.source, svg_artwork)
    print(f"sample: {total / 1e6:.2f} MB in {args.out}")
    if total > MAX_SAMPLE_BYTES:
        raise SystemExit(f"Sample is {total} bytes, over {MAX_SAMPLE_BYTES}.")


def choose_svg_artwork(source: pathlib.Path, chosen: list[dict]) -> dict:
    """Per SVG artist, the artwork of one chosen emoji per subgroup it draws."""
    records = read_emojibase(source / emojibase_tarball_name(), include_skin_tones=False)
    keys = {normalize_hexcode(e["hexcode"]): e["subgroup"] for e in chosen}
    records = [r for r in records if r["key"] in keys]
    artwork = {}
    for name in SAMPLE_SVG_ARTISTS:
        artist = ARTISTS[name]
        drawn = read_artwork(artist, source / artist.tarball_name, records)
        by_subgroup = collections.defaultdict(list)
        for r in records:
            if r["key"] in drawn:
                by_subgroup[keys[r["key"]]].append(r["key"])
        picked = [
            k for s in sorted(by_subgroup) for k in evenly_spaced(by_subgroup[s], 1)
        ]
        artwork[name] = [drawn[k] for k in picked]
    return artwork


def write_svg_artists(out: pathlib.Path, source: pathlib.Path, svg_artwork: dict) -> int:
    """Writes each SVG artist's sample tarball; returns their total bytes."""
    total = 0
    for name, drawings in svg_artwork.items():
        artist = ARTISTS[name]
        files = read_tar_members(
            source / artist.tarball_name,
            lambda n: n in SVG_ARTIST_FILES or n == ICONIFY_ICONS,
        )
        out_files = {n: files[n] for n in SVG_ARTIST_FILES if n in files}
        if artist.layout == "iconify_json":
            icon_set = json.loads(files[ICONIFY_ICONS])
            icons = {}
            for drawing in drawings:
                icon = drawing.member.split("#", 1)[1]
                icons[icon] = iconify_icon(icon_set, icon)
            sample_set = {
                k: v for k, v in icon_set.items() if k not in ("icons", "aliases")
            }
            sample_set["icons"] = icons
            out_files[ICONIFY_ICONS] = json.dumps(sample_set, indent=1).encode()
        else:
            out_files.update({d.member: d.data for d in drawings})
        path = out / artist.tarball_name
        write_tarball(path, out_files)
        for licence in ("package/LICENSE", "package/LICENSE.txt"):
            if licence in files:
                (
                    out / "LICENSES" / f"{npm_file_stem(artist.package)}-LICENSE"
                ).write_bytes(files[licence])
        print(f"wrote {path.name}: {len(drawings)} drawings")
        total += path.stat().st_size
    return total


def write_sample(
    out, keep, data, emojibase, vendor_files, vendor_emoji, vendor_images
) -> int:
    """Writes the sample tarballs of the emoji in `keep`; returns the total bytes."""
    if out.exists():
        shutil.rmtree(out)
    (out / "LICENSES").mkdir(parents=True)
    sample_data = [e for e in data if normalize_hexcode(e["hexcode"]) in keep]
    write_tarball(
        out / emojibase_tarball_name(),
        {
            "package/LICENSE": emojibase["package/LICENSE"],
            "package/package.json": emojibase["package/package.json"],
            "package/en/data.json": json.dumps(
                sample_data, ensure_ascii=False, indent=1
            ).encode("utf-8"),
            "package/en/messages.json": emojibase["package/en/messages.json"],
            **{
                name: json.dumps(
                    {
                        h: v
                        for h, v in json.loads(emojibase[name]).items()
                        if normalize_hexcode(h) in keep
                    },
                    ensure_ascii=False,
                    indent=1,
                ).encode("utf-8")
                for name in (UNICODE_NAMES, *SHORTCODES)
            },
        },
    )
    (out / "LICENSES" / "emojibase-data-LICENSE").write_bytes(
        emojibase["package/LICENSE"]
    )
    for vendor in SAMPLE_VENDORS:
        files = vendor_files[vendor]
        sample_emoji, out_files = [], {}
        for e in vendor_emoji[vendor]:
            if normalize_hexcode(e["unified"]) not in keep:
                continue
            e = dict(e)
            variations = {
                k: v
                for k, v in (e.get("skin_variations") or {}).items()
                if normalize_hexcode(v["unified"]) in keep
            }
            if "skin_variations" in e:
                e["skin_variations"] = variations
            sample_emoji.append(e)
            for v in [e, *variations.values()]:
                member = vendor_images[vendor][normalize_hexcode(v["unified"])]
                out_files[member] = files[member]
        out_files["package/emoji.json"] = json.dumps(sample_emoji, indent=1).encode()
        out_files["package/LICENSE"] = files["package/LICENSE"]
        out_files["package/package.json"] = files["package/package.json"]
        name = ARTISTS[vendor].tarball_name
        write_tarball(out / name, out_files)
        (out / "LICENSES" / f"emoji-datasource-{vendor}-LICENSE").write_bytes(
            files["package/LICENSE"]
        )
        print(f"wrote {name}: {len(sample_emoji)} emoji, {len(out_files) - 3} PNGs")
    n_base = len(sample_data)
    n_variants = len(keep) - n_base
    contents = (
        f"{n_base} base emoji (up to 4 per subgroup, evenly spaced in emojibase "
        f"order, drawn by both {' and '.join(SAMPLE_VENDORS)}) and "
        + (
            f"{n_variants} of their skin-tone variants (the `skin_tones` config "
            "adds these as examples)."
            if n_variants
            else "none of their skin-tone variants (too large for the sample: "
            "the `skin_tones` config has no extra examples on it)."
        )
        + " The emojibase `en/data.json` lists only these emoji (with all their"
        " `skins` entries, drawn or not); `en/messages.json` is whole."
    )
    (out / "LICENSES.md").write_text(
        LICENSES_MD.format(
            ds=DATASOURCE_VERSION,
            eb=EMOJIBASE_VERSION,
            contents=textwrap.fill(contents, width=80),
            svg_rows="\n".join(
                f"| {ARTISTS[n].name} drawings ("
                + (
                    f"`{ARTISTS[n].folder}*.svg`"
                    if ARTISTS[n].folder
                    else "`package/icons.json`, Iconify"
                )
                + f") | `{ARTISTS[n].spec}` | {ARTISTS[n].licence} | "
                f"{ARTISTS[n].attribution} |"
                for n in SAMPLE_SVG_ARTISTS
            ),
        )
    )
    return sum(p.stat().st_size for p in out.rglob("*") if p.is_file())


if __name__ == "__main__":
    main()
