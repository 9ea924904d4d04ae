"""The README is the front door: its commands are what CI runs, and every Python snippet executes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def fenced_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.S | re.M)


def test_ci_runs_the_readme_test_command() -> None:
    bash = fenced_blocks("bash")
    assert len(bash) >= 2, "README must show the main-job command and the test command"
    test_command = next(block.strip() for block in bash if "tox" in block)
    ci_commands = [
        line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")
    ]
    assert test_command in ci_commands


def test_main_job_command_installs_and_runs_omlcore() -> None:
    main_job = fenced_blocks("bash")[0]
    assert "pip install" in main_job and "omlcore plugins" in main_job


def test_python_snippets_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """All ```python blocks run in order, in one namespace, in an empty working directory."""
    pytest.importorskip("pytorch_metric_learning", reason="the quick start uses PML components (omlcore[pml])")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "readme"}
    blocks = fenced_blocks("python")
    assert len(blocks) >= 4
    for number, block in enumerate(blocks, 1):
        exec(compile(block, f"README.md python block {number}", "exec"), namespace)
