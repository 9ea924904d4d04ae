"""`omlcore train` end to end on a tiny dataset: both runners, the run folder, resume, config errors."""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from torch.utils.data import DataLoader

from omlcore.cli import main
from omlcore.config import ConfigError
from omlcore.pipelines import train, validate

from .conftest import run_folders, timeless


def test_cli_train_with_the_torch_runner_writes_the_run_folder(
    tiny_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", str(tiny_config)]) == 0
    out = capsys.readouterr().out
    assert "Validation of the untrained model" in out and "untrained     trained" in out
    [run] = run_folders(tiny_config)
    assert run.name.startswith("train-tiny-")
    for name in ("config.yaml", "log.txt", "metrics.csv", "metrics.json", "validation.json"):
        assert (run / name).is_file(), name
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"last.pt", "extractor.pt", "best.pt"}
    assert (run / "retrieval" / "worst_OVERALL_cmc_1.html").is_file()
    history = json.loads((run / "metrics.json").read_text())
    assert [record["epoch"] for record in history] == [0, 1]
    assert {"loss", "OVERALL/cmc/1", "OVERALL/map/2", "epoch_time_s"} <= set(history[-1])
    assert pd.read_csv(run / "metrics.csv")["epoch"].tolist() == [0, 1]
    validation = json.loads((run / "validation.json").read_text())
    assert validation["trained"]["OVERALL/cmc/1"] == pytest.approx(history[-1]["OVERALL/cmc/1"])
    assert "OVERALL/cmc/1" in (run / "log.txt").read_text()
    assert "runner:\n  name: torch" in (run / "config.yaml").read_text()


def test_lightning_runner_and_a_pml_loss_by_name(tiny_config: Path) -> None:
    pytest.importorskip("lightning")
    pytest.importorskip("pytorch_metric_learning")
    result = train(
        tiny_config,
        [
            "runner.name=lightning",
            "runner.args={epochs: 2, accelerator: cpu, progress: false, log_every_n_steps: 1}",
            "loss={name: pml.TripletMarginLoss, args: {margin: 0.2}}",
            "validate_untrained=false",
        ],
    )
    assert [record["epoch"] for record in result.history] == [0, 1]
    assert {"OVERALL/cmc/1", "epoch_time_s"} <= set(result.history[-1]) and result.untrained == {}
    assert 0 <= result.trained["OVERALL/cmc/1"] <= 1
    assert {p.name for p in (result.run_dir / "checkpoints").iterdir()} == {"last.ckpt", "extractor.pt", "best.pt"}
    assert (result.run_dir / "logs" / "metrics.csv").is_file()


@pytest.mark.parametrize("runner", ["torch", "lightning"])
def test_a_resumed_run_gets_the_metrics_of_an_uninterrupted_one(tiny_config: Path, runner: str) -> None:
    if runner == "lightning":
        pytest.importorskip("lightning")
    args = (
        "{epochs: %d, accelerator: cpu, progress: false, log_every_n_steps: 1}"
        if runner == "lightning"
        else "{epochs: %d, progress: false}"
    )
    whole = train(tiny_config, [f"runner.name={runner}", f"runner.args={args % 3}", "run_name=whole"])
    first = train(tiny_config, [f"runner.name={runner}", f"runner.args={args % 1}", "run_name=cut"])
    resumed = train(tiny_config, [f"runner.name={runner}", f"runner.args={args % 3}", f"resume={first.run_dir}"])
    assert resumed.run_dir == first.run_dir
    assert [r["epoch"] for r in resumed.history] == [0, 1, 2]
    for mine, theirs in zip(timeless(resumed.history), timeless(whole.history), strict=True):
        assert mine.keys() == theirs.keys()
        assert mine == pytest.approx(theirs, rel=1e-5, abs=1e-6)
    assert resumed.trained == pytest.approx(whole.trained, abs=1e-6)


