"""The allowed range of every numeric key of the run config, and the check against it.

A value outside its range can never work: ``classifier.std=0`` divides every image by zero
(every record non-finite), ``classifier.input_size=(0, 0)`` resizes the images to nothing,
``search.steps=3000000000`` does not fit the search's int32 step counter. Such a value is
refused before any work, naming the key, the value and the range: :func:`range_problems` lists
the run keys' problems, which :func:`sce_jax.runs.config.validate_run_config` reports with the
config's other problems (:class:`~sce_jax.runs.config.RunConfigError`, before the workdir is
touched).

Where the ranges are written:

- the run keys: :data:`RUN_RANGES`, a :class:`KeyRange` each (the bounds of the value, or of
  each value of a tuple key; how many values a tuple holds; or the few values allowed);
- the ``search.*`` keys: with each key's declaration in :mod:`sce_jax.search.config` (its
  :class:`~sce_jax.search.config.Number` check), so the API's search config refuses the same
  values; :func:`numeric_ranges` reads them from there, so that it lists every numeric key.

The bounds that are not the keys' meaning (a count >= 1, a probability in [0, 1]):

- counts (steps, sizes, batch rows, slots, example ids, classes) are at most 2**31 - 1
  (:data:`~sce_jax.search.config.INT32_MAX`): the search's step counters, example ids, targets
  and loop bounds are int32;
- floats are at most what float32 holds (3.4e38 in size): the search computes in float32,
  where a larger value is infinite; NaN and infinities are refused everywhere;
- image sides are at most :data:`SIDE_MAX` pixels, and blur, border and margin widths at most
  :data:`~sce_jax.search.config.PIXELS_MAX`: beyond, no search fits in a device's memory (the
  memory check refuses what is in range but too large for this device, also before any work).

``--print_config`` shows each key's range beside its comment (:mod:`sce_jax.runs.config_doc`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from sce_jax.search.config import Number, number, number_checks

SIDE_MAX = 65536  # pixels of an image side (data.image_size, classifier.input_size)


@dataclasses.dataclass(frozen=True)
class KeyRange:
    """What a numeric key may hold.

    ``each`` bounds the value (of each value, for a tuple key); ``lengths`` the number of values
    a tuple key holds (None: one number, not a tuple); ``per_channel``: a tuple of 1 value or
    one per channel of the classifier's input; ``values``: the only values allowed.
    """

    each: Number
    lengths: tuple[int, ...] | None = None
    per_channel: bool = False
    values: tuple[int, ...] | None = None

    def describe(self) -> str:
        """The range in words, as ``--print_config`` and the errors say it."""
        if self.values is not None:
            *first, last = (str(v) for v in self.values)
            return f"{', '.join(first)} or {last}" if first else last
        each = self.each.bounds() or "finite"
        if self.per_channel:
            return f"1 value or one per channel, each {each}"
        if self.lengths is not None:
            counts = " or ".join("()" if n == 0 else f"{n} values" for n in self.lengths)
            return f"{counts}, each {each}"
        return each

    def problem(self, value: Any, channels: int | None = None) -> str | None:
        """What is wrong with ``value`` (``"must be ..."``); None when it is in range.

        ``channels``: the classifier's input channels, for a ``per_channel`` key.
        """
        if self.values is not None:
            if isinstance(value, bool) or value not in self.values:
                return f"must be {self.describe()}"
            return None
        if self.lengths is None and not self.per_channel:
            return self.each.problem(value)
        if not isinstance(value, (tuple, list)):
            return f"must be a tuple: {self.describe()}"
        lengths = self.lengths if not self.per_channel else tuple(sorted({1, channels or 1}))
        if len(value) not in lengths:
            takes = f" (the classifier's input has {channels or 1})" if self.per_channel else ""
            return f"must be {self.describe()}{takes}; it holds {len(value)}"
        for i, item in enumerate(value):
            problem = self.each.problem(item)
            if problem:
                return f"value {i} ({item!r}) {problem}"
        return None


# The run keys (search.*: declared in sce_jax.search.config). A numeric key added to
# base_run_config gets its line here (tests/runs/test_config_ranges.py fails without it).
RUN_RANGES: dict[str, KeyRange] = {
    "data.image_size": KeyRange(number(1, SIDE_MAX, integer=True), lengths=(2,)),
    "data.channels": KeyRange(number(1, 3, integer=True), values=(1, 3)),
    "data.limit": KeyRange(number(0, integer=True)),                    # 0: all examples
    "classifier.input_size": KeyRange(number(1, SIDE_MAX, integer=True), lengths=(0, 2)),
    "classifier.channels": KeyRange(number(0, 3, integer=True), values=(0, 1, 3)),  # 0: the data's
    "classifier.mean": KeyRange(Number(None, None), per_channel=True),
    "classifier.std": KeyRange(number(0.0, above=True), per_channel=True),
    "targets.class_index": KeyRange(number(-1, integer=True)),         # -1: none
    "batch_size": KeyRange(number(1, integer=True)),
    "slots": KeyRange(number(0, integer=True)),                        # 0: a batch's searches
    "chunk_steps": KeyRange(number(0, integer=True)),                  # 0: from mask.period
    "max_memory_gb": KeyRange(number(0.0)),                            # 0: the device's memory
    "output.report_max_examples": KeyRange(number(0, integer=True)),
}


def numeric_ranges() -> dict[str, KeyRange]:
    """Every numeric key of the run config -> its range: :data:`RUN_RANGES` and the
    ``search.*`` keys' checks (:func:`sce_jax.search.config.number_checks`)."""
    ranges = dict(RUN_RANGES)
    ranges.update({f"search.{k}": KeyRange(check) for k, check in number_checks().items()})
    return ranges


def _get(config: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = config
    for part in dotted.split("."):
        if not hasattr(node, "keys") or part not in node.keys():
            return False, None
        node = node[part]
    return True, node


def _shown(value: Any) -> str:
    if isinstance(value, list):
        value = tuple(value)
    return repr(value)


def range_problems(config: Mapping[str, Any]) -> list[str]:
    """``"key=value: must be ..."`` for each run key of ``config`` outside its range.

    The ``search.*`` keys are checked by :func:`sce_jax.search.config.settings_from_config`.
    A key the config does not hold is not checked (ml_collections refuses unknown keys).
    """
    problems = []
    channels = None
    for key in ("classifier.channels", "data.channels"):  # the classifier's input channels
        found, value = _get(config, key)
        if found and isinstance(value, int) and value in (1, 3):
            channels = value
            break
    for key, allowed in RUN_RANGES.items():
        found, value = _get(config, key)
        if not found:
            continue
        problem = allowed.problem(value, channels)
        if problem:
            problems.append(f"{key}={_shown(value)}: {problem}")
    return problems
