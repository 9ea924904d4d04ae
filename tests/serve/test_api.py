"""The explorer's JSON API on a real server: answers against brute-force references, and every refusal."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from omlcore.index import Index

from .conftest import HOSTILE_NAME, Served, free_port, needs_serve, request


def reference(served: Served) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """The index's embeddings, ids and labels, read with omlcore.index (not through the server)."""
    index = Index.load(served.index)
    embeddings = torch.from_numpy(np.array(index.embeddings(), dtype=np.float32))
    return embeddings, index.items["id"].to_numpy(), index.items["label"].to_numpy()


def test_index_and_items(served: Served) -> None:
    status, summary = served.get("/api/index")
    assert status == 200 and summary["count"] == 36 and summary["labels"] and summary["can_embed"]
    assert summary["run"] == "validation"
    status, page = served.get("/api/items?offset=30&limit=10")
    assert status == 200 and page["total"] == 36 and [item["id"] for item in page["items"]] == list(range(30, 36))
    status, item = served.get("/api/items/7")
    assert status == 200 and item["id"] == 7 and item["label"] == 1 and item["path"].endswith("1_1.png")
    status, found = served.get("/api/items?q=4_")
    assert found["total"] == 6 and {item["label"] for item in found["items"]} == {4}


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/items/999999", 404),
        ("/api/items/abc", 404),
        ("/api/items/..%2F..%2Fetc%2Fpasswd", 404),
        ("/thumbs/items/..%2F..%2Fetc%2Fpasswd", 404),
        ("/thumbs/items/%2Fetc%2Fpasswd", 404),
        ("/api/search?item=123456", 404),
        ("/api/search?item=1&postprocessor=no_such", 400),
        ("/api/search?item=1&postprocessor=constant_threshold", 400),
        ("/api/search?item=1&upload=x", 400),
        ("/api/search?upload=not-a-token", 404),
        ("/api/search?item=1&page=99", 400),
        ("/api/search?item=1&per_page=0", 422),
        ("/api/worst?metric=OVERALL/nope/1", 400),
        ("/api/run/queries/999999", 404),
    ],
)
def test_refusals(served: Served, path: str, status: int) -> None:
    code, body = served.get(path)
    assert code == status, body
    assert b"root:" not in (body if isinstance(body, bytes) else str(body).encode())
    if isinstance(body, dict) and status != 422:
        assert body["detail"]  # a named error, not an empty 404


def test_search_by_item_is_exact(served: Served) -> None:
    embeddings, ids, labels = reference(served)
    for item in (0, 13, 35):
        status, ranking = served.get(f"/api/search?item={item}&per_page=10")
        assert status == 200
        distances = torch.cdist(embeddings[item : item + 1].double(), embeddings.double())[0]
        distances[item] = float("inf")  # an item never retrieves itself
        expected = torch.argsort(distances, stable=True)[:10].tolist()
        assert [cell["id"] for cell in ranking["results"]] == ids[expected].tolist()
        assert [cell["rank"] for cell in ranking["results"]] == list(range(1, 11))
        np.testing.assert_allclose([c["distance"] for c in ranking["results"]], distances[expected].numpy(), atol=1e-4)
        kinds = ["correct" if labels[row] == labels[item] else "wrong" for row in expected]
        assert [cell["kind"] for cell in ranking["results"]] == kinds
        relevant = {int(ids[row]) for row in np.flatnonzero(labels == labels[item]) if row != item}
        assert ranking["n_relevant"] == len(relevant) == 5 and ranking["total"] == 35
        assert {cell["id"] for cell in ranking["missed"]} == relevant - {cell["id"] for cell in ranking["results"]}


def test_pages_continue_the_ranking(served: Served) -> None:
    _, first = served.get("/api/search?item=3&per_page=20")
    _, second = served.get("/api/search?item=3&per_page=20&page=2")
    _, whole = served.get("/api/search?item=3&per_page=35")
    assert first["pages"] == 2 and len(second["results"]) == 15
    assert [c["id"] for c in first["results"] + second["results"]] == [c["id"] for c in whole["results"]]
    assert second["results"][0]["rank"] == 21


def test_concurrent_searches_answer_like_single_ones(served: Served) -> None:
    items = [i % 36 for i in range(48)]
    alone = {item: served.get(f"/api/search?item={item}&per_page=7")[1]["results"] for item in set(items)}
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(lambda item: served.get(f"/api/search?item={item}&per_page=7")[1]["results"], items))
    for item, answer in zip(items, together, strict=True):  # batched: the same items, distances up to rounding
        assert [cell["id"] for cell in answer] == [cell["id"] for cell in alone[item]]
        np.testing.assert_allclose([c["distance"] for c in answer], [c["distance"] for c in alone[item]], atol=1e-4)


def test_postprocessor_switch_reranks(served: Served) -> None:
    status, choices = served.get("/api/postprocessors")
    assert status == 200
    available = {choice["name"] for choice in choices if choice["available"]}
    assert {"aqe", "k_reciprocal"} <= available and "constant_threshold" not in available
    _, plain = served.get("/api/search?item=4&per_page=10")
    status, after = served.get("/api/search?item=4&per_page=10&postprocessor=aqe")
    assert status == 200 and after["postprocessor"] == "aqe"
    plain_ranks = {cell["id"]: cell["rank"] for cell in plain["results"]}
    for cell in after["results"]:
        assert cell["rank_before"] == plain_ranks.get(cell["id"])
    distances = [cell["distance"] for cell in after["results"]]
    assert distances == sorted(distances)


