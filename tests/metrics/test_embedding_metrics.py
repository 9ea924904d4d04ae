"""EmbeddingMetrics: the accumulator protocol, OML's output layout, exact state merging, policies and errors."""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from typing import Any

import pytest
import torch
from torch import Tensor

from omlcore.config import resolve
from omlcore.labels import InvalidLabelsError
from omlcore.metrics import PML_METRICS, EmbeddingMetrics
from omlcore.plugins import get_registry
from omlcore.protocols import MetricAccumulator
from omlcore.retrieval import ExactKNN, RetrievalInputError, RetrievalResults

KW: dict[str, Any] = {
    "cmc_top_k": (1, 5),
    "precision_top_k": (5,),
    "map_top_k": (5,),
    "pcf_variance": (0.5, 0.9),
    "fmr_vals": (0.1,),
    "pml_metrics": PML_METRICS,
}


def dataset(seed: int, n: int = 160, with_lone: bool = True) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 30, (n,), generator=generator)
    if with_lone:
        labels[:3] = torch.tensor([1000, 1001, 1002])  # labels of their own: queries without relevant items
    is_query = torch.rand(n, generator=generator) < 0.7
    is_gallery = torch.rand(n, generator=generator) < 0.8
    is_query[:3] = is_gallery[:3] = True
    return {
        "embeddings": torch.randn(n, 12, generator=generator),
        "labels": labels,
        "is_query": is_query,
        "is_gallery": is_gallery,
        "idx": torch.arange(n),
        "categories": [["shoes", "bags", "hats"][int(i)] for i in torch.randint(0, 3, (n,), generator=generator)],
        "sequences": torch.randint(-1, 60, (n,), generator=generator),
    }


def batches(data: dict[str, Any], order: Tensor, size: int) -> list[dict[str, Any]]:
    out = []
    for start in range(0, len(order), size):
        rows = order[start : start + size]
        out.append(
            {
                key: [value[int(i)] for i in rows] if isinstance(value, list) else value[rows]
                for key, value in data.items()
            }
        )
    return out


def same(first: dict[str, Any], second: dict[str, Any]) -> bool:
    """Equal flat values, NaN equal to NaN."""
    flat = [key for key in first if "/" in key]
    return first.keys() == second.keys() and all(
        first[k] == second[k] or (math.isnan(first[k]) and math.isnan(second[k])) for k in flat
    )


def quiet_compute(metrics: EmbeddingMetrics) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return metrics.compute()


def test_is_a_metric_accumulator_and_registered() -> None:
    metrics = EmbeddingMetrics()
    assert isinstance(metrics, MetricAccumulator)
    assert set(metrics.state_reductions) == set(metrics.get_state())
    assert set(metrics.state_reductions.values()) == {"cat"}
    built = resolve("metric", {"name": "embedding_metrics", "args": {"cmc_top_k": [1]}})
    assert isinstance(built, EmbeddingMetrics) and built.cmc_top_k == (1,)
    assert isinstance(get_registry().build("knn_backend", "exact", metric="cosine"), ExactKNN)


def test_values_equal_the_functional_path_and_layout_matches_oml() -> None:
    data = dataset(0)
    metrics = EmbeddingMetrics(**KW)
    for batch in batches(data, torch.arange(160), 50):
        metrics.update(batch)
    with pytest.warns(RuntimeWarning, match=r"\d+ of \d+ queries have no relevant gallery item.*as in OML 4.0"):
        out = metrics.compute()
    assert set(out) >= {"OVERALL", "bags", "hats", "shoes", "OVERALL/cmc/1", "hats/map/5", "OVERALL/fnmr@fmr/0.1"}
    assert list(out["OVERALL"]["cmc"]) == [1, 5] and out["OVERALL"]["cmc"][5] == out["OVERALL/cmc/5"]
    assert math.isnan(out["OVERALL"]["precision"][5])  # OML: lone queries make precision NaN
    results = RetrievalResults.from_embeddings(
        data["embeddings"],
        data["labels"],
        data["is_query"],
        data["is_gallery"],
        data["sequences"],
        top_k=5,
        cover_relevant=True,
    )
    relevant = results.is_relevant
    lone = results.n_relevant == 0
    assert metrics.summary["n_queries_without_relevant"] == int(lone.sum()) >= 3
    cmc1 = relevant[:, :1].any(1).double()
    assert out["OVERALL"]["cmc"][1] == pytest.approx(float(cmc1.mean()))
    queries = data["is_query"]
    hats = torch.tensor([c == "hats" for c in data["categories"]])[queries]
    assert out["hats"]["cmc"][1] == pytest.approx(float(cmc1[hats].mean()))
    r_prec = [
        float(relevant[q, : int(results.n_relevant[q])].sum()) / int(results.n_relevant[q])
        for q in range(results.n_queries)
        if not lone[q]
    ]
    assert out["OVERALL/r_precision"] == pytest.approx(sum(r_prec) / len(r_prec))
    assert "fnmr@fmr" not in out["hats"] and "pcf" in out["hats"]
    assert metrics.metrics_unreduced is not None and len(metrics.metrics_unreduced["OVERALL"]["cmc"][1]) == len(cmc1)


