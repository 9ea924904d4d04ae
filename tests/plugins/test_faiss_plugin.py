"""plugins/omlcore-faiss: a separately installable distribution registering faiss kNN backends."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import sys
import warnings
from pathlib import Path
from types import ModuleType

import pytest
import torch

from omlcore.config import resolve
from omlcore.metrics import EmbeddingMetrics
from omlcore.plugins import get_plugin_manager, get_registry, registry_of
from omlcore.protocols import KNNBackend
from omlcore.retrieval import ExactKNN, RetrievalInputError

SOURCE = Path(__file__).resolve().parents[2] / "plugins" / "omlcore-faiss"
NAMES = ["faiss.flat", "faiss.hnsw", "faiss.ivf"]


def plugin_module(name: str) -> ModuleType:
    """``omlcore_faiss.<name>``, installed or straight from the source tree."""
    try:
        return importlib.import_module(f"omlcore_faiss.{name}")
    except ModuleNotFoundError:
        sys.path.insert(0, str(SOURCE))
        return importlib.import_module(f"omlcore_faiss.{name}")


def installed() -> bool:
    try:
        importlib.metadata.distribution("omlcore-faiss")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def test_plugin_registers_the_backends_without_importing_faiss(python_runner) -> None:  # type: ignore[no-untyped-def]
    code = (
        "import json, sys\n"
        "from omlcore.plugins import registry_of\n"
        "from omlcore_faiss import plugin\n"
        "registry = registry_of([('faiss', plugin)])\n"
        "print(json.dumps([registry.names('knn_backend'), 'faiss' in sys.modules, 'torch' in sys.modules]))"
    )
    result = python_runner(code, pythonpath=[SOURCE])
    assert result.returncode == 0, result.stderr
    names, faiss_imported, torch_imported = json.loads(result.stdout.splitlines()[-1])
    assert names == NAMES
    assert not faiss_imported and not torch_imported


def test_entries_declare_faiss() -> None:
    registry = registry_of([("faiss", plugin_module("plugin"))])
    for name in NAMES:
        entry = registry.get("knn_backend", name)
        assert entry.requires == ("faiss",) and entry.plugin == "faiss" and entry.summary


@pytest.mark.skipif(not installed(), reason="the omlcore-faiss distribution is not installed here")
def test_installed_distribution_is_discovered_and_used_from_a_config() -> None:
    pytest.importorskip("faiss")
    info = get_plugin_manager().infos["faiss"]
    assert (info.distribution, info.module, info.status) == ("omlcore-faiss", "omlcore_faiss.plugin", "loaded")
    backend = resolve("knn_backend", {"name": "faiss.hnsw", "args": {"M": 16}})
    assert isinstance(backend, KNNBackend) and backend.M == 16


@pytest.mark.skipif(not installed(), reason="the omlcore-faiss distribution is not installed here")
def test_cli_lists_the_backends_and_the_plugin_can_be_disabled(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from omlcore.cli import main
    from omlcore.plugins import reset_plugin_manager

    main(["plugins", "--kind", "knn_backend"])
    listing = capsys.readouterr().out
    assert all(name in listing for name in [*NAMES, "exact"])
    monkeypatch.setenv("OMLCORE_DISABLE_PLUGINS", "faiss")
    reset_plugin_manager()
    assert get_registry().names("knn_backend") == ["exact"]


@pytest.mark.skipif(not installed(), reason="the omlcore-faiss distribution is not installed here")
def test_embedding_metrics_take_the_backend_by_name() -> None:
    pytest.importorskip("faiss")
    metrics = EmbeddingMetrics(knn_backend={"name": "faiss.ivf", "args": {"nlist": 4}}, metric="cosine")
    assert type(metrics.knn_backend).__name__ == "FaissIVFKNN"
    assert (metrics.knn_backend.metric, metrics.knn_backend.nlist) == ("cosine", 4)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def backends() -> ModuleType:
    pytest.importorskip("faiss")
    return plugin_module("backends")


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_flat_gives_the_exact_top_k(backends: ModuleType, metric: str) -> None:
    torch.manual_seed(0)
    items = torch.randn(400, 24)
    ids, sequences = torch.arange(400), torch.randint(-1, 60, (400,))
    exclude = [(ids, ids), (sequences, sequences)]
    flat = backends.FaissFlatKNN(metric)
    assert isinstance(flat, KNNBackend)
    distances, indices = flat.search(items, items, 10, exclude)
    expected_distances, expected_indices = ExactKNN(metric).search(items, items, 10, exclude)
    assert torch.equal(indices, expected_indices)
    assert torch.allclose(distances, expected_distances, atol=1e-4)
    queries = torch.randn(30, 24)
    assert torch.equal(flat.search(queries, items, 7)[1], ExactKNN(metric).search(queries, items, 7)[1])


def test_flat_pads_short_rows(backends: ModuleType) -> None:
    gallery = torch.tensor([[0.0], [1.0], [2.0]])
    query_keys, gallery_keys = torch.tensor([4, -1]), torch.tensor([4, 4, -1])
    distances, indices = backends.FaissFlatKNN().search(gallery[:2], gallery, 5, [(query_keys, gallery_keys)])
    assert indices.tolist() == [[2, -1, -1, -1, -1], [1, 0, 2, -1, -1]]
    assert distances[0, 0].item() == pytest.approx(2.0) and torch.isinf(distances[0, 1:]).all()


@pytest.mark.parametrize(
    ("name", "args"), [("FaissIVFKNN", {"nlist": 16, "nprobe": 16}), ("FaissHNSWKNN", {"M": 16, "ef_search": 128})]
)
def test_approximate_backends_have_high_recall(backends: ModuleType, name: str, args: dict[str, int]) -> None:
    torch.manual_seed(1)
    gallery, queries = torch.randn(2000, 16), torch.randn(100, 16)
    _, indices = getattr(backends, name)(**args).search(queries, gallery, 10)
    _, exact = ExactKNN().search(queries, gallery, 10)
    recall = sum(len(set(a) & set(b)) for a, b in zip(indices.tolist(), exact.tolist(), strict=True)) / exact.numel()
    assert recall >= 0.95


def test_backend_in_embedding_metrics_equals_exact(backends: ModuleType) -> None:
    torch.manual_seed(2)
    batch = {
        "embeddings": torch.randn(300, 16),
        "labels": torch.randint(0, 40, (300,)),
        "is_query": torch.ones(300, dtype=torch.bool),
        "is_gallery": torch.ones(300, dtype=torch.bool),
    }
    outputs = []
    for backend in (backends.FaissFlatKNN(), None):
        metrics = EmbeddingMetrics(cmc_top_k=(1, 5), pcf_variance=(), knn_backend=backend)
        metrics.update(batch)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            outputs.append({k: v for k, v in metrics.compute().items() if "/" in k})
    assert outputs[0] == pytest.approx(outputs[1], nan_ok=True)


def test_bad_input(backends: ModuleType) -> None:
    flat = backends.FaissFlatKNN()
    bad = torch.zeros(4, 3)
    bad[1, 0] = float("nan")
    with pytest.raises(RetrievalInputError, match=r"queries contain NaN or Inf in rows \[1\]"):
        flat.search(bad, torch.zeros(5, 3), 2)
    with pytest.raises(RetrievalInputError, match="queries have 3 dimensions and the gallery 4"):
        flat.search(torch.zeros(4, 3), torch.zeros(5, 4), 2)
    with pytest.raises(ValueError, match="metric must be 'l2' or 'cosine'"):
        backends.FaissFlatKNN("dot")
    with pytest.raises(ValueError, match="nlist and nprobe must be positive"):
        backends.FaissIVFKNN(nlist=0)
