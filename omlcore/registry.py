"""The component registry: ``kind -> name -> lazy factory``.

Plugins fill it through their ``register_<kinds>(registry)`` hooks (see :mod:`omlcore.hookspecs`);
the host owns the storage, checks duplicates and resolves names. A factory is either a
``"package.module:attribute"`` string or a zero-argument callable returning the factory, so listing
what exists imports nothing: only :meth:`Entry.load` (and :meth:`Registry.build`) imports the code
and, with it, the framework it needs.

The process-wide registry is :func:`omlcore.plugins.get_registry`; ``{name, args}`` specs (nested too) are
turned into objects by the config layer's one resolver, :func:`omlcore.config.resolve`.

>>> from omlcore.plugins import get_registry
>>> loss = get_registry().build("loss", "pml.TripletMarginLoss", margin=0.1)  # doctest: +SKIP
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from omlcore.errors import DuplicateComponentError, MissingDependencyError, UnknownComponentError
from omlcore.utils.optional import install_hint, missing_modules

__all__ = ["KINDS", "Entry", "Registrar", "Registry"]

#: Every component kind, with the hook that registers it (``register_<plural>``).
KINDS: dict[str, str] = {
    "sampler": "register_samplers",
    "miner": "register_miners",
    "loss": "register_losses",
    "metric": "register_metrics",
    "extractor": "register_extractors",
    "knn_backend": "register_knn_backends",
    "postprocessor": "register_postprocessors",
    "transform": "register_transforms",
    "optimizer": "register_optimizers",
    "scheduler": "register_schedulers",
    "callback": "register_callbacks",
    "logger": "register_loggers",
    "runner": "register_runners",
    "check": "register_checks",
}

Target = str | Callable[[], Callable[..., Any]]

_MAX_LISTED = 20  # an unknown-name error lists every known name of the kind up to this many


@dataclass(frozen=True)
class Entry:
    """One registered component: where its factory lives and what it needs, nothing imported yet.

    Attributes:
        kind: one of :data:`KINDS`.
        name: the name configs and :meth:`Registry.build` use, unique within ``kind``.
        target: ``"package.module:attribute"`` (attribute may be dotted) or a zero-argument callable
            that returns the factory.
        plugin: the name of the plugin that registered it.
        requires: import names that must be importable for the component to work (checked without
            importing them).
        extra: the omlcore extra that installs ``requires`` (``pip install "omlcore[<extra>]"``).
        summary: one line for listings.
        override: the entry deliberately replaces an entry of the same name from another plugin.
    """

    kind: str
    name: str
    target: Target
    plugin: str
    requires: tuple[str, ...] = ()
    extra: str | None = None
    summary: str = ""
    override: bool = False

    @property
    def missing(self) -> list[str]:
        """The required modules that are not installed."""
        return missing_modules(self.requires)

    @property
    def available(self) -> bool:
        return not self.missing

    @property
    def unavailable_reason(self) -> str | None:
        """Why the component cannot be built here (with the install command), or None if it can."""
        missing = self.missing
        if not missing:
            return None
        fix = install_hint(self.extra) if self.extra else f"pip install {' '.join(missing)}"
        return f"needs {', '.join(missing)}, not installed: {fix}"

    def describe(self) -> str:
        return f"{self.kind} '{self.name}' (plugin '{self.plugin}')"

    def load(self) -> Callable[..., Any]:
        """Import and return the factory (a class or a function).

        Raises:
            MissingDependencyError: a required framework is not installed; the message has the fix.
        """
        reason = self.unavailable_reason
        if reason is not None:
            raise MissingDependencyError(f"{self.describe()} {reason}")
        if callable(self.target):
            return self.target()
        module_name, _, attribute = self.target.partition(":")
        obj: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            obj = getattr(obj, part)
        return obj

    def build(self, *args: Any, **kwargs: Any) -> Any:
        """Load the factory and call it; wrong argument names raise an error listing the accepted ones."""
        factory = self.load()
        check_arguments(factory, args, kwargs, what=self.describe())
        return factory(*args, **kwargs)


def check_arguments(factory: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any], what: str) -> None:
    """Raise a readable TypeError when ``factory`` cannot be called with ``args`` / ``kwargs``."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # builtins without a signature: let the call itself complain
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as error:
        accepted = [p for p in signature.parameters if p not in ("self", "args", "kwargs")]
        raise TypeError(f"{what}: {error}. Accepted arguments: {', '.join(accepted) or '(none)'}") from None


