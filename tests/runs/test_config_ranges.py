"""Every numeric key of the run config has a range, and the check holds it at both ends.

The sweep sets each key of :func:`sce_jax.runs.config_ranges.numeric_ranges` to values just
outside its range (refused, naming the key, the value and the range) and just inside
(accepted), in process, on the config check alone: no model, no data, no search.
"""

import math

import ml_collections
import pytest

from sce_jax.runs import config_doc
from sce_jax.runs.config import RunConfigError, base_run_config, validate_run_config
from sce_jax.runs.config_ranges import RUN_RANGES, KeyRange, numeric_ranges
from sce_jax.search.config import FLOAT32_MAX, SearchConfigError, settings_from_config


def _valid_config() -> ml_collections.ConfigDict:
    c = base_run_config()
    c.data.source = "images/"          # the check reads no file
    c.generator.checkpoint = "ae"
    c.classifier.checkpoint = "clf"
    return c


def _set(config, dotted: str, value) -> None:
    *path, last = dotted.split(".")
    node = config
    for part in path:
        node = node[part]
    node[last] = value


def _problem(config) -> str | None:
    """The message the run's checks give for ``config``, or None when it is accepted."""
    try:
        validate_run_config(config)
        settings_from_config(config.search)
    except (RunConfigError, SearchConfigError) as e:
        return str(e)
    return None


def _edges(allowed: KeyRange) -> tuple[list, list]:
    """(values just outside the range of one value, values just inside it)."""
    check = allowed.each
    if allowed.values is not None:
        low, high = min(allowed.values), max(allowed.values)
        gaps = [v for v in range(low, high) if v not in allowed.values]
        return [low - 1, high + 1, *gaps], list(allowed.values)
    outside, inside = [], []
    if check.integer:
        if check.minimum is not None:
            low = int(check.minimum)
            outside.append(low if check.above else low - 1)
            inside.append(low + 1 if check.above else low)
        high = int(check.maximum)  # every whole-number key has a maximum (INT32_MAX at most)
        outside.append(high if check.below else high + 1)
        inside.append(high - 1 if check.below else high)
        return outside, inside
    if check.minimum is not None:
        low = float(check.minimum)
        outside.append(low if check.above else math.nextafter(low, -math.inf))
        inside.append(math.nextafter(low, math.inf) if check.above else low)
    high = FLOAT32_MAX if check.maximum is None else float(check.maximum)
    outside.append(high if check.below else math.nextafter(high, math.inf))
    inside.append(math.nextafter(high, -math.inf) if check.below else high)
    return outside + [math.nan, math.inf, -math.inf], inside


def _as_key_value(allowed: KeyRange, value, *, channels: int = 1):
    """``value`` as the key holds it: a number, or a tuple of the right length."""
    if allowed.per_channel:
        return (value,) * channels
    if allowed.lengths is not None:
        return (value, 16)
    return value


def _range_text(allowed: KeyRange) -> str:
    """What the error says of the range: the allowed values, or one value's bounds."""
    return allowed.describe() if allowed.values is not None else allowed.each.bounds()


def test_every_numeric_key_has_a_range():
    config = base_run_config()
    flat = config_doc.flatten(config)
    numeric = {k for k, v in flat.items()
               if (isinstance(v, (int, float)) and not isinstance(v, bool))
               or (isinstance(v, tuple) and v and all(isinstance(x, (int, float)) for x in v))}
    ranges = numeric_ranges()
    assert sorted(numeric - set(ranges)) == []
    assert sorted(set(ranges) - set(flat)) == []  # no range for a key that does not exist
    assert "classifier.input_size" in ranges      # numeric, though its default is ()
    assert _problem(_valid_config()) is None  # the defaults are in range


@pytest.mark.parametrize("key", sorted(numeric_ranges()))
def test_just_outside_is_refused_and_just_inside_is_accepted(key):
    allowed = numeric_ranges()[key]
    outside, inside = _edges(allowed)
    for value in inside:
        config = _valid_config()
        _set(config, key, _as_key_value(allowed, value))
        assert _problem(config) is None, (key, value)
    for value in outside:
        config = _valid_config()
        _set(config, key, _as_key_value(allowed, value))
        problem = _problem(config)
        assert problem is not None, (key, value)
        short = key.removeprefix("search.")
        named = f"search config {short}=" if key.startswith("search.") else f"{key}="
        assert named in problem and repr(value) in problem, problem
        assert _range_text(allowed) in problem, problem


def test_per_channel_and_tuple_keys_check_their_length():
    for key in ("classifier.mean", "classifier.std"):
        config = _valid_config()
        config.data.channels = 3
        _set(config, key, (1.0, 1.0, 1.0))
        assert _problem(config) is None
        _set(config, key, (1.0, 1.0))
        assert f"{key}=(1.0, 1.0): must be 1 value or one per channel" in _problem(config)
        config.classifier.channels = 1  # the classifier's channels, not the data's, count
        assert "the classifier's input has 1); it holds 2" in _problem(config)
    config = _valid_config()
    config.data.image_size = (16, 16, 16)
    assert "data.image_size=(16, 16, 16): must be 2 values" in _problem(config)
    config = _valid_config()
    config.classifier.input_size = ()
    assert _problem(config) is None
    config.classifier.input_size = (16,)
    assert "classifier.input_size=(16,): must be () or 2 values" in _problem(config)


def test_print_config_shows_each_range():
    text = config_doc.describe(_valid_config())
    lines = {line.split("=")[0].removeprefix("--config."): line for line in text.splitlines()}
    for key, allowed in numeric_ranges().items():
        assert f"allowed: {allowed.describe()}" in lines[key], lines[key]
    assert "allowed: in [1, 2147483647]" in lines["search.steps"]
    assert "allowed: 1 value or one per channel, each > 0" in lines["classifier.std"]
    assert set(RUN_RANGES) <= set(lines)
