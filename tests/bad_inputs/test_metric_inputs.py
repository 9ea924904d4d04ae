"""The map of what EmbeddingMetrics checks in its batches: every key, and what happens to a bad or odd value.

Sections: the keys (missing, misspelt, OML's singular names), dataset indices (repeated copies, one index for two
items), embeddings (NaN, norms far outside float32's comfortable range), queries without relevant items (values
and warning agree), and MRR's cutoff. Each case asserts the named error or the exact value.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import pytest
import torch

from omlcore.metrics import EmbeddingMetrics
from omlcore.retrieval import RetrievalInputError


def items(n: int = 24, seed: int = 0) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "embeddings": torch.randn(n, 6, generator=generator),
        "labels": torch.arange(n) % 6,
        "is_query": torch.ones(n, dtype=torch.bool),
        "is_gallery": torch.ones(n, dtype=torch.bool),
        "idx": torch.arange(n),
        "categories": ["a", "b"] * (n // 2),
        "sequences": torch.arange(n) % (n // 2),  # items i and i + n/2: one label, one sequence
    }


def computed(*batches: dict[str, Any], **kwargs: Any) -> tuple[dict[str, Any], list[str]]:
    """The flat metrics of the batches, and the warnings' messages."""
    metrics = EmbeddingMetrics(pcf_variance=(), **kwargs)
    for batch in batches:
        metrics.update(batch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = metrics.compute()
    return {key: value for key, value in out.items() if "/" in key}, [str(w.message) for w in caught]


def without(batch: dict[str, Any], key: str) -> dict[str, Any]:
    return {name: value for name, value in batch.items() if name != key}


# --- keys ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["embeddings", "labels", "is_query", "is_gallery"])
def test_a_missing_required_key_is_named(key: str) -> None:
    with pytest.raises(RetrievalInputError, match=rf"the batch lacks \['{key}'\]"):
        EmbeddingMetrics().update(without(items(), key))


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("sequnces", "sequences"),
        ("categores", "categories"),
        ("embedding", "embeddings"),
        ("is_querry", "is_query"),
        ("is_galery", "is_gallery"),
        ("index", "idx"),
        ("idxs", "idx"),
    ],
)
def test_a_misspelt_key_is_an_error_naming_the_key_meant(typo: str, meant: str) -> None:
    batch = items()
    if meant in ("embeddings", "is_query", "is_gallery"):
        batch = {**batch, typo: batch[meant]}  # besides the right key: still a typo of it
    else:
        batch = {**without(batch, meant), typo: batch[meant]}
    with pytest.raises(RetrievalInputError, match=rf"the batch key '{typo}' .* did you mean '{meant}'\?"):
        EmbeddingMetrics().update(batch)


def test_other_keys_are_ignored() -> None:
    plain, _ = computed(items())
    extra, _ = computed({**items(), "images": torch.zeros(24, 3, 2, 2), "paths": ["p"] * 24, "input_tensors": 1})
    assert plain == extra


def test_omls_singular_names_are_read_as_the_keys() -> None:
    """``category`` / ``sequence`` (the CSV columns, OML's keys) change the metrics exactly as the plural keys do."""
    batch = items()
    plural, _ = computed(batch)
    bare = without(without(batch, "categories"), "sequences")
    singular, _ = computed({**bare, "category": batch["categories"], "sequence": batch["sequences"]})
    ignored, _ = computed(bare)
    assert singular == plural
    assert plural["OVERALL/map/5"] != ignored["OVERALL/map/5"]  # the sequences matter here: they are not dropped
    assert "a/cmc/5" in plural and "a/cmc/5" not in ignored
    with pytest.raises(RetrievalInputError, match="the batch has both 'sequence' and 'sequences'"):
        EmbeddingMetrics().update({**batch, "sequence": batch["sequences"]})


# --- dataset indices ----------------------------------------------------------------------------------------------


def test_repeated_copies_of_an_item_are_dropped_once() -> None:
    """A padded DistributedSampler repeats items: the copies (equal up to rounding) count once."""
    batch = items()
    copy = {key: value[:4] for key, value in batch.items()}
    copy["embeddings"] = copy["embeddings"] * (1 + 1e-6)  # another batch on a GPU may round differently
    with_copies, _ = computed(batch, copy)
    alone, _ = computed(batch)
    assert with_copies == alone