class Registrar:
    """What a plugin's ``register_<kinds>(registry)`` hook receives: adds entries of one kind for one plugin."""

    def __init__(self, kind: str, plugin: str, sink: Callable[[Entry], None]) -> None:
        self.kind = kind
        self.plugin = plugin
        self._sink = sink

    def register(
        self,
        name: str,
        target: Target,
        *,
        requires: tuple[str, ...] | list[str] = (),
        extra: str | None = None,
        summary: str = "",
        override: bool = False,
    ) -> None:
        """Register ``name`` -> ``target`` for this hook's kind.

        Args:
            name: unique name within the kind; plugins should prefix it (``"faiss.flat"``).
            target: ``"package.module:attribute"`` or a zero-argument callable returning the factory.
                Nothing is imported now.
            requires: import names the component needs (e.g. ``("lightning",)``).
            extra: the omlcore extra that installs them, used in the error hint.
            summary: one line shown by ``omlcore plugins``.
            override: replace an entry of the same name registered by another plugin.
        """
        if not isinstance(name, str) or not name or name != name.strip() or " " in name:
            raise ValueError(f"plugin '{self.plugin}' registered an invalid {self.kind} name {name!r}")
        if isinstance(target, str):
            module_name, sep, attribute = target.partition(":")
            if not sep or not module_name or not attribute:
                raise ValueError(
                    f"plugin '{self.plugin}' registered {self.kind} '{name}' with target {target!r}; "
                    "expected 'package.module:attribute' or a zero-argument callable"
                )
        elif not callable(target):
            raise TypeError(f"plugin '{self.plugin}': target of {self.kind} '{name}' must be a string or callable")
        entry = Entry(self.kind, name, target, self.plugin, tuple(requires), extra, summary, override)
        self._sink(entry)


@dataclass
class Registry:
    """All registered components, by kind. Built by :meth:`omlcore.plugins.OmlcorePluginManager.build_registry`."""

    _entries: dict[str, dict[str, Entry]] = field(default_factory=lambda: {kind: {} for kind in KINDS})

    def add(self, entry: Entry) -> None:
        """Add ``entry``; a clash with another plugin's entry raises unless exactly one of them overrides."""
        kind_entries = self._entries[_check_kind(entry.kind)]
        existing = kind_entries.get(entry.name)
        if existing is not None:
            if existing.plugin == entry.plugin or existing.override == entry.override:
                raise DuplicateComponentError(
                    f"{entry.kind} '{entry.name}' is registered twice: by plugin '{existing.plugin}' "
                    f"({_target_str(existing)}) and by plugin '{entry.plugin}' ({_target_str(entry)}). "
                    "Rename one of them, pass override=True in the one that should win, or disable one "
                    "plugin with OMLCORE_DISABLE_PLUGINS."
                )
            if existing.override:
                return
        kind_entries[entry.name] = entry

    def registrar(self, kind: str, plugin: str) -> Registrar:
        """The object handed to a plugin's hook for ``kind``."""
        return Registrar(_check_kind(kind), plugin, self.add)

    def __iter__(self) -> Iterator[Entry]:
        for kind_entries in self._entries.values():
            yield from sorted(kind_entries.values(), key=lambda entry: entry.name)

    def __len__(self) -> int:
        return sum(len(kind_entries) for kind_entries in self._entries.values())

    def __contains__(self, key: object) -> bool:
        """``(kind, name) in registry``."""
        if not isinstance(key, tuple) or len(key) != 2:
            return False
        kind, name = key
        return name in self._entries.get(kind, {})

    def names(self, kind: str) -> list[str]:
        return sorted(self._entries[_check_kind(kind)])

    def entries(self, kind: str | None = None, plugin: str | None = None) -> list[Entry]:
        """Entries sorted by kind (in :data:`KINDS` order) then name, optionally filtered."""
        return [e for e in self if (kind is None or e.kind == kind) and (plugin is None or e.plugin == plugin)]

    def get(self, kind: str, name: str) -> Entry:
        """The entry of ``kind`` called ``name``; an unknown name raises with the closest known names."""
        kind_entries = self._entries[_check_kind(kind)]
        if name in kind_entries:
            return kind_entries[name]
        close = difflib.get_close_matches(str(name), kind_entries, n=5, cutoff=0.5)
        lowered = [known for known in kind_entries if known.lower() == str(name).lower()]
        suggestions = list(dict.fromkeys(lowered + close))
        elsewhere = [other for other, entries in self._entries.items() if other != kind and name in entries]
        message = f"Unknown {kind} '{name}'."
        if suggestions:
            message += f" Did you mean: {', '.join(suggestions)}?"
        if elsewhere:
            message += f" ('{name}' is registered as a {' and a '.join(elsewhere)}.)"
        if len(kind_entries) <= _MAX_LISTED:
            message += f" Known {kind} names: {', '.join(sorted(kind_entries)) or '(none)'}."
        message += f" `omlcore plugins --kind {kind}` lists them all; a plugin providing it may be missing or disabled."
        raise UnknownComponentError(message)

    def load(self, kind: str, name: str) -> Callable[..., Any]:
        return self.get(kind, name).load()

    def build(self, kind: str, name: str, /, *args: Any, **kwargs: Any) -> Any:
        """Build component ``name`` of ``kind`` with the given arguments."""
        return self.get(kind, name).build(*args, **kwargs)


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        close = difflib.get_close_matches(kind, KINDS, n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownComponentError(f"Unknown component kind '{kind}'.{hint} Kinds: {', '.join(KINDS)}.")
    return kind


def _target_str(entry: Entry) -> str:
    return entry.target if isinstance(entry.target, str) else getattr(entry.target, "__qualname__", repr(entry.target))
