"""``resume=``: a run continues exactly, and a resume that cannot work stops before anything in the folder changes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from omlcore.config import ConfigError
from omlcore.pipelines import train

from .conftest import run_folders, timeless

LIGHTNING_ARGS = "{epochs: %d, accelerator: cpu, progress: false, log_every_n_steps: 1}"


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of a run folder with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def finished(tiny_config: Path) -> Path:
    """A run of 2 epochs (torch runner)."""
    return train(tiny_config, ["run_name=done"]).run_dir


@pytest.mark.parametrize("epochs", [2, 1])
def test_resuming_a_finished_run_is_refused_and_changes_nothing(tiny_config: Path, finished: Path, epochs: int) -> None:
    before = snapshot(finished)
    with pytest.raises(ConfigError, match=rf"has trained 2 epoch\(s\), so epochs={epochs} leaves nothing to train"):
        train(tiny_config, [f"resume={finished}", f"runner.args.epochs={epochs}"])
    assert snapshot(finished) == before


def test_a_resumed_run_keeps_its_settings(tiny_config: Path, finished: Path) -> None:
    before = snapshot(finished)
    changed = r"optimizer\.args\.lr: the run in .* was trained with optimizer\.args\.lr=0\.05, the config asks 0\.5"
    with pytest.raises(ConfigError, match=changed + ".*checkpoint=") as caught:
        train(tiny_config, [f"resume={finished}", "runner.args.epochs=3", "optimizer.args.lr=0.5"])
    assert f"omlcore train {finished / 'config.yaml'} resume={finished}" in str(caught.value)
    with pytest.raises(ConfigError, match=r"runner\.args\.grad_clip_norm: .*\(not set\), the config asks 1"):
        train(tiny_config, [f"resume={finished}", "runner.args.epochs=3", "runner.args.grad_clip_norm=1.0"])
    with pytest.raises(ConfigError, match=r"loss\.args\.miner\.name: .*all_triplets, the config asks hard_triplets"):
        train(tiny_config, [f"resume={finished}", "runner.args.epochs=3", "loss.args.miner.name=hard_triplets"])
    assert snapshot(finished) == before


def test_a_resume_keeps_the_run_config_and_records_its_own(tiny_config: Path, finished: Path) -> None:
    first_config = (finished / "config.yaml").read_bytes()
    resumed = train(tiny_config, [f"resume={finished}", "runner.args.epochs=3", "visualization.n_queries=0"])
    assert resumed.run_dir == finished and [r["epoch"] for r in resumed.history] == [0, 1, 2]
    assert (finished / "config.yaml").read_bytes() == first_config
    recorded = yaml.safe_load((finished / "config.resume-1.yaml").read_text())
    assert recorded["runner"]["args"]["epochs"] == 3 and recorded["resume"] == str(finished)
    assert "resumed after 2 epochs" in (finished / "log.txt").read_text()
    assert not [p for p in finished.rglob("*.tmp")]  # every file was written through a temporary one and renamed


def test_a_broken_or_foreign_checkpoint_is_named(tiny_config: Path, finished: Path) -> None:
    last = finished / "checkpoints" / "last.pt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match=r"resume: '.*last\.pt' cannot be read as a checkpoint \(truncated"):
        train(tiny_config, [f"resume={finished}", "runner.args.epochs=3"])
    last.write_bytes(b"")
    with pytest.raises(ConfigError, match=r"'.*last\.pt' is empty \(0 bytes\)"):
        train(tiny_config, [f"resume={finished}", "runner.args.epochs=3"])
    weights = finished / "checkpoints" / "extractor.pt"  # a state dict, not a runner's checkpoint
    with pytest.raises(ConfigError, match=r"'.*extractor\.pt' is not a resumable checkpoint of runner 'torch'"):
        train(tiny_config, [f"resume={weights}", "runner.args.epochs=3"])
    assert (finished / "config.yaml").is_file() and not list(finished.glob("config.resume-*"))


def test_a_config_that_no_longer_fits_the_checkpoint_is_named(tiny_config: Path, finished: Path) -> None:
    checkpoint = finished / "checkpoints" / "last.pt"  # a file: no config.yaml to compare settings with
    with pytest.raises(ConfigError, match=r"shape mismatches \(checkpoint vs model\): .*\(8, .*\) vs \(4, .*feat_dim"):
        train(tiny_config, [f"resume={checkpoint}", "runner.args.epochs=3", "extractor.args.feat_dim=4"])
    assert [p.name for p in run_folders(tiny_config)] == ["done"]


def test_an_unreadable_record_of_epochs_is_named(tiny_config: Path, finished: Path) -> None:
    (finished / "metrics.json").write_text('[{"epoch": 0, "loss"')
    with pytest.raises(ConfigError, match=r"'.*metrics\.json' is not valid JSON .*restore it, or move it away"):
        train(tiny_config, [f"resume={finished}", "runner.args.epochs=3"])


def start_training(config: Path, *overrides: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMLCORE_")}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.Popen(
        [sys.executable, "-m", "omlcore", "train", str(config), *overrides],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # a launcher (tox) may ignore SIGINT, which the child would inherit; a user's shell delivers it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def epochs_recorded(run: Path) -> int:
    try:
        return len(json.loads((run / "metrics.json").read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


@pytest.mark.parametrize("runner", ["torch", "lightning"])
def test_ctrl_c_prints_the_resume_command_and_the_run_resumes_from_its_last_epoch(
    tiny_config: Path, runner: str
) -> None:
    if runner == "lightning":
        pytest.importorskip("lightning")
    args = LIGHTNING_ARGS if runner == "lightning" else "{epochs: %d, progress: false}"
    common = [f"runner.name={runner}", "validate_untrained=false", "visualization.n_queries=0"]
    process = start_training(tiny_config, *common, f"runner.args={args % 400}", "run_name=cut")
    run = tiny_config.parent / "runs" / "cut"
    deadline = time.monotonic() + 300
    while epochs_recorded(run) < 1 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    done = epochs_recorded(run)
    command = f"omlcore train {run / 'config.yaml'} resume={run}"
    assert f"interrupted after {done} of 400 epochs; the run is in {run}. Continue it with: {command}" in out
    assert 1 <= done < 400

    resumed = subprocess.run(
        [sys.executable, "-m", "omlcore", *command.split()[1:], f"runner.args.epochs={done + 1}"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    whole = train(tiny_config, [*common, f"runner.args={args % (done + 1)}", "run_name=whole"])
    history = json.loads((run / "metrics.json").read_text())
    assert [r["epoch"] for r in history] == list(range(done + 1))
    for mine, theirs in zip(timeless(history), timeless(whole.history), strict=True):
        assert mine == pytest.approx(theirs, rel=1e-5, abs=1e-6)