def test_exclude_policy_leaves_lone_queries_out() -> None:
    metrics = EmbeddingMetrics(
        cmc_top_k=(1,), precision_top_k=(3,), map_top_k=(), pcf_variance=(), no_relevant="exclude"
    )
    metrics.update(dataset(1))
    with pytest.warns(RuntimeWarning, match="left out of the means"):
        out = metrics.compute()
    results = metrics.retrieval_results
    assert results is not None
    keep = results.n_relevant > 0
    assert out["OVERALL/cmc/1"] == pytest.approx(float(results.is_relevant[keep, :1].any(1).double().mean()))
    assert not math.isnan(out["OVERALL/precision/3"])


@pytest.mark.parametrize("seed", [2, 3])
def test_merged_shards_equal_one_process_exactly(seed: int) -> None:
    data = dataset(seed)
    single = EmbeddingMetrics(**KW)
    for batch in batches(data, torch.arange(160), 64):
        single.update(batch)
    expected = quiet_compute(single)
    order = torch.randperm(160, generator=torch.Generator().manual_seed(seed))
    shards = [order[:37], torch.cat([order[37:], order[:5]])]  # uneven, and the second repeats 5 items (padding)
    ranks = [EmbeddingMetrics(**KW) for _ in shards]
    for rank, shard in zip(ranks, shards, strict=True):
        for batch in batches(data, shard, 16):
            rank.update(batch)
    states = [rank.get_state() for rank in ranks]
    ranks[1].merge_state([states[0]])
    merged = quiet_compute(ranks[1])
    assert same(merged, expected)
    assert ranks[1].summary["n_duplicates_dropped"] == 5
    fresh = EmbeddingMetrics(**KW)
    fresh.merge_state([*states, EmbeddingMetrics().get_state()])  # an empty rank is fine
    assert quiet_compute(fresh)["OVERALL/map/5"] == expected["OVERALL/map/5"]


def test_without_idx_merged_states_keep_rank_order() -> None:
    data = {key: value for key, value in dataset(10).items() if key != "idx"}
    single, ranks = EmbeddingMetrics(**KW), [EmbeddingMetrics(**KW), EmbeddingMetrics(**KW)]
    for batch in batches(data, torch.arange(160), 40):
        single.update(batch)
    for rank, rows in zip(ranks, (torch.arange(70), torch.arange(70, 160)), strict=True):
        for batch in batches(data, rows, 33):
            rank.update(batch)
    merged = EmbeddingMetrics(**KW)
    merged.merge_state([rank.get_state() for rank in ranks])  # local positions overlap: nothing may be dropped
    assert same(quiet_compute(merged), quiet_compute(single))
    assert merged.summary["n_items"] == 160 and merged.summary["n_duplicates_dropped"] == 0
    with_index = EmbeddingMetrics(**KW)
    with_index.update(batches(dataset(10), torch.arange(10), 10)[0])
    with_index.merge_state([ranks[0].get_state()])
    with pytest.raises(RetrievalInputError, match="some merged states carry dataset indices"):
        with_index.compute()
    with pytest.raises(RetrievalInputError, match="negative dataset indices"):
        EmbeddingMetrics().update({**dataset(10), "idx": torch.arange(-1, 159)})


def test_compute_does_not_change_the_state_and_reset_clears_it() -> None:
    metrics = EmbeddingMetrics(pcf_variance=())
    metrics.update(dataset(4, with_lone=False))
    first = quiet_compute(metrics)
    assert same(quiet_compute(metrics), first)
    metrics.reset()
    with pytest.raises(RetrievalInputError, match=r"no data: call update\(\) with batches before compute\(\)"):
        metrics.compute()


