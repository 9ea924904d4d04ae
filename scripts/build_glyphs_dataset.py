"""Rebuild the glyphs dataset shipped in omlcore/datasets/data/ from Debian's font packages.

    apt-get install --no-install-recommends $(python scripts/build_glyphs_dataset.py --packages)
    pip install fonttools                             # plus omlcore's own dependencies (numpy, pandas, Pillow)
    python scripts/build_glyphs_dataset.py            # writes glyphs.npz and glyphs_fonts.csv
    python scripts/build_glyphs_dataset.py --check    # rebuilds in memory, compares with the shipped files

How fonts become the dataset (see omlcore/datasets/glyphs.py for the classes):

1. Every face of every .ttf/.otf/.ttc/.otc file of PACKAGES (static fonts only; variable fonts are skipped).
2. One face per family (typographic family name): upright, normal width, weight closest to 400. Families whose
   name marks a style, width or optical size of another family (Bold, Condensed, Display, Caption, Book ...)
   or a math / symbol font are skipped, and so are EXCLUDED_FAMILIES.
3. A character counts only where the font really has it: its cmap maps it to a glyph that is not .notdef,
   not shared with another class, not drawn like the font's missing-glyph box nor as a solid box, with ink.
4. Families missing a Latin letter, a digit or one of the Cyrillic validation letters are dropped (Greek is
   optional: some fonts have none).
5. Rendering: Pillow/FreeType at 8x the final size, the font scaled so that its "H" is CAP_HEIGHT pixels high
   (less where a glyph would not fit), each character on the common BASELINE (where "H" stands) and centred
   on its ink, then averaged down to GLYPH_SIZE (8 x 8 blocks). Pixels hold ink coverage (0 background, 255
   ink). An image identical to that of an earlier class of the same font (Comfortaa draws д like g) is left out.
6. Near-duplicate designs are dropped: fonts in order of coverage (then name); a font whose Latin letters and
   digits differ from an already kept font's by less than DUPLICATE_DISTANCE (mean absolute difference,
   0..1) is a duplicate of it (Arimo and Liberation Sans, FreeSans and Nimbus Sans, ...).

The output is deterministic (fixed zip timestamps, sorted order): the same package versions with the same
Pillow / FreeType give byte-identical files; glyphs_fonts.csv records every family seen with the reason it
was kept or dropped, its package, version, file and licence.
"""

from __future__ import annotations

import argparse
import fnmatch
import io
import json
import logging
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import PIL
from PIL import Image, ImageDraw, ImageFont, features

try:
    import fontTools
    from fontTools.ttLib import TTCollection, TTFont
except ImportError:  # pragma: no cover - a build-time tool
    sys.exit("This script needs fontTools: pip install fonttools")

from omlcore.datasets.glyphs import (
    CHARACTER_CATEGORIES,
    GLYPH_SIZE,
    GLYPHS_FORMAT,
    TRAIN_CHARACTERS,
    VALIDATION_CHARACTERS,
)

