"""`omlcore train-reranker` end to end on the tiny dataset: both runners, the metrics before and after re-ranking, the
embedding cache, checkpoints and resume, the trained model in `omlcore validate`, bad inputs."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from omlcore.cli import main
from omlcore.config import ConfigError, resolve
from omlcore.models.pairwise import FeatureSiamese
from omlcore.pipelines import TrainResult, train, validate
from omlcore.pipelines.train_reranker import train_reranker

from .conftest import SIZE, timeless

EXTRACTOR = {"name": "small_cnn", "args": {"feat_dim": 8, "widths": [4, 8]}}
RUNNER_ARGS = {
    "torch": {"progress": False},
    "lightning": {"accelerator": "cpu", "progress": False, "log_every_n_steps": 1},
}


@pytest.fixture(scope="module")
def main_run(tiny_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """The main job: the tiny SmallCNN trained for one epoch."""
    output = tmp_path_factory.mktemp("main")
    return train(
        {
            "seed": 3,
            "output_dir": str(output),
            "run_name": "main",
            "dataset": {"csv": str(tiny_csv), "batch_size": 5},
            "transforms_train": {"name": "resize_normalize", "args": {"size": SIZE}},
            "transforms_val": {"name": "resize_normalize", "args": {"size": SIZE}},
            "extractor": EXTRACTOR,
            "sampler": {"name": "balance", "args": {"n_labels": 2, "n_instances": 2}},
            "loss": {"name": "triplet_with_miner", "args": {"margin": 0.2}},
            "metric": {"name": "embedding_metrics", "args": {"cmc_top_k": [1, 3], "map_top_k": [3]}},
            "validate_untrained": False,
            "visualization": {"n_queries": 0},
            "runner": {"name": "torch", "args": {"epochs": 1, "progress": False}},
        }
    )


@pytest.fixture
def config(main_run: TrainResult, tmp_path: Path) -> dict[str, Any]:
    """The re-ranker's config (torch runner, 2 epochs): pairwise_features from the trained extractor, top 3."""
    recorded = yaml.safe_load((main_run.run_dir / "config.yaml").read_text())
    keys = ("seed", "dataset", "transforms_train", "transforms_val", "extractor", "metric")
    return {
        **{key: copy.deepcopy(recorded[key]) for key in keys},
        "output_dir": str(tmp_path / "runs"),
        "checkpoint": str(main_run.run_dir),
        "reranker": {
            "model": {"name": "pairwise_features", "args": {"extractor": EXTRACTOR, "mlp_hidden": [8]}},
            "backbone_from_checkpoint": True,
            "top_n": 3,
            "batch_size": 16,
        },
        "optimizer": {"name": "adam", "args": {"lr": 0.01}},
        "runner": {"name": "torch", "args": {"epochs": 2, "progress": False}},
    }


def with_runner(config: dict[str, Any], runner: str, epochs: int, **more: Any) -> dict[str, Any]:
    if runner == "lightning":
        pytest.importorskip("lightning")
    return {**config, "runner": {"name": runner, "args": {**RUNNER_ARGS[runner], "epochs": epochs}}, **more}


