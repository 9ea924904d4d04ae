"""A tiny generated image dataset in OML's CSV format, shared by the adapter tests (and their subprocess scripts), a
dataset that counts its loads and its loaders' worker starts, and one torch thread per test process.

Tiny models gain nothing from a second thread, and on a busy machine OpenMP threads that wait for a busy core make
each step tens of times slower; subprocesses get ``OMP_NUM_THREADS=1`` (:data:`ONE_THREAD`) for the same reason.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset, get_worker_info

#: 32 px images to 32 px tensors (normalised): what SmallCNN trains on in a blink.
TRANSFORM: dict[str, Any] = {"name": "resize_normalize", "args": {"size": 32}}
TRAIN_LABELS = 8
VAL_LABELS = 6
PER_LABEL = 4
#: Environment additions for the subprocesses the tests start.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_toy_images(root: Path, seed: int = 0) -> pd.DataFrame:
    """``TRAIN_LABELS`` + ``VAL_LABELS`` labels of ``PER_LABEL`` noisy 32 px images each, written as PNGs under
    ``root``; the table (also saved as ``root/df.csv``) has two categories. Neighbouring labels have
    close colours, so that retrieval is not perfect."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for label in range(TRAIN_LABELS + VAL_LABELS):
        colour = np.array([40 + 12 * label, 200 - 9 * label, 90 + 5 * (label % 3)], dtype=float)
        train = label < TRAIN_LABELS
        for k in range(PER_LABEL):
            pixels = np.clip(colour + rng.normal(0, 45, (32, 32, 3)), 0, 255).astype(np.uint8)
            path = f"{label}_{k}.png"
            Image.fromarray(pixels).save(root / path)
            rows.append(
                {
                    "label": label,
                    "path": path,
                    "split": "train" if train else "validation",
                    "is_query": None if train else True,
                    "is_gallery": None if train else True,
                    "category": "warm" if label % 2 else "cold",
                }
            )
    df = pd.DataFrame(rows)
    df.to_csv(root / "df.csv", index=False)
    return df


class CountingDataset(Dataset[dict[str, Any]]):
    """``n_labels`` labels of ``per_label`` items that count their loads (``__getitem__`` calls) and the loader
    worker processes that loaded any (a worker starts, then loads its share of the prefetched batches at once).

    An item's ``images`` is ``[idx, 4 features]``: :class:`IndexRecorder` reads the index back from a batch.
    Items are queries and gallery items, for :func:`~omlcore_torch.evaluate`.
    """

    def __init__(self, n_labels: int = 8, per_label: int = 4) -> None:
        self.labels = [i // per_label for i in range(n_labels * per_label)]
        self.loaded = multiprocessing.Value("i", 0)
        self.workers = multiprocessing.Value("i", 0)
        self.in_worker = False  # set in a worker's own copy of the dataset once it has been counted

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        with self.loaded.get_lock():
            self.loaded.value += 1
        if get_worker_info() is not None and not self.in_worker:
            self.in_worker = True
            with self.workers.get_lock():
                self.workers.value += 1
        features = torch.randn(4, generator=torch.Generator().manual_seed(idx)) + self.labels[idx]
        images = torch.cat([torch.tensor([float(idx)]), features])
        return {"images": images, "labels": self.labels[idx], "is_query": True, "is_gallery": True}

    def get_labels(self) -> list[int]:
        return self.labels

    def take_counts(self) -> tuple[int, int]:
        """``(items loaded, workers that loaded)`` since the last call."""
        counts = self.loaded.value, self.workers.value
        self.loaded.value = self.workers.value = 0
        return counts


class IndexRecorder(torch.nn.Module):
    """A linear extractor over :class:`CountingDataset`'s features that records the dataset indices of each batch
    it embeds in training mode (``batches``)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.linear = torch.nn.Linear(4, 8)
        self.batches: list[list[int]] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.batches.append(images[:, 0].long().tolist())
        out: torch.Tensor = self.linear(images[:, 1:])
        return out


@pytest.fixture
def counting_dataset() -> CountingDataset:
    """32 items of 8 labels that count their loads and worker starts (:class:`CountingDataset`)."""
    return CountingDataset()


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of the generated dataset (images and ``df.csv``), made once per session."""
    root = tmp_path_factory.mktemp("toy_images")
    make_toy_images(root)
    return root


_PLUGIN_ENTRIES_SCRIPT = """
import json, sys
import {module} as plugin
from omlcore.errors import MissingDependencyError
from omlcore.plugins import registry_of

registry = registry_of([({name!r}, plugin)])
entries = {{}}
for entry in registry.entries():
    entries[entry.name] = {{"available": entry.available, "reason": entry.unavailable_reason}}
frameworks = {{"lightning", "pytorch_lightning", "lightning_fabric", "pytorch_metric_learning"}}
heavy = sorted(m for m in sys.modules if m.split(".")[0] in frameworks)
if {build!r}:
    for entry in registry.entries():
        try:
            entry.build()
            entries[entry.name]["error"] = None
        except MissingDependencyError as exc:
            entries[entry.name]["error"] = str(exc)
{extra}
print(json.dumps({{"entries": entries, "heavy": heavy, "extra": locals().get("extra")}}))
"""


@pytest.fixture
def plugin_entries(python_json: Any) -> Any:
    """An adapter plugin's registry listed in a fresh interpreter: ``{"entries", "heavy", "extra"}``.

    ``entries``: name -> availability and reason (and, with ``build=True``, the error of building it); ``heavy``:
    the framework modules imported by then; ``hidden``: top-level modules made unimportable first, as if not
    installed; ``extra``: code run last, whose variable ``extra`` is returned.
    """

    def run(module: str, name: str, *, hidden: tuple[str, ...] = (), build: bool = False, extra: str = "") -> Any:
        return python_json(_PLUGIN_ENTRIES_SCRIPT.format(module=module, name=name, build=build, extra=extra), hidden)

    return run


@pytest.fixture
def make_recorder() -> type[IndexRecorder]:
    """:class:`IndexRecorder`, to build one per run."""
    return IndexRecorder
