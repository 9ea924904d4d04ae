"""`omlcore index build | add` and `omlcore search`: real images, config, checkpoints, index folders and processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from omlcore.cli import main
from omlcore.config import ConfigError, build_component, load_config
from omlcore.index import Index, IndexFormatError
from omlcore.index import index as index_module
from omlcore.pipelines import predict
from omlcore.pipelines.common import weights_sha256
from omlcore.pipelines.index import add_to_index, build_index, search

from .conftest import VAL_LABELS, run_folders


def image_folder(tiny_csv: Path, folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True)
    for name in names:
        shutil.copy(tiny_csv.parent / name, folder / name)
    return folder


def brute_force(queries: np.ndarray, gallery: np.ndarray, k: int) -> np.ndarray:
    distances = np.linalg.norm(queries[:, None, :].astype(np.float64) - gallery[None, :, :], axis=2)
    return np.argsort(distances, axis=1, kind="stable")[:, :k]


def test_build_then_search_a_csv_of_queries(tiny_config: Path, tiny_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "val.index"
    code = main(["index", "build", str(tiny_config), f"data={tiny_csv}", "index.split=validation", f"out={out}"])
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    config = load_config(tiny_config, ["index.split=validation"], pipeline="index")
    torch.manual_seed(config["seed"])  # the pipeline seeds before building the (untrained) extractor
    model = build_component("extractor", config["extractor"], "extractor")
    assert manifest["model"]["name"] == "small_cnn" and manifest["model"]["weights_sha256"] == weights_sha256(model)
    assert manifest["metric"] == "l2" and manifest["count"] == VAL_LABELS * 4 and manifest["backend"] is None
    assert manifest["config"]["index"]["out"] == str(out)
    embedded = predict(tiny_config, ["predict.split=validation", "run_name=oracle"]).embeddings
    index = Index.load(out)
    np.testing.assert_allclose(index.embeddings(), embedded, atol=1e-6)  # the same model, the same items
    assert index.items["path"].tolist() == pd.read_csv(run_folders(tiny_config)[0] / "items.csv")["path"].tolist()

    result = search(out, [f"queries={tiny_csv}", "search.split=validation", "k=3", "run_name=csv"])
    expected = brute_force(embedded, index.embeddings(), 3)
    assert torch.equal(result.results.retrieved_ids, torch.from_numpy(expected))
    records = json.loads((result.run_dir / "neighbours.json").read_text())
    assert records[0]["query_path"] == records[0]["neighbours"][0]["path"]  # each query is in the index
    assert set(records[0]) == {"query", "query_path", "query_label", "neighbours"}
    assert set(records[0]["neighbours"][0]) == {"id", "path", "label", "distance"}
    table = pd.read_csv(result.run_dir / "neighbours.csv")
    assert list(table.columns) == ["query", "query_path", "query_label", "rank", "id", "path", "label", "distance"]
    assert len(table) == 3 * VAL_LABELS * 4
    assert result.metrics["OVERALL/cmc/1"] == 1.0  # every query finds itself first
    assert json.loads((result.run_dir / "metrics.json").read_text()) == pytest.approx(result.metrics)
    assert (result.run_dir / "retrieval" / "worst_OVERALL_precision_3.html").is_file()
    assert "OVERALL/cmc/1: 1.0000" in (result.run_dir / "log.txt").read_text()


def test_search_names_the_undecodable_queries_and_searches_the_rest(
    tiny_config: Path, tiny_csv: Path, tmp_path: Path
) -> None:
    gallery = image_folder(tiny_csv, tmp_path / "gallery", ["0_0.png", "1_0.png", "2_0.png", "3_0.png"])
    out = tmp_path / "folder.index"
    build_index(tiny_config, [f"data={gallery}", f"out={out}"])
    queries = image_folder(tiny_csv, tmp_path / "queries", ["1_0.png", "3_0.png"])
    (queries / "broken.png").write_bytes((tiny_csv.parent / "2_0.png").read_bytes()[:50])
    result = search(out, [f"queries={queries}", "k=2", "run_name=folder"])
    assert [Path(path).name for path, _ in result.unreadable] == ["broken.png"]
    listed = pd.read_csv(result.run_dir / "unreadable.csv")
    assert listed["path"].str.endswith("broken.png").all()
    assert "1 unreadable file(s) left out" in (result.run_dir / "log.txt").read_text()
    records = json.loads((result.run_dir / "neighbours.json").read_text())
    assert [Path(r["neighbours"][0]["path"]).name for r in records] == ["1_0.png", "3_0.png"]
    assert (result.run_dir / "retrieval" / "queries.html").is_file()  # no labels: the first queries

    single = search(out, [f"queries={queries / '3_0.png'}", "k=1", "run_name=one"])
    assert single.results.retrieved_ids.tolist() == [[3]]
    with pytest.raises(Exception, match=r"no image in '.*broken\.png' could be read"):
        search(out, [f"queries={queries / 'broken.png'}", "run_name=broken"])
    with pytest.raises(Exception, match=r"1 file\(s\) in '.*queries' cannot be read .*search\.strict=false"):
        search(out, [f"queries={queries}", "search.strict=true", "run_name=strict"])
    names = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert names == ["folder", "one"]  # the failed searches left no run folder


def test_search_applies_the_configured_postprocessor(tiny_config: Path, tiny_csv: Path, tmp_path: Path) -> None:
    gallery = image_folder(tiny_csv, tmp_path / "gallery", ["0_0.png", "0_1.png", "5_0.png", "9_0.png"])
    out = tmp_path / "index"
    build_index(tiny_config, [f"data={gallery}", f"out={out}"])
    plain = search(out, [f"queries={gallery / '0_0.png'}", "k=4", "run_name=plain"])
    cut = float(plain.results.distances[0, 1]) + 1e-6  # keeps the query itself and its nearest other
    threshold = f"postprocessor={{name: constant_threshold, args: {{th: {cut}}}}}"
    kept = search(out, [f"queries={gallery / '0_0.png'}", "k=4", threshold, "run_name=cut"])
    assert kept.results.retrieved_ids[0].tolist()[:2] == plain.results.retrieved_ids[0].tolist()[:2]
    assert len(json.loads((kept.run_dir / "neighbours.json").read_text())[0]["neighbours"]) == 2


def test_add_embeds_with_the_index_model_and_refuses_another(tiny_config: Path, tiny_csv: Path, tmp_path: Path) -> None:
    first = image_folder(tiny_csv, tmp_path / "first", ["0_0.png", "1_0.png"])
    second = image_folder(tiny_csv, tmp_path / "second", ["7_0.png", "8_0.png", "9_0.png"])
    out = tmp_path / "index"
    build_index(tiny_config, [f"data={first}", f"out={out}"])
    assert main(["index", "add", str(out), f"data={second}"]) == 0
    index = Index.load(out)
    assert len(index) == 5 and [Path(p).name for p in index.items["path"]][2:] == ["7_0.png", "8_0.png", "9_0.png"]
    found = search(out, [f"queries={second / '8_0.png'}", "k=1", "run_name=added"])
    assert found.results.retrieved_ids.tolist() == [[3]]

    other = tmp_path / "other.pt"
    model = build_component("extractor", load_config(tiny_config, pipeline="index")["extractor"], "extractor")
    torch.save({name: value + 1 for name, value in model.state_dict().items()}, other)
    with pytest.raises(IndexFormatError, match=r"built with model 'small_cnn' \(weights sha256 .*the queries come"):
        add_to_index(out, [f"data={second}", f"checkpoint={other}"])
    with pytest.raises(IndexFormatError, match="built with model 'small_cnn'"):
        search(out, [f"queries={second}", f"checkpoint={other}"])
    with pytest.raises(IndexFormatError, match="measures 'l2' distances, the config 'cosine'"):
        search(out, [f"queries={second}", "metric.args.metric=cosine"])
    with pytest.raises(ConfigError, match=r"index\.data: is required to add"):
        add_to_index(out)
    assert len(Index.load(out)) == 5


def test_cli_errors_name_the_index_and_the_key(
    tiny_config: Path, tiny_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "index"
    folder = image_folder(tiny_csv, tmp_path / "images", ["0_0.png", "1_0.png"])
    assert main(["index", "build", str(tiny_config), f"data={folder}"]) == 2
    assert "index.out: is required to build an index: add out=<folder>" in capsys.readouterr().err
    assert main(["index", "build", str(tiny_config), f"data={folder}", f"out={out}"]) == 0
    assert main(["index", "build", str(tiny_config), f"data={folder}", f"out={out}"]) == 2
    assert "exists; choose another folder, or set index.overwrite=true" in capsys.readouterr().err
    assert main(["search", str(out)]) == 2
    assert "search.queries: is required to search" in capsys.readouterr().err
    (out / "manifest.json").unlink()
    assert main(["search", str(out), f"queries={folder}"]) == 2
    assert "has no manifest.json: it is not an omlcore index" in capsys.readouterr().err
    built = Index.build(torch.randn(3, 8)).save(tmp_path / "python")
    assert main(["search", str(built), f"queries={folder}"]) == 2
    assert "holds no config (built in Python): pass the config" in capsys.readouterr().err
    # with the config that embeds its items, an index without a recorded model is searched (nothing to check)
    assert main(["search", "--config", str(tiny_config), str(built), f"queries={folder}", "k=2"]) == 0


def test_an_interrupted_build_leaves_no_folder(
    tiny_config: Path, tiny_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = image_folder(tiny_csv, tmp_path / "images", ["0_0.png", "1_0.png", "2_0.png"])
    written = index_module._write_segment

    def interrupted(*args: object) -> object:
        written(*args)  # the segment's files are written ...
        raise KeyboardInterrupt  # ... then Ctrl-C, before the manifest

    monkeypatch.setattr(index_module, "_write_segment", interrupted)
    assert main(["index", "build", str(tiny_config), f"data={folder}", f"out={tmp_path / 'index'}"]) == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "tiny.yaml"]  # no index, no temporary folder


def test_two_processes_adding_through_the_cli_lose_nothing(tiny_config: Path, tiny_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "index"
    build_index(tiny_config, [f"data={image_folder(tiny_csv, tmp_path / 'base', ['0_0.png'])}", f"out={out}"])
    parts = [image_folder(tiny_csv, tmp_path / f"part{n}", [f"{n}_{k}.png" for k in range(4)]) for n in (1, 2)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "omlcore", "index", "add", str(out), f"data={part}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for part in parts
    ]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    index = Index.load(out)
    assert len(index) == 9 and index.items["id"].tolist() == list(range(9))
    assert sorted(Path(p).name for p in index.items["path"]) == sorted(
        ["0_0.png", *[f"{n}_{k}.png" for n in (1, 2) for k in range(4)]]
    )


def test_a_faiss_backend_of_the_config_is_saved_with_the_index(
    tiny_config: Path, tiny_csv: Path, tmp_path: Path
) -> None:
    pytest.importorskip("omlcore_faiss.backends", reason="needs the omlcore-faiss plugin")
    out = tmp_path / "ivf"
    backend = "metric.args.knn_backend={name: faiss.ivf, args: {nlist: 2, nprobe: 2}}"
    build_index(tiny_config, [f"data={tiny_csv}", f"out={out}", backend, "index.dtype=float16"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["backend"] == {"name": "faiss.ivf", "args": {"nlist": 2, "nprobe": 2}}
    assert manifest["backend_state"]["rows"] == 40 and manifest["dtype"] == "float16"
    found = search(out, [f"queries={tiny_csv}", "search.split=validation", "k=2"])
    validation = torch.from_numpy(np.array(Index.load(out).embeddings()[24:], dtype=np.float32))  # 16 last rows
    exact = Index.load(out, backend="exact").search(validation, k=2)
    assert torch.equal(found.results.retrieved_ids[:, 0], exact.retrieved_ids[:, 0])
