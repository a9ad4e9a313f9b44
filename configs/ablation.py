"""Ablations of the search on the shipped demos (base: configs/fashion_mnist.py, or
configs/squares.py with the ``squares`` option).

    python scripts/explain.py --config=configs/ablation.py:no_mask --workdir=runs/ablation/no_mask
    python scripts/explain.py --config=configs/ablation.py:no_prior,squares --workdir=runs/ablation_squares/no_prior
    python scripts/explain.py --config=configs/ablation.py:no_mask,tiny --workdir=/tmp/ablation/no_mask
    python scripts/run_ablation.py            # every variant, then the evaluation and
                                              # runs/ablation/ablation.md
    python scripts/run_ablation.py --demo=squares     # the same on squares: runs/ablation_squares/

The argument names the variant; each changes exactly one key of the demo's config
(:data:`CHANGED_KEYS`), so the differences between their evaluations are that key's effect:

    full              the demo config as shipped
    no_smoothing      search.smoothing.space = "none": the plain gradient (N = 1, sigma = 0)
    latent_smoothing  search.smoothing.space = "latent": noise on the latent, N decoder passes
    no_mask           search.mask.enabled = False: no edit mask, every latent cell may change
    no_lock           search.lock = False: K attempts that differ only in their noise samples
    single_attempt    search.attempts = 1: one counterfactual per image, no diversification
    no_prior          search.prior.enabled = False: the classifier judges D(z), not D(P(z))
    prior_weak        search.prior.strength halved (Fashion-MNIST: 0.3 -> 0.15)
    prior_strong      search.prior.strength + 0.2 (Fashion-MNIST: 0.3 -> 0.5)
    goal_0.5          search.goal_probability = 0.5: stop at the decision boundary
    goal_0.75         search.goal_probability = 0.75
    no_fill           search.mask.fill_holes = False: the mask may close onto a ring
    keep_spots        search.reject_background_spots = False: later attempts may return spots
    no_area_cap       search.mask.max_area = 1: the mask may cover the whole image (squares
                      caps it at 0.4; Fashion-MNIST ships no cap, so there it equals "full")
    raw_gradient      search.normalize_gradient = False: optimizer steps scale with the raw
                      gradient (squares normalises it; Fashion-MNIST does not: equals "full")

``,squares`` bases the variant on the squares demo instead of Fashion-MNIST;
``,tiny`` appends the shrink of ``configs/fashion_mnist.py:tiny`` (4 images, 5 steps, 2 noise
samples): a quick check that the variant runs, not a measurement.
"""

import os

from sce_jax.launch.config_files import load_config_module

# variant -> the dotted config key it changes from "full" (None: nothing)
CHANGED_KEYS = {
    "full": None,
    "no_smoothing": "search.smoothing.space",
    "latent_smoothing": "search.smoothing.space",
    "no_mask": "search.mask.enabled",
    "no_lock": "search.lock",
    "single_attempt": "search.attempts",
    "no_prior": "search.prior.enabled",
    "prior_weak": "search.prior.strength",
    "prior_strong": "search.prior.strength",
    "goal_0.5": "search.goal_probability",
    "goal_0.75": "search.goal_probability",
    "no_fill": "search.mask.fill_holes",
    "keep_spots": "search.reject_background_spots",
    "no_area_cap": "search.mask.max_area",
    "raw_gradient": "search.normalize_gradient",
}
VARIANTS = tuple(CHANGED_KEYS)
OPTIONS = ("tiny", "squares")
DEMOS = {"fashion_mnist": "fashion_mnist.py", "squares": "squares.py"}


def _base_module(demo: str = "fashion_mnist"):
    """The demo's config file, loaded by path (config files are not a package)."""
    return load_config_module(
        os.path.join(os.path.dirname(os.path.abspath(__file__)), DEMOS[demo]))


def full(c):
    """The demo as shipped.

    python scripts/explain.py --config=configs/ablation.py:full --workdir=runs/ablation/full
    """


def no_smoothing(c):
    """The plain gradient: smoothing off (one sample, no noise).

    python scripts/explain.py --config=configs/ablation.py:no_smoothing --workdir=runs/ablation/no_smoothing
    """
    c.search.smoothing.space = "none"


