"""``omlcore predict CONFIG``: embeddings of a CSV or an image folder, and every item's nearest neighbours.

``predict.data`` is an OML-format CSV (``predict.split`` keeps one split), a folder of images (searched
recursively) or one image; default: the config's dataset. The run folder gets ``embeddings.npy`` (float32, one row
per item), ``items.csv`` (the item of each row), ``neighbours.json`` and ``neighbours.csv`` (the ``predict.top_k``
nearest other items of each item, with distances; re-ranked by the config's ``postprocessor`` if it has one),
``config.yaml`` and ``log.txt``. The neighbours are found as the validation finds them: with the configured metric's
kNN backend and distance (``metric.args.knn_backend``, e.g. ``faiss.flat`` from the omlcore-faiss plugin, and
``metric.args.metric``, ``l2`` or ``cosine``). Inputs and outputs are those of ``omlcore search``
(:mod:`omlcore.pipelines.items`).

In an image folder, every file is decoded before anything is embedded: the unreadable ones (corrupt, not an image)
are listed by path and reason in the log and in ``unreadable.csv``, and the others are embedded; the run fails only
when no file is readable, or at the first unreadable one with ``predict.strict: true``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from omlcore.config import build_component
from omlcore.pipelines.common import (
    ConfigSource,
    RunFolder,
    build_configured_postprocessor,
    load_extractor,
    prepare,
    seed_everything,
    write_atomically,
)
from omlcore.pipelines.items import (
    IMAGE_SUFFIXES,
    ImageFolderDataset,
    load_inputs,
    log_unreadable,
    neighbour_records,
    write_neighbours,
)
from omlcore.postprocessing import RetrievalContext, check_postprocessed
from omlcore.protocols import KNNBackend, Postprocessor
from omlcore.retrieval import DistanceMetric, QueryGallerySplit, RetrievalResults

__all__ = ["IMAGE_SUFFIXES", "ImageFolderDataset", "PredictResult", "predict"]


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
    seed_everything(config["seed"])
    transform = build_component("transform", config["transforms_val"], "transforms_val", source=source)
    inputs = load_inputs(config, "predict.data", transform)
    dataset, paths, labels, unreadable = inputs.dataset, inputs.paths, inputs.labels, inputs.unreadable
    model = load_extractor(config, runner)
    search = _search_settings(build_component("metric", config["metric"], "metric", source=source))
    postprocessor = build_configured_postprocessor(config)
    run = RunFolder.create(config, "predict", runner)  # after every check: a failed run leaves no folder
    run.log(f"omlcore predict: {config.source or config.name} -> {run.path}")
    log_unreadable(unreadable, run)
    embeddings = runner.inference(model, dataset, config["dataset.batch_size"], config["dataset.num_workers"])
    array = embeddings.float().numpy()
    top_k = config["predict.top_k"]
    if run.primary:  # the other processes of a distributed run only took part in the inference
        write_atomically(run.path / "embeddings.npy", lambda temporary: _save_npy(temporary, array))
        header = ["index", "path", *(["label"] if labels is not None else [])]
        rows = ([i, path, *([int(labels[i])] if labels is not None else [])] for i, path in enumerate(paths))
        run.write_csv("items.csv", header, rows)
        neighbours = _neighbours(embeddings, paths, top_k, *search, postprocessor, dataset) if len(paths) > 1 else []
        write_neighbours(run, neighbours, {"index": "neighbour_index", "path": "neighbour_path"})
    run.log(f"{len(paths)} embeddings of size {array.shape[1]}: embeddings.npy, items.csv")
    run.log(f"the {top_k} nearest neighbours of each item: neighbours.json, neighbours.csv")
    run.log(f"\nrun folder: {run.path}")
    return PredictResult(run.path, array, paths, unreadable)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with path.open("wb") as file:
        np.save(file, array)


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
    items = [{"index": i, "path": path} for i, path in enumerate(paths)]
    return neighbour_records(results, items, items.__getitem__)
