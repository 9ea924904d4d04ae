"""``omlcore train-reranker CONFIG``: train a pairwise re-ranker on top of a trained extractor (OML's STIR recipe).

The extractor (``extractor`` with the weights of ``checkpoint``, e.g. the folder of an ``omlcore train`` run) stays
frozen. It embeds the training rows once (cached, see :func:`training_embeddings`); each training item is paired with
its ``reranker.mine_top_n`` nearest other items, positives and hard negatives
(:func:`~omlcore.datasets.pairs.mine_neighbour_pairs`), and the pairwise model (``reranker.model``, e.g.
``pairwise_concat`` or ``pairwise_features``) learns by binary cross-entropy whether a pair's items are different.
Every epoch validates with the extractor's kNN and then the :class:`~omlcore.postprocessing.pairwise.PairwiseReranker`
of the model being trained: the metrics before re-ranking (``OVERALL/...``) and after (``postprocessed/OVERALL/...``).
Shabanov et al., "STIR: Siamese Transformer for Image Retrieval Postprocessing", 2024, arXiv:2304.13393.

Both runners train it unchanged: the job's model is :class:`PairTrainingModule` (pairs in, logits out; single images
in, the frozen extractor's embeddings out) and the pair batches carry the stacked pair as ``images`` and the target as
``labels``. The run folder is that of ``omlcore train`` (``config.yaml``, ``log.txt``, ``metrics.csv|json``,
``validation.json``, ``checkpoints/``), with ``checkpoints/reranker.pt``, the trained pairwise model's weights (and
``best.pt``, those of the best epoch by ``metric_for_checkpointing`` after re-ranking), and ``cache/``, the training
embeddings. ``resume: <run folder>`` continues an interrupted run.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
import yaml
from torch import Tensor, nn
from torch.utils.data import DataLoader

from omlcore.config import Config, ConfigError, build_component
from omlcore.datasets import ImageLabeledDataset, ImageQueryGalleryDataset
from omlcore.datasets.pairs import NeighbourPairs, PairBatchSampler, PairDataset, mine_neighbour_pairs
from omlcore.errors import OmlcoreError, RunInterrupted
from omlcore.models.base import load_state_dict_strictly
from omlcore.models.pairwise import PairwiseModelBase
from omlcore.pipelines.common import (
    BEST_CHECKPOINT,
    ConfigSource,
    RunFolder,
    build_metric,
    config_files,
    dataset_csv,
    flat_scalars,
    format_table,
    load_extractor,
    prepare,
    seed_everything,
    write_atomically,
)
from omlcore.pipelines.epochs import (
    BestEpoch,
    check_declared_metric,
    component_factory,
    has_validation_rows,
    previous_history,
)
from omlcore.pipelines.resume import find_resume
from omlcore.pipelines.tracking import build_callbacks, finalizing, open_tracker
from omlcore.pipelines.train import TrainResult
from omlcore.postprocessing.pairwise import PairwiseReranker
from omlcore.protocols import FitJob, Runner

__all__ = ["RERANKER_CHECKPOINT", "PairTrainingModule", "train_reranker", "training_embeddings"]

#: The trained pairwise model's weights in ``checkpoints/`` (load them with ``reranker.model``'s ``weights`` arg).
RERANKER_CHECKPOINT = "reranker.pt"
#: The metrics after re-ranking are reported under this prefix (EmbeddingMetrics' postprocessed results).
POSTPROCESSED = "postprocessed/"
#: ``reranker.*`` keys that shape the training, so a resumed run must keep them (``top_n`` only validates).
_FIXED_ON_RESUME = ("model", "mine_top_n", "balance_pairs", "batch_size", "backbone_from_checkpoint")
#: Keys of ``omlcore train`` that this pipeline does not use; a config that sets them is refused, not half-read.
_NOT_USED = {
    "sampler": "the pairs come in shuffled batches of reranker.batch_size",
    "loss": "the pairwise model is trained with binary cross-entropy",
    "postprocessor": "the validation re-ranks with the model being trained",
}

M = TypeVar("M", bound="PairTrainingModule")


class PairTrainingModule(nn.Module):
    """The module a runner trains: the pairwise model, with the frozen extractor for the validation.

    - ``module(pairs)``, ``pairs`` of shape ``(B, 2, C, H, W)`` (a :class:`~omlcore.datasets.pairs.PairDataset`
      batch): the pairwise model's logits ``(B,)``, which ``BCEWithLogitsLoss`` compares with the batch's targets.
    - ``module(images)``, ``images`` of shape ``(B, C, H, W)`` (the validation): the frozen extractor's embeddings,
      whose kNN results the :class:`~omlcore.postprocessing.pairwise.PairwiseReranker` holding :attr:`pairwise`
      re-ranks.

    The extractor gets no gradients and stays in eval mode. State-dict keys: ``pairwise.*``, ``extractor.*``.
    """

    def __init__(self, pairwise: PairwiseModelBase, extractor: nn.Module) -> None:
        super().__init__()
        self.pairwise = pairwise
        self.extractor = extractor.requires_grad_(False)
        self.train(self.training)

    def train(self: M, mode: bool = True) -> M:
        super().train(mode)
        self.extractor.train(False)
        return self

    def forward(self, inputs: Tensor) -> Tensor:
        if inputs.dim() == 5 and inputs.shape[1] == 2:
            return self.pairwise.logits(inputs[:, 0], inputs[:, 1])
        embeddings: Tensor = self.extractor(inputs)
        return embeddings


def train_reranker(config: ConfigSource, overrides: Sequence[str] = ()) -> TrainResult:
    """Run the re-ranker's training pipeline of ``config`` (a YAML file, a shipped config name, a mapping, a Config).

    Everything is checked before the run folder is created or changed (the config, the resume target, the data, the
    extractor's checkpoint, the pairwise model, ``top_n`` against the data, the optimizer's arguments). Returns the
    run folder, the epoch records and the validation metrics of the untrained and the trained re-ranker (flat keys,
    before re-ranking ``OVERALL/...``, after it ``postprocessed/OVERALL/...``).

    Raises:
        RunInterrupted: Ctrl-C during training (a ``KeyboardInterrupt``), after the last epoch's checkpoint.
    """
    config, runner = prepare(config, overrides, "train_reranker")
    source = str(config.source) if config.source else None
    _check_unused(config, source)
    resume = find_resume(config, runner)
    if resume is not None and resume.folder is not None:
        _check_reranker_unchanged(config, resume.folder, source)
    csv_path, root = dataset_csv(config)

    seed_everything(config["seed"])
    batch_size, num_workers = config["dataset.batch_size"], config["dataset.num_workers"]
    train_transform = build_component("transform", config["transforms_train"], "transforms_train", source=source)
    val_transform = build_component("transform", config["transforms_val"], "transforms_val", source=source)
    check = config["dataset.check_images"]
    pair_items = ImageLabeledDataset(csv_path, root, train_transform, check_images=check)
    mining_items = ImageLabeledDataset(csv_path, root, val_transform, check_images="none")
    val_set = (
        ImageQueryGalleryDataset(csv_path, root, val_transform, check_images=check)
        if has_validation_rows(csv_path)
        else None
    )
    extractor = load_extractor(config, runner)
    pairwise = _build_pairwise(config, extractor, source)
    model = PairTrainingModule(pairwise, extractor)
    if resume is not None:
        resume.check_fits(model, source)
    top_n, mine_top_n = _check_top_n(config, len(mining_items), val_set, source)
    metric = build_metric(config, val_set)
    if not hasattr(metric, "postprocessor"):
        raise ConfigError("metric", f"'{config['metric.name']}' takes no postprocessor; use embedding_metrics", source)
    metric.postprocessor = PairwiseReranker(top_n, pairwise, batch_size=batch_size, num_workers=num_workers)
    _check_retrieved(metric, top_n, source)
    build_optimizer = component_factory("optimizer", config["optimizer"], source)
    build_scheduler = component_factory("scheduler", config["scheduler"], source) if config["scheduler"] else None
    optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad])  # bad arguments stop here
    if build_scheduler is not None:
        build_scheduler(optimizer)
    callbacks = build_callbacks(config, runner)
    best_key = _postprocessed_key(config["metric_for_checkpointing"])
    if val_set is not None:
        check_declared_metric(_with_best_key(config, best_key), metric, val_set, source)

    if resume is not None and resume.folder is not None:
        run = RunFolder.resume(resume.folder, config, "train_reranker", runner)
        run.log(
            f"\nomlcore train-reranker: {config.source or config.name} -> {run.path} "
            f"(resumed after {resume.epochs_done} epochs)"
        )
    else:
        run = RunFolder.create(config, "train_reranker", runner)
        run.log(f"omlcore train-reranker: {config.source or config.name} -> {run.path}")
    run.log(f"extractor: {config['extractor.name']} from {config['checkpoint']} (frozen)")
    run.log(f"data: {len(pair_items)} training images, {len(val_set) if val_set else 0} validation images ({csv_path})")

    pairs = _mine_pairs(config, runner, extractor, mining_items, metric, mine_top_n, run)
    sampler = PairBatchSampler(len(pairs), min(config["reranker.batch_size"], len(pairs)), seed=config["seed"])
    job = FitJob(
        model=model,
        loss=nn.BCEWithLogitsLoss(),
        build_optimizer=build_optimizer,
        build_scheduler=build_scheduler,
        train_loader=DataLoader(PairDataset(pair_items, pairs), batch_sampler=sampler, num_workers=num_workers),
        val_dataset=val_set,
        metric=metric if val_set is not None else None,
        batch_size=batch_size,
        num_workers=num_workers,
        checkpoint_dir=run.checkpoints,
        resume=resume.checkpoint if resume is not None else None,
        on_epoch=lambda record: None,
        callbacks=callbacks,
    )

    job.tracker = open_tracker(config, run)
    with finalizing(job.tracker) as tracker:

        def evaluate() -> dict[str, float]:
            assert val_set is not None
            return flat_scalars(runner.evaluate(model, val_set, metric, batch_size, num_workers))

        best = BestEpoch(config, run, pairwise, source) if val_set is not None else None
        if best is not None:
            best.key = best_key
        untrained: dict[str, float] = {}
        if val_set is not None and config["validate_untrained"] and resume is None:
            untrained = evaluate()
            tracker.log_metrics({"epoch": -1, **untrained}, 0)
            run.log(f"\nValidation of the untrained re-ranker:\n{_before_after(untrained)}\n")
            if best is not None:
                best.check(untrained)

        previous = previous_history(run.path, source) if resume is not None and resume.folder is not None else []
        history: dict[int, dict[str, float]] = {int(record["epoch"]): record for record in previous}
        shown_keys = ("loss", "OVERALL/cmc/1", f"{POSTPROCESSED}OVERALL/cmc/1")

        def on_epoch(record: dict[str, float]) -> None:
            epoch = int(record["epoch"])
            for stale in [e for e in history if e >= epoch]:
                del history[stale]
            history[epoch] = record
            run.write_records("metrics", [history[e] for e in sorted(history)])
            run.log(
                f"epoch {epoch + 1}/{runner.epochs}: "
                + ", ".join(f"{k} {record[k]:.4f}" for k in shown_keys if k in record)
            )
            if best is not None:
                best.update(record, [history[e] for e in sorted(history) if e < epoch])

        job.on_epoch = on_epoch
        try:
            runner.fit(job)
        except KeyboardInterrupt:
            done = max(history, default=-1) + 1
            message = (
                f"interrupted after {done} of {runner.epochs} epochs; the run is in {run.path}. Continue it with: "
                f"omlcore train-reranker {run.path / run.config_name} resume={run.path}"
            )
            run.log(f"\n{message}")
            raise RunInterrupted(message) from None
        weights = run.save_weights(RERANKER_CHECKPOINT, pairwise)

        trained: dict[str, float] = {}
        if val_set is not None:  # the last epoch's validation, unless the runner skipped it
            last = history[max(history)] if history else {}
            validated = any(str(k).startswith(POSTPROCESSED) for k in last)
            trained = {k: v for k, v in last.items() if "/" in k} if validated else evaluate()
            run.log(f"\nValidation ({len(val_set)} images), the extractor's kNN and re-ranked by the trained model:")
            run.log(_before_after(trained))
            run.write_json(
                "validation.json", {"untrained": untrained, "trained": trained} if untrained else {"trained": trained}
            )
        spec = {**config["reranker.model"], "args": {**config["reranker.model.args"], "weights": str(weights)}}
        usage = {"postprocessor": {"name": "pairwise_reranker", "args": {"top_n": top_n, "model": spec}}}
        run.log(f"\nre-rank with it (omlcore validate / predict):\n{yaml.safe_dump(usage, sort_keys=False).rstrip()}")
        if tracker and (run.checkpoints / BEST_CHECKPOINT).is_file():
            tracker.log_artifact(run.checkpoints / BEST_CHECKPOINT)
        run.log(f"\nrun folder: {run.path}")
        return TrainResult(run.path, [history[e] for e in sorted(history)], untrained, trained)


def _mine_pairs(
    config: Config,
    runner: Runner,
    extractor: nn.Module,
    items: ImageLabeledDataset,
    metric: Any,
    mine_top_n: int,
    run: RunFolder,
) -> NeighbourPairs:
    """Each training image with its nearest others by the extractor (the metric's distance), balanced if asked."""
    embeddings = training_embeddings(config, runner, extractor, items, run)
    pairs = mine_neighbour_pairs(
        embeddings,
        items.get_labels(),
        mine_top_n,
        sequences=items.sequences,
        metric=getattr(metric, "metric", "l2"),
        backend=getattr(metric, "knn_backend", None),
    )
    run.log(
        f"pairs: {len(pairs)} (each training image with its {mine_top_n} nearest others): {pairs.num_positive} "
        f"positive, {pairs.num_negative} hard negative"
    )
    if config["reranker.balance_pairs"]:
        pairs = pairs.balanced(config["seed"])
        run.log(f"balanced: {pairs.num_positive} positive and {pairs.num_negative} negative pairs")
    if len(pairs) == 0:
        raise ConfigError(
            "reranker.mine_top_n",
            f"the {mine_top_n} nearest others of the training images hold no pair of one class (no hard negative, or "
            "no positive), so there is nothing to balance: raise reranker.mine_top_n, or set reranker.balance_pairs "
            "false",
            str(config.source) if config.source else None,
        )
    return pairs


def training_embeddings(
    config: Config, runner: Runner, extractor: nn.Module, items: ImageLabeledDataset, run: RunFolder
) -> Tensor:
    """The extractor's embeddings of the training items, computed once and cached.

    The cache is a file in ``reranker.embeddings_cache`` (default: the run folder's ``cache/``), named by a hash of
    what determines the embeddings: the extractor's weights, its config, the validation transform and the dataset's
    CSV file and root (not the images' bytes). A resumed run, or any run that shares the folder, reads the file
    instead of embedding again; an unreadable or stale file is computed again and replaced.
    """
    key = _embeddings_key(config, extractor)
    folder = Path(config["reranker.embeddings_cache"] or run.path / "cache")
    path = folder / f"train-embeddings-{key[:16]}.pt"
    if path.is_file():
        try:
            cached = torch.load(path, map_location="cpu", weights_only=True)
        except (EOFError, OSError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError):
            cached = None
        found = cached.get("embeddings") if isinstance(cached, Mapping) and cached.get("key") == key else None
        if isinstance(found, Tensor) and found.dim() == 2 and len(found) == len(items):
            run.log(f"training embeddings: {tuple(found.shape)} from the cache {path}")
            return found
        run.log(f"training embeddings: the cache {path} is unreadable or stale; embedding again")
    embeddings = runner.inference(extractor, items, config["dataset.batch_size"], config["dataset.num_workers"])
    if run.primary:
        folder.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda temporary: torch.save({"key": key, "embeddings": embeddings}, temporary))
    run.log(f"training embeddings: {tuple(embeddings.shape)}, cached in {path}")
    return embeddings


