"""The slot engine (continuous batching) gives the batch engine's results, whatever the slot."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sce_jax import Explainer
from sce_jax.search import slots
from sce_jax.search.slots import SlotInputs
from tests.run_helpers import script_arrays
from tests.search_helpers import slot_config as config
from tests.search_helpers import uneven_inputs
from tests.toy_models import gaussian_prior, mean_colour_classifier, toy_generator

PER_ATTEMPT = ("image", "latent", "mask", "prob_after", "pixel_l1", "latent_l2")


def assert_same(streamed: dict, batch, rows, atol):
    assert sorted(streamed) == list(rows)
    for i in rows:
        got = streamed[i]
        assert got.steps[0].tolist() == batch.steps[i].tolist(), i
        assert got.success[0].tolist() == batch.success[i].tolist(), i
        assert got.no_second_reason[0].tolist() == batch.no_second_reason[i].tolist(), i
        assert got.stalled[0].tolist() == batch.stalled[i].tolist(), i
        for name in PER_ATTEMPT:
            np.testing.assert_allclose(getattr(got, name)[0], getattr(batch, name)[i], atol=atol,
                                       err_msg=f"{name} of example {i}")
        for name in ("target", "prediction", "near_boundary"):
            assert getattr(got, name)[0] == getattr(batch, name)[i]
        np.testing.assert_allclose(got.reconstruction[0], batch.reconstruction[i], atol=atol)


@pytest.fixture(scope="module")
def explainer():
    return Explainer(toy_generator(), mean_colour_classifier(), config())


def test_fewer_slots_than_examples_give_the_batch_engine_results(explainer):
    images, targets, ids = uneven_inputs()
    batch = explainer.explain(images, targets, example_ids=ids)
    # the test means something only if the searches end at different steps
    assert len(set(batch.steps.ravel().tolist())) >= 3 and batch.success.any() and not batch.success.all()
    streamed = dict(explainer.explain_stream(iter(images), targets, example_ids=ids, slots=3,
                                             chunk_steps=4))
    assert_same(streamed, batch, range(len(images)), atol=1e-5)


def test_a_stalled_search_frees_its_slot_and_matches_the_batch_engine():
    """The stall rule ends the second attempts early (search/loop.py); the slot engine refills
    their slots at once and still writes the batch engine's results."""
    images, targets, ids = uneven_inputs()
    explainer = Explainer(toy_generator(), mean_colour_classifier(),
                          config(**{"stall.window": 5}))
    batch = explainer.explain(images, targets, example_ids=ids)
    assert batch.stalled[:, 1].all() and batch.success[:, 0].all()
    streamed = dict(explainer.explain_stream(iter(images), targets, example_ids=ids, slots=3,
                                             chunk_steps=4))
    assert_same(streamed, batch, range(len(images)), atol=1e-5)


def test_prior_and_adam_in_slots_match_the_batch_engine():
    """Per-slot step counters drive the prior's ``every`` and Adam's own step count."""
    images, targets, ids = uneven_inputs(5)
    c = config(optimizer="adam", learning_rate=0.02, lock=False, **{"prior.enabled": True,
                                                                    "prior.every": 3})
    explainer = Explainer(toy_generator(), mean_colour_classifier(), c, prior=gaussian_prior())
    batch = explainer.explain(images, targets, example_ids=ids)
    assert len(set(batch.steps.ravel().tolist())) >= 2
    streamed = dict(explainer.explain_stream(images, targets, example_ids=ids, slots=2,
                                             chunk_steps=3))
    # the toy prior's Euler steps amplify fusion-order rounding (see test_prior_search.py)
    assert_same(streamed, batch, range(len(images)), atol=5e-4)


def test_a_refilled_slot_keeps_nothing_of_its_previous_occupant(explainer):
    images, targets, ids = uneven_inputs(6)
    params = explainer.search_params
    scheduler = explainer.slot_scheduler("class", slots=3, chunk_steps=4)  # test 1's shapes
    search = scheduler.search
    batch, _ = explainer.prepare_batch(images, targets, kind="class", example_ids=ids)
    enc = scheduler._encode(params, batch)

    def inputs(rows, attempt, locked):
        rows = np.asarray(rows)
        return SlotInputs(enc=jax.tree.map(lambda a: a[rows], enc), example_ids=jnp.asarray(ids[rows]),
                          attempt=jnp.asarray(attempt, jnp.int32),
                          region=jnp.ones((len(rows), 16, 16, 1)), locked=locked,
                          z_ref=enc.z0[rows], decoded_ref=enc.decoded0[rows])

    every = jnp.ones(3, bool)
    state = slots.fresh(search, params, every, inputs([0, 1, 2], [0, 0, 0], jnp.zeros((3, 16, 16, 1))))
    for _ in range(2):  # the occupants move: momentum, masks, step counters, best state
        state = slots.advance(search, params, state)[0]
    assert int(state.loop.step[1]) == 8
    assert float(jnp.abs(jax.tree.leaves(state.loop.opt_state)[0][1]).max()) > 0
    lock = jnp.zeros((3, 16, 16, 1)).at[1, :8].set(1.0)   # the new occupant's own lock
    second = inputs([3, 4, 5], [1, 1, 1], lock)
    refilled = slots.begin(search, params, state, jnp.asarray([False, True, False]), second)
    alone = slots.fresh(search, params, every, second)
    for new, ref, old in zip(jax.tree.leaves(refilled), jax.tree.leaves(alone),
                             jax.tree.leaves(state)):
        np.testing.assert_array_equal(np.asarray(new)[1], np.asarray(ref)[1])   # as if fresh
        np.testing.assert_array_equal(np.asarray(new)[::2], np.asarray(old)[::2])   # untouched
    assert float(refilled.loop.pixel_mask[1, :8].max()) == 0.0   # locked area not editable


