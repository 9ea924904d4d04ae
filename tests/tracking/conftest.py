"""Fixtures of the tracking tests: one MLflow SQLite store per session (creating its tables takes seconds), W&B offline,
and a skip that names the missing package."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from omlcore.utils.optional import is_available


def needs(*modules: str) -> None:
    """Skip unless every module is installed; the reason names the missing packages (``omlcore[all]`` has them)."""
    missing = [module for module in modules if not is_available(module)]
    if missing:
        pytest.skip(f'needs {", ".join(missing)} (pip install "omlcore[all]")')


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A local MLflow store, SQLite, shared by the session's tests (each uses its own experiment)."""
    needs("mlflow", "sqlalchemy", "alembic")
    folder = tmp_path_factory.mktemp("mlflow")
    return {"tracking_uri": f"sqlite:///{folder / 'mlflow.db'}", "artifact_location": (folder / "art").as_uri()}


@pytest.fixture
def wandb_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """W&B in offline mode, with its settings and cache in ``tmp_path``: nothing leaves the machine."""
    needs("wandb")
    for name, value in {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DIR": str(tmp_path),
        "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
        "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
        "WANDB_DATA_DIR": str(tmp_path / "wandb-data"),
        "WANDB_DISABLE_GIT": "true",
    }.items():
        monkeypatch.setenv(name, value)
    yield
