"""Run by test_torch_ddp.py as ``python torch_ddp_script.py DATA_ROOT OUT``: one-process results, then the same under
a real 2-process gloo group started with ``torch.multiprocessing``; every result is saved for the test to compare."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor
from torch.utils.data import DataLoader

from omlcore.datasets import ImageLabeledDataset, ImageQueryGalleryDataset
from omlcore.losses import TripletLossWithMiner
from omlcore.metrics import EmbeddingMetrics
from omlcore.models import SmallCNN
from omlcore.samplers import BalanceSampler
from omlcore_torch import all_gather_padded, evaluate, fit, inference
from omlcore_torch.distributed import gather_states, rank_and_world_size

TRANSFORM = {"name": "resize_normalize", "args": {"size": 32}}
BATCH = 5  # 24 validation items: 5 batches, split 2 / 3 between the ranks (10 and 14 items)


class LabelStats:
    """An exact accumulator using every reduction: item count and label histogram (sum), labels (cat), extreme
    embedding norms (max / min)."""

    state_reductions: Mapping[str, Any] = {
        "count": "sum",
        "histogram": "sum",
        "labels": "cat",
        "high": "max",
        "low": "min",
    }

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.state = {
            "count": torch.zeros((), dtype=torch.long),
            "histogram": torch.zeros(32, dtype=torch.long),
            "labels": torch.zeros(0, dtype=torch.long),
            "high": torch.tensor(-torch.inf),
            "low": torch.tensor(torch.inf),
        }

    def update(self, batch: Mapping[str, Any]) -> None:
        labels, norms = torch.as_tensor(batch["labels"]), batch["embeddings"].norm(dim=1)
        self.merge_state(
            [
                {
                    "count": torch.tensor(len(labels)),
                    "histogram": torch.bincount(labels, minlength=32),
                    "labels": labels,
                    "high": norms.max(),
                    "low": norms.min(),
                }
            ]
        )

    def get_state(self) -> dict[str, Tensor]:
        return dict(self.state)

    def merge_state(self, states: Sequence[Mapping[str, Tensor]]) -> None:
        for other in states:
            self.state = {
                "count": self.state["count"] + other["count"],
                "histogram": self.state["histogram"] + other["histogram"],
                "labels": torch.cat([self.state["labels"], other["labels"]]),
                "high": torch.maximum(self.state["high"], other["high"]),
                "low": torch.minimum(self.state["low"], other["low"]),
            }

    def compute(self) -> dict[str, Any]:
        return {name: value.tolist() for name, value in self.state.items()}


def run(root: Path) -> dict[str, Any]:
    df = pd.read_csv(root / "df.csv")
    train = ImageLabeledDataset(df, dataset_root=root, transform=TRANSFORM)
    val = ImageQueryGalleryDataset(df, dataset_root=root, transform=TRANSFORM)
    torch.manual_seed(0)
    model = SmallCNN(feat_dim=16, widths=(8, 16))
    metrics = EmbeddingMetrics(cmc_top_k=(1, 3), map_top_k=(3,), pml_metrics=("precision_at_1",))
    out: dict[str, Any] = {
        "inference": inference(model, val, batch_size=BATCH, progress=False),
        "metrics": evaluate(model, val, metrics, batch_size=BATCH, progress=False),
        "stats": evaluate(model, val, LabelStats(), batch_size=BATCH, progress=False),
    }
    rank, world_size = rank_and_world_size()
    out["gathered"] = all_gather_padded(torch.arange(rank * 3 + 1).float().reshape(-1, 1).repeat(1, 2))
    out["scalars"] = all_gather_padded(torch.tensor(rank + 0.5))
    out["states"] = gather_states({"x": torch.full((rank + 1, 3), rank, dtype=torch.bool), "empty": torch.zeros(0)})
    loader = DataLoader(train, batch_sampler=BalanceSampler(train.get_labels(), n_labels=2, n_instances=4, seed=1))
    seen: list[int] = []
    loader.dataset.read_image = _recording(loader.dataset.read_image, seen)  # type: ignore[attr-defined]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    out["history"] = fit(model, TripletLossWithMiner(margin=0.5), optimizer, loader, epochs=1, progress=False)
    out["trained"] = torch.cat([p.detach().flatten() for p in model.parameters()])
    out["buffers"] = torch.cat([b.detach().double().flatten() for b in model.buffers()])  # BatchNorm statistics
    out["seen"] = seen
    out["world_size"] = world_size
    return out


def _recording(read_image: Any, seen: list[int]) -> Any:
    def read(idx: int) -> Any:
        seen.append(idx)
        return read_image(idx)

    return read


def worker(rank: int, world_size: int, root: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{out}/store", rank=rank, world_size=world_size)
    torch.save(run(Path(root)), Path(out) / f"rank{rank}.pt")
    dist.barrier()  # leave together: a process tearing its gloo pairs down early can abort the other (SIGABRT)
    dist.destroy_process_group()


if __name__ == "__main__":
    root, out = sys.argv[1], sys.argv[2]
    torch.save(run(Path(root)), Path(out) / "one.pt")
    mp.spawn(worker, args=(2, root, out), nprocs=2, join=True)
