"""Without Lightning installed, omlcore_lightning's components say which extra to install (runs in every env)."""

from __future__ import annotations

from typing import Any


def test_without_lightning_the_adapter_names_the_extra_to_install(python_json: Any) -> None:
    result = python_json(
        """
        import importlib.abc, json, sys

        class HideLightning(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "lightning" or name.startswith("lightning."):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None

        sys.meta_path.insert(0, HideLightning())
        import omlcore_lightning
        from omlcore.errors import MissingDependencyError

        out = {}
        for name in ("RetrievalModule", "MetricValCallback", "install_sampling"):
            try:
                getattr(omlcore_lightning, name)
            except MissingDependencyError as error:
                out[name] = str(error)
        print(json.dumps(out))
        """
    )
    assert sorted(result) == ["MetricValCallback", "RetrievalModule", "install_sampling"]
    assert all('pip install "omlcore[lightning]"' in message for message in result.values())
