"""The generative prior the search can use: a flow-matching velocity model over latents.

A :class:`Prior` is a pure function over explicit parameters, in the convention of SD3 and
FLUX (rectified flow)::

    z_t = (1 - t) z + t eps,          t in [0, 1], eps ~ N(0, I)
    v(z_t, t, c) ~ eps - z            (the velocity the model predicts)

where ``z`` is a latent in the search's (scaled) convention, i.e. exactly what
:meth:`sce_jax.Generator.encode` returns, shaped (B, h, w, c) (NHWC). ``t`` is (B,) float32
with 1 = pure noise; a port whose network expects another time scale (SD3: ``1000 t``)
converts inside ``velocity_fn``. ``context`` is an optional per-example pytree (precomputed
prompt embeddings, say) with leading axis B, or None.

Integrating ``dz/dt = v`` from ``t = s`` back to ``t = 0`` with Euler steps on the shifted
schedule (see :mod:`sce_jax.search.prior_step`) turns a noised latent into a clean
prediction on the model's manifold; the search uses that to keep its edits realistic.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
from flax import nnx

Array = jax.Array
VelocityFn = Callable[[Any, Array, Array, Any], Array]


@dataclasses.dataclass(frozen=True)
class Prior:
    """A velocity model ``(params, z_t, t, context) -> v`` over explicit parameters.

    Attributes:
      velocity_fn: ``(params, z_t (B, h, w, c), t (B,), context or None) -> v (B, h, w, c)``.
      params: its parameters (a pytree; NNX state for the ported networks).
      needs_context: True when ``velocity_fn`` needs a context (prompt embeddings); the
        search then refuses to run without one.
      name: for logs and reports.
    """

    velocity_fn: VelocityFn
    params: Any
    needs_context: bool = False
    name: str = "prior"

    def velocity(self, z_t: Array, t: Array, context: Any = None) -> Array:
        return self.velocity_fn(self.params, z_t, t, context)

    @classmethod
    def from_nnx(cls, model: nnx.Module, *, needs_context: bool = False,
                 name: str | None = None) -> "Prior":
        """Wraps an NNX module called as ``model(z_t, t, context)`` (NHWC latents, t in [0, 1])."""
        graphdef, state = nnx.split(model)

        def velocity(params, z_t, t, context):
            return nnx.merge(graphdef, params)(z_t, t, context)

        return cls(velocity, state, needs_context, name or type(model).__name__)
