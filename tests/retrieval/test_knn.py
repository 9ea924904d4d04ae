"""ExactKNN against a brute-force full-matrix reference in float64, ties included (tie rule: smaller gallery index)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from omlcore.functional.linear import onednn_usable
from omlcore.protocols import KNNBackend
from omlcore.retrieval import ExactKNN, RetrievalInputError

INF = float("inf")


def brute_force(
    queries: Tensor, gallery: Tensor, k: int, exclude: list[tuple[Tensor, Tensor]], metric: str
) -> tuple[Tensor, Tensor]:
    """Full distance matrix in float64, excluded pairs removed, rows sorted by (distance, gallery index)."""
    q, g = queries.double(), gallery.double()
    if metric == "l2":
        distances = ((q[:, None, :] - g[None, :, :]) ** 2).sum(-1).sqrt()
    else:
        distances = 1 - torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(g, dim=1).T
    for query_keys, gallery_keys in exclude:
        distances[(query_keys[:, None] == gallery_keys[None, :]) & (query_keys[:, None] >= 0)] = INF
    values, indices = torch.sort(distances, dim=1, stable=True)  # stable: equal distances by gallery index
    indices = torch.where(torch.isinf(values), -1, indices)
    pad = max(0, k - gallery.shape[0])
    values = torch.nn.functional.pad(values[:, :k], (0, pad), value=INF)
    indices = torch.nn.functional.pad(indices[:, :k], (0, pad), value=-1)
    return values, indices


def tied_embeddings(n: int, dim: int, metric: str, generator: torch.Generator) -> Tensor:
    """Embeddings whose distances are computed exactly in float32, with many exact ties.

    L2: small integers. Cosine: vectors with exactly four entries of +-1 (norm 2, so normalising is exact).
    """
    if metric == "l2":
        return torch.randint(-2, 3, (n, dim), generator=generator).float()
    signs = torch.randint(0, 2, (n, 4), generator=generator).float() * 2 - 1
    positions = torch.stack([torch.randperm(dim, generator=generator)[:4] for _ in range(n)])
    return torch.zeros(n, dim).scatter_(1, positions, signs)


def test_is_a_knn_backend() -> None:
    assert isinstance(ExactKNN(), KNNBackend)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("cpu_gemm", ["onednn", "blas"])
@pytest.mark.parametrize(
    ("n_queries", "n_gallery", "chunk", "k"),
    [(40, 70, 16, 5), (64, 64, 32, 3), (33, 5, 4, 10), (97, 130, 64, 20), (10, 300, 1000, 7)],
)
def test_matches_brute_force_with_ties(
    metric: str, cpu_gemm: str, n_queries: int, n_gallery: int, chunk: int, k: int
) -> None:
    if cpu_gemm == "onednn" and not onednn_usable():
        pytest.skip("PyTorch without oneDNN")
    generator = torch.Generator().manual_seed(n_queries * 1000 + n_gallery)
    queries = tied_embeddings(n_queries, 8, metric, generator)
    gallery = tied_embeddings(n_gallery, 8, metric, generator)
    knn = ExactKNN(metric, chunk_size=chunk, cpu_gemm=cpu_gemm)  # type: ignore[arg-type]
    distances, indices = knn.search(queries, gallery, k)
    expected_distances, expected_indices = brute_force(queries, gallery, k, [], metric)
    assert torch.equal(indices, expected_indices)
    assert torch.allclose(distances, expected_distances.float(), atol=1e-5)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("chunk", [8, 32, 1024])
def test_symmetric_search_with_self_and_sequence_exclusion(metric: str, chunk: int) -> None:
    generator = torch.Generator().manual_seed(chunk)
    n, k = 150, 6
    items = tied_embeddings(n, 6, metric, generator)
    ids = torch.arange(n)
    sequences = torch.randint(-1, 25, (n,), generator=generator)
    exclude = [(ids, ids), (sequences, sequences)]
    knn = ExactKNN(metric, chunk_size=chunk)  # type: ignore[arg-type]
    distances, indices = knn.search(items, items, k, exclude)  # `queries is gallery`: one triangle of blocks
    expected_distances, expected_indices = brute_force(items, items, k, exclude, metric)
    assert torch.equal(indices, expected_indices)
    assert torch.allclose(distances, expected_distances.float(), atol=1e-5)
    copy_distances, copy_indices = knn.search(items, items.clone(), k, exclude)  # the general path
    assert torch.equal(copy_indices, indices) and torch.allclose(copy_distances, distances)


def test_rows_shortened_by_exclusion_are_padded() -> None:
    gallery = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    queries = torch.tensor([[0.1], [2.9]])
    query_sequences, gallery_sequences = torch.tensor([7, -1]), torch.tensor([7, 7, 7, -1])
    distances, indices = ExactKNN().search(queries, gallery, 3, [(query_sequences, gallery_sequences)])
    assert indices.tolist() == [[3, -1, -1], [3, 2, 1]]
    assert distances[0, 0].item() == pytest.approx(2.9) and torch.isinf(distances[0, 1:]).all()
    assert distances[1].tolist() == pytest.approx([0.1, 0.9, 1.9], abs=1e-4)  # |q|^2 + |g|^2 - 2 q.g in fp32


def test_k_larger_than_gallery_is_padded() -> None:
    distances, indices = ExactKNN().search(torch.zeros(2, 3), torch.eye(3), 5)
    assert indices.tolist() == [[0, 1, 2, -1, -1]] * 2
    assert torch.isinf(distances[:, 3:]).all()


def test_negative_keys_exclude_nothing() -> None:
    items = torch.arange(6.0)[:, None]
    keys = torch.full((6,), -1)
    _, indices = ExactKNN().search(items, items, 2, [(keys, keys)])
    assert indices[:, 0].tolist() == list(range(6))  # each item finds itself first


def test_random_data_is_independent_of_chunk_size_and_gemm() -> None:
    torch.manual_seed(0)
    queries, gallery = torch.randn(300, 32), torch.randn(500, 32)
    reference = ExactKNN(chunk_size=4096).search(queries, gallery, 10)
    for knn in (ExactKNN(chunk_size=64), ExactKNN(chunk_size=96, cpu_gemm="blas")):
        distances, indices = knn.search(queries, gallery, 10)
        assert torch.equal(indices, reference[1])
        assert torch.allclose(distances, reference[0], atol=1e-5)
    assert torch.equal(reference[1], brute_force(queries, gallery, 10, [], "l2")[1])


def test_half_precision_input_is_searched_in_float32() -> None:
    torch.manual_seed(2)
    queries, gallery = torch.randn(20, 8).half(), torch.randn(30, 8).half()
    _, indices = ExactKNN().search(queries, gallery, 4)
    assert torch.equal(indices, ExactKNN().search(queries.float(), gallery.float(), 4)[1])


def test_bad_input_errors_name_the_culprit() -> None:
    knn = ExactKNN()
    bad = torch.zeros(6, 4)
    bad[2, 1], bad[5, 0] = float("nan"), float("inf")
    with pytest.raises(RetrievalInputError, match=r"queries contain NaN or Inf in 2 of 6 rows: rows 2, 5"):
        knn.search(bad, torch.zeros(3, 4), 2)
    with pytest.raises(RetrievalInputError, match=r"embedding sizes differ \(queries: \(2, 4\), gallery: \(3, 5\)\)"):
        knn.search(torch.zeros(2, 4), torch.zeros(3, 5), 2)
    with pytest.raises(RetrievalInputError, match=r"must be 2-D \(N, D\), got shape \(4,\).*unsqueeze"):
        knn.search(torch.zeros(4), torch.zeros(3, 4), 2)
    with pytest.raises(TypeError, match=r"floating tensor, got dtype torch\.int64"):
        knn.search(torch.zeros(2, 4, dtype=torch.long), torch.zeros(3, 4), 2)
    with pytest.raises(ValueError, match="k must be a positive integer, got 0"):
        knn.search(torch.zeros(2, 4), torch.zeros(3, 4), 0)
    with pytest.raises(TypeError, match="integer ids"):
        knn.search(torch.zeros(2, 4), torch.zeros(3, 4), 2, [(torch.zeros(2), torch.zeros(3))])
    with pytest.raises(RetrievalInputError, match=r"exclude gallery keys must be 1-D with one entry per row"):
        knn.search(torch.zeros(2, 4), torch.zeros(3, 4), 2, [(torch.zeros(2, dtype=torch.long), torch.arange(4))])
    with pytest.raises(ValueError, match="metric must be 'l2' or 'cosine'"):
        ExactKNN("manhattan")  # type: ignore[arg-type]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu() -> None:
    generator = torch.Generator().manual_seed(3)
    items = tied_embeddings(500, 16, "l2", generator)
    ids = torch.arange(500)
    cpu = ExactKNN(chunk_size=128).search(items, items, 8, [(ids, ids)])
    cuda_items, cuda_ids = items.cuda(), ids.cuda()
    cuda = ExactKNN(chunk_size=128).search(cuda_items, cuda_items, 8, [(cuda_ids, cuda_ids)])
    assert cuda[1].device.type == "cuda"
    assert torch.equal(cuda[1].cpu(), cpu[1])
