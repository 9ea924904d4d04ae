"""Errors and warnings raised by omlcore.

Every error is meant to be read by a person: it names the culprit (a column, a row, a file, a
registry name, a plugin) and says how to fix it.
"""

from __future__ import annotations

__all__ = [
    "DataValidationError",
    "DuplicateComponentError",
    "MissingDependencyError",
    "OmlcoreError",
    "PluginLoadWarning",
    "RunInterrupted",
    "UnknownComponentError",
]


class OmlcoreError(Exception):
    """Base class of every error omlcore raises on purpose.

    ``docs`` is the page of the documentation site that explains the fix, as its path in the repository; the
    command line prints it under the message.
    """

    docs: str = "docs/faq.md"


class MissingDependencyError(OmlcoreError, ImportError):
    """An optional framework is needed but not installed; the message carries the pip command."""

    docs = "docs/getting-started.md"


class UnknownComponentError(OmlcoreError, KeyError):
    """A registry lookup used a name nobody registered; the message lists the closest known names."""

    docs = "docs/plugins.md"

    def __str__(self) -> str:  # KeyError would otherwise quote the whole message
        return str(self.args[0]) if self.args else ""


class DuplicateComponentError(OmlcoreError):
    """Two plugins registered the same name for the same kind, and neither asked to override."""

    docs = "docs/plugins.md"


class DataValidationError(OmlcoreError, ValueError):
    """A dataset (CSV / dataframe / image file) violates omlcore's data contract."""

    docs = "docs/data-format.md"


class RunInterrupted(KeyboardInterrupt):
    """A run was interrupted (Ctrl-C); ``message`` says where the run is and the command that continues it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PluginLoadWarning(UserWarning):
    """A plugin failed to load or to register its components; it is skipped and the rest keeps working."""
