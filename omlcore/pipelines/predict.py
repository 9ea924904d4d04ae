"""``omlcore predict CONFIG``: embeddings of a CSV or an image folder, and every item's nearest neighbours.

``predict.data`` is an OML-format CSV (``predict.split`` keeps one split) or a folder of images (searched
recursively); default: the config's dataset. The run folder gets ``embeddings.npy`` (float32, one row per item),
``items.csv`` (the item of each row), ``neighbours.json`` and ``neighbours.csv`` (the ``predict.top_k`` nearest
other items of each item, with distances), ``config.yaml`` and ``log.txt``. The neighbours are found as the
validation finds them: with the configured metric's kNN backend and distance (``metric.args.knn_backend``, e.g.
``faiss.flat`` from the omlcore-faiss plugin, and ``metric.args.metric``, ``l2`` or ``cosine``).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from omlcore.config import ConfigError, build_component
from omlcore.datasets import ImageBaseDataset
from omlcore.keys import IMAGES, INDEX, PATHS
from omlcore.pipelines.common import ConfigSource, RunFolder, dataset_csv, load_extractor, prepare, seed_everything
from omlcore.protocols import KNNBackend
from omlcore.retrieval import DistanceMetric, RetrievalResults

__all__ = ["IMAGE_SUFFIXES", "ImageFolderDataset", "PredictResult", "predict"]

#: The files an image folder contributes.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class ImageFolderDataset(Dataset[dict[str, Any]]):
    """The images under ``folder`` (recursively, sorted by path) as items with ``images``, ``idx`` and ``paths``."""

    def __init__(self, folder: Path, transform: Callable[[Image.Image], Any]) -> None:
        self.paths = [str(p) for p in sorted(folder.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        with Image.open(self.paths[idx]) as image:
            return {IMAGES: self.transform(image.convert("RGB")), INDEX: idx, PATHS: self.paths[idx]}


@dataclass
class PredictResult:
    """What :func:`predict` returns: the run folder, the embeddings ``(N, D)`` and each item's path."""

    run_dir: Path
    embeddings: np.ndarray
    paths: list[str]


def predict(config: ConfigSource, overrides: Sequence[str] = ()) -> PredictResult:
    """Run the prediction pipeline of ``config`` (a YAML file, a shipped config name, a mapping or a Config)."""
    config, runner = prepare(config, overrides, "predict")
    source = str(config.source) if config.source else None
    data = Path(config["predict.data"]) if config["predict.data"] is not None else None
    if data is not None and not data.exists():
        raise ConfigError("predict.data", f"no such CSV file or image folder: '{data}'", source)
    run = RunFolder.create(config, "predict", runner)
    run.log(f"omlcore predict: {config.source or config.name} -> {run.path}")
    seed_everything(config["seed"])
    transform = build_component("transform", config["transforms_val"], "transforms_val", source=source)
    dataset: ImageFolderDataset | ImageBaseDataset
    if data is not None and data.is_dir():
        dataset = ImageFolderDataset(data, transform)
        if len(dataset) == 0:
            raise ConfigError("predict.data", f"the folder '{data}' holds no images ({', '.join(IMAGE_SUFFIXES)})")
        labels = None
    else:
        csv_path, root = (data, None) if data is not None else dataset_csv(config)
        dataset = ImageBaseDataset(
            csv_path, root, transform, split=config["predict.split"], check_images=config["dataset.check_images"]
        )
        labels = dataset.get_labels()
    model = load_extractor(config, runner)
    search = _search_settings(build_component("metric", config["metric"], "metric", source=source))
    embeddings = runner.inference(model, dataset, config["dataset.batch_size"], config["dataset.num_workers"])
    paths = list(dataset.paths)
    array = embeddings.float().numpy()
    top_k = config["predict.top_k"]
    if run.primary:  # the other processes of a distributed run only took part in the inference
        np.save(run.path / "embeddings.npy", array)
        _write_items(run.path / "items.csv", paths, labels)
        neighbours = _neighbours(embeddings, paths, top_k, *search) if len(paths) > 1 else []
        run.write_json("neighbours.json", neighbours)
        _write_neighbours(run.path / "neighbours.csv", neighbours)
    run.log(f"{len(paths)} embeddings of size {array.shape[1]}: embeddings.npy, items.csv")
    run.log(f"the {top_k} nearest neighbours of each item: neighbours.json, neighbours.csv")
    run.log(f"\nrun folder: {run.path}")
    return PredictResult(run.path, array, paths)


def _write_items(path: Path, paths: list[str], labels: np.ndarray | None) -> None:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["index", "path", *(["label"] if labels is not None else [])])
        for index, item in enumerate(paths):
            writer.writerow([index, item, *([int(labels[index])] if labels is not None else [])])


def _write_neighbours(path: Path, neighbours: list[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["index", "path", "rank", "neighbour_index", "neighbour_path", "distance"])
        for item in neighbours:
            for rank, other in enumerate(item["neighbours"], 1):
                writer.writerow([item["index"], item["path"], rank, other["index"], other["path"], other["distance"]])


def _search_settings(metric: Any) -> tuple[DistanceMetric, KNNBackend | None]:
    """The distance and kNN backend of the configured metric (``l2`` and the exact engine if it has none)."""
    distance: DistanceMetric = getattr(metric, "metric", "l2")
    backend = getattr(metric, "knn_backend", None)
    return distance, backend if isinstance(backend, KNNBackend) else None


def _neighbours(
    embeddings: Any, paths: list[str], top_k: int, distance: DistanceMetric, backend: KNNBackend | None
) -> list[dict[str, Any]]:
    """Each item's ``top_k`` nearest other items, as JSON-ready records."""
    results = RetrievalResults.from_embeddings(
        embeddings, top_k=min(top_k, len(paths) - 1), metric=distance, backend=backend
    )
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
