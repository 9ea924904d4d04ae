"""``omlcore predict CONFIG``: embeddings of a CSV or an image folder, and every item's nearest neighbours.

``predict.data`` is an OML-format CSV (``predict.split`` keeps one split) or a folder of images (searched
recursively); default: the config's dataset. The run folder gets ``embeddings.npy`` (float32, one row per item),
``items.csv`` (the item of each row), ``neighbours.json`` and ``neighbours.csv`` (the ``predict.top_k`` nearest
other items of each item, with distances; re-ranked by the config's ``postprocessor`` if it has one),
``config.yaml`` and ``log.txt``. The neighbours are found as the
validation finds them: with the configured metric's kNN backend and distance (``metric.args.knn_backend``, e.g.
``faiss.flat`` from the omlcore-faiss plugin, and ``metric.args.metric``, ``l2`` or ``cosine``).

In an image folder, every file is decoded before anything is embedded: the unreadable ones (corrupt, not an image)
are listed by path and reason in the log and in ``unreadable.csv``, and the others are embedded; the run fails only
when no file is readable, or at the first unreadable one with ``predict.strict: true``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from omlcore.config import Config, ConfigError, build_component
from omlcore.datasets import ImageBaseDataset
from omlcore.datasets.pixels import to_rgb
from omlcore.errors import DataValidationError
from omlcore.keys import IMAGES, INDEX, PATHS
from omlcore.pipelines.common import (
    ConfigSource,
    RunFolder,
    build_configured_postprocessor,
    dataset_csv,
    load_extractor,
    prepare,
    seed_everything,
    write_atomically,
)
from omlcore.postprocessing import RetrievalContext, check_postprocessed
from omlcore.protocols import KNNBackend, Postprocessor
from omlcore.retrieval import DistanceMetric, QueryGallerySplit, RetrievalResults

__all__ = ["IMAGE_SUFFIXES", "ImageFolderDataset", "PredictResult", "predict"]

#: The files an image folder contributes.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


#: How many unreadable files the log names one by one (``unreadable.csv`` lists them all).
_LISTED = 20


class ImageFolderDataset(Dataset[dict[str, Any]]):
    """The readable images under ``folder`` (recursively, sorted by path) as items with ``images``, ``idx`` and
    ``paths``, converted to RGB as the CSV datasets convert them (:func:`~omlcore.datasets.pixels.to_rgb`).

    Every file with an image suffix is decoded once up front; those Pillow cannot read are left out and listed in
    :attr:`unreadable` (``(path, reason)``), so one bad file never stops the others from being embedded.
    """

    def __init__(self, folder: Path, transform: Callable[[Image.Image], Any]) -> None:
        candidates = [p for p in sorted(folder.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
        self.paths: list[str] = []
        self.unreadable: list[tuple[str, str]] = []
        for path in candidates:
            reason = _unreadable_reason(path)
            if reason is None:
                self.paths.append(str(path))
            else:
                self.unreadable.append((str(path), reason))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        with Image.open(self.paths[idx]) as image:
            return {IMAGES: self.transform(to_rgb(image)), INDEX: idx, PATHS: self.paths[idx]}


def _unreadable_reason(path: Path) -> str | None:
    """Why Pillow cannot decode the file at ``path``, or None when it can."""
    try:
        with Image.open(path) as image:
            image.load()
    except Exception as error:  # Pillow raises many types for broken files (OSError, SyntaxError, ValueError ...)
        return f"{type(error).__name__}: {error}"
    return None


@dataclass
class PredictResult:
    """What :func:`predict` returns: the run folder, the embeddings ``(N, D)``, each item's path, and the files of an
    image folder that could not be read (``(path, reason)``)."""

    run_dir: Path
    embeddings: np.ndarray
    paths: list[str]
    unreadable: list[tuple[str, str]]


def predict(config: ConfigSource, overrides: Sequence[str] = ()) -> PredictResult:
    """Run the prediction pipeline of ``config`` (a YAML file, a shipped config name, a mapping or a Config).

    Raises:
        DataValidationError: no file of an image folder is readable, or one is not with ``predict.strict``.
    """
    config, runner = prepare(config, overrides, "predict")
    source = str(config.source) if config.source else None
    data = Path(config["predict.data"]) if config["predict.data"] is not None else None
    if data is not None and not data.exists():
        raise ConfigError("predict.data", f"no such CSV file or image folder: '{data}'", source)
    seed_everything(config["seed"])
    transform = build_component("transform", config["transforms_val"], "transforms_val", source=source)
    dataset: ImageFolderDataset | ImageBaseDataset
    unreadable: list[tuple[str, str]] = []
    if data is not None and data.is_dir():
        dataset = _image_folder(data, transform, config)
        unreadable = dataset.unreadable
        labels = None
    else:
        csv_path, root = (data, None) if data is not None else dataset_csv(config)
        dataset = ImageBaseDataset(
            csv_path, root, transform, split=config["predict.split"], check_images=config["dataset.check_images"]
        )
        labels = dataset.get_labels()
    model = load_extractor(config, runner)
    search = _search_settings(build_component("metric", config["metric"], "metric", source=source))
    postprocessor = build_configured_postprocessor(config)
    run = RunFolder.create(config, "predict", runner)  # after every check: a failed run leaves no folder
    run.log(f"omlcore predict: {config.source or config.name} -> {run.path}")
    if unreadable:
        run.write_csv("unreadable.csv", ["path", "reason"], unreadable)
        listed = "\n".join(f"  {path}: {reason}" for path, reason in unreadable[:_LISTED])
        more = f"\n  ... and {len(unreadable) - _LISTED} more" if len(unreadable) > _LISTED else ""
        run.log(f"{len(unreadable)} unreadable file(s) left out (unreadable.csv):\n{listed}{more}")
    embeddings = runner.inference(model, dataset, config["dataset.batch_size"], config["dataset.num_workers"])
    paths = list(dataset.paths)
    array = embeddings.float().numpy()
    top_k = config["predict.top_k"]
    if run.primary:  # the other processes of a distributed run only took part in the inference
        write_atomically(run.path / "embeddings.npy", lambda temporary: _save_npy(temporary, array))
        header = ["index", "path", *(["label"] if labels is not None else [])]
        rows = ([i, path, *([int(labels[i])] if labels is not None else [])] for i, path in enumerate(paths))
        run.write_csv("items.csv", header, rows)
        neighbours = _neighbours(embeddings, paths, top_k, *search, postprocessor, dataset) if len(paths) > 1 else []
        run.write_json("neighbours.json", neighbours)
        run.write_csv(
            "neighbours.csv",
            ["index", "path", "rank", "neighbour_index", "neighbour_path", "distance"],
            (
                [item["index"], item["path"], rank, other["index"], other["path"], other["distance"]]
                for item in neighbours
                for rank, other in enumerate(item["neighbours"], 1)
            ),
        )
    run.log(f"{len(paths)} embeddings of size {array.shape[1]}: embeddings.npy, items.csv")
    run.log(f"the {top_k} nearest neighbours of each item: neighbours.json, neighbours.csv")
    run.log(f"\nrun folder: {run.path}")
    return PredictResult(run.path, array, paths, unreadable)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with path.open("wb") as file:
        np.save(file, array)


def _image_folder(folder: Path, transform: Callable[[Image.Image], Any], config: Config) -> ImageFolderDataset:
    """The readable images of ``folder``; an error when there are none, or any unreadable one with strict."""
    dataset = ImageFolderDataset(folder, transform)
    source = str(config.source) if config.source else None
    if not dataset.paths and not dataset.unreadable:
        raise ConfigError(
            "predict.data", f"the folder '{folder}' holds no images ({', '.join(IMAGE_SUFFIXES)})", source
        )
    bad = "; ".join(f"{path}: {reason}" for path, reason in dataset.unreadable[:_LISTED])
    if not dataset.paths:
        raise DataValidationError(f"no image in '{folder}' could be read ({bad}). Fix or replace the files.")
    if dataset.unreadable and config["predict.strict"]:
        raise DataValidationError(
            f"{len(dataset.unreadable)} file(s) in '{folder}' cannot be read ({bad}). Fix or remove them, or set "
            "predict.strict=false to embed the readable ones and list the others in unreadable.csv."
        )
    return dataset


def _search_settings(metric: Any) -> tuple[DistanceMetric, KNNBackend | None]:
    """The distance and kNN backend of the configured metric (``l2`` and the exact engine if it has none)."""
    distance: DistanceMetric = getattr(metric, "metric", "l2")
    backend = getattr(metric, "knn_backend", None)
    return distance, backend if isinstance(backend, KNNBackend) else None


def _neighbours(
    embeddings: Any,
    paths: list[str],
    top_k: int,
    distance: DistanceMetric,
    backend: KNNBackend | None,
    postprocessor: Postprocessor | None = None,
    dataset: Any = None,
) -> list[dict[str, Any]]:
    """Each item's ``top_k`` nearest other items (re-ranked by ``postprocessor``), as JSON-ready records."""
    split = QueryGallerySplit.from_items(embeddings)
    results = RetrievalResults.from_split(split, top_k=min(top_k, len(paths) - 1), metric=distance, backend=backend)
    if postprocessor is not None:
        context = RetrievalContext(split, distance, backend, dataset=dataset)
        results = check_postprocessed(results, postprocessor.process(results, context), type(postprocessor).__name__)
    records = []
    for query, (ids, distances) in enumerate(
        zip(results.retrieved_ids.tolist(), results.distances.tolist(), strict=True)
    ):
        found = [
            {"index": int(i), "path": paths[i], "distance": float(d)}
            for i, d in zip(ids, distances, strict=True)
            if i >= 0
        ]
        records.append({"index": query, "path": paths[query], "neighbours": found})
    return records
