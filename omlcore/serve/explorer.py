"""The explorer's model of an index: its items, searches by item or by embedding, the postprocessor switch.

Framework-free (no web code): :mod:`omlcore.serve.app` puts it behind HTTP. The gallery's embeddings are read once
into memory (float32) and searched exactly by :class:`~omlcore.serve.scan.GalleryScan`; uploaded images are embedded
with the model recorded in the index (its config and checkpoint), checked against the index's weights.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import Tensor

from omlcore.errors import OmlcoreError
from omlcore.index import Index
from omlcore.plugins import get_registry
from omlcore.postprocessing import build_postprocessor
from omlcore.protocols import Postprocessor
from omlcore.serve.ranking import Gallery, Query

__all__ = ["Explorer", "ExplorerError", "ImageEmbedder", "Item", "PostprocessorChoice", "UnknownItemError"]


class ExplorerError(OmlcoreError):
    """A request the explorer cannot answer (the message names what and the fix)."""


class UnknownItemError(ExplorerError):
    """An item id that the index does not hold."""


@dataclass(frozen=True)
class Item:
    """An indexed item: its id, row in the index, and label / path / text where the index has them."""

    id: int
    row: int
    label: int | None = None
    path: str | None = None
    text: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "path": self.path, "text": self.text}


@dataclass(frozen=True)
class PostprocessorChoice:
    """A registered postprocessor for the switch: available when it builds with its defaults, else the reason."""

    name: str
    summary: str
    available: bool
    reason: str | None = None


class ImageEmbedder:
    """Embeds images with the model an index was built with: the config saved in the index (extractor, checkpoint,
    ``transforms_val``), refused when its weights differ from the index's (:meth:`Index.check_model`). Loaded on the
    first image; one image at a time."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self._model: torch.nn.Module | None = None
        self._transform: Callable[[Image.Image], Tensor] | None = None
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        """Whether the index records the config that embeds its items (``omlcore index build`` does)."""
        return self.index.config is not None

    def _load(self) -> tuple[torch.nn.Module, Callable[[Image.Image], Tensor]]:
        from omlcore.config import build_component, load_config
        from omlcore.pipelines.common import build_runner, load_extractor, seed_everything, weights_sha256

        if self.index.config is None:
            raise ExplorerError(
                f"the index '{self.index.folder}' holds no config (built in Python), so images cannot be embedded: "
                "search by item, or build the index with `omlcore index build`"
            )
        config = load_config(dict(self.index.config), pipeline="search")
        seed_everything(config["seed"])  # as `omlcore index build` did: an untrained extractor gets the same weights
        model = load_extractor(config, build_runner(config)).eval()
        self.index.check_model(config["extractor.name"], weights_sha256(model))
        transform = build_component("transform", config["transforms_val"], "transforms_val")
        return model, transform

    def __call__(self, image: Image.Image) -> Tensor:
        """The embedding ``(D,)`` of an RGB image."""
        with self._lock:
            if self._model is None or self._transform is None:
                self._model, self._transform = self._load()
            device = next(self._model.parameters()).device
            with torch.inference_mode():
                embedding = self._model(self._transform(image).unsqueeze(0).to(device))
        return embedding[0].float().cpu()


