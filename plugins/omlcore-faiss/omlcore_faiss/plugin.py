"""Registers the faiss backends with omlcore. Imports neither faiss nor torch: listing them is free."""

from __future__ import annotations

from omlcore.hookspecs import hookimpl
from omlcore.registry import Registrar

__all__ = ["register_knn_backends"]

_BACKENDS = "omlcore_faiss.backends"


@hookimpl
def register_knn_backends(registry: Registrar) -> None:
    registry.register(
        "faiss.flat", f"{_BACKENDS}:FaissFlatKNN", requires=("faiss",), summary="faiss exact flat index (l2, cosine)"
    )
    registry.register(
        "faiss.ivf",
        f"{_BACKENDS}:FaissIVFKNN",
        requires=("faiss",),
        summary="faiss inverted file index, approximate (nlist, nprobe)",
    )
    registry.register(
        "faiss.hnsw",
        f"{_BACKENDS}:FaissHNSWKNN",
        requires=("faiss",),
        summary="faiss HNSW graph, approximate (M, ef_search, ef_construction)",
    )
