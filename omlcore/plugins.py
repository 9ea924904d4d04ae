"""The plugin manager: finds plugins, applies the switches, and builds the component registry.

Plugins are the core's in-process plugin (:mod:`omlcore.builtin_plugin`, always on) and every module
advertised in the ``omlcore`` entry-point group, including omlcore's own adapters (``torch``,
``lightning``, ``pml``) which are registered exactly like third-party packages.

Switches (environment variables, or keyword arguments of :meth:`PluginSettings.from_env`):

``OMLCORE_DISABLE_PLUGINS=a,b``
    never load these entry-point plugins (pluggy's ``set_blocked``).
``OMLCORE_PLUGINS=a,b``
    allow-list: load only these entry-point plugins.
``OMLCORE_DISABLE_PLUGIN_AUTOLOAD=1``
    load no entry-point plugin except those named in ``OMLCORE_PLUGINS`` (as pytest's
    ``PYTEST_DISABLE_PLUGIN_AUTOLOAD``).
``OMLCORE_TRACE_PLUGINS=1``
    write plugin loading, hook calls and registrations to stderr.

A plugin that fails to import or whose hook raises is skipped with a :class:`~omlcore.errors.PluginLoadWarning`
naming it and the error; none of its components are registered and everything else keeps working.
Nothing happens at import time: the process-wide manager is created on the first call to
:func:`get_plugin_manager`.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import os
import sys
import types
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import pluggy

from omlcore import __version__, hookspecs
from omlcore.errors import OmlcoreError, PluginLoadWarning
from omlcore.registry import KINDS, Entry, Registrar, Registry
from omlcore.utils.optional import install_hint

__all__ = [
    "CORE_PLUGIN_NAME",
    "ENTRY_POINT_GROUP",
    "OmlcorePluginManager",
    "PluginInfo",
    "PluginSettings",
    "create_plugin_manager",
    "get_plugin_manager",
    "get_registry",
    "registry_of",
    "reset_plugin_manager",
]

ENTRY_POINT_GROUP = "omlcore"
CORE_PLUGIN_NAME = "omlcore"

ENV_DISABLE = "OMLCORE_DISABLE_PLUGINS"
ENV_ALLOW = "OMLCORE_PLUGINS"
ENV_NO_AUTOLOAD = "OMLCORE_DISABLE_PLUGIN_AUTOLOAD"
ENV_TRACE = "OMLCORE_TRACE_PLUGINS"

Status = Literal["loaded", "blocked", "not allowed", "failed"]


def _names(value: str | None) -> frozenset[str]:
    return frozenset(part.strip() for part in (value or "").split(",") if part.strip())


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class PluginSettings:
    """Which plugins to load. ``allowed=None`` means "no allow-list"."""

    disabled: frozenset[str] = frozenset()
    allowed: frozenset[str] | None = None
    autoload: bool = True
    trace: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> PluginSettings:
        """Settings from ``OMLCORE_*`` environment variables (``os.environ`` by default), then ``overrides``."""
        env = os.environ if environ is None else environ
        allowed = _names(env.get(ENV_ALLOW))
        settings = cls(
            disabled=_names(env.get(ENV_DISABLE)),
            allowed=allowed if allowed else None,
            autoload=not _flag(env.get(ENV_NO_AUTOLOAD)),
            trace=_flag(env.get(ENV_TRACE)),
        )
        for key in ("disabled", "allowed"):
            if overrides.get(key) is not None:
                overrides[key] = frozenset(overrides[key])
        return replace(settings, **overrides)

    def skip_reason(self, name: str) -> Status | None:
        """Why entry-point plugin ``name`` is not loaded, or None when it is."""
        if name in self.disabled:
            return "blocked"
        if self.allowed is not None:
            return None if name in self.allowed else "not allowed"
        return None if self.autoload else "not allowed"


@dataclass
class PluginInfo:
    """What ``omlcore plugins`` shows about one plugin."""

    name: str
    source: Literal["builtin", "entry point"]
    module: str
    distribution: str | None = None
    version: str | None = None
    status: Status = "loaded"
    error: str | None = None
    missing: dict[str, str | None] = field(default_factory=dict)  # missing module -> extra that installs it
    components: int = 0
    unavailable_components: int = 0

    @property
    def available(self) -> bool:
        """Loaded, and every framework its components need is installed."""
        return self.status == "loaded" and not self.missing

    def describe_status(self) -> str:
        if self.status == "failed":
            return f"failed to load: {self.error}"
        if self.status == "blocked":
            return f"disabled by {ENV_DISABLE}"
        if self.status == "not allowed":
            return f"not loaded (not in {ENV_ALLOW} / autoload disabled)"
        if self.missing:
            fixes = sorted(
                {install_hint(extra) if extra else f"pip install {mod}" for mod, extra in self.missing.items()}
            )
            state = "unavailable" if self.unavailable_components == self.components else "partly available"
            needs = f"{self.unavailable_components} of {self.components} components need"
            return f"{state}: {needs} {', '.join(sorted(self.missing))} ({'; '.join(fixes)})"
        return "available"


class OmlcorePluginManager(pluggy.PluginManager):
    """pluggy's manager for project ``"omlcore"``, plus plugin metadata and the component registry."""

    def __init__(self, settings: PluginSettings | None = None) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self.settings = settings if settings is not None else PluginSettings.from_env()
        self._infos: dict[str, PluginInfo] = {}
        self._registry: Registry | None = None
        self._log = self.trace.root.get("omlcore")
        if self.settings.trace:
            self.trace.root.setwriter(sys.stderr.write)
            self.enable_tracing()

    def register(self, plugin: object, name: str | None = None) -> str | None:
        """pluggy's ``register``, plus a warning for ``@hookimpl`` functions that match no omlcore hook and for
        ``register_<kinds>`` functions of the plugin's own that lack ``@hookimpl`` (pluggy ignores them)."""
        registered = super().register(plugin, name)
        for attribute in dir(plugin):
            marked = self.parse_hookimpl_opts(plugin, attribute) is not None
            close = difflib.get_close_matches(attribute, KINDS.values(), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close and close[0] != attribute else ""
            if marked and attribute not in KINDS.values():
                _warn(
                    f"omlcore plugin '{registered}' implements '{attribute}', which is not an omlcore hook{hint}; "
                    f"it is never called. Hooks: {', '.join(KINDS.values())}."
                )
            elif not marked and attribute.startswith("register_") and _defined_by(plugin, attribute):
                _warn(
                    f"omlcore plugin '{registered}' defines '{attribute}' without @hookimpl{hint}, so it is never "
                    "called; decorate it with omlcore.hookspecs.hookimpl."
                )
        return registered

    def register_plugin(self, plugin: object, info: PluginInfo) -> None:
        """Register an in-process plugin object (a module or any object with ``@hookimpl`` functions)."""
        self.register(plugin, name=info.name)
        self._infos[info.name] = info
        self._registry = None
        self._log(f"registered plugin {info.name!r} ({info.module})")

    def load_entrypoint_plugins(self, group: str = ENTRY_POINT_GROUP) -> None:
        """Import every plugin of entry-point ``group`` that the settings allow; failures become warnings."""
        seen: dict[str, str] = {}
        for ep in sorted(importlib.metadata.entry_points(group=group), key=lambda ep: ep.name):
            dist_name = ep.dist.name if ep.dist is not None else None
            version = ep.dist.version if ep.dist is not None else None
            if ep.name in seen:
                if seen[ep.name] != dist_name:  # the same distribution found twice on sys.path is harmless
                    _warn(
                        f"omlcore plugin name '{ep.name}' is claimed by distributions '{seen[ep.name]}' and "
                        f"'{dist_name}'; only the one from '{seen[ep.name]}' is loaded. Uninstall one of them."
                    )
                continue
            seen[ep.name] = dist_name or "?"
            info = PluginInfo(ep.name, "entry point", ep.value, dist_name, version)
            reason = self.settings.skip_reason(ep.name)
            if reason is not None:
                info.status = reason
                if reason == "blocked":
                    self.set_blocked(ep.name)
                self._infos[ep.name] = info
                self._log(f"skipped plugin {ep.name!r}: {reason}")
                continue
            try:
                plugin = ep.load()
                self.register(plugin, name=ep.name)
            except (Exception, SystemExit) as error:  # a plugin that exits at import must not end the host
                info.status, info.error = "failed", f"{type(error).__name__}: {error}"
                _warn(_failure_message(info))
            else:
                self._log(f"loaded plugin {ep.name!r} from {dist_name} {version}")
            self._infos[ep.name] = info
        self._registry = None
        self._warn_unknown_names(seen)

    def _warn_unknown_names(self, found: Iterable[str]) -> None:
        """A warning for each name in the switches that no installed plugin has (a typo turns a switch into a no-op,
        or, in the allow-list, turns every other plugin off)."""
        known = sorted(set(found))
        switches = [(ENV_DISABLE, self.settings.disabled), (ENV_ALLOW, self.settings.allowed or frozenset())]
        for variable, names in switches:
            for unknown in sorted(set(names) - set(known) - {CORE_PLUGIN_NAME}):
                close = difflib.get_close_matches(unknown, known, n=1)
                hint = f" Did you mean '{close[0]}'?" if close else ""
                _warn(
                    f"{variable} names '{unknown}', which no installed omlcore plugin is called.{hint} "
                    f"Installed: {', '.join(known) or '(none)'}."
                )

    @property
    def infos(self) -> dict[str, PluginInfo]:
        """Every plugin found (loaded, skipped or failed), by name; builds the registry first, which fills in
        the availability of each plugin's components."""
        self.registry  # noqa: B018
        return self._infos

    @property
    def registry(self) -> Registry:
        """The registry built from the loaded plugins (built on first access, then cached)."""
        if self._registry is None:
            self._registry = self.build_registry()
        return self._registry

    def build_registry(self) -> Registry:
        """Call every plugin's ``register_<kinds>`` hooks, plugin by plugin, and collect the entries.

        A plugin whose hook raises is skipped as a whole (with a warning); two plugins registering the same
        name raise :class:`DuplicateComponentError`, naming both.
        """
        registry = Registry()
        for name, plugin in self.list_name_plugin():
            if name is None or plugin is None:
                continue
            info = self._infos.setdefault(name, PluginInfo(name, "builtin", _module_name(plugin)))
            staged: list[Entry] = []
            others = [p for n, p in self.list_name_plugin() if n != name]
            try:
                for kind, hook_name in KINDS.items():
                    caller = self.subset_hook_caller(hook_name, remove_plugins=others)
                    caller(registry=Registrar(kind, name, staged.append))
            except (Exception, SystemExit) as error:
                info.status, info.error = "failed", f"{type(error).__name__}: {error}"
                _warn(_failure_message(info))
                continue
            for entry in staged:
                registry.add(entry)
                self._log(f"{entry.kind} {entry.name!r} <- plugin {name!r}")
            unavailable = [entry for entry in staged if not entry.available]
            info.missing = {module: entry.extra for entry in unavailable for module in entry.missing}
            info.components, info.unavailable_components = len(staged), len(unavailable)
        return registry


def _defined_by(plugin: object, attribute: str) -> bool:
    """Whether ``plugin.<attribute>`` is a function or method of the plugin itself (not one it imported)."""
    value = getattr(plugin, attribute, None)
    if not callable(value):
        return False
    home = plugin.__name__ if isinstance(plugin, types.ModuleType) else type(plugin).__module__
    return getattr(value, "__module__", None) == home


def _module_name(plugin: object) -> str:
    return getattr(plugin, "__name__", type(plugin).__qualname__)


def _failure_message(info: PluginInfo) -> str:
    origin = f" (distribution {info.distribution} {info.version})" if info.distribution else ""
    fix = f"uninstall it or set {ENV_DISABLE}={info.name}" if info.source == "entry point" else "fix or remove it"
    return f"omlcore plugin '{info.name}'{origin} is skipped: {info.error}. Its components are unavailable; {fix}."


def _warn(message: str) -> None:
    warnings.warn(message, PluginLoadWarning, stacklevel=3)


def create_plugin_manager(
    settings: PluginSettings | None = None, *, plugins: Iterable[tuple[str, object]] = ()
) -> OmlcorePluginManager:
    """A new, independent manager: the core plugin, then ``plugins`` (name, object), then the entry points.

    Args:
        settings: which entry-point plugins to load; default: from the ``OMLCORE_*`` environment variables.
        plugins: extra in-process plugins (e.g. throwaway test plugins), registered after the core.
    """
    from omlcore import builtin_plugin

    pm = OmlcorePluginManager(settings)
    pm.register_plugin(
        builtin_plugin, PluginInfo(CORE_PLUGIN_NAME, "builtin", builtin_plugin.__name__, "omlcore", __version__)
    )
    if CORE_PLUGIN_NAME in pm.settings.disabled:
        raise OmlcoreError(f"The core plugin '{CORE_PLUGIN_NAME}' cannot be disabled; remove it from {ENV_DISABLE}.")
    for name, plugin in plugins:
        pm.register_plugin(plugin, PluginInfo(name, "builtin", _module_name(plugin)))
    pm.load_entrypoint_plugins()
    return pm


def registry_of(plugins: Iterable[tuple[str, object]]) -> Registry:
    """The registry of just these in-process ``(name, plugin)`` pairs: no core plugin, no entry points.

    For plugin authors' tests: it runs the real hook machinery, so a misnamed or unmarked hook shows up.
    """
    pm = OmlcorePluginManager(PluginSettings(autoload=False))
    for name, plugin in plugins:
        pm.register_plugin(plugin, PluginInfo(name, "builtin", _module_name(plugin)))
    return pm.registry


_manager: OmlcorePluginManager | None = None


def get_plugin_manager() -> OmlcorePluginManager:
    """The process-wide manager, created (and the entry points loaded) on first call."""
    global _manager
    if _manager is None:
        _manager = create_plugin_manager()
    return _manager


def get_registry() -> Registry:
    """The process-wide registry: that of :func:`get_plugin_manager`, built from the plugins on first use."""
    return get_plugin_manager().registry


def reset_plugin_manager() -> None:
    """Forget the process-wide manager; the next :func:`get_plugin_manager` re-reads settings and entry points."""
    global _manager
    _manager = None
