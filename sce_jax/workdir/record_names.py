"""Class names and the goal in words for a manifest record (which holds class indices).

A record of ``manifest.jsonl`` says ``target: 1, target_kind: "other"``; what was asked is
"leave Trouser": with ``target_kind`` "other" the target is the class to *leave* (the
prediction, by default) and ``prob_target_*`` is p(not that class); with "class" it is the
class to *reach*; with "flip" the attribute whose decision is flipped. :func:`named_fields`
adds to a finished record::

    label_name, prediction_name, target_name, prediction_after_name   (with class names)
    goal: "leave Trouser" | "reach Dress" | "flip attribute Smiling" (+ " to 1" when the
          record holds the desired value ``target_value``)
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

INDEX_FIELDS = ("label", "prediction", "target", "prediction_after")
GOAL_VERBS = {"other": "leave", "class": "reach", "flip": "flip attribute"}


def _name(index: Any, class_names: Sequence[str] | None) -> str | None:
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        return None
    if class_names and index < len(class_names):
        return str(class_names[index])
    return None


def goal(record: Mapping[str, Any], class_names: Sequence[str] | None = None) -> str | None:
    """What the search was asked, in words ("leave Trouser"); None for a skipped input."""
    target = record.get("target")
    if record.get("status", "ok") != "ok" or not isinstance(target, int) or target < 0:
        return None
    kind = record.get("target_kind", "class")
    name = _name(target, class_names) or (str(target) if kind == "flip" else f"class {target}")
    text = f"{GOAL_VERBS.get(kind, kind)} {name}"
    if kind == "flip" and record.get("target_value") is not None:
        text += f" to {int(record['target_value'])}"
    return text


def named_fields(record: Mapping[str, Any], class_names: Sequence[str] | None = None
                 ) -> dict[str, Any]:
    """The fields to add to ``record``: ``<field>_name`` per class index it holds, ``goal``."""
    fields: dict[str, Any] = {}
    if class_names:
        for key in INDEX_FIELDS:
            if key in record:
                fields[f"{key}_name"] = _name(record[key], class_names)
    fields["goal"] = goal(record, class_names)
    return fields


def with_names(record: Mapping[str, Any], class_names: Sequence[str] | None = None
               ) -> dict[str, Any]:
    """``record`` with :func:`named_fields` added."""
    return {**record, **named_fields(record, class_names)}