#: Debian packages with Latin + Cyrillic fonts (Greek where they have it). Several hold derivatives of each
#: other's designs on purpose: step 6 keeps one of each.
PACKAGES = (
    # Latin-first text faces
    "fonts-3270",
    "fonts-adf-berenis",
    "fonts-agave",
    "fonts-anonymous-pro",
    "fonts-cantarell",
    "fonts-clear-sans",
    "fonts-cmu",
    "fonts-comfortaa",
    "fonts-croscore",
    "fonts-crosextra-carlito",
    "fonts-dejavu-core",
    "fonts-ebgaramond",
    "fonts-fantasque-sans",
    "fonts-firacode",
    "fonts-freefont-ttf",
    "fonts-georgewilliams",
    "fonts-gnutypewriter",
    "fonts-go",
    "fonts-hack",
    "fonts-inter",
    "fonts-jetbrains-mono",
    "fonts-jura",
    "fonts-karmilla",
    "fonts-lato",
    "fonts-liberation2",
    "fonts-linuxlibertine",
    "fonts-manrope",
    "fonts-monoid",
    "fonts-mononoki",
    "fonts-mph-2b-damase",
    "fonts-noto-core",
    "fonts-noto-mono",
    "fonts-oldstandard",
    "fonts-open-sans",
    "fonts-osifont",
    "fonts-paratype",
    "fonts-play",
    "fonts-roboto-slab",
    "fonts-roboto-unhinted",
    "fonts-sil-andika",
    "fonts-sil-charis",
    "fonts-sil-doulos",
    "fonts-sil-gentium",
    "fonts-sil-gentiumplus",
    "fonts-stix",
    "fonts-triod-postnaja",
    "fonts-tuffy",
    "fonts-unifont",
    "fonts-uralic",
    "fonts-urw-base35",
    "fonts-vollkorn",
    "fonts-yanone-kaffeesatz",
    # CJK fonts: their own Latin designs, Greek and Cyrillic from the national character sets
    "fonts-arphic-ukai",
    "fonts-arphic-uming",
    "fonts-baekmuk",
    "fonts-dotgothic16",
    "fonts-hanazono",
    "fonts-ipafont-gothic",
    "fonts-ipafont-mincho",
    "fonts-kiloji",
    "fonts-klee",
    "fonts-komatuna",
    "fonts-lxgw-wenkai",
    "fonts-morisawa-bizud-gothic",
    "fonts-morisawa-bizud-mincho",
    "fonts-nanum",
    "fonts-seto",
    "fonts-unfonts-core",
    "fonts-vlgothic",
    "fonts-wqy-zenhei",
)

#: Families left out although they pass every check, and why.
EXCLUDED_FAMILIES = {
    "D050000L": "dingbats on the Latin code points",
    "Go Smallcaps": "small capitals in place of the small letters",
    # CJK families come in twins that differ only in the width of their Latin letters: keep the proportional one
    "BIZ UDGothic": "monospaced-Latin twin of BIZ UDPGothic",
    "BIZ UDMincho": "monospaced-Latin twin of BIZ UDPMincho",
    "IPAGothic": "monospaced-Latin twin of IPAPGothic",
    "IPAMincho": "monospaced-Latin twin of IPAPMincho",
    "Komatuna": "monospaced-Latin twin of Komatuna P",
    "LXGW WenKai Mono": "monospaced-Latin twin of LXGW WenKai",
    "NanumGothicCoding": "monospaced-Latin twin of NanumGothic",
    "VL Gothic": "monospaced-Latin twin of VL PGothic",
}

#: Words in a family name that make it a style / width / optical size of another family, or no text face.
STYLE_WORDS = re.compile(
    r"\b(black|bold|book|caption|compressed|condensed|demi|demibold|display|expanded|extended|extralight|hairline"
    r"|heavy|italic|keyboard|light|math|medium|narrow|oblique|sample|semibold|slanted|symbols?|thin|wide)\b",
    re.IGNORECASE,
)
ITALIC_STYLES = re.compile(r"italic|oblique|slanted|kursiv", re.IGNORECASE)

BASELINE = 23  # rows above the baseline (9 below)
CAP_HEIGHT = 16  # pixels from the baseline to the top of "H"
MARGIN = 1  # pixels kept free at the borders
OVERSAMPLE = 8  # rendered at 8x, averaged down
PROBE_SIZE = 200  # font size (pixels per em) used to measure a font before rendering it
DUPLICATE_DISTANCE = 0.015  # mean absolute difference (0..1) of the Latin letters and digits
KEPT = "kept"

CLASSES = TRAIN_CHARACTERS + VALIDATION_CHARACTERS
REQUIRED = CHARACTER_CATEGORIES["latin_upper"] + CHARACTER_CATEGORIES["latin_lower"] + CHARACTER_CATEGORIES["digit"]
DATA_DIR = Path(__file__).resolve().parents[1] / "omlcore" / "datasets" / "data"


