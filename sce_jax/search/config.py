"""Search configuration: a documented ml_collections default and its validated, static form.

Users edit a :class:`ml_collections.ConfigDict` (``default_search_config()``); the search runs
on :class:`SearchSettings`, a frozen (hashable) dataclass made from it by
:func:`settings_from_config`, which refuses unknown keys and out-of-range values by name.

Each key is written once: a field of the settings dataclasses, declared with :func:`key`
(default, check, the comment ``--print_config`` shows) or :func:`group` (a sub-config). The
ConfigDict, the validation and the documentation are all read from those declarations.

Where the defaults come from: temperature 3, two attempts, SGD with momentum 0.9 and a
blur-and-threshold mask follow SCE-LITE-HQ's public configs; the step size, noise scale,
proximity weights and mask threshold were chosen on the shipped Fashion-MNIST demo, and the
goal probability, hole filling and spot rejection on both shipped demos (docs/tuning.md,
"Tuning the defaults"; the README's ablation tables).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

import ml_collections
import numpy as np

OUTPUT_MODES = ("residual", "blend", "decoded")
SMOOTHING_SPACES = ("pixel", "latent", "none")
CLASS_LOSSES = ("ce", "logit")
OPTIMIZERS = ("sgd", "adam")


class SearchConfigError(ValueError):
    """A search config with an unknown key or an unusable value."""


Check = Callable[[str, Any], Any]   # (dotted name, given value) -> the value, or raises

INT32_MAX = 2 ** 31 - 1   # the step counters, example ids and loop bounds of the search are int32
FLOAT32_MAX = float(np.finfo(np.float32).max)  # the search computes in float32: beyond, inf
PIXELS_MAX = 4096          # blur, border and margin widths (pixels, latent cells): beyond any image


@dataclasses.dataclass(frozen=True)
class Number:
    """A check: a finite number in ``[minimum, maximum]``, with an excluded end where ``above``
    (``minimum`` excluded) or ``below`` (``maximum`` excluded); ``integer``: a whole number.

    A float must also be what float32 holds (``|value| <= FLOAT32_MAX``): the search computes
    in float32, where a larger value is infinite. :meth:`bounds` says the range in words, for
    the error and for ``--print_config``.
    """

    minimum: float | None = 0.0
    maximum: float | None = None
    integer: bool = False
    above: bool = False
    below: bool = False

    def bounds(self) -> str:
        """The range: ``">= 1"``, ``"> 0"``, ``"in [0, 1]"``, ``"in [1, 2147483647]"`` ..."""
        low, high = _written(self.minimum), _written(self.maximum)
        if low is not None and high is not None:
            return f"in {'(' if self.above else '['}{low}, {high}{')' if self.below else ']'}"
        if low is not None:
            return f"{'>' if self.above else '>='} {low}"
        if high is not None:
            return f"{'<' if self.below else '<='} {high}"
        return ""

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` (``"must be ..."``), or None when it is in range."""
        kind = "whole number" if self.integer else "number"
        bounds = (" " + self.bounds()).rstrip()
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            return f"must be a {kind}{bounds}"
        if not math.isfinite(value):
            return f"must be a finite {kind}{bounds}"
        if not self.integer and abs(value) > FLOAT32_MAX:
            return f"must be a finite number{bounds} (float32 holds up to {FLOAT32_MAX:g})"
        if self.integer and value != int(value):
            return f"must be a whole number{bounds}"
        low, high = self.minimum, self.maximum
        if low is not None and (value <= low if self.above else value < low):
            return f"must be{bounds}"
        if high is not None and (value >= high if self.below else value > high):
            return f"must be{bounds}"
        return None

    def __call__(self, name: str, value: Any) -> Any:
        problem = self.problem(value)
        if problem:
            raise SearchConfigError(f"search config {name}={value!r}: {problem}")
        return int(value) if self.integer else float(value)


def _written(bound: float | None) -> str | None:
    """A bound as the error shows it: whole numbers in full (2147483647), others as ``%g``."""
    if bound is None or isinstance(bound, int):
        return None if bound is None else str(bound)
    return str(int(bound)) if float(bound).is_integer() and abs(bound) < 1e16 else f"{bound:g}"


def number(minimum: float = 0.0, maximum: float | None = None, *, integer: bool = False,
           above: bool = False, below: bool = False) -> Number:
    """A finite number in ``[minimum, maximum]`` (see :class:`Number` for the excluded ends);
    a whole number at most :data:`INT32_MAX` when ``integer`` and no maximum is given."""
    if integer and maximum is None:
        maximum = INT32_MAX
    return Number(minimum, maximum, integer=integer, above=above, below=below)


def choice(*options: str) -> Check:
    """One of ``options``."""
    def check(name: str, value: Any) -> str:
        if not isinstance(value, str) or value not in options:
            raise SearchConfigError(f"search config {name}={value!r}: must be one of {options}")
        return value
    return check


def flag(name: str, value: Any) -> bool:
    """A bool (True/False; 0 and 1 are taken too)."""
    if value not in (True, False):
        raise SearchConfigError(f"search config {name}={value!r}: must be True or False")
    return bool(value)