def test_slots_sharded_over_two_devices_match_the_batch_engine(tmp_path, explainer):
    images, targets, ids = uneven_inputs(5)
    batch = explainer.explain(images, targets, example_ids=ids)
    sharded = script_arrays("tests.sharded_slots_script", tmp_path / "slots.npz")
    np.testing.assert_allclose(sharded["image"], batch.image, atol=1e-5)
    np.testing.assert_array_equal(sharded["steps"], batch.steps)
    np.testing.assert_array_equal(sharded["success"], batch.success)


def test_groups_of_several_searches_come_out_whole_and_work_is_counted(explainer):
    """Rows sharing a group key (one image, several targets) are yielded together, in order."""
    images, _, ids = uneven_inputs(3)
    rows = np.array([0, 0, 1, 2, 2])
    targets = np.array([1, 0, 1, 1, 0], np.int32)   # target 0: the prediction, reached at once
    batch = explainer.explain(images[rows], targets, example_ids=ids[rows])
    block, _ = explainer.prepare_batch(images[rows], targets, kind="class", example_ids=ids[rows])
    scheduler = explainer.slot_scheduler("class", slots=8, chunk_steps=4, min_slots=1)
    groups = dict(scheduler.run([(block, ["a", "a", "b", "c", "c"])]))
    assert sorted(groups) == ["a", "b", "c"]
    for key, members in {"a": [0, 1], "b": [2], "c": [3, 4]}.items():
        assert groups[key].target.tolist() == targets[members].tolist()
        assert groups[key].steps.tolist() == batch.steps[members].tolist()
    work = scheduler.work
    assert work.useful == sum(min(s + 1, 30) for s in batch.steps.ravel().tolist())
    assert 0 < work.useful <= work.computed <= 8 * 4 * work.chunks
    assert work.shrinks >= 1  # the last searches ran in a smaller state, with the same results


def test_bad_slot_settings_are_refused(explainer):
    with pytest.raises(ValueError, match="slots must be at least 1"):
        explainer.slot_scheduler("class", slots=0)
    with pytest.raises(ValueError, match="chunk_steps must be at least 1"):
        explainer.slot_scheduler("class", slots=2, chunk_steps=0)


def test_a_replayed_schedule_gives_the_remaining_searches_the_same_bits(explainer):
    """Resume: the searches already done are replayed from their steps (not computed), and
    every other search runs in the same slot, chunk and state size as in the full run: the
    same results to the bit, shrinking state included."""
    images, _, ids = uneven_inputs(8)
    targets = np.array([1, 0, 1, 1, 0, 1, 1, 0], np.int32)  # 0: reached at once
    blocks = [explainer.prepare_batch(images[i:i + 2], targets[i:i + 2], kind="class",
                                      example_ids=ids[i:i + 2])[0] for i in range(0, 8, 2)]
    groups = [[int(ids[i]), int(ids[i + 1])] for i in range(0, 8, 2)]

    def run(done=None):
        scheduler = explainer.slot_scheduler("class", slots=4, chunk_steps=4, min_slots=1)
        items = [(b, g) if done is None else (b, g, [done.get(k) for k in g])
                 for b, g in zip(blocks, groups)]
        return dict(scheduler.run(items)), scheduler.work

    full, work = run()
    assert work.shrinks >= 1 and len({r.steps.tolist()[0][0] for r in full.values()}) >= 3
    done = {k: full[k].steps[0].tolist() for k in (100, 101, 103, 104)}  # in flight at a kill: 102
    resumed, resumed_work = run(done)
    assert sorted(resumed) == [k for k in sorted(full) if k not in done]
    for key, got in resumed.items():
        for name, value in got._asdict().items():
            np.testing.assert_array_equal(value, getattr(full[key], name), err_msg=f"{name} of {key}")
    assert resumed_work.useful < work.useful  # the replayed searches were not computed
