"""Without Lightning installed, omlcore_lightning's components say which extra to install (runs in every env)."""

from __future__ import annotations

from typing import Any


def test_without_lightning_the_adapter_names_the_extra_to_install(python_json: Any) -> None:
    result = python_json(
        """
        import json

        import omlcore_lightning
        from omlcore.errors import MissingDependencyError

        out = {}
        for name in ("RetrievalModule", "MetricValCallback", "install_sampling"):
            try:
                getattr(omlcore_lightning, name)
            except MissingDependencyError as error:
                out[name] = str(error)
        print(json.dumps(out))
        """,
        hidden=("lightning",),
    )
    assert sorted(result) == ["MetricValCallback", "RetrievalModule", "install_sampling"]
    assert all('pip install "omlcore[lightning]"' in message for message in result.values())
