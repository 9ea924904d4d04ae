"""The construction-time checks of the loops, from :mod:`omlcore.checks` (where plugins add their own checks)."""

from __future__ import annotations

from omlcore.checks import IncompatibleComponentError, check_loss, check_optimizer_covers

__all__ = ["IncompatibleComponentError", "check_loss", "check_optimizer_covers"]
