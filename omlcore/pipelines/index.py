"""``omlcore index build | add`` and ``omlcore search``: a persisted index of embedded items, searched many times.

``index build CONFIG out=<folder> [data=<csv, folder or image>] [checkpoint=...]`` embeds the items (default: the
config's dataset) with the config's extractor and writes an :class:`~omlcore.index.Index` folder atomically: an
interrupted build leaves no folder. The manifest records the model (extractor name and the SHA-256 of its weights),
the resolved config, the distance (``metric.args.metric``) and the kNN backend (``metric.args.knn_backend``; a
persistable one, such as ``faiss.ivf``, is built once and saved with the index).

``index add <folder> data=...`` embeds more items into the index (under its lock), and ``search <folder>
queries=<csv, folder or image> k=10`` writes each query's nearest items into a run folder: ``neighbours.json`` /
``neighbours.csv`` (with the items' ids, paths, labels, distances), ``retrieval/`` grids and, when queries and index
both have labels, ``metrics.json`` and the worst queries' grids. Both use the config saved in the index (or
``config=``) with the overrides given, and refuse a model whose weights differ from the index's. Short keys:
``data=`` (``index.data``), ``out=`` (``index.out``), ``queries=`` (``search.queries``), ``k=`` (``search.k``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from torch import Tensor, nn

from omlcore.config import Config, ConfigError, build_component, load_config
from omlcore.config.schema import Pipeline
from omlcore.index import Index, IndexFormatError
from omlcore.metrics.functional import cmc_at_k, map_at_k, precision_at_k, reduce_mean, worst_queries
from omlcore.pipelines.common import (
    ConfigSource,
    RunFolder,
    build_configured_postprocessor,
    build_runner,
    load_extractor,
    prepare,
    seed_everything,
    weights_sha256,
)
from omlcore.pipelines.items import (
    Inputs,
    PathsDataset,
    load_inputs,
    log_unreadable,
    neighbour_records,
    write_neighbours,
)
from omlcore.protocols import Runner
from omlcore.retrieval import RetrievalResults
from omlcore.utils.optional import is_available
from omlcore.visualization import save_retrieval_html, save_retrieval_png, save_worst_queries

__all__ = ["SHORT_KEYS", "IndexResult", "SearchResult", "add_to_index", "build_index", "search"]

#: ``key=value`` shorthands of the index and search commands.
SHORT_KEYS = {"data": "index.data", "out": "index.out", "queries": "search.queries", "k": "search.k"}
_log = logging.getLogger("omlcore.pipelines")


@dataclass
class IndexResult:
    """What :func:`build_index` / :func:`add_to_index` return: the index folder, the items it holds now, the items
    embedded this time, and the image files left out as unreadable (``(path, reason)``)."""

    folder: Path
    count: int
    added: int
    unreadable: list[tuple[str, str]]


@dataclass
class SearchResult:
    """What :func:`search` returns: the run folder, the results (``retrieved_ids`` are index positions,
    ``gallery_ids`` the item ids), the flat metrics (when queries and index have labels) and the unreadable queries."""

    run_dir: Path
    results: RetrievalResults
    metrics: dict[str, float]
    unreadable: list[tuple[str, str]]


def build_index(config: ConfigSource, overrides: Sequence[str] = ()) -> IndexResult:
    """Embed ``index.data`` (default: the dataset) and write the index folder ``index.out`` (see the module doc).

    Raises:
        ConfigError: no ``out=``, or it exists without ``index.overwrite=true`` (before anything is embedded).
    """
    config, runner = prepare(config, expand_short_keys(overrides), "index")
    source = _source(config)
    out = config["index.out"]
    if out is None:
        raise ConfigError("index.out", "is required to build an index: add out=<folder>", source)
    if Path(out).exists() and not config["index.overwrite"]:
        raise ConfigError("index.out", f"'{out}' exists; choose another folder, or set index.overwrite=true", source)
    inputs, model = _inputs_and_model(config, runner, "index.data")
    metric = build_component("metric", config["metric"], "metric", source=source)
    backend = (config["metric"]["args"] or {}).get("knn_backend")
    _log.info(f"omlcore index build: {len(inputs.paths)} items of '{config['index.data'] or 'the dataset'}' -> {out}")
    log_unreadable(inputs.unreadable)
    embeddings = _embed(config, runner, model, inputs)
    if runner.is_primary():  # the other processes of a distributed run only took part in the inference
        index = Index.build(
            embeddings,
            labels=inputs.labels,
            paths=inputs.paths,
            metric=getattr(metric, "metric", "l2"),
            dtype=config["index.dtype"],
            model=_identity(config, model),
            config=_portable(config),
            backend=backend,
        )
        index.save(out, overwrite=config["index.overwrite"])
    _log.info(f"{len(inputs.paths)} items of dim {embeddings.shape[1]} indexed: {out}")
    return IndexResult(Path(out), len(inputs.paths), len(inputs.paths), inputs.unreadable)


def add_to_index(
    folder: str | os.PathLike[str], overrides: Sequence[str] = (), config: ConfigSource | None = None
) -> IndexResult:
    """Embed ``index.data`` with the index's model and add the items to the index in ``folder``.

    ``config``: the config that embeds (default: the one saved in the index); ``overrides`` apply to it.

    Raises:
        IndexFormatError: a damaged index, or a model whose weights differ from the index's.
    """
    index = Index.load(folder)
    config, runner = _index_config(index, config, overrides, "index")
    if config["index.data"] is None:
        raise ConfigError(
            "index.data", "is required to add to an index: add data=<csv, folder or image>", _source(config)
        )
    inputs, model = _inputs_and_model(config, runner, "index.data")
    _check_fits(index, config, model)
    _log.info(f"omlcore index add: {len(inputs.paths)} items of '{config['index.data']}' -> {folder}")
    log_unreadable(inputs.unreadable)
    embeddings = _embed(config, runner, model, inputs)
    if runner.is_primary():
        columns = set(index.items.columns)
        index.add(
            embeddings,
            labels=inputs.labels if "label" in columns else None,
            paths=inputs.paths if "path" in columns else None,
        )
    _log.info(f"{len(inputs.paths)} items added: the index holds {len(index)}")
    return IndexResult(Path(folder), len(index), len(inputs.paths), inputs.unreadable)


def search(
    folder: str | os.PathLike[str], overrides: Sequence[str] = (), config: ConfigSource | None = None
) -> SearchResult:
    """Embed ``search.queries`` with the index's model and write their ``search.k`` nearest items (module doc).

    Raises:
        IndexFormatError: a damaged index, a model whose weights differ from the index's.
        DataValidationError: no query image can be read, or one cannot with ``search.strict``.
    """
    index = Index.load(folder)
    config, runner = _index_config(index, config, overrides, "search")
    source = _source(config)
    if config["search.queries"] is None:
        raise ConfigError("search.queries", "is required to search: add queries=<csv, folder or image>", source)
    inputs, model = _inputs_and_model(config, runner, "search.queries", decode_csv=True)
    _check_fits(index, config, model)
    postprocessor = build_configured_postprocessor(config)
    transform = build_component("transform", config["transforms_val"], "transforms_val", source=source)
    items = index.items
    gallery = PathsDataset(items["path"].tolist(), transform) if "path" in items else None
    run = RunFolder.create(config, "search", runner)  # after every check: a failed search leaves no folder
    run.log(f"omlcore search: {len(inputs.paths)} queries of '{config['search.queries']}' in {folder} -> {run.path}")
    log_unreadable(inputs.unreadable, run)
    embeddings = _embed(config, runner, model, inputs)
    results = index.search(
        embeddings,
        k=config["search.k"],
        query_labels=inputs.labels if "label" in items else None,
        postprocessor=postprocessor,
        dataset=inputs.dataset,
        gallery_dataset=gallery,
    )
    metrics = _metrics(results, config["search.k"]) if results.query_labels is not None else {}
    if run.primary:
        queries = [_query_fields(position, inputs) for position in range(len(inputs.paths))]
        columns = [name for name in ("id", "path", "label", "text") if name in items]
        table = {name: items[name].to_numpy() for name in columns}
        records = neighbour_records(results, queries, lambda row: {name: _plain(table[name][row]) for name in columns})
        write_neighbours(run, records, {})
        if metrics:
            run.write_json("metrics.json", metrics)
        if gallery is not None:
            _grids(config, run, results, inputs, gallery, pd.Index(items["id"]))
    if metrics:
        run.log("\n".join(f"{name}: {value:.4f}" for name, value in metrics.items()))
    run.log(f"the {config['search.k']} nearest items of each query: neighbours.json, neighbours.csv")
    run.log(f"\nrun folder: {run.path}")
    return SearchResult(run.path, results, metrics, inputs.unreadable)


def expand_short_keys(overrides: Sequence[str]) -> list[str]:
    """``data=x`` -> ``index.data=x`` and so on (:data:`SHORT_KEYS`); other overrides are kept as they are."""
    expanded = []
    for text in overrides:
        key, sep, value = text.partition("=")
        expanded.append(f"{SHORT_KEYS[key.strip()]}={value}" if sep and key.strip() in SHORT_KEYS else text)
    return expanded


def _source(config: Config) -> str | None:
    return str(config.source) if config.source is not None else None


def _index_config(
    index: Index, config: ConfigSource | None, overrides: Sequence[str], pipeline: Pipeline
) -> tuple[Config, Runner]:
    """The config that embeds for ``index``: ``config``, else the one saved in it; named after the index folder."""
    assert index.folder is not None
    if config is None:
        if index.config is None:
            raise ConfigError(
                "",
                f"the index '{index.folder}' holds no config (built in Python): pass the config that embeds its items",
            )
        config = {**index.config, "index": {**index.config["index"], "data": None}}  # not the build's items again
    source = config.data if isinstance(config, Config) else config
    loaded = load_config(source, expand_short_keys(overrides), pipeline=pipeline)
    loaded.name = index.folder.name
    return loaded, build_runner(loaded)


def _inputs_and_model(config: Config, runner: Runner, key: str, decode_csv: bool = False) -> tuple[Inputs, nn.Module]:
    seed_everything(config["seed"])
    transform = build_component("transform", config["transforms_val"], "transforms_val", source=_source(config))
    return load_inputs(config, key, transform, decode_csv), load_extractor(config, runner)


def _check_fits(index: Index, config: Config, model: nn.Module) -> None:
    """The config measures the index's distance, and its model is the index's (name and weights)."""
    distance = getattr(build_component("metric", config["metric"], "metric", source=_source(config)), "metric", "l2")
    if distance != index.metric:
        raise IndexFormatError(
            f"the index '{index.folder}' measures {index.metric!r} distances, the config {distance!r} "
            f"(metric.args.metric): use {index.metric!r}, or build another index"
        )
    index.check_model(config["extractor.name"], weights_sha256(model))


def _embed(config: Config, runner: Runner, model: nn.Module, inputs: Inputs) -> Tensor:
    """The items' embeddings (a progress bar as the runner shows it)."""
    embeddings = runner.inference(model, inputs.dataset, config["dataset.batch_size"], config["dataset.num_workers"])
    return embeddings.float()


