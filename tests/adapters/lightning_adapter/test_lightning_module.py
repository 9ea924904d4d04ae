"""RetrievalModule and MetricValCallback in a real Lightning Trainer (one process) on a tiny generated image set."""

from __future__ import annotations

import csv
import dataclasses
import functools
import struct
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from omlcore.datasets import ImageLabeledDataset, ImageQueryGalleryDataset
from omlcore.losses import ArcFaceLoss, TripletLossWithMiner
from omlcore.metrics import EmbeddingMetrics
from omlcore.models import SmallCNN
from omlcore.samplers import BalanceSampler
from omlcore_torch import IncompatibleComponentError, evaluate, inference

lightning = pytest.importorskip("lightning")
from lightning.pytorch import Trainer  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger  # noqa: E402

from omlcore_lightning import MetricValCallback, RetrievalModule, gather_predictions  # noqa: E402

TRANSFORM = {"name": "resize_normalize", "args": {"size": 32}}
VAL_BATCH = 5


def data(root: Path) -> tuple[ImageLabeledDataset, ImageQueryGalleryDataset]:
    df = pd.read_csv(root / "df.csv")
    return (
        ImageLabeledDataset(df, dataset_root=root, transform=TRANSFORM),
        ImageQueryGalleryDataset(df, dataset_root=root, transform=TRANSFORM),
    )


def extractor(seed: int = 0) -> SmallCNN:
    torch.manual_seed(seed)
    return SmallCNN(feat_dim=16, widths=(8, 16))


def metric() -> EmbeddingMetrics:
    return EmbeddingMetrics(cmc_top_k=(1,), precision_top_k=(3,), map_top_k=(3,))


def trainer(tmp_path: Path, **kwargs: Any) -> Trainer:
    options: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "max_epochs": 2,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": tmp_path,
        "log_every_n_steps": 1,
        "logger": False,
        "enable_checkpointing": False,
    }
    return Trainer(**{**options, **kwargs})


def train_loader(train: ImageLabeledDataset, seed: int = 0) -> DataLoader[Any]:
    return DataLoader(train, batch_sampler=BalanceSampler(train.get_labels(), n_labels=2, n_instances=4, seed=seed))


def tensorboard_scalars(log_dir: str) -> set[str]:
    """The scalar tags of the TensorBoard event files in ``log_dir`` (read with tensorboardX's protobufs)."""
    from tensorboardX.proto import event_pb2

    tags = set()
    for path in Path(log_dir).glob("events.out.tfevents.*"):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            tags.update(value.tag for value in event.summary.value)
            offset += 12 + length + 4
    return tags


