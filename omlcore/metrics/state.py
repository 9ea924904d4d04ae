"""EmbeddingState: the items an :class:`~omlcore.metrics.EmbeddingMetrics` has seen, as one mergeable state.

Batches are added by :meth:`EmbeddingState.update`; under DDP each rank collects its shard, the ranks exchange
:meth:`~EmbeddingState.get_state` and :meth:`~EmbeddingState.merge_state` the others' states. Every entry reduces
by ``"cat"``: categories travel as stable 63-bit codes of their names (the same in every process) plus the names
themselves, NUL-terminated UTF-8 bytes in one uint8 tensor, so that concatenation merges the vocabularies.
:meth:`~EmbeddingState.collect` puts the items back in dataset order by their ``idx`` and drops duplicates (a
``DistributedSampler`` pads shards by repeating items).
"""

from __future__ import annotations

import difflib
import functools
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from omlcore.keys import (
    CATEGORIES,
    CATEGORY_COLUMN,
    EMBEDDINGS,
    INDEX,
    IS_GALLERY,
    IS_QUERY,
    LABELS,
    SEQUENCE_COLUMN,
    SEQUENCES,
)
from omlcore.protocols import Reduction
from omlcore.retrieval.validation import (
    RetrievalInputError,
    as_bool_mask,
    as_embeddings,
    as_int_keys,
    as_labels,
    check_finite,
)

__all__ = ["OVERALL", "POSTPROCESSED", "CollectedItems", "EmbeddingState"]

#: The name of the aggregate over all categories, reserved: no category may have it.
OVERALL = "OVERALL"
#: The prefix of the metrics after post-processing, reserved too.
POSTPROCESSED = "postprocessed"

_STATE = ("embeddings", "labels", "is_query", "is_gallery", "index", "categories", "sequences", "category_names")
#: The batch keys read, and the CSV columns' (OML's) names read as two of them.
_READ = (EMBEDDINGS, LABELS, IS_QUERY, IS_GALLERY, INDEX, CATEGORIES, SEQUENCES)
_ALIASES = {CATEGORY_COLUMN: CATEGORIES, SEQUENCE_COLUMN: SEQUENCES}
#: How far two copies of one item's embedding (the same ``idx``) may differ: a padded DistributedSampler
#: embeds a repeated item in another batch, where GPU kernels may round differently.
_COPY_RTOL, _COPY_ATOL = 1e-3, 1e-5


@functools.lru_cache(maxsize=4096)
def _category_code(name: str) -> int:
    """A stable positive 63-bit code of a category name, the same in every process (0 means "no category")."""
    code = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little") & (2**63 - 1)
    return code or 1


def _encode_names(names: Sequence[str]) -> Tensor:
    """Names as NUL-terminated UTF-8 bytes in one uint8 tensor (so that "cat" merges vocabularies)."""
    data = b"".join(name.encode() + b"\0" for name in names)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.zeros(0, dtype=torch.uint8)


def _decode_names(data: Tensor) -> dict[int, str]:
    names = bytes(data.cpu().numpy().tobytes()).split(b"\0")[:-1]
    vocabulary: dict[int, str] = {}
    for raw in names:
        name = raw.decode()
        code = _category_code(name)
        if vocabulary.setdefault(code, name) != name:
            raise RetrievalInputError(f"category names {name!r} and {vocabulary[code]!r} collide; rename one")
    return vocabulary


@dataclass(frozen=True)
class CollectedItems:
    """Every collected item once, in dataset order (what :meth:`EmbeddingState.collect` returns).

    ``index``: dataset indices, or arrival / rank positions ``0 .. N-1`` where the batches carried none.
    ``categories``: category codes (0 for none, then for every item), named by ``category_names``.
    ``sequences``: sequence ids, ``-1`` for none.
    """

    embeddings: Tensor
    labels: Tensor
    is_query: Tensor
    is_gallery: Tensor
    index: Tensor
    categories: Tensor
    sequences: Tensor
    category_names: dict[int, str]
    n_duplicates_dropped: int


