"""One rule for labels (omlcore.labels), the same for a miner, a loss and retrieval (results and metrics): one table
of inputs, parametrised over each of them."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from omlcore.labels import InvalidLabelsError, as_class_ids
from omlcore.losses import ArcFaceLoss
from omlcore.metrics import EmbeddingMetrics
from omlcore.miners import HardTripletsMiner
from omlcore.retrieval import RetrievalResults

BASE = [0, 1, 2, 3, 0, 1, 2, 3, 3, 0]
EMBEDDINGS = torch.randn(len(BASE), 6, generator=torch.Generator().manual_seed(0))


def read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def with_values(dtype: torch.dtype, **values: float) -> torch.Tensor:
    """``BASE`` as ``dtype`` with ``values`` (``p<position>=value``) put in."""
    labels = torch.tensor(BASE, dtype=dtype)
    for key, value in values.items():
        labels[int(key[1:])] = value
    return labels


#: Inputs that are class ids: each must give exactly what the int64 labels give.
ACCEPTED: dict[str, Callable[[], Any]] = {
    "int64": lambda: torch.tensor(BASE),
    "int32": lambda: torch.tensor(BASE, dtype=torch.int32),
    "uint8": lambda: torch.tensor(BASE, dtype=torch.uint8),
    "float64 whole numbers": lambda: torch.tensor(BASE, dtype=torch.float64),
    "float32 whole numbers": lambda: torch.tensor(BASE, dtype=torch.float32),
    "float16 whole numbers": lambda: torch.tensor(BASE, dtype=torch.float16),
    "numpy int16": lambda: np.array(BASE, dtype=np.int16),
    "numpy float64, read-only": lambda: read_only(np.array(BASE, dtype=np.float64)),
    "list of ints": lambda: list(BASE),
    "list of whole floats": lambda: [float(label) for label in BASE],
}

#: Inputs that are not: the error type and what its message must say.
REJECTED: dict[str, tuple[Callable[[], Any], type[Exception], str]] = {
    "NaN": (
        lambda: with_values(torch.float32, p5=float("nan")),
        InvalidLabelsError,
        "must be class ids: integers, or floats that are whole numbers; got torch.float32 values [nan] at "
        "positions [5]. Fix: give these items a class or drop them",
    ),
    "fractions": (
        lambda: with_values(torch.float64, p2=1.5, p6=2.25),
        InvalidLabelsError,
        "got torch.float64 values [1.5, 2.25] at positions [2, 6]",
    ),
    "infinity": (lambda: with_values(torch.float64, p0=float("inf")), InvalidLabelsError, "[inf] at positions [0]"),
    "beyond int64": (lambda: with_values(torch.float64, p9=1e19), InvalidLabelsError, "[1e+19] at positions [9]"),
    "bool": (lambda: torch.tensor(BASE) > 1, TypeError, "must hold integer class ids, got dtype torch.bool"),
    "complex": (lambda: torch.tensor(BASE, dtype=torch.complex64), TypeError, "got dtype torch.complex64"),
    "strings": (lambda: [str(label) for label in BASE], TypeError, "numpy dtype <U1 (['0', '1', '2', '3', '0'] ...)"),
    "missing values": (lambda: [None, *BASE[1:]], TypeError, "got numpy dtype object ([None, 1, 2, 3, 0] ..."),
}


def mined(labels: Any) -> Any:
    return [t.tolist() for t in HardTripletsMiner()(EMBEDDINGS, labels)]


def arcface(labels: Any) -> Any:
    torch.manual_seed(1)
    return ArcFaceLoss(in_features=EMBEDDINGS.shape[1], num_classes=4)(EMBEDDINGS, labels).item()


def metrics(labels: Any) -> Any:
    accumulator = EmbeddingMetrics()
    everything = torch.ones(len(BASE), dtype=torch.bool)
    accumulator.update({"embeddings": EMBEDDINGS, "labels": labels, "is_query": everything, "is_gallery": everything})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return accumulator.compute()


def retrieval(labels: Any) -> Any:
    results = RetrievalResults.from_embeddings(EMBEDDINGS, labels, top_k=3)
    return results.n_relevant.tolist(), results.is_relevant.tolist()


def class_ids(labels: Any) -> Any:
    converted = as_class_ids("labels", labels)
    assert converted.dtype == torch.int64
    return converted.tolist()


CONSUMERS = {
    "as_class_ids": class_ids,
    "miner": mined,
    "loss": arcface,
    "EmbeddingMetrics": metrics,
    "RetrievalResults": retrieval,
}


@pytest.mark.parametrize("consumer", CONSUMERS)
@pytest.mark.parametrize("case", ACCEPTED)
def test_class_ids_give_what_int64_labels_give(consumer: str, case: str) -> None:
    use = CONSUMERS[consumer]
    assert use(ACCEPTED[case]()) == use(torch.tensor(BASE))


@pytest.mark.parametrize("consumer", CONSUMERS)
@pytest.mark.parametrize("case", REJECTED)
def test_other_labels_are_a_named_error(consumer: str, case: str) -> None:
    make, error, message = REJECTED[case]
    with pytest.raises(error, match=re.escape(message)):
        CONSUMERS[consumer](make())


def test_int64_tensors_are_not_copied_and_the_device_is_honoured() -> None:
    labels = torch.tensor(BASE)
    assert as_class_ids("labels", labels) is labels
    assert as_class_ids("labels", labels, "cpu") is labels
    assert as_class_ids("labels", [1.0, 2.0], torch.device("cpu")).tolist() == [1, 2]


def test_only_the_first_bad_labels_are_listed() -> None:
    labels = torch.full((12,), 0.5)
    with pytest.raises(InvalidLabelsError, match=re.escape("at positions [0, 1, 2, 3, 4] (first 5 of 12)")):
        as_class_ids("labels", labels)
