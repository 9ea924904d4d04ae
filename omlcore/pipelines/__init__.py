"""The pipelines behind ``omlcore train`` / ``validate`` / ``predict`` / ``train-reranker``, as Python functions.

>>> from omlcore.pipelines import train
>>> result = train("glyphs", ["runner.args.epochs=1"])  # doctest: +SKIP
>>> result.trained["OVERALL/cmc/1"]  # doctest: +SKIP

Each run writes into its own folder (``output_dir``/...): the resolved config, a log, metrics (CSV + JSON),
checkpoints and retrieval grids. Runners (``runner: {name: torch | lightning}``) drive the loops.
"""

from __future__ import annotations

from omlcore.pipelines.predict import PredictResult, predict
from omlcore.pipelines.train import TrainResult, train
from omlcore.pipelines.train_reranker import train_reranker
from omlcore.pipelines.validate import ValidateResult, validate

__all__ = ["PredictResult", "TrainResult", "ValidateResult", "predict", "train", "train_reranker", "validate"]
