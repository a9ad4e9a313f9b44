"""Manifest records in words (class names, the goal), results.csv, and throughput kept over
reruns."""

import csv
import json

import pytest

from sce_jax.workdir import layout as workdir
from sce_jax.workdir import record_names, results_table
from sce_jax.workdir import throughput as run_throughput

NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress")


def _record(**changes):
    record = {"example_id": 3, "status": "ok", "label": 1, "prediction": 1, "target": 1,
              "target_kind": "other", "attempt": 0, "prediction_after": 3, "success": True,
              "pixel_l1": 0.0123456789, "files": {"counterfactual": "images/0000003/cf_t1_a0.png"}}
    record.update(changes)
    return record


def test_names_and_goal_in_words():
    fields = record_names.named_fields(_record(), NAMES)
    assert fields == {"label_name": "Trouser", "prediction_name": "Trouser", "target_name": "Trouser",
                      "prediction_after_name": "Dress", "goal": "leave Trouser"}
    assert record_names.goal(_record(target=3, target_kind="class"), NAMES) == "reach Dress"
    assert record_names.goal(_record(target=2, target_kind="flip", target_value=1),
                             ("Bald", "Young", "Smiling")) == "flip attribute Smiling to 1"
    assert record_names.goal(_record(target=3, target_kind="class")) == "reach class 3"
    assert record_names.named_fields(_record(), None) == {"goal": "leave class 1"}
    skipped = {"example_id": 4, "status": "skipped", "target": -1, "label": None}
    assert record_names.named_fields(skipped, NAMES) == {"label_name": None, "target_name": None,
                                                         "goal": None}


def test_results_csv_has_the_main_columns(tmp_path):
    records = [record_names.with_names(_record(), NAMES),
               {"example_id": 4, "status": "skipped", "reason": "cannot decode", "target": -1}]
    results_table.write_results_csv(str(tmp_path), records)
    with open(tmp_path / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(results_table.COLUMNS)
    assert rows[0]["goal"] == "leave Trouser" and rows[0]["prediction_after_name"] == "Dress"
    assert rows[0]["pixel_l1"] == "0.0123457" and rows[0]["counterfactual"].endswith("cf_t1_a0.png")
    assert rows[1]["status"] == "skipped" and rows[1]["reason"] == "cannot decode"
    assert rows[1]["pixel_l1"] == ""


def test_results_csv_quotes_line_breaks_separators_and_quotes(tmp_path):
    names = ["cr\rname.png", "lf\nname.png", "crlf\r\nname.png", "comma,name.png",
             'quote"name.png', ' spaced "both", \r\n\r.png ']
    records = [_record(example_id=i, source=f"/data/{n}") for i, n in enumerate(names)]
    records.append({"example_id": 6, "status": "skipped", "source": "/data/x\r.png",
                    "reason": 'cannot decode image: "bad"\rline, two', "target": -1})
    path = results_table.write_results_csv(str(tmp_path), records)
    with open(path, "rb") as f:
        raw = f.read()
    assert raw.count(b"\r\n") >= len(records) + 1 and b'"/data/cr\rname.png"' in raw
    with open(path, newline="", encoding="utf-8") as f:
        table = list(csv.reader(f))
    assert len(table) == len(records) + 1 and table[0] == list(results_table.COLUMNS)
    expected = results_table.results_rows(records)
    assert [dict(zip(table[0], row)) for row in table[1:]] == [
        {c: str(v) for c, v in row.items()} for row in expected]
    assert [row[1] for row in table[1:]] == [f"/data/{n}" for n in names] + ["/data/x\r.png"]
    assert table[-1][3] == 'cannot decode image: "bad"\rline, two'


def test_a_rerun_without_work_keeps_the_throughput_of_the_runs_that_did_it(tmp_path):
    first = run_throughput.carry_over(None, {"elapsed_seconds": 20.0, "flip_rate": 0.5},
                                      produced=40, found=30)
    assert first["counterfactuals_per_second"] == pytest.approx(2.0)
    assert first["found_per_second"] == pytest.approx(1.5)
    workdir.write_summary(str(tmp_path), first)
    rerun = run_throughput.carry_over(workdir.read_summary(str(tmp_path)),
                                      {"elapsed_seconds": 0.0003, "flip_rate": 0.5}, produced=0,
                                      found=0)
    assert rerun["counterfactuals_per_second"] == pytest.approx(2.0)
    assert rerun["found_per_second"] == pytest.approx(1.5)
    assert rerun["elapsed_seconds"] == pytest.approx(20.0) and len(rerun["runs"]) == 1
    workdir.write_summary(str(tmp_path), rerun)
    resumed = run_throughput.carry_over(workdir.read_summary(str(tmp_path)),
                                        {"elapsed_seconds": 10.0}, produced=10, found=3)
    assert [r["counterfactuals"] for r in resumed["runs"]] == [40, 10]
    assert [r["found"] for r in resumed["runs"]] == [30, 3]
    assert resumed["counterfactuals_per_second"] == pytest.approx(50 / 30)
    assert resumed["found_per_second"] == pytest.approx(33 / 30)
    assert resumed["runs"][1]["counterfactuals_per_second"] == pytest.approx(1.0)
    assert resumed["runs"][1]["found_per_second"] == pytest.approx(0.3)


def test_a_summary_written_before_runs_were_listed_counts_as_one_run(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"counterfactuals_per_second": 0.5,
                                                       "elapsed_seconds": 80.0}))
    carried = run_throughput.carry_over(workdir.read_summary(str(tmp_path)),
                                        {"elapsed_seconds": 0.001}, 0, 0)
    assert carried["runs"] == [{"counterfactuals": 40, "found": None, "elapsed_seconds": 80.0,
                                "counterfactuals_per_second": 0.5, "found_per_second": None}]
    # its found counterfactuals were not counted: no rate rather than a wrong one
    assert carried["found_per_second"] is None
    assert carried["counterfactuals_per_second"] == pytest.approx(0.5)
