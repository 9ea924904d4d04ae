"""Oracle tests: omlcore against Open Metric Learning (OML 4.0), which lives only in tox's `oml` env.

OML pins numpy<2 and pulls torch 2.14.1 + torchvision, so it never enters the main test envs. There the
oracle modules are not collected (the header says so); `tox -e oml` runs them with OMLCORE_REQUIRE_ORACLES=1,
which turns a missing OML into an error instead.
"""

from __future__ import annotations

import importlib.util
import os

OML_AVAILABLE = importlib.util.find_spec("oml") is not None

if os.environ.get("OMLCORE_REQUIRE_ORACLES") == "1" and not OML_AVAILABLE:
    raise RuntimeError("OMLCORE_REQUIRE_ORACLES=1 but OML is not installed: run the oracles with `tox -e oml`")

collect_ignore_glob = [] if OML_AVAILABLE else ["*"]


def pytest_report_header() -> str:
    state = "run" if OML_AVAILABLE else "not collected: OML is not installed here (they run in `tox -e oml`)"
    return f"omlcore oracle tests (tests/oracles): {state}"
