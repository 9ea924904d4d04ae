"""Every config error names the config path of the offending key, before anything is built."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from omlcore.config import ConfigError, apply_overrides, load_config, parse_override

MINIMAL: dict[str, Any] = {
    "dataset": {"csv": "data/df.csv"},
    "extractor": {"name": "small_cnn", "args": {"feat_dim": 8, "widths": [4]}},
    "sampler": {"name": "balance", "args": {"n_labels": 2, "n_instances": 2}},
    "loss": {"name": "triplet_with_miner", "args": {"margin": 0.2, "miner": {"name": "hard_triplets"}}},
}


def error_of(overrides: list[str], data: dict[str, Any] | None = None, pipeline: str = "train") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(data if data is not None else MINIMAL, overrides, pipeline=pipeline)  # type: ignore[arg-type]
    return info.value


@pytest.mark.parametrize(
    ("overrides", "path", "fragment"),
    [
        (["datset.csv=x"], "datset", "unknown key. Did you mean: dataset?"),
        (["dataset.cvs=x"], "dataset.cvs", "unknown key. Did you mean: csv?"),
        (["loss.kwargs={}"], "loss.kwargs", "a loss has only 'name' and 'args'"),
        (["loss.args.miner.name=hard_triplet"], "loss.args.miner.name", "Did you mean: hard_triplets"),
        (["extractor.name=smallcnn"], "extractor.name", "Did you mean: small_cnn"),
        (["runner.name=lightnin"], "runner.name", "Did you mean: lightning"),
        (["loss.args.margn=0.1"], "loss.args.margn", "takes no argument 'margn'. Did you mean: margin?"),
        (["loss.args.miner.args.foo=1"], "loss.args.miner.args.foo", "miner 'hard_triplets' takes no argument"),
        (["extractor.args.feat_dim=abc"], "extractor.args.feat_dim", "expects int, got str 'abc'"),
        (["metric.args.cmc_top_k=[one]"], "metric.args.cmc_top_k", "expects Sequence[int]"),
        (["runner.args.epochs=many"], "runner.args.epochs", "runner 'torch' expects int"),
        (["runner.args.precision=64"], "runner.args.precision", "expects Literal"),
        (["sampler.args.labels=[1]"], "sampler.args.labels", "the pipeline passes 'labels'"),
        (["loss.args={margin: 0.1, miner: {name: hard_triplets}, reduction: avg}"], "loss.args.reduction", "Literal"),
        (["seed=zero"], "seed", "must be an integer"),
        (["dataset.check_images=all"], "dataset.check_images", "must be one of none, exists, decode"),
        (["dataset.batch_size=0"], "dataset.batch_size", "at least 1"),
        (["visualization.formats=[gif]"], "visualization.formats", "html and / or png"),
        (["extractor=null"], "extractor", "is required to train"),
        (["loss=null"], "loss", "is required to train"),
        (["loss.args.margin=null", "loss.args={}"], "loss.args", "needs the argument(s) margin"),
        (["dataset.builtin=glyphs"], "dataset", "either dataset.builtin or dataset.csv"),
        (["dataset.csv=null"], "dataset", "set dataset.csv"),
        (["optimizer.args.betas=0.9"], "optimizer.args.betas", "expects"),
        (["scheduler={name: cosine, args: {T_maxx: 3}}"], "scheduler.args.T_maxx", "Did you mean: T_max?"),
        (["optimizer.args.lr=fast"], "optimizer.args.lr", "optimizer 'adam' expects float | torch.Tensor, got str"),
        (["predict.strict=maybe"], "predict.strict", "must be true or false"),
        (["runner.args.device=[0]"], "runner.args.device", "runner 'torch' expects str"),
    ],
)
def test_errors_name_the_config_path(overrides: list[str], path: str, fragment: str) -> None:
    error = error_of(overrides)
    assert error.path == path
    assert f": {path}: " in str(error) and fragment in str(error)


@pytest.mark.parametrize(
    ("override", "path"),
    [("runner.args.epochs", "runner.args.epochs"), ("=3", ""), ("a..b=1", "a..b"), ("seed.x=1", "seed")],
)
def test_bad_overrides(override: str, path: str) -> None:
    error = error_of([override])
    assert error.path == path and error.source is not None and "overrides" in error.source


def test_bad_override_values_are_reported() -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_override("loss.args={margin: [")


def test_errors_name_the_file(tmp_path: Path) -> None:
    config = tmp_path / "mine.yaml"
    config.write_text("extractor: {name: small_cnn}\nsampler: {name: balence}\n")
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert str(info.value).startswith(
        f"config {config}: sampler.name: Unknown sampler 'balence'. Did you mean: balance"
    )
    config.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping of keys to values"):
        load_config(config)
    config.write_text("seed: [\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(config)
    with pytest.raises(ConfigError, match=r"no config file 'nope\.yaml', nor a shipped config"):
        load_config("nope.yaml")


def test_a_missing_framework_is_an_error_at_its_path(monkeypatch: pytest.MonkeyPatch) -> None:
    from omlcore.registry import Entry

    missing = property(lambda self: ["pytorch_metric_learning"] if self.name.startswith("pml.") else [])
    monkeypatch.setattr(Entry, "missing", missing)
    error = error_of(["loss.name=pml.TripletMarginLoss"])
    assert error.path == "loss.name" and 'pip install "omlcore[pml]"' in str(error)


def test_validate_and_predict_need_less() -> None:
    minimal = {"dataset": {"csv": "df.csv"}, "extractor": {"name": "small_cnn"}}
    assert load_config(minimal, pipeline="validate")["loss"] is None
    assert load_config({"extractor": {"name": "small_cnn"}, "predict": {"data": "images"}}, pipeline="predict")
    with pytest.raises(ConfigError, match=r"dataset: is required to predict"):
        load_config({"extractor": {"name": "small_cnn"}}, pipeline="predict")


def test_apply_overrides_creates_mappings_and_reads_yaml() -> None:
    data = apply_overrides({"a": {"b": 1}}, ["a.c.d=[1, 5]", "a.b=null", "e={name: adam}", "f=text"])
    assert data == {"a": {"b": None, "c": {"d": [1, 5]}}, "e": {"name": "adam"}, "f": "text"}
