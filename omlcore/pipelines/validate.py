"""``omlcore validate CONFIG``: the retrieval metrics of an extractor on the validation rows of an OML-format CSV.

The extractor is any config extractor: untrained, from the zoo (``{name: pretrained, args: {name: vits16_sop}}`` or
``args: {weights: ...}``), or with the weights of ``checkpoint`` (a training run's folder or checkpoint file). The run
folder gets ``config.yaml``, ``log.txt``, ``metrics.json`` (flat and nested metrics) and ``retrieval/`` (grids of the
worst queries); the metric table is printed, and the metrics and grids go to the experiment loggers (``logger``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omlcore.config import build_component
from omlcore.datasets import ImageQueryGalleryDataset
from omlcore.pipelines.common import (
    ConfigSource,
    RunFolder,
    build_metric,
    dataset_csv,
    flat_scalars,
    format_table,
    load_extractor,
    prepare,
    seed_everything,
)
from omlcore.pipelines.tracking import finalizing, open_tracker
from omlcore.pipelines.visuals import save_visualisations, worst_query_grids

__all__ = ["ValidateResult", "validate"]


@dataclass
class ValidateResult:
    """What :func:`validate` returns: the run folder and the flat metrics (``"OVERALL/cmc/1"`` ...)."""

    run_dir: Path
    metrics: dict[str, float]


def validate(config: ConfigSource, overrides: Sequence[str] = ()) -> ValidateResult:
    """Run the validation pipeline of ``config`` (a YAML file, a shipped config name, a mapping or a Config)."""
    config, runner = prepare(config, overrides, "validate")
    csv_path, root = dataset_csv(config)
    source = str(config.source) if config.source else None
    seed_everything(config["seed"])
    transform = build_component("transform", config["transforms_val"], "transforms_val", source=source)
    dataset = ImageQueryGalleryDataset(csv_path, root, transform, check_images=config["dataset.check_images"])
    model = load_extractor(config, runner)
    metric = build_metric(config, dataset)
    run = RunFolder.create(config, "validate", runner)  # after every check: a failed run leaves no folder
    with finalizing(open_tracker(config, run)) as tracker:
        run.log(f"omlcore validate: {config.source or config.name} -> {run.path}")
        results = runner.evaluate(model, dataset, metric, config["dataset.batch_size"], config["dataset.num_workers"])
        metrics = flat_scalars(results)
        weights = config["checkpoint"] or "the config's weights"
        run.log(f"\nValidation of {config['extractor.name']} ({weights}) on {len(dataset)} images of {csv_path}:")
        run.log(format_table({"value": metrics}))
        run.write_json("metrics.json", {"flat": metrics, "nested": _nested(results)})
        written = save_visualisations(config, metric, dataset, run.path / "retrieval") if run.primary else []
        if written:
            run.log(f"\nworst queries: {', '.join(str(p.relative_to(run.path)) for p in written)}")
        if tracker:
            tracker.log_metrics(metrics, 0)
            tracker.log_images(worst_query_grids(config, metric, dataset), 0)
        run.log(f"\nrun folder: {run.path}")
        return ValidateResult(run.path, metrics)


def _nested(results: dict[str, Any]) -> dict[str, Any]:
    """The nested part of a metrics result (``{"OVERALL": {"cmc": {"1": ...}}}``), numbers only."""
    from torch import Tensor

    def plain(node: Any) -> Any:
        if isinstance(node, dict):
            return {str(k): plain(v) for k, v in node.items()}
        if isinstance(node, Tensor):
            return node.tolist()
        return node

    return {key: plain(value) for key, value in results.items() if "/" not in str(key) and isinstance(value, dict)}