def _embeddings_key(config: Config, extractor: nn.Module) -> str:
    """A SHA-256 of the extractor's weights and config, the validation transform and the dataset's CSV and root."""
    digest = hashlib.sha256()
    for name, tensor in sorted(extractor.state_dict().items()):
        digest.update(f"{name} {tuple(tensor.shape)} {tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    csv_path, root = dataset_csv(config)
    described = {"extractor": config["extractor"], "transform": config["transforms_val"], "root": str(root)}
    digest.update(json.dumps(described, sort_keys=True, default=str).encode())
    digest.update(csv_path.read_bytes())
    return digest.hexdigest()


def _check_unused(config: Config, source: str | None) -> None:
    for key, why in _NOT_USED.items():
        if config[key] not in (None, []):
            raise ConfigError(key, f"omlcore train-reranker does not use it ({why}); remove it", source)


def _build_pairwise(config: Config, extractor: nn.Module, source: str | None) -> PairwiseModelBase:
    """``reranker.model``, its backbone loaded with the extractor's weights if ``reranker.backbone_from_checkpoint``."""
    pairwise = build_component("extractor", config["reranker.model"], "reranker.model", source=source)
    if not isinstance(pairwise, PairwiseModelBase):
        raise ConfigError(
            "reranker.model",
            f"'{config['reranker.model.name']}' builds a {type(pairwise).__name__}, not a pairwise model (a "
            "PairwiseModelBase: logits for the training, probabilities for the re-ranking); use pairwise_concat or "
            "pairwise_features",
            source,
        )
    if config["reranker.backbone_from_checkpoint"]:
        try:
            load_state_dict_strictly(pairwise.extractor, extractor.state_dict(), f"checkpoint '{config['checkpoint']}'")
        except OmlcoreError as error:
            raise ConfigError(
                "reranker.backbone_from_checkpoint",
                f"{error}. The backbone (reranker.model.args.extractor) must be the extractor's architecture; or set "
                "it to false",
                source,
            ) from None
    return pairwise


def _check_top_n(
    config: Config, n_train: int, val_set: ImageQueryGalleryDataset | None, source: str | None
) -> tuple[int, int]:
    """``reranker.top_n`` and the mining's ``top_n``, checked against the data."""
    top_n, mine_top_n = config["reranker.top_n"], config["reranker.mine_top_n"]
    mine_top_n = top_n if mine_top_n is None else mine_top_n
    if top_n < 2:
        raise ConfigError("reranker.top_n", f"must be at least 2 (items re-scored per query), got {top_n}", source)
    if mine_top_n < 1:
        raise ConfigError("reranker.mine_top_n", f"must be at least 1, got {mine_top_n}", source)
    if config["reranker.batch_size"] < 1:
        raise ConfigError("reranker.batch_size", f"must be at least 1, got {config['reranker.batch_size']}", source)
    gallery = len(val_set.get_gallery_ids()) if val_set is not None else None
    if gallery is not None and top_n > gallery:
        raise ConfigError(
            "reranker.top_n",
            f"re-scores the {top_n} nearest gallery items of each query, but the validation gallery has {gallery}; "
            f"lower it to at most {gallery}",
            source,
        )
    if mine_top_n > n_train - 1:
        key = "reranker.mine_top_n" if config["reranker.mine_top_n"] is not None else "reranker.top_n"
        raise ConfigError(
            key,
            f"pairs each training image with its {mine_top_n} nearest others, but there are {n_train} training "
            f"images; set reranker.mine_top_n to at most {n_train - 1}",
            source,
        )
    return top_n, mine_top_n


def _check_retrieved(metric: Any, top_n: int, source: str | None) -> None:
    """The metric retrieves as many neighbours as its largest cutoff: the re-ranker can re-score no more."""
    cutoffs = [k for name in ("cmc_top_k", "precision_top_k", "map_top_k") for k in getattr(metric, name, ())]
    retrieved = max(cutoffs, default=top_n)
    if retrieved < top_n:
        raise ConfigError(
            "reranker.top_n",
            f"is {top_n}, but the metric retrieves only {retrieved} neighbours per query (its largest cutoff), so the "
            f"re-ranker would re-score {retrieved}; lower reranker.top_n or add a cutoff of {top_n} (metric.args."
            "cmc_top_k)",
            source,
        )


def _postprocessed_key(key: str | None) -> str | None:
    """``metric_for_checkpointing`` after re-ranking: the metrics before it do not change while the re-ranker trains."""
    return key if key is None or key.startswith(POSTPROCESSED) else POSTPROCESSED + key


def _with_best_key(config: Config, key: str | None) -> Config:
    return Config({**config.data, "metric_for_checkpointing": key}, config.name, config.source, config.overrides)


def _before_after(metrics: Mapping[str, float]) -> str:
    """A table of the ranking metrics before re-ranking (the extractor's kNN) and after it."""
    after = {k.removeprefix(POSTPROCESSED): v for k, v in metrics.items() if k.startswith(POSTPROCESSED)}
    return format_table({"kNN": {k: metrics[k] for k in after}, "re-ranked": after})


def _check_reranker_unchanged(config: Config, folder: Path, source: str | None) -> None:
    """The ``reranker`` settings that shape the training are those of the run being resumed."""
    files = config_files(folder)
    recorded = yaml.safe_load(files[-1].read_text(encoding="utf-8")) if files else None
    before = recorded.get("reranker") if isinstance(recorded, Mapping) else None
    for key in _FIXED_ON_RESUME:
        then = before.get(key) if isinstance(before, Mapping) else None
        now = config[f"reranker.{key}"]
        if then != now:
            raise ConfigError(
                f"reranker.{key}",
                f"the run in '{folder}' was trained with reranker.{key}={then!r}, the config asks {now!r}; a resumed "
                f"run continues with its own settings: resume with them (omlcore train-reranker {files[-1]} "
                f"resume={folder}), or start a fresh run",
                source,
            )
