"""The ``torch`` plugin registers the pipelines' ``torch`` runner and the training callbacks, and registering them
imports nothing."""

from __future__ import annotations

from collections.abc import Callable

import omlcore_torch.plugin as torch_plugin
from omlcore.plugins import get_plugin_manager, registry_of
from omlcore.protocols import Runner
from omlcore_torch.runner import TorchRunner


def test_hookimpls_match_the_hookspecs(hookimpl_counts: Callable[[object, str], dict[str, int]]) -> None:
    assert hookimpl_counts(torch_plugin, "torch") == {
        "register_runners": 1,
        "register_callbacks": 1,
    }


def test_registers_the_torch_runner_and_callbacks() -> None:
    registry = registry_of([("torch", torch_plugin)])
    assert registry.names("callback") == sorted(torch_plugin.CALLBACKS)
    [entry] = registry.entries(kind="runner")
    assert (entry.kind, entry.name, entry.plugin, entry.requires) == ("runner", "torch", "torch", ())
    assert entry.load() is TorchRunner
    runner = entry.build(epochs=2, device="cpu", progress=False)
    assert isinstance(runner, Runner) and runner.epochs == 2 and runner.checkpoint_name == "last.pt"


def test_the_installed_plugin_provides_the_runner() -> None:
    assert get_plugin_manager().registry.get("runner", "torch").plugin == "torch"


def test_loading_the_plugin_imports_no_torch_and_the_adapter_imports_lazily(python_json) -> None:  # type: ignore[no-untyped-def]
    result = python_json(
        """
        import json, sys
        import omlcore_torch.plugin as plugin
        from omlcore.plugins import registry_of

        registry = registry_of([("torch", plugin)])
        listed = {"entries": len(registry.entries()), "torch": "torch" in sys.modules}
        import omlcore_torch

        listed["torch_after_package"] = "torch" in sys.modules
        listed["fit"] = omlcore_torch.fit.__module__
        print(json.dumps(listed))
        """
    )
    assert result == {"entries": 5, "torch": False, "torch_after_package": False, "fit": "omlcore_torch.training"}
