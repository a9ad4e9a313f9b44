"""Continuous batching: a fixed number of search slots, advanced a chunk of steps at a time.

A batch's ``lax.while_loop`` (:func:`sce_jax.search.loop.run_attempt`) runs until its slowest
example is done; the examples that finished early are frozen but still computed. Here each of
``S`` slots holds one attempt of one search, at its own step counter, and the host refills a
slot as soon as its attempt is over (:mod:`sce_jax.search.slot_scheduler`):

    begin(params, state, fill, new)  -> state    slots in ``fill`` start ``new`` attempts
                                                  (their reference P(z0) computed when the
                                                  search was encoded: ``references``)
    advance(params, state)           -> state, work, finished, lock, outcome
                                                  up to ``chunk_steps`` steps of every running slot,
                                                  then every slot's result as if it ended now

A slot runs while ``not done and step < steps``; the step is the batch engine's own
(:class:`sce_jax.search.loop.AttemptStep`), keyed on the slot's step counter, and the attempt's
randomness is keyed on (example id, target, attempt) exactly as in
:func:`sce_jax.search.engine.explain_batch`, so an attempt's result does not depend on the
slot it ran in, its neighbours, or when it started. ``begin`` replaces every field of a slot
(inputs, latent, optimizer state, masks, best state, lock): nothing of the previous occupant
survives. Shapes are static (one compilation per slot count); the slots are sharded over the
``data`` mesh axis like a batch when the state is placed so.

Work counts per chunk: ``iterations`` (steps of the chunk: ``S * iterations`` example-steps
computed) and ``useful`` (example-steps of slots that were running).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from sce_jax.search import engine, objectives
from sce_jax.search.config import SearchSettings
from sce_jax.search.loop import AttemptStep, LoopState, reference_inputs
from sce_jax.search.smoothing import StepInputs


class SlotInputs(NamedTuple):
    """What a slot starts an attempt with (leading axis S)."""

    enc: engine.Encoded       # the search's original, encoded (sce_jax.search.engine.encode)
    example_ids: jax.Array    # (S,) int32: randomness is keyed on them
    attempt: jax.Array        # (S,) int32: the attempt's index k
    region: jax.Array         # (S, H, W, 1) where the image may change
    locked: jax.Array         # (S, H, W, 1) what the search's successful attempts < k changed
    z_ref: jax.Array          # (S, h, w, c) the attempt's reference latent: P(z0) with a prior
                              # (SlotSearch.references), else z0
    decoded_ref: jax.Array    # (S, H, W, C) D(z_ref)
    context: Any = None       # per-example conditioning pytree, or None


class SlotState(NamedTuple):
    start: SlotInputs
    occupied: jax.Array       # (S,) bool: the slot holds an attempt
    loop: LoopState


class ChunkWork(NamedTuple):
    iterations: jax.Array     # () int32 steps the chunk ran
    useful: jax.Array         # () int32 example-steps of slots that were running


@dataclasses.dataclass(frozen=True)
class SlotSearch:
    """The slot engine's pure functions for one (models, settings, kind, chunk); hashable, so
    it can be a static argument of ``jax.jit`` (:data:`begin` and :data:`advance`)."""

    models: engine.SearchModels
    settings: SearchSettings
    kind: str
    chunk_steps: int

    def __post_init__(self):
        engine.check_search(self.models, self.settings, self.kind)
        if self.chunk_steps < 1:
            raise ValueError(f"chunk_steps must be at least 1, got {self.chunk_steps}")

    def _keys(self, start: SlotInputs):
        return engine.attempt_keys(self.settings.seed, start.example_ids, start.enc.target,
                                   start.attempt)

    def references(self, params: engine.SearchParams, enc: engine.Encoded, example_ids,
                   context=None) -> tuple[jax.Array, jax.Array]:
        """``z_ref = P(z0)`` and ``D(z_ref)`` of every attempt of every search (axes (B, K)),
        computed once per search when it is encoded, not per refill of all slots (with a
        prior; without one they are ``z0`` and ``D(z0)``)."""
        spec, refs = self.models.generator, []
        for k in range(self.settings.attempts):
            keys = engine.attempt_keys(self.settings.seed, example_ids, enc.target, k)
            project = engine.projection(params, keys, enc.z0.shape[1:], context,
                                        models=self.models, settings=self.settings)
            ref = reference_inputs(
                StepInputs(enc.x, enc.z0, enc.decoded0, None, enc.target, enc.value, keys),
                decode=lambda z: spec.decode(params.generator, z, context), project=project)
            refs.append((ref.z0, ref.decoded0))
        return tuple(jnp.stack(r, axis=1) for r in zip(*refs))

    def _step(self, params: engine.SearchParams, start: SlotInputs) -> AttemptStep:
        spec, enc = self.models.generator, start.enc
        keys = self._keys(start)
        allowed = start.region * (1.0 - start.locked)
        inp = StepInputs(enc.x, start.z_ref, start.decoded_ref, allowed, enc.target, enc.value, keys)
        project = engine.projection(params, keys, enc.z0.shape[1:], start.context,
                                    models=self.models, settings=self.settings)
        return AttemptStep(inp, enc.z0, allowed,
                           decode=lambda z: spec.decode(params.generator, z, start.context),
                           logits_fn=lambda images: self.models.logits_fn(params.classifier, images),
                           settings=self.settings, kind=self.kind, downsample=spec.downsample,
                           project=project)

    def fresh(self, params: engine.SearchParams, fill: jax.Array, new: SlotInputs) -> SlotState:
        """Every slot starting attempt ``new.attempt`` of ``new`` from scratch (occupied where
        ``fill``)."""
        return SlotState(start=new, occupied=fill, loop=self._step(params, new).init(fill))

    def begin(self, params: engine.SearchParams, state: SlotState, fill: jax.Array,
              new: SlotInputs) -> SlotState:
        """Slots where ``fill`` start attempt ``new.attempt`` of their new search from scratch;
        the others keep their state."""
        return objectives.tree_select(fill, self.fresh(params, fill, new), state)

    def running(self, state: SlotState) -> jax.Array:
        return state.occupied & ~state.loop.done & (state.loop.step < self.settings.steps)

    def advance(self, params: engine.SearchParams, state: SlotState):
        """Up to ``chunk_steps`` steps of every running slot; returns the new state, the work
        done, which slots' attempts are over, and every slot's lock and outcome fields as
        :func:`sce_jax.search.engine.attempt_outcome` gives them."""
        step = self._step(params, state.start)

        def cond(carry):
            s, i, _ = carry
            return (i < self.chunk_steps) & jnp.any(self.running(state._replace(loop=s)))

        def body(carry):
            s, i, useful = carry
            run = self.running(state._replace(loop=s))
            s = objectives.tree_select(run, step(s), s)
            return s, i + 1, useful + jnp.sum(run, dtype=jnp.int32)

        loop, iterations, useful = jax.lax.while_loop(
            cond, body, (state.loop, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32)))
        state = state._replace(loop=loop)
        finished = state.occupied & ~self.running(state)
        res = step.finish(loop, state.occupied)
        locked, outcome = engine.attempt_outcome(res, state.start.enc, state.start.attempt,
                                                 state.start.locked,
                                                 settings=self.settings)
        return state, ChunkWork(iterations, useful), finished, locked, outcome

    def state_shapes(self, params: engine.SearchParams, new: SlotInputs) -> SlotState:
        """The shapes of a state; all zeros is a state with no slot occupied."""
        return jax.eval_shape(self.fresh, params, jax.ShapeDtypeStruct(new.attempt.shape, bool), new)


# Compiled once per (search, shapes), shared by every scheduler of the same search.
fresh = jax.jit(SlotSearch.fresh, static_argnums=0)
begin = jax.jit(SlotSearch.begin, static_argnums=0)
advance = jax.jit(SlotSearch.advance, static_argnums=0)
references = jax.jit(SlotSearch.references, static_argnums=0)
