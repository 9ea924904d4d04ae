"""A validation run beside the index: its metric table, its worst queries per metric, one query's full ranking.

A run folder of ``omlcore validate`` (or ``omlcore train``) keeps ``config.yaml`` and ``metrics.json`` but not the
embeddings. The explorer takes them from the index: the run's validation items (its dataset's ``validation`` rows) are
found in the index by path, so the index must hold them, embedded by the run's model (``omlcore index build
<run>/config.yaml checkpoint=<run> index.split=validation out=...``). The metrics are then computed again, by the
run's own ``metric`` config, and shown beside the run's: equal values show that index and run agree.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from omlcore.config import build_component, load_config
from omlcore.datasets import ImageQueryGalleryDataset
from omlcore.metrics.functional import flatten_metrics
from omlcore.pipelines.common import dataset_csv, flat_scalars
from omlcore.protocols import Postprocessor
from omlcore.retrieval import RetrievalResults
from omlcore.serve.explorer import Explorer, ExplorerError, Item
from omlcore.serve.ranking import Gallery, Query, RankedCell
from omlcore.visualization import retrieval_rows

__all__ = ["Evaluation", "RunError", "ValidationRun", "WorstQuery"]


class RunError(ExplorerError):
    """A run folder the explorer cannot show: missing files, or items the index does not hold."""


@dataclass
class Evaluation:
    """The run's metric computed again from the index's embeddings (with a postprocessor, or none): the flat metrics,
    the per-query values (flat names), the results and the metric object (for its worst queries)."""

    metrics: dict[str, float]
    per_query: dict[str, torch.Tensor]
    results: RetrievalResults
    plain: RetrievalResults
    metric: Any


@dataclass(frozen=True)
class WorstQuery:
    """One row of a worst-queries page: the query item, its value of the metric, its top cells and missed items."""

    item: Item
    value: float
    cells: list[RankedCell]
    missed: list[RankedCell]


class ValidationRun:
    """The validation run in ``folder``, its items found in ``explorer``'s index (see the module docstring).

    Raises:
        RunError: no config.yaml or metrics.json, or validation items that the index does not hold.
    """

    def __init__(self, folder: str | os.PathLike[str], explorer: Explorer) -> None:
        self.folder = Path(folder)
        self.explorer = explorer
        for name in ("config.yaml", "metrics.json"):
            if not (self.folder / name).is_file():
                raise RunError(
                    f"'{self.folder}' has no {name}: pass the folder of an `omlcore validate` (or train) run to --run"
                )
        self.config = load_config(self.folder / "config.yaml", pipeline="validate")
        self.reported = _reported_metrics(self.folder / "metrics.json")
        csv_path, root = dataset_csv(self.config)
        self.dataset = ImageQueryGalleryDataset(csv_path, root, check_images="none")
        self.rows = self._index_rows()
        self.is_query = torch.tensor(self.dataset.is_query)
        self.is_gallery = torch.tensor(self.dataset.is_gallery)
        self.labels = torch.tensor(self.dataset.labels)
        self.sequences = None if self.dataset.sequences is None else torch.tensor(self.dataset.sequences)
        self.embeddings = explorer.gallery.embeddings[self.rows]
        self.gallery = Gallery(
            self.embeddings[self.is_gallery],
            self.rows[self.is_gallery],
            self.labels[self.is_gallery],
            None if self.sequences is None else self.sequences[self.is_gallery],
            explorer.index.metric,
        )
        self._position = {row: position for position, row in enumerate(self.rows.tolist())}
        self._evaluations: dict[str | None, Evaluation] = {}
        self._lock = threading.Lock()

    def _index_rows(self) -> torch.Tensor:
        """The index row of every validation item, matched by resolved path."""
        if not self.explorer.has_paths:
            folder = self.explorer.index.folder
            raise RunError(f"the index '{folder}' holds no paths, so the run's items cannot be found in it")
        index_rows = {_key(path): row for row, path in enumerate(self.explorer.items["path"].tolist())}
        rows = [index_rows.get(_key(path), -1) for path in self.dataset.paths]
        missing = [path for path, row in zip(self.dataset.paths, rows, strict=True) if row < 0]
        if missing:
            raise RunError(
                f"{len(missing)} of the run's {len(rows)} validation items are not in the index (e.g. '{missing[0]}'): "
                f"build the index from the run: omlcore index build {self.folder / 'config.yaml'} "
                f"checkpoint={self.config['checkpoint'] or self.folder} index.split=validation out=<folder>"
            )
        return torch.tensor(rows, dtype=torch.long)

    @property
    def name(self) -> str:
        return self.folder.name

    def metric_names(self) -> list[str]:
        """The per-query metrics whose worst queries can be shown (``OVERALL/...`` first, then per category)."""
        names = sorted(self.evaluate(None).per_query)
        return sorted(names, key=lambda name: (not name.startswith("OVERALL/"), name))

    def evaluate(self, postprocessor: tuple[str, Postprocessor] | None) -> Evaluation:
        """The run's metric over the index's embeddings, with ``postprocessor`` (cached per postprocessor name)."""
        key = None if postprocessor is None else postprocessor[0]
        with self._lock:
            if key not in self._evaluations:
                self._evaluations[key] = self._evaluate(postprocessor)
            return self._evaluations[key]

    def _evaluate(self, postprocessor: tuple[str, Postprocessor] | None) -> Evaluation:
        metric = build_component("metric", self.config["metric"], "metric")
        if not hasattr(metric, "get_worst_queries_ids"):
            name = self.config["metric.name"]
            raise RunError(f"the run's metric '{name}' cannot rank queries: use embedding_metrics")
        metric.postprocessor = None if postprocessor is None else postprocessor[1]
        batch: dict[str, Any] = {
            "embeddings": self.embeddings,
            "labels": self.labels,
            "is_query": self.is_query,
            "is_gallery": self.is_gallery,
            "idx": torch.arange(len(self.rows)),
        }
        if self.dataset.categories is not None:
            batch["categories"] = self.dataset.categories.tolist()
        if self.sequences is not None:
            batch["sequences"] = self.sequences
        metric.update(batch)
        metrics = flat_scalars(metric.compute())
        per_query = flatten_metrics(metric.metrics_unreduced)
        plain = metric.retrieval_results
        results = metric.postprocessed_results if postprocessor is not None else plain
        if postprocessor is not None:
            per_query = {name: values for name, values in per_query.items() if name.startswith("postprocessed/")}
            per_query = {name.removeprefix("postprocessed/"): values for name, values in per_query.items()}
            metrics = {
                name.removeprefix("postprocessed/"): value
                for name, value in metrics.items()
                if name.startswith("postprocessed/")
            }
        return Evaluation(metrics, per_query, results, plain, metric)

    def is_query_item(self, item: Item) -> bool:
        position = self._position.get(item.row)
        return position is not None and bool(self.is_query[position])

    def query(self, item: Item) -> Query:
        """The query of a validation query item (:class:`RunError` for other items)."""
        if not self.is_query_item(item):
            raise RunError(f"item {item.id} is not a query of the run '{self.name}': pick one from its worst queries")
        position = self._position[item.row]
        sequence = None if self.sequences is None else int(self.sequences[position])
        return Query(self.embeddings[position], item.row, int(self.labels[position]), sequence)

    def query_values(self, item: Item, postprocessor: tuple[str, Postprocessor] | None) -> dict[str, float]:
        """The query's value of every per-query metric (OVERALL ones), with the postprocessor if given."""
        evaluation = self.evaluate(postprocessor)
        position = int(self.is_query[: self._position[item.row]].sum())  # queries are in dataset order
        return {
            name: float(values[position])
            for name, values in evaluation.per_query.items()
            if name.startswith("OVERALL/") and len(values) == evaluation.results.n_queries
        }

    def worst(
        self, metric_name: str, postprocessor: tuple[str, Postprocessor] | None, n: int = 8, top_k: int = 5
    ) -> list[WorstQuery]:
        """The ``n`` worst queries by ``metric_name`` (flat, e.g. ``OVERALL/cmc/1``), each with its top ``top_k``."""
        evaluation = self.evaluate(postprocessor)
        if metric_name not in evaluation.per_query:
            known = ", ".join(self.metric_names())
            raise RunError(f"unknown metric '{metric_name}'; the run's per-query metrics: {known}")
        prefix = "" if postprocessor is None else "postprocessed/"
        positions = evaluation.metric.get_worst_queries_ids(prefix + metric_name, n)
        overall = evaluation.per_query[metric_name]
        results, plain = evaluation.results, evaluation.plain
        rows = retrieval_rows(results, positions, top_k=top_k, n_missed=top_k)
        categories = self.dataset.categories
        query_categories = None if categories is None else categories[self.dataset.is_query]
        worst = []
        for position, row in zip(positions, rows, strict=True):
            before = None
            if postprocessor is not None and plain.gallery_ids is not None:
                _, retrieved = plain.retrieved(position)
                before = {int(self.rows[int(plain.gallery_ids[p])]): r for r, p in enumerate(retrieved.tolist(), 1)}
            cells = [
                RankedCell(
                    cell.kind,
                    int(self.rows[cell.item]),
                    cell.rank,
                    cell.distance,
                    cell.label,
                    None if before is None else before.get(int(self.rows[cell.item])),
                )
                for cell in row[1:]
            ]
            item = self.explorer.item_at(int(self.rows[row[0].item]))
            value = _value_of(evaluation, position, overall, query_categories)
            worst.append(
                WorstQuery(
                    item,
                    value,
                    [cell for cell in cells if cell.kind != "missed"],
                    [cell for cell in cells if cell.kind == "missed"],
                )
            )
        return worst


def _value_of(evaluation: Evaluation, position: int, values: torch.Tensor, categories: np.ndarray | None) -> float:
    """Query ``position``'s value of a per-query metric; a category's metric holds its queries only, in order."""
    if len(values) == evaluation.results.n_queries or categories is None:
        return float(values[position])
    mine = categories[position]
    return float(values[int((categories[:position] == mine).sum())])


def _key(path: str) -> str:
    return os.path.normpath(os.path.abspath(path))


def _reported_metrics(path: Path) -> dict[str, float]:
    """The flat metrics a run reported: ``omlcore validate``'s ``flat``, or the last epoch of ``omlcore train``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise RunError(f"'{path}' cannot be read as JSON ({error}): pass the folder of a finished run") from None
    if isinstance(data, dict) and isinstance(data.get("flat"), dict):
        record = data["flat"]
    elif isinstance(data, list) and data and isinstance(data[-1], dict):
        record = data[-1]
    else:
        raise RunError(f"'{path}' is not the metrics.json of an omlcore validate or train run")
    return {name: float(value) for name, value in record.items() if "/" in name and isinstance(value, int | float)}