@dataclass
class Face:
    """One face of a font file, with what the selection needs."""

    package: str
    file: str
    index: int
    family: str
    style: str
    weight: int
    width: int
    italic: bool
    copyright: str
    license_text: str
    glyph_of: dict[str, str]  # class character -> glyph name, for the characters the cmap maps
    missing_probe: str | None  # a character the font does not map (it draws the missing-glyph box)


@dataclass
class Family:
    """A family, the face chosen for it and what became of it."""

    name: str
    faces: list[Face]
    face: Face | None = None
    status: str = KEPT
    images: dict[str, np.ndarray] = field(default_factory=dict)


# --- packages ---------------------------------------------------------------------------------------------------


def package_files(package: str) -> list[str]:
    """The font files a package installed, sorted."""
    result = subprocess.run(["dpkg-query", "-L", package], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"Package {package} is not installed. Run: apt-get install --no-install-recommends {package}")
    suffixes = (".ttf", ".otf", ".ttc", ".otc")
    return sorted(line for line in result.stdout.splitlines() if line.lower().endswith(suffixes))


def package_version(package: str) -> str:
    result = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, check=True)
    return result.stdout.strip()


def debian_license(package: str, file: str) -> str | None:
    """The licence Debian's copyright file gives ``file``.

    Machine-readable files: the ``License:`` of the last stanza whose ``Files:`` match; others: their first
    ``License:`` line.
    """
    path = Path("/usr/share/doc") / package / "copyright"
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    if not text.startswith("Format:"):
        first = re.search(r"^License:[ \t]*(.+)$", text, re.MULTILINE)
        return first.group(1).strip() if first else None
    name, found = Path(file).name, None
    for stanza in re.split(r"\n\s*\n", text):
        files = re.search(r"^Files:(.*(?:\n[ \t].*)*)", stanza, re.MULTILINE)
        license_line = re.search(r"^License:[ \t]*(.+)$", stanza, re.MULTILINE)
        if not files or not license_line:
            continue
        patterns = [pattern for pattern in files.group(1).split() if not pattern.startswith("debian/")]
        if any(pattern == "*" or fnmatch.fnmatch(name, Path(pattern).name) for pattern in patterns):
            found = license_line.group(1).strip()
    return found


def name_table_license(text: str) -> str:
    """A short licence name from a font's license description (name ID 13): its first sentence, or OFL-1.1."""
    if re.search(r"Open Font License,? Version 1\.1", text, re.IGNORECASE):
        return "OFL-1.1"
    return re.split(r"(?<=\.)\s|\s(?=Copyright)", text, maxsplit=1)[0][:80]


# --- faces ------------------------------------------------------------------------------------------------------


def _name(font: TTFont, *ids: int) -> str:
    for name_id in ids:
        value = font["name"].getDebugName(name_id)
        if value:
            return " ".join(value.split())
    return ""


def read_faces(package: str, file: str) -> Iterator[Face]:
    collection = file.lower().endswith((".ttc", ".otc"))
    fonts = TTCollection(file, lazy=True).fonts if collection else [TTFont(file, lazy=True)]
    for index, font in enumerate(fonts):
        if "fvar" in font or "OS/2" not in font:
            continue
        os2, cmap = font["OS/2"], font.getBestCmap() or {}
        style = _name(font, 17, 2)
        italic = bool(os2.fsSelection & 1) or bool(font["head"].macStyle & 2) or bool(ITALIC_STYLES.search(style))
        missing = next((chr(code) for code in range(0xE000, 0xF900) if code not in cmap), None)
        yield Face(
            package=package,
            file=file,
            index=index,
            family=_name(font, 16, 1),
            style=style,
            weight=int(os2.usWeightClass),
            width=int(os2.usWidthClass),
            italic=italic,
            copyright=_name(font, 0),
            license_text=_name(font, 13),
            glyph_of={char: cmap[ord(char)] for char in CLASSES if ord(char) in cmap},
            missing_probe=missing,
        )