def test_worst_queries_by_metric() -> None:
    metrics = EmbeddingMetrics(cmc_top_k=(1,), precision_top_k=(), map_top_k=(5,), pcf_variance=())
    metrics.update(dataset(5, with_lone=False))
    quiet_compute(metrics)
    assert metrics.metrics_unreduced is not None
    values = metrics.metrics_unreduced["OVERALL"]["map"][5]
    worst = metrics.get_worst_queries_ids("OVERALL/map/5", 4)
    assert worst == torch.sort(values, stable=True).indices[:4].tolist()
    hats = metrics.get_worst_queries_ids("hats/map/5", 3)
    categories = [c for c, q in zip(dataset(5)["categories"], dataset(5)["is_query"].tolist(), strict=True) if q]
    assert {categories[q] for q in hats} == {"hats"}
    hat_positions = [q for q, c in enumerate(categories) if c == "hats"]
    assert hats == sorted(hat_positions, key=lambda q: (float(values[q]), q))[:3]
    with pytest.raises(KeyError, match="unknown metric 'OVERALL/cmc/7'"):
        metrics.get_worst_queries_ids("OVERALL/cmc/7", 1)


def test_backend_by_name_and_config() -> None:
    data = dataset(6, with_lone=False)
    outputs = []
    for backend in (None, "exact", {"name": "exact", "args": {"chunk_size": 16}}, ExactKNN(chunk_size=32)):
        metrics = EmbeddingMetrics(cmc_top_k=(1, 3), pcf_variance=(), knn_backend=backend)
        metrics.update(data)
        outputs.append(quiet_compute(metrics))
    assert all(same(out, outputs[0]) for out in outputs)
    with pytest.raises(TypeError, match="is not a KNNBackend"):
        EmbeddingMetrics(knn_backend=object())  # type: ignore[arg-type]


def test_cosine_and_return_only_overall() -> None:
    metrics = EmbeddingMetrics(metric="cosine", return_only_overall_category=True, pcf_variance=())
    metrics.update(dataset(7, with_lone=False))
    out = quiet_compute(metrics)
    assert {key.split("/")[0] for key in out} == {"OVERALL"}
    assert metrics.retrieval_results is not None and metrics.retrieval_results.metric == "cosine"


@pytest.mark.parametrize("overall_only", [False, True])
def test_declared_metric_names_are_the_computed_keys(overall_only: bool) -> None:
    metrics = EmbeddingMetrics(**KW, return_only_overall_category=overall_only)
    data = dataset(9)
    metrics.update(data)
    computed = [key for key in quiet_compute(metrics) if "/" in key]
    assert sorted(metrics.metric_names(sorted(set(data["categories"])))) == sorted(computed)


def test_bad_batches_are_named() -> None:
    data = dataset(8)
    metrics = EmbeddingMetrics()
    with pytest.raises(RetrievalInputError, match=r"the batch lacks \['is_query', 'is_gallery'\]"):
        metrics.update({"embeddings": data["embeddings"], "labels": data["labels"]})
    bad = {**data, "embeddings": data["embeddings"].clone()}
    bad["embeddings"][[7, 9]] = float("nan")
    with pytest.raises(RetrievalInputError, match=r"contain NaN or Inf in 2 of 160 rows: items with index 7, 9"):
        metrics.update(bad)
    with pytest.raises(
        InvalidLabelsError, match=r"labels'\] must be class ids.*float32 values \[nan\] at positions \[4\]"
    ):
        metrics.update({**data, "labels": data["labels"].float().index_fill(0, torch.tensor([4]), float("nan"))})
    with pytest.raises(RetrievalInputError, match=r"batch\['is_query'\] must be 1-D with one entry per row"):
        metrics.update({**data, "is_query": data["is_query"][:5]})
    metrics.update(data)
    with pytest.raises(RetrievalInputError, match="has 4 dimensions, earlier batches had 12"):
        metrics.update({**data, "embeddings": torch.randn(160, 4)})
    without_index = {key: value for key, value in data.items() if key != "idx"}
    with pytest.raises(RetrievalInputError, match="some batches carry 'idx' and some do not"):
        metrics.update(without_index)
    with pytest.raises(RetrievalInputError, match="'OVERALL' is a reserved name"):
        EmbeddingMetrics().update({**data, "categories": ["OVERALL"] * 160})
    mixed = EmbeddingMetrics()
    mixed.update(data)
    mixed.update({**{k: v for k, v in data.items() if k != "categories"}, "idx": torch.arange(160, 320)})
    with pytest.raises(RetrievalInputError, match="some batches carry 'categories' and some do not"):
        quiet_compute(mixed)
    no_gallery = EmbeddingMetrics()
    no_gallery.update({**data, "is_gallery": torch.zeros(160, dtype=torch.bool)})
    with pytest.raises(RetrievalInputError, match="the gallery is empty"):
        no_gallery.compute()
    with pytest.raises(ValueError, match="unknown pml_metrics"):
        EmbeddingMetrics(pml_metrics=["ndcg"])
    with pytest.raises(ValueError, match="cmc_top_k must hold positive integers"):
        EmbeddingMetrics(cmc_top_k=(0,))


