"""docs/config.md documents every key of the schema and every runner argument, and nothing else."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from omlcore.config import OPTIONS
from omlcore.config.schema import SECTIONS
from omlcore_lightning.runner import LightningRunner  # imports no Lightning: the core env documents it too
from omlcore_torch.runner import TorchRunner

DOC = (Path(__file__).resolve().parents[2] / "docs" / "config.md").read_text(encoding="utf-8")


def table_keys(heading: str) -> list[str]:
    """The backticked first cells of the table under ``heading`` (up to the next heading)."""
    section = DOC.split(f"\n{heading}\n", 1)[1]
    section = re.split(r"\n#+ ", section, maxsplit=1)[0]
    return re.findall(r"^\| `([^`]+)` \|", section, flags=re.M)


def test_every_schema_key_is_documented_once_and_nothing_else() -> None:
    documented = [
        key for heading in ("## Keys", *(f"### `{section}`" for section in SECTIONS)) for key in table_keys(heading)
    ]
    assert sorted(documented) == sorted(option.key for option in OPTIONS)
    assert len(documented) == len(set(documented))


@pytest.mark.parametrize(
    ("heading", "runner"), [("### `runner: torch`", TorchRunner), ("### `runner: lightning`", LightningRunner)]
)
def test_every_runner_argument_is_documented(heading: str, runner: type) -> None:
    assert table_keys(heading) == [name for name in inspect.signature(runner).parameters]


def test_documented_defaults_match_the_schema() -> None:
    for option in OPTIONS:
        row = re.search(rf"^\| `{re.escape(option.key)}` \|[^|]*\| ([^|]*) \|", DOC, flags=re.M)
        assert row is not None, option.key
        shown = row.group(1).strip()
        if option.default is None:
            assert shown in ("null", "required", "required to train", "required to train-reranker"), (option.key, shown)
        elif isinstance(option.default, dict):
            assert f"name: {option.default['name']}" in shown, (option.key, shown)
        else:
            expected = str(option.default).lower() if isinstance(option.default, bool) else str(option.default)
            assert shown.strip("`") == expected, (option.key, shown)
