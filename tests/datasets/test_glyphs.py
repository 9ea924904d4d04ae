"""The shipped glyphs dataset: its arrays, fonts and licences, and its materialisation in OML's CSV + PNG layout."""

from __future__ import annotations

import json
import threading
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from omlcore.datasets import ImageLabeledDataset, ImageQueryGalleryDataset, read_dataset_csv, validate_dataframe
from omlcore.datasets import glyphs as glyphs_module
from omlcore.datasets.glyphs import (
    CHARACTER_CATEGORIES,
    GLYPH_SIZE,
    TRAIN_CHARACTERS,
    VALIDATION_CHARACTERS,
    Glyphs,
    GlyphsError,
    default_glyphs_root,
    glyphs_dataframe,
    load_glyphs,
    materialize_glyphs,
)

DATA = Path(glyphs_module.__file__).parent / "data"
#: Letters drawn like Latin ones, by (script and case, names).
LIKE_LATIN = {
    "GREEK CAPITAL": "ALPHA BETA EPSILON ZETA ETA IOTA KAPPA MU NU OMICRON RHO TAU UPSILON CHI",
    "GREEK SMALL": "IOTA KAPPA NU OMICRON RHO UPSILON CHI",
    "CYRILLIC CAPITAL": "A VE IE KA EM EN O ER ES TE U HA",
    "CYRILLIC SMALL": "A IE O ER ES U HA",
}
LATIN_AND_DIGITS = CHARACTER_CATEGORIES["latin_upper"] + CHARACTER_CATEGORIES["latin_lower"] + "0123456789"


@pytest.fixture(scope="module")
def glyphs() -> Glyphs:
    return load_glyphs()


@pytest.fixture(scope="module")
def build_info() -> dict[str, object]:
    with np.load(DATA / "glyphs.npz") as arrays:
        return dict(json.loads(str(arrays["build"].item())))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return materialize_glyphs(tmp_path_factory.mktemp("glyphs") / "glyphs")


def by_font(glyphs: Glyphs) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    """``(family, {character: image})`` per font."""
    characters = np.array(glyphs.characters)
    for font in glyphs.fonts:
        rows = np.flatnonzero(glyphs.font_ids == font.font_id)
        yield font.family, dict(zip(characters[rows].tolist(), glyphs.images[rows], strict=True))


def distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean() / 255)


# --- the shipped arrays ------------------------------------------------------------------------------------------


def test_every_class_is_drawn_in_many_fonts(glyphs: Glyphs) -> None:
    assert glyphs.images.dtype == np.uint8 and glyphs.images.shape == (len(glyphs), GLYPH_SIZE, GLYPH_SIZE)
    assert 60 <= len(glyphs.fonts) <= 150
    assert [font.font_id for font in glyphs.fonts] == list(range(len(glyphs.fonts)))
    pairs = pd.DataFrame({"font": glyphs.font_ids, "code": glyphs.codepoints})
    assert not pairs.duplicated().any()
    per_class = pd.Series(glyphs.characters).value_counts()
    assert set(per_class.index) == set(TRAIN_CHARACTERS + VALIDATION_CHARACTERS)
    assert per_class[list(LATIN_AND_DIGITS)].min() >= 0.97 * len(glyphs.fonts)
    assert per_class[list(VALIDATION_CHARACTERS)].min() >= 0.95 * len(glyphs.fonts)
    assert per_class.min() >= 60  # the Greek letters: some fonts have none


def test_the_classes_are_split_by_script_and_case() -> None:
    assert TRAIN_CHARACTERS.startswith("ABC") and len(TRAIN_CHARACTERS) == 26 + 26 + 10 + 10 + 18
    assert len(VALIDATION_CHARACTERS) == 32 and not set(TRAIN_CHARACTERS) & set(VALIDATION_CHARACTERS)
    assert all(0x0400 <= ord(char) <= 0x04FF for char in VALIDATION_CHARACTERS)
    greek = CHARACTER_CATEGORIES["greek_upper"] + CHARACTER_CATEGORIES["greek_lower"]
    assert all(0x0370 <= ord(char) <= 0x03FF for char in greek)
    latin_like = {
        unicodedata.lookup(f"{kind} LETTER {name}") for kind, names in LIKE_LATIN.items() for name in names.split()
    }
    assert not latin_like & set(TRAIN_CHARACTERS + VALIDATION_CHARACTERS)


