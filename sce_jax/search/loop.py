"""One attempt of the counterfactual search for a batch, as a single ``lax.while_loop``.

Each step, for every example that is still running:

1. evaluate the output image ``x_cf(z)`` and its (smoothed) gradient; with a prior, the image
   judged is ``x_cf(P(z))`` and the gradient is taken there and applied to ``z``
   (straight-through: ``z + stop_gradient(P(z) - z)``), see below;
2. if the classifier gives the target decision with ``p >= goal_probability`` on ``x_cf(z)``
   (rounded to 8 bits as it will be written, when ``judge_8bit``), the example has succeeded:
   its state is frozen from here on (masked, never removed: shapes stay static);
   a non-finite gradient, latent or logit marks it failed and freezes it too;
3. otherwise mask, clip and sparsify the gradient, take an optimizer step, and reset the
   latent to ``z0`` outside the latent mask;
4. every ``period`` steps after the warm-up, recompute the edit mask from the change map
   (its holes filled when ``mask.fill_holes``).

With a prior ``P`` (:mod:`sce_jax.search.prior_step`, one noise draw per attempt), the
reference the edit is measured against is the prior's own version of the original, so the
search starts from no change at all::

    z_ref = P(z0),   x_ref = D(z_ref)
    x_cf  = x + m (D(P(z)) - x_ref)                       (residual mode; blend/decoded alike)
    grad  = d/dz' L(x_cf(z'), z' - z_ref) at z' = P(z)    (applied to z)

``P(z) - z`` is recomputed every ``prior.every`` steps and kept in between; the latent returned
is ``z0 + P(z) - z_ref`` (the edit, in the original's coordinates).

Stalled searches: an attempt that makes no progress, or late in its budget cannot reach its
goal at its pace, ends early. Progress is measured in log-odds,
``l_t = log p_t - log(1 - p_t)`` of the judged p(target) (clipped to ``[1e-30, 1 - 1e-7]``), so
that a search at p = 0.001 and one at p = 0.4 are judged alike, and one that starts at
p = 1e-12 shows its progress. With ``W = stall.window``, ``delta = stall.min_rise``,
``c = stall.slack``, ``a = stall.after``, budget ``T`` and goal ``g = logit(goal_probability)``::

    m_t     = max(l_s : s <= t, s confined)           (the best so far; -inf before)
    rise_t  = m_t - m_{t-W}                            (+inf while m_{t-W} = -inf)
    flat    = rise_t < delta                           (no progress over W steps)
    late    = t >= a T  and  c (rise_t / W) (T - t - 1) < g - m_t
    stalled = not reached and t + 1 < T and (flat or late)

``flat`` ends a search whose best log-odds have not risen by ``delta`` in ``W`` steps;
``late`` one that, in the last ``1 - a`` of its budget, would not reach the goal even at ``c``
times its recent pace. Searches often rise slowly and then quickly (a confident classifier),
so the pace is not trusted early. Counted from when a search may succeed (with a capped mask,
after the warm-up). A stalled search is done, reports ``stalled`` and returns its best state
like any failed one; the slot engine refills its slot at once. ``W = 0`` turns the rule off.

The loop ends when every valid example is done or the step budget is spent; then the last
state of the examples still running is checked once more, and an example that never succeeded
returns its best state so far (highest target probability among the states that could have
succeeded: with a capped mask, none before its first update). No host round trip happens per
step; an optional progress callback runs through ``jax.debug.callback``.

The step is :class:`AttemptStep`, shared with the slot engine (:mod:`sce_jax.search.slots`),
which advances searches that started at different times: every example carries its own step
counter ``step_b``, and everything keyed on the step is keyed on it (the smoothing noise, the
mask updates at ``step_b >= warmup, (step_b - warmup) % period == 0``, the prior's correction
at ``step_b % every == 0``), and each example has its own optimizer state (its own Adam step
count). In a batch every counter is the same, so a batch and a slot compute the same thing.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from sce_jax.search import masks, objectives, targets, updates
from sce_jax.search.config import SearchSettings
from sce_jax.search.smoothing import StepInputs, objective_gradient


class LoopState(NamedTuple):
    step: jax.Array          # (B,) int32: each example's own step counter
    z: jax.Array             # (B, h, w, c) the latent the optimizer moves
    offset: jax.Array        # (B, h, w, c) P(z) - z, the prior's correction (0 without prior)
    opt_state: object        # one optimizer state per example (leading axis B)
    pixel_mask: jax.Array    # (B, H, W, 1)
    latent_mask: jax.Array   # (B, h, w, 1)
    done: jax.Array          # (B,) bool
    success: jax.Array       # (B,) bool
    nonfinite: jax.Array     # (B,) bool
    steps_used: jax.Array    # (B,) int32
    best_z: jax.Array        # the evaluated latent z + offset of the best state
    best_mask: jax.Array
    best_p: jax.Array        # (B,) target probability of best_z
    odds_ring: jax.Array     # (B, W) m_t = logit(best_p) of the last W steps, at step % W
    stalled: jax.Array       # (B,) bool: ended by the stall rule


class AttemptResult(NamedTuple):
    image: jax.Array         # (B, H, W, C) counterfactual in [0, 1]
    latent: jax.Array        # (B, h, w, c)
    mask: jax.Array          # (B, H, W, 1) pixel mask the image was made with
    logits: jax.Array        # (B, K) classifier on image
    prob_after: jax.Array    # (B,)
    success: jax.Array       # (B,) bool
    nonfinite: jax.Array     # (B,) bool
    steps: jax.Array         # (B,) int32
    stalled: jax.Array       # (B,) bool: ended early, no progress (see "Stalled searches")


def reference_inputs(inp: StepInputs, *, decode: Callable,
                     project: Callable[[jax.Array], jax.Array] | None) -> StepInputs:
    """The inputs edits are measured against: with a prior, ``z_ref = P(z0)`` and ``D(z_ref)``."""
    if project is None:
        return inp
    z_ref = project(inp.z0)
    return inp._replace(z0=z_ref, decoded0=decode(z_ref))


class AttemptStep:
    """One step of one attempt for a batch of examples, each at its own step counter.

    Args:
      inp: the examples, with ``z0``/``decoded0`` already the reference
        (:func:`reference_inputs`); its ``mask`` field is replaced by the current edit mask.
      z_start: (B, h, w, c) the original starting latents ``z0`` (before the prior).
      allowed: (B, H, W, 1) pixels that may change (user region times unlocked area).
      decode, logits_fn: the generator's decoder and the classifier, over their parameters.
      settings: the static search settings; kind: the target kind (see ``targets``).
      downsample: image size / latent size.
      project: the prior's clean prediction ``z -> P(z)`` (no gradient), or None.
    """

    def __init__(self, inp: StepInputs, z_start: jax.Array, allowed: jax.Array, *,
                 decode: Callable, logits_fn: Callable, settings: SearchSettings, kind: str,
                 downsample: int, project: Callable[[jax.Array], jax.Array] | None = None):
        self.inp = inp
        self.z_start = z_start
        self.allowed = allowed
        self.lat_allowed = masks.latent_mask(allowed, downsample, 0)
        self.decode = decode
        self.logits_fn = logits_fn
        self.settings = settings
        self.kind = kind
        self.downsample = downsample
        self.project = project
        self.optimizer = updates.make_optimizer(settings)

    def init(self, valid: jax.Array) -> LoopState:
        """The state before step 0; invalid (padding) and non-finite examples start done."""
        inp = self.inp
        finite0 = objectives.all_finite(inp.z0, inp.decoded0, inp.x)
        return LoopState(
            step=jnp.zeros(valid.shape, jnp.int32),
            z=self.z_start,
            offset=inp.z0 - self.z_start,
            opt_state=jax.vmap(self.optimizer.init)(inp.z0),
            pixel_mask=self.allowed,
            latent_mask=self.lat_allowed,
            done=~valid | ~finite0,
            success=jnp.zeros_like(valid),
            nonfinite=valid & ~finite0,
            steps_used=jnp.zeros(valid.shape, jnp.int32),
            best_z=inp.z0,
            best_mask=self.allowed,
            best_p=jnp.full(valid.shape, -1.0, jnp.float32),
            odds_ring=jnp.full(valid.shape + (max(self.settings.stall.window, 1),), -jnp.inf,
                               jnp.float32),
            stalled=jnp.zeros_like(valid),
        )

    def correction(self, z, step, offset):
        """``P(z) - z`` where an example's step is due (``step % every == 0``), else ``offset``."""
        if self.project is None:
            return offset
        every = self.settings.prior.every
        if every == 1:
            return self.project(z) - z
        due = step % every == 0
        return jax.lax.cond(jnp.any(due),
                            lambda: objectives.tree_select(due, self.project(z) - z, offset),
                            lambda: offset)

    def confined(self, step: jax.Array) -> jax.Array:
        """Whether a search at ``step`` may succeed. A capped mask (``mask.max_area < 1``) is a
        promise about the result: no success before the first mask (made at step
        ``warmup_steps``) has confined the edit; otherwise always."""
        mask_cfg = self.settings.mask
        if mask_cfg.enabled and mask_cfg.max_area < 1:
            return step > mask_cfg.warmup_steps
        return jnp.ones_like(step, bool)

    def verdict(self, logits: jax.Array, step: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(p(target), reached)`` per example: the goal met on the judged image, and the
        search confined (:meth:`confined`) at ``step``."""
        inp, kind = self.inp, self.kind
        p = targets.target_probability(logits, inp.target, inp.value, kind=kind)
        reached = targets.target_reached(logits, inp.target, inp.value, kind=kind,
                                         goal_probability=self.settings.goal_probability)
        return p, reached & self.confined(step)

    def judged_logits(self, x_cf: jax.Array) -> jax.Array:
        """The classifier on the image success is judged on (8-bit rounded when judge_8bit)."""
        return self.logits_fn(objectives.judged_image(x_cf, judge_8bit=self.settings.judge_8bit))

    def _new_masks(self, decoded):
        """The edit mask recomputed from the change map (pixel and latent)."""
        mask_cfg, allowed = self.settings.mask, self.allowed
        # Only the allowed area counts: D(z) also moves under locked or excluded pixels, and a
        # peak there would push the whole allowed area below tau.
        change = masks.change_map(decoded, self.inp.decoded0) * allowed
        keep = masks.threshold_mask(change, blur_sigma=mask_cfg.blur_sigma,
                                    threshold=mask_cfg.threshold, max_area=mask_cfg.max_area)
        if mask_cfg.fill_holes:
            keep = masks.fill_holes_within(keep, mask_cfg.max_area)
        keep = keep * allowed
        pm = masks.soften(keep, allowed, mask_cfg.soft_border)
        return pm, masks.latent_mask(pm, self.downsample, mask_cfg.dilation) * self.lat_allowed

    def __call__(self, s: LoopState) -> LoopState:
        """Steps 1-4 of the module docstring for every example (frozen ones keep their state)."""
        inp, settings, kind, z0 = self.inp, self.settings, self.kind, self.z_start
        mask_cfg = settings.mask
        offset = self.correction(s.z, s.step, s.offset)
        z_eval = s.z + offset
        out = objective_gradient(z_eval, s.step, inp._replace(mask=s.pixel_mask), decode=self.decode,
                                 logits_fn=self.logits_fn, settings=settings, kind=kind)
        p, reached = self.verdict(out.logits, s.step)
        finite = objectives.all_finite(out.grad, out.logits, z_eval)
        active = ~s.done
        # A state that could not succeed (before a capped mask confined the edit) is no result
        # either: it must not come back as the best of a failed search.
        improve = active & finite & self.confined(s.step) & (p > s.best_p)
        best_z = objectives.tree_select(improve, z_eval, s.best_z)
        best_mask = objectives.tree_select(improve, s.pixel_mask, s.best_mask)
        best_p = jnp.where(improve, p, s.best_p)
        success = s.success | (active & finite & reached)
        nonfinite = s.nonfinite | (active & ~finite)
        odds_ring, stalled = self._stall(s, best_p, finite & ~reached)
        done = s.done | success | nonfinite | stalled
        steps_used = jnp.where(active, s.step, s.steps_used)

        grad = updates.process_gradient(jnp.where(finite.reshape(-1, 1, 1, 1), out.grad, 0.0),
                                        s.latent_mask, settings)
        step_updates, opt_state = jax.vmap(self.optimizer.update)(grad, s.opt_state, s.z)
        z = z0 + s.latent_mask * (s.z + step_updates - z0)

        pixel_mask, latent_mask = s.pixel_mask, s.latent_mask
        if mask_cfg.enabled:
            due = (s.step >= mask_cfg.warmup_steps) & ((s.step - mask_cfg.warmup_steps) % mask_cfg.period == 0)

            def updated(_):
                pm, lm = self._new_masks(out.decoded)
                return (objectives.tree_select(due, pm, pixel_mask),
                        objectives.tree_select(due, lm, latent_mask))

            pixel_mask, latent_mask = jax.lax.cond(jnp.any(due), updated,
                                                   lambda _: (pixel_mask, latent_mask), None)
            z = z0 + latent_mask * (z - z0)

        keep = ~done
        return s._replace(
            step=s.step + 1,
            z=objectives.tree_select(keep, z, s.z),
            offset=objectives.tree_select(active, offset, s.offset),  # the one judged this step
            opt_state=objectives.tree_select(keep, opt_state, s.opt_state),
            pixel_mask=objectives.tree_select(keep, pixel_mask, s.pixel_mask),
            latent_mask=objectives.tree_select(keep, latent_mask, s.latent_mask),
            done=done, success=success, nonfinite=nonfinite, steps_used=steps_used,
            best_z=best_z, best_mask=best_mask, best_p=best_p,
            odds_ring=odds_ring, stalled=stalled)

    def _stall(self, s: LoopState, best_p: jax.Array, open_: jax.Array):
        """The stall rule of the module docstring: the new ``(ring, stalled)``. ``best_p`` is the
        best confined p(target) after this step (so ``m_t = logit(best_p)``, -inf while none);
        ``open_`` is where the example was judged and has not reached its goal."""
        cfg, budget = self.settings.stall, self.settings.steps
        if cfg.window <= 0:
            return s.odds_ring, s.stalled
        window = cfg.window
        q = jnp.clip(best_p, 1e-30, 1.0 - 1e-7)  # float32: far from the goal, progress still shows
        best = jnp.where(best_p >= 0, jnp.log(q) - jnp.log1p(-q), -jnp.inf)
        active = ~s.done
        slot = (s.step % window)[:, None]
        before = jnp.take_along_axis(s.odds_ring, slot, axis=1)[:, 0]   # m_{t-W}
        ring = jnp.where((jnp.arange(window)[None, :] == slot) & active[:, None], best[:, None],
                         s.odds_ring)
        rise = jnp.where(before > -jnp.inf, best - before, jnp.inf)
        left = (budget - s.step - 1).astype(jnp.float32)
        goal = min(max(float(self.settings.goal_probability), 1e-6), 1.0 - 1e-6)
        needed = math.log(goal) - math.log1p(-goal) - best
        late = (s.step >= cfg.after * budget) & (cfg.slack * rise / window * left < needed)
        hopeless = (left > 0) & (best > -jnp.inf) & ((rise < cfg.min_rise) | late)
        return ring, s.stalled | (active & open_ & hopeless)

    def finish(self, s: LoopState, valid: jax.Array) -> AttemptResult:
        """The attempt's result from its last state.

        The examples still running (their budget spent) were updated after their last check:
        they are checked once more. A frozen example keeps the latent it was judged at
        (``z + offset``); one that never succeeded returns its best state.
        """
        inp, settings, kind, decode = self.inp, self.settings, self.kind, self.decode
        running = ~s.done
        z_last = s.z + objectives.tree_select(running, self.correction(s.z, s.step, s.offset), s.offset)
        decoded = decode(z_last)
        x_cf = objectives.compose_output(inp.x, decoded, inp.decoded0, s.pixel_mask, mode=settings.output_mode)
        logits = self.judged_logits(x_cf)
        p, reached = self.verdict(logits, s.step)
        finite = objectives.all_finite(x_cf, logits, z_last)
        success = s.success | (running & finite & reached)
        nonfinite = s.nonfinite | (running & ~finite)
        steps_used = jnp.where(running, s.step, s.steps_used)
        # Failed examples return their best state; succeeded ones the state that succeeded.
        use_best = ~success & (s.best_p > jnp.where(finite, p, -jnp.inf))
        z = objectives.tree_select(use_best, s.best_z, z_last)
        mask = objectives.tree_select(use_best, s.best_mask, s.pixel_mask)
        decoded = jax.lax.cond(jnp.any(use_best), decode, lambda _: decoded, z)
        x_cf = objectives.compose_output(inp.x, decoded, inp.decoded0, mask, mode=settings.output_mode)
        logits = jax.lax.cond(jnp.any(use_best), self.judged_logits, lambda _: logits, x_cf)
        p = targets.target_probability(logits, inp.target, inp.value, kind=kind)
        bad = nonfinite | ~objectives.all_finite(x_cf, logits)
        image = objectives.tree_select(bad, inp.x, x_cf)
        latent = z if self.project is None else self.z_start + (z - inp.z0)  # the edit, from the original
        return AttemptResult(image=image, latent=latent, mask=mask, logits=logits,
                             prob_after=jnp.where(bad, jnp.nan, p), success=success & ~bad & valid,
                             nonfinite=bad & valid, steps=steps_used,
                             stalled=s.stalled & ~success & ~bad & valid)


def run_attempt(inp: StepInputs, allowed: jax.Array, valid: jax.Array, *, decode: Callable,
                logits_fn: Callable, settings: SearchSettings, kind: str, downsample: int,
                progress: Callable | None = None, attempt: int | jax.Array = 0,
                project: Callable[[jax.Array], jax.Array] | None = None) -> AttemptResult:
    """Runs one attempt for a batch: :class:`AttemptStep` in a ``lax.while_loop``.

    Args:
      inp: the batch; its ``mask`` field is replaced by the current edit mask each step.
      allowed: (B, H, W, 1) pixels that may change (user region times unlocked area).
      valid: (B,) False for padding examples, which do no work.
      decode, logits_fn: the generator's decoder and the classifier, over their parameters.
      settings: the static search settings; kind: the target kind (see ``targets``).
      downsample: image size / latent size.
      progress: optional host function ``(attempt, step, num_done, num_valid)``.
      project: the prior's clean prediction ``z -> P(z)`` (no gradient), or None.
    """
    step = AttemptStep(reference_inputs(inp, decode=decode, project=project), inp.z0, allowed,
                       decode=decode, logits_fn=logits_fn, settings=settings, kind=kind,
                       downsample=downsample, project=project)

    def cond(s: LoopState):  # every counter of a batch is the same: s.step[0] is the batch's
        return (s.step[0] < settings.steps) & jnp.any(~s.done)

    def body(s: LoopState):
        new = step(s)
        if progress is not None and settings.progress_every > 0:
            jax.lax.cond(new.step[0] % settings.progress_every == 0,
                         lambda: jax.debug.callback(progress, attempt, new.step[0],
                                                    jnp.sum(new.done & valid), jnp.sum(valid)),
                         lambda: None)
        return new

    s = jax.lax.while_loop(cond, body, step.init(valid))
    return step.finish(s, valid)