def test_fit_validate_predict_with_csv_and_tensorboard_loggers(toy_root: Path, tmp_path: Path) -> None:
    train, val = data(toy_root)
    module = RetrievalModule(
        extractor(),
        TripletLossWithMiner(margin=0.5),
        optimizer={"name": "adam", "args": {"lr": 1e-2}},
        scheduler={"name": "step", "args": {"step_size": 1, "gamma": 0.5}},
    )
    callback = MetricValCallback(metric(), prog_bar=("OVERALL/cmc/1",))
    loggers = [CSVLogger(tmp_path, name="csv"), TensorBoardLogger(tmp_path, name="tb")]
    best = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="OVERALL/cmc/1", mode="max", save_last=True)
    run = trainer(tmp_path, logger=loggers, callbacks=[callback, best], enable_checkpointing=True)
    val_loader = DataLoader(val, batch_size=VAL_BATCH)
    run.fit(module, train_loader(train), val_loader)  # with Lightning's default sanity check of 2 batches

    assert run.global_step == 8 and module.extractor.training
    assert callback.metric.summary["n_items"] == 24  # the sanity-check batches were not counted
    expected = evaluate(module.extractor, val, metric(), batch_size=VAL_BATCH, progress=False)
    assert callback.metrics == expected  # exactly omlcore_torch's evaluation of the trained model
    assert float(run.callback_metrics["OVERALL/cmc/1"]) == pytest.approx(expected["OVERALL/cmc/1"])
    assert run.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-2 / 4)

    with open(Path(loggers[0].log_dir) / "metrics.csv") as file:
        columns = set(next(csv.reader(file)))
    assert {"OVERALL/cmc/1", "cold/map/3", "train/loss", "train/loss_epoch", "train/num_triplets"} <= columns
    assert {"OVERALL/cmc/1", "train/loss", "train/active_tri"} <= tensorboard_scalars(loggers[1].log_dir)
    assert Path(best.best_model_path).is_file() and (tmp_path / "ckpt" / "last.ckpt").is_file()

    (validated,) = run.validate(module, val_loader, verbose=False)
    assert validated["OVERALL/cmc/1"] == pytest.approx(expected["OVERALL/cmc/1"])
    predictions = run.predict(module, val_loader)
    embeddings = inference(module.extractor, val, batch_size=VAL_BATCH, progress=False)
    assert len(predictions) == 5 and torch.equal(torch.cat(predictions), embeddings)
    assert torch.equal(gather_predictions(predictions), embeddings)
    (tested,) = run.test(module, val_loader, verbose=False)
    assert tested["OVERALL/cmc/1"] == validated["OVERALL/cmc/1"]


def test_a_trainable_loss_is_optimised_checkpointed_and_resumed(toy_root: Path, tmp_path: Path) -> None:
    train, _ = data(toy_root)
    loss = ArcFaceLoss(in_features=16, num_classes=8)
    module = RetrievalModule(extractor(), loss, optimizer=functools.partial(torch.optim.SGD, lr=0.1))
    before = loss.weight.detach().clone()
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    run = trainer(tmp_path, max_epochs=1, callbacks=[checkpoint], enable_checkpointing=True)
    run.fit(module, train_loader(train))
    assert not torch.equal(loss.weight, before)  # the optimizer got the loss's parameters
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert torch.equal(saved["state_dict"]["loss.weight"], loss.weight.detach())
    assert any(len(group["params"]) for group in saved["optimizer_states"][0]["param_groups"])

    seen: list[list[int]] = []
    resumed = RetrievalModule(
        extractor(seed=5), ArcFaceLoss(in_features=16, num_classes=8), optimizer=module.optimizer_spec
    )
    resumed.on_train_batch_start = lambda batch, batch_idx: seen.append(batch["idx"].tolist())  # type: ignore[method-assign]
    run = trainer(tmp_path, max_epochs=2)
    run.fit(resumed, train_loader(train), ckpt_path=tmp_path / "last.ckpt")
    assert run.global_step == 8
    sampler = BalanceSampler(train.get_labels(), n_labels=2, n_instances=4)
    sampler.set_epoch(1)
    assert seen == list(sampler)  # the resumed epoch is epoch 1 of the sampler, as in an uninterrupted run


def test_optimizer_specifications_and_construction_errors(toy_root: Path) -> None:
    model, loss = extractor(), ArcFaceLoss(in_features=16, num_classes=8)
    with pytest.raises(IncompatibleComponentError, match=r"ArcFaceLoss has trainable parameters .*weight"):
        RetrievalModule(model, loss, optimizer=torch.optim.Adam(model.parameters()))
    instance = torch.optim.Adam([*model.parameters(), *loss.parameters()])
    assert RetrievalModule(model, loss, optimizer=instance).configure_optimizers() is instance
    default = RetrievalModule(model, loss).configure_optimizers()
    assert isinstance(default, torch.optim.Adam) and default.defaults["lr"] == 1e-3
    assert len(default.param_groups[0]["params"]) == len(list(model.parameters())) + 1
    configured = RetrievalModule(
        model,
        loss,
        optimizer={"name": "sgd", "args": {"lr": 0.5}},
        scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, 2),
    ).configure_optimizers()
    assert isinstance(configured["optimizer"], torch.optim.SGD)
    assert configured["lr_scheduler"]["scheduler"].step_size == 2
    with pytest.raises(ValueError, match=r"config optimizer: an optimizer is \{name: <registered optimizer>"):
        RetrievalModule(model, loss, optimizer={"nam": "sgd"}).configure_optimizers()
    with pytest.raises(IncompatibleComponentError, match="callable as loss"):
        RetrievalModule(model, "triplet")  # type: ignore[arg-type]


