"""EmbeddingMetrics with a postprocessor: metrics before and after under distinct keys, and faulty steps named."""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import pytest
import torch

from omlcore.metrics import POSTPROCESSED, EmbeddingMetrics
from omlcore.postprocessing import PostprocessorChain, PostprocessorError, RetrievalContext
from omlcore.retrieval import RetrievalResults


class Identity:
    def process(self, results: RetrievalResults, context: RetrievalContext) -> RetrievalResults:
        return results


class RelevantFirst:
    """Re-sorts each row so that relevant items come first (labels known): an oracle re-ranker."""

    def process(self, results: RetrievalResults, context: RetrievalContext) -> RetrievalResults:
        assert context.split.queries is not None and results.gallery_labels is not None
        order = torch.sort((~results.is_relevant).to(torch.int8), dim=1, stable=True).indices
        ids = torch.gather(results.retrieved_ids, 1, order)
        steps = torch.arange(ids.shape[1], dtype=torch.float32).expand_as(ids)
        return dataclasses.replace(results, retrieved_ids=ids, distances=torch.where(ids >= 0, steps, math.inf))


class Broken:
    def __init__(self, how: str) -> None:
        self.how = how

    def process(self, results: RetrievalResults, context: RetrievalContext) -> Any:
        if self.how == "rows":
            return dataclasses.replace(
                results,
                distances=results.distances[1:],
                retrieved_ids=results.retrieved_ids[1:],
                n_relevant=results.n_relevant[1:],
            )
        if self.how == "unsorted":
            return dataclasses.replace(
                results, distances=results.distances.flip(1), retrieved_ids=results.retrieved_ids.flip(1)
            )
        if self.how == "nan":
            return dataclasses.replace(results, distances=torch.full_like(results.distances, math.nan))
        return results.distances


def batch(seed: int = 0, n: int = 90) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "embeddings": torch.randn(n, 8, generator=generator),
        "labels": torch.arange(n) % 15,
        "is_query": torch.ones(n, dtype=torch.bool),
        "is_gallery": torch.ones(n, dtype=torch.bool),
        "idx": torch.arange(n),
        "categories": ["a", "b", "c"] * (n // 3),
    }


KW: dict[str, Any] = {"cmc_top_k": (1, 5), "map_top_k": (5,), "pml_metrics": ("mean_reciprocal_rank", "r_precision")}


def compute(metrics: EmbeddingMetrics, data: dict[str, Any]) -> dict[str, Any]:
    metrics.update(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return metrics.compute()


def test_identity_reports_the_same_values_under_the_prefix() -> None:
    plain = compute(EmbeddingMetrics(**KW), batch())
    both = compute(EmbeddingMetrics(**KW, postprocessor=Identity()), batch())
    for key, value in plain.items():
        if "/" not in key:
            continue
        assert both[key] == value
        if "/pcf/" not in key:
            assert both[f"{POSTPROCESSED}/{key}"] == value, key
    assert not any(key.startswith(f"{POSTPROCESSED}/") and "/pcf/" in key for key in both)


def test_a_better_ranking_lifts_only_the_postprocessed_metrics() -> None:
    metrics = EmbeddingMetrics(**KW, postprocessor=[Identity(), RelevantFirst()])
    assert isinstance(metrics.postprocessor, PostprocessorChain)
    out = compute(metrics, batch())
    # every query with a relevant item in its top 5 now has one first
    assert out["OVERALL/cmc/1"] < out[f"{POSTPROCESSED}/OVERALL/cmc/1"] == out["OVERALL/cmc/5"]
    assert out[f"{POSTPROCESSED}/a/cmc/1"] == out["a/cmc/5"]
    assert metrics.postprocessed_results is not None and metrics.retrieval_results is not None
    assert not torch.equal(metrics.postprocessed_results.retrieved_ids, metrics.retrieval_results.retrieved_ids)
    worst = metrics.get_worst_queries_ids(f"{POSTPROCESSED}/b/map/5", 3)
    assert len(worst) == 3 and all(position % 3 == 1 for position in worst)  # category b: every third item
    assert sorted(metrics.metric_names(["a", "b", "c"])) == sorted(key for key in out if "/" in key)
    only_overall = compute(
        EmbeddingMetrics(**KW, postprocessor=RelevantFirst(), return_only_overall_category=True), batch()
    )
    assert {key.split("/")[0] for key in only_overall if "/" in key} == {"OVERALL", POSTPROCESSED}
    assert f"{POSTPROCESSED}/a/cmc/1" not in only_overall


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("rows", "Broken returned 89 rows for 90 queries"),
        ("unsorted", "Broken returned unsorted rows"),
        ("nan", "Broken returned NaN distances"),
        ("type", "Broken returned Tensor, not RetrievalResults"),
    ],
)
def test_a_faulty_postprocessor_is_named(how: str, message: str) -> None:
    with pytest.raises(PostprocessorError, match=message):
        compute(EmbeddingMetrics(**KW, postprocessor=Broken(how)), batch())


def test_bad_postprocessor_specs() -> None:
    with pytest.raises(TypeError, match="is not a Postprocessor"):
        EmbeddingMetrics(postprocessor=[object()])
    with pytest.raises(Exception, match="Unknown postprocessor 'aqee'"):
        EmbeddingMetrics(postprocessor="aqee")
    with pytest.raises(Exception, match="'postprocessed' is a reserved name"):
        compute(EmbeddingMetrics(), {**batch(), "categories": ["postprocessed"] * 90})


def test_a_config_names_one_postprocessor_or_a_chain() -> None:
    from omlcore.config import ConfigError, load_config

    base = {"dataset": {"csv": "data.csv"}, "extractor": {"name": "small_cnn"}}
    assert load_config(base, pipeline="validate")["postprocessor"] is None
    with pytest.raises(ConfigError, match=r"postprocessor\[0\]\.name: Unknown postprocessor 'aqee'.*aqe"):
        load_config({**base, "postprocessor": [{"name": "aqee"}]}, pipeline="validate")
    with pytest.raises(ConfigError, match=r"postprocessor\.name: Unknown postprocessor 'k_reciprocals'"):
        load_config({**base, "postprocessor": {"name": "k_reciprocals"}}, pipeline="predict")