class Explorer:
    """An index opened for exploring: item lookups, galleries to search, images to embed, postprocessors.

    Args:
        index: a loaded :class:`~omlcore.index.Index`.
        embedder: turns an uploaded image into a query embedding (default: :class:`ImageEmbedder` of the index).
    """

    def __init__(self, index: Index, embedder: Callable[[Image.Image], Tensor] | None = None) -> None:
        self.index = index
        self.items = index.items.reset_index(drop=True)
        self.ids = self.items["id"].to_numpy(np.int64)
        self._rows = pd.Index(self.ids)
        self.has_labels = "label" in self.items
        self.has_paths = "path" in self.items
        self.has_texts = "text" in self.items
        labels = torch.tensor(self.items["label"].to_numpy(np.int64)) if self.has_labels else None
        embeddings = torch.from_numpy(np.array(index.embeddings(), dtype=np.float32))
        self.gallery = Gallery(embeddings, torch.arange(len(self.items)), labels, None, index.metric)
        self.embedder = embedder if embedder is not None else ImageEmbedder(index)
        self._choices: list[PostprocessorChoice] | None = None

    @classmethod
    def open(cls, folder: str | os.PathLike[str], verify: bool = True) -> Explorer:
        """The explorer of the index saved in ``folder`` (every file's checksum checked with ``verify``)."""
        return cls(Index.load(folder, verify=verify))

    def __len__(self) -> int:
        return len(self.items)

    @property
    def can_embed(self) -> bool:
        """Whether uploaded images can be embedded (the index records its model's config)."""
        return bool(getattr(self.embedder, "available", True))

    # --- items ---------------------------------------------------------------------------------------------------

    def row_of(self, item_id: int | str) -> int:
        """The index row of item ``item_id`` (an int, or its decimal text)."""
        try:
            key = int(str(item_id), 10)
        except ValueError:
            raise UnknownItemError(f"'{item_id}' is not an item id: ids are integers (see /api/items)") from None
        row = self._rows.get_indexer([key])[0] if -(2**63) <= key < 2**63 else -1
        if row < 0:
            raise UnknownItemError(f"the index holds no item with id {key}: pick one listed by /api/items")
        return int(row)

    def item(self, item_id: int | str) -> Item:
        """The item of id ``item_id``; :class:`UnknownItemError` for an id the index does not hold."""
        return self.item_at(self.row_of(item_id))

    def item_at(self, row: int) -> Item:
        """The item in index row ``row``."""
        record = self.items.iloc[row]
        return Item(
            int(record["id"]),
            row,
            int(record["label"]) if self.has_labels else None,
            str(record["path"]) if self.has_paths else None,
            str(record["text"]) if self.has_texts else None,
        )

    def find(self, offset: int = 0, limit: int = 48, contains: str | None = None) -> tuple[list[Item], int]:
        """Items ``offset .. offset + limit`` (in index order) whose label, path or text contains ``contains``
        (case-insensitive; None: every item), and how many match."""
        if contains:
            needle = contains.lower()
            matches = np.zeros(len(self.items), dtype=bool)
            for column in ("label", "path", "text"):
                if column in self.items:
                    text = self.items[column].astype(str).str.lower()
                    matches |= text.str.contains(needle, regex=False).to_numpy()
            rows = np.flatnonzero(matches)
        else:
            rows = np.arange(len(self.items))
        return [self.item_at(int(row)) for row in rows[offset : offset + limit]], len(rows)

    def query_of(self, item: Item) -> Query:
        """The query of an indexed item: its stored embedding, label and row (it never retrieves itself)."""
        return Query(self.gallery.embeddings[item.row], item.row, item.label)

    def embed(self, image: Image.Image) -> Tensor:
        """An uploaded image's embedding ``(D,)``."""
        if not self.can_embed:
            raise ExplorerError(
                f"the index '{self.index.folder}' holds no config (built in Python), so images cannot be embedded: "
                "search by item, or build the index with `omlcore index build`"
            )
        embedding = self.embedder(image)
        if embedding.shape != (self.index.dim,):
            raise ExplorerError(f"the embedder gave shape {tuple(embedding.shape)}; the index holds {self.index.dim}")
        return embedding

    # --- postprocessors ------------------------------------------------------------------------------------------

    def postprocessors(self) -> list[PostprocessorChoice]:
        """Every registered postprocessor, available when it builds with its defaults."""
        if self._choices is None:
            registry = get_registry()
            choices = []
            for entry in registry.entries(kind="postprocessor"):
                try:
                    build_postprocessor(entry.name)
                except Exception as error:  # a plugin's factory may raise anything; the switch shows why
                    choices.append(PostprocessorChoice(entry.name, entry.summary, False, str(error)))
                else:
                    choices.append(PostprocessorChoice(entry.name, entry.summary, True))
            self._choices = choices
        return self._choices

    def postprocessor(self, name: str | None) -> tuple[str, Postprocessor] | None:
        """The postprocessor ``name`` built with its defaults; None for None, ``""`` or ``"none"``."""
        if name in (None, "", "none"):
            return None
        choice = next((choice for choice in self.postprocessors() if choice.name == name), None)
        if choice is None:
            known = ", ".join(c.name for c in self.postprocessors() if c.available)
            raise ExplorerError(f"unknown postprocessor '{name}'; choose none or one of: {known}")
        if not choice.available:
            raise ExplorerError(f"the postprocessor '{name}' does not build with its defaults: {choice.reason}")
        built = build_postprocessor(name)
        assert built is not None
        return name, built
