"""`omlcore validate` (table, JSON, grids) and `omlcore predict` (embeddings, top-k JSON / CSV)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from omlcore.cli import main
from omlcore.config import ConfigError
from omlcore.errors import DataValidationError
from omlcore.pipelines import predict, train, validate
from omlcore.utils.optional import is_available

from .conftest import VAL_LABELS, run_folders


def test_cli_validate_prints_a_table_and_writes_json_and_grids(
    tiny_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    formats = "[html, png]" if is_available("matplotlib") else "[html]"
    assert main(["validate", str(tiny_config), f"visualization.formats={formats}"]) == 0
    out = capsys.readouterr().out
    assert "metric" in out and "OVERALL/cmc/1" in out and "OVERALL/map/2" in out
    [run] = run_folders(tiny_config)
    assert run.name.startswith("validate-tiny-")
    payload = json.loads((run / "metrics.json").read_text())
    assert 0 <= payload["flat"]["OVERALL/cmc/1"] <= 1 and "OVERALL" in payload["nested"]
    grids = {p.name for p in (run / "retrieval").iterdir()}
    assert "worst_OVERALL_cmc_1.html" in grids
    if is_available("matplotlib"):
        assert "worst_OVERALL_cmc_1.png" in grids


@pytest.mark.skipif(is_available("matplotlib"), reason="the error for PNG grids where matplotlib is missing")
def test_png_grids_without_matplotlib_name_the_extra(tiny_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tiny_config), "visualization.formats=[png]"]) == 2
    assert 'pip install "omlcore[viz]"' in capsys.readouterr().err


def test_validate_a_trained_checkpoint_reproduces_its_metrics(tiny_config: Path) -> None:
    trained = train(tiny_config, ["validate_untrained=false"])
    for checkpoint in (trained.run_dir, trained.run_dir / "checkpoints" / "last.pt"):
        result = validate(tiny_config, [f"checkpoint={checkpoint}", "visualization.n_queries=0"])
        assert result.metrics == pytest.approx(trained.trained)
        assert not (result.run_dir / "retrieval").exists()
    with pytest.raises(ConfigError, match=r"checkpoint: .* does not fit the extractor"):
        validate(tiny_config, [f"checkpoint={trained.run_dir}", "extractor.args.feat_dim=4"])


def test_cli_predict_writes_embeddings_and_neighbours(tiny_config: Path, tiny_csv: Path) -> None:
    assert main(["predict", str(tiny_config), "predict.split=validation", "predict.top_k=2"]) == 0
    [run] = run_folders(tiny_config)
    embeddings = np.load(run / "embeddings.npy")
    items = pd.read_csv(run / "items.csv")
    assert embeddings.shape == (VAL_LABELS * 4, 8) and len(items) == len(embeddings)
    assert set(items["label"]) == set(range(6, 6 + VAL_LABELS))
    neighbours = json.loads((run / "neighbours.json").read_text())
    assert len(neighbours) == len(items) and all(len(item["neighbours"]) == 2 for item in neighbours)
    first = neighbours[0]
    assert first["index"] not in [other["index"] for other in first["neighbours"]]
    distances = np.linalg.norm(embeddings - embeddings[0], axis=1)
    distances[0] = np.inf
    assert [other["index"] for other in first["neighbours"]] == np.argsort(distances)[:2].tolist()
    table = pd.read_csv(run / "neighbours.csv")
    assert len(table) == 2 * len(items) and table["rank"].tolist()[:2] == [1, 2]


def test_predict_an_image_folder(tiny_config: Path, tiny_csv: Path, tmp_path: Path) -> None:
    folder = tmp_path / "images" / "nested"
    folder.mkdir(parents=True)
    for name in ("0_0.png", "0_1.png", "1_0.png"):
        shutil.copy(tiny_csv.parent / name, folder / name)
    result = predict(tiny_config, [f"predict.data={folder.parent}", "predict.top_k=5"])
    assert result.embeddings.shape == (3, 8) and [Path(p).name for p in result.paths] == [
        "0_0.png",
        "0_1.png",
        "1_0.png",
    ]
    neighbours = json.loads((result.run_dir / "neighbours.json").read_text())
    assert [len(item["neighbours"]) for item in neighbours] == [2, 2, 2]
    with pytest.raises(ConfigError, match=r"predict\.data: no such CSV file or image folder"):
        predict(tiny_config, ["predict.data=nowhere"])


def test_predict_uses_the_configured_distance(tiny_config: Path) -> None:
    result = predict(tiny_config, ["predict.split=validation", "predict.top_k=3", "metric.args.metric=cosine"])
    unit = result.embeddings / np.linalg.norm(result.embeddings, axis=1, keepdims=True)
    cosine = 1 - unit @ unit.T
    np.fill_diagonal(cosine, np.inf)
    for item in json.loads((result.run_dir / "neighbours.json").read_text()):
        found = item["neighbours"]
        expected = np.argsort(cosine[item["index"]], kind="stable")[:3]
        assert [other["index"] for other in found] == expected.tolist()
        np.testing.assert_allclose([o["distance"] for o in found], cosine[item["index"]][expected], atol=1e-5)


def test_predict_uses_the_configured_knn_backend(tiny_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backends = pytest.importorskip("omlcore_faiss.backends", reason="needs the omlcore-faiss plugin (the py env)")
    calls: list[int] = []
    search = backends.FaissFlatKNN.search

    def counted(self: Any, queries: Any, gallery: Any, k: int, exclude: Any = None) -> Any:
        calls.append(k)
        return search(self, queries, gallery, k, exclude)

    monkeypatch.setattr(backends.FaissFlatKNN, "search", counted)
    exact = predict(tiny_config, ["predict.split=validation", "predict.top_k=3", "run_name=exact"])
    faiss = predict(tiny_config, ["predict.split=validation", "predict.top_k=3", "metric.args.knn_backend=faiss.flat"])
    assert calls == [3]
    expected = json.loads((exact.run_dir / "neighbours.json").read_text())
    found = json.loads((faiss.run_dir / "neighbours.json").read_text())
    assert [[o["index"] for o in i["neighbours"]] for i in found] == [
        [o["index"] for o in i["neighbours"]] for i in expected
    ]


def test_validate_stops_before_its_folder_exists(tiny_config: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"checkpoint: no such file: 'nowhere'"):
        validate(tiny_config, ["checkpoint=nowhere"])
    with pytest.raises(ConfigError, match=r"metric: metric 'embedding_metrics' could not be built"):
        validate(tiny_config, ["metric.args.cmc_top_k=[0]"])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a torch file" * 10)
    with pytest.raises(ConfigError, match=r"checkpoint: '.*garbage\.pt' cannot be read as a checkpoint"):
        validate(tiny_config, [f"checkpoint={garbage}"])
    assert run_folders(tiny_config) == []


def test_predict_embeds_the_readable_images_of_a_folder_and_lists_the_others(
    tiny_config: Path, tiny_csv: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("0_0.png", "1_0.png", "2_0.png"):
        shutil.copy(tiny_csv.parent / name, folder / name)
    (folder / "notes.png").write_text("a text file named .png")
    (folder / "cut.png").write_bytes((tiny_csv.parent / "3_0.png").read_bytes()[:60])  # truncated
    result = predict(tiny_config, [f"predict.data={folder}", "predict.top_k=1"])
    assert [Path(p).name for p in result.paths] == ["0_0.png", "1_0.png", "2_0.png"]
    assert result.embeddings.shape == (3, 8)
    assert sorted(Path(path).name for path, _ in result.unreadable) == ["cut.png", "notes.png"]
    listed = pd.read_csv(result.run_dir / "unreadable.csv")
    assert sorted(Path(p).name for p in listed["path"]) == ["cut.png", "notes.png"] and listed["reason"].str.len().min()
    log = (result.run_dir / "log.txt").read_text()
    assert "2 unreadable file(s) left out (unreadable.csv)" in log and "notes.png: UnidentifiedImageError" in log

    with pytest.raises(DataValidationError, match=r"2 file\(s\) in '.*mixed' cannot be read .*predict\.strict=false"):
        predict(tiny_config, [f"predict.data={folder}", "predict.strict=true", "run_name=strict"])
    for name in ("0_0.png", "1_0.png", "2_0.png"):
        (folder / name).unlink()
    with pytest.raises(DataValidationError, match=r"no image in '.*mixed' could be read"):
        predict(tiny_config, [f"predict.data={folder}", "run_name=none"])
    assert [p.name for p in run_folders(tiny_config)] == [result.run_dir.name]
