"""What ``omlcore predict``, ``index`` and ``search`` embed, and the neighbours they write.

Inputs are an OML-format CSV (a split of it), a folder of images (searched recursively) or one image file. Image
files are decoded before anything is embedded: the unreadable ones are left out and named (``unreadable.csv`` and the
log), unless the section's ``strict`` key asks to stop at them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from omlcore.config import Config, ConfigError
from omlcore.datasets import ImageBaseDataset
from omlcore.datasets.pixels import to_rgb
from omlcore.errors import DataValidationError
from omlcore.keys import IMAGES, INDEX, PATHS
from omlcore.pipelines.common import RunFolder, dataset_csv
from omlcore.retrieval import RetrievalResults

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageFolderDataset",
    "Inputs",
    "PathsDataset",
    "load_inputs",
    "log_unreadable",
    "neighbour_records",
    "unreadable_reason",
    "write_neighbours",
]

#: The files an image folder contributes.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
#: How many unreadable files the log names one by one (``unreadable.csv`` lists them all).
_LISTED = 20
_log = logging.getLogger("omlcore.pipelines")


class PathsDataset(Dataset[dict[str, Any]]):
    """Items ``images``, ``idx``, ``paths`` read from ``paths`` when asked for (nothing is decoded up front)."""

    def __init__(self, paths: Sequence[str], transform: Callable[[Image.Image], Any]) -> None:
        self.paths, self.transform = list(paths), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        return {IMAGES: self.transform(self.read_image(idx)), INDEX: idx, PATHS: self.paths[idx]}

    def read_image(self, idx: int) -> Image.Image:
        with Image.open(self.paths[idx]) as image:
            return to_rgb(image)


class ImageFolderDataset(PathsDataset):
    """The readable images under ``folder`` (recursively, sorted by path), or the image file ``folder`` itself, as
    items with ``images``, ``idx`` and ``paths``, converted to RGB as the CSV datasets convert them
    (:func:`~omlcore.datasets.pixels.to_rgb`).

    Every file with an image suffix is decoded once up front; those Pillow cannot read are left out and listed in
    :attr:`unreadable` (``(path, reason)``), so one bad file never stops the others from being embedded.
    """

    def __init__(self, folder: Path, transform: Callable[[Image.Image], Any]) -> None:
        if folder.is_file():
            candidates = [folder]
        else:
            candidates = [p for p in sorted(folder.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
        reasons = {str(path): unreadable_reason(path) for path in candidates}
        super().__init__([path for path, reason in reasons.items() if reason is None], transform)
        self.unreadable: list[tuple[str, str]] = [
            (path, reason) for path, reason in reasons.items() if reason is not None
        ]


def unreadable_reason(path: str | Path) -> str | None:
    """Why Pillow cannot decode the file at ``path``, or None when it can."""
    try:
        with Image.open(path) as image:
            image.load()
    except Exception as error:  # Pillow raises many types for broken files (OSError, SyntaxError, ValueError ...)
        return f"{type(error).__name__}: {error}"
    return None


class _Rows(Dataset[dict[str, Any]]):
    """The items ``rows`` of ``dataset``, renumbered ``0 .. len(rows) - 1``."""

    def __init__(self, dataset: ImageBaseDataset, rows: Sequence[int]) -> None:
        self.dataset, self.rows = dataset, list(rows)
        self.paths = [dataset.paths[row] for row in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        return {**self.dataset[self.rows[idx]], INDEX: idx}

    def read_image(self, idx: int) -> Image.Image:
        return self.dataset.read_image(self.rows[idx])


@dataclass
class Inputs:
    """Items to embed: the dataset (items with ``images``, ``idx``, ``paths``), their labels where known (a CSV), and
    the files left out because they cannot be decoded (``(path, reason)``)."""

    dataset: Dataset[dict[str, Any]]
    paths: list[str]
    labels: np.ndarray | None = None
    unreadable: list[tuple[str, str]] = field(default_factory=list)


def load_inputs(config: Config, key: str, transform: Callable[[Image.Image], Any], decode_csv: bool = False) -> Inputs:
    """The items named by config key ``key`` (``predict.data``, ``index.data``, ``search.queries``): a CSV (the rows of
    ``<section>.split``), an image folder or an image file; None: the config's dataset.

    ``decode_csv`` decodes every image of a CSV first and leaves out the unreadable rows as a folder's files are.

    Raises:
        ConfigError: no such file or folder, a folder without images.
        DataValidationError: no image could be read, or one could not with ``<section>.strict``.
    """
    section = key.split(".")[0]
    source = str(config.source) if config.source else None
    data = Path(config[key]) if config[key] is not None else None
    if data is not None and not data.exists():
        raise ConfigError(key, f"no such CSV file or image folder, nor an image: '{data}'", source)
    if data is not None and (data.is_dir() or data.suffix.lower() in IMAGE_SUFFIXES):
        images = ImageFolderDataset(data, transform)
        if not images.paths and not images.unreadable:
            raise ConfigError(key, f"the folder '{data}' holds no images ({', '.join(IMAGE_SUFFIXES)})", source)
        _check_readable(config, section, data, images.paths, images.unreadable)
        return Inputs(images, list(images.paths), None, images.unreadable)
    csv_path, root = (data, None) if data is not None else dataset_csv(config)
    table = ImageBaseDataset(
        csv_path, root, transform, split=config[f"{section}.split"], check_images=config["dataset.check_images"]
    )
    if not decode_csv:
        return Inputs(table, list(table.paths), table.get_labels())
    reasons = [unreadable_reason(path) for path in table.paths]
    readable = [row for row, reason in enumerate(reasons) if reason is None]
    unreadable = [(path, reason) for path, reason in zip(table.paths, reasons, strict=True) if reason is not None]
    _check_readable(config, section, csv_path, readable, unreadable)
    if not unreadable:
        return Inputs(table, list(table.paths), table.get_labels())
    rows = _Rows(table, readable)
    return Inputs(rows, rows.paths, table.get_labels()[readable], unreadable)


def _check_readable(
    config: Config, section: str, where: Path, readable: Sequence[Any], unreadable: list[tuple[str, str]]
) -> None:
    bad = "; ".join(f"{path}: {reason}" for path, reason in unreadable[:_LISTED])
    if not readable:
        raise DataValidationError(f"no image in '{where}' could be read ({bad}). Fix or replace the files.")
    if unreadable and config[f"{section}.strict"]:
        raise DataValidationError(
            f"{len(unreadable)} file(s) in '{where}' cannot be read ({bad}). Fix or remove them, or set "
            f"{section}.strict=false to embed the readable ones and list the others in unreadable.csv."
        )


def log_unreadable(unreadable: list[tuple[str, str]], run: RunFolder | None = None) -> None:
    """Name the files left out in the log (the first few) and in the run's ``unreadable.csv`` (all of them)."""
    if not unreadable:
        return
    listed = "\n".join(f"  {path}: {reason}" for path, reason in unreadable[:_LISTED])
    more = f"\n  ... and {len(unreadable) - _LISTED} more" if len(unreadable) > _LISTED else ""
    message = f"{len(unreadable)} unreadable file(s) left out{' (unreadable.csv)' if run else ''}:\n{listed}{more}"
    if run is None:
        _log.warning(message)
        return
    run.write_csv("unreadable.csv", ["path", "reason"], unreadable)
    run.log(message)


