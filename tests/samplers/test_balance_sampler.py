"""BalanceSampler: OML's batch statistics, determinism, the distributed split, errors, numpy-only import."""

from __future__ import annotations

import json
from collections import Counter
from itertools import combinations

import numpy as np
import pytest

from omlcore.protocols import Sampler
from omlcore.samplers import BalanceSampler
from omlcore.samplers.base import sample_within_groups


def make_labels(n_labels: int, sizes: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """``n_labels`` labels with sizes cycling through ``sizes``, shuffled."""
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(sizes[i % len(sizes)], 100 + i) for i in range(n_labels)])
    return rng.permutation(labels)


def test_batches_follow_oml_semantics() -> None:
    labels = make_labels(23, (2, 3, 5, 9))
    sampler = BalanceSampler(labels, n_labels=4, n_instances=3)
    assert isinstance(sampler, Sampler) and sampler.batch_size == 12
    batches = list(sampler)
    assert len(batches) == len(sampler) == 23 // 4
    seen: list[int] = []
    for batch in batches:
        assert len(batch) == 12 and all(isinstance(i, int) for i in batch)
        batch_labels = labels[batch]
        counts = Counter(batch_labels.tolist())
        assert len(counts) == 4 and set(counts.values()) == {3}
        for label in counts:
            items = [i for i in batch if labels[i] == label]
            available = int((labels == label).sum())
            # distinct when the label has enough items, else all of them plus repeats
            assert len(set(items)) == min(3, available)
        seen.extend(counts)
    assert len(seen) == len(set(seen)) == 5 * 4  # every label at most once per epoch


def test_instances_within_a_label_are_uniform() -> None:
    """Floyd's algorithm + shuffle draws every k-subset (and order) equally often."""
    rng = np.random.default_rng(0)
    draws = sample_within_groups(rng, np.full(30_000, 5), 2)
    assert ((draws >= 0) & (draws < 5)).all() and (draws[:, 0] != draws[:, 1]).all()
    pairs = Counter(map(tuple, draws.tolist()))
    assert len(pairs) == 20  # ordered pairs of 5 items
    assert max(pairs.values()) / min(pairs.values()) < 1.15
    short = sample_within_groups(rng, np.array([2, 3, 1]), 4)
    assert sorted(short[0, :2]) == [0, 1] and sorted(short[1, :3]) == [0, 1, 2] and (short[2] == 0).all()


def test_deterministic_per_seed_and_epoch() -> None:
    labels = make_labels(40, (4, 6))
    a, b = BalanceSampler(labels, 4, 2, seed=3), BalanceSampler(labels, 4, 2, seed=3)
    first = list(a)
    assert first == list(b)  # same seed, same epoch
    assert list(a) == first and a.epoch == 0  # iterating again gives the same epoch: only set_epoch moves on
    a.set_epoch(1)
    assert list(a) != first and a.epoch == 1
    a.set_epoch(0)
    assert list(a) == first
    b.set_epoch(5)
    a.set_epoch(5)
    assert list(a) == list(b) != first
    assert list(BalanceSampler(labels, 4, 2, seed=4)) != first


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_distributed_shares_are_disjoint_equal_and_cover_the_epoch(world_size: int) -> None:
    labels = make_labels(45, (3, 5))
    single = BalanceSampler(labels, 4, 2, seed=7, rank=0, world_size=1)
    single.set_epoch(2)
    epoch = list(single)
    assert len(epoch) == 11
    shares = []
    for rank in range(world_size):
        sampler = BalanceSampler(labels, 4, 2, seed=7, rank=rank, world_size=world_size)
        sampler.set_epoch(2)
        shares.append(list(sampler))
        assert len(shares[-1]) == len(sampler) == 11 // world_size
    kept = 11 // world_size * world_size
    flat = [tuple(b) for share in shares for b in share]
    assert len(set(flat)) == len(flat)  # disjoint
    assert sorted(flat) == sorted(tuple(b) for b in epoch[:kept])  # the 1-process epoch minus the remainder
    for rank, share in enumerate(shares):
        assert share == epoch[rank:kept:world_size]


def test_rank_and_world_size_come_from_torch_distributed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    labels = make_labels(20, (2,))
    sampler = BalanceSampler(labels, 2, 2)
    assert (sampler.rank, sampler.world_size) == (0, 1)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert (sampler.rank, sampler.world_size) == (0, 1) and len(sampler) == 10
    finally:
        dist.destroy_process_group()


def test_errors_name_the_culprit_and_the_fix() -> None:
    labels = make_labels(10, (3,))
    with pytest.raises(ValueError, match=r"n_labels=64 but the dataset has only 10 labels; lower n_labels"):
        BalanceSampler(labels, 64, 4)
    with pytest.raises(ValueError, match=r"n_instances must be >= 2"):
        BalanceSampler(labels, 2, 1)
    with pytest.raises(ValueError, match=r"n_labels must be >= 2"):
        BalanceSampler(labels, 1, 2)
    with pytest.raises(TypeError, match=r"n_labels must be an integer"):
        BalanceSampler(labels, 2.0, 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"1 label\(s\) have a single item, e.g. label 7 \(index 3\)"):
        BalanceSampler([1, 1, 2, 7, 2], 2, 2)
    with pytest.raises(ValueError, match=r"pass both rank and world_size"):
        BalanceSampler(labels, 2, 2, rank=1)
    with pytest.raises(ValueError, match=r"rank must be in \[0, world_size\)"):
        BalanceSampler(labels, 2, 2, rank=2, world_size=2)
    with pytest.raises(ValueError, match=r"an epoch has 1 batch\(es\), fewer than world_size=2"):
        len(BalanceSampler(labels, 8, 2, rank=0, world_size=2))


def test_works_as_a_dataloader_batch_sampler() -> None:
    torch = pytest.importorskip("torch")
    labels = make_labels(12, (4,))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.as_tensor(labels)), batch_sampler=BalanceSampler(labels, 3, 2)
    )
    batches = [b[0] for b in loader]
    assert len(batches) == 4 and all(len(set(b.tolist())) == 3 for b in batches)


def test_string_labels_and_pairs_cover_all_items() -> None:
    labels = np.array(["b", "a", "a", "b", "c", "c"])
    batches = list(BalanceSampler(labels, 3, 2))
    assert len(batches) == 1 and sorted(batches[0]) == list(range(6))
    # with 2 items per label and n_instances 2 every pair is the label's two items
    assert all(set(p) <= set(range(6)) for p in combinations(batches[0], 2))


def test_samplers_import_numpy_only(python_runner) -> None:  # type: ignore[no-untyped-def]
    code = (
        "import json, sys\n"
        "import omlcore.samplers as s\n"
        "batches = list(s.BalanceSampler([0, 0, 1, 1, 2, 2], 2, 2))\n"
        "print(json.dumps(['torch' in sys.modules, len(batches)]))"
    )
    result = python_runner(code)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == [False, 1]
