"""Objects from zoo entries: the model with its weights, and its preprocessing.

>>> model = from_pretrained("vits16_dino")              # doctest: +SKIP
>>> transform = transforms_for_pretrained("vits16_dino")  # doctest: +SKIP

The entries themselves (names, URLs, checksums, reported scores) and their lookup are in
:mod:`omlcore.models.catalog`; :mod:`omlcore.models` exports both modules' API.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omlcore.config import resolve
from omlcore.models.base import ExtractorBase
from omlcore.models.catalog import get_pretrained

__all__ = ["from_pretrained", "transforms_for_pretrained"]


def from_pretrained(name: str, *, progress: bool = True, allow_pickle: bool = False, **overrides: Any) -> ExtractorBase:
    """The zoo model ``name`` with its weights; ``overrides`` replace constructor arguments of the entry.

    ``allow_pickle=True`` opts in to reading a file that needs full unpickling or TorchScript code (see
    :func:`omlcore.models.hub.load_checkpoint`); only for files whose origin you trust.
    """
    return ExtractorBase.from_pretrained(name, progress=progress, allow_pickle=allow_pickle, **overrides)


def transforms_for_pretrained(name: str) -> Callable[[Any], Any]:
    """The preprocessing that goes with zoo model ``name`` (PIL image -> normalised tensor)."""
    model = get_pretrained(name)
    built: Callable[[Any], Any] = resolve("transform", {"name": model.transform, "args": dict(model.transform_args)})
    return built