@pytest.mark.parametrize("runner", ["torch", "lightning"])
def test_each_runner_trains_and_reports_the_metrics_before_and_after_re_ranking(
    config: dict[str, Any], main_run: TrainResult, runner: str
) -> None:
    result = train_reranker(with_runner(config, runner, 2))
    run = result.run_dir
    assert run.name.startswith("train_reranker-config-")
    assert [record["epoch"] for record in result.history] == [0, 1]
    for record in result.history:
        assert {"loss", "OVERALL/cmc/1", "postprocessed/OVERALL/cmc/1", "postprocessed/OVERALL/map/3"} <= set(record)
        # the frozen extractor: the metrics before re-ranking are those of the main job
        assert record["OVERALL/cmc/1"] == pytest.approx(main_run.trained["OVERALL/cmc/1"])
    assert result.history[1]["loss"] < result.history[0]["loss"]
    # untrained, every pair scores 0.5 and the stable re-ranking keeps the kNN order
    before = {k: v for k, v in result.untrained.items() if not k.startswith("postprocessed/")}
    after = {k.removeprefix("postprocessed/"): v for k, v in result.untrained.items() if k.startswith("postprocessed/")}
    assert after == pytest.approx({k: v for k, v in before.items() if k in after}) and after
    assert result.trained == pytest.approx({k: v for k, v in result.history[-1].items() if "/" in k})
    last = "last.pt" if runner == "torch" else "last.ckpt"
    assert {p.name for p in (run / "checkpoints").iterdir()} == {last, "reranker.pt", "best.pt"}
    [cache] = (run / "cache").iterdir()
    assert cache.name.startswith("train-embeddings-") and torch.load(cache)["embeddings"].shape == (24, 8)
    assert json.loads((run / "validation.json").read_text())["trained"] == pytest.approx(result.trained)
    log = (run / "log.txt").read_text()
    assert "pairs: 72 (each training image with its 3 nearest others)" in log and "re-ranked" in log
    assert re.search(r"balanced: (\d+) positive and \1 negative pairs", log)
    assert "postprocessed/OVERALL/cmc/1" in (run / "logs" / "metrics.csv").read_text()  # the config's (default) logger


def test_the_trained_re_ranker_re_ranks_in_omlcore_validate(config: dict[str, Any], tmp_path: Path) -> None:
    result = train_reranker({**config, "validate_untrained": False})
    usage = (result.run_dir / "log.txt").read_text().split("re-rank with it (omlcore validate / predict):\n")[1]
    postprocessor = yaml.safe_load(usage.split("\n\nrun folder")[0])["postprocessor"]
    assert postprocessor["args"]["model"]["args"]["weights"] == str(result.run_dir / "checkpoints" / "reranker.pt")
    model = resolve("extractor", postprocessor["args"]["model"])
    assert isinstance(model, FeatureSiamese)
    validation_config = {k: v for k, v in config.items() if k not in ("reranker", "optimizer", "runner")}
    validated = validate({**validation_config, "postprocessor": postprocessor, "visualization": {"n_queries": 0}})
    assert validated.metrics == pytest.approx(result.trained)


