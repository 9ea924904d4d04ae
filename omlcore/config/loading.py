"""Reading a config (a YAML file or a shipped name), command-line overrides, validation against the schema.

>>> config = load_config("glyphs", ["runner.args.epochs=2", "runner.name=lightning"])  # doctest: +SKIP
>>> config["runner"]  # doctest: +SKIP
{'name': 'lightning', 'args': {'epochs': 2}}
"""

from __future__ import annotations

import copy
import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from omlcore.config.components import check_component
from omlcore.config.errors import ConfigError
from omlcore.config.schema import OPTIONS, PIPELINES, SECTIONS, Option, Pipeline
from omlcore.recipes import recipe_names, recipe_path

__all__ = ["Config", "apply_overrides", "load_config", "parse_override", "resolve_config_path", "validate_config"]

OVERRIDES_SOURCE = "overrides"


@dataclass
class Config:
    """A validated config with every default filled in.

    Attributes:
        data: the resolved config (plain YAML data).
        name: the config's name (the file's stem, or ``"config"``), used in run folder names.
        source: the file it came from, if any.
    """

    data: dict[str, Any]
    name: str = "config"
    source: Path | None = None
    overrides: list[str] = field(default_factory=list)

    def __getitem__(self, key: str) -> Any:
        """``config["dataset.csv"]`` or ``config["dataset"]``."""
        node: Any = self.data
        for part in key.split("."):
            node = node[part]
        return node

    def to_yaml(self) -> str:
        """The resolved config as YAML (what a run writes to its folder)."""
        return yaml.safe_dump(self.data, sort_keys=False, allow_unicode=True)


def resolve_config_path(config: str | os.PathLike[str]) -> Path:
    """A YAML file, or the name of a config shipped in :mod:`omlcore.recipes` (``"glyphs"``)."""
    path = Path(config)
    if path.is_file():
        return path
    if str(config) in recipe_names():
        return recipe_path(str(config))
    shipped = ", ".join(recipe_names())
    raise ConfigError("", f"no config file '{config}', nor a shipped config of that name (shipped: {shipped})")


