"""The plugin manager: real entry-point discovery, switches, broken plugins, duplicates, tracing."""

from __future__ import annotations

import importlib.metadata
import inspect
import os
import types
from pathlib import Path

import pytest
import torch

from omlcore import hookspecs
from omlcore import plugins as plugins_module
from omlcore.config import resolve
from omlcore.errors import DuplicateComponentError, OmlcoreError, PluginLoadWarning, UnknownComponentError
from omlcore.hookspecs import hookimpl
from omlcore.plugins import (
    PluginSettings,
    create_plugin_manager,
    get_plugin_manager,
    get_registry,
    registry_of,
    reset_plugin_manager,
)
from omlcore.registry import KINDS, Registrar

ADAPTERS = {"torch": "torch", "lightning": "lightning", "pml": "pytorch_metric_learning"}


def plugin(**hooks: object) -> object:
    """A throwaway in-process plugin object with the given ``@hookimpl`` functions."""
    namespace = {name: staticmethod(hookimpl(function)) for name, function in hooks.items()}
    return type("ThrowawayPlugin", (), namespace)()


def test_core_and_adapters_and_demo_are_discovered() -> None:
    pm = create_plugin_manager()
    assert {"omlcore", "torch", "lightning", "pml", "demo"} <= set(pm.infos)
    core = pm.infos["omlcore"]
    assert (core.source, core.status) == ("builtin", "loaded")
    for name in ADAPTERS:
        info = pm.infos[name]
        assert (info.source, info.distribution, info.status) == ("entry point", "omlcore", "loaded")
        assert info.module == f"omlcore_{name}.plugin"
    assert {"resize_normalize", "train_augmentations", "to_tensor"} <= set(pm.registry.names("transform"))


def test_real_installed_third_party_plugin_is_used_from_a_config() -> None:
    """`omlcore-demo-plugin` is a real distribution installed in the test environment (see tox.ini)."""
    info = get_plugin_manager().infos["demo"]
    assert (info.distribution, info.version, info.module) == (
        "omlcore-demo-plugin",
        importlib.metadata.version("omlcore-demo-plugin"),
        "omlcore_demo_plugin.plugin",
    )
    loss = resolve("loss", {"name": "demo.CentroidLoss", "args": {"scale": 2.0}})
    torch.manual_seed(0)
    embeddings, labels = torch.randn(6, 3), torch.tensor([0, 1, 0, 2, 1, 0])
    expected = 0.0
    for i in range(6):  # naive reference: squared distance to the mean of the same-label rows
        centroid = embeddings[labels == labels[i]].mean(0)
        expected += float(((embeddings[i] - centroid) ** 2).sum()) / 6
    assert loss(embeddings, labels).item() == pytest.approx(2.0 * expected, rel=1e-6)


def test_blocked_plugin_is_not_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMLCORE_DISABLE_PLUGINS", "demo, pml")
    pm = create_plugin_manager()
    assert pm.infos["demo"].status == pm.infos["pml"].status == "blocked"
    assert pm.is_blocked("demo") and pm.get_plugin("demo") is None
    assert "disabled by OMLCORE_DISABLE_PLUGINS" in pm.infos["demo"].describe_status()
    assert "demo.CentroidLoss" not in pm.registry.names("loss")
    assert not [name for name in pm.registry.names("loss") if name.startswith("pml.")]
    with pytest.raises(UnknownComponentError, match="may be missing or disabled"):
        pm.registry.get("loss", "demo.CentroidLoss")


def test_allow_list_loads_only_the_named_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMLCORE_PLUGINS", "demo")
    pm = create_plugin_manager()
    loaded = {name for name, info in pm.infos.items() if info.status == "loaded"}
    assert loaded == {"omlcore", "demo"}
    assert {pm.infos[name].status for name in ADAPTERS} == {"not allowed"}


def test_no_autoload_keeps_only_core_and_explicit_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMLCORE_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert {n for n, i in create_plugin_manager().infos.items() if i.status == "loaded"} == {"omlcore"}
    monkeypatch.setenv("OMLCORE_PLUGINS", "demo,torch")
    assert {n for n, i in create_plugin_manager().infos.items() if i.status == "loaded"} == {"omlcore", "demo", "torch"}


def test_settings_parse_env_and_overrides() -> None:
    settings = PluginSettings.from_env(
        {"OMLCORE_DISABLE_PLUGINS": "a, b,,", "OMLCORE_TRACE_PLUGINS": "yes"}, allowed=["c"], autoload=False
    )
    assert settings == PluginSettings(frozenset({"a", "b"}), frozenset({"c"}), autoload=False, trace=True)
    assert PluginSettings.from_env({}) == PluginSettings()


