"""The Config API: YAML configs whose components are ``{name, args}`` resolved through the plugin registry.

- :func:`load_config`: read a YAML file (or a shipped config by name), apply ``key.sub=value`` overrides, check it
  against the schema (:data:`~omlcore.config.schema.OPTIONS`) and the registry, fill in defaults.
- :func:`build_component`: build a checked component (nested ones first), errors naming the config path.
- :func:`resolve`: the one resolver of ``{name, args}`` specs, for Python callers too (objects pass through).
- :class:`ConfigError`: every problem, with the dotted config path of the key at fault.

The keys are documented in ``docs/config.md``; the pipelines (:mod:`omlcore.pipelines`) run configs.
"""

from __future__ import annotations

from omlcore.config.components import Spec, accepts, build_component, check_component, is_component, resolve
from omlcore.config.errors import ConfigError
from omlcore.config.loading import (
    Config,
    apply_overrides,
    load_config,
    parse_override,
    resolve_config_path,
    validate_config,
)
from omlcore.config.schema import OPTIONS, PIPELINES, Option, Pipeline

__all__ = [
    "OPTIONS",
    "PIPELINES",
    "Config",
    "ConfigError",
    "Option",
    "Pipeline",
    "Spec",
    "accepts",
    "apply_overrides",
    "build_component",
    "check_component",
    "is_component",
    "load_config",
    "parse_override",
    "resolve",
    "resolve_config_path",
    "validate_config",
]