@pytest.mark.parametrize("runner", ["torch", "lightning"])
def test_a_resumed_run_equals_an_uninterrupted_one_and_reuses_the_embeddings(
    config: dict[str, Any], runner: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = train_reranker(with_runner(config, runner, 3, run_name="whole"))
    cut = train_reranker(with_runner(config, runner, 1, run_name="cut"))

    def no_inference(*args: Any) -> None:
        raise AssertionError("the training embeddings were computed again")

    monkeypatch.setattr(f"omlcore_{runner}.runner.{runner.capitalize()}Runner.inference", no_inference)
    resumed = train_reranker(with_runner(config, runner, 3, resume=str(cut.run_dir)))
    assert resumed.run_dir == cut.run_dir and [r["epoch"] for r in resumed.history] == [0, 1, 2]
    for mine, theirs in zip(timeless(resumed.history), timeless(whole.history), strict=True):
        assert mine == pytest.approx(theirs, rel=1e-5, abs=1e-6)
    assert resumed.trained == pytest.approx(whole.trained, abs=1e-6)
    assert "from the cache" in (cut.run_dir / "log.txt").read_text()


def test_a_shared_embeddings_cache_serves_a_new_run(config: dict[str, Any], tmp_path: Path) -> None:
    shared = {**config["reranker"], "embeddings_cache": str(tmp_path / "cache")}
    first = train_reranker({**config, "reranker": shared, "runner": {"name": "torch", "args": {"epochs": 1}}})
    second = train_reranker({**config, "reranker": shared, "runner": {"name": "torch", "args": {"epochs": 1}}})
    [cache] = (tmp_path / "cache").iterdir()
    assert "from the cache" in (second.run_dir / "log.txt").read_text()
    assert "from the cache" not in (first.run_dir / "log.txt").read_text()
    assert not (first.run_dir / "cache").exists()
    cache.write_bytes(cache.read_bytes()[:100])  # truncated: embedded again, and the file replaced
    third = train_reranker({**config, "reranker": shared, "runner": {"name": "torch", "args": {"epochs": 1}}})
    assert "is unreadable or stale; embedding again" in (third.run_dir / "log.txt").read_text()
    assert torch.load(cache)["embeddings"].shape == (24, 8)
    assert timeless(third.history)[0] == pytest.approx(timeless(first.history)[0])


def test_the_cli_subcommand(config: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "reranker.yaml"
    path.write_text(yaml.safe_dump({**config, "runner": {"name": "torch", "args": {"epochs": 1, "progress": False}}}))
    assert main(["train-reranker", str(path)]) == 0
    [run] = (tmp_path / "runs").iterdir()
    assert run.name.startswith("train_reranker-reranker-")
    assert "postprocessed/OVERALL/cmc/1" in (run / "log.txt").read_text()
    assert main(["train-reranker", str(path), "reranker.top_n=99"]) == 2
    assert (
        "reranker.top_n: re-scores the 99 nearest gallery items of each query, but the validation gallery has 16"
        in (capsys.readouterr().err)
    )


def no_run_folder(config: dict[str, Any]) -> bool:
    runs = Path(config["output_dir"])
    return not runs.exists() or not any(runs.iterdir())


@pytest.mark.parametrize(
    ("change", "where", "message"),
    [
        (
            {"extractor": {"name": "small_cnn", "args": {"feat_dim": 16, "widths": [4, 8]}}},
            "checkpoint",
            r"does not fit the extractor",
        ),
        ({"checkpoint": None}, "checkpoint", "is required to train_reranker"),
        ({"reranker": {"top_n": 3}}, "reranker.model", "is required to train_reranker"),
        ({"reranker.top_n": 17}, "reranker.top_n", "but the validation gallery has 16; lower it to at most 16"),
        ({"reranker.top_n": 6}, "reranker.top_n", "the metric retrieves only 5 neighbours per query"),
        ({"reranker.top_n": 1}, "reranker.top_n", "must be at least 2"),
        ({"reranker.mine_top_n": 24}, "reranker.mine_top_n", "there are 24 training images; .* at most 23"),
        (
            {"reranker.model": {"name": "pairwise_concat", "args": {"extractor": EXTRACTOR}}, "reranker.x": 0},
            "reranker.x",
            "unknown key",
        ),
        (
            {"reranker.model": {"name": "pairwise_concat", "args": {"extractor": {"name": "small_cnn"}}}},
            "reranker.backbone_from_checkpoint",
            "shape mismatches .* must be the extractor's architecture; or set it to false",
        ),
        ({"reranker.model": EXTRACTOR}, "reranker.model", "builds a SmallCNN, not a pairwise model"),
        ({"loss": {"name": "triplet", "args": {"margin": 0.2}}}, "loss", "does not use it .*cross-entropy.*remove it"),
        ({"postprocessor": {"name": "aqe"}}, "postprocessor", "does not use it"),
    ],
)
def test_bad_inputs_are_named_before_a_run_folder_exists(
    config: dict[str, Any], change: dict[str, Any], where: str, message: str
) -> None:
    changed = copy.deepcopy(config)
    for key, value in change.items():
        section, _, leaf = key.partition(".")
        if leaf:
            changed[section][leaf] = value
        else:
            changed[key] = value
    with pytest.raises(ConfigError, match=message) as caught:
        train_reranker(changed)
    assert caught.value.path == where
    assert no_run_folder(changed)


def test_a_resume_keeps_the_reranker_settings(config: dict[str, Any]) -> None:
    cut = train_reranker({**config, "run_name": "cut", "runner": {"name": "torch", "args": {"epochs": 1}}})
    changed = {**config, "reranker": {**config["reranker"], "mine_top_n": 2}, "resume": str(cut.run_dir)}
    with pytest.raises(ConfigError, match=r"trained with reranker\.mine_top_n=None, the config asks 2") as caught:
        train_reranker(changed)
    assert caught.value.path == "reranker.mine_top_n"
