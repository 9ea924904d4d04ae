"""Score blocks against float64 brute force: coverage, symmetry, both CPU GEMMs, exclusion bookkeeping."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from omlcore.functional.linear import onednn_usable
from omlcore.retrieval import RetrievalInputError, iter_score_blocks, scores_to_distances
from omlcore.retrieval import scores as scores_module
from omlcore.retrieval.scores import Exclusions, default_chunk_size, is_symmetric

needs_onednn = pytest.mark.skipif(not onednn_usable(), reason="PyTorch without oneDNN")


def brute_force_scores(queries: Tensor, gallery: Tensor, metric: str) -> Tensor:
    """Squared L2 or ``1 - cos`` of every pair, in float64."""
    q, g = queries.double(), gallery.double()
    if metric == "l2":
        return ((q[:, None, :] - g[None, :, :]) ** 2).sum(-1)
    return 1 - torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(g, dim=1).T


def assembled(queries: Tensor, gallery: Tensor, metric: str = "l2", **kwargs: Any) -> tuple[Tensor, Tensor]:
    """The full score matrix put together from the blocks, and how often each pair was covered."""
    full = torch.full((len(queries), len(gallery)), float("nan"), dtype=torch.float64)
    seen = torch.zeros(len(queries), len(gallery))
    for block in iter_score_blocks(queries, gallery, metric, **kwargs):  # type: ignore[arg-type]
        full[block.rows, block.cols] = block.scores.double()
        seen[block.rows, block.cols] += 1
        if block.mirrored:
            full[block.cols, block.rows] = block.scores.T.double()
            seen[block.cols, block.rows] += 1
    return full, seen


def test_score_blocks_cover_each_pair_once() -> None:
    torch.manual_seed(1)
    items = torch.randn(70, 5)
    seen = torch.zeros(70, 70)
    for block in iter_score_blocks(items, items, symmetric=True, chunk_size=32):
        seen[block.rows, block.cols] += 1
        if block.mirrored:
            seen[block.cols, block.rows] += 1
        expected = torch.cdist(items[block.rows].double(), items[block.cols].double()) ** 2
        assert torch.allclose(block.scores.double(), expected, atol=1e-5)  # squared: no sqrt amplification at 0
        assert torch.equal(scores_to_distances(block.scores, "l2"), block.scores.clamp_min(0).sqrt())
    assert torch.equal(seen, torch.ones(70, 70))


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("cpu_gemm", ["auto", pytest.param("onednn", marks=needs_onednn), "blas"])
@pytest.mark.parametrize(("n_queries", "n_gallery", "chunk"), [(40, 70, 16), (33, 5, 4), (10, 300, 1000)])
def test_blocks_equal_brute_force(metric: str, cpu_gemm: str, n_queries: int, n_gallery: int, chunk: int) -> None:
    generator = torch.Generator().manual_seed(n_queries + n_gallery)
    queries, gallery = torch.randn(n_queries, 9, generator=generator), torch.randn(n_gallery, 9, generator=generator)
    full, seen = assembled(queries, gallery, metric, chunk_size=chunk, cpu_gemm=cpu_gemm)
    assert torch.equal(seen, torch.ones_like(seen))
    torch.testing.assert_close(full, brute_force_scores(queries, gallery, metric), rtol=0, atol=1e-5)
    symmetric, seen = assembled(queries, queries, metric, symmetric=True, chunk_size=chunk, cpu_gemm=cpu_gemm)
    assert torch.equal(seen, torch.ones_like(seen))
    torch.testing.assert_close(symmetric, brute_force_scores(queries, queries, metric), rtol=0, atol=1e-5)


def test_strided_and_half_inputs() -> None:
    generator = torch.Generator().manual_seed(5)
    queries = torch.randn(12, 40, generator=generator).T  # column-major (40, 12)
    gallery = torch.randn(60, 12, generator=generator)[::2]  # strided rows (30, 12)
    full, _ = assembled(queries, gallery, chunk_size=16)
    torch.testing.assert_close(full, brute_force_scores(queries, gallery, "l2"), rtol=0, atol=1e-5)
    half = gallery.half()
    assert torch.equal(assembled(half, half, chunk_size=16)[0], assembled(half.float(), half.float(), chunk_size=16)[0])


@pytest.mark.parametrize("cpu_gemm", ["auto", "blas"])
def test_scores_record_no_gradient(cpu_gemm: str) -> None:
    items = torch.randn(20, 6, requires_grad=True)
    for block in iter_score_blocks(items, items, symmetric=True, chunk_size=8, cpu_gemm=cpu_gemm):  # type: ignore[arg-type]
        assert not block.scores.requires_grad


@needs_onednn
def test_cpu_gemm_choice_follows_the_onednn_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    onednn_linear = scores_module.onednn_linear
    monkeypatch.setattr(scores_module, "onednn_linear", lambda *args: calls.append(1) or onednn_linear(*args))
    items = torch.randn(20, 6)
    assert len(list(iter_score_blocks(items, items, chunk_size=8))) == len(calls) == 9  # auto: oneDNN
    list(iter_score_blocks(items, items, chunk_size=8, cpu_gemm="blas"))
    assert len(calls) == 9
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
    list(iter_score_blocks(items, items, chunk_size=8))  # auto with oneDNN switched off: BLAS
    assert len(calls) == 9
    with pytest.raises(RetrievalInputError, match=r"cpu_gemm='onednn' needs .*torch.backends.mkldnn.enabled"):
        next(iter_score_blocks(items, items, cpu_gemm="onednn"))


def test_bad_arguments() -> None:
    items = torch.randn(5, 3)
    with pytest.raises(ValueError, match="symmetric=True needs `queries is gallery`"):
        next(iter_score_blocks(items, items.clone(), symmetric=True))
    with pytest.raises(ValueError, match="chunk_size must be >= 1, got -2"):
        next(iter_score_blocks(items, items, chunk_size=-2))
    assert default_chunk_size(torch.device("cpu")) == 1024


def test_is_symmetric_needs_the_same_tensor_and_symmetric_exclusions() -> None:
    items, ids, other = torch.randn(4, 2), torch.arange(4), torch.tensor([0, 0, 1, 1])
    assert is_symmetric(items, items, None) and is_symmetric(items, items, [(ids, ids.clone())])
    assert not is_symmetric(items, items.clone(), None)
    assert not is_symmetric(items, items, [(ids, other)])


def test_exclusions_between_chunks_keep_only_overlapping_key_ranges() -> None:
    ids = torch.arange(8)
    sequences = torch.tensor([-1, -1, -1, -1, 5, 6, 6, 9])
    exclusions = Exclusions([(ids, ids), (sequences, sequences)])
    first, second = slice(0, 4), slice(4, 8)
    assert [pair[0] is ids for pair in exclusions.between(first, first)] == [True]  # no sequences: -1 only
    assert exclusions.between(first, second) == []  # ids 0..3 vs 4..7
    assert len(exclusions.between(second, second)) == 2
    halves = Exclusions([(ids, ids), (sequences, sequences)])  # key ranges are kept per chunk start
    assert len(halves.between(slice(4, 6), slice(6, 8))) == 1  # sequences 5..6 vs 6..9 overlap, ids 4..5 vs 6..7 not