def _identity(config: Config, model: nn.Module) -> dict[str, Any]:
    """What the manifest keeps of the model: ``name`` and ``weights_sha256`` (checked by ``Index.check_model``)."""
    return {
        "name": config["extractor.name"],
        "weights_sha256": weights_sha256(model),
        "extractor": config["extractor"],
        "checkpoint": config["checkpoint"],
    }


def _portable(config: Config) -> dict[str, Any]:
    """The resolved config, its checkpoint path absolute (the index is searched from other folders)."""
    data = dict(config.data)
    if data["checkpoint"] is not None:
        data["checkpoint"] = str(Path(data["checkpoint"]).resolve())
    return data


def _query_fields(position: int, inputs: Inputs) -> dict[str, Any]:
    fields: dict[str, Any] = {"query": position, "query_path": inputs.paths[position]}
    if inputs.labels is not None:
        fields["query_label"] = int(inputs.labels[position])
    return fields


class _SearchMetrics:
    """Per-query metrics of search results, in the shape :func:`~omlcore.visualization.save_worst_queries` reads."""

    def __init__(self, results: RetrievalResults, k: int) -> None:
        relevant, retrieved, n_relevant = results.is_relevant, results.n_retrieved, results.n_relevant
        self.retrieval_results: RetrievalResults | None = results
        self.metrics_unreduced: dict[str, Any] | None = {
            "OVERALL": {
                "cmc": {
                    1: cmc_at_k(relevant, retrieved, n_relevant, 1),
                    k: cmc_at_k(relevant, retrieved, n_relevant, k),
                },
                "precision": {k: precision_at_k(relevant, retrieved, n_relevant, k)},
                "map": {k: map_at_k(relevant, retrieved, n_relevant, k)},
            }
        }

    def flat(self) -> dict[str, Tensor]:
        assert self.metrics_unreduced is not None
        return {
            f"OVERALL/{name}/{k}": values
            for name, by_k in self.metrics_unreduced["OVERALL"].items()
            for k, values in by_k.items()
        }

    def get_worst_queries_ids(self, metric_name: str, n_queries: int) -> list[int]:
        return worst_queries(self.flat()[metric_name], n_queries)


