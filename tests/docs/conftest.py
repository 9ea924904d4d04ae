"""The built site, shared by the docs tests: the one ``tox -e docs`` built (``OMLCORE_DOCS_SITE``), or a new one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from omlcore.utils.optional import is_available

ROOT = Path(__file__).resolve().parents[2]
SITE_ENV = "OMLCORE_DOCS_SITE"


def needs_docs_tools() -> None:
    missing = [name for name in ("mkdocs", "material", "mkdocstrings_handlers") if not is_available(name)]
    if missing:
        pytest.skip(f'needs {", ".join(missing)} to build the site (pip install "omlcore[docs]")')


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site folder, built with ``mkdocs build --strict`` (a warning fails the build)."""
    if os.environ.get(SITE_ENV):
        return Path(os.environ[SITE_ENV])
    needs_docs_tools()
    folder = tmp_path_factory.mktemp("site")
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(folder)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert built.returncode == 0, f"mkdocs build --strict failed:\n{built.stderr[-5000:]}"
    return folder
