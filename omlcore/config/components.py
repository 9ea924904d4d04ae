"""``{name, args}`` components: checked against the registry before anything is built, then built with their path.

This is omlcore's one resolver: every ``{name, args}`` spec, from a config file or from Python
(:func:`resolve`), is turned into an object here; components receive objects.

Checking imports a component's module (to read its signature) but builds nothing: unknown names (with the
closest known ones), unavailable frameworks, wrong argument names and values of the wrong type are reported
with the config path of the key at fault. An argument whose value is itself ``{name: ..., args: ...}`` is a
nested component (``loss.args.miner``, ``extractor.args.extractor``); its kind comes from the argument's name
(:data:`NESTED_KINDS`) or, failing that, from the one kind that registers the name.
"""

from __future__ import annotations

import collections.abc
import difflib
import inspect
import os
import sys
import types
import typing
from collections.abc import Callable, Collection, Mapping
from typing import Any

from omlcore.config.errors import ConfigError
from omlcore.errors import OmlcoreError
from omlcore.plugins import get_registry
from omlcore.registry import KINDS, Registry

__all__ = [
    "INJECTED",
    "NESTED_KINDS",
    "PROVIDED",
    "Spec",
    "accepts",
    "build_component",
    "check_component",
    "is_component",
    "resolve",
]

#: Argument name -> kind of a nested component.
NESTED_KINDS: dict[str, str] = {
    "miner": "miner",
    "loss": "loss",
    "extractor": "extractor",
    "knn_backend": "knn_backend",
    "transform": "transform",
    "sampler": "sampler",
    "metric": "metric",
}
#: Kind -> the leading positional arguments the pipelines pass (not in the config).
INJECTED: dict[str, tuple[str, ...]] = {
    "sampler": ("labels",),
    "optimizer": ("params",),
    "scheduler": ("optimizer",),
    "logger": ("run_dir",),
}
#: Kind -> keyword arguments the pipelines pass when the component takes them (``label2category`` from the CSV).
PROVIDED: dict[str, tuple[str, ...]] = {"sampler": ("label2category",)}


def is_component(value: Any) -> bool:
    """``{name: <str>, args: ...}`` (``args`` optional, nothing else)."""
    return isinstance(value, Mapping) and isinstance(value.get("name"), str) and set(value) <= {"name", "args"}


def _nested_kind(registry: Registry, argument: str, value: Any) -> str | None:
    if not is_component(value):
        return None
    if argument in NESTED_KINDS:
        return NESTED_KINDS[argument]
    kinds = [kind for kind in KINDS if (kind, value["name"]) in registry]
    return kinds[0] if len(kinds) == 1 else None


def _args(node: Mapping[str, Any], path: str, source: str | None) -> dict[str, Any]:
    args = node.get("args")
    if args is None:
        return {}
    if not isinstance(args, Mapping):
        raise ConfigError(f"{path}.args", f"must be a mapping of argument names to values, got {args!r}", source)
    bad = [key for key in args if not isinstance(key, str)]
    if bad:
        raise ConfigError(f"{path}.args", f"argument names must be strings, got {bad!r}", source)
    return dict(args)