def test_the_config_seed_draws_the_batches_unless_the_sampler_sets_its_own(
    tiny_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: list[list[int]] = []

    class Recording(DataLoader[Any]):  # the pipeline's training loader, writing down the items of each batch
        def __iter__(self) -> Iterator[Any]:
            for batch in super().__iter__():
                drawn.append(batch["idx"].tolist())
                yield batch

    monkeypatch.setattr(sys.modules["omlcore.pipelines.train"], "DataLoader", Recording)

    runs = itertools.count()

    def batches(*overrides: str) -> list[list[int]]:
        drawn.clear()
        quick = ["runner.args={epochs: 2, progress: false}", "validate_untrained=false", "visualization.n_queries=0"]
        train(tiny_config, [*quick, f"run_name=run{next(runs)}", *overrides])
        return list(drawn)

    three = batches("seed=3")
    assert len(three) == 6 and three[:3] != three[3:]  # 2 epochs of 3 batches, each epoch its own
    assert batches("seed=3") == three
    assert batches("seed=4") != three
    assert batches("seed=4", "sampler.args.seed=3") == three  # the sampler's own seed wins


@pytest.mark.parametrize("mode", ["max", "min"])
def test_the_best_epoch_is_kept_and_validates_to_its_recorded_metric(tiny_config: Path, mode: str) -> None:
    result = train(
        tiny_config,
        [
            "runner.args={epochs: 4, progress: false}",
            "metric_for_checkpointing=OVERALL/map/2",
            f"mode_for_checkpointing={mode}",
        ],
    )
    values = [record["OVERALL/map/2"] for record in result.history]
    pick = max if mode == "max" else min
    best_epoch = values.index(pick(values))  # the first epoch that reaches the best value
    log = (result.run_dir / "log.txt").read_text()
    assert f"best OVERALL/map/2 so far ({values[best_epoch]:.4f}, epoch {best_epoch + 1}): checkpoints/best.pt" in log
    best = result.run_dir / "checkpoints" / "best.pt"
    checked = validate(tiny_config, [f"checkpoint={best}", "validate_untrained=false"])
    assert checked.metrics["OVERALL/map/2"] == pytest.approx(values[best_epoch], abs=1e-6)


def test_an_unknown_checkpointing_metric_is_a_config_error(
    tiny_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tiny_config.parent / "runs"
    for untrained in ("true", "false"):  # found from the metric's declared names, before any run folder exists
        code = main(
            ["train", str(tiny_config), "metric_for_checkpointing=OVERALL/cmc/7", f"validate_untrained={untrained}"]
        )
        assert code == 2
        err = capsys.readouterr().err
        assert "metric_for_checkpointing: the validation reports no metric 'OVERALL/cmc/7'" in err
        assert "OVERALL/cmc/1" in err and "OVERALL/map/2" in err
        assert not runs.exists() or not any(runs.iterdir())
    none = train(tiny_config, ["metric_for_checkpointing=null", "run_name=no-best"])
    assert not (none.run_dir / "checkpoints" / "best.pt").exists()


def test_config_errors_stop_the_cli_before_any_run(tiny_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", str(tiny_config), "loss.args.miner.name=hard_triplet"]) == 2
    err = capsys.readouterr().err
    assert f"error: config {tiny_config} + overrides: loss.args.miner.name: Unknown miner 'hard_triplet'" in err
    assert "Did you mean: hard_triplets" in err
    assert main(["train", str(tiny_config), "runner.args.epochs"]) == 2
    assert "bad override" in capsys.readouterr().err
    assert main(["train", str(tiny_config), "resume=nowhere"]) == 2
    assert "resume: 'nowhere' is neither a run folder nor a checkpoint file" in capsys.readouterr().err
    for command in ("train", "validate"):
        assert main([command, str(tiny_config), "dataset.csv=missing.csv"]) == 2
        assert "dataset.csv: no such file: 'missing.csv'" in capsys.readouterr().err
    assert run_folders(tiny_config) == []


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.args.lr=-1.0", r"optimizer: optimizer 'sgd' could not be built: Invalid learning rate"),
        ("scheduler={name: onecycle, args: {max_lr: 0.1}}", r"scheduler: scheduler 'onecycle' could not be built"),
        ("extractor.args.feat_dim=0", r"extractor: extractor 'small_cnn' could not be built"),
    ],
)
def test_bad_argument_values_stop_the_run_before_its_folder_exists(
    tiny_config: Path, override: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        train(tiny_config, [override])
    assert run_folders(tiny_config) == []


def test_an_output_dir_that_is_a_file_is_named(tiny_config: Path, tmp_path: Path) -> None:
    occupied = tmp_path / "a-file"
    occupied.write_text("not a folder")
    with pytest.raises(ConfigError, match=r"output_dir: '.*a-file' is a file, not a folder"):
        train(tiny_config, [f"output_dir={occupied}"])
    with pytest.raises(ConfigError, match=r"output_dir: cannot create the run folder '.*a-file/inside/"):
        train(tiny_config, [f"output_dir={occupied / 'inside'}"])