class EmbeddingState:
    """The accumulated batches: ``update`` / ``get_state`` / ``merge_state`` / ``reset`` of a MetricAccumulator.

    Batches carry ``embeddings`` ``(B, D)``, ``labels``, ``is_query``, ``is_gallery`` and optionally ``idx``
    (dataset indices, in every batch or in none), ``categories`` (strings) and ``sequences`` (int ids, ``-1``
    for none); ``category`` and ``sequence`` (the CSV columns' and OML's names) are read as the last two. Other
    keys (images, paths, ...) are ignored, except near-misses of these names (``sequnces``, ``label``), which are
    an error naming the key meant.
    """

    state_reductions: ClassVar[Mapping[str, Reduction]] = dict.fromkeys(_STATE, "cat")

    def __init__(self) -> None:
        self.reset()

    def __len__(self) -> int:
        """The number of items collected (repeated ones included)."""
        return sum(len(part) for part in self._parts["embeddings"])

    def reset(self) -> None:
        """Forget every batch and merged state."""
        self._parts: dict[str, list[Tensor]] = {name: [] for name in _STATE}
        self._dim: int | None = None
        self._has_index: bool | None = None

    def update(self, batch: Mapping[str, Any]) -> None:
        """Add one batch (see the class docstring for its keys). Embeddings are detached and kept as they are."""
        batch = _canonical_keys(batch)
        missing = [key for key in (EMBEDDINGS, LABELS, IS_QUERY, IS_GALLERY) if key not in batch]
        if missing:
            raise RetrievalInputError(
                f"the batch lacks {missing} (it has {sorted(map(str, batch))}). EmbeddingMetrics needs "
                f"'{EMBEDDINGS}', '{LABELS}', '{IS_QUERY}' and '{IS_GALLERY}' (True for items that are both, "
                "as in PML's leave-one-out evaluation)"
            )
        embeddings = as_embeddings(f"batch['{EMBEDDINGS}']", batch[EMBEDDINGS]).detach()
        n, device = len(embeddings), embeddings.device
        if self._dim is not None and embeddings.shape[1] != self._dim:
            raise RetrievalInputError(
                f"batch['{EMBEDDINGS}'] has {embeddings.shape[1]} dimensions, earlier batches had {self._dim}"
            )
        has_index = INDEX in batch
        if self._has_index is not None and has_index != self._has_index:
            raise RetrievalInputError(
                f"some batches carry '{INDEX}' and some do not; pass the dataset index in every batch or in none"
            )
        if has_index:
            index = as_int_keys(f"batch['{INDEX}']", batch[INDEX], n, device)
            if bool((index < 0).any()):
                raise RetrievalInputError(f"batch['{INDEX}'] holds negative dataset indices; they must be >= 0")
        else:  # unknown: the items keep the order they arrive (and are merged) in
            index = torch.full((n,), -1, dtype=torch.long, device=device)
        check_finite(f"batch['{EMBEDDINGS}']", embeddings, index if has_index else None)
        parts = {
            "embeddings": embeddings,
            "labels": as_labels(f"batch['{LABELS}']", batch[LABELS], n, device),
            "is_query": as_bool_mask(f"batch['{IS_QUERY}']", batch[IS_QUERY], n, device),
            "is_gallery": as_bool_mask(f"batch['{IS_GALLERY}']", batch[IS_GALLERY], n, device),
            "index": index,
            "sequences": (
                as_int_keys(f"batch['{SEQUENCES}']", batch[SEQUENCES], n, device)
                if batch.get(SEQUENCES) is not None
                else torch.full((n,), -1, dtype=torch.long, device=device)
            ),
        }
        parts["categories"], parts["category_names"] = _categories(batch.get(CATEGORIES), n, device)
        for name, value in parts.items():
            self._parts[name].append(value)
        self._dim, self._has_index = embeddings.shape[1], has_index

    def get_state(self) -> dict[str, Tensor]:
        """Everything collected so far, one tensor per entry of :attr:`state_reductions` (all ``"cat"``)."""
        state: dict[str, Tensor] = {}
        for name, parts in self._parts.items():
            if len(parts) == 1:
                state[name] = parts[0]
            elif parts:
                state[name] = torch.cat(parts)
            elif name == "embeddings":
                state[name] = torch.zeros(0, self._dim or 0)
            else:
                state[name] = torch.zeros(0, dtype=torch.uint8 if name == "category_names" else torch.long)
        return state

    def merge_state(self, states: Sequence[Mapping[str, Tensor]]) -> None:
        """Add the states of other processes / shards (from their :meth:`get_state`); empty ones are skipped."""
        for position, state in enumerate(states):
            missing = set(_STATE) - set(state)
            if missing:
                raise RetrievalInputError(f"state {position} lacks {sorted(missing)}; pass get_state() results")
            embeddings = state["embeddings"]
            if len(embeddings) == 0:
                continue
            if self._dim is not None and embeddings.shape[1] != self._dim:
                raise RetrievalInputError(
                    f"state {position} has {embeddings.shape[1]}-dimensional embeddings, this one {self._dim}"
                )
            for name in _STATE:
                self._parts[name].append(state[name])
            self._dim = embeddings.shape[1]

    def collect(self) -> CollectedItems:
        """The items in dataset order (by ``idx``), each once; without indices in arrival / rank order, all kept."""
        state = self.get_state()
        device = state["embeddings"].device
        index = state["index"].to(device)
        keep: Tensor | None = None  # the positions kept, where not all in their order
        n_dropped = 0
        known = index >= 0
        if bool(known.all()):
            order = torch.sort(index, stable=True).indices
            sorted_index = index[order]
            first = torch.ones(len(order), dtype=torch.bool, device=device)
            first[1:] = sorted_index[1:] != sorted_index[:-1]
            kept = order[first]
            n_dropped = len(order) - len(kept)
            if n_dropped:
                _check_copies(state, order, first, sorted_index)
            if not torch.equal(kept, torch.arange(len(index), device=device)):  # else in order, once each: no copies
                keep = kept
        elif bool(known.any()):
            raise RetrievalInputError(
                f"some merged states carry dataset indices ('{INDEX}') and some do not; pass them everywhere"
            )
        else:
            index = torch.arange(len(index), device=device)

        def column(name: str) -> Tensor:
            value = index if name == "index" else state[name].to(device)
            return value if keep is None else value[keep]

        categories = column("categories")
        if bool((categories != 0).any()) and bool((categories == 0).any()):
            raise RetrievalInputError(
                f"some batches carry '{CATEGORIES}' and some do not; give every item a category or none"
            )
        return CollectedItems(
            embeddings=column("embeddings"),
            labels=column("labels"),
            is_query=column("is_query"),
            is_gallery=column("is_gallery"),
            index=column("index"),
            categories=categories,
            sequences=column("sequences"),
            category_names=_decode_names(state["category_names"]),
            n_duplicates_dropped=n_dropped,
        )


