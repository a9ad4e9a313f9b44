"""A registry: the names a config key may take, each bound to the thing it names.

Every extension point of a run (generator kinds, data sources, target kinds, diffusers priors)
is one :class:`Registry`. An entry is either the thing itself or a ``"module:attribute"``
string, imported the first time the entry is used, so that a registry line costs no import
(a config is validated without loading PyTorch-sized model modules). Looking up a name that is
not registered raises :class:`UnknownNameError` naming the config key and the known names, so a
typo in a config says what it could have been.

Adding an entry is one line in the registry's table (see WORKSPACE.md, "Extending").
"""

from __future__ import annotations

import importlib
from typing import Any, Generic, Iterator, Mapping, TypeVar

T = TypeVar("T")


class UnknownNameError(ValueError):
    """A name that is not in a registry (the message lists the known names)."""


def _resolve(entry: Any) -> Any:
    """The thing an entry names: a ``"module:attribute"`` string is imported, anything else
    is returned as it is."""
    if not isinstance(entry, str):
        return entry
    module, _, attribute = entry.partition(":")
    value = importlib.import_module(module)
    for part in attribute.split(".") if attribute else ():
        value = getattr(value, part)
    return value


class Registry(Mapping[str, T], Generic[T]):
    """An ordered, read-only ``name -> thing`` table for the config key ``key``.

    Args:
      key: the config key whose values are this registry's names (``"generator.kind"``);
        error messages name it.
      entries: ``name -> thing`` or ``name -> "module:attribute"`` (imported on first use),
        in the order :meth:`names` lists them.
    """

    def __init__(self, key: str, entries: Mapping[str, Any]):
        self.key = key
        self._entries = dict(entries)
        self._resolved: dict[str, T] = {}

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._entries)

    def problem(self, name: str) -> str | None:
        """None when ``name`` is registered, else the message :meth:`get` would raise."""
        if name in self._entries:
            return None
        return f"unknown {self.key} {name!r}; known: {', '.join(self._entries)}"

    def get(self, name: str) -> T:  # type: ignore[override]
        """The thing registered as ``name`` (imported on first use).

        Raises:
          UnknownNameError: ``name`` is not registered (the message lists the known names).
        """
        problem = self.problem(name)
        if problem:
            raise UnknownNameError(problem)
        if name not in self._resolved:
            self._resolved[name] = _resolve(self._entries[name])
        return self._resolved[name]

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.key!r}, {list(self._entries)})"
