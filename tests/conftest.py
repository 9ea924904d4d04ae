"""Shared fixtures: a clean plugin environment for every test, and fresh plugin managers on demand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pluggy
import pytest

from omlcore import hookspecs
from omlcore.plugins import ENV_ALLOW, ENV_DISABLE, ENV_NO_AUTOLOAD, ENV_TRACE, reset_plugin_manager

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(autouse=True)
def clean_plugin_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No OMLCORE_* switch leaks in from the developer's shell, and no process-wide manager across tests."""
    for name in (ENV_ALLOW, ENV_DISABLE, ENV_NO_AUTOLOAD, ENV_TRACE):
        monkeypatch.delenv(name, raising=False)
    reset_plugin_manager()
    yield
    reset_plugin_manager()


HIDE_MODULES = """
import importlib.abc as _abc, sys as _sys

class _Hide(_abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {hidden!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

_sys.meta_path.insert(0, _Hide())
"""


def run_python(
    code: str,
    env: dict[str, str] | None = None,
    pythonpath: list[Path] | None = None,
    hidden: tuple[str, ...] = (),
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter of this environment (no OMLCORE_* switches unless given).

    ``hidden``: top-level modules that cannot be imported there, as if they were not installed.
    """
    if hidden:
        code = HIDE_MODULES.format(hidden=set(hidden)) + code
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("OMLCORE_")}
    if pythonpath:
        full_env["PYTHONPATH"] = os.pathsep.join([*map(str, pythonpath), full_env.get("PYTHONPATH", "")])
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=timeout)


@pytest.fixture
def python_runner() -> Callable[..., subprocess.CompletedProcess[str]]:
    return run_python


@pytest.fixture
def python_json() -> Callable[[str], Any]:
    """Run (dedented) ``code`` in a fresh interpreter (``hidden`` as in :func:`run_python`); it must succeed and
    print JSON as its last line."""

    def run(code: str, hidden: tuple[str, ...] = ()) -> Any:
        result = run_python(textwrap.dedent(code), hidden=hidden)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout.strip().splitlines()[-1])

    return run


@pytest.fixture(scope="session")
def broken_plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The broken fixture distribution, really installed (by pip) into a folder to put on sys.path."""
    target = tmp_path_factory.mktemp("broken-site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(FIXTURES / "omlcore-broken-plugin"),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return target


@pytest.fixture
def hookimpl_counts() -> Callable[[object, str], dict[str, int]]:
    """Register ``plugin`` as ``name`` on a bare pluggy manager with omlcore's hookspecs, check that every hookimpl
    is a known hook with the right argument names, and count the implementations of each hook it implements."""

    def count(plugin: object, name: str) -> dict[str, int]:
        manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        manager.add_hookspecs(hookspecs)
        manager.register(plugin, name=name)
        manager.check_pending()
        hooks = {hook: len(caller.get_hookimpls()) for hook, caller in vars(manager.hook).items()}
        return {hook: n for hook, n in hooks.items() if n}

    return count


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The checkpoints folder of a fresh cache; no opt-in or offline switch leaks in from the shell."""
    monkeypatch.setenv("OMLCORE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("OMLCORE_OFFLINE", raising=False)
    monkeypatch.delenv("OMLCORE_ALLOW_UNSAFE_PICKLE", raising=False)
    return tmp_path / "cache" / "checkpoints"
