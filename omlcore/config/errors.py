"""The error every config problem raises: it names the config path of the offending key."""

from __future__ import annotations

from omlcore.errors import OmlcoreError

__all__ = ["ConfigError"]


class ConfigError(OmlcoreError, ValueError):
    """A config cannot be used as it is; ``path`` is the dotted key (``loss.args.miner.name``) at fault.

    Args:
        path: the dotted config path of the offending key ("" for the whole config).
        message: what is wrong and how to fix it.
        source: the config file (or "overrides"), shown in front of the path.
    """

    docs = "docs/config.md"

    def __init__(self, path: str, message: str, source: str | None = None) -> None:
        self.path = path
        self.message = message
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"config {where}{path or '(top level)'}: {message}")
