"""Classes by name or by index: ``"Dress"``, ``"dress"``, ``"3"`` and ``3`` all name class 3.

Wherever a target class (or attribute) is accepted as an index it may also be given by the
name the classifier's ``class_names`` list gives it: ``--config.targets.class_name=Dress``, the
``target`` column of a CSV source, ``Explainer.explain(images, targets=["Dress", ...])``.
A name is matched exactly first, then ignoring case; an unknown name is refused with the list
of names.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


class ClassNameError(ValueError):
    """A class given by a name the classifier does not have (the message lists the names)."""


def class_index(value: Any, class_names: Sequence[str] | None, *, what: str = "target") -> int:
    """The index of a class given by index (int or digit string) or by name.

    Range checks of indices are the caller's (the classifier knows its number of outputs).

    Raises:
      ClassNameError: ``value`` is a name that is not in ``class_names`` (or there are none).
    """
    if isinstance(value, (bool, np.bool_)):
        raise ClassNameError(f"{what} {value!r} is neither a class index nor a class name")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    names = tuple(str(n) for n in (class_names or ()))
    if text in names:
        return names.index(text)
    folded = [n.casefold() for n in names]
    if text.casefold() in folded and folded.count(text.casefold()) == 1:
        return folded.index(text.casefold())
    if not names:
        raise ClassNameError(f"{what} {text!r} is a name, but the classifier has no class names "
                             "(give class indices, or set the class names: "
                             "classifier.class_names / Classifier(class_names=...))")
    listed = ", ".join(f"{n} ({i})" for i, n in enumerate(names))
    raise ClassNameError(f"{what} {text!r} is not a class name; the classes are: {listed}")


def class_indices(values: Sequence[Any], class_names: Sequence[str] | None, *,
                  what: str = "target") -> np.ndarray:
    """:func:`class_index` of each value, as an int32 array."""
    return np.asarray([class_index(v, class_names, what=what) for v in values], np.int32)


def needs_names(values: Any) -> bool:
    """True when ``values`` (a sequence or array) holds a name, not only indices (or blanks)."""
    array = np.asarray(values, dtype=object).reshape(-1)
    return any(isinstance(v, (str, np.str_)) and str(v).strip()
               and not str(v).strip().lstrip("-").isdigit() for v in array)
