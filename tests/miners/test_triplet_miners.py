"""All / batch-hard / N-hard triplet miners against naive per-anchor loops, PML, and the empty cases."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch

from omlcore.miners import AllTripletsMiner, HardTripletsMiner, NHardTripletsMiner, TripletMiner
from omlcore.miners.all_triplets import sample_distinct
from omlcore.miners.base import pair_masks, row_shifted_similarities, same_label_groups
from omlcore.protocols import Miner, Triplets


def batch(n_labels: int = 4, sizes: tuple[int, ...] = (2, 3, 4), dim: int = 6, seed: int = 0):  # type: ignore[no-untyped-def]
    generator = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((sizes[i % len(sizes)],), 10 + i) for i in range(n_labels)])
    order = torch.randperm(len(labels), generator=generator)
    return torch.randn(len(labels), dim, generator=generator, dtype=torch.float64), labels[order]


def allowed(labels, a, other, *, same_set=True, ref_labels=None, sequences=None, ref_sequences=None, ignore=None):  # type: ignore[no-untyped-def]
    """(is positive, is negative) of one pair, written out plainly."""
    ref_labels = labels if ref_labels is None else ref_labels
    ref_sequences = sequences if ref_sequences is None else ref_sequences
    if ignore is not None and ignore[a]:
        return False, False
    if sequences is not None and sequences[a] >= 0 and sequences[a] == ref_sequences[other]:
        return False, False
    same = labels[a] == ref_labels[other]
    return bool(same and not (same_set and a == other)), bool(not same)


def naive_triplets(labels, n_ref=None, **options):  # type: ignore[no-untyped-def]
    n_ref = len(labels) if n_ref is None else n_ref
    out = []
    for a in range(len(labels)):
        for p in range(n_ref):
            for n in range(n_ref):
                if allowed(labels, a, p, **options)[0] and allowed(labels, a, n, **options)[1]:
                    out.append((a, p, n))
    return out


def as_list(triplets: Triplets) -> list[tuple[int, int, int]]:
    return list(zip(*(t.tolist() for t in triplets), strict=True))


def naive_ranked(x, ref, labels, a, **options):  # type: ignore[no-untyped-def]
    """Positives by decreasing and negatives by increasing distance to anchor ``a``."""
    pos, neg = [], []
    for j in range(len(ref)):
        is_pos, is_neg = allowed(labels, a, j, **options)
        d = float(torch.linalg.vector_norm(x[a] - ref[j]))
        if is_pos:
            pos.append((-d, j))
        if is_neg:
            neg.append((d, j))
    return [j for _, j in sorted(pos)], [j for _, j in sorted(neg)]


def test_miners_satisfy_the_protocol() -> None:
    for miner in (AllTripletsMiner(), HardTripletsMiner(), NHardTripletsMiner()):
        assert isinstance(miner, Miner) and isinstance(miner, TripletMiner)


@pytest.mark.parametrize("sizes", [(2, 3, 4), (3,), (1, 2, 5)])
def test_all_triplets_equal_the_naive_list(sizes: tuple[int, ...]) -> None:
    x, labels = batch(5, sizes)
    got = AllTripletsMiner()(x, labels)
    assert as_list(got) == naive_triplets(labels)  # same set, sorted by (a, p, n)
    assert got.anchor.dtype == torch.long


def test_all_triplets_with_options_and_reference() -> None:
    x, labels = batch(4, (3, 4))
    sequences = torch.tensor([0, 0, -1, 1, 1, 2, -1, 2, 3, 3, -1, 4, 4, 5])[: len(labels)]
    ignore = torch.zeros(len(labels), dtype=torch.bool)
    ignore[[1, 5]] = True
    got = AllTripletsMiner()(x, labels, sequences=sequences, ignore_anchor_mask=ignore)
    assert as_list(got) == naive_triplets(labels, sequences=sequences, ignore=ignore)
    ref, ref_labels = x[:5] + 1, labels[:5]
    got = AllTripletsMiner()(x, labels, ref, ref_labels)
    assert as_list(got) == naive_triplets(labels, 5, same_set=False, ref_labels=ref_labels)


def test_capped_all_triplets_are_a_uniform_subset() -> None:
    x, labels = batch(4, (3,))
    everything = set(naive_triplets(labels))
    torch.manual_seed(0)
    counts = torch.zeros(len(everything))
    index = {t: i for i, t in enumerate(sorted(everything))}
    for _ in range(400):
        got = as_list(AllTripletsMiner(max_output_triplets=50)(x, labels))
        assert len(got) == len(set(got)) == 50 and set(got) <= everything
        counts[[index[t] for t in got]] += 1
    expected = 400 * 50 / len(everything)
    assert counts.min() > 0.6 * expected and counts.max() < 1.4 * expected
    torch.manual_seed(1)
    first = AllTripletsMiner(20)(x, labels)
    torch.manual_seed(1)
    assert all(torch.equal(u, v) for u, v in zip(first, AllTripletsMiner(20)(x, labels), strict=True))
    assert len(as_list(AllTripletsMiner(10**6)(x, labels))) == len(everything)


@pytest.mark.parametrize("total,k", [(10, 0), (10, 3), (10, 7), (10, 10), (10**12, 5)])
def test_sample_distinct(total: int, k: int) -> None:
    drawn = sample_distinct(total, k)
    assert len(drawn) == len(set(drawn.tolist())) == k and (drawn >= 0).all() and (drawn < total).all()


def test_capped_all_triplets_never_build_the_cube(python_runner) -> None:  # type: ignore[no-untyped-def]
    """B = 1024 with 2 labels has 268M triplets (6.4 GB as int64 triples); a cap of 1000 must stay small."""
    code = textwrap.dedent(
        """
        import json, resource, torch
        from omlcore.miners import AllTripletsMiner
        labels = torch.arange(1024) % 2
        x = torch.randn(1024, 8)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t = AllTripletsMiner(max_output_triplets=1000)(x, labels)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps([t.num, (after - before) / 1024]))
        """
    )
    result = python_runner(code)
    assert result.returncode == 0, result.stderr
    num, peak_mb = json.loads(result.stdout.splitlines()[-1])
    assert num == 1000 and peak_mb < 100


def test_hard_triplets_equal_naive_argmax_argmin() -> None:
    x, labels = batch(6, (1, 2, 4))
    sequences = torch.arange(len(labels)) % 3 - 1
    for options in ({}, {"sequences": sequences}):
        got = as_list(HardTripletsMiner()(x, labels, **options))
        expected = []
        for a in range(len(labels)):
            pos, neg = naive_ranked(x, x, labels, a, **options)
            if pos and neg:
                expected.append((a, pos[0], neg[0]))
        assert got == expected


@pytest.mark.parametrize(
    "labels",
    [
        [5, -3, 5, 10**12, -3, 5, 7, 10**12, 7, 7],
        [4, 4, 4],
        [1, 2, 3],
        [9],
        list(range(20)) * 3 + [99],
    ],
)
def test_same_label_groups_lists_every_group(labels: list[int]) -> None:
    array = np.array(labels)
    order, table, sizes = same_label_groups(array)
    assert sorted(order.tolist()) == list(range(len(labels)))
    assert [labels[i] for i in order] == sorted(labels)
    assert table.shape == (len(labels), max(labels.count(v) for v in labels))
    for p, item in enumerate(order.tolist()):
        members = [j for j, other in enumerate(labels) if other == labels[item]]
        row = table[p].tolist()
        assert sizes[p] == len(members)
        assert row[: len(members)] == members and set(row[len(members) :]) <= {members[-1]}


def mask_path(x: torch.Tensor, labels: torch.Tensor, ignore: torch.Tensor | None = None) -> Triplets:
    """The device path of HardTripletsMiner: (B, B) pair masks, then the row reductions."""
    positive, negative = pair_masks(labels, ignore_anchor_mask=ignore)
    return HardTripletsMiner().mine(x, None, positive, negative)


@pytest.mark.parametrize("sizes", [(8,) * 32, (1, 2, 5, 1, 3), (4,), (1,) * 6, (2, 1, 1, 1), tuple(range(1, 17))])
@pytest.mark.parametrize("with_ignore", [False, True])
def test_batch_hard_cpu_path_equals_the_mask_path(sizes: tuple[int, ...], with_ignore: bool) -> None:
    generator = torch.Generator().manual_seed(len(sizes))
    labels = torch.cat([torch.full((n,), 1000 - 7 * i) for i, n in enumerate(sizes)])
    labels = labels[torch.randperm(len(labels), generator=generator)]
    x = torch.nn.functional.normalize(torch.randn(len(labels), 48, generator=generator), dim=1)
    ignore = torch.rand(len(labels), generator=generator) < 0.3 if with_ignore else None
    got = HardTripletsMiner()(x, labels, ignore_anchor_mask=ignore)
    expected = mask_path(x, labels, ignore)
    assert all(torch.equal(u, v) for u, v in zip(got, expected, strict=True))
    assert got.anchor.dtype == torch.long and got.num == expected.num
    for a, p, n in as_list(got):  # and the definition, by brute force
        pos, neg = naive_ranked(x, x, labels, a)
        assert (p, n) == (pos[0], neg[0])


def test_batch_hard_ties_go_to_the_lowest_index() -> None:
    # small integers: every distance is exact, so the ties are exact whatever the GEMM's summation order
    x = torch.tensor([[0.0, 0], [3, 0], [0, 3], [5, 5], [1, 1], [1, 1], [-1, -1]])
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2])
    expected = [(0, 1, 4), (1, 2, 4), (2, 1, 4), (3, 4, 1), (4, 3, 0), (5, 3, 0), (6, 6, 0)]
    for triplets in (HardTripletsMiner()(x, labels), mask_path(x, labels)):
        assert as_list(triplets) == [t for t in expected if t[0] != 6]  # anchor 6 has no positive


def test_batch_hard_other_dtypes_and_gradients() -> None:
    x, labels = batch(5, (2, 3, 4))
    expected = as_list(HardTripletsMiner()(x, labels))  # float64 on the CPU path
    assert as_list(mask_path(x, labels)) == expected
    half = HardTripletsMiner()(x.bfloat16(), labels)  # bfloat16: the mask path
    assert half.num == len(expected)
    y = x.float().requires_grad_(True)
    assert as_list(HardTripletsMiner()(y * 1.0, labels)) == expected
    assert y.grad is None


def test_a_nan_embedding_is_mined_as_the_hardest_on_both_paths() -> None:
    x, labels = batch(5, (2, 3, 4))
    x = x.float()
    x[6, 1] = float("nan")  # label 1; the first item with a NaN score in every row
    got, masks = HardTripletsMiner()(x, labels), mask_path(x, labels)
    assert as_list(got) == as_list(masks) and got.num == len(labels)  # no anchor dropped
    for a, p, n in as_list(got):
        same = int(labels[a]) == int(labels[6])
        assert (p == 6) if same and a != 6 else (n == 6 or a == 6)
    positive, negative = pair_masks(labels)
    n_hard = NHardTripletsMiner(2, (1, 3))
    assert as_list(n_hard(x, labels)) == as_list(n_hard.mine(x, None, positive, negative))
    anchors = {a for a, _, _ in as_list(n_hard(x, labels))}
    assert anchors == {a for a in range(len(labels)) if int(positive[a].sum()) > 0}  # no anchor dropped


@pytest.mark.parametrize("n_positive,n_negative", [(1, 1), (2, 3), ((2, 3), (1, 4)), ([2, 2], 10)])
def test_n_hard_triplets_equal_naive_ranking(n_positive, n_negative) -> None:  # type: ignore[no-untyped-def]
    x, labels = batch(5, (2, 3, 4))
    ignore = torch.zeros(len(labels), dtype=torch.bool)
    ignore[::4] = True
    pos_slice = slice(0, n_positive) if isinstance(n_positive, int) else slice(n_positive[0] - 1, n_positive[1])
    neg_slice = slice(0, n_negative) if isinstance(n_negative, int) else slice(n_negative[0] - 1, n_negative[1])
    for options in ({}, {"ignore_anchor_mask": ignore}):
        got = as_list(NHardTripletsMiner(n_positive, n_negative)(x, labels, **options))
        expected = []
        for a in range(len(labels)):
            pos, neg = naive_ranked(x, x, labels, a, ignore=options.get("ignore_anchor_mask"))
            expected += [(a, p, n) for p in pos[pos_slice] for n in neg[neg_slice]]
        assert got == expected
    hard = HardTripletsMiner()(x, labels)
    assert as_list(NHardTripletsMiner(1, 1)(x, labels)) == as_list(hard)


def test_n_hard_triplets_argument_errors() -> None:
    with pytest.raises(ValueError, match=r"n_positive=\(3, 2\) is not a valid range"):
        NHardTripletsMiner((3, 2))
    with pytest.raises(ValueError, match=r"n_negative=0"):
        NHardTripletsMiner(1, 0)
    with pytest.raises(TypeError, match=r"must be an int or a \(first, last\) pair"):
        NHardTripletsMiner("2")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "miner", [AllTripletsMiner(), AllTripletsMiner(5), HardTripletsMiner(), NHardTripletsMiner(2, 2)]
)
@pytest.mark.parametrize("labels", [[3, 3, 3, 3], [0, 1, 2, 3], [7], []])
def test_no_valid_triplet_gives_an_empty_result(miner: TripletMiner, labels: list[int]) -> None:
    x = torch.randn(len(labels), 4, requires_grad=True)
    got = miner(x, torch.tensor(labels, dtype=torch.long))
    assert isinstance(got, Triplets) and got.is_empty() and got.device == x.device
    assert all(t.shape == (0,) and t.dtype == torch.long for t in got)


def test_mining_keeps_the_graph_and_rejects_bad_shapes() -> None:
    x, labels = batch()
    x.requires_grad_(True)
    y = x * 2
    HardTripletsMiner()(y, labels)
    y.sum().backward()
    assert x.grad is not None
    with pytest.raises(ValueError, match=r"labels must be \(11,\) to match embeddings"):
        HardTripletsMiner()(x, labels[:3])
    with pytest.raises(ValueError, match=r"pass both ref_emb and ref_labels"):
        HardTripletsMiner()(x, labels, x)


def test_batch_hard_equals_pml_batch_hard_miner() -> None:
    pml_miners = pytest.importorskip("pytorch_metric_learning.miners")
    torch.manual_seed(0)
    labels = torch.arange(16).repeat_interleave(4)[torch.randperm(64)]
    x = torch.nn.functional.normalize(torch.randn(64, 32), dim=1)  # PML normalises by default
    ours, theirs = HardTripletsMiner()(x, labels), pml_miners.BatchHardMiner()(x, labels)
    assert all(torch.equal(u, v) for u, v in zip(ours, theirs, strict=True))
    ref = torch.nn.functional.normalize(torch.randn(40, 32), dim=1)
    ref_labels = torch.arange(40) % 16
    ours, theirs = (
        HardTripletsMiner()(x, labels, ref, ref_labels),
        pml_miners.BatchHardMiner()(x, labels, ref, ref_labels),
    )
    assert all(torch.equal(u, v) for u, v in zip(ours, theirs, strict=True))


def test_all_triplets_equal_pml_all_triplets_indices() -> None:
    lmu = pytest.importorskip("pytorch_metric_learning.utils.loss_and_miner_utils")
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 3, 3, 2])
    ours = AllTripletsMiner()(torch.zeros(9, 2), labels)
    assert all(torch.equal(u, v) for u, v in zip(ours, lmu.get_all_triplets_indices(labels), strict=True))


def test_pml_miner_through_the_registry_returns_triplets() -> None:
    pytest.importorskip("pytorch_metric_learning")
    from omlcore.plugins import get_registry

    x, labels = batch()
    miner = get_registry().build("miner", "pml.BatchHardMiner")
    got = miner(torch.nn.functional.normalize(x, dim=1), labels)
    assert isinstance(got, Triplets) and got.num > 0


@pytest.mark.parametrize("with_reference", [False, True])
def test_row_shifted_similarities_rank_rows_by_distance(with_reference: bool) -> None:
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(40, 7, generator=generator, dtype=torch.float64) * 3
    ref = torch.randn(25, 7, generator=generator, dtype=torch.float64) if with_reference else None
    other = x if ref is None else ref
    brute = [[-0.5 * float(((x[i] - other[j]) ** 2).sum()) for j in range(len(other))] for i in range(len(x))]
    shift = 0.5 * (x**2).sum(1, keepdim=True)  # the per-row constant: t = (||x_i||^2 - ||x_i - r_j||^2) / 2
    torch.testing.assert_close(row_shifted_similarities(x, ref) - shift, torch.tensor(brute, dtype=torch.float64))


def test_labels_become_int64_class_ids_and_bad_ones_are_named() -> None:
    x, labels = batch(4, (2, 3))
    expected = as_list(HardTripletsMiner()(x, labels))
    for same in (labels.double(), labels.int(), labels.numpy().astype("int16"), labels.tolist()):
        assert as_list(HardTripletsMiner()(x, same)) == expected
    broken = labels.double()
    broken[[2, 7]] = torch.tensor([float("nan"), 1.5], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"labels must be class ids.*\[nan, 1\.5\] at positions \[2, 7\]"):
        HardTripletsMiner()(x, broken)
    with pytest.raises(ValueError, match="ref_labels must be class ids"):
        NHardTripletsMiner()(x, labels, x, broken)
