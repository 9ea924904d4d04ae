"""The contracts between omlcore's components, as runtime-checkable :class:`typing.Protocol` s.

A component qualifies by *shape*, not by inheritance: a pytorch-metric-learning loss is a
:class:`Loss`, ``torch.utils.data.BatchSampler`` is a :class:`Sampler`, a user's own class is
whatever it looks like. ``isinstance`` checks only that the members exist; the docstrings below are
the full contract (shapes, dtypes, devices, what "empty" means), and the test-suite checks omlcore's
own components against it.

Mined indices travel in :class:`Triplets` and :class:`Pairs`. They *are* the tuples that PML uses
(``(a, p, n)`` and ``(a1, p, a2, n)``), so they can be passed as PML's ``indices_tuple`` unchanged.

The pipelines (``omlcore train / validate / predict``) hand their loops to a :class:`Runner`, which an adapter's
plugin registers (``torch`` by ``omlcore_torch``, ``lightning`` by ``omlcore_lightning``); what training needs
travels in a framework-neutral :class:`FitJob`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader, Dataset

from omlcore.tracking import Tracker

__all__ = [
    "Extractor",
    "FitJob",
    "KNNBackend",
    "Loss",
    "MetricAccumulator",
    "Miner",
    "Pairs",
    "Postprocessor",
    "Reduction",
    "Runner",
    "Sampler",
    "Triplets",
    "indices_from_pml",
]

Reduction = Literal["sum", "cat", "max", "min"]


def _as_index_tensor(name: str, value: Any, device: torch.device | None) -> Tensor:
    tensor = torch.as_tensor(value, device=device)
    if tensor.dim() != 1:
        raise ValueError(f"{name} must be a 1-D tensor of indices, got shape {tuple(tensor.shape)}")
    if tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex():
        raise TypeError(f"{name} must hold integer indices, got dtype {tensor.dtype}")
    return tensor.long()


def _index_tuple(cls_name: str, names: Sequence[str], values: Sequence[Any]) -> tuple[Tensor, ...]:
    first = values[0]
    device = first.device if isinstance(first, Tensor) else None
    tensors = tuple(_as_index_tensor(f"{cls_name}.{n}", v, device) for n, v in zip(names, values, strict=True))
    lengths = {len(t) for t in tensors}
    if len(lengths) != 1:
        sizes = ", ".join(f"{n}={len(t)}" for n, t in zip(names, tensors, strict=True))
        raise ValueError(f"{cls_name} needs index tensors of equal length, got {sizes}")
    devices = {t.device for t in tensors}
    if len(devices) != 1:
        raise ValueError(f"{cls_name} needs index tensors on one device, got {sorted(map(str, devices))}")
    return tensors


class Triplets(tuple[Tensor, Tensor, Tensor]):
    """Mined triplets ``(anchor, positive, negative)``: three 1-D int64 tensors of equal length T.

    Row ``i`` says: ``embeddings[anchor[i]]`` should be closer to ``positive[i]`` (same label) than to
    ``negative[i]`` (different label). Indices refer to the batch passed to the miner, or, for
    ``positive`` / ``negative`` when the miner got reference embeddings, to the reference set. All three
    live on the device of the embeddings. Empty is ``T == 0`` (tensors of shape ``(0,)``), a valid
    result meaning "nothing to learn from this batch". It is PML's ``(a, p, n)`` tuple.
    """

    __slots__ = ()

    def __new__(cls, anchor: Any, positive: Any, negative: Any) -> Triplets:
        return super().__new__(
            cls, _index_tuple(cls.__name__, ("anchor", "positive", "negative"), (anchor, positive, negative))
        )

    def __getnewargs__(self) -> tuple[Tensor, Tensor, Tensor]:  # pickling / deepcopy of a tuple subclass
        return (self[0], self[1], self[2])

    @property
    def anchor(self) -> Tensor:
        return self[0]

    @property
    def positive(self) -> Tensor:
        return self[1]

    @property
    def negative(self) -> Tensor:
        return self[2]

    @property
    def num(self) -> int:
        """Number of triplets T (``len()`` is the tuple's length, 3, as PML expects)."""
        return int(self[0].numel())

    def is_empty(self) -> bool:
        return self.num == 0

    @property
    def device(self) -> torch.device:
        return self[0].device

    @classmethod
    def _trusted(cls, anchor: Tensor, positive: Tensor, negative: Tensor) -> Triplets:
        """Without the checks, for miners' hot paths that build three int64 tensors of one length and device."""
        return tuple.__new__(cls, (anchor, positive, negative))

    @classmethod
    def empty(cls, device: torch.device | str | None = None) -> Triplets:
        """No triplets, on ``device``."""
        none = torch.empty(0, dtype=torch.long, device=device)
        return cls(none, none, none)

    @classmethod
    def from_pml(cls, indices_tuple: Sequence[Tensor]) -> Triplets:
        """From PML's ``(a, p, n)``; a 4-tuple of pairs is rejected (use :meth:`Pairs.from_pml`)."""
        if len(indices_tuple) != 3:
            raise ValueError(
                "Triplets.from_pml expects PML's 3-tuple (anchor, positive, negative), "
                f"got a {len(indices_tuple)}-tuple"
                + ("; this looks like pairs: use Pairs.from_pml" if len(indices_tuple) == 4 else "")
            )
        return cls(*indices_tuple)

    def to_pml(self) -> tuple[Tensor, Tensor, Tensor]:
        """A plain ``(a, p, n)`` tuple (``Triplets`` already is one; this drops the subclass)."""
        return (self[0], self[1], self[2])

    def to_pairs(self) -> Pairs:
        """The positive pairs ``(a, p)`` and negative pairs ``(a, n)`` of every triplet (PML's ``convert_to_pairs``)."""
        return Pairs(self[0], self[1], self[0], self[2])

    def to(self, device: torch.device | str) -> Triplets:
        return Triplets(*(t.to(device) for t in self))

    def __repr__(self) -> str:
        return f"Triplets(num={self.num}, device={self.device})"


class Pairs(tuple[Tensor, Tensor, Tensor, Tensor]):
    """Mined pairs ``(anchor_pos, positive, anchor_neg, negative)``: PML's ``(a1, p, a2, n)``.

    ``(anchor_pos[i], positive[i])`` are P positive pairs (same label), ``(anchor_neg[j], negative[j])``
    are N negative pairs (different labels); P and N are independent, so the first two tensors share one
    length and the last two another. 1-D int64 tensors on the device of the embeddings. Empty is
    ``P == 0`` and ``N == 0``; a miner may also return only one of the two sides.
    """

    __slots__ = ()

    def __new__(cls, anchor_pos: Any, positive: Any, anchor_neg: Any, negative: Any) -> Pairs:
        pos = _index_tuple(cls.__name__, ("anchor_pos", "positive"), (anchor_pos, positive))
        neg = _index_tuple(cls.__name__, ("anchor_neg", "negative"), (anchor_neg, negative))
        if pos[0].device != neg[0].device:
            raise ValueError(f"Pairs needs all index tensors on one device, got {pos[0].device} and {neg[0].device}")
        return super().__new__(cls, (*pos, *neg))

    def __getnewargs__(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return (self[0], self[1], self[2], self[3])

    @property
    def anchor_pos(self) -> Tensor:
        return self[0]

    @property
    def positive(self) -> Tensor:
        return self[1]

    @property
    def anchor_neg(self) -> Tensor:
        return self[2]

    @property
    def negative(self) -> Tensor:
        return self[3]

    @property
    def num_pos(self) -> int:
        return int(self[0].numel())

    @property
    def num_neg(self) -> int:
        return int(self[2].numel())

    def is_empty(self) -> bool:
        return self.num_pos == 0 and self.num_neg == 0

    @property
    def device(self) -> torch.device:
        return self[0].device

    @classmethod
    def empty(cls, device: torch.device | str | None = None) -> Pairs:
        """No pairs, on ``device``."""
        none = torch.empty(0, dtype=torch.long, device=device)
        return cls(none, none, none, none)

    @classmethod
    def from_pml(cls, indices_tuple: Sequence[Tensor]) -> Pairs:
        """From PML's ``(a1, p, a2, n)``; a 3-tuple of triplets is converted with :meth:`Triplets.to_pairs`."""
        if len(indices_tuple) == 3:
            return Triplets.from_pml(indices_tuple).to_pairs()
        if len(indices_tuple) != 4:
            raise ValueError(f"Pairs.from_pml expects PML's 4-tuple (a1, p, a2, n), got a {len(indices_tuple)}-tuple")
        return cls(*indices_tuple)

    def to_pml(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return (self[0], self[1], self[2], self[3])

    def to(self, device: torch.device | str) -> Pairs:
        return Pairs(*(t.to(device) for t in self))

    def __repr__(self) -> str:
        return f"Pairs(num_pos={self.num_pos}, num_neg={self.num_neg}, device={self.device})"


def indices_from_pml(indices_tuple: Sequence[Tensor]) -> Triplets | Pairs:
    """Wrap a PML indices tuple: a 3-tuple becomes :class:`Triplets`, a 4-tuple :class:`Pairs`."""
    if isinstance(indices_tuple, Triplets | Pairs):
        return indices_tuple
    if len(indices_tuple) == 3:
        return Triplets.from_pml(indices_tuple)
    if len(indices_tuple) == 4:
        return Pairs.from_pml(indices_tuple)
    raise ValueError(f"A PML indices tuple has 3 (triplets) or 4 (pairs) elements, got {len(indices_tuple)}")


@runtime_checkable
class Sampler(Protocol):
    """A batch sampler: iterating it yields the batches of one epoch, each a ``list[int]`` of dataset indices.

    ``len(sampler)`` is the number of batches per epoch. Use it as ``DataLoader(batch_sampler=...)``.
    Samplers that reshuffle per epoch also implement ``set_epoch(epoch: int)``; for a fixed seed, epoch
    (and, under DDP, rank and world size) the batches are deterministic. Under DDP each rank iterates
    only its own share, and every rank gets the same number of batches.
    """

    def __iter__(self) -> Iterator[list[int]]: ...

    def __len__(self) -> int: ...


@runtime_checkable
class Miner(Protocol):
    """Picks informative tuples from a batch: ``miner(embeddings, labels, ref_emb=None, ref_labels=None)``.

    Args (the call convention of PML's miners):
        embeddings: float tensor ``(B, D)`` on any device.
        labels: int64 tensor ``(B,)`` on the same device.
        ref_emb, ref_labels: optional reference set ``(R, D)`` / ``(R,)``; positives and negatives are then
            indices into it (cross-batch memory, query vs gallery).

    Returns:
        :class:`Triplets` or :class:`Pairs` on the device of ``embeddings``; empty (not an error, not NaN)
        when the batch has no valid tuple, e.g. a single label or one item per label. Mining does not
        need gradients and must not break the graph of ``embeddings``.
    """

    def __call__(
        self, embeddings: Tensor, labels: Tensor, ref_emb: Tensor | None = None, ref_labels: Tensor | None = None
    ) -> Triplets | Pairs: ...


@runtime_checkable
class Loss(Protocol):
    """``loss(embeddings, labels) -> Tensor``: a differentiable scalar (0-dim float tensor).

    ``embeddings`` is ``(B, D)`` float, ``labels`` ``(B,)`` int64, both on one device; the result is on
    that device. A batch without any valid tuple gives a zero that is still connected to the graph of
    ``embeddings`` (so DDP sees every parameter used), never NaN. PML's losses fit this call
    (they also accept ``indices_tuple``, which omlcore's miners produce as :class:`Triplets` / :class:`Pairs`).
    """

    def __call__(self, embeddings: Tensor, labels: Tensor) -> Tensor: ...


@runtime_checkable
class MetricAccumulator(Protocol):
    """A stateful metric over many batches, whose state merges exactly across processes.

    - ``update(batch)``: ``batch`` maps keys of :mod:`omlcore.keys` (``"embeddings"``, ``"labels"``,
      ``"is_query"``, ``"is_gallery"``, optional ``"categories"`` / ``"sequences"``, ...) to tensors (or lists)
      of one batch. Accumulates; computes nothing expensive.
    - ``compute()``: the metrics of everything seen since the last ``reset()``; nested dict plus flat
      ``"a/b/c"`` keys. Does not change the state.
    - ``reset()``: back to the empty state.
    - ``state_reductions``: how each state entry combines across processes: ``"sum"`` (element-wise sum),
      ``"cat"`` (concatenation along dim 0, in rank order), ``"max"`` / ``"min"``.
    - ``get_state()``: the current state, ``name -> Tensor`` for every name in ``state_reductions``.
    - ``merge_state(states)``: combine ``states`` (from ``get_state()`` of other processes or shards) into
      this one, following ``state_reductions``. Exact: merging the shards of a dataset gives the state of
      the whole dataset, so a 2-process run computes the same metrics as a 1-process run. The adapters do
      the communication; the accumulator only declares and merges.

    Optional: ``metric_names(categories)``, the flat keys ``compute()`` will report; the train pipeline checks
    ``metric_for_checkpointing`` against it before training (otherwise after the first validation).
    """

    state_reductions: Mapping[str, Reduction]

    def update(self, batch: Mapping[str, Any]) -> None: ...

    def compute(self) -> dict[str, Any]: ...

    def reset(self) -> None: ...

    def get_state(self) -> dict[str, Tensor]: ...

    def merge_state(self, states: Sequence[Mapping[str, Tensor]]) -> None: ...


@runtime_checkable
class Extractor(Protocol):
    """A model that turns a batch of images into embeddings: usually an ``nn.Module``.

    ``extractor(images)`` maps a float tensor ``(B, C, H, W)`` to ``(B, feat_dim)`` float embeddings on the
    same device. ``feat_dim`` (int) is the embedding size, known without running the model.
    """

    feat_dim: int

    def __call__(self, images: Tensor) -> Tensor: ...


@runtime_checkable
class KNNBackend(Protocol):
    """Top-k search of queries in a gallery: ``backend.search(queries, gallery, k, exclude=None)``.

    Args:
        queries: float tensor ``(Q, D)``; gallery: float tensor ``(G, D)``, on one device.
        k: neighbours per query, ``1 <= k``.
        exclude: optional sequence of ``(query_keys, gallery_keys)`` pairs of int64 tensors ``(Q,)`` / ``(G,)``;
            gallery item ``g`` is skipped for query ``q`` when, for any pair, ``query_keys[q] ==
            gallery_keys[g] >= 0`` (same item id, same sequence id; negative keys match nothing).

    Returns:
        ``(distances, indices)``: float ``(Q, k)`` ascending per row and int64 ``(Q, k)`` gallery indices,
        on the device of ``queries``. Rows with fewer than ``k`` candidates are padded with distance
        ``inf`` and index ``-1``. Ties are broken by the smaller gallery index (exact backends).

    ``k`` may exceed ``G`` (the rows are then padded). A backend is built with its distance (``metric="l2"``,
    the Euclidean distance, or ``"cosine"``, ``1 - cos``) and exposes it as ``backend.metric``. When
    ``queries is gallery`` (and the exclusion pairs are symmetric) a backend may compute each distance once.
    omlcore's exact backend is :class:`omlcore.retrieval.ExactKNN`; ``faiss.flat`` / ``faiss.ivf`` /
    ``faiss.hnsw`` come with the ``omlcore-faiss`` plugin.
    """

    def search(
        self, queries: Tensor, gallery: Tensor, k: int, exclude: Sequence[tuple[Tensor, Tensor]] | None = None
    ) -> tuple[Tensor, Tensor]: ...


@runtime_checkable
class Postprocessor(Protocol):
    """A step between the kNN results and their consumers (metrics, predictions): ``process(results, context)``.

    Args:
        results: an :class:`omlcore.retrieval.RetrievalResults` (the top-k of every query).
        context: an :class:`omlcore.postprocessing.RetrievalContext`: the query / gallery embeddings, labels and
            exclusions (``context.split``), the distance and kNN backend (to search again, e.g. with expanded
            queries), and the dataset(s) of the items for learned postprocessors.

    Returns:
        ``RetrievalResults`` of the same queries in the same order, rows sorted ascending by distance, padded with
        ``(inf, -1)`` (a threshold may shorten rows, never drop queries). Metrics, labels and ids are carried over
        (``dataclasses.replace(results, distances=..., retrieved_ids=...)``). Chains:
        :class:`omlcore.postprocessing.PostprocessorChain`, which checks each step's output.
    """

    def process(self, results: Any, context: Any) -> Any: ...


@dataclass
class FitJob:
    """Everything a :class:`Runner` needs to train, in plain PyTorch objects.

    Attributes:
        model: the extractor; loss: the loss (a trainable loss, e.g. ArcFace, is optimised too).
        build_optimizer: trainable parameters -> optimizer; build_scheduler: optimizer -> scheduler (or None).
        train_loader: batches of the training split; val_dataset, metric: validation after every epoch (both
            or neither).
        batch_size, num_workers: of the validation loader.
        checkpoint_dir: where the runner writes its resumable checkpoint (``Runner.checkpoint_name``).
        resume: a checkpoint of this runner to continue from (None: start fresh).
        on_epoch: called after each epoch, in every process, once the epoch's checkpoint is written, with its
            record: ``epoch`` (0-based), ``loss``, the loss's statistics and the flat validation metrics.
        callbacks: the config's ``callbacks``, built (the torch runner's :mod:`omlcore_torch.callbacks`, which the
            Lightning runner turns into Lightning's, or the runner's own framework's callbacks).
        tracker: the experiment loggers, empty in the processes that do not log; the runner logs the loss per step
            and the metrics per epoch into them (or into its framework's loggers attached to the same runs).
    """

    model: nn.Module
    loss: Loss
    build_optimizer: Callable[[list[nn.Parameter]], Optimizer]
    build_scheduler: Callable[[Optimizer], Any] | None
    train_loader: DataLoader[Any]
    val_dataset: Dataset[Any] | None
    metric: MetricAccumulator | None
    batch_size: int
    num_workers: int
    checkpoint_dir: Path
    resume: Path | None
    on_epoch: Callable[[dict[str, float]], None]
    callbacks: Sequence[Any] = ()
    tracker: Tracker = field(default_factory=Tracker)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters that need gradients: the model's, then a trainable loss's."""
        modules = [self.model, self.loss] if isinstance(self.loss, nn.Module) else [self.model]
        return [p for module in modules for p in module.parameters() if p.requires_grad]


@runtime_checkable
class Runner(Protocol):
    """Drives the pipelines' loops in one framework; registered as kind ``runner`` by an adapter's plugin.

    Under a distributed launcher every process runs the pipeline: the collective steps (training, evaluation,
    inference) run everywhere, while only the primary process (:meth:`is_primary`) prints and writes the run
    folder, whose path every process learns through :meth:`share_run_dir`.

    Optional: ``check_callbacks(callbacks)``, which the train pipeline calls before the run folder exists, raises a
    TypeError naming a callback the runner cannot use and what to use instead.

    Attributes:
        epochs: training epochs in total (a resumed run counts the epochs done).
        checkpoint_name: the runner's resumable checkpoint in ``FitJob.checkpoint_dir`` (``last.pt`` ...).
    """

    epochs: int
    checkpoint_name: str

    def fit(self, job: FitJob) -> None:
        """Train ``job.model`` for :attr:`epochs` epochs, resuming ``job.resume`` when it is set: a resumed run
        restores the model, optimizer and scheduler of the checkpoint even when no epoch is left to train."""
        ...

    def evaluate(
        self, model: nn.Module, dataset: Dataset[Any], metric: MetricAccumulator, batch_size: int, num_workers: int
    ) -> dict[str, Any]:
        """``metric.compute()`` over the embeddings of ``dataset`` (equal in every process)."""
        ...

    def inference(self, model: nn.Module, dataset: Dataset[Any], batch_size: int, num_workers: int) -> Tensor:
        """The embeddings of ``dataset`` ``(N, D)``, in dataset order, on the CPU (in every process)."""
        ...

    def is_primary(self) -> bool:
        """Whether this process writes files and prints: process 0 of a distributed run, or the only one."""
        ...

    def share_run_dir(self, path: Path) -> Path:
        """The run folder of the primary process, in every process (``path``: this process's own choice)."""
        ...

    def extractor_weights(self, checkpoint: Mapping[str, Any]) -> Mapping[str, Tensor] | None:
        """The extractor's state dict inside a loaded checkpoint of this runner, or None if it is not one."""
        ...

    def trained_epochs(self, checkpoint: Mapping[str, Any]) -> int | None:
        """How many epochs a loaded resumable checkpoint of this runner has trained, or None if it is not one."""
        ...
