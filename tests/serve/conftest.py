"""Fixtures of the explorer's tests: a small dataset of generated images, an index of it built by `omlcore index
build`, a validation run of it by `omlcore validate`, and the explorer served by a real uvicorn on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from omlcore.utils.optional import is_available

N_LABELS, PER_LABEL = 6, 6
#: A file name that would break a page that forgot to escape paths.
HOSTILE_NAME = 'q"><b id="injected">x.png'


def needs_serve() -> None:
    """Skip unless the serve extra is installed; the reason names the missing packages."""
    missing = [module for module in ("fastapi", "uvicorn", "multipart") if not is_available(module)]
    if missing:
        pytest.skip(f'needs {", ".join(missing)} (pip install "omlcore[serve]")')


def make_dataset(folder: Path) -> Path:
    """Shapes of 6 colours (labels), 6 noisy images each, every one a validation query and gallery item."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for label in range(N_LABELS):
        colour = tuple(int(c) for c in rng.integers(30, 225, 3))
        for k in range(PER_LABEL):
            image = Image.new("RGB", (40, 40), (245, 245, 245))
            draw = ImageDraw.Draw(image)
            offset = int(rng.integers(0, 8))
            shape = [4 + offset, 4 + offset, 30 + offset, 30 + offset]
            (draw.ellipse if label % 2 else draw.rectangle)(shape, fill=colour)
            noisy = np.clip(np.asarray(image, dtype=np.float64) + rng.normal(0, 12, (40, 40, 3)), 0, 255)
            name = HOSTILE_NAME if (label, k) == (0, 0) else f"{label}_{k}.png"
            Image.fromarray(noisy.astype(np.uint8)).save(folder / name)
            rows.append({"label": label, "path": name, "split": "validation", "is_query": True, "is_gallery": True})
    csv = folder / "df.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


def config_of(csv: Path, runs: Path) -> dict[str, Any]:
    return {
        "dataset": {"csv": str(csv), "batch_size": 16},
        "extractor": {"name": "small_cnn", "args": {"feat_dim": 16, "widths": [8, 16]}},
        "transforms_val": {"name": "resize_normalize", "args": {"size": 32}},
        "metric": {
            "name": "embedding_metrics",
            "args": {"cmc_top_k": [1, 3], "precision_top_k": [3], "map_top_k": [3], "pcf_variance": []},
        },
        "runner": {"name": "torch", "args": {"progress": False}},
        "output_dir": str(runs),
        "visualization": {"n_queries": 0},
    }


@dataclass
class Served:
    """A running explorer: its base URL, the index folder, the run folder and the dataset's CSV."""

    url: str
    index: Path
    run: Path
    csv: Path

    def get(self, path: str) -> tuple[int, Any]:
        """``(status, parsed JSON or text)`` of a GET."""
        return request(self.url + path)

    def upload(self, path: str, data: bytes, name: str = "query.png", **fields: str) -> tuple[int, Any]:
        """``(status, JSON)`` of a multipart POST of ``data`` as the field ``file``."""
        boundary = uuid.uuid4().hex
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
            for key, value in fields.items()
        ]
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        parts.append(head.encode() + b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        return request(self.url + path, body, headers)


def request(url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    call = urllib.request.Request(url, data=body, headers=headers or {}, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(call, timeout=120) as response:
            status, text, kind = response.status, response.read(), response.headers.get("content-type", "")
    except urllib.error.HTTPError as error:
        status, text, kind = error.code, error.read(), error.headers.get("content-type", "")
    if kind.startswith("application/json"):
        return status, json.loads(text)
    return status, text


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(app: Any) -> tuple[str, Any, threading.Thread]:
    """``app`` served by uvicorn in a thread on a free 127.0.0.1 port: its URL, the server and the thread."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the explorer's server did not start")
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server, thread


@pytest.fixture(scope="session")
def explorer_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """``(index folder, validation run folder, dataset CSV)``: the index and the run by the real pipelines."""
    needs_serve()
    from omlcore.pipelines import validate
    from omlcore.pipelines.index import build_index

    root = tmp_path_factory.mktemp("explorer")
    csv = make_dataset(root / "data")
    config = config_of(csv, root / "runs")
    index = build_index(config, [f"out={root / 'data.index'}", "index.split=validation"]).folder
    run = validate(config, ["run_name=validation"]).run_dir
    return index, run, csv


@pytest.fixture(scope="session")
def served(explorer_data: tuple[Path, Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The explorer of the index and the run, on a real server (uploads limited to 200 kB)."""
    needs_serve()
    from omlcore.serve import build_app

    index, run, csv = explorer_data
    cache = tmp_path_factory.mktemp("thumbnails")
    url, server, thread = start_server(build_app(index, run, cache=cache, max_upload_bytes=200_000))
    yield Served(url, index, run, csv)
    server.should_exit = True
    thread.join(timeout=30)
