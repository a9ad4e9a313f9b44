"""The stall rule: an attempt that at its pace cannot reach its goal within the budget ends
before it, says so, and changes nothing for the searches that find a counterfactual
(search/loop.py, "Stalled searches")."""

import numpy as np

from sce_jax import Explainer
from tests.search_helpers import slot_config, small_config, uneven_inputs
from tests.toy_models import greenish_images, mean_colour_classifier, toy_generator


def test_a_search_that_cannot_rise_stops_after_the_window():
    """A classifier with a tiny input gradient: raw SGD barely moves p(target) (0.4987 after 30
    steps): its log-odds rise far less than min_rise over the window, and every search ends as
    soon as there is a window to measure (step 0 + window)."""
    clf, x = mean_colour_classifier(scale=0.01), greenish_images(3, seed=2)
    common = {"learning_rate": 0.2, "steps": 30, "l2": 0.0, "goal_probability": 0.9}
    budget = Explainer(toy_generator(), clf, small_config(**common, **{"stall.window": 0})).explain(
        x, targets=[1] * 3)
    stalled = Explainer(toy_generator(), clf, small_config(**common, **{"stall.window": 6})).explain(
        x, targets=[1] * 3)
    assert budget.steps[:, 0].tolist() == [30] * 3 and not budget.stalled.any()
    assert stalled.steps[:, 0].tolist() == [6] * 3 and stalled.stalled[:, 0].all()
    assert not stalled.success.any() and not budget.success.any()
    assert (np.asarray(stalled.prob_after) < 0.5).all()
    # without the flat test (min_rise 0) the pace counts from after x budget = step 15 on: far
    # too slow for the goal 0.9 in the 14 steps left, so every search ends there
    late = Explainer(toy_generator(), clf, small_config(**common, **{
        "stall.window": 6, "stall.min_rise": 0.0, "stall.after": 0.5})).explain(x, targets=[1] * 3)
    assert late.steps[:, 0].tolist() == [15] * 3 and late.stalled[:, 0].all()


def test_found_counterfactuals_are_the_ones_found_without_the_rule():
    """First attempts rise steadily and find theirs (steps 7-9); second attempts, locked out of
    what the first changed, spend the 30-step budget without (p(target) barely moves). With the
    rule the first ones are unchanged and every second one ends early, stalled."""
    images, targets, ids = uneven_inputs()

    def explain(window):
        c = slot_config(**{"stall.window": window, "stall.slack": 2.0})
        return Explainer(toy_generator(), mean_colour_classifier(), c).explain(images, targets,
                                                                               example_ids=ids)

    full, early = explain(0), explain(5)
    assert full.success[:, 0].all() and not full.success[:, 1].any()
    assert (full.steps[:, 1] == 30).all() and not full.stalled.any()
    np.testing.assert_array_equal(early.success, full.success)
    np.testing.assert_array_equal(early.steps[:, 0], full.steps[:, 0])
    np.testing.assert_allclose(early.image[:, 0], full.image[:, 0], atol=1e-6)
    assert early.stalled[:, 1].all() and not early.stalled[:, 0].any()
    assert (early.steps[:, 1] < 30).all()
    assert early.steps.sum() < 0.5 * full.steps.sum()
