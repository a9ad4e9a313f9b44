"""The resolved run config as text, each key with the comment that documents it.

``scripts/explain.py --print_config`` prints :func:`describe`: every ``--config.*`` key with
its value after the config file and the command-line overrides, and the comment written beside
the key where its default is set (:func:`sce_jax.runs.config.base_run_config` and each data
source's ``options()``; a comment on the lines right after a key continues it), or, for
``search.*``, declared with the key (:func:`sce_jax.search.config.search_config_docs`). The
comments are read from those places, so the documentation has one place. A numeric key's
comment ends with its allowed range (``allowed: in [1, 2147483647]``), read from
:func:`sce_jax.runs.config_ranges.numeric_ranges`, the table the run is checked against.
"""

from __future__ import annotations

import inspect
import re
from typing import Any, Callable, Mapping

import ml_collections

from sce_jax.data.sources import DATA_SOURCES
from sce_jax.runs.config import base_run_config
from sce_jax.runs.config_ranges import numeric_ranges
from sce_jax.search.config import search_config_docs

COMMENT_COLUMN = 48  # comments start here unless the key and value are longer
_ASSIGNMENT = re.compile(r"^\s*c\.([A-Za-z_][\w.]*)\s*=\s*(.*)$")
_CONTINUATION = re.compile(r"^\s*#\s?(.*)$")


def _comment_of(code: str) -> str | None:
    """The ``# comment`` of one line of code, ignoring ``#`` inside string literals."""
    quote = None
    for i, ch in enumerate(code):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            return code[i + 1:].strip()
    return None


def comments_from_source(fn: Callable, prefix: str = "") -> dict[str, str]:
    """``{key: comment}`` of the ``c.<key> = value  # comment`` lines of ``fn``'s source."""
    comments: dict[str, str] = {}
    sections: dict[str, str] = {}  # keys without their own comment -> the section comment
    last, indent = None, 0
    section, scope = None, None  # a code-level comment line heads the keys after it
    for line in inspect.getsource(fn).splitlines():
        match = _ASSIGNMENT.match(line)
        if match:
            key, value = prefix + match.group(1), match.group(2)
            comment = _comment_of(value)
            if section is not None:
                if scope is None:
                    scope = key if "ConfigDict(" in value else key.rpartition(".")[0]
                if key == scope or key.rpartition(".")[0] == scope or key.startswith(scope + "."):
                    sections[key] = section
                else:
                    section = scope = None
            last = key if comment else None
            indent = len(line) - len(line.lstrip())
            if comment:
                comments[key] = comment
            continue
        continuation = _CONTINUATION.match(line)
        depth = len(line) - len(line.lstrip())
        if continuation and last is not None and depth > indent:
            comments[last] += " " + continuation.group(1).strip()  # continues the key above
        elif continuation and last is None or (continuation and depth <= indent):
            section, scope, last = continuation.group(1).strip(), None, None
        else:
            last = None
    for key, text in sections.items():
        comments.setdefault(key, f"({text})")
    return comments


def run_config_comments() -> dict[str, str]:
    """The documented keys of the run config (``search.*`` included)."""
    comments = comments_from_source(base_run_config)
    comments.update({f"search.{k}": v for k, v in search_config_docs().items() if v})
    for name, source in DATA_SOURCES.items():  # data.<format>.*: in the source's options()
        comments.update(comments_from_source(source.options, prefix=f"data.{name}."))
    return comments


def flatten(config: ml_collections.ConfigDict | Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a.b.c": value}`` of a nested config, in insertion order."""
    items = config.items() if hasattr(config, "items") else dict(config).items()
    flat: dict[str, Any] = {}
    for key, value in items:
        if isinstance(value, (ml_collections.ConfigDict, dict)):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def describe(config: ml_collections.ConfigDict, *, flag: str = "config") -> str:
    """One line per key: ``--config.key=value  # comment`` (the form an override takes)."""
    comments = run_config_comments()
    ranges = numeric_ranges()
    flat = flatten(config)
    rendered = {k: _render(v) for k, v in flat.items()}
    width = min(COMMENT_COLUMN, max((len(f"--{flag}.{k}={v}") for k, v in rendered.items()), default=0))
    lines = []
    for key, value in rendered.items():
        text = f"--{flag}.{key}={value}"
        comment = comments.get(key)
        if key in ranges:
            comment = (f"{comment}; " if comment else "") + f"allowed: {ranges[key].describe()}"
        lines.append(f"{text:<{width}}  # {comment}" if comment else text)
    return "\n".join(lines)


def _render(value: Any) -> str:
    if isinstance(value, str):
        return repr(value) if (not value or any(c.isspace() for c in value)) else value
    if isinstance(value, (tuple, list)):
        return "(" + ",".join(_render(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return str(value)
