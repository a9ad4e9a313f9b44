"""Typed model configurations: frozen dataclasses read from dicts, with no silent extras.

Every port in :mod:`sce_jax.models` describes its architecture by a frozen dataclass whose
field names follow the original's ``config.json`` (diffusers) or constructor (torchvision).
:func:`config_from_dict` builds one from a dict and refuses unknown keys by name, so a typo or
a config of another model class fails before any weight is read.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A model configuration that cannot be honoured (unknown key, unsupported value)."""


def config_from_dict(cls: type[T], values: Mapping[str, Any], *, what: str,
                     ignore: tuple[str, ...] = ()) -> T:
    """``cls(**values)`` with JSON lists turned into tuples; unknown keys raise ConfigError.

    Args:
      cls: a frozen dataclass type.
      values: the configuration, e.g. a parsed diffusers ``config.json``.
      what: a name for messages ("AutoencoderKL config in /path/config.json").
      ignore: keys that may be present but carry nothing for this port (such as diffusers'
        ``_class_name`` or ``_diffusers_version``); keys starting with ``_`` are always ignored.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(k for k in values if k not in names and k not in ignore and not k.startswith("_"))
    if unknown:
        raise ConfigError(f"{what}: unknown key(s) {unknown}; known keys are {sorted(names)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in names}
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field is missing
        raise ConfigError(f"{what}: {e}") from None


def config_to_dict(config: Any) -> dict[str, Any]:
    """The JSON-ready dict of a config dataclass (tuples become lists)."""
    out = {}
    for f in dataclasses.fields(config):
        v = getattr(config, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out
