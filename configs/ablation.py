"""Ablations of the search on the shipped Fashion-MNIST demo (base: configs/fashion_mnist.py).

    python scripts/explain.py --config=configs/ablation.py:no_mask --workdir=runs/ablation/no_mask
    python scripts/explain.py --config=configs/ablation.py:no_mask,tiny --workdir=/tmp/ablation/no_mask
    python scripts/run_ablation.py            # every variant, then the evaluation and
                                              # runs/ablation/ablation.md

The argument names the variant; each changes exactly one key of the demo's config
(:data:`CHANGED_KEYS`), so the differences between their evaluations are that key's effect:

    full              the demo config as shipped
    no_smoothing      search.smoothing.space = "none": the plain gradient (N = 1, sigma = 0)
    latent_smoothing  search.smoothing.space = "latent": noise on the latent, N decoder passes
    no_mask           search.mask.enabled = False: no edit mask, every latent cell may change
    no_lock           search.lock = False: K attempts that differ only in their noise samples
    single_attempt    search.attempts = 1: one counterfactual per image, no diversification

``,tiny`` appends the shrink of ``configs/fashion_mnist.py:tiny`` (4 images, 5 steps, 2 noise
samples): a quick check that the variant runs, not a measurement.
"""

import os

from sce_jax.config_files import load_config_module

# variant -> the dotted config key it changes from "full" (None: nothing)
CHANGED_KEYS = {
    "full": None,
    "no_smoothing": "search.smoothing.space",
    "latent_smoothing": "search.smoothing.space",
    "no_mask": "search.mask.enabled",
    "no_lock": "search.lock",
    "single_attempt": "search.attempts",
}
VARIANTS = tuple(CHANGED_KEYS)
OPTIONS = ("tiny",)


def _base_module():
    """configs/fashion_mnist.py, loaded by path (config files are not a package)."""
    return load_config_module(
        os.path.join(os.path.dirname(os.path.abspath(__file__)), "fashion_mnist.py"))


def full(c):
    """The demo as shipped.

    python scripts/explain.py --config=configs/ablation.py:full --workdir=runs/ablation/full
    """


def no_smoothing(c):
    """The plain gradient: smoothing off (one sample, no noise; DESIGN.md 2.4).

    python scripts/explain.py --config=configs/ablation.py:no_smoothing --workdir=runs/ablation/no_smoothing
    """
    c.search.smoothing.space = "none"


def latent_smoothing(c):
    """Smoothing in latent space: noise on z, one decoder pass per noise sample.

    python scripts/explain.py --config=configs/ablation.py:latent_smoothing --workdir=runs/ablation/latent_smoothing
    """
    c.search.smoothing.space = "latent"


def no_mask(c):
    """No edit mask (DESIGN.md 2.6): every latent cell may change through the whole search.

    python scripts/explain.py --config=configs/ablation.py:no_mask --workdir=runs/ablation/no_mask
    """
    c.search.mask.enabled = False


def no_lock(c):
    """No diversification lock (DESIGN.md 2.7): attempt k may change what attempts < k changed.

    python scripts/explain.py --config=configs/ablation.py:no_lock --workdir=runs/ablation/no_lock
    """
    c.search.lock = False


def single_attempt(c):
    """One attempt per (image, target): no diversification (DESIGN.md 2.7) and no diversity.

    python scripts/explain.py --config=configs/ablation.py:single_attempt --workdir=runs/ablation/single_attempt
    """
    c.search.attempts = 1


APPLY = {"full": full, "no_smoothing": no_smoothing, "latent_smoothing": latent_smoothing,
         "no_mask": no_mask, "no_lock": no_lock, "single_attempt": single_attempt}


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
    c = _base_module().get_config("tiny" if "tiny" in options else None)
    APPLY[variant](c)
    return c
