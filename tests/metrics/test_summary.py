"""The run summary over manifest records: rates, NaN-robust statistics, skipped records."""

import json
import math

import pytest

from sce_jax import metrics


def record(example_id, attempt, success, **fields):
    return {"example_id": example_id, "attempt": attempt, "status": "ok", "reason": None,
            "target": 1, "source": f"img{example_id}.png", "files": {"original": "x.png"},
            "success": success, **fields}


RECORDS = [
    record(0, 0, True, pixel_l1=0.1, cout=0.5, surrogate_success=True, nonfinite=False),
    record(0, 1, False, pixel_l1=0.9, cout=-0.2, nonfinite=False),
    record(1, 0, True, pixel_l1=0.3, cout=math.nan, surrogate_success=False, nonfinite=False),
    record(1, 1, True, pixel_l1=None, surrogate_success=True, nonfinite=True),
    {"example_id": 2, "status": "skipped", "reason": "unreadable", "target": -1, "attempt": -1,
     "files": {}},
]


def test_counts_and_rates_by_hand():
    s = metrics.summarise_records(RECORDS)
    assert (s["num_records"], s["num_counterfactuals"], s["num_skipped_records"]) == (5, 4, 1)
    assert (s["num_images"], s["num_skipped"], s["num_valid"]) == (3, 1, 3)
    assert s["flip_rate"] == pytest.approx(3 / 4)              # 3 of the 4 ok records
    assert s["flip_rate_first_attempt"] == 1.0                 # attempts 0: both succeeded
    assert s["images_with_valid"] == 1.0                       # images 0 and 1 (2 is skipped)
    assert s["non_adversarial_rate"] == pytest.approx(2 / 3)   # surrogate on the 3 successes


def test_found_rates_leave_out_originals_near_the_boundary():
    rows = [record(0, 0, True, near_boundary=False), record(0, 1, True, no_second_reason=True),
            record(1, 0, True, near_boundary=True), record(1, 1, False, near_boundary=True),
            record(2, 0, False), record(2, 1, True)]
    s = metrics.summarise_records(rows)
    assert (s["num_near_boundary"], s["num_no_second_reason"]) == (1, 1)
    # found = success, not near the boundary, not a rejected background spot; image 1 left out
    assert s["found_rate"] == pytest.approx(2 / 4)
    assert s["found_rate_first_attempt"] == pytest.approx(1 / 2)
    assert s["flip_rate"] == pytest.approx(4 / 6)


def test_stalled_attempts_and_the_steps_spent_on_nothing():
    rows = [record(0, 0, True, steps=10), record(0, 1, False, steps=100),
            record(1, 0, False, steps=40, stalled=True), record(1, 1, True, steps=50,
                                                                 no_second_reason=True)]
    s = metrics.summarise_records(rows)
    assert s["num_stalled"] == 1
    # everything but the one found attempt (10 steps) of 200 found nothing
    assert s["steps_share_not_found"] == pytest.approx(190 / 200)
    assert metrics.summarise_records([record(0, 0, True, steps=0)])["steps_share_not_found"] is None


def test_run_summary_is_summarise_records_plus_the_run_means():
    s = metrics.run_summary(RECORDS)
    full = metrics.summarise_records(RECORDS)
    assert set(s) == set(metrics.summary.RUN_FIGURES) | set(metrics.summary.RUN_MEANS)
    assert all(s[k] == full[k] for k in metrics.summary.RUN_FIGURES)
    assert s["num_skipped"] == 1 and s["flip_rate"] == pytest.approx(3 / 4)
    assert s["mean_pixel_l1"] == pytest.approx(0.2)     # successful only, the missing one skipped
    assert s["mean_latent_l1"] is None                  # no record has it
    steps = [dict(r, steps=n) for r, n in zip(RECORDS[:4], (10, 20, 30, 40))] + RECORDS[4:]
    assert metrics.run_summary(steps)["mean_steps"] == pytest.approx(25.0)  # over every attempt


def test_metrics_over_successful_counterfactuals_skip_nans():
    m = metrics.summarise_records(RECORDS)["metrics"]
    # pixel_l1 over successes: 0.1, 0.3 and one missing
    assert m["pixel_l1"]["mean"] == pytest.approx(0.2)
    assert m["pixel_l1"]["median"] == pytest.approx(0.2)
    assert (m["pixel_l1"]["count"], m["pixel_l1"]["num_nonfinite"]) == (2, 1)
    # cout over successes: 0.5, NaN, missing -> one finite value
    assert (m["cout"]["mean"], m["cout"]["count"], m["cout"]["num_nonfinite"]) == (0.5, 1, 2)
    # booleans become rates: nonfinite True in 1 of 3
    assert m["nonfinite"] == {"rate": pytest.approx(1 / 3), "count": 3}
    assert "example_id" not in m and "files" not in m and "surrogate_success" not in m


def test_metrics_over_all_produced_counterfactuals():
    m = metrics.summarise_records(RECORDS, over="ok", fields=["pixel_l1"])["metrics"]
    # 0.1, 0.9, 0.3 (and a missing one): mean 1.3 / 3, median 0.3, population std
    assert m["pixel_l1"]["mean"] == pytest.approx(1.3 / 3)
    assert m["pixel_l1"]["median"] == pytest.approx(0.3)
    mean = 1.3 / 3
    std = math.sqrt(((0.1 - mean) ** 2 + (0.9 - mean) ** 2 + (0.3 - mean) ** 2) / 3)
    assert m["pixel_l1"]["std"] == pytest.approx(std)
    assert list(m) == ["pixel_l1"]


def test_summary_is_strict_json():
    s = metrics.summarise_records(RECORDS)
    assert json.loads(json.dumps(s, allow_nan=False)) == s


def test_empty_and_all_skipped_runs():
    s = metrics.summarise_records(RECORDS[-1:])
    assert (s["num_images"], s["num_skipped"], s["flip_rate"]) == (1, 1, None)
    assert s["metrics"] == {}
    assert metrics.summarise_values([math.inf, None])["count"] == 0


def test_malformed_records_are_named():
    with pytest.raises(ValueError, match=r"record for example 7, attempt 0 has status 'ok' but "
                                         r"no boolean 'success' \(got None\)"):
        metrics.summarise_records([{"example_id": 7, "attempt": 0, "status": "ok"}])
    with pytest.raises(ValueError, match=r"record 1 is not a dict with an 'example_id'"):
        metrics.summarise_records([RECORDS[0], {"attempt": 0}])
    with pytest.raises(ValueError, match=r"over must be one of \('successful', 'ok'\)"):
        metrics.summarise_records(RECORDS, over="all")
