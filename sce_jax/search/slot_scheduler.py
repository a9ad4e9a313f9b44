"""The host side of continuous batching: a queue of attempts refilled into search slots.

Searches arrive in blocks (a :class:`~sce_jax.search.engine.Batch` whose rows are searches,
plus a group key per row: the rows of one example, e.g. one per target, share a key and come
in the same block). Each block is encoded by its own jitted function
(:func:`sce_jax.search.engine.encode`; with a prior, also the reference ``P(z0)`` of each
attempt, :meth:`~sce_jax.search.slots.SlotSearch.references`); each search then needs attempts ``0 .. K-1``, one
after the other (attempt ``k`` is locked out of what the successful attempts before it
changed). The loop::

    while attempts are pending or slots are busy:
        fill every free slot with the next pending attempt (a search's next attempt first,
            then new searches, encoding the next block when the queue runs short)
        advance all slots by one chunk of steps             (one device call, no per-step sync)
        for every slot whose attempt is over: record its outcome, update the search's lock,
            queue the search's next attempt or, when a group's searches are all done,
            yield the group's Explanation

A result is yielded only when every attempt of every search of its group is done, so a
consumer that writes what it receives never writes half an example; work on the slots when
the consumer stops is simply dropped. ``work`` counts the example-steps computed
(slots x steps of every chunk) and the useful ones (slots still searching).

Resuming exactly. A slot's result is the same whatever its neighbours hold, but not, to the
last bit, whatever its position and the state's size are (XLA tiles a batched op by its
shape). A resumed run therefore replays the schedule of the run it continues: it is given
the same blocks, with the steps each finished search used (its records), and a replayed
attempt holds its slot for the chunks it held then without being computed; every other
attempt then starts in the same slot, in the same chunk, beside the same state size as it
would have without the interruption (:meth:`SlotScheduler.run_chunks`).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import time
from typing import Any, Hashable, Iterable, Iterator

import jax
import numpy as np

from sce_jax import parallel
from sce_jax.search import engine
from sce_jax.search import slots as slot_search
from sce_jax.search.engine import Batch, Explanation
from sce_jax.search.slots import SlotInputs, SlotSearch

MIN_CHUNK_STEPS = 4   # the default chunk is at least this long (a chunk boundary costs a sync)

_encode = jax.jit(engine.encode, static_argnames=("models", "settings", "kind"))
_take_rows = jax.jit(lambda tree, rows: jax.tree.map(lambda a: a[rows], tree))

# The smallest state the CPU default shrinks to: a few idle rows cost less per step than a
# compilation of one more state size costs once.
MIN_SHRUNK_SLOTS = 4


@dataclasses.dataclass
class _Search:
    group: Hashable
    enc: engine.Encoded       # this search's row (numpy)
    example_id: int
    region: np.ndarray
    context: Any
    locked: np.ndarray
    references: tuple | None  # (K, ...) z_ref and D(z_ref) of each attempt (prior), else None
    attempts: list = dataclasses.field(default_factory=list)   # outcome rows, one per attempt
    replay: tuple | None = None  # chunks each attempt took in an earlier run: not computed again


@dataclasses.dataclass
class _Group:
    searches: list
    pending: int


@dataclasses.dataclass
class SlotWork:
    """Example-steps of the slot engine: ``computed`` (slots x steps run) and ``useful``;
    ``seconds`` of wall time by phase: ``encode`` (new blocks), ``refill`` (preparing and
    starting attempts), ``advance`` (the chunks, until their results are on the host),
    ``harvest`` (recording finished attempts)."""

    computed: int = 0
    useful: int = 0
    chunks: int = 0
    refills: int = 0
    shrinks: int = 0
    seconds: dict = dataclasses.field(default_factory=lambda: dict.fromkeys(
        ("encode", "refill", "advance", "harvest"), 0.0))

    @property
    def useful_share(self) -> float:
        return self.useful / self.computed if self.computed else float("nan")


def aligned_chunk_steps(settings) -> int:
    """The default chunk: the smallest multiple of ``mask.period`` and ``prior.every`` of at
    least ``MIN_CHUNK_STEPS`` steps.

    Slots start on chunk boundaries, so every slot's step counter is the same modulo such a
    chunk: the mask updates and the prior's corrections fall on the same steps for all slots
    (each costs all slots, once per step on which any slot needs it).
    """
    chunk = math.lcm(settings.mask.period if settings.mask.enabled else 1,
                     settings.prior.every if settings.prior.active else 1)
    return chunk * math.ceil(MIN_CHUNK_STEPS / chunk)


def _row(tree, i):
    return jax.tree.map(lambda a: a[i], tree)


def _stack(rows):
    return jax.tree.map(lambda *a: np.stack(a), *rows)


class SlotScheduler:
    """Runs searches through ``slots`` search slots (see the module docstring).

    Args:
      models, settings, kind: the search (as for :func:`sce_jax.search.engine.explain_batch`).
      params: the models' parameters, placed (replicated on ``mesh`` when there is one).
      slots: searches in flight; rounded up to a multiple of the mesh's devices.
      chunk_steps: steps of every slot between two refills (default: :func:`aligned_chunk_steps`;
        a slot whose attempt ends inside a chunk idles for the rest of it).
      min_slots: once every search has started, the state is halved (its busy slots kept)
        whenever at most half of it is busy, down to this many slots, so the last searches
        do not drag idle slots along (one more compilation per size). Default: ``slots / 8``
        on CPU, where a step costs in proportion to the slots, but never below
        :data:`MIN_SHRUNK_SLOTS` (a state that small costs less to step idle than to compile
        again); ``slots`` (never) on accelerators, where a step of a full state costs about
        what a step of one slot does.
      mesh: the slots are sharded over its ``data`` axis (one process only).
    """

    def __init__(self, models: engine.SearchModels, settings, kind: str, params, *,
                 slots: int, chunk_steps: int | None = None, min_slots: int | None = None,
                 mesh=None):
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        if jax.process_count() > 1:
            raise ValueError("the slot engine runs in one process; with several processes "
                             "use the batch engine (engine = 'batch')")
        chunk_steps = aligned_chunk_steps(settings) if chunk_steps is None else int(chunk_steps)
        self.search = SlotSearch(models, settings, kind, chunk_steps)
        self.settings = settings
        self.params = params
        self.mesh = mesh
        self.slots = parallel.padded_size(slots, mesh)
        if min_slots is None:
            min_slots = (max(self.slots // 8, min(self.slots, MIN_SHRUNK_SLOTS))
                         if jax.default_backend() == "cpu" else self.slots)
        self.min_slots = parallel.padded_size(max(1, min_slots), mesh)
        self.work = SlotWork()
        self._encode = functools.partial(_encode, models=models, settings=settings, kind=kind)

    def _place(self, tree):
        return parallel.shard_batch(tree, self.mesh) if self.mesh is not None else tree

    def _take(self, state, rows):
        """The state of the slots ``rows`` only (a smaller state)."""
        state = _take_rows(state, np.asarray(rows, np.int32))
        return jax.device_put(state, parallel.batch_sharding(self.mesh)) if self.mesh is not None else state

    def _ingest(self, batch: Batch, groups, replays, queue, table) -> None:
        """Queues attempt 0 of each valid row of a block, encoding the block unless every
        valid row is a replay (``replays[i]``: the chunks of each attempt, or None)."""
        host = jax.tree.map(parallel.local_rows, batch)
        valid = np.asarray(host.valid, bool)
        groups = list(groups)
        replays = list(replays) if replays is not None else [None] * len(groups)
        rows = np.flatnonzero(valid[:len(groups)])
        enc = refs = None
        if any(replays[i] is None for i in rows):
            enc = self._encode(self.params, batch)
            if self.settings.prior.active:
                refs = jax.tree.map(parallel.local_rows, slot_search.references(
                    self.search, self.params, enc, batch.example_ids, batch.context))
            enc = jax.tree.map(parallel.local_rows, enc)
        members: dict[Hashable, list[_Search]] = collections.defaultdict(list)
        for i in rows:
            s = _Search(group=groups[i], enc=None if enc is None else _row(enc, i),
                        example_id=int(host.example_ids[i]),
                        region=np.asarray(host.regions[i], np.float32),
                        context=None if host.context is None else _row(host.context, i),
                        locked=np.zeros_like(host.regions[i], np.float32),
                        references=None if refs is None else _row(refs, i),
                        replay=replay_chunks(replays[i], self.settings, self.search.chunk_steps))
            members[groups[i]].append(s)
            queue.append(s)
        for key, searches in members.items():
            if key in table:
                raise ValueError(f"group {key!r} was given in two blocks; a group's rows come "
                                 "in one block")
            table[key] = _Group(searches, len(searches))

    def _inputs(self, occupants) -> SlotInputs:
        """Host arrays of every slot's attempt (free and replayed slots repeat a computed one:
        never run)."""
        filled = [o for o in occupants if o is not None and o[0].replay is None]
        rows = [o if o is not None and o[0].replay is None else filled[0] for o in occupants]
        return SlotInputs(
            enc=_stack([s.enc for s, _ in rows]),
            example_ids=np.asarray([s.example_id for s, _ in rows], np.int32),
            attempt=np.asarray([k for _, k in rows], np.int32),
            region=np.stack([s.region for s, _ in rows]),
            locked=np.stack([s.locked for s, _ in rows]),
            z_ref=np.stack([s.enc.z0 if s.references is None else s.references[0][k]
                            for s, k in rows]),
            decoded_ref=np.stack([s.enc.decoded0 if s.references is None else s.references[1][k]
                                  for s, k in rows]),
            context=None if rows[0][0].context is None else _stack([s.context for s, _ in rows]))

    def _input_shapes(self, block: Batch, width: int) -> SlotInputs:
        """The shapes of ``width`` slots' inputs for blocks shaped like ``block``."""
        sharding = parallel.batch_sharding(self.mesh) if self.mesh is not None else None
        enc = jax.eval_shape(self._encode, self.params, block)

        def rows(a, dtype=None):
            return jax.ShapeDtypeStruct((width,) + tuple(a.shape[1:]), dtype or a.dtype,
                                        sharding=sharding)

        return SlotInputs(enc=jax.tree.map(rows, enc), example_ids=rows(block.example_ids, np.int32),
                          attempt=rows(block.example_ids, np.int32),
                          region=rows(block.regions, np.float32),
                          locked=rows(block.regions, np.float32),
                          z_ref=rows(enc.z0), decoded_ref=rows(enc.decoded0),
                          context=jax.tree.map(rows, block.context))

    def _state_shapes(self, block: Batch, width: int):
        sharding = parallel.batch_sharding(self.mesh) if self.mesh is not None else None
        return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding),
                            self.search.state_shapes(self.params, self._input_shapes(block, width)))

    def compile(self, block: Batch):
        """Compiles a chunk for blocks shaped like ``block`` (arrays or
        ``jax.ShapeDtypeStruct``s); returns the ``jax.stages.Compiled`` (``memory_analysis()``
        tells what the slots need)."""
        state = self._state_shapes(block, self.slots)
        return slot_search.advance.lower(self.search, self.params, state).compile()

    def precompile(self, block: Batch) -> None:
        """Compiles everything a run over blocks like ``block`` (arrays) calls: the encoding,
        and the refill and the chunk at every state size, on empty states (nothing runs)."""
        enc = self._encode(self.params, block)
        if self.settings.prior.active:
            slot_search.references(self.search, self.params, enc, block.example_ids, block.context)
        zeros = lambda a: self._place(np.zeros(a.shape, a.dtype))  # noqa: E731
        width = self.slots
        state = jax.tree.map(zeros, self._state_shapes(block, width))
        while True:
            new = jax.tree.map(zeros, self._input_shapes(block, width))
            state = slot_search.begin(self.search, self.params, state,
                                      self._place(np.zeros(width, bool)), new)
            jax.block_until_ready(slot_search.advance(self.search, self.params, state))
            if not self._can_halve(width):
                return
            state, width = self._take(state, list(range(width // 2))), width // 2

    def _can_halve(self, width: int) -> bool:
        return width // 2 >= self.min_slots and parallel.padded_size(width // 2, self.mesh) == width // 2

    def run(self, blocks: Iterable[tuple[Batch, Iterable[Hashable]]]
            ) -> Iterator[tuple[Hashable, Explanation]]:
        """Yields ``(group, Explanation)`` (numpy, one row per search of the group, in block
        order) as soon as each group's searches have all their attempts."""
        for finished in self.run_chunks(blocks):
            yield from finished

    def run_chunks(self, blocks: Iterable[tuple]) -> Iterator[list[tuple[Hashable, Explanation]]]:
        """As :meth:`run`, but one list per chunk that finished groups (to commit together).

        A block may come with a third item, ``replays``: per row, None, or the steps each
        attempt of that search used in an earlier run of the same blocks (its records). Such a
        search is not computed again: it holds its slot for as many chunks as it did then and
        yields nothing, so every other search runs in the slot, beside the same state size
        and from the same chunk as in that run (a resumed run computes what an uninterrupted
        one did, to the bit).
        """
        blocks = iter(blocks)
        attempts = self.settings.attempts
        queue: collections.deque = collections.deque()    # (search, attempt) to start
        table: dict[Hashable, _Group] = {}
        slot_of: list = [None] * self.slots                # (search, attempt) per slot
        left = [0] * self.slots                            # chunks a replayed attempt still holds
        width = self.slots                                 # slots in the state now
        state = None
        exhausted = started = False                        # started: a chunk ran (or was replayed)
        while True:
            free = [i for i, o in enumerate(slot_of) if o is None]
            while len(queue) < len(free) and not exhausted:
                try:
                    batch, groups, *replays = next(blocks)
                except StopIteration:
                    exhausted = True
                    break
                new = collections.deque()
                clock = time.perf_counter()
                self._ingest(batch, groups, replays[0] if replays else None, new, table)
                self.work.seconds["encode"] += time.perf_counter() - clock
                queue.extend((s, 0) for s in new)
            fill = np.zeros(width, bool)
            for i in free:
                if not queue:
                    break
                slot_of[i] = queue.popleft()
                search, k = slot_of[i]
                fill[i] = search.replay is None
                left[i] = 0 if search.replay is None else search.replay[k]
            busy = sum(o is not None for o in slot_of)
            if not busy:
                return
            while (exhausted and not queue and started and busy <= width // 2
                   and self._can_halve(width)):
                keep = [i for i, o in enumerate(slot_of) if o is not None]
                keep += [i for i, o in enumerate(slot_of) if o is None][:width // 2 - len(keep)]
                if state is not None:
                    state = self._take(state, keep)
                slot_of, left = [slot_of[i] for i in keep], [left[i] for i in keep]
                fill, width = fill[keep], width // 2
                self.work.shrinks += 1
            finished, started = np.zeros(width, bool), True
            if any(o is not None and o[0].replay is None for o in slot_of):
                state, finished, locked, outcome = self._advance(state, slot_of, fill)
            for i, o in enumerate(slot_of):
                if o is not None and o[0].replay is not None:
                    left[i] -= 1
                    finished[i] = left[i] <= 0
            done_slots = [i for i in np.flatnonzero(finished) if slot_of[i] is not None]
            if not done_slots:
                continue
            ready = []
            clock = time.perf_counter()
            for i in done_slots:
                search, k = slot_of[i]
                slot_of[i] = None
                if search.replay is None:
                    search.attempts.append(_row(outcome, i))
                    search.locked = np.asarray(locked[i])
                if k + 1 < attempts:
                    queue.appendleft((search, k + 1))
                    continue
                group = table[search.group]
                group.pending -= 1
                if group.pending == 0:
                    del table[search.group]
                    if search.replay is None:
                        ready.append((search.group, _group_explanation(group.searches)))
            self.work.seconds["harvest"] += time.perf_counter() - clock
            if ready:
                yield ready

    def _advance(self, state, slot_of, fill):
        """Starts the attempts in ``fill`` and advances every slot one chunk; returns the
        state, which slots' attempts are over, and every slot's lock and outcome (numpy)."""
        clock = time.perf_counter()
        if fill.any():
            new = self._place(self._inputs(slot_of))
            if state is None:
                state = jax.tree.map(lambda s: self._place(np.zeros(s.shape, s.dtype)),
                                     self.search.state_shapes(self.params, new))
            state = jax.block_until_ready(
                slot_search.begin(self.search, self.params, state, self._place(fill), new))
            self.work.refills += int(fill.sum())
        self.work.seconds["refill"] += time.perf_counter() - clock
        clock = time.perf_counter()
        state, work, finished, locked, outcome = slot_search.advance(self.search, self.params, state)
        finished = np.array(parallel.local_rows(finished))
        self.work.seconds["advance"] += time.perf_counter() - clock
        self.work.chunks += 1
        self.work.computed += len(slot_of) * int(work.iterations)
        self.work.useful += int(work.useful)
        locked, outcome = jax.tree.map(parallel.local_rows, (locked, outcome))
        return state, finished, locked, outcome


def replay_chunks(steps_used, settings, chunk_steps: int) -> tuple[int, ...] | None:
    """The chunks each attempt of a search held its slot, from the steps its records hold.

    An attempt that ended inside the loop at step ``t < steps`` (found, or not finite) ran
    ``t + 1`` iterations; one that spent its budget ran ``steps``; a slot holds an attempt
    for ``ceil(iterations / chunk_steps)`` chunks.
    """
    if steps_used is None:
        return None
    budget = int(settings.steps)
    steps_used = list(steps_used)[:settings.attempts]
    steps_used += [budget] * (settings.attempts - len(steps_used))  # unknown: the budget
    iterations = [int(t) + 1 if int(t) < budget else budget for t in steps_used]
    return tuple(max(1, -(-n // chunk_steps)) for n in iterations)


def _group_explanation(searches: list[_Search]) -> Explanation:
    per_attempt = _stack([_stack(s.attempts) for s in searches])
    enc = _stack([s.enc for s in searches])
    return engine.explanation(enc, per_attempt)