def check_component(
    kind: str,
    node: Any,
    path: str,
    *,
    source: str | None = None,
    registry: Registry | None = None,
    given: Collection[str] = (),
) -> None:
    """Check ``node`` as a ``kind`` component at config ``path`` (recursively); raise :class:`ConfigError`.

    ``given``: keyword arguments the caller passes besides the spec's ``args`` (not reported as missing).
    """
    registry = registry or get_registry()
    a_kind = f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"
    if not isinstance(node, Mapping) or "name" not in node:
        raise ConfigError(path, f"{a_kind} is {{name: <registered {kind}>, args: {{...}}}}, got {node!r}", source)
    unknown = sorted(map(str, set(node) - {"name", "args"}))
    if unknown:
        raise ConfigError(f"{path}.{unknown[0]}", f"unknown key; {a_kind} has only 'name' and 'args'", source)
    name = node["name"]
    if not isinstance(name, str):
        raise ConfigError(f"{path}.name", f"must be the name of a registered {kind}, got {name!r}", source)
    try:
        entry = registry.get(kind, name)
    except OmlcoreError as error:
        raise ConfigError(f"{path}.name", str(error), source) from None
    if not entry.available:
        raise ConfigError(f"{path}.name", f"{entry.describe()} {entry.unavailable_reason}", source)
    args = _args(node, path, source)
    try:
        factory = entry.load()
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"{path}.name", f"{entry.describe()} cannot be loaded: {error}", source) from None
    _check_arguments(factory, kind, name, args, path, source, given)
    for argument, value in args.items():
        nested = _nested_kind(registry, argument, value)
        if nested is not None:
            check_component(nested, value, f"{path}.args.{argument}", source=source, registry=registry)


def _parameters(factory: Callable[..., Any]) -> tuple[dict[str, inspect.Parameter], bool] | None:
    """The keyword-settable parameters and whether ``**kwargs`` is accepted; None without a signature."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return None
    settable = {
        name: p
        for name, p in signature.parameters.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    return settable, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())


def _check_arguments(
    factory: Callable[..., Any],
    kind: str,
    name: str,
    args: Mapping[str, Any],
    path: str,
    source: str | None,
    given: Collection[str] = (),
) -> None:
    found = _parameters(factory)
    if found is None:
        return
    parameters, takes_any = found
    injected = INJECTED.get(kind, ())
    provided = PROVIDED.get(kind, ())
    accepted = [p for p in list(parameters)[len(injected) :] if p != "self" and p not in provided]
    for argument in args:
        if (argument in injected and argument in list(parameters)[: len(injected)]) or argument in provided:
            raise ConfigError(
                f"{path}.args.{argument}", f"the pipeline passes {argument!r} to a {kind}; remove it", source
            )
        if argument not in parameters and not takes_any:
            close = difflib.get_close_matches(argument, accepted, n=3, cutoff=0.5)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise ConfigError(
                f"{path}.args.{argument}",
                f"{kind} '{name}' takes no argument '{argument}'.{hint} Accepted: {', '.join(accepted) or '(none)'}",
                source,
            )
    missing = [
        p for p in accepted if parameters[p].default is inspect.Parameter.empty and p not in args and p not in given
    ]
    if missing:
        raise ConfigError(f"{path}.args", f"{kind} '{name}' needs the argument(s) {', '.join(missing)}", source)
    hints = _type_hints(factory, parameters)
    for argument, value in args.items():
        if argument not in hints or is_component(value):
            continue
        hint = hints[argument]
        if _matches(value, hint) is False:
            raise ConfigError(
                f"{path}.args.{argument}",
                f"{kind} '{name}' expects {_describe(hint)}, got {type(value).__name__} {value!r}",
                source,
            )


def _type_hints(factory: Callable[..., Any], parameters: Mapping[str, inspect.Parameter]) -> dict[str, Any]:
    """The parameters' annotations that resolve, each evaluated on its own by :func:`typing.get_type_hints` in the
    namespace of the factory's module (string annotations of postponed evaluation included). An annotation that does
    not resolve at run time (it names a ``TYPE_CHECKING``-only import) is left out: that parameter is not checked."""
    function = factory.__init__ if isinstance(factory, type) else factory  # type: ignore[misc]
    module = sys.modules.get(getattr(function, "__module__", "") or "")
    namespace = vars(module) if module is not None else {}
    resolved: dict[str, Any] = {}
    for name, parameter in parameters.items():
        if parameter.annotation is inspect.Parameter.empty:
            continue
        try:
            resolved[name] = typing.get_type_hints(_Annotated(name, parameter.annotation), namespace)[name]
        except (NameError, AttributeError, TypeError, SyntaxError):  # a TYPE_CHECKING-only name, or no type at all
            continue
    return resolved


class _Annotated:
    """One annotation as an object's ``__annotations__``: what :func:`typing.get_type_hints` evaluates."""

    def __init__(self, name: str, annotation: Any) -> None:
        self.__annotations__ = {name: annotation}


