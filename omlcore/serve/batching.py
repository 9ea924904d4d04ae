"""Concurrent searches answered together: requests that arrive while a scan runs share the next scan.

A scan of a large gallery costs about as much for 32 queries as for one (it reads the gallery once), so under load
the explorer answers many requests per pass instead of queueing one pass per request. Nothing waits on a timer: a
lone request is scanned at once.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
from torch import Tensor

from omlcore.serve.ranking import Gallery

__all__ = ["SearchBatcher"]


def _future() -> asyncio.Future[tuple[Tensor, Tensor]]:
    return asyncio.get_running_loop().create_future()


@dataclass
class _Request:
    gallery: Gallery
    query: Tensor
    k: int
    exclude: int
    done: asyncio.Future[tuple[Tensor, Tensor]] = field(default_factory=_future)


class SearchBatcher:
    """Scans of :class:`~omlcore.serve.ranking.Gallery` objects, batched per gallery, in one worker thread.

    Args:
        max_batch: the most queries of one scan.
    """

    def __init__(self, max_batch: int = 64) -> None:
        self.max_batch = max_batch
        self._pending: list[_Request] = []
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="omlcore-scan")

    async def search(self, gallery: Gallery, query: Tensor, k: int, exclude: int = -1) -> tuple[Tensor, Tensor]:
        """``gallery.scan.search`` of one query ``(D,)``: ``(distances, positions)`` of shape ``(1, min(k, G))``."""
        request = _Request(gallery, query, k, exclude)
        self._pending.append(request)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await request.done

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            gallery = self._pending[0].gallery
            batch = [request for request in self._pending if request.gallery is gallery][: self.max_batch]
            self._pending = [request for request in self._pending if all(request is not b for b in batch)]
            try:
                answers = await loop.run_in_executor(self._executor, _scan, gallery, batch)
            except Exception as error:
                for request in batch:
                    if not request.done.done():
                        request.done.set_exception(error)
                continue
            for request, answer in zip(batch, answers, strict=True):
                if not request.done.done():
                    request.done.set_result(answer)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _scan(gallery: Gallery, batch: list[_Request]) -> list[tuple[Tensor, Tensor]]:
    queries = torch.stack([request.query for request in batch])
    exclude = torch.tensor([request.exclude for request in batch], dtype=torch.long)
    depth = max(request.k for request in batch)
    distances, positions = gallery.scan.search(queries, depth, exclude)
    width = [min(request.k, distances.shape[1]) for request in batch]
    return [(distances[i : i + 1, :w], positions[i : i + 1, :w]) for i, w in enumerate(width)]
