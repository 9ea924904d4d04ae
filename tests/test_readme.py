"""The README is the front door: its commands are what CI runs, and every Python snippet executes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
#: The first line of a block that must run as a script in its own process (e.g. Lightning's DDP re-executes it).
SCRIPT_MARK = "# run as a script:"


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
    assert "pip install" in main_job and "omlcore train glyphs" in main_job


def test_python_snippets_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """All ```python blocks run in order, in one namespace, in an empty working directory; a block whose first line
    is ``# run as a script: python NAME.py ...`` is written to NAME.py there and run as ``python NAME.py``."""
    pytest.importorskip("pytorch_metric_learning", reason="the quick start uses PML components (omlcore[pml])")
    pytest.importorskip("lightning", reason="'Train and validate' uses Lightning (omlcore[lightning])")
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models; a second thread only waits on a busy machine
    namespace: dict[str, object] = {"__name__": "readme"}
    blocks = fenced_blocks("python")
    assert len(blocks) >= 4
    assert sum(block.startswith(SCRIPT_MARK) for block in blocks) >= 1
    try:
        for number, block in enumerate(blocks, 1):
            if block.startswith(SCRIPT_MARK):
                run_as_script(block, number, tmp_path)
            else:
                exec(compile(block, f"README.md python block {number}", "exec"), namespace)
    finally:
        torch.set_num_threads(threads)


def run_as_script(block: str, number: int, folder: Path) -> None:
    match = re.match(rf"{SCRIPT_MARK} python (\S+\.py)", block)
    assert match, f"README.md python block {number}: write the first line as '{SCRIPT_MARK} python NAME.py'"
    script = folder / match.group(1)
    script.write_text(block)
    done = subprocess.run(
        [sys.executable, script.name],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, f"README.md python block {number} ({script.name}) failed:\n{done.stderr[-3000:]}"
