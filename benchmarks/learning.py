"""Learning curves of omlcore and OML 4.0 trained side by side with identical settings on the glyphs data.

Both libraries train the same ResNet18 from the same random initialisation (OML's ``ResnetExtractor`` built with
the seed, its weights loaded into omlcore's ``ResNetExtractor``; the oracle tests check that both compute the same
embeddings for the same weights) on the shipped glyphs images (32 x 32 grayscale as 3 channels, normalised with
ImageNet's mean and std, no augmentation): each library's triplet loss (margin 0.2) with its batch-hard miner,
its ``BalanceSampler`` (30 characters x 16 fonts per batch: an epoch is every training character once), Adam
(lr 0.002), batch statistics in train mode. omlcore trains with ``omlcore_torch.fit``, OML with the loop of its
README. After every epoch (and before the first) the model embeds the validation images (Cyrillic letters it
never saw, every image query and gallery) and omlcore's ``EmbeddingMetrics`` scores it: the same metric code for
both, so that the curves differ by training alone (``tests/oracles`` shows OML's metrics equal omlcore's).

Every (seed, library) run is its own process; the libraries alternate within each seed. The table gives, per
epoch shown, the mean and standard deviation over seeds of CMC@1, precision@5 and mAP@5, and a two-sided exact
permutation test of the difference of the means (every split of the runs into two groups of the sizes given),
and the mean time per epoch (training and validation).

    python benchmarks/learning.py --seeds 5 --epochs 10   # in the bench env: tox -e bench -- benchmarks/learning.py
    python benchmarks/learning.py --seeds 1 --epochs 1    # a smoke run
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import time
from typing import Any

METRICS = ("OVERALL/cmc/1", "OVERALL/precision/5", "OVERALL/map/5")
LIBRARIES = ("omlcore", "oml")
N_LABELS, N_INSTANCES, MARGIN, LR = 30, 16, 0.2, 0.002


def _data() -> tuple[Any, Any, Any, Any, Any]:
    """Train images and labels, validation images, labels and the query / gallery flags, as tensors."""
    import numpy as np
    import torch

    from omlcore.datasets.glyphs import glyphs_dataframe, load_glyphs

    glyphs, frame = load_glyphs(), glyphs_dataframe()
    images = torch.from_numpy(glyphs.images).float().div(255.0)[:, None].expand(-1, 3, -1, -1)
    mean = torch.tensor([0.485, 0.456, 0.406])[None, :, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[None, :, None, None]
    images = ((images - mean) / std).contiguous()
    train = (frame["split"] == "train").to_numpy()
    labels = torch.from_numpy(frame["label"].to_numpy(np.int64))
    return images[train], labels[train], images[~train], labels[~train], int((~train).sum())


def _dataset(images: Any, labels: Any, validation: bool) -> Any:
    """Items as omlcore's loops read them: ``images``, ``labels`` (and the flags and ``idx`` for validation)."""
    from torch.utils.data import Dataset

    class Items(Dataset[dict[str, Any]]):
        def __len__(self) -> int:
            return len(images)

        def __getitem__(self, idx: int) -> dict[str, Any]:
            item = {"images": images[idx], "labels": int(labels[idx])}
            if validation:
                item.update(is_query=True, is_gallery=True, idx=idx)
            return item

    return Items()


def _metrics() -> Any:
    from omlcore.metrics import EmbeddingMetrics

    return EmbeddingMetrics(cmc_top_k=(1,), precision_top_k=(5,), map_top_k=(5,), pcf_variance=())


def _initial_weights(seed: int) -> dict[str, Any]:
    import torch
    from oml.models import ResnetExtractor

    torch.manual_seed(seed)
    return ResnetExtractor(None, "resnet18", gem_p=None, remove_fc=True, normalise_features=False).state_dict()


def _run_omlcore(seed: int, epochs: int) -> list[dict[str, float]]:
    import torch
    from torch.utils.data import DataLoader

    from omlcore.losses import TripletLossWithMiner
    from omlcore.miners import HardTripletsMiner
    from omlcore.models import ResNetExtractor
    from omlcore.samplers import BalanceSampler
    from omlcore_torch import fit

    train_images, train_labels, val_images, val_labels, _ = _data()
    model = ResNetExtractor("resnet18", weights=_initial_weights(seed), normalise_features=False)
    torch.manual_seed(seed)
    sampler = BalanceSampler(train_labels.tolist(), n_labels=N_LABELS, n_instances=N_INSTANCES, seed=seed)
    loader = DataLoader(_dataset(train_images, train_labels, False), batch_sampler=sampler)
    loss = TripletLossWithMiner(margin=MARGIN, miner=HardTripletsMiner())
    history = fit(
        model,
        loss,
        torch.optim.Adam(model.parameters(), lr=LR),
        loader,
        epochs=epochs,
        val_dataset=_dataset(val_images, val_labels, True),
        metrics=_metrics(),
        val_batch_size=256,
        validate_untrained=True,
        progress=False,
    )
    return [
        {"epoch": record["epoch"] + 1, "time": record.get("epoch_time_s", 0.0), **{m: record[m] for m in METRICS}}
        for record in history
    ]