_SEQUENCES = (list, tuple, collections.abc.Sequence, collections.abc.Iterable, collections.abc.Collection, set)
_MAPPINGS = (dict, collections.abc.Mapping)


def _matches(value: Any, hint: Any) -> bool | None:
    """Whether a YAML ``value`` fits ``hint``: True, False, or None when the hint is beyond this check."""
    if hint is Any or hint is object:
        return True
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        outcomes = [_matches(value, arg) for arg in args]
        return True if True in outcomes else (None if None in outcomes else False)
    if origin is typing.Literal:
        return value in args
    if hint is type(None) or hint is None:
        return value is None
    if getattr(hint, "__module__", None) == "torch" and getattr(hint, "__name__", None) == "Tensor":
        return False  # YAML never makes a tensor: `lr: float | Tensor` takes a float (checking imports no torch)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is os.PathLike:
        return isinstance(value, str) or None
    if origin in _SEQUENCES or hint in _SEQUENCES:
        if not isinstance(value, list | tuple):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                return False
            outcomes = [_matches(item, arg) for item, arg in zip(value, args, strict=True)]
        else:
            outcomes = [_matches(item, args[0]) for item in value] if args else []
        return False not in outcomes
    if origin in _MAPPINGS or hint in _MAPPINGS:
        return isinstance(value, Mapping)
    return None


def _describe(hint: Any) -> str:
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "").replace("collections.abc.", "").replace("NoneType", "None")


def accepts(kind: str, name: str, argument: str, registry: Registry | None = None) -> bool:
    """Whether component ``name`` of ``kind`` takes a keyword argument ``argument``."""
    found = _parameters((registry or get_registry()).load(kind, name))
    return found is not None and (argument in found[0] or found[1])


def build_component(
    kind: str,
    node: Mapping[str, Any],
    path: str,
    *injected: Any,
    source: str | None = None,
    registry: Registry | None = None,
    **extra: Any,
) -> Any:
    """Build a checked ``kind`` component: nested components first, then ``factory(*injected, **args, **extra)``.

    Errors raised by the factory are re-raised as :class:`ConfigError` naming ``path``.
    """
    registry = registry or get_registry()
    args = _args(node, path, source)
    for argument, value in args.items():
        nested = _nested_kind(registry, argument, value)
        if nested is not None:
            args[argument] = build_component(nested, value, f"{path}.args.{argument}", source=source, registry=registry)
    name = node["name"]
    try:
        return registry.get(kind, name).build(*injected, **args, **extra)
    except ConfigError:
        raise
    except (OmlcoreError, TypeError, ValueError, KeyError) as error:
        raise ConfigError(path, f"{kind} '{name}' could not be built: {error}", source) from error


#: What :func:`resolve` accepts for a component: the object itself, a registered name, or ``{name, args}``.
Spec = Any


def resolve(kind: str, spec: Spec, *injected: Any, path: str | None = None, **extra: Any) -> Any:
    """The ``kind`` component ``spec`` stands for: a registered name or a ``{name: ..., args: {...}}`` spec (nested
    specs included) is built by :func:`build_component`; anything else is already the object and is returned as is.

    >>> resolve("miner", {"name": "hard_triplets"})
    HardTripletsMiner()

    Args:
        kind: the component kind (``"miner"``, ``"extractor"`` ...).
        spec: the object, its registered name, or its spec.
        injected: leading positional arguments for the factory (``params`` of an optimizer ...).
        path: the name of the spec in errors (default: ``kind``).
        extra: keyword arguments for the factory, added to the spec's ``args``.

    Raises:
        ConfigError: an unknown name, wrong arguments or a failing factory, naming ``path``.
    """
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, Mapping):
        return spec
    where = path or kind
    check_component(kind, spec, where, given=tuple(extra))
    return build_component(kind, spec, where, *injected, **extra)
