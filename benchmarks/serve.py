"""A bounded local load test of the explorer's search API (``omlcore serve``): latency and throughput.

An index of ``--items`` random embeddings (dim ``--dim``, float32, 1,000 labels; exact engine) is saved to a temporary
folder and served by ``omlcore serve`` in a subprocess on a free 127.0.0.1 port. Then, from this process:

1. one client, ``--sequential`` searches one after the other (``GET /api/search?item=<random>&per_page=10``): the
   latency of a search on an idle server;
2. ``--clients`` concurrent clients (asyncio + httpx), each sending its next search when the last one is answered, for
   ``--seconds``: requests/s, p50 / p99 latency, errors (any status but 200).

The machine is shared: the load average is printed before and after. Run it once; it stops by itself.

    python benchmarks/serve.py                        # 100,000 x 384, 20 clients for 30 s
    python benchmarks/serve.py --items 10000 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

from omlcore.index import Index


def build_index(folder: Path, items: int, dim: int) -> Path:
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(items, dim, generator=generator)
    index = Index.build(embeddings, labels=torch.arange(items) % 1000, model={"name": "random"})
    return index.save(folder / "bench.index")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def percentiles(latencies: list[float]) -> dict[str, float]:
    values = np.array(latencies) * 1000
    return {"p50_ms": float(np.percentile(values, 50)), "p99_ms": float(np.percentile(values, 99))}


async def sequential(url: str, n: int, items: int, rng: np.random.Generator) -> dict[str, Any]:
    latencies, errors = [], 0
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        for _ in range(n):
            start = time.perf_counter()
            response = await client.get("/api/search", params={"item": int(rng.integers(items)), "per_page": 10})
            latencies.append(time.perf_counter() - start)
            errors += response.status_code != 200
    return {"requests": n, "errors": errors, **percentiles(latencies)}


async def load(url: str, clients: int, seconds: float, items: int, rng: np.random.Generator) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                response = await client.get("/api/search", params={"item": int(rng.integers(items)), "per_page": 10})
                errors += response.status_code != 200
            except httpx.HTTPError:
                errors += 1
            latencies.append(time.perf_counter() - start)

    began = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
    elapsed = time.perf_counter() - began
    return {
        "clients": clients,
        "seconds": round(elapsed, 1),
        "requests": len(latencies),
        "requests_per_s": len(latencies) / elapsed,
        "errors": errors,
        **percentiles(latencies),
    }


def wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"omlcore serve exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/api/index", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.5)
    raise RuntimeError("omlcore serve did not answer in time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--sequential", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as temporary:
        folder = build_index(Path(temporary), args.items, args.dim)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "omlcore", "-q", "serve", str(folder), "--port", str(port)]
        process = subprocess.Popen([*command, "--cache", str(Path(temporary) / "thumbs")])
        try:
            wait_until_up(url, process)
            asyncio.run(sequential(url, 20, args.items, rng))  # warm-up
            report: dict[str, Any] = {
                "items": args.items,
                "dim": args.dim,
                "torch_threads": torch.get_num_threads(),
                "load_average_before": os.getloadavg(),
            }
            report["sequential"] = asyncio.run(sequential(url, args.sequential, args.items, rng))
            report["concurrent"] = asyncio.run(load(url, args.clients, args.seconds, args.items, rng))
            report["load_average_after"] = os.getloadavg()
        finally:
            process.terminate()
            process.wait(timeout=60)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