def regular_face(faces: list[Face]) -> Face | None:
    """The upright face of normal width whose weight is closest to 400, if that is a text weight (300-500)."""
    upright = [face for face in faces if not face.italic]
    if not upright:
        return None
    face = min(upright, key=lambda f: (abs(f.width - 5), abs(f.weight - 400), f.weight, f.file, f.index))
    return face if 300 <= face.weight <= 500 else None


# --- rendering --------------------------------------------------------------------------------------------------


def _ink(font: ImageFont.FreeTypeFont, char: str) -> tuple[np.ndarray, int] | None:
    """``(coverage, top)``: the inked pixels of ``char`` and their top row relative to the baseline."""
    left, top, right, bottom = (int(v) for v in font.getbbox(char, anchor="ls"))
    canvas = Image.new("L", (right - left + 4, bottom - top + 4))
    ImageDraw.Draw(canvas).text((2 - left, 2 - top), char, font=font, fill=255, anchor="ls")
    pixels = np.asarray(canvas)
    rows, columns = np.nonzero(pixels.any(axis=1))[0], np.nonzero(pixels.any(axis=0))[0]
    if len(rows) == 0:
        return None
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, columns[0], columns[-1] + 1
    return pixels[r0:r1, c0:c1], int(r0) + top - 2


def _font(face: Face, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(face.file, size, index=face.index, layout_engine=ImageFont.Layout.BASIC)


def usable_characters(face: Face) -> list[str]:
    """The class characters the face really has (step 3), in label order."""
    glyph_counts: dict[str, int] = {}
    for glyph in face.glyph_of.values():
        glyph_counts[glyph] = glyph_counts.get(glyph, 0) + 1
    probe = _font(face, PROBE_SIZE)
    missing = _ink(probe, face.missing_probe) if face.missing_probe else None
    usable = []
    for char in CLASSES:
        glyph = face.glyph_of.get(char)
        if glyph is None or glyph == ".notdef" or glyph_counts[glyph] > 1:
            continue
        ink = _ink(probe, char)
        if ink is None:
            continue
        pixels = ink[0]
        if missing is not None and pixels.shape == missing[0].shape and np.array_equal(pixels, missing[0]):
            continue
        if pixels.shape[1] >= pixels.shape[0] / 4 and pixels.mean() >= 0.9 * 255:  # a solid box, not a letter
            continue
        usable.append(char)
    return usable


def _extents(font: ImageFont.FreeTypeFont, characters: list[str]) -> dict[str, tuple[int, int, int]]:
    """``(top, bottom, width)`` of each character's ink, rows relative to the font's baseline."""
    extents = {}
    for char in characters:
        ink = _ink(font, char)
        assert ink is not None, char
        pixels, top = ink
        extents[char] = (top, top + pixels.shape[0], pixels.shape[1])
    return extents


def render(face: Face, characters: list[str]) -> dict[str, np.ndarray]:
    """Step 5: ``GLYPH_SIZE``-square ink coverage images of ``characters``.

    The bottom of "H" is taken as the baseline: some CJK fonts set their Latin letters a little off their own.
    """
    extents = _extents(_font(face, PROBE_SIZE), characters)
    cap_top, baseline = extents["H"][:2]
    above = max(baseline - top for top, _, _ in extents.values())
    below = max(max(bottom - baseline for _, bottom, _ in extents.values()), 1)
    width = max(w for _, _, w in extents.values())
    scale = min(
        CAP_HEIGHT / (baseline - cap_top),
        (BASELINE - MARGIN) / above,
        (GLYPH_SIZE - BASELINE - MARGIN) / below,
        (GLYPH_SIZE - 2 * MARGIN) / width,
    )
    font = _font(face, round(PROBE_SIZE * scale * OVERSAMPLE))
    baseline = _extents(font, ["H"])["H"][1]
    window = GLYPH_SIZE * OVERSAMPLE
    images = {}
    for char in characters:
        ink = _ink(font, char)
        assert ink is not None
        pixels, top = ink
        canvas = np.zeros((window, window), dtype=np.float64)
        y0 = BASELINE * OVERSAMPLE + top - baseline
        x0 = (window - pixels.shape[1]) // 2
        rows = slice(max(y0, 0), min(y0 + pixels.shape[0], window))
        cols = slice(max(x0, 0), min(x0 + pixels.shape[1], window))
        canvas[rows, cols] = pixels[rows.start - y0 : rows.stop - y0, cols.start - x0 : cols.stop - x0]
        blocks = canvas.reshape(GLYPH_SIZE, OVERSAMPLE, GLYPH_SIZE, OVERSAMPLE).mean(axis=(1, 3))
        images[char] = np.round(blocks).astype(np.uint8)
    return images


def distinct(images: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Leave out an image identical to the image of an earlier class (in label order) of the same font."""
    seen: set[bytes] = set()
    kept = {}
    for char, image in images.items():
        if image.tobytes() not in seen:
            seen.add(image.tobytes())
            kept[char] = image
    return kept


# --- the whole build --------------------------------------------------------------------------------------------


def collect_families(packages: tuple[str, ...]) -> list[Family]:
    by_name: dict[str, Family] = {}
    for package in packages:
        for file in package_files(package):
            for face in read_faces(package, file):
                by_name.setdefault(face.family, Family(face.family, [])).faces.append(face)
    return [by_name[name] for name in sorted(by_name, key=str.casefold)]


def select(families: list[Family]) -> list[Family]:
    """Steps 2-5: sets ``status`` (and ``face``, ``images``) of every family; returns the candidates."""
    candidates = []
    for family in families:
        if STYLE_WORDS.search(family.name):
            family.status = "dropped: a style, width or optical size of another family, or no text face"
            continue
        family.face = regular_face(family.faces)
        if family.face is None:
            family.status = "dropped: no upright face of a text weight (300 to 500)"
            continue
        if family.name in EXCLUDED_FAMILIES:
            family.status = f"dropped: {EXCLUDED_FAMILIES[family.name]}"
            continue
        characters = usable_characters(family.face)
        lacking = [char for char in REQUIRED + VALIDATION_CHARACTERS if char not in characters]
        if lacking:
            shown = "".join(lacking[:12]) + ("..." if len(lacking) > 12 else "")
            family.status = f"dropped: lacks {len(lacking)} required characters ({shown})"
            continue
        family.images = render(family.face, characters)
        candidates.append(family)
        print(f"  rendered {family.name} ({len(characters)} characters)", file=sys.stderr)
    return candidates


def drop_duplicates(candidates: list[Family]) -> list[Family]:
    """Step 6; returns the kept families in name order."""
    order = sorted(candidates, key=lambda f: (-len(f.images), f.name.casefold()))
    kept: list[tuple[Family, np.ndarray]] = []
    for family in order:
        latin = np.stack([family.images[char] for char in REQUIRED]).astype(np.float64) / 255
        distances = [(float(np.abs(latin - other).mean()), twin.name) for twin, other in kept]
        closest = min(distances, default=(np.inf, ""))
        if closest[0] < DUPLICATE_DISTANCE:
            family.status = f"dropped: near-duplicate of {closest[1]} (distance {closest[0]:.4f})"
        else:
            kept.append((family, latin))
    return sorted((family for family, _ in kept), key=lambda f: f.name.casefold())


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.casefold()).strip("-")


def font_table(families: list[Family], kept: list[Family]) -> pd.DataFrame:
    ids = {family.name: position for position, family in enumerate(kept)}
    versions: dict[str, str] = {}
    rows = []
    for family in families:
        face = family.face or family.faces[0]
        if face.package not in versions:
            versions[face.package] = package_version(face.package)
        license_name = (
            debian_license(face.package, face.file)
            or name_table_license(face.license_text)
            or f"see /usr/share/doc/{face.package}/copyright"
        )
        rows.append(
            {
                "font_id": ids.get(family.name, ""),
                "family": family.name,
                "slug": slug(family.name),
                "status": family.status,
                "style": face.style,
                "package": face.package,
                "package_version": versions[face.package],
                "file": f"{face.file}#{face.index}" if face.file.lower().endswith((".ttc", ".otc")) else face.file,
                "license": license_name,
                "copyright": face.copyright[:300],
                "n_characters": len(distinct(family.images)) if family.images else "",
            }
        )
    table = pd.DataFrame(rows)
    kept_slugs = table.loc[table["status"] == KEPT, "slug"]
    assert kept_slugs.is_unique, "two kept families share a slug"
    return table


def arrays(kept: list[Family]) -> dict[str, np.ndarray]:
    images, codepoints, font_ids = [], [], []
    for font_id, family in enumerate(kept):
        for char, image in distinct(family.images).items():
            images.append(image)
            codepoints.append(ord(char))
            font_ids.append(font_id)
    build = {
        "glyph_size": GLYPH_SIZE,
        "baseline": BASELINE,
        "cap_height": CAP_HEIGHT,
        "oversample": OVERSAMPLE,
        "duplicate_distance": DUPLICATE_DISTANCE,
        "pillow": PIL.__version__,
        "freetype": features.version("freetype2"),
        "fonttools": fontTools.version,
    }
    return {
        "format": np.array(GLYPHS_FORMAT),
        "images": np.stack(images),
        "codepoints": np.array(codepoints, dtype=np.int32),
        "font_ids": np.array(font_ids, dtype=np.int16),
        "fonts": np.array([family.name for family in kept]),
        "build": np.array(json.dumps(build, sort_keys=True)),
    }


def npz_bytes(named: dict[str, np.ndarray]) -> bytes:
    """``numpy.savez_compressed`` with fixed timestamps, so that equal arrays give equal bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, array in named.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(array, order="C"), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, member.getvalue(), compresslevel=9)
    return buffer.getvalue()


def build() -> tuple[bytes, bytes, pd.DataFrame]:
    families = collect_families(PACKAGES)
    print(f"{len(families)} families in {len(PACKAGES)} packages", file=sys.stderr)
    candidates = select(families)
    kept = drop_duplicates(candidates)
    table = font_table(families, kept)
    named = arrays(kept)
    csv = table.to_csv(index=False, lineterminator="\n").encode("utf-8")
    return npz_bytes(named), csv, table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packages", action="store_true", help="print the Debian packages needed and exit")
    parser.add_argument("--check", action="store_true", help="compare with the shipped files instead of writing")
    parser.add_argument("--out", type=Path, default=DATA_DIR, help=f"output folder (default {DATA_DIR})")
    args = parser.parse_args(argv)
    logging.getLogger("fontTools").setLevel(logging.ERROR)  # it warns about odd but harmless timestamps
    if args.packages:
        print(" ".join(PACKAGES))
        return 0
    npz, csv, table = build()
    kept = table[table["status"] == KEPT]
    print(f"kept {len(kept)} of {len(table)} families; {len(npz) / 2**20:.2f} MiB", file=sys.stderr)
    targets = {args.out / "glyphs.npz": npz, args.out / "glyphs_fonts.csv": csv}
    if args.check:
        differing = [str(path) for path, data in targets.items() if not path.is_file() or path.read_bytes() != data]
        print("differs: " + ", ".join(differing) if differing else "identical", file=sys.stderr)
        return 1 if differing else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for path, data in targets.items():
        path.write_bytes(data)
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
