"""Search configuration: a documented ml_collections default and its validated, static form.

Users edit a :class:`ml_collections.ConfigDict` (``default_search_config()``); the search runs
on :class:`SearchSettings`, a frozen (hashable) dataclass made from it by
:func:`settings_from_config`, which refuses unknown keys and out-of-range values by name.

Where the defaults come from: temperature 3, two attempts, SGD with momentum 0.9 and a
blur-and-threshold mask follow SCE-LITE-HQ's public configs; the step size, noise scale,
proximity weights and mask threshold were chosen on the shipped Fashion-MNIST demo, and the
goal probability, hole filling and spot rejection on both shipped demos (WORKSPACE.md,
"Tuning the defaults"; the README's ablation tables).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import ml_collections

OUTPUT_MODES = ("residual", "blend", "decoded")
SMOOTHING_SPACES = ("pixel", "latent", "none")
CLASS_LOSSES = ("ce", "logit")
OPTIMIZERS = ("sgd", "adam")
SUB_CONFIGS = ("smoothing", "prior", "mask")


def default_search_config() -> ml_collections.ConfigDict:
    """The documented defaults of one counterfactual search."""
    c = ml_collections.ConfigDict()
    c.steps = 100               # step budget per attempt
    c.attempts = 2              # K diverse counterfactuals per (image, target)
    c.lock = True               # attempt k may not change what successful attempts < k changed
                                # (False: K independent attempts that differ only in their noise)
    c.reject_background_spots = True  # an attempt after the first whose change is a spot in
                                # empty background reports "no second reason" (search/background_spots.py)
    # objective: cls(f(x_cf)/T, t) + l1 * mean|z - z0| + l2 * ||z - z0||_2 + pixel_l1 * mean|x_cf - x|
    c.class_loss = "ce"         # "ce": softmax cross-entropy to the target; "logit": -logit_t
    c.temperature = 3.0
    c.l1 = 0.0
    c.l2 = 0.01
    c.pixel_l1 = 0.0
    c.goal_probability = 0.9    # success: target decision and p(target) >= this (0.5: a mere
                                # boundary crossing, a weak explanation; 0: decision only)
    c.boundary_margin = 0.1     # an original whose decision beats the target's probability by
                                # less than this is reported "near_boundary", not as an explanation
    c.output_mode = "residual"  # x + m (D(z) - D(z0)) | x + m (D(z) - x) | D(z)
    # smoothed gradient: mean over num_samples Gaussian perturbations of scale sigma
    c.smoothing = ml_collections.ConfigDict()
    c.smoothing.space = "pixel"  # "pixel" (one decoder pass), "latent" (N decoder passes), "none"
    c.smoothing.num_samples = 8
    c.smoothing.sigma = 0.05
    c.smoothing.chunk_size = 0   # noise samples evaluated at once (0: all): bounds memory
    # gradient processing and update
    c.optimizer = "sgd"
    c.learning_rate = 0.05
    c.momentum = 0.9            # SGD only
    c.clip_norm = 0.0           # per-example L2 clipping of the latent gradient (0: off)
    c.sparsify = 0.0            # zero gradient entries with |g| < sparsify * max|g| (0: off)
    # generative prior: each step the classifier judges D(P(z)), P = noise to `strength`
    # and Euler back to t = 0 with the prior's velocity model (see search/prior_step.py)
    c.prior = ml_collections.ConfigDict()
    c.prior.enabled = False     # needs a prior (run config `prior.checkpoint`, or Explainer(prior=...))
    c.prior.strength = 0.3      # noise level s in (0, 1]: how far the prior may move the edit
    c.prior.denoise_steps = 4   # Euler steps from t = s back to 0
    c.prior.shift = 1.0         # schedule shift (SD3: 3.0); 1 = uniform steps
    c.prior.every = 1           # recompute the prior's correction every n steps (kept between)
    # edit mask (sparsity)
    c.mask = ml_collections.ConfigDict()
    c.mask.enabled = True
    c.mask.warmup_steps = 10
    c.mask.period = 5
    c.mask.blur_sigma = 1.5     # pixels; Gaussian blur of the change map
    c.mask.threshold = 0.2      # keep where blurred change / its max >= threshold
    c.mask.max_area = 1.0       # at most this share of the image may change: the mask keeps the
                                # top of the blurred change map (1: no cap)
    c.mask.dilation = 1         # latent cells added around the mask
    c.mask.soft_border = 1.0    # pixels of soft border on the pixel mask (0: hard)
    c.mask.lock_margin = 0      # pixels a successful attempt's change grows by when locked
    c.mask.fill_holes = True    # a mask that encloses pixels takes them in (an edit that rings a
                                # region may change its inside, e.g. recolour a whole square)
    c.seed = 0
    c.progress_every = 0        # steps between progress callbacks (0: none)
    return c


@dataclasses.dataclass(frozen=True)
class SmoothingSettings:
    space: str
    num_samples: int
    sigma: float
    chunk_size: int


@dataclasses.dataclass(frozen=True)
class MaskSettings:
    enabled: bool
    warmup_steps: int
    period: int
    blur_sigma: float
    threshold: float
    max_area: float
    dilation: int
    soft_border: float
    lock_margin: int
    fill_holes: bool


@dataclasses.dataclass(frozen=True)
class PriorSettings:
    enabled: bool
    strength: float
    denoise_steps: int
    shift: float
    every: int

    @property
    def active(self) -> bool:
        """Whether the search calls the prior at all (strength 0 is the search without it)."""
        return self.enabled and self.strength > 0


@dataclasses.dataclass(frozen=True)
class SearchSettings:
    """The static (hashable) form of the search config, used inside ``jax.jit``."""

    steps: int
    attempts: int
    lock: bool
    reject_background_spots: bool
    class_loss: str
    temperature: float
    l1: float
    l2: float
    pixel_l1: float
    goal_probability: float
    boundary_margin: float
    output_mode: str
    smoothing: SmoothingSettings
    prior: PriorSettings
    optimizer: str
    learning_rate: float
    momentum: float
    clip_norm: float
    sparsify: float
    mask: MaskSettings
    seed: int
    progress_every: int


class SearchConfigError(ValueError):
    """A search config with an unknown key or an unusable value."""


def _check_keys(given: Mapping[str, Any], known: Mapping[str, Any], where: str) -> None:
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise SearchConfigError(f"unknown search config key(s) {[where + k for k in unknown]}; "
                                f"known: {sorted(where + k for k in known)}")


def _choice(name: str, value: str, options: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in options:
        raise SearchConfigError(f"search config {name}={value!r}: must be one of {options}")
    return value


def _at_least(name: str, value, minimum) -> Any:
    """``value`` if it is a finite number ``>= minimum``; NaN and infinities are refused."""
    if not math.isfinite(value):
        raise SearchConfigError(f"search config {name}={value!r}: must be a finite number")
    if not value >= minimum:
        raise SearchConfigError(f"search config {name}={value!r}: must be >= {minimum}")
    return value


def _share(name: str, value: float) -> float:
    """``value`` if it is a share in (0, 1]."""
    if not (math.isfinite(value) and 0 < value <= 1):
        raise SearchConfigError(f"search config {name}={value!r}: must be in (0, 1]")
    return value


def settings_from_config(config: ml_collections.ConfigDict | Mapping[str, Any] | None = None
                         ) -> SearchSettings:
    """Validates ``config`` (missing keys take their defaults) and freezes it."""
    defaults = default_search_config().to_dict()
    given = {} if config is None else (config.to_dict() if hasattr(config, "to_dict") else dict(config))
    _check_keys(given, defaults, "")
    merged = {**defaults, **{k: v for k, v in given.items() if k not in SUB_CONFIGS}}
    for sub in SUB_CONFIGS:
        sub_given = dict(given.get(sub, {}) or {})
        _check_keys(sub_given, defaults[sub], sub + ".")
        merged[sub] = {**defaults[sub], **sub_given}
    s, m, pr = merged["smoothing"], merged["mask"], merged["prior"]
    smoothing = SmoothingSettings(
        space=_choice("smoothing.space", s["space"], SMOOTHING_SPACES),
        num_samples=int(_at_least("smoothing.num_samples", int(s["num_samples"]), 1)),
        sigma=float(_at_least("smoothing.sigma", float(s["sigma"]), 0.0)),
        chunk_size=int(_at_least("smoothing.chunk_size", int(s["chunk_size"]), 0)))
    mask = MaskSettings(
        enabled=bool(m["enabled"]),
        warmup_steps=int(_at_least("mask.warmup_steps", int(m["warmup_steps"]), 0)),
        period=int(_at_least("mask.period", int(m["period"]), 1)),
        blur_sigma=float(_at_least("mask.blur_sigma", float(m["blur_sigma"]), 0.0)),
        threshold=float(_at_least("mask.threshold", float(m["threshold"]), 0.0)),
        max_area=_share("mask.max_area", float(m["max_area"])),
        dilation=int(_at_least("mask.dilation", int(m["dilation"]), 0)),
        soft_border=float(_at_least("mask.soft_border", float(m["soft_border"]), 0.0)),
        lock_margin=int(_at_least("mask.lock_margin", int(m["lock_margin"]), 0)),
        fill_holes=bool(m["fill_holes"]))
    prior = PriorSettings(
        enabled=bool(pr["enabled"]),
        strength=float(_at_least("prior.strength", float(pr["strength"]), 0.0)),
        denoise_steps=int(_at_least("prior.denoise_steps", int(pr["denoise_steps"]), 1)),
        shift=float(_at_least("prior.shift", float(pr["shift"]), 1e-6)),
        every=int(_at_least("prior.every", int(pr["every"]), 1)))
    if float(merged["goal_probability"]) > 1:
        raise SearchConfigError(f"search config goal_probability={merged['goal_probability']}: "
                                "must be in [0, 1]")
    if prior.strength > 1:
        raise SearchConfigError(f"search config prior.strength={prior.strength}: must be in [0, 1]")
    if mask.threshold > 1:
        raise SearchConfigError(f"search config mask.threshold={mask.threshold}: must be in [0, 1]")
    return SearchSettings(
        steps=int(_at_least("steps", int(merged["steps"]), 1)),
        attempts=int(_at_least("attempts", int(merged["attempts"]), 1)),
        lock=bool(merged["lock"]),
        reject_background_spots=bool(merged["reject_background_spots"]),
        class_loss=_choice("class_loss", merged["class_loss"], CLASS_LOSSES),
        temperature=float(_at_least("temperature", float(merged["temperature"]), 1e-6)),
        l1=float(_at_least("l1", float(merged["l1"]), 0.0)),
        l2=float(_at_least("l2", float(merged["l2"]), 0.0)),
        pixel_l1=float(_at_least("pixel_l1", float(merged["pixel_l1"]), 0.0)),
        goal_probability=float(_at_least("goal_probability", float(merged["goal_probability"]), 0.0)),
        boundary_margin=float(_at_least("boundary_margin", float(merged["boundary_margin"]), 0.0)),
        output_mode=_choice("output_mode", merged["output_mode"], OUTPUT_MODES),
        smoothing=smoothing,
        prior=prior,
        optimizer=_choice("optimizer", merged["optimizer"], OPTIMIZERS),
        learning_rate=float(_at_least("learning_rate", float(merged["learning_rate"]), 0.0)),
        momentum=float(_at_least("momentum", float(merged["momentum"]), 0.0)),
        clip_norm=float(_at_least("clip_norm", float(merged["clip_norm"]), 0.0)),
        sparsify=float(_at_least("sparsify", float(merged["sparsify"]), 0.0)),
        mask=mask,
        seed=int(merged["seed"]),
        progress_every=int(_at_least("progress_every", int(merged["progress_every"]), 0)))
