"""omlcore.checks: framework-neutral construction-time checks, and the checks that plugins register."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest
import torch
from torch import nn

from omlcore.checks import (
    IncompatibleComponentError,
    check_loss,
    check_optimizer_covers,
    describe,
    run_checks,
)
from omlcore.errors import OmlcoreError
from omlcore.hookspecs import hookimpl
from omlcore.losses import TripletLossWithMiner
from omlcore.plugins import PluginSettings, create_plugin_manager
from omlcore.registry import Registrar, Registry

ForeignLoss = type("FancyLoss", (nn.Module,), {"__module__": "other_package.losses"})


class Wrapper:
    """Exposes what it wraps, as omlcore_pml's PMLLoss does."""

    __module__ = "other_package.wrappers"

    def __init__(self, inner: object) -> None:
        self.inner = inner

    @property
    def wrapped_component(self) -> object:
        return self.inner


def test_describe_names_the_class_its_package_when_foreign_and_what_a_wrapper_wraps() -> None:
    assert describe(TripletLossWithMiner(margin=0.1)) == "TripletLossWithMiner"
    assert describe(3) == "int"
    assert describe(ForeignLoss()) == "other_package's FancyLoss"
    assert describe(Wrapper(ForeignLoss())) == "other_package's Wrapper(other_package's FancyLoss)"
    assert describe(Wrapper(Wrapper(3))) == "other_package's Wrapper(other_package's Wrapper(int))"
    assert describe(Wrapper(None)) == "other_package's Wrapper"
    assert describe(mock.MagicMock()) == "unittest's MagicMock"  # any attribute exists on a mock: not a wrapper


def test_the_error_is_omlcores_and_a_type_error() -> None:
    assert issubclass(IncompatibleComponentError, OmlcoreError) and issubclass(IncompatibleComponentError, TypeError)


class ThrowawayChecks:
    """A plugin whose check rejects losses named in ``refused`` and records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def check(self, obj: object, role: str) -> None:
        self.calls.append((describe(obj), role))
        if isinstance(obj, ForeignLoss) and role == "loss":
            raise IncompatibleComponentError(f"{describe(obj)} is refused by the throwaway check")

    @hookimpl
    def register_checks(self, registry: Registrar) -> None:
        registry.register("throwaway.check", lambda: self.check, summary="refuses other_package's FancyLoss")
        registry.register("throwaway.needs_missing", "omlcore_module_never_installed:check", requires=("nope",))


def registry_with(plugin: object) -> Registry:
    return create_plugin_manager(PluginSettings(autoload=False), plugins=[("throwaway", plugin)]).registry


def test_a_plugins_check_is_consulted_and_checks_of_missing_frameworks_are_skipped() -> None:
    plugin = ThrowawayChecks()
    registry = registry_with(plugin)
    assert registry.names("check") == ["throwaway.check", "throwaway.needs_missing"]
    with pytest.raises(IncompatibleComponentError, match="other_package's FancyLoss is refused by the throwaway"):
        check_loss(ForeignLoss(), registry=registry)
    check_loss(TripletLossWithMiner(margin=0.1), registry=registry)
    run_checks(ForeignLoss(), "miner", registry=registry)
    assert plugin.calls == [
        ("other_package's FancyLoss", "loss"),
        ("TripletLossWithMiner", "loss"),
        ("other_package's FancyLoss", "miner"),
    ]


def test_without_the_plugin_nothing_but_being_callable_is_checked() -> None:
    registry = create_plugin_manager(PluginSettings(autoload=False)).registry
    check_loss(ForeignLoss(), registry=registry)
    with pytest.raises(IncompatibleComponentError, match=r"callable as loss\(embeddings, labels\); got int"):
        check_loss(3, registry=registry)  # type: ignore[arg-type]


def test_a_check_sees_the_role_and_its_error_reaches_the_caller() -> None:
    def refuse_all(obj: Any, role: str) -> None:
        raise IncompatibleComponentError(f"{describe(obj)} as a {role}: no")

    registry = Registry()
    registry.registrar("check", "strict").register("strict.all", lambda: refuse_all)
    with pytest.raises(IncompatibleComponentError, match="TripletLossWithMiner as a loss: no"):
        check_loss(TripletLossWithMiner(margin=0.1), registry=registry)


def test_optimizer_must_cover_the_trainable_parameters_of_the_loss() -> None:
    loss = Wrapper(None)
    model, trainable = nn.Linear(3, 2), ForeignLoss()
    trainable.centres = nn.Parameter(torch.zeros(4, 2))
    check_optimizer_covers(loss, torch.optim.SGD(model.parameters(), lr=0.1))  # not a module: nothing to optimise
    check_optimizer_covers(trainable, torch.optim.SGD([*model.parameters(), *trainable.parameters()], lr=0.1))
    with pytest.raises(
        IncompatibleComponentError, match=r"other_package's FancyLoss has trainable parameters .*: centres \(4, 2\)"
    ):
        check_optimizer_covers(trainable, torch.optim.SGD(model.parameters(), lr=0.1))
    trainable.centres.requires_grad_(False)
    check_optimizer_covers(trainable, torch.optim.SGD(model.parameters(), lr=0.1))