def test_the_shipped_files_are_small() -> None:
    assert (DATA / "glyphs.npz").stat().st_size < 3 * 2**20
    assert (DATA / "glyphs_fonts.csv").stat().st_size < 256 * 2**10


def test_characters_sit_on_a_common_baseline_centred_on_their_ink(glyphs: Glyphs, build_info: dict) -> None:
    baseline, cap_height = int(build_info["baseline"]), int(build_info["cap_height"])  # type: ignore[call-overload]
    ink = glyphs.images > 0
    assert not ink[:, [0, -1], :].any() and not ink[:, :, [0, -1]].any()  # a free margin: nothing cut off
    for family, images in by_font(glyphs):
        rows = np.flatnonzero(images["H"].max(axis=1) > 127)
        assert rows[-1] + 1 == baseline, family  # "H" stands on the baseline
        assert cap_height - 3 <= len(rows) <= cap_height + 1, family  # at the cap height (less for tall fonts)
        assert (images["x"] > 127).any(axis=1).sum() < len(rows), family  # small letters stay small
        for char in "HOo1Ж":
            mass = images[char].astype(np.float64).sum(axis=0)
            used = np.flatnonzero(mass > 0)
            assert abs((used[0] + used[-1] + 1) / 2 - GLYPH_SIZE / 2) <= 1, (family, char)


