"""omlcore_torch.distributed's sharding, checked rank by rank without a process group (explicit rank / world)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, SequentialSampler, TensorDataset

from omlcore.samplers import BalanceSampler
from omlcore_torch.distributed import (
    ShardedBatchSampler,
    ShardSampler,
    all_gather_padded,
    eval_shard,
    gather_states,
    is_sharded,
    rank_and_world_size,
    shard_eval_loader,
    shard_train_loader,
)


@pytest.mark.parametrize("num_items", [1, 7, 24, 25, 100])
@pytest.mark.parametrize("batch_size", [1, 5, 8])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_eval_shards_are_contiguous_batch_aligned_and_cover_every_item_once(
    num_items: int, batch_size: int, world_size: int
) -> None:
    shards = [eval_shard(num_items, batch_size, rank, world_size) for rank in range(world_size)]
    assert [i for shard in shards for i in shard] == list(range(num_items))  # rank order = dataset order
    batches = -(-num_items // batch_size)
    if batches >= world_size:
        assert all(shard.start % batch_size == 0 for shard in shards)  # same batches as one process
        per_rank = [-(-len(shard) // batch_size) for shard in shards]
        assert max(per_rank) - min(per_rank) <= 1 and min(per_rank) >= 1
    elif num_items >= world_size:
        assert all(len(shard) >= 1 for shard in shards)


def test_shard_eval_loader_splits_batches_without_padding() -> None:
    dataset = TensorDataset(torch.arange(23))
    loader = DataLoader(dataset, batch_size=4)
    one_process = [batch[0].tolist() for batch in loader]
    per_rank = [[b[0].tolist() for b in shard_eval_loader(loader, rank, 2)] for rank in range(2)]
    assert per_rank[0] + per_rank[1] == one_process  # the same batches, split in two contiguous blocks
    assert [len(p) for p in per_rank] == [3, 3]
    sharded = shard_eval_loader(loader, 1, 2)
    assert isinstance(sharded.sampler, ShardSampler) and isinstance(sharded.sampler, DistributedSampler)
    assert is_sharded(sharded) and not is_sharded(loader)
    assert shard_eval_loader(loader) is loader  # one process: unchanged


def test_shard_eval_loader_with_a_custom_batch_sampler_and_drop_last() -> None:
    dataset = TensorDataset(torch.arange(10))
    batches = [[9, 8], [7], [6, 5, 4], [3, 2, 1, 0]]
    loader = DataLoader(dataset, batch_sampler=batches)
    per_rank = [[b[0].tolist() for b in shard_eval_loader(loader, rank, 2)] for rank in range(2)]
    assert per_rank == [[[9, 8], [7]], [[6, 5, 4], [3, 2, 1, 0]]]
    dropping = DataLoader(dataset, batch_size=3, drop_last=True)
    per_rank = [[b[0].tolist() for b in shard_eval_loader(dropping, rank, 2)] for rank in range(2)]
    assert per_rank == [[[0, 1, 2]], [[3, 4, 5], [6, 7, 8]]]
    with pytest.raises(ValueError, match="every process needs at least one"):
        shard_eval_loader(DataLoader(TensorDataset(torch.arange(1))), 0, 2)


def test_omlcore_samplers_are_left_alone_and_others_are_sharded() -> None:
    labels = [i // 4 for i in range(32)]
    dataset = TensorDataset(torch.arange(32))
    balanced = DataLoader(dataset, batch_sampler=BalanceSampler(labels, n_labels=2, n_instances=4))
    assert is_sharded(balanced) and shard_train_loader(balanced, 1, 2) is balanced

    custom = DataLoader(dataset, batch_sampler=[list(range(i, i + 4)) for i in range(0, 32, 4)][:7])
    shares = [[b[0].tolist() for b in shard_train_loader(custom, rank, 2)] for rank in range(2)]
    assert shares[0] == [[0, 1, 2, 3], [8, 9, 10, 11], [16, 17, 18, 19]]  # batches 0, 2, 4; the 7th is dropped
    assert shares[1] == [[4, 5, 6, 7], [12, 13, 14, 15], [20, 21, 22, 23]]
    assert isinstance(shard_train_loader(custom, 0, 2).batch_sampler, ShardedBatchSampler)

    plain = DataLoader(dataset, batch_size=4, shuffle=True, num_workers=0)
    shards = [shard_train_loader(plain, rank, 2, seed=3) for rank in range(2)]
    for shard in shards:
        assert isinstance(shard.sampler, DistributedSampler) and shard.sampler.shuffle and shard.batch_size == 4
        shard.sampler.set_epoch(5)
    seen = [int(i) for shard in shards for batch in shard for i in batch[0]]
    assert sorted(seen) == list(range(32))


def test_sharded_batch_sampler_forwards_set_epoch_and_equal_lengths() -> None:
    inner = BatchSampler(SequentialSampler(range(10)), batch_size=2, drop_last=False)
    shares = [list(ShardedBatchSampler(inner, rank, 3)) for rank in range(3)]
    assert shares == [[[0, 1]], [[2, 3]], [[4, 5]]]  # 5 batches: 1 each, the last 2 dropped
    assert [len(ShardedBatchSampler(inner, rank, 3)) for rank in range(3)] == [1, 1, 1]
    balance = BalanceSampler([i // 2 for i in range(12)], n_labels=2, n_instances=2, rank=0, world_size=1)
    ShardedBatchSampler(balance, 0, 2).set_epoch(7)
    assert balance.epoch == 7
    with pytest.raises(ValueError, match="fewer than world_size=3"):
        list(ShardedBatchSampler(BatchSampler(SequentialSampler(range(2)), 1, False), 0, 3))
    with pytest.raises(ValueError, match="pass both rank and world_size"):
        ShardedBatchSampler(inner, rank=1)


def test_without_a_process_group_everything_is_one_process() -> None:
    assert rank_and_world_size() == (0, 1)
    tensor = torch.arange(6).reshape(3, 2)
    assert all_gather_padded(tensor)[0] is tensor
    state = {"a": torch.ones(2)}
    assert gather_states(state) == [state]
