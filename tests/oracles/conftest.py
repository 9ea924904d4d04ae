"""Oracle tests: omlcore against Open Metric Learning (OML 4.0), which lives only in tox's `oml` env.

OML pins numpy<2 and pulls torch 2.14.1 + torchvision, so it never enters the main test envs; there these
tests are skipped (and run by `tox -e oml`, where OMLCORE_REQUIRE_ORACLES=1 turns a missing OML into a failure).
"""

from __future__ import annotations

import os

import pytest

if os.environ.get("OMLCORE_REQUIRE_ORACLES") == "1":
    import oml  # noqa: F401  - must be importable in the oracle env
else:
    pytest.importorskip("oml", reason="OML is installed only in tox's `oml` env (tox -e oml)")