def test_core_plugin_cannot_be_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMLCORE_DISABLE_PLUGINS", "omlcore")
    with pytest.raises(OmlcoreError, match="core plugin 'omlcore' cannot be disabled"):
        create_plugin_manager()


def test_trace_writes_loading_and_registration(capsys: pytest.CaptureFixture[str]) -> None:
    pm = create_plugin_manager(PluginSettings.from_env({"OMLCORE_TRACE_PLUGINS": "1", "OMLCORE_PLUGINS": "demo"}))
    pm.registry  # noqa: B018 - building the registry is what gets traced
    err = capsys.readouterr().err
    assert "loaded plugin 'demo' from omlcore-demo-plugin" in err
    assert "loss 'demo.CentroidLoss' <- plugin 'demo'" in err
    assert "register_losses" in err  # pluggy's own hook-call tracing


def test_broken_installed_plugins_only_warn(monkeypatch: pytest.MonkeyPatch, broken_plugin_site: Path) -> None:
    monkeypatch.syspath_prepend(str(broken_plugin_site))
    with pytest.warns(PluginLoadWarning) as caught:
        pm = create_plugin_manager()
        registry = pm.registry
    messages = "\n".join(str(w.message) for w in caught)
    assert "'broken_import' (distribution omlcore-broken-plugin 6.6.6) is skipped: ModuleNotFoundError" in messages
    assert "omlcore_dependency_that_does_not_exist" in messages and "OMLCORE_DISABLE_PLUGINS=broken_import" in messages
    assert "'broken_hook' (distribution omlcore-broken-plugin 6.6.6) is skipped: RuntimeError" in messages
    assert "loss registry exploded" in messages
    assert "'broken_exit' (distribution omlcore-broken-plugin 6.6.6) is skipped: SystemExit: 3" in messages
    assert pm.infos["broken_import"].status == pm.infos["broken_hook"].status == "failed"
    assert "broken.sampler" not in registry.names("sampler")  # a failing plugin contributes nothing
    assert "demo.CentroidLoss" in registry.names("loss") and pm.infos["demo"].status == "loaded"


def test_broken_plugin_can_be_disabled_silently(monkeypatch: pytest.MonkeyPatch, broken_plugin_site: Path) -> None:
    monkeypatch.syspath_prepend(str(broken_plugin_site))
    monkeypatch.setenv("OMLCORE_DISABLE_PLUGINS", "broken_import,broken_hook,broken_exit")
    pm = create_plugin_manager()  # pytest turns any PluginLoadWarning into an error (pyproject filterwarnings)
    assert "demo.CentroidLoss" in pm.registry.names("loss")


