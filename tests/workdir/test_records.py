"""Manifest records: what a counterfactual's outcome says, and the run-level figures on it."""

import types

import numpy as np
import pytest

from sce_jax.evaluation import desiderata
from sce_jax.workdir import records


@pytest.mark.parametrize("success, near, spot, expected", [
    (True, False, False, "found"),
    (False, False, False, "not_found"),
    (True, True, False, "near_boundary"),     # flipped, but the original was at the boundary
    (False, False, True, "no_second_reason"),
    (True, True, True, "near_boundary"),
])
def test_outcome_says_what_a_record_means(success, near, spot, expected):
    assert records.outcome(success, near, spot) == expected
    if expected == "not_found":  # ended by the stall rule instead of its budget
        assert records.outcome(success, near, spot, stalled=True) == "stalled"


def _result(b=1, k=2, **overrides):
    fields = dict(prediction=[3], prob_prediction=[0.9], target=[3], target_value=[0.0],
                  prob_before=[0.1], near_boundary=[False], success=[[True, True]],
                  nonfinite=[[False, True]], steps=[[4, 9]], no_second_reason=[[False, False]],
                  stalled=[[False, False]],
                  latent_l1=[[0.1, 0.2]], latent_l2=[[0.3, 0.4]], pixel_l1=[[0.01, 0.02]],
                  pixel_l2=[[0.5, 0.6]])
    fields.update(overrides)
    return types.SimpleNamespace(**{k_: np.asarray(v) for k_, v in fields.items()})


def test_a_record_is_judged_on_the_written_image():
    original = np.zeros((4, 4, 1), np.float32)
    quantised = np.zeros((4, 4, 1), np.uint8)
    quantised[0, 0] = 255  # one of 16 pixels changed
    common = dict(example_id=7, source="x.png", label=None, target_kind="other", prob8=0.93,
                  decision8=1, original=original, quantised=quantised, files={})
    ok = records.counterfactual_record(_result(), 0, 0, success8=True, **common)
    assert ok["success"] and ok["outcome"] == "found" and ok["changed_fraction"] == 1 / 16
    assert ok["target_value"] is None and ok["prob_target_after"] == 0.93
    # the 8-bit image missed the goal although the float one reached it
    missed = records.counterfactual_record(_result(), 0, 0, success8=False, **common)
    assert not missed["success"] and missed["success_float"] and missed["outcome"] == "not_found"
    # a numerical failure never counts as a success
    assert not records.counterfactual_record(_result(), 0, 1, success8=True, **common)["success"]
    near = records.counterfactual_record(_result(near_boundary=[True]), 0, 0, success8=True, **common)
    assert near["outcome"] == "near_boundary"
    # a search the stall rule ended: no counterfactual, and it says so
    stalled = records.counterfactual_record(_result(success=[[False, False]], stalled=[[True, False]]),
                                            0, 0, success8=False, **common)
    assert stalled["stalled"] and stalled["outcome"] == "stalled" and stalled["steps"] == 4


def test_attempt_quality_figures():
    produced = [dict(example_id=0, attempt=0, near_boundary=False),
                dict(example_id=0, attempt=1, near_boundary=False, no_second_reason=True),
                dict(example_id=1, attempt=0, near_boundary=True),
                dict(example_id=1, attempt=1, near_boundary=True)]
    valid = np.asarray([True, False, True, True])
    per_row = {"background_share": np.asarray([0.1, 0.0, 0.2, 0.8]),
               "background_spot": np.asarray([False, False, False, True])}
    q = desiderata.attempt_quality(produced, valid, per_row)
    assert q["near_boundary_images"] == 0.5
    assert q["no_second_reason_rate"] == 0.5
    assert q["later_background_share"] == pytest.approx(0.8)  # valid later attempts: row 3
    assert q["later_spot_rate"] == 1.0
