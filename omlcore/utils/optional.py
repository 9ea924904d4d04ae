"""Optional dependencies: check for a framework without importing it, or import it with a helpful error."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

__all__ = ["install_hint", "is_available", "missing_modules", "require"]


def install_hint(extra: str) -> str:
    """The exact command that installs omlcore's optional ``extra``."""
    return f'pip install "omlcore[{extra}]"'


def is_available(module: str) -> bool:
    """True when ``module`` can be imported; the module itself is not imported (only its parents)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package is missing, or sys.modules[module] is None
        return False


def missing_modules(modules: tuple[str, ...] | list[str]) -> list[str]:
    """The subset of ``modules`` that cannot be imported, in order."""
    return [module for module in modules if not is_available(module)]


def require(module: str, extra: str, *, what: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` with the ``pip install`` command for ``extra``.

    Args:
        module: the import name, e.g. ``"lightning.pytorch"``.
        extra: the omlcore extra that installs it, e.g. ``"lightning"``.
        what: the component that needs it, named in the error (e.g. ``"loss 'pml.ArcFaceLoss'"``).
    """
    from omlcore.errors import MissingDependencyError

    try:
        return importlib.import_module(module)
    except ImportError as error:
        missing = error.name is None or module == error.name or module.startswith(error.name + ".")
        if not missing:
            raise  # the framework is installed but one of *its* imports is broken: show that, unchanged
        user = f"{what} needs" if what else "This needs"
        raise MissingDependencyError(
            f"{user} the optional dependency '{module.split('.')[0]}', which is not installed. "
            f"Install it with: {install_hint(extra)}"
        ) from error