def _metrics(results: RetrievalResults, k: int) -> dict[str, float]:
    return {name: reduce_mean(values, skip_nan=True) for name, values in _SearchMetrics(results, k).flat().items()}


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value JSON writes."""
    return value.item() if isinstance(value, np.generic) else value


def _grids(
    config: Config, run: RunFolder, results: RetrievalResults, inputs: Inputs, gallery: PathsDataset, ids: pd.Index
) -> None:
    """``retrieval/``: the worst queries per metric when both sides have labels, else the first queries."""
    n_queries, top_k = config["visualization.n_queries"], config["visualization.top_k"]
    if n_queries < 1 or not results.top_k:
        return

    def gallery_image(item: int) -> Image.Image:  # a grid names gallery items by id
        return gallery.read_image(int(ids.get_indexer(pd.Index([item]))[0]))

    images = inputs.dataset if hasattr(inputs.dataset, "read_image") else inputs.paths
    folder = run.path / "retrieval"
    formats = config["visualization.formats"] or (["html", "png"] if is_available("matplotlib") else ["html"])
    if results.query_labels is not None and results.gallery_labels is not None:
        save_worst_queries(
            _SearchMetrics(results, config["search.k"]),
            images,
            folder,
            n_queries=n_queries,
            top_k=top_k,
            gallery_images=gallery_image,
            formats=formats,
        )
        return
    folder.mkdir(exist_ok=True)
    options: dict[str, Any] = {"gallery_images": gallery_image, "top_k": top_k, "n_queries": n_queries}
    if "html" in formats:
        save_retrieval_html(folder / "queries.html", results, images, title="Search results", **options)
    if "png" in formats:
        save_retrieval_png(folder / "queries.png", results, images, **options)