@pytest.mark.parametrize("changed", ["embeddings", "labels", "is_query", "sequences"])
def test_one_index_for_two_items_is_an_error(changed: str) -> None:
    batch = items()
    other = {key: value[:4] for key, value in batch.items()}
    other[changed] = {
        "embeddings": other["embeddings"] + 1.0,
        "labels": other["labels"] + 1,
        "is_query": ~other["is_query"],
        "sequences": other["sequences"] + 100,
    }[changed]
    with pytest.raises(RetrievalInputError, match=r"4 dataset indices \('idx'\) are given to different items.*0, 1, 2"):
        computed(batch, other)


# --- embeddings ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1e20, 1e30, 1e-20, 1e-30, 2.0**70])
@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_embeddings_far_outside_the_unit_range_retrieve_as_scaled_ones(scale: float, metric: str) -> None:
    """Scaling every embedding by one factor changes no ranking; float32 squares of 1e20 would overflow."""
    batch = items(60, seed=1)
    kwargs: dict[str, Any] = {"cmc_top_k": (1, 5), "map_top_k": (5,), "fmr_vals": (0.1,), "metric": metric}
    kwargs["pml_metrics"] = ("mean_reciprocal_rank", "mean_average_precision_at_r")
    expected, _ = computed(batch, **kwargs)
    got, _ = computed({**batch, "embeddings": batch["embeddings"] * scale}, **kwargs)
    assert got == pytest.approx(expected, abs=1e-6)
    assert expected["OVERALL/cmc/1"] > 0


# --- queries without relevant items -------------------------------------------------------------------------------


def test_lone_queries_values_agree_with_the_warning() -> None:
    """Label 9 has one item: no relevant item but a full row (CMC 0, precision NaN). Items 0 and 1 are the only
    gallery items of their sequence and label, and queries only of it: nothing to retrieve (an empty row: 1)."""
    embeddings = torch.tensor([[0.0, 0.0], [0.1, 0.0], [1.0, 0.0], [1.1, 0.0], [5.0, 0.0]])
    batch = {
        "embeddings": embeddings,
        "labels": torch.tensor([0, 0, 1, 1, 9]),
        "is_query": torch.tensor([True, True, True, True, True]),
        "is_gallery": torch.tensor([True, True, False, False, False]),
        "sequences": torch.tensor([0, 0, 1, 2, 3]),
    }
    values, messages = computed(batch, cmc_top_k=(5,), precision_top_k=(5,), map_top_k=(5,))
    [message] = messages
    assert message.startswith("5 of 5 queries have no relevant gallery item")
    assert "CMC 0, mAP 0 and precision NaN" in message and "except 2 with nothing to retrieve" in message
    assert "CMC, precision and mAP 1" in message
    assert values["OVERALL/cmc/5"] == pytest.approx(2 / 5)  # the two empty rows score 1, the others 0
    assert math.isnan(values["OVERALL/precision/5"])
    empty_only = {key: value[:2] for key, value in batch.items()}
    values, [message] = computed(empty_only, cmc_top_k=(5,), precision_top_k=(5,), map_top_k=(5,))
    assert "they have nothing to retrieve and are scored as in OML 4.0: CMC, precision and mAP 1" in message
    assert values["OVERALL/cmc/5"] == values["OVERALL/precision/5"] == values["OVERALL/map/5"] == 1.0
    values, [message] = computed(batch, cmc_top_k=(5,), no_relevant="exclude")
    assert "left out of the means" in message and math.isnan(values["OVERALL/cmc/5"])


# --- MRR's cutoff -------------------------------------------------------------------------------------------------


def test_mrr_does_not_depend_on_other_cutoffs() -> None:
    batch = items(40, seed=2)
    batch["labels"] = torch.arange(40) % 12
    values = {
        ks: computed(batch, cmc_top_k=ks, pml_metrics=("mean_reciprocal_rank",))[0]["OVERALL/mean_reciprocal_rank"]
        for ks in ((1,), (5,), (39,))
    }
    assert len(set(values.values())) == 1
    cut, _ = computed(batch, cmc_top_k=(39,), pml_metrics=("mean_reciprocal_rank",), mrr_top_k=1)
    assert "OVERALL/mean_reciprocal_rank" not in cut and cut["OVERALL/mean_reciprocal_rank/1"] < values[(1,)]