def key(default: Any, check: Check, doc: str = "") -> Any:
    """A config key: its default, its check and its comment, as one dataclass field."""
    return dataclasses.field(default=default, metadata={"check": check, "doc": doc})


def group(settings: type, doc: str = "") -> Any:
    """A sub-config: the settings dataclass of its keys; ``doc`` heads keys without a comment."""
    return dataclasses.field(default_factory=settings, metadata={"group": settings, "doc": doc})


@dataclasses.dataclass(frozen=True)
class SmoothingSettings:
    space: str = key("pixel", choice(*SMOOTHING_SPACES),
                     '"pixel" (one decoder pass), "latent" (N decoder passes), "none"')
    num_samples: int = key(8, number(1, integer=True))
    sigma: float = key(0.05, number(0.0))
    chunk_size: int = key(0, number(0, integer=True),
                          "noise samples evaluated at once (0: all): bounds memory")


@dataclasses.dataclass(frozen=True)
class PriorSettings:
    enabled: bool = key(False, flag, "needs a prior (run config `prior.checkpoint`, or "
                                     "Explainer(prior=...))")
    strength: float = key(0.3, number(0.0, 1.0),
                          "noise level s in (0, 1]: how far the prior may move the edit")
    denoise_steps: int = key(4, number(1, integer=True), "Euler steps from t = s back to 0")
    shift: float = key(1.0, number(0.0, above=True), "schedule shift (SD3: 3.0); 1 = uniform steps")
    every: int = key(1, number(1, integer=True),
                     "recompute the prior's correction every n steps (kept between)")

    @property
    def active(self) -> bool:
        """Whether the search calls the prior at all (strength 0 is the search without it)."""
        return self.enabled and self.strength > 0


@dataclasses.dataclass(frozen=True)
class MaskSettings:
    enabled: bool = key(True, flag)
    warmup_steps: int = key(10, number(0, integer=True))
    period: int = key(5, number(1, integer=True))
    blur_sigma: float = key(1.5, number(0.0, PIXELS_MAX), "pixels; Gaussian blur of the change map")
    threshold: float = key(0.2, number(0.0, 1.0), "keep where blurred change / its max >= threshold")
    max_area: float = key(1.0, number(0.0, 1.0, above=True),
                          "at most this share of the image may change: the mask keeps the top of "
                          "the blurred change map (1: no cap)")
    dilation: int = key(1, number(0, PIXELS_MAX, integer=True),
                        "latent cells added around the mask")
    soft_border: float = key(1.0, number(0.0, PIXELS_MAX),
                             "pixels of soft border on the pixel mask (0: hard)")
    lock_margin: int = key(0, number(0, PIXELS_MAX, integer=True),
                           "pixels a successful attempt's change grows by when locked")
    fill_holes: bool = key(True, flag, "a mask that encloses pixels takes them in (an edit that "
                                       "rings a region may change its inside, e.g. recolour a "
                                       "whole square)")


@dataclasses.dataclass(frozen=True)
class StallSettings:
    window: int = key(40, number(0, integer=True),
                      "steps over which an attempt's progress is measured (0: the rule is off; "
                      "an attempt it ends reports \"stalled\")")
    min_rise: float = key(0.1, number(0.0),
                          "an attempt whose best log-odds of p(target) rose less than this over "
                          "the window ends (0.1: its odds up by less than 10%)")
    slack: float = key(2.0, number(0.0),
                       "late in the budget, an attempt ends if even slack x its pace over the "
                       "window would not reach the goal in the steps left")
    after: float = key(0.8, number(0.0, 1.0),
                       "share of the budget after which the pace counts (searches often rise "
                       "slowly, then quickly)")


OBJECTIVE = ("objective: cls(f(x_cf)/T, t) + l1 * mean|z - z0| + l2 * ||z - z0||_2 "
             "+ pixel_l1 * mean|x_cf - x|")
UPDATE = "gradient processing and update"


