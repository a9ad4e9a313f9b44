"""Compiling test functions fast: XLA's backend optimisations off, where XLA knows the options.

Parity tests run each function once on tiny inputs, so compile time dominates; the optimised
and unoptimised programs compute the same values to float tolerance (LLVM's optimiser does
not change what is computed; XLA:CPU does not use fast-math either way).
"""

import jax
import numpy as np

FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def compiled(fn, *args):
    """``jax.jit(fn)`` compiled for ``args``, with FAST_COMPILE where XLA knows the options."""
    lowered = jax.jit(fn).lower(*args)
    try:
        return lowered.compile(compiler_options=FAST_COMPILE)
    except Exception:  # an XLA release without these options
        return lowered.compile()


def run_jitted(fn, *args):
    """``jax.jit(fn)(*args)``, compiled as :func:`compiled`, as a tree of numpy arrays."""
    return jax.tree.map(np.asarray, compiled(fn, *args)(*args))