def _run_oml(seed: int, epochs: int) -> list[dict[str, float]]:
    import numpy as np
    import torch
    from oml.losses import TripletLossWithMiner
    from oml.miners import HardTripletsMiner
    from oml.models import ResnetExtractor
    from oml.samplers import BalanceSampler
    from torch.utils.data import DataLoader

    from omlcore_torch import evaluate

    train_images, train_labels, val_images, val_labels, _ = _data()
    model = ResnetExtractor(None, "resnet18", gem_p=None, remove_fc=True, normalise_features=False)
    model.load_state_dict(_initial_weights(seed))
    torch.manual_seed(seed)
    np.random.seed(seed)
    sampler = BalanceSampler(train_labels.tolist(), n_labels=N_LABELS, n_instances=N_INSTANCES)
    loader = DataLoader(_dataset(train_images, train_labels, False), batch_sampler=sampler)
    criterion = TripletLossWithMiner(margin=MARGIN, miner=HardTripletsMiner(), need_logs=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    val_set = _dataset(val_images, val_labels, True)

    def validate() -> dict[str, float]:
        results = evaluate(model, val_set, _metrics(), batch_size=256, progress=False)
        return {m: float(results[m]) for m in METRICS}

    curve = [{"epoch": 0, "time": 0.0, **validate()}]
    for epoch in range(epochs):
        start = time.perf_counter()
        model.train()
        for batch in loader:
            loss = criterion(model(batch["images"]), batch["labels"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        metrics = validate()
        curve.append({"epoch": epoch + 1, "time": time.perf_counter() - start, **metrics})
    return curve


def _child(library: str, seed: int, epochs: int, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    curve = (_run_omlcore if library == "omlcore" else _run_oml)(seed, epochs)
    print(json.dumps({"library": library, "seed": seed, "curve": curve}))


def permutation_p(first: list[float], second: list[float]) -> float:
    """Two-sided exact permutation test of the difference of the means: the fraction of all ways to split the
    pooled values into groups of these sizes whose |difference of means| is at least the observed one."""
    pooled, n = first + second, len(first)
    observed = abs(statistics.fmean(first) - statistics.fmean(second))
    total = extreme = 0
    for chosen in itertools.combinations(range(len(pooled)), n):
        picked = set(chosen)
        group = [pooled[i] for i in chosen]
        rest = [pooled[i] for i in range(len(pooled)) if i not in picked]
        total += 1
        extreme += abs(statistics.fmean(group) - statistics.fmean(rest)) >= observed - 1e-12
    return extreme / total


def _summary(runs: dict[str, list[list[dict[str, float]]]], epochs: int) -> str:
    shown = sorted({0, 1, 2, 3, 5, epochs} & set(range(epochs + 1)))
    lines = [
        "| epoch | metric | omlcore mean ± std | OML 4.0 mean ± std | difference | permutation p |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for epoch in shown:
        for metric in METRICS:
            values = {lib: [curve[epoch][metric] for curve in runs[lib]] for lib in LIBRARIES}
            cells = [
                f"{statistics.fmean(v):.4f} ± {statistics.stdev(v) if len(v) > 1 else 0.0:.4f}" for v in values.values()
            ]
            difference = statistics.fmean(values["omlcore"]) - statistics.fmean(values["oml"])
            p = permutation_p(values["omlcore"], values["oml"]) if min(map(len, values.values())) > 1 else float("nan")
            name = metric.removeprefix("OVERALL/")
            lines.append(f"| {epoch} | {name} | {cells[0]} | {cells[1]} | {difference:+.4f} | {p:.3f} |")
    for lib in LIBRARIES:
        times = [row["time"] for curve in runs[lib] for row in curve[1:]]
        mean = statistics.fmean(times)
        lines.append(f"\n{lib}: {mean:.1f} s per epoch (mean of {len(times)} epochs, with validation)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", nargs=2, metavar=("LIBRARY", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], int(args.child[1]), args.epochs, args.threads)
        return
    runs: dict[str, list[list[dict[str, float]]]] = {lib: [] for lib in LIBRARIES}
    for seed in range(args.seeds):
        order = LIBRARIES if seed % 2 == 0 else LIBRARIES[::-1]
        for library in order:
            command = [sys.executable, __file__, "--child", library, str(seed), "--epochs", str(args.epochs)]
            command += ["--threads", str(args.threads)]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            record = json.loads(output.strip().splitlines()[-1])
            runs[library].append(record["curve"])
            last = record["curve"][-1]
            print(f"seed {seed} {library}: CMC@1 {last['OVERALL/cmc/1']:.4f} after {args.epochs} epochs", flush=True)
    print(_summary(runs, args.epochs))
    print("\n" + json.dumps(runs))


if __name__ == "__main__":
    main()
