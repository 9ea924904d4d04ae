"""Argument types are checked from annotations, string annotations (postponed evaluation) included; one naming a
``TYPE_CHECKING``-only import is not checked, while the other parameters still are."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from omlcore.config import ConfigError
from omlcore.config.components import check_component
from omlcore.registry import Registry

if TYPE_CHECKING:
    from decimal import Decimal


class Scaled:
    """A component whose annotations are strings (this module has ``from __future__ import annotations``)."""

    def __init__(self, size: int, scale: Decimal | None = None, names: list[str] | None = None) -> None:
        self.size, self.scale, self.names = size, scale, names


def check(args: dict[str, Any]) -> None:
    registry = Registry()
    registry.registrar("loss", "test").register("test.scaled", lambda: Scaled)
    check_component("loss", {"name": "test.scaled", "args": args}, "loss", registry=registry)


def test_annotations_are_strings_here() -> None:
    assert Scaled.__init__.__annotations__["size"] == "int"


@pytest.mark.parametrize(
    ("args", "path", "expected"),
    [
        ({"size": "big"}, "loss.args.size", "expects int, got str 'big'"),
        ({"size": 3, "names": ["a", 2]}, "loss.args.names", r"expects list\[str\] \| None, got list \['a', 2\]"),
        ({"size": 2.5, "scale": "anything"}, "loss.args.size", "expects int, got float 2.5"),
    ],
)
def test_a_string_annotation_is_checked(args: dict[str, Any], path: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as caught:
        check(args)
    assert caught.value.path == path


def test_an_annotation_naming_a_type_checking_only_import_is_not_checked() -> None:
    check({"size": 3, "scale": "anything", "names": ["a", "b"]})  # Decimal is unknown at run time: scale is free