@dataclasses.dataclass(frozen=True)
class SearchSettings:
    """The static (hashable) form of the search config, used inside ``jax.jit``."""

    steps: int = key(100, number(1, integer=True), "step budget per attempt")
    attempts: int = key(2, number(1, integer=True), "K diverse counterfactuals per (image, target)")
    lock: bool = key(True, flag, "attempt k may not change what successful attempts < k changed "
                                 "(False: K independent attempts that differ only in their noise)")
    reject_background_spots: bool = key(
        True, flag, 'an attempt after the first whose change is a spot in empty background reports '
                    '"no second reason" (search/background_spots.py)')
    class_loss: str = key("ce", choice(*CLASS_LOSSES),
                          '"ce": softmax cross-entropy to the target; "logit": -logit_t')
    temperature: float = key(3.0, number(0.0, above=True), f"({OBJECTIVE})")
    l1: float = key(0.0, number(0.0), f"({OBJECTIVE})")
    l2: float = key(0.01, number(0.0), f"({OBJECTIVE})")
    pixel_l1: float = key(0.0, number(0.0), f"({OBJECTIVE})")
    goal_probability: float = key(0.9, number(0.0, 1.0),
                                  "success: target decision and p(target) >= this (0.5: a mere "
                                  "boundary crossing, a weak explanation; 0: decision only)")
    judge_8bit: bool = key(True, flag,
                           "success is judged on the image rounded to 8 bits, as it is written "
                           "(False: on the float image; a float stop at p = goal may read below "
                           "it once saved)")
    boundary_margin: float = key(0.1, number(0.0, 1.0),
                                 "an original whose decision beats the target's probability by "
                                 'less than this is reported "near_boundary", not as an explanation')
    output_mode: str = key("residual", choice(*OUTPUT_MODES),
                           "x + m (D(z) - D(z0)) | x + m (D(z) - x) | D(z)")
    smoothing: SmoothingSettings = group(
        SmoothingSettings, "smoothed gradient: mean over num_samples Gaussian perturbations of "
                           "scale sigma")
    optimizer: str = key("sgd", choice(*OPTIMIZERS), f"({UPDATE})")
    learning_rate: float = key(0.05, number(0.0, above=True), f"({UPDATE})")
    momentum: float = key(0.9, number(0.0, 1.0, below=True),
                          "SGD only; 1 or more never settles")
    normalize_gradient: bool = key(False, flag,
                                   "scale each example's latent gradient to unit L2 norm (the "
                                   "step length is the learning rate, its direction the "
                                   "gradient's: no stall where the classifier is confident)")
    clip_norm: float = key(0.0, number(0.0),
                           "per-example L2 clipping of the latent gradient (0: off)")
    sparsify: float = key(0.0, number(0.0, 1.0),
                          "zero gradient entries with |g| < sparsify * max|g| (0: off)")
    prior: PriorSettings = group(
        PriorSettings, "generative prior: each step the classifier judges D(P(z)), P = noise to "
                       "`strength` and Euler back to t = 0 with the prior's velocity model "
                       "(see search/prior_step.py)")
    mask: MaskSettings = group(MaskSettings, "edit mask (sparsity)")
    stall: StallSettings = group(
        StallSettings, "an attempt that cannot make progress ends early (search/loop.py, "
                       "\"Stalled searches\"); the slot engine refills its slot at once")
    seed: int = key(0, number(-2 ** 63, 2 ** 63 - 1, integer=True),
                    "the search's noise (with each example id)")
    progress_every: int = key(0, number(0, integer=True),
                              "steps between progress callbacks (0: none)")


def _defaults(settings: type) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    for f in dataclasses.fields(settings):
        nested = f.metadata.get("group")
        setattr(c, f.name, _defaults(nested) if nested else f.default)
    return c


def default_search_config() -> ml_collections.ConfigDict:
    """The documented defaults of one counterfactual search (every key: :class:`SearchSettings`)."""
    return _defaults(SearchSettings)


def search_config_docs(settings: type = SearchSettings, prefix: str = "") -> dict[str, str]:
    """``{dotted key: comment}``; a key without its own comment shows its group's, in brackets."""
    docs: dict[str, str] = {}
    for f in dataclasses.fields(settings):
        nested = f.metadata.get("group")
        if nested:
            heading = f.metadata.get("doc", "")
            for name, doc in search_config_docs(nested, f"{prefix}{f.name}.").items():
                docs[name] = doc or (f"({heading})" if heading else "")
        else:
            docs[prefix + f.name] = f.metadata.get("doc", "")
    return docs


def number_checks(settings: type = SearchSettings, prefix: str = "") -> dict[str, Number]:
    """``{dotted key: its range}`` of every numeric key (for ``--print_config`` and the tests)."""
    checks: dict[str, Number] = {}
    for f in dataclasses.fields(settings):
        nested = f.metadata.get("group")
        if nested:
            checks.update(number_checks(nested, f"{prefix}{f.name}."))
        elif isinstance(f.metadata["check"], Number):
            checks[prefix + f.name] = f.metadata["check"]
    return checks


def _freeze(settings: type, given: Mapping[str, Any], where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(settings)}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise SearchConfigError(f"unknown search config key(s) {[where + k for k in unknown]}; "
                                f"known: {sorted(where + k for k in known)}")
    values = {}
    for name, f in known.items():
        nested = f.metadata.get("group")
        if nested:
            sub = given.get(name) or {}
            if not isinstance(sub, Mapping):
                raise SearchConfigError(f"search config {where}{name}={sub!r}: must be a sub-config")
            values[name] = _freeze(nested, sub, f"{where}{name}.")
        else:
            values[name] = f.metadata["check"](where + name, given.get(name, f.default))
    return settings(**values)


def settings_from_config(config: ml_collections.ConfigDict | Mapping[str, Any] | None = None
                         ) -> SearchSettings:
    """Validates ``config`` (missing keys take their defaults) and freezes it."""
    given = {} if config is None else (config.to_dict() if hasattr(config, "to_dict") else dict(config))
    return _freeze(SearchSettings, given, "")