def neighbour_records(
    results: RetrievalResults, queries: Sequence[Mapping[str, Any]], item: Callable[[int], Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """One JSON-ready record per query: its fields (``queries[q]``) and ``neighbours``, each the fields of the gallery
    position retrieved (``item(position)``) and its ``distance``."""
    records = []
    for query, (positions, distances) in enumerate(
        zip(results.retrieved_ids.tolist(), results.distances.tolist(), strict=True)
    ):
        found = [
            {**item(position), "distance": float(distance)}
            for position, distance in zip(positions, distances, strict=True)
            if position >= 0
        ]
        records.append({**queries[query], "neighbours": found})
    return records


def write_neighbours(run: RunFolder, records: Sequence[Mapping[str, Any]], rename: Mapping[str, str]) -> None:
    """``neighbours.json`` (the records) and ``neighbours.csv``: one row per neighbour with its query's fields,
    ``rank`` (from 1) and its own fields (renamed by ``rename``, e.g. ``index`` -> ``neighbour_index``)."""
    run.write_json("neighbours.json", list(records))
    rows = [
        {
            **{name: value for name, value in record.items() if name != "neighbours"},
            "rank": rank,
            **{rename.get(name, name): value for name, value in neighbour.items()},
        }
        for record in records
        for rank, neighbour in enumerate(record["neighbours"], 1)
    ]
    columns = list(dict.fromkeys(name for row in rows for name in row))
    run.write_csv("neighbours.csv", columns, ([row.get(name, "") for name in columns] for row in rows))
