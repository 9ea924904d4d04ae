"""Runs the code blocks of a Markdown file, as the README's and the site's guides show them.

The ```python blocks of one file run in order, in one namespace, in the current working directory; a block whose
first line is ``# run as a script: python NAME.py`` is written to NAME.py there and run as ``python NAME.py`` in its
own process (e.g. Lightning's DDP starts the second process by running it again).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from omlcore.utils.optional import is_available

__all__ = ["SCRIPT_MARK", "fenced_blocks", "run_python_blocks", "skip_unless_importable"]

#: The first line of a block that must run as a script in its own process.
SCRIPT_MARK = "# run as a script:"
#: Import names that an optional extra installs, and the extra.
EXTRAS = {
    "lightning": "lightning",
    "pytorch_metric_learning": "pml",
    "matplotlib": "viz",
    "onnx": "export",
    "onnxruntime": "export",
    "faiss": "omlcore-faiss",
    "omlcore_faiss": "omlcore-faiss",
}


def fenced_blocks(markdown: str, language: str) -> list[str]:
    """The bodies of the fenced blocks of ``language`` (at the start of a line, not indented), in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", markdown, flags=re.S | re.M)


def skip_unless_importable(blocks: list[str]) -> None:
    """Skip when a block imports an optional package that is missing; the reason names the package and its extra."""
    imported = {name for block in blocks for name in re.findall(r"^\s*(?:from|import) (\w+)", block, flags=re.M)}
    missing = sorted(name for name in imported & EXTRAS.keys() if not is_available(name))
    if missing:
        hints = ", ".join(f"{name} ({EXTRAS[name]})" for name in missing)
        pytest.skip(f"the snippets import {hints}: pip install the extra named")


def run_python_blocks(blocks: list[str], label: str, folder: Path) -> None:
    """Run ``blocks`` in order in one namespace with ``folder`` as the working directory (torch on one thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models; a second thread only waits on a busy machine
    namespace: dict[str, object] = {"__name__": label}
    cwd = Path.cwd()
    os.chdir(folder)
    try:
        for number, block in enumerate(blocks, 1):
            if block.startswith(SCRIPT_MARK):
                _run_as_script(block, f"{label} python block {number}", folder)
            else:
                exec(compile(block, f"{label} python block {number}", "exec"), namespace)
    finally:
        os.chdir(cwd)
        torch.set_num_threads(threads)


def _run_as_script(block: str, where: str, folder: Path) -> None:
    match = re.match(rf"{SCRIPT_MARK} python (\S+\.py)", block)
    assert match, f"{where}: write the first line as '{SCRIPT_MARK} python NAME.py'"
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
    assert done.returncode == 0, f"{where} ({script.name}) failed:\n{done.stderr[-3000:]}"
