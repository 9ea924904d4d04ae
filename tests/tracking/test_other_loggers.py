"""Neptune, Comet and ClearML in their offline modes, where their packages are installed (not in ``omlcore[all]``:
``pip install "omlcore[neptune,comet,clearml]"``); each run's offline record holds what was logged."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from omlcore_torch.loggers import ClearMLLogger, CometLogger, NeptuneLogger

from .conftest import needs
from .test_loggers import GRID, write_a_run


def test_neptune_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    needs("neptune")
    monkeypatch.chdir(tmp_path)  # Neptune writes its offline runs into ./.neptune
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"weights")
    write_a_run(NeptuneLogger(tmp_path / "train-tiny-1", project="workspace/omlcore", mode="offline"), checkpoint)
    operations = [json.loads(line)["obj"] for log in (tmp_path / ".neptune").rglob("data-*.log") for line in log.open()]
    written = {"/".join(operation["path"]): operation for operation in operations}
    assert written["parameters/loss/args/margin"]["value"] == 0.2
    assert [point["value"] for op in operations if op["path"] == ["OVERALL", "cmc", "1"] for point in op["values"]] == [
        0.5,
        0.75,
    ]
    assert written["retrieval/worst_OVERALL_cmc_1"]["type"] == "LogImages"
    assert written["checkpoints/best"]["type"] == "UploadFile"


def test_comet_offline_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    needs("comet_ml")
    monkeypatch.setenv("COMET_DISABLE_AUTO_LOGGING", "1")
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"weights")
    logger = CometLogger(tmp_path / "train-tiny-1", project="omlcore", offline_directory=str(tmp_path / "comet"))
    write_a_run(logger, checkpoint)
    [archive] = (tmp_path / "comet").glob("*.zip")
    with zipfile.ZipFile(archive) as opened:
        written = b"".join(opened.read(name) for name in opened.namelist())
    assert b"OVERALL/cmc/1" in written and b"loss.args.margin" in written and b"worst_OVERALL_cmc_1" in written


def test_clearml_offline_session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    needs("clearml")
    from clearml import Task

    monkeypatch.setenv("CLEARML_CACHE_DIR", str(tmp_path / "cache"))
    Task.set_offline(True)
    logger = ClearMLLogger(tmp_path / "train-tiny-1", project="omlcore")
    logger.log_hyperparams({"loss.args.margin": 0.2})
    logger.log_metrics({"OVERALL/cmc/1": 0.75}, 4)
    logger.log_image("worst_OVERALL_cmc_1", GRID, 4)
    folder = Path(logger.task.get_offline_mode_folder())
    logger.finalize("success")
    written = b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())
    assert b"OVERALL" in written and b"cmc/1" in written
