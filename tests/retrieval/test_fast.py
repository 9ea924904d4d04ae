"""The certified fast path of ExactKNN equals its exact path bit for bit, on random and adversarial inputs.

Each case is searched with ``fast="off"`` (the exact engine) and ``fast="on"``; ids and the float32 bits of the
distances must be equal. The cases make the certificate fail on purpose (near-ties, duplicates, integer grids with
exact ties) so that the fallback is exercised too, and the error bound is checked against float64 scores.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor

from omlcore.retrieval import ExactKNN, RetrievalInputError, RetrievalResults
from omlcore.retrieval import fast as fast_module
from omlcore.retrieval.fast import FAST_ENV, _bounds, fast_pays
from omlcore.retrieval.scores import make_scorer

CHUNK = 64  # several chunks and a shorter last one, at test sizes


@dataclass
class Case:
    name: str
    queries: Tensor
    gallery: Tensor
    k: int
    metric: str
    exclude: list[tuple[Tensor, Tensor]]


def _embeddings(kind: str, n: int, dim: int, generator: torch.Generator) -> Tensor:
    if kind == "gaussian":
        return torch.randn(n, dim, generator=generator)
    if kind == "near_ties":  # ~40 copies of each point, jittered below bfloat16's resolution but not float32's
        base = torch.randn(max(1, n // 40), dim, generator=generator)
        return base[torch.randint(0, len(base), (n,), generator=generator)] * (
            1 + 1e-4 * torch.randn(n, dim, generator=generator)
        )
    if kind == "duplicates":  # exact duplicates: exact ties, broken by the smaller gallery index
        base = torch.randn(max(1, n // 4), dim, generator=generator)
        return base[torch.randint(0, len(base), (n,), generator=generator)]
    if kind == "grid":  # small integers: many exactly equal distances
        return torch.randint(-2, 3, (n, dim), generator=generator).float()
    if kind == "large_norms":  # beyond 2^40: scored rescaled by a power of two
        return torch.randn(n, dim, generator=generator) * 1e30
    if kind == "mixed_norms":  # norms from 1e-3 to 1e3
        return torch.randn(n, dim, generator=generator) * 10 ** (6 * torch.rand(n, 1, generator=generator) - 3)
    raise ValueError(kind)


KINDS = ("gaussian", "near_ties", "duplicates", "grid", "large_norms", "mixed_norms")


def cases(seed: int) -> Iterator[Case]:
    generator = torch.Generator().manual_seed(seed)
    for kind in KINDS:
        for metric in ("l2", "cosine"):
            dim = [1, 2, 3, 16, 40][int(torch.randint(0, 5, (1,), generator=generator))]
            k = [1, 5, 12, 40][int(torch.randint(0, 4, (1,), generator=generator))]
            n = int(torch.randint(130, 300, (1,), generator=generator))
            items = _embeddings(kind, n, dim, generator)
            ids = torch.arange(n)
            yield Case(f"{kind}-{metric}-self-d{dim}-k{k}", items, items, k, metric, [(ids, ids)])
            sequences = torch.randint(-1, 20, (n,), generator=generator)
            yield Case(f"{kind}-{metric}-sequences", items, items, k, metric, [(ids, ids), (sequences, sequences)])
            gallery = _embeddings(kind, int(torch.randint(70, 400, (1,), generator=generator)), dim, generator)
            yield Case(f"{kind}-{metric}-qg-d{dim}-k{k}", items, gallery, k, metric, [])


def _search(case: Case, fast: str) -> tuple[Tensor, Tensor, ExactKNN]:
    knn = ExactKNN(case.metric, chunk_size=CHUNK, fast=fast)  # type: ignore[arg-type]
    distances, ids = knn.search(case.queries, case.gallery, case.k, case.exclude)
    return distances, ids, knn


@pytest.mark.parametrize("seed", [0, 1])
def test_fast_equals_exact_bit_for_bit(seed: int) -> None:
    certified = uncertified = 0
    for case in cases(seed):
        exact_distances, exact_ids, _ = _search(case, "off")
        fast_distances, fast_ids, knn = _search(case, "on")
        assert torch.equal(fast_ids, exact_ids), case.name
        assert torch.equal(fast_distances.view(torch.int32), exact_distances.view(torch.int32)), case.name
        stats = knn.last_fast_stats
        assert stats is not None, f"{case.name}: the probe sent this case to the exact path"
        certified += stats.n_certified
        uncertified += stats.n_queries - stats.n_certified
    assert certified > 0 and uncertified > 0  # both the certificate and the fallback were exercised


def test_the_certificate_bound_holds() -> None:
    """|approximate - engine score| <= E + F for every pair, against the float32 scores themselves."""
    generator = torch.Generator().manual_seed(3)
    for metric in ("l2", "cosine"):
        for scale in (1.0, 1e-3, 1e4):
            queries = torch.randn(100, 300, generator=generator) * scale
            gallery = torch.rand(150, 300, generator=generator) * scale  # same signs: no cancellation to hide in
            scorer = make_scorer(queries, gallery, metric)  # type: ignore[arg-type]
            rows, cols = slice(0, 100), slice(0, 150)
            exact = scorer.scores(rows, scorer.row_block(rows), cols).double()
            low = scorer.low_precision_scores(rows, scorer.low_precision_rows(rows), cols).double()
            bound = _bounds(scorer)
            error = (low - exact).abs().amax(dim=1)
            assert bool((error <= bound).all()), (metric, scale)
            assert bool((error > bound / 1000).any())  # the bound is not vacuous either


def test_fewer_gallery_items_than_candidates() -> None:
    generator = torch.Generator().manual_seed(4)
    queries, gallery = torch.randn(90, 8, generator=generator), torch.randn(10, 8, generator=generator)
    exact = ExactKNN(fast="off").search(queries, gallery, 20)
    knn = ExactKNN(fast="on")
    fast = knn.search(queries, gallery, 20)
    assert torch.equal(fast[1], exact[1]) and torch.equal(fast[0], exact[0])
    assert knn.last_fast_stats is not None and knn.last_fast_stats.certified_fraction == 1.0


def test_retrieval_results_equal_with_the_fast_path() -> None:
    generator = torch.Generator().manual_seed(5)
    embeddings = torch.nn.functional.normalize(torch.randn(400, 32, generator=generator), dim=1)
    labels = torch.randint(0, 60, (400,), generator=generator)
    exact = RetrievalResults.from_embeddings(embeddings, labels, top_k=7, backend=ExactKNN(fast="off"))
    fast = RetrievalResults.from_embeddings(embeddings, labels, top_k=7, backend=ExactKNN(fast="on"))
    assert torch.equal(exact.retrieved_ids, fast.retrieved_ids)
    assert torch.equal(exact.distances, fast.distances)


def test_auto_is_off_for_small_searches_and_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    generator = torch.Generator().manual_seed(6)
    queries = torch.randn(200, 8, generator=generator)
    knn = ExactKNN()
    knn.search(queries, queries, 3)
    assert knn.last_fast_stats is None  # 200 x 200 pairs: below the size where "auto" measures anything
    monkeypatch.setenv(FAST_ENV, "on")
    knn.search(queries, queries, 3)
    assert knn.last_fast_stats is not None
    monkeypatch.setenv(FAST_ENV, "maybe")
    with pytest.raises(ValueError, match=FAST_ENV):
        knn.search(queries, queries, 3)
    assert not fast_pays(make_scorer(queries, queries, "l2"), 64, 200 * 200)


def test_on_refuses_lower_precision_float32_matmuls() -> None:
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        with pytest.raises(RetrievalInputError, match="matmul_precision"):
            ExactKNN(fast="on").search(torch.randn(10, 4), torch.randn(10, 4), 2)
        ExactKNN(fast="auto").search(torch.randn(10, 4), torch.randn(10, 4), 2)  # auto: the exact path, silently
    finally:
        torch.set_float32_matmul_precision(before)


def test_fast_must_be_a_known_mode() -> None:
    with pytest.raises(ValueError, match="fast must be"):
        ExactKNN(fast="sometimes")  # type: ignore[arg-type]


@pytest.mark.parametrize(("ratio", "trial", "expected"), [(1.2, True, False), (2.0, False, False), (2.0, True, True)])
def test_auto_needs_a_faster_gemm_and_a_faster_trial_search(
    monkeypatch: pytest.MonkeyPatch, ratio: float, trial: bool, expected: bool
) -> None:
    monkeypatch.setattr(fast_module, "_measured", {})
    monkeypatch.setattr(fast_module, "_gemm_ratio", lambda *args: ratio)
    monkeypatch.setattr(fast_module, "_trial_pays", lambda *args: trial)
    scorer = make_scorer(torch.randn(4, 8), torch.randn(4, 8), "l2")
    assert fast_pays(scorer, 64, 1 << 30) is expected
    assert not fast_pays(scorer, 64, 1 << 20)  # below 2^28 pairs: never measured, the exact path


def test_the_trial_times_both_paths_and_refuses_an_unreproducible_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    assert isinstance(fast_module._trial_pays(cpu, 16, 64, "blas"), bool)
    monkeypatch.setattr(fast_module, "fast_topk", lambda *args: None)
    assert fast_module._trial_pays(cpu, 16, 64, "blas") is False