def latent_smoothing(c):
    """Smoothing in latent space: noise on z, one decoder pass per noise sample.

    python scripts/explain.py --config=configs/ablation.py:latent_smoothing --workdir=runs/ablation/latent_smoothing
    """
    c.search.smoothing.space = "latent"


def no_mask(c):
    """No edit mask: every latent cell may change through the whole search.

    python scripts/explain.py --config=configs/ablation.py:no_mask --workdir=runs/ablation/no_mask
    """
    c.search.mask.enabled = False


def no_lock(c):
    """No diversification lock: attempt k may change what attempts < k changed.

    python scripts/explain.py --config=configs/ablation.py:no_lock --workdir=runs/ablation/no_lock
    """
    c.search.lock = False


def single_attempt(c):
    """One attempt per (image, target): no diversification and no diversity.

    python scripts/explain.py --config=configs/ablation.py:single_attempt --workdir=runs/ablation/single_attempt
    """
    c.search.attempts = 1


def no_prior(c):
    """No generative prior: the classifier judges the decoded latent itself.

    python scripts/explain.py --config=configs/ablation.py:no_prior --workdir=runs/ablation/no_prior
    """
    c.search.prior.enabled = False


def prior_weak(c):
    """The prior at half the demo's edit strength (less noise, smaller corrections)."""
    c.search.prior.strength = round(c.search.prior.strength / 2, 4)


def prior_strong(c):
    """The prior at the demo's strength + 0.2 (more noise: the prior may move the edit further)."""
    c.search.prior.strength = round(min(1.0, c.search.prior.strength + 0.2), 4)


def goal_05(c):
    """Stop as soon as the decision flips (p(target) > 0.5): the weakest explanation."""
    c.search.goal_probability = 0.5


def goal_075(c):
    """Stop at p(target) >= 0.75."""
    c.search.goal_probability = 0.75


def no_fill(c):
    """Edit masks without hole filling: a mask may close onto the ring of a first change."""
    c.search.mask.fill_holes = False


def keep_spots(c):
    """Later attempts may return a spot painted into empty background as a 'second reason'."""
    c.search.reject_background_spots = False


def no_area_cap(c):
    """No cap on the mask's area: it may grow over the whole image.

    python scripts/explain.py --config=configs/ablation.py:no_area_cap,squares --workdir=runs/ablation_squares/no_area_cap
    """
    c.search.mask.max_area = 1.0


def raw_gradient(c):
    """Steps that scale with the raw gradient, not unit-norm ones (squares ships normalised).

    python scripts/explain.py --config=configs/ablation.py:raw_gradient,squares --workdir=runs/ablation_squares/raw_gradient
    """
    c.search.normalize_gradient = False


APPLY = {"full": full, "no_smoothing": no_smoothing, "latent_smoothing": latent_smoothing,
         "no_mask": no_mask, "no_lock": no_lock, "single_attempt": single_attempt,
         "no_prior": no_prior, "prior_weak": prior_weak, "prior_strong": prior_strong,
         "goal_0.5": goal_05, "goal_0.75": goal_075, "no_fill": no_fill, "keep_spots": keep_spots,
         "no_area_cap": no_area_cap, "raw_gradient": raw_gradient}


def parse_arg(arg: str | None) -> tuple[str, tuple[str, ...]]:
    """``"no_mask,tiny"`` -> ``("no_mask", ("tiny",))``; nothing -> ``("full", ())``."""
    parts = [p.strip() for p in (arg or "").split(",") if p.strip()]
    variant = parts[0] if parts else "full"
    options = tuple(parts[1:])
    if variant not in CHANGED_KEYS:
        raise ValueError(f"unknown ablation {variant!r}; one of {', '.join(VARIANTS)} "
                         f"(optionally followed by ',tiny')")
    unknown = [o for o in options if o not in OPTIONS]
    if unknown:
        raise ValueError(f"unknown ablation option(s) {unknown}; known: {list(OPTIONS)}")
    return variant, options


def get_config(arg: str | None = None):
    variant, options = parse_arg(arg)
    demo = "squares" if "squares" in options else "fashion_mnist"
    c = _base_module(demo).get_config("tiny" if "tiny" in options else None)
    APPLY[variant](c)
    return c