def _check_copies(state: Mapping[str, Tensor], order: Tensor, first: Tensor, sorted_index: Tensor) -> None:
    """Items repeated under one ``idx`` must be copies of one item (equal labels and flags, equal embeddings up to
    rounding), else the index names two items and dropping one would lose data."""
    positions = torch.arange(len(order), device=order.device)
    kept_of = torch.cummax(torch.where(first, positions, 0), dim=0).values  # the first of each run of one idx
    copies, originals = order[~first], order[kept_of[~first]]
    embeddings = state["embeddings"]
    different = ~torch.isclose(embeddings[copies], embeddings[originals], rtol=_COPY_RTOL, atol=_COPY_ATOL).all(dim=1)
    for name in ("labels", "is_query", "is_gallery", "categories", "sequences"):
        values = state[name].to(order.device)
        different |= values[copies] != values[originals]
    if bool(different.any()):
        repeated = sorted_index[~first][different].unique()
        shown = ", ".join(str(v) for v in repeated[:5].tolist())
        raise RetrievalInputError(
            f"{len(repeated)} dataset indices ('{INDEX}') are given to different items (other embeddings, labels "
            f"or flags), e.g. {shown}: each index must name one item. Pass unique indices (the dataset's), or leave "
            f"'{INDEX}' out of the batches"
        )


def _canonical_keys(batch: Mapping[str, Any]) -> Mapping[str, Any]:
    """``batch`` with OML's singular names read as the plural keys; near-misses of the keys are an error."""
    renamed = {alias: key for alias, key in _ALIASES.items() if alias in batch}
    for alias, key in renamed.items():
        if key in batch:
            raise RetrievalInputError(f"the batch has both '{alias}' and '{key}' (the same thing): keep one")
    for name in batch:
        if not isinstance(name, str) or name in _READ or name in _ALIASES:
            continue
        close = difflib.get_close_matches(name, _READ, n=1, cutoff=0.75)
        if close:
            raise RetrievalInputError(
                f"the batch key '{name}' is not one EmbeddingMetrics reads; did you mean '{close[0]}'? Rename it "
                f"(it reads {', '.join(repr(key) for key in _READ)}; other keys are ignored)"
            )
    if not renamed:
        return batch
    return {renamed.get(name, name): value for name, value in batch.items()}


def _categories(value: Any, n: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """A batch's category codes ``(n,)`` and its names (encoded); zeros and no names without categories."""
    if value is None:
        return torch.zeros(n, dtype=torch.long, device=device), torch.zeros(0, dtype=torch.uint8)
    names = [str(v) for v in (value.tolist() if isinstance(value, Tensor) else value)]
    if len(names) != n:
        raise RetrievalInputError(f"batch['{CATEGORIES}'] has {len(names)} entries for {n} embeddings")
    for reserved in (OVERALL, POSTPROCESSED):
        if reserved in names:
            raise RetrievalInputError(f"'{reserved}' is a reserved name in the metrics; rename that category")
    codes = torch.tensor([_category_code(name) for name in names], dtype=torch.long, device=device)
    return codes, _encode_names(sorted(set(names)))
