"""The core plugin registers torch.optim optimizers and LR schedulers that build the real torch objects."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest
import torch

from omlcore import builtin_plugin
from omlcore.plugins import create_plugin_manager, registry_of
from omlcore.registry import Registry

EXPECTED_OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
    "adadelta": torch.optim.Adadelta,
    "adamax": torch.optim.Adamax,
    "radam": torch.optim.RAdam,
    "nadam": torch.optim.NAdam,
    "lbfgs": torch.optim.LBFGS,
}
schedulers = torch.optim.lr_scheduler
EXPECTED_SCHEDULERS = {
    "step": schedulers.StepLR,
    "multistep": schedulers.MultiStepLR,
    "exponential": schedulers.ExponentialLR,
    "cosine": schedulers.CosineAnnealingLR,
    "cosine_warm_restarts": schedulers.CosineAnnealingWarmRestarts,
    "onecycle": schedulers.OneCycleLR,
    "plateau": schedulers.ReduceLROnPlateau,
    "linear": schedulers.LinearLR,
    "cyclic": schedulers.CyclicLR,
    "polynomial": schedulers.PolynomialLR,
    "constant": schedulers.ConstantLR,
    "lambda": schedulers.LambdaLR,
}


@pytest.fixture
def registry() -> Registry:
    return registry_of([("omlcore", builtin_plugin)])


def test_hookimpls_match_the_hookspecs(hookimpl_counts: Callable[[object, str], dict[str, int]]) -> None:
    kinds = ("samplers", "miners", "losses", "metrics", "extractors", "knn_backends", "transforms", "optimizers")
    kinds = (*kinds, "postprocessors")
    expected = {f"register_{kind}": 1 for kind in (*kinds, "schedulers")}
    assert hookimpl_counts(builtin_plugin, "omlcore") == expected  # no runner: the runners come with the adapters


def test_registers_exactly_the_optimizers_and_schedulers(registry: Registry) -> None:
    assert registry.names("optimizer") == sorted(EXPECTED_OPTIMIZERS)
    assert registry.names("scheduler") == sorted(EXPECTED_SCHEDULERS)
    for entry in registry.entries("optimizer") + registry.entries("scheduler"):
        assert entry.plugin == "omlcore"
        assert entry.requires == ()
        assert entry.available
        assert entry.summary and "\n" not in entry.summary


def test_the_optimizers_stay_when_the_torch_plugin_is_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMLCORE_DISABLE_PLUGINS", "torch")
    registry = create_plugin_manager().registry
    assert registry.names("optimizer") == sorted(EXPECTED_OPTIMIZERS)
    assert "torch" not in registry.names("runner")


@pytest.mark.parametrize(("name", "cls"), EXPECTED_OPTIMIZERS.items())
def test_optimizer_targets_are_the_torch_classes(registry: Registry, name: str, cls: type) -> None:
    entry = registry.get("optimizer", name)
    assert entry.target == f"torch.optim:{cls.__name__}"
    assert entry.load() is cls


@pytest.mark.parametrize(("name", "cls"), EXPECTED_SCHEDULERS.items())
def test_scheduler_targets_are_the_torch_classes(registry: Registry, name: str, cls: type) -> None:
    entry = registry.get("scheduler", name)
    assert entry.target == f"torch.optim.lr_scheduler:{cls.__name__}"
    assert entry.load() is cls


def test_build_adam_and_cosine_and_train_a_step(registry: Registry) -> None:
    model = torch.nn.Linear(4, 2)
    optimizer = registry.build("optimizer", "adam", model.parameters(), lr=0.1, weight_decay=0.01)
    assert type(optimizer) is torch.optim.Adam
    assert optimizer.defaults["lr"] == 0.1 and optimizer.defaults["weight_decay"] == 0.01
    assert optimizer.param_groups[0]["params"] == list(model.parameters())

    scheduler = registry.build("scheduler", "cosine", optimizer, T_max=10)
    assert type(scheduler) is torch.optim.lr_scheduler.CosineAnnealingLR
    assert scheduler.optimizer is optimizer

    before = model.weight.detach().clone()
    model(torch.ones(3, 4)).sum().backward()
    optimizer.step()
    scheduler.step()
    assert not torch.equal(model.weight, before)
    reference = torch.optim.lr_scheduler.CosineAnnealingLR(torch.optim.Adam([torch.zeros(1)], lr=0.1), T_max=10)
    reference.optimizer.step()
    reference.step()
    assert scheduler.get_last_lr() == reference.get_last_lr()


def test_wrong_argument_name_lists_the_accepted_ones(registry: Registry) -> None:
    model = torch.nn.Linear(4, 2)
    with pytest.raises(TypeError, match="lrr") as error:
        registry.build("optimizer", "adam", model.parameters(), lrr=0.1)
    assert "optimizer 'adam'" in str(error.value)
    accepted = ", ".join(inspect.signature(torch.optim.Adam).parameters)
    assert f"Accepted arguments: {accepted}" in str(error.value)

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="eta_minn") as error:
        registry.build("scheduler", "cosine", optimizer, T_max=10, eta_minn=0.0)
    accepted = ", ".join(inspect.signature(torch.optim.lr_scheduler.CosineAnnealingLR).parameters)
    assert f"Accepted arguments: {accepted}" in str(error.value)