def test_upload_finds_the_same_image(served: Served) -> None:
    path = served.csv.parent / "2_3.png"
    status, ranking = served.upload("/api/search", path.read_bytes(), "2_3.png", per_page="5")
    assert status == 200, ranking
    top = ranking["results"][0]
    assert top["path"].endswith("2_3.png") and top["distance"] < 1e-3 and top["kind"] == "retrieved"
    assert len(ranking["results"]) == 5 and ranking["query"] is None
    status, more = served.get(f"/api/search?upload={ranking['upload']}&page=2&per_page=5")
    assert status == 200 and more["results"][0]["rank"] == 6
    status, thumbnail = served.get(f"/thumbs/uploads/{ranking['upload']}")
    assert status == 200 and Image.open(io.BytesIO(thumbnail)).size == (40, 40)


def test_bad_uploads_are_refused_by_name(served: Served) -> None:
    status, body = served.upload("/api/search", b"not an image at all", "notes.txt")
    assert status == 415 and "notes.txt" in body["detail"] and "Pillow" in body["detail"]
    status, body = served.upload("/api/search", b"", "empty.png")
    assert status == 415 and "empty.png" in body["detail"]
    big = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8)).save(big, "BMP")
    status, body = served.upload("/api/search", big.getvalue(), "huge.bmp")
    assert status == 413 and "200000" in body["detail"]
    status, body = request(served.url + "/api/search", b"x", {"Content-Type": "text/plain"})
    assert status == 400


def test_thumbnails_are_small_and_cached(served: Served) -> None:
    status, data = served.get("/thumbs/items/5")
    assert status == 200
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and max(image.size) <= 128
    assert served.get("/thumbs/items/5")[1] == data


def test_metrics_and_worst_queries(served: Served) -> None:
    status, metrics = served.get("/api/metrics")
    assert status == 200 and metrics["run"] == "validation"
    assert set(metrics["reported"]) == set(metrics["recomputed"])
    for name, value in metrics["reported"].items():  # the index holds the run's embeddings: same metrics
        assert metrics["recomputed"][name] == pytest.approx(value, abs=1e-6), name
    embeddings, ids, labels = reference(served)
    distances = torch.cdist(embeddings.double(), embeddings.double()).fill_diagonal_(float("inf"))
    hits = labels[distances.argmin(dim=1).numpy()] == labels
    assert metrics["recomputed"]["OVERALL/cmc/1"] == pytest.approx(hits.mean())
    status, worst = served.get("/api/worst?metric=OVERALL/cmc/1&n=4&top_k=3")
    assert status == 200 and len(worst) == 4
    misses = {int(ids[row]) for row in np.flatnonzero(~hits)}
    assert [entry["value"] for entry in worst] == sorted(entry["value"] for entry in worst)
    assert {entry["query"]["id"] for entry in worst if entry["value"] == 0} <= misses
    status, after = served.get("/api/metrics?postprocessor=k_reciprocal")
    assert status == 200 and after["postprocessor"] == "k_reciprocal" and "OVERALL/cmc/1" in after["postprocessed"]


def test_run_query_ranking(served: Served) -> None:
    status, ranking = served.get("/api/run/queries/9?per_page=40")
    assert status == 200 and ranking["total"] == 35 and len(ranking["results"]) == 35
    _, search = served.get("/api/search?item=9&per_page=35")
    assert [c["id"] for c in ranking["results"]] == [c["id"] for c in search["results"]]  # the run's gallery is all


def test_openapi_schema(served: Served) -> None:
    status, schema = served.get("/openapi.json")
    assert status == 200
    assert {"/api/search", "/api/items/{item_id}", "/api/metrics", "/api/worst"} <= set(schema["paths"])
    assert "multipart/form-data" in schema["paths"]["/api/search"]["post"]["requestBody"]["content"]


def test_pages_escape_paths(served: Served) -> None:
    status, page = served.get("/search?item=0")
    assert status == 200
    text = page.decode()
    assert HOSTILE_NAME not in text and '<b id="injected">' not in text
    assert "q&quot;&gt;&lt;b id=&quot;injected&quot;&gt;x.png" in text


def test_cli_serves_on_localhost(explorer_data: tuple[Path, Path, Path], tmp_path: Path) -> None:
    needs_serve()
    port = free_port()
    command = [sys.executable, "-m", "omlcore", "serve", str(explorer_data[0]), "--port", str(port)]
    process = subprocess.Popen([*command, "--cache", str(tmp_path)], env={**os.environ}, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                status, summary = request(f"http://127.0.0.1:{port}/api/index")
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "omlcore serve did not start"
                time.sleep(0.2)
        assert status == 200 and summary["count"] == 36 and summary["run"] is None
        assert request(f"http://127.0.0.1:{port}/api/metrics")[0] == 404
    finally:
        process.terminate()
        process.wait(timeout=30)
