"""`import omlcore` (and listing every component) imports no optional framework."""

from __future__ import annotations

import json

HEAVY = ["lightning", "pytorch_lightning", "pytorch_metric_learning", "matplotlib", "faiss"]

PROBE = """
import json, sys
{body}
print(json.dumps(sorted(m for m in {heavy!r} + ["torch"] if m in sys.modules)))
"""


def imported_after(python_runner, body: str) -> list[str]:  # type: ignore[no-untyped-def]
    result = python_runner(PROBE.format(body=body, heavy=HEAVY))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_import_omlcore_is_light(python_runner) -> None:  # type: ignore[no-untyped-def]
    assert imported_after(python_runner, "import omlcore") == []


def test_listing_every_component_imports_no_framework(python_runner) -> None:  # type: ignore[no-untyped-def]
    body = (
        "import contextlib, io\n"
        "from omlcore.cli import main\n"
        "from omlcore.plugins import get_registry\n"
        "assert len(get_registry()) > 0 and [e.available for e in get_registry()]\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['plugins'])\n"
        "    main(['plugins', '--json'])"
    )
    assert imported_after(python_runner, body) == []  # not even torch: listing is cheap


def test_core_modules_import_no_optional_framework(python_runner) -> None:  # type: ignore[no-untyped-def]
    body = (
        "import omlcore.protocols, omlcore.registry, omlcore.plugins, omlcore.cli, omlcore.keys\n"
        "import omlcore.datasets, omlcore.transforms, omlcore.builtin_plugin\n"
        "from omlcore.plugins import get_registry\n"
        "get_registry().build('transform', 'resize_normalize')"
    )
    assert imported_after(python_runner, body) == ["torch"]