def test_k_larger_than_gallery_follows_oml() -> None:
    """OML clips k to the gallery: with 2 gallery items, cmc@10 = cmc@2 and precision@10 divides by min(n, 2)."""
    embeddings = torch.tensor([[0.0], [1.0], [5.0], [6.0]])
    batch = {
        "embeddings": embeddings,
        "labels": torch.tensor([0, 1, 0, 1]),
        "is_query": torch.tensor([True, True, False, False]),
        "is_gallery": torch.tensor([False, False, True, True]),
    }
    metrics = EmbeddingMetrics(cmc_top_k=(1, 10), precision_top_k=(10,), map_top_k=(10,), pcf_variance=())
    metrics.update(batch)
    out = metrics.compute()
    assert out["OVERALL/cmc/1"] == 0.5 and out["OVERALL/cmc/10"] == 1.0
    assert out["OVERALL/precision/10"] == 1.0  # each query: 1 hit / min(n=1, k'=2)
    assert out["OVERALL/map/10"] == pytest.approx((1.0 + 0.5) / 2)


def test_ties_against_a_brute_force_full_matrix() -> None:
    """Integer embeddings (exact distances, ties everywhere): ranks follow (distance, gallery index)."""
    generator = torch.Generator().manual_seed(9)
    n = 200
    embeddings = torch.randint(-1, 2, (n, 4), generator=generator).float()
    labels = torch.randint(0, 6, (n,), generator=generator)
    sequences = torch.randint(-1, 50, (n,), generator=generator)
    is_query, is_gallery = torch.rand(n, generator=generator) < 0.6, torch.rand(n, generator=generator) < 0.7
    metrics = EmbeddingMetrics(
        cmc_top_k=(1, 3), precision_top_k=(3, 10), map_top_k=(10,), pcf_variance=(), pml_metrics=PML_METRICS
    )
    metrics.update(
        {"embeddings": embeddings, "labels": labels, "is_query": is_query, "is_gallery": is_gallery}
        | {"sequences": sequences}
    )
    got = quiet_compute(metrics)
    queries, gallery = is_query.nonzero().flatten(), is_gallery.nonzero().flatten()
    distances = torch.cdist(embeddings[queries].double(), embeddings[gallery].double())
    same_sequence = (sequences[queries][:, None] == sequences[gallery][None]) & (sequences[queries][:, None] >= 0)
    distances[(queries[:, None] == gallery[None]) | same_sequence] = float("inf")
    order = torch.sort(distances, dim=1, stable=True).indices  # the tie rule: smaller gallery index first
    per_query: dict[str, list[float]] = defaultdict(list)
    for q in range(len(queries)):
        ranked = order[q][torch.isfinite(distances[q, order[q]])]
        row = (labels[gallery[ranked]] == labels[queries[q]]).tolist()
        n_rel = sum(row)
        hits = [sum(row[: i + 1]) for i in range(len(row))]
        for k in (1, 3):
            per_query[f"OVERALL/cmc/{k}"].append(float(any(row[:k])) if row else float(n_rel == 0))
        for k in (3, 10):
            cut = min(k, len(row))
            value = hits[cut - 1] / min(n_rel, cut) if row and n_rel else (math.nan if row else float(n_rel == 0))
            per_query[f"OVERALL/precision/{k}"].append(value)
        cut = min(10, len(row))
        total = hits[cut - 1] if row else 0
        average = sum(hits[i] / (i + 1) * row[i] for i in range(cut)) / total if total else 0.0
        per_query["OVERALL/map/10"].append(average if row else float(n_rel == 0))
        if n_rel:
            per_query["OVERALL/precision_at_1"].append(float(row[0]))
            per_query["OVERALL/r_precision"].append(sum(row[:n_rel]) / n_rel)
            per_query["OVERALL/mean_average_precision_at_r"].append(
                sum(hits[i] / (i + 1) * row[i] for i in range(n_rel)) / n_rel
            )
            first = row.index(True) + 1
            per_query["OVERALL/mean_reciprocal_rank"].append(1 / first)  # over the full ranking
    assert set(per_query) == {key for key in got if "/" in key}
    for key, values in per_query.items():
        assert got[key] == pytest.approx(sum(values) / len(values), nan_ok=True), key
