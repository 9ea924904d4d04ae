"""GalleryScan against brute force (torch.cdist / explicit cosine): distances, order (ties by position), exclusion."""

from __future__ import annotations

import pytest
import torch

from omlcore.serve.scan import GalleryScan


def brute_force(queries: torch.Tensor, gallery: torch.Tensor, metric: str) -> torch.Tensor:
    if metric == "l2":
        return torch.cdist(queries.double(), gallery.double())
    q = torch.nn.functional.normalize(queries.double(), dim=1)
    g = torch.nn.functional.normalize(gallery.double(), dim=1)
    return (1 - q @ g.T).clamp_min(0)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("block_rows", [7, 1000])
def test_scan_matches_brute_force(metric: str, block_rows: int) -> None:
    generator = torch.Generator().manual_seed(0)
    gallery, queries = torch.randn(300, 12, generator=generator), torch.randn(5, 12, generator=generator)
    exclude = torch.tensor([-1, 3, 299, 0, -1])
    distances, positions = GalleryScan(gallery, metric, block_rows=block_rows).search(queries, 10, exclude)
    reference = brute_force(queries, gallery, metric)
    for q in range(5):
        if exclude[q] >= 0:
            reference[q, exclude[q]] = float("inf")
        expected = torch.argsort(reference[q], stable=True)[:10]
        assert positions[q].tolist() == expected.tolist()
        torch.testing.assert_close(distances[q].double(), reference[q, expected], atol=1e-4, rtol=1e-4)


def test_ties_by_position_and_padding() -> None:
    gallery = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    distances, positions = GalleryScan(gallery, block_rows=2).search(torch.tensor([[1.0, 0.0]]), 4, torch.tensor([2]))
    assert positions.tolist() == [[0, 3, 1, -1]]  # equal distances in position order; the excluded item pads
    assert distances[0, :2].tolist() == [0.0, 0.0] and distances[0, 3] == float("inf")
