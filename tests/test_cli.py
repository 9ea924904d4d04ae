"""The `omlcore` command line, run for real in subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from omlcore import __version__
from omlcore.cli import main


def omlcore_cli(python_runner, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    code = f"import sys; from omlcore.cli import main; sys.exit(main({list(args)!r}))"
    return python_runner(code, **kwargs)


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"omlcore {__version__}"
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "plugins" in out and "OMLCORE_DISABLE_PLUGINS" in out and "OMLCORE_PLUGINS" in out
    assert main([]) == 0 and "usage: omlcore" in capsys.readouterr().out


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("omlcore")
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == f"omlcore {__version__}"
    module = subprocess.run([sys.executable, "-m", "omlcore", "--version"], capture_output=True, text=True, check=True)
    assert module.stdout == result.stdout


def test_plugins_lists_plugins_and_components(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"omlcore {__version__}"
    for name, source, dist in [
        ("omlcore", "builtin", f"omlcore {__version__}"),
        ("torch", "entry point", f"omlcore {__version__}"),
        ("lightning", "entry point", f"omlcore {__version__}"),
        ("pml", "entry point", f"omlcore {__version__}"),
        ("demo", "entry point", "omlcore-demo-plugin"),
    ]:
        row = next(line for line in lines if line.startswith("  ") and line.split()[:1] == [name])
        assert source in row and dist in row
    assert "\ntransform (" in out and "resize_normalize" in out and "demo.CentroidLoss" in out


def test_plugins_json_and_kind_filter(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "--json", "--kind", "transform"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert {c["kind"] for c in payload["components"]} == {"transform"}
    assert {"resize_normalize", "demo.grayscale"} <= {c["name"] for c in payload["components"]}
    demo = next(p for p in payload["plugins"] if p["name"] == "demo")
    assert demo["distribution"] == "omlcore-demo-plugin" and demo["available"] is True


def test_each_runner_comes_from_its_adapters_plugin(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "--json", "--kind", "runner"]) == 0
    runners = {c["name"]: c["plugin"] for c in json.loads(capsys.readouterr().out)["components"]}
    assert runners == {"torch": "torch", "lightning": "lightning"}


def test_unknown_kind_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "--kind", "losses"]) == 2
    assert "error: Unknown component kind 'losses'. Did you mean: loss" in capsys.readouterr().err


def test_warnings_of_a_command_are_shown_once_after_it(python_runner) -> None:  # type: ignore[no-untyped-def]
    code = """
import sys, warnings
import omlcore.cli as cli

def warn_twice(args):
    warnings.warn("first warning", UserWarning)
    warnings.warn("second warning", DeprecationWarning)
    return 0

cli._cmd_plugins = warn_twice
warnings.simplefilter("always")
sys.exit(cli.main(["plugins"]))
"""
    result = python_runner(code, timeout=60)  # showing them while still recording used to loop forever
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("UserWarning: first warning") == 1
    assert result.stderr.count("DeprecationWarning: second warning") == 1


def test_broken_plugin_does_not_take_the_cli_down(python_runner, broken_plugin_site: Path) -> None:  # type: ignore[no-untyped-def]
    result = omlcore_cli(python_runner, "plugins", pythonpath=[broken_plugin_site])
    assert result.returncode == 0, result.stderr
    assert "warning: omlcore plugin 'broken_import'" in result.stderr
    assert "warning: omlcore plugin 'broken_hook'" in result.stderr
    assert (
        "warning: omlcore plugin 'broken_exit' (distribution omlcore-broken-plugin 6.6.6) is skipped: SystemExit: 3"
        in result.stderr
    )
    assert "Traceback" not in result.stderr
    broken_row = next(line for line in result.stdout.splitlines() if line.split()[:1] == ["broken_import"])
    assert "omlcore-broken-plugin 6.6.6" in broken_row and "failed to load: ModuleNotFoundError" in broken_row
    assert "demo.CentroidLoss" in result.stdout and "resize_normalize" in result.stdout

    disabled = omlcore_cli(
        python_runner,
        "plugins",
        pythonpath=[broken_plugin_site],
        env={"OMLCORE_DISABLE_PLUGINS": "broken_import,broken_hook,broken_exit"},
    )
    assert disabled.returncode == 0 and disabled.stderr == ""
    assert "disabled by OMLCORE_DISABLE_PLUGINS" in disabled.stdout


@pytest.mark.parametrize(("plugin", "hidden"), [("lightning", "lightning"), ("pml", "pytorch_metric_learning")])
def test_adapter_without_its_framework_is_marked_unavailable(python_runner, plugin: str, hidden: str) -> None:  # type: ignore[no-untyped-def]
    result = omlcore_cli(python_runner, "plugins", "--json", hidden=(hidden,))
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    info = next(p for p in payload["plugins"] if p["name"] == plugin)
    assert info["status"] == "loaded" and info["available"] is False
    assert f'pip install "omlcore[{plugin}]"' in info["detail"]
    # the runner stays listed as available (configs naming it stay valid); building it names the extra
    components = [c for c in payload["components"] if c["plugin"] == plugin and c["kind"] != "runner"]
    assert components and all(not c["available"] and f'"omlcore[{plugin}]"' in c["reason"] for c in components)
    others = [p for p in payload["plugins"] if p["name"] in {"omlcore", "torch", "demo"}]
    assert all(p["available"] for p in others)