@pytest.mark.parametrize(
    ("variable", "value", "unknown", "close"),
    [
        ("OMLCORE_PLUGINS", "torch,lightnin", "lightnin", "lightning"),
        ("OMLCORE_DISABLE_PLUGINS", "pmll", "pmll", "pml"),
    ],
)
def test_a_switch_naming_no_installed_plugin_warns(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, unknown: str, close: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.warns(PluginLoadWarning, match=rf"{variable} names '{unknown}', which no installed omlcore plugin is "
                      rf"called\. Did you mean '{close}'\? Installed: .*torch") as caught:  # fmt: skip
        create_plugin_manager()
    assert len(caught) == 1


def test_a_hook_without_hookimpl_is_reported() -> None:
    module = types.ModuleType("forgetful_plugin")
    exec("def register_losses(registry):\n    registry.register('forgot.Loss', 'm:L')\n", module.__dict__)
    exec("def register_loss(registry):\n    pass\n", module.__dict__)
    with pytest.warns(PluginLoadWarning) as caught:
        registry = registry_of([("forgetful", module)])
    messages = sorted(str(w.message) for w in caught)
    assert messages == [
        "omlcore plugin 'forgetful' defines 'register_loss' without @hookimpl (did you mean 'register_losses'?), "
        "so it is never called; decorate it with omlcore.hookspecs.hookimpl.",
        "omlcore plugin 'forgetful' defines 'register_losses' without @hookimpl, so it is never called; decorate it "
        "with omlcore.hookspecs.hookimpl.",
    ]
    assert "forgot.Loss" not in registry.names("loss")


def test_throwaway_plugin_with_raising_hook_is_skipped_whole() -> None:
    def register_samplers(registry: Registrar) -> None:
        registry.register("half.sampler", "m:S")

    def register_miners(registry: Registrar) -> None:
        raise ValueError("boom")

    pm = create_plugin_manager(
        PluginSettings(autoload=False),
        plugins=[("half", plugin(register_samplers=register_samplers, register_miners=register_miners))],
    )
    with pytest.warns(PluginLoadWarning, match=r"plugin 'half' is skipped: ValueError: boom.*fix or remove it"):
        registry = pm.registry
    assert "half.sampler" not in registry.names("sampler") and pm.infos["half"].status == "failed"


def test_duplicate_component_across_plugins_fails_loudly() -> None:
    def register_losses(registry: Registrar) -> None:
        registry.register("demo.CentroidLoss", "impostor.losses:Centroid")

    pm = create_plugin_manager(plugins=[("impostor", plugin(register_losses=register_losses))])
    with pytest.raises(DuplicateComponentError) as info:
        pm.build_registry()
    assert "'impostor' (impostor.losses:Centroid)" in str(info.value)
    assert "'demo' (omlcore_demo_plugin.components:CentroidLoss)" in str(info.value)


def test_override_replaces_another_plugins_component() -> None:
    def register_losses(registry: Registrar) -> None:
        registry.register("demo.CentroidLoss", "collections:Counter", override=True)

    pm = create_plugin_manager(plugins=[("patch", plugin(register_losses=register_losses))])
    entry = pm.registry.get("loss", "demo.CentroidLoss")
    assert (entry.plugin, entry.target) == ("patch", "collections:Counter")


def test_plugin_name_claimed_by_two_distributions_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_entry_point(dist_name: str) -> types.SimpleNamespace:
        dist = types.SimpleNamespace(name=dist_name, version="1.0")
        return types.SimpleNamespace(name="twin", value=f"{dist_name}.plugin", dist=dist, load=lambda: plugin())

    monkeypatch.setattr(
        plugins_module.importlib.metadata,
        "entry_points",
        lambda group: [fake_entry_point("first-dist"), fake_entry_point("second-dist"), fake_entry_point("first-dist")],
    )
    with pytest.warns(PluginLoadWarning, match="'twin' is claimed by distributions 'first-dist' and 'second-dist'"):
        pm = create_plugin_manager()
    assert pm.infos["twin"].distribution == "first-dist"


def test_process_wide_manager_is_lazy_and_cached() -> None:
    first = get_plugin_manager()
    assert get_plugin_manager() is first and get_registry() is first.registry
    reset_plugin_manager()
    assert get_plugin_manager() is not first


def test_adapter_availability_matches_the_installed_extras() -> None:
    """tox's `core` env sets OMLCORE_TEST_EXPECT_MISSING=lightning,pml; the full env expects everything."""
    expected_missing = {name for name in os.environ.get("OMLCORE_TEST_EXPECT_MISSING", "").split(",") if name}
    pm = get_plugin_manager()
    for plugin_name, module in ADAPTERS.items():
        info = pm.infos[plugin_name]
        if plugin_name in expected_missing:
            assert importlib.util.find_spec(module) is None, f"{module} should not be installed in this env"
            assert not info.available
            assert f'pip install "omlcore[{plugin_name}]"' in info.describe_status()
            # every component but a runner (listed as available so that configs naming it stay valid; building it
            # names the extra)
            entries = [e for e in pm.registry.entries(plugin=plugin_name) if e.kind != "runner"]
            assert entries and not any(entry.available for entry in entries)
        else:
            assert importlib.util.find_spec(module) is not None
            assert info.available, info.describe_status()


def test_registry_of_runs_the_real_hooks_and_flags_misnamed_ones() -> None:
    def register_losses(registry: Registrar) -> None:
        registry.register("mine.Loss", "m:L")

    def register_loss(registry: Registrar) -> None:
        registry.register("mine.Typo", "m:T")

    assert [e.name for e in registry_of([("mine", plugin(register_losses=register_losses))])] == ["mine.Loss"]
    with pytest.warns(
        PluginLoadWarning, match="'register_loss', which is not an omlcore hook .did you mean 'register_losses'"
    ):
        registry = registry_of([("typo", plugin(register_loss=register_loss))])
    assert len(registry) == 0


@pytest.mark.parametrize(("kind", "hook_name"), KINDS.items())
def test_every_hook_is_documented_and_registers_its_kind(kind: str, hook_name: str) -> None:
    spec = getattr(hookspecs, hook_name)
    assert str(inspect.signature(spec)) == "(registry: 'Registrar') -> 'None'"
    assert spec.__doc__ and f'Kind ``"{kind}"``' in spec.__doc__

    def register(registry: Registrar) -> None:
        registry.register(f"meta.{kind}", "collections:OrderedDict", summary=f"a {kind}")

    registry = registry_of([("meta", plugin(**{hook_name: register}))])
    assert [(e.kind, e.name, e.plugin) for e in registry] == [(kind, f"meta.{kind}", "meta")]
