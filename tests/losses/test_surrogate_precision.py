"""SurrogatePrecision against a naive triple loop over queries, candidates and ranks."""

from __future__ import annotations

import pytest
import torch

from omlcore.losses import SurrogatePrecision


def naive(x, labels, k, t1, t2):  # type: ignore[no-untyped-def]
    n = len(labels)
    d = [[torch.linalg.vector_norm(x[i] - x[j]) for j in range(n)] for i in range(n)]
    precisions = []
    for i in range(n):
        relevant = [j for j in range(n) if labels[j] == labels[i]]  # the query itself included
        hits = torch.zeros((), dtype=x.dtype)
        for j in relevant:
            rank = sum(torch.sigmoid((d[i][j] - d[i][other]) / t2) for other in range(n))
            hits = hits + torch.sigmoid((k + 1 - rank) / t1)
        precisions.append(hits / min(len(relevant), k + 1))
    return 1 - torch.stack(precisions)


@pytest.mark.parametrize("k,t1,t2", [(1, 1.0, 0.01), (3, 0.5, 0.1)])
def test_equals_the_naive_loop(k: int, t1: float, t2: float) -> None:
    torch.manual_seed(0)
    x = torch.randn(9, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 2, 3, 1])
    loss = SurrogatePrecision(k, t1, t2, reduction="none")
    expected = naive(x, labels, k, t1, t2)
    assert torch.allclose(loss(x, labels), expected)
    assert SurrogatePrecision(k, t1, t2)(x, labels).item() == pytest.approx(expected.mean().item())
    assert loss.last_logs["precision"] == pytest.approx(1 - expected.mean().item())


def test_gradcheck_and_edge_cases() -> None:
    torch.manual_seed(0)
    x = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    assert torch.autograd.gradcheck(lambda e: SurrogatePrecision(2, 1.0, 0.5)(e, labels), (x,))
    empty = SurrogatePrecision(1)(x[:0], labels[:0])
    assert empty.item() == 0.0 and empty.requires_grad
    with pytest.raises(ValueError, match=r"k must be an integer >= 1"):
        SurrogatePrecision(0)