def _read(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError("", f"is not valid YAML: {error}", str(path)) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError("", f"must be a mapping of keys to values, got {type(loaded).__name__}", str(path))
    return loaded


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"loss.args.margin=0.3"`` -> ``(["loss", "args", "margin"], 0.3)``; the value is read as YAML."""
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not key.strip() or not all(parts) or any(" " in part for part in parts):
        raise ConfigError(
            key.strip(), f"bad override {text!r}: write key.sub=value, e.g. runner.args.epochs=3", OVERRIDES_SOURCE
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError(key, f"the value of override {text!r} is not valid YAML: {error}", OVERRIDES_SOURCE) from None
    return parts, value


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of ``data`` with each ``key.sub=value`` override set (missing mappings on the way are created)."""
    result = copy.deepcopy(dict(data))
    for text in overrides:
        parts, value = parse_override(text)
        node: dict[str, Any] = result
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                path = ".".join(parts[: depth + 1])
                raise ConfigError(
                    path,
                    f"override {text!r} goes inside {path}, which holds {child!r}, not a mapping",
                    OVERRIDES_SOURCE,
                )
            node = child
        node[parts[-1]] = value
    return result


def _type_names(option: Option) -> str:
    names = {int: "an integer", str: "a string", bool: "true or false", list: "a list", dict: "a mapping"}
    return " or ".join(names.get(t, "null") for t in option.types)


def _check_value(option: Option, value: Any, source: str | None) -> None:
    if (isinstance(value, bool) and bool not in option.types) or not isinstance(value, option.types):
        raise ConfigError(option.key, f"must be {_type_names(option)} ({option.doc}), got {value!r}", source)
    if option.choices is not None and value not in option.choices:
        shown = ", ".join("null" if c is None else str(c) for c in option.choices)
        raise ConfigError(option.key, f"must be one of {shown}, got {value!r}", source)


def _unknown_key(path: str, known: Sequence[str], source: str | None) -> ConfigError:
    leaf = path.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(leaf, known, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return ConfigError(path, f"unknown key.{hint} Known here: {', '.join(known)} (see docs/config.md)", source)


def validate_config(data: Mapping[str, Any], pipeline: Pipeline, source: str | None = None) -> dict[str, Any]:
    """Check ``data`` against the schema and return it with every default filled in.

    Components are checked against the registry (names, argument names and types, nested components); nothing
    is built. Raises :class:`ConfigError` naming the config path of the first problem.
    """
    if pipeline not in PIPELINES:
        raise ValueError(f"pipeline must be one of {PIPELINES}, got {pipeline!r}")
    top_level = list(dict.fromkeys(o.key.split(".")[0] for o in OPTIONS))
    for key in data:
        if key not in top_level:
            raise _unknown_key(str(key), top_level, source)
    resolved: dict[str, Any] = {}
    for section in SECTIONS:
        value = data.get(section)
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise ConfigError(section, f"must be a mapping, got {value!r}", source)
        children = [o.key.split(".", 1)[1] for o in OPTIONS if o.key.startswith(f"{section}.")]
        for key in value:
            if key not in children:
                raise _unknown_key(f"{section}.{key}", children, source)
    for option in OPTIONS:
        section, _, leaf = option.key.rpartition(".")
        container = (data.get(section) or {}) if section else data
        target = resolved.setdefault(section, {}) if section else resolved
        value = container.get(leaf, copy.deepcopy(option.default))
        if isinstance(value, Mapping) and "name" not in value and isinstance(option.default, Mapping):
            # {args: {...}} alone (e.g. from an override) adjusts the default component
            default_args = option.default.get("args") or {}
            value = {**value, "name": option.default["name"], "args": {**default_args, **(value.get("args") or {})}}
        if option.kind is not None and isinstance(value, list) and list in option.types:  # a chain of components
            for position, item in enumerate(value):
                check_component(option.kind, item, f"{option.key}[{position}]", source=source)
            value = [{"name": item["name"], "args": dict(item.get("args") or {})} for item in value]
        elif option.kind is not None and value is not None:
            check_component(option.kind, value, option.key, source=source)
            value = {"name": value["name"], "args": dict(value.get("args") or {})}
        elif not (value is None and type(None) in option.types):
            _check_value(option, value, source)
        if value is None and pipeline in option.required:
            raise ConfigError(option.key, f"is required to {pipeline}: {option.doc}", source)
        target[leaf] = value
    dataset = resolved["dataset"]
    if dataset["builtin"] is not None and dataset["csv"] is not None:
        raise ConfigError("dataset", "set either dataset.builtin or dataset.csv, not both", source)
    # predict and index embed their own data when it is given; search embeds its queries
    own_data = pipeline in ("predict", "index")
    needs_data = resolved[pipeline]["data"] is None if own_data else pipeline != "search"
    if needs_data and dataset["builtin"] is None and dataset["csv"] is None:
        raise ConfigError(
            "dataset", f"is required to {pipeline}: set dataset.csv (a CSV in OML's format) or dataset.builtin", source
        )
    for key in ("dataset.batch_size", "visualization.top_k", "predict.top_k", "search.k"):
        section, leaf = key.split(".")
        if resolved[section][leaf] < 1:
            raise ConfigError(key, f"must be at least 1, got {resolved[section][leaf]}", source)
    formats = resolved["visualization"]["formats"]
    if formats is not None and (not formats or not set(formats) <= {"html", "png"}):
        raise ConfigError("visualization.formats", f"must list html and / or png, got {formats!r}", source)
    return resolved


def load_config(
    config: str | os.PathLike[str] | Mapping[str, Any],
    overrides: Sequence[str] = (),
    *,
    pipeline: Pipeline = "train",
) -> Config:
    """Read, override and validate a config for ``pipeline``.

    Args:
        config: a YAML file, the name of a shipped config (``"glyphs"``), or the config as a mapping.
        overrides: ``key.sub=value`` strings (values are YAML: ``3``, ``null``, ``[1, 5]``, ``{name: adam}``).
        pipeline: ``"train"``, ``"validate"`` or ``"predict"`` (decides which keys are required).

    Raises:
        ConfigError: naming the config path of the first problem, before anything heavy is built.
    """
    if isinstance(config, Mapping):
        data, name, path = dict(config), "config", None
    else:
        path = resolve_config_path(config)
        data, name = _read(path), path.stem
    source = str(path) if path is not None else None
    if overrides:
        data = apply_overrides(data, overrides)
        source = f"{source} + overrides" if source else OVERRIDES_SOURCE
    return Config(validate_config(data, pipeline, source), name, path, list(overrides))