def test_no_image_is_blank_a_box_or_a_copy_of_another_class(glyphs: Glyphs) -> None:
    assert (glyphs.images.reshape(len(glyphs), -1).max(axis=1) >= 96).all()  # ink (hairlines cover part of a pixel)
    for family, images in by_font(glyphs):
        contents = [image.tobytes() for image in images.values()]
        assert len(set(contents)) == len(contents), family
        for char, image in images.items():
            rows, cols = np.nonzero(image)
            box = image[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
            wide = box.shape[1] >= box.shape[0] / 4
            assert not (wide and box.mean() >= 0.9 * 255), (family, char)  # not a missing-glyph box


def test_near_duplicate_fonts_were_dropped(glyphs: Glyphs, build_info: dict) -> None:
    threshold = float(build_info["duplicate_distance"])  # type: ignore[arg-type]
    blank = np.full((GLYPH_SIZE, GLYPH_SIZE), np.nan)  # a character left out of a font (drawn like another one)
    latin = np.stack(
        [np.stack([images.get(char, blank) for char in LATIN_AND_DIGITS]) for _, images in by_font(glyphs)]
    ).astype(np.float32)
    assert np.isnan(latin[:, :, 0, 0]).sum() <= 2
    flat = latin.reshape(len(latin), len(LATIN_AND_DIGITS), -1) / 255
    for i in range(len(flat)):
        others = np.nanmean(np.abs(flat[i + 1 :] - flat[i]), axis=(1, 2))
        assert others.min(initial=1.0) >= threshold, glyphs.fonts[i].family


def test_validation_letters_look_like_no_train_character(glyphs: Glyphs) -> None:
    """In most fonts, every Cyrillic letter is clearly farther from each train character than a pixel copy."""
    fonts = list(by_font(glyphs))
    for char in VALIDATION_CHARACTERS:
        nearest = [
            min(distance(images[char], image) for other, image in images.items() if other in TRAIN_CHARACTERS)
            for _, images in fonts
            if char in images
        ]
        assert np.median(nearest) > 0.02, char


def test_the_font_table_names_every_kept_font_with_package_and_licence() -> None:
    table = pd.read_csv(DATA / "glyphs_fonts.csv", dtype=str, keep_default_na=False)
    kept = table[table["status"] == "kept"]
    assert len(kept) == len(load_glyphs().fonts) and kept["slug"].is_unique
    assert kept["package"].str.startswith("fonts-").all()
    assert (kept["license"].str.len() > 0).all() and (kept["package_version"].str.len() > 0).all()
    duplicates = table[table["status"].str.startswith("dropped: near-duplicate of ")]
    assert len(duplicates) >= 10  # e.g. Liberation Sans / Arimo, FreeSans / Nimbus Sans
    twins = duplicates["status"].str.extract(r"near-duplicate of (.+) \(distance")[0]
    assert twins.isin(kept["family"]).all()


# --- materialisation ---------------------------------------------------------------------------------------------


def test_the_materialised_folder_is_a_valid_oml_dataset(root: Path, glyphs: Glyphs) -> None:
    df = read_dataset_csv(root / "df.csv")  # every file exists
    validate_dataframe(df.sample(200, random_state=0), root, check_images="decode", allow_lone_queries=True)
    assert len(df) == len(glyphs) and (root / "fonts.csv").is_file()
    train, validation = df[df["split"] == "train"], df[df["split"] == "validation"]
    assert set(train["character"]) == set(TRAIN_CHARACTERS)
    assert set(validation["character"]) == set(VALIDATION_CHARACTERS)
    assert validation["is_query"].all() and validation["is_gallery"].all()
    assert not train["is_query"].any() and not train["is_gallery"].any()
    labels = {char: label for label, char in enumerate(TRAIN_CHARACTERS + VALIDATION_CHARACTERS)}
    assert (df["label"] == df["character"].map(labels)).all()
    assert df.groupby("label")["category"].nunique().max() == 1
    assert df.loc[df["character"] == "Ж", "category"].unique().tolist() == ["cyrillic_upper"]
    for position in (0, len(glyphs) // 2, len(glyphs) - 1):
        with Image.open(df["path"].iloc[position]) as image:
            assert image.mode == "L" and image.size == (GLYPH_SIZE, GLYPH_SIZE)
            assert np.array_equal(np.asarray(image), 255 - glyphs.images[position])  # black ink on white


def test_the_datasets_read_the_materialised_folder(root: Path) -> None:
    train = ImageLabeledDataset(root / "df.csv", transform="to_tensor")
    validation = ImageQueryGalleryDataset(root / "df.csv", transform="to_tensor")
    assert len(set(train.get_labels().tolist())) == len(TRAIN_CHARACTERS)
    assert len(validation.get_query_ids()) == len(validation) == len(validation.get_gallery_ids())
    assert tuple(validation[0]["images"].shape) == (3, GLYPH_SIZE, GLYPH_SIZE)


def test_glyphs_dataframe_returns_the_validated_table(root: Path) -> None:
    df = glyphs_dataframe(root)
    assert df["path"].map(lambda path: Path(path).is_absolute()).all()
    assert list(df.columns[:6]) == ["label", "path", "split", "is_query", "is_gallery", "category"]
    assert {"character", "character_name", "font"} <= set(df.columns)
    assert df["character_name"].iloc[0] == "LATIN CAPITAL LETTER A"


def test_materialising_again_returns_the_folder_untouched(root: Path) -> None:
    before = (root / "df.csv").stat().st_mtime_ns
    assert materialize_glyphs(root) == root
    assert (root / "df.csv").stat().st_mtime_ns == before
    assert [path.name for path in root.parent.iterdir()] == [root.name]  # no staging folder left behind


def test_an_interrupted_run_leaves_nothing_that_passes_for_the_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "glyphs"
    calls = {"n": 0}
    original = Image.Image.save

    def save_then_crash(self: Image.Image, *args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] > 100:
            raise KeyboardInterrupt("simulated crash")
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Image.Image, "save", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        materialize_glyphs(target)
    assert list(tmp_path.iterdir()) == []  # neither the target nor the half-written staging folder
    monkeypatch.setattr(Image.Image, "save", original)
    assert materialize_glyphs(target) == target and (target / "df.csv").is_file()


def test_a_folder_in_the_way_is_an_error_but_an_empty_one_is_filled(tmp_path: Path) -> None:
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "df.csv").write_text("label,path\n")  # e.g. left by something else, without the manifest
    with pytest.raises(GlyphsError, match=r"stale.*not an empty folder nor a complete copy"):
        materialize_glyphs(stale)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert materialize_glyphs(empty) == empty and (empty / "glyphs.json").is_file()


def test_concurrent_runs_agree_on_one_complete_folder(tmp_path: Path) -> None:
    target = tmp_path / "glyphs"
    results: list[Path | BaseException] = []

    def run() -> None:
        try:
            results.append(materialize_glyphs(target))
        except BaseException as error:  # reported by the assertion below
            results.append(error)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [target, target]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["glyphs"]
    assert len(read_dataset_csv(target / "df.csv")) == len(load_glyphs())


def test_the_default_folder_lives_in_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMLCORE_CACHE_DIR", str(tmp_path / "cache"))
    root = default_glyphs_root()
    assert root.parent == tmp_path / "cache" / "datasets"
    assert root.name == f"glyphs-{load_glyphs().sha256[:12]}"


def test_a_broken_install_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(glyphs_module, "_DATA", "no-such-folder")
    load_glyphs.cache_clear()
    try:
        with pytest.raises(GlyphsError, match=r"glyphs\.npz' is missing from the omlcore installation"):
            load_glyphs()
    finally:
        load_glyphs.cache_clear()