class TensorModule(lightning.pytorch.LightningModule):
    """A user's own module: validation_step returns the embeddings tensor."""

    def __init__(self, outputs: str = "tensor") -> None:
        super().__init__()
        self.extractor = extractor()
        self.outputs = outputs

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Any:
        embeddings = self.extractor(batch["images"])
        return embeddings if self.outputs == "tensor" else {"features": embeddings}


def test_the_callback_feeds_any_module_and_explains_wrong_outputs(toy_root: Path, tmp_path: Path) -> None:
    _, val = data(toy_root)
    module, callback = TensorModule(), MetricValCallback(metric(), log_prefix="val/")
    loader = DataLoader(val, batch_size=8)
    (validated,) = trainer(tmp_path, callbacks=[callback]).validate(module, loader, verbose=False)
    expected = evaluate(module.extractor, val, metric(), batch_size=8, progress=False)
    assert callback.metrics == expected
    assert validated["val/OVERALL/cmc/1"] == pytest.approx(expected["OVERALL/cmc/1"])
    with pytest.raises(TypeError, match="must return the embeddings"):
        trainer(tmp_path, callbacks=[MetricValCallback(metric())]).validate(TensorModule("dict"), loader)
    with pytest.raises(TypeError, match="needs a MetricAccumulator"):
        MetricValCallback(object())  # type: ignore[arg-type]


class ItemsFirst:
    """A learned-postprocessor stand-in: checks that it sees the evaluated dataset, then moves the gallery item with
    the smallest dataset index to the front of each row."""

    def __init__(self, expected: Any) -> None:
        self.expected = expected

    def process(self, results: Any, context: Any) -> Any:
        assert context.dataset is self.expected
        ids = context.split.gallery_ids[results.retrieved_ids.clamp_min(0)]
        order = torch.sort(ids, dim=1, stable=True).indices
        retrieved = torch.gather(results.retrieved_ids, 1, order)
        steps = torch.arange(retrieved.shape[1], dtype=torch.float32).expand_as(retrieved).clone()
        return dataclasses.replace(results, retrieved_ids=retrieved, distances=steps)


def test_a_postprocessor_in_the_callback_equals_evaluate_with_it(toy_root: Path, tmp_path: Path) -> None:
    _, val = data(toy_root)
    module = TensorModule()
    callback = MetricValCallback(metric(), postprocessor=ItemsFirst(val))
    (validated,) = trainer(tmp_path, callbacks=[callback]).validate(
        module, DataLoader(val, batch_size=8), verbose=False
    )
    expected = evaluate(module.extractor, val, metric(), batch_size=8, progress=False, postprocessor=ItemsFirst(val))
    assert callback.metrics == expected and "postprocessed/OVERALL/cmc/1" in expected
    assert validated["postprocessed/OVERALL/cmc/1"] == pytest.approx(expected["postprocessed/OVERALL/cmc/1"])
    plain = evaluate(module.extractor, val, metric(), batch_size=8, progress=False)
    assert plain["OVERALL/cmc/1"] == expected["OVERALL/cmc/1"] and "postprocessed/OVERALL/cmc/1" not in plain
    with pytest.raises(TypeError, match="takes no postprocessor"):
        evaluate(module.extractor, val, object(), postprocessor=ItemsFirst(val))  # type: ignore[arg-type]
