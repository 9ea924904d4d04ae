"""PML losses and miners as omlcore components and back, trainable PML losses in the loops, construction-time errors."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from omlcore.config import ConfigError, resolve
from omlcore.datasets import ImageLabeledDataset
from omlcore.losses import TripletLossWithMiner
from omlcore.miners import CrossBatchMemoryMiner, HardClusterMiner, HardTripletsMiner, PairsMiner
from omlcore.models import SmallCNN
from omlcore.protocols import Loss, Pairs, Triplets
from omlcore.samplers import BalanceSampler
from omlcore_pml import IncompatibleComponentError, PMLLoss, PMLMiner, as_miner
from omlcore_pml.names import PML_LOSSES, PML_LOSSES_WITHOUT_INDICES_TUPLE, PML_LOSSES_WITHOUT_LABELS
from omlcore_torch import fit, load_checkpoint

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
from pytorch_metric_learning import distances, miners, reducers  # noqa: E402

#: Arguments for the PML losses that require some (the rest are built with their defaults).
LOSS_ARGS: dict[str, dict[str, Any]] = {
    "ArcFaceLoss": {"num_classes": 4, "embedding_size": 8},
    "CosFaceLoss": {"num_classes": 4, "embedding_size": 8},
    "LargeMarginSoftmaxLoss": {"num_classes": 4, "embedding_size": 8},
    "ManifoldLoss": {"l": 8},
    "NormalizedSoftmaxLoss": {"num_classes": 4, "embedding_size": 8},
    "P2SGradLoss": {"descriptors_dim": 8, "num_classes": 4},
    "ProxyAnchorLoss": {"num_classes": 4, "embedding_size": 8},
    "ProxyNCALoss": {"num_classes": 4, "embedding_size": 8},
    "RankedListLoss": {"margin": 0.4, "Tn": 1},
    "SoftTripleLoss": {"num_classes": 4, "embedding_size": 8},
    "SphereFaceLoss": {"num_classes": 4, "embedding_size": 8},
    "SubCenterArcFaceLoss": {"num_classes": 4, "embedding_size": 8},
}


def batch(seed: int = 0, size: int = 16, dim: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.nn.functional.normalize(torch.randn(size, dim, generator=generator), dim=1)
    return embeddings.requires_grad_(), torch.arange(size) % 4


def pml_loss(name: str) -> Any:
    return getattr(pml_losses, name)(**LOSS_ARGS.get(name, {}))


def error_of(name: str, *args: Any) -> str:
    """The ValueError that PML loss ``name`` raises for ``args``, or ""."""
    try:
        pml_loss(name)(*args)
    except ValueError as error:
        return str(error)
    return ""


def test_the_tables_of_misfits_are_exactly_the_losses_that_reject_labels_or_tuples() -> None:
    embeddings, labels = batch()
    triplets = miners.BatchHardMiner()(embeddings, labels)
    rejects_labels = {n for n in PML_LOSSES if "not supported" in error_of(n, embeddings, labels)}
    assert rejects_labels == set(PML_LOSSES_WITHOUT_LABELS)
    supervised = [n for n in PML_LOSSES if n not in rejects_labels]
    rejects_tuples = {n for n in supervised if "indices_tuple is not" in error_of(n, embeddings, labels, triplets)}
    assert rejects_tuples == set(PML_LOSSES_WITHOUT_INDICES_TUPLE) - rejects_labels
    assert "indices_tuple is not supported" in error_of("VICRegLoss", embeddings, None, triplets)


@pytest.mark.parametrize("name", [n for n in PML_LOSSES if n not in PML_LOSSES_WITHOUT_LABELS])
def test_every_other_pml_loss_fits_with_a_miner_when_it_takes_tuples(name: str) -> None:
    embeddings, labels = batch()
    miner = miners.BatchHardMiner() if name not in PML_LOSSES_WITHOUT_INDICES_TUPLE else None
    loss = PMLLoss(pml_loss(name), miner=miner)
    assert isinstance(loss, Loss)
    value = loss(embeddings, labels)
    reference = pml_loss(name)
    reference.load_state_dict(loss.loss.state_dict())  # the same random class weights / proxies
    expected = reference(embeddings, labels, miners.BatchHardMiner()(embeddings, labels) if miner else None)
    torch.testing.assert_close(value, expected, rtol=0, atol=0)


def test_a_pml_miner_distance_and_reducer_equal_pml_itself() -> None:
    embeddings, labels = batch()
    distance, reducer = distances.CosineSimilarity(), reducers.ThresholdReducer(low=0)
    loss = PMLLoss(
        pml_losses.TripletMarginLoss(margin=0.2, distance=distance, reducer=reducer),
        miner=miners.TripletMarginMiner(margin=0.2, distance=distance, type_of_triplets="semihard"),
    )
    assert isinstance(loss.miner, PMLMiner)
    value = loss(embeddings, labels)
    mined = miners.TripletMarginMiner(margin=0.2, distance=distance, type_of_triplets="semihard")(embeddings, labels)
    expected = pml_losses.TripletMarginLoss(margin=0.2, distance=distance, reducer=reducer)(embeddings, labels, mined)
    torch.testing.assert_close(value, expected, rtol=0, atol=0)
    assert loss.last_logs == {"num_triplets": float(len(mined[0]))} and len(mined[0]) > 0
    (gradient,) = torch.autograd.grad(value, embeddings)
    assert gradient.abs().sum() > 0


def test_omlcore_miners_feed_pml_losses_with_conversions() -> None:
    embeddings, labels = batch()
    triplets = HardTripletsMiner()(embeddings, labels)
    assert isinstance(triplets, Triplets)
    direct = pml_losses.TripletMarginLoss()(embeddings, labels, triplets)  # Triplets *is* PML's (a, p, n)
    wrapped = PMLLoss(pml_losses.TripletMarginLoss(), miner=HardTripletsMiner())(embeddings, labels)
    torch.testing.assert_close(wrapped, direct, rtol=0, atol=0)
    # triplets to a pair loss: PML's conversion is Triplets.to_pairs
    contrastive = PMLLoss(pml_losses.ContrastiveLoss(), miner=HardTripletsMiner())(embeddings, labels)
    torch.testing.assert_close(
        contrastive, pml_losses.ContrastiveLoss()(embeddings, labels, triplets.to_pairs().to_pml()), rtol=0, atol=0
    )
    # pairs to a triplet loss, and a PML pair miner's output as omlcore Pairs
    pairs = PairsMiner()(embeddings, labels)
    assert isinstance(pairs, Pairs)
    value = PMLLoss(pml_losses.TripletMarginLoss(), miner=PairsMiner())(embeddings, labels)
    torch.testing.assert_close(value, pml_losses.TripletMarginLoss()(embeddings, labels, pairs.to_pml()))
    margin_pairs = PMLLoss(pml_losses.ContrastiveLoss(), miner=miners.PairMarginMiner())
    margin_pairs(embeddings, labels)
    assert set(margin_pairs.last_logs) == {"num_pos_pairs", "num_neg_pairs"}


def test_extended_triplets_give_the_pml_loss_the_extended_batch() -> None:
    embeddings, labels = batch()
    for miner in (HardClusterMiner(), CrossBatchMemoryMiner(bank_size_in_batches=2)):
        loss = PMLLoss(pml_losses.TripletMarginLoss(margin=0.3), miner=miner)
        loss(*batch(seed=1))  # the memory miner now holds a batch
        value = loss(embeddings, labels)
        assert torch.isfinite(value) and value.requires_grad
    mined = HardClusterMiner()(embeddings, labels)
    points, point_labels = mined.resolve(embeddings, labels)
    expected = pml_losses.TripletMarginLoss(margin=0.3)(points, point_labels, mined.to_pml())
    value = PMLLoss(pml_losses.TripletMarginLoss(margin=0.3), miner=HardClusterMiner())(embeddings, labels)
    torch.testing.assert_close(value, expected, rtol=0, atol=0)


def test_misfits_fail_at_construction_naming_the_object_and_the_mismatch() -> None:
    cases: list[tuple[Any, Any, str]] = [
        (pml_losses.VICRegLoss(), None, r"VICRegLoss does not fit omlcore's Loss.*raises when it is given labels"),
        (pml_losses.ManifoldLoss(l=4), None, r"ManifoldLoss does not fit omlcore's Loss"),
        (
            pml_losses.SelfSupervisedLoss(pml_losses.TripletMarginLoss()),
            None,
            r"SelfSupervisedLoss .*forward\(embeddings, ref_emb\), without labels",
        ),
        (
            pml_losses.RankedListLoss(margin=0.4, Tn=1),
            miners.BatchHardMiner(),
            r"RankedListLoss cannot take the tuples mined by pytorch_metric_learning's BatchHardMiner: .*indices_tuple",
        ),
        (pml_losses.PNPLoss(), HardTripletsMiner(), r"PNPLoss cannot take the tuples mined by HardTripletsMiner"),
        (miners.BatchHardMiner(), None, r"BatchHardMiner is a PML miner, not a loss"),
        (distances.CosineSimilarity(), None, r"CosineSimilarity is a PML distance, not a loss; pass it to a loss"),
        (pml_losses.TripletMarginLoss(), pml_losses.ContrastiveLoss(), r"ContrastiveLoss is a PML loss, not a miner"),
        (pml_losses.TripletMarginLoss(), reducers.MeanReducer(), r"MeanReducer is a PML reducer, not a miner"),
    ]
    for loss, miner, message in cases:
        with pytest.raises(IncompatibleComponentError, match=message):
            PMLLoss(loss, miner=miner)
    PMLLoss(pml_losses.RankedListLoss(margin=0.4, Tn=1))  # fine without a miner
    with pytest.raises(IncompatibleComponentError, match="not callable"):
        as_miner(42)  # type: ignore[arg-type]


def train_setup(root: Path) -> tuple[SmallCNN, DataLoader[Any]]:
    df = pd.read_csv(root / "df.csv")
    train = ImageLabeledDataset(df, dataset_root=root, transform={"name": "resize_normalize", "args": {"size": 32}})
    torch.manual_seed(0)
    loader = DataLoader(train, batch_sampler=BalanceSampler(train.get_labels(), n_labels=2, n_instances=4))
    return SmallCNN(feat_dim=16, widths=(8, 16)), loader


@pytest.mark.parametrize(
    ("name", "parameter"),
    [("ArcFaceLoss", "W"), ("ProxyAnchorLoss", "proxies"), ("SoftTripleLoss", "fc"), ("SubCenterArcFaceLoss", "W")],
)
def test_trainable_pml_losses_are_optimised_and_checkpointed_by_fit(
    name: str, parameter: str, toy_root: Path, tmp_path: Path
) -> None:
    model, loader = train_setup(toy_root)
    loss = PMLLoss(getattr(pml_losses, name)(num_classes=8, embedding_size=16))
    assert [n for n, _ in loss.named_parameters()] == [f"loss.{parameter}"]
    message = rf"PMLLoss\(pytorch_metric_learning's {name}\) has trainable parameters .*loss\.{parameter}"
    with pytest.raises(IncompatibleComponentError, match=message):
        fit(model, loss, torch.optim.Adam(model.parameters()), loader, progress=False)
    before = getattr(loss.loss, parameter).detach().clone()
    optimizer = torch.optim.Adam([*model.parameters(), *loss.parameters()], lr=1e-2)
    fit(model, loss, optimizer, loader, checkpoint_dir=tmp_path, progress=False)
    trained = getattr(loss.loss, parameter).detach()
    assert not torch.equal(trained, before)
    assert torch.equal(load_checkpoint(tmp_path / "last.pt")["loss"][f"loss.{parameter}"], trained)


def test_a_trainable_pml_loss_in_the_lightning_module(toy_root: Path, tmp_path: Path) -> None:
    lightning = pytest.importorskip("lightning")
    from omlcore_lightning import RetrievalModule

    model, loader = train_setup(toy_root)
    loss = pml_losses.ArcFaceLoss(num_classes=8, embedding_size=16)  # unwrapped: a PML loss is an omlcore Loss
    module = RetrievalModule(model, loss, optimizer={"name": "adam", "args": {"lr": 1e-2}})
    assert any(p is loss.W for p in module.configure_optimizers().param_groups[0]["params"])
    before = loss.W.detach().clone()
    trainer = lightning.pytorch.Trainer(
        max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path
    )
    trainer.fit(module, loader)
    assert not torch.equal(loss.W, before)
    trainer.save_checkpoint(tmp_path / "module.ckpt")
    saved = torch.load(tmp_path / "module.ckpt", weights_only=False)["state_dict"]
    assert torch.equal(saved["loss.W"], loss.W.detach())
    with pytest.raises(IncompatibleComponentError, match="VICRegLoss does not fit"):
        RetrievalModule(model, pml_losses.VICRegLoss())


def test_an_unfit_raw_pml_loss_is_refused_before_the_first_step(toy_root: Path) -> None:
    model, loader = train_setup(toy_root)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(IncompatibleComponentError, match="VICRegLoss does not fit"):
        fit(model, pml_losses.VICRegLoss(), torch.optim.SGD(model.parameters(), lr=0.1), loader, progress=False)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))


def test_configs_build_a_pml_loss_fed_by_a_miner() -> None:
    loss = resolve(
        "loss",
        {
            "name": "pml.PMLLoss",
            "args": {
                "loss": {"name": "pml.TripletMarginLoss", "args": {"margin": 0.1}},
                "miner": {"name": "hard_triplets"},
            },
        },
    )
    assert isinstance(loss, PMLLoss) and isinstance(loss.miner, HardTripletsMiner) and loss.loss.margin == 0.1
    embeddings, labels = batch()
    reference = TripletLossWithMiner(margin=0.1, miner=HardTripletsMiner())
    assert torch.isfinite(loss(embeddings, labels)) and torch.isfinite(reference(embeddings, labels))
    pml_miner = resolve(
        "loss",
        {
            "name": "pml.PMLLoss",
            "args": {"loss": {"name": "pml.ContrastiveLoss"}, "miner": {"name": "pml.PairMarginMiner"}},
        },
    )
    assert isinstance(pml_miner.miner, PMLMiner)
    assert "miner" in inspect.signature(PMLLoss).parameters
    with pytest.raises(ConfigError, match="VICRegLoss does not fit"):
        resolve("loss", {"name": "pml.PMLLoss", "args": {"loss": {"name": "pml.VICRegLoss"}}})
