"""The README is the front door: its commands are what CI runs, and every Python snippet executes."""

from __future__ import annotations

from pathlib import Path

import pytest
from snippets import SCRIPT_MARK, fenced_blocks, run_python_blocks

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_ci_runs_the_readme_test_command() -> None:
    bash = fenced_blocks(README, "bash")
    assert len(bash) >= 2, "README must show the main-job command and the test command"
    test_command = next(block.strip() for block in bash if "tox" in block)
    ci_commands = [
        line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")
    ]
    assert test_command in ci_commands


def test_main_job_command_installs_and_runs_omlcore() -> None:
    main_job = fenced_blocks(README, "bash")[0]
    assert "pip install" in main_job and "omlcore train glyphs" in main_job


def test_python_snippets_run(tmp_path: Path) -> None:
    """All ```python blocks run in order, in one namespace, in an empty working directory (see ``snippets``)."""
    pytest.importorskip("pytorch_metric_learning", reason="the quick start uses PML components (omlcore[pml])")
    pytest.importorskip("lightning", reason="'Train and validate' uses Lightning (omlcore[lightning])")
    blocks = fenced_blocks(README, "python")
    assert len(blocks) >= 4
    assert sum(block.startswith(SCRIPT_MARK) for block in blocks) >= 1
    run_python_blocks(blocks, "README.md", tmp_path)
