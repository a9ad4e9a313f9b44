"""The workdir format (sce_jax/workdir/layout.py): names, parts -> manifest, reading, the resume check."""

import json
import os

import pytest

from sce_jax.workdir import layout as workdir
from sce_jax.workdir.inputs import InputSetChangedError, input_record


def _record(example_id, target=1, attempt=0, **fields):
    return {"example_id": example_id, "source": f"img{example_id}.png", "label": None,
            "status": "ok", "reason": None, "target": target, "attempt": attempt, "files": {},
            **fields}


def test_image_names_are_the_ones_the_manifest_links():
    assert workdir.image_file(7, "original") == os.path.join("images", "0000007", "original.png")
    assert workdir.image_file(7, "counterfactual", 2, 1) == os.path.join("images", "0000007", "cf_t2_a1.png")
    assert workdir.image_file(7, "difference", 2, 1).endswith("diff_t2_a1.png")
    assert workdir.image_file(7, "mask", 0, 3).endswith("mask_t0_a3.png")
    with pytest.raises(ValueError, match="unknown image kind 'heat'"):
        workdir.image_file(7, "heat", 0, 0)


def test_parts_assemble_into_one_sorted_manifest(tmp_path):
    root = str(tmp_path)
    workdir.make_output_folders(root)
    workdir.write_part(root, 1, [_record(3, attempt=1), _record(3)])
    workdir.write_part(root, 0, [_record(2)])
    workdir.write_part(root, 0, [])  # an empty batch commits nothing
    (tmp_path / "parts" / ".p000-000000009.jsonl.123-ab.tmp").write_text("{half")  # a killed write
    assert sorted(os.listdir(tmp_path / "parts")) == [
        ".p000-000000009.jsonl.123-ab.tmp", "p000-000000002.jsonl", "p001-000000003.jsonl"]
    assert workdir.finished_ids(root) == {2, 3}
    records = workdir.assemble_manifest(root)
    assert [(r["example_id"], r["attempt"]) for r in records] == [(2, 0), (3, 0), (3, 1)]
    assert workdir.read_manifest(root) == records
    # process 1 removes only its own temporaries; process 0 also the run-level ones
    (tmp_path / ".manifest.jsonl.1-cd.tmp").write_text("")
    assert workdir.remove_stale_temporaries(root, [], process_index=1) == 0
    assert workdir.remove_stale_temporaries(root, [], process_index=0) == 2


def test_unreadable_files_are_named(tmp_path):
    root = str(tmp_path)
    with pytest.raises(workdir.WorkdirReadError, match="manifest.jsonl does not exist"):
        workdir.read_manifest(root)
    assert workdir.read_summary(root) is None
    (tmp_path / "summary.json").write_text("[1]")
    with pytest.raises(workdir.WorkdirReadError, match="summary.json: expected a JSON object"):
        workdir.read_summary(root)
    (tmp_path / "run_config.json").write_text("{oops")
    with pytest.raises(workdir.WorkdirReadError, match="run_config.json: cannot be read as JSON"):
        workdir.read_run_config(root)


def test_resume_check_refuses_another_config_or_input_set(tmp_path):
    root = str(tmp_path)
    sources = ["a.png", "b.png"]
    config = {"data": {"source": "d"}, "generator": {}, "classifier": {}, "search": {"steps": 3},
              "targets": {"kind": "other", "class_index": -1, "class_name": ""},
              "batch_size": 2}
    workdir.write_run_record(root, config, "d", sources, resumed=False)
    records = [dict(_record(0), source="a.png")]
    workdir.check_resume(root, dict(config, batch_size=4), "d", sources, records)  # not result-defining
    with pytest.raises(workdir.ResumeConfigError, match=r"another config \(differs in: search\)"):
        workdir.check_resume(root, dict(config, search={"steps": 4}), "d", sources, records)
    with pytest.raises(InputSetChangedError, match="added: c.png"):
        workdir.check_resume(root, config, "d", sources + ["c.png"], records)
    # a workdir from before targets.class_name and inputs.json resumes, and then gets inputs.json
    old = dict(config, targets={"kind": "other", "class_index": -1})
    workdir.write_json(os.path.join(root, workdir.RUN_CONFIG), old)
    os.remove(os.path.join(root, workdir.INPUTS))
    workdir.check_resume(root, config, "d", sources, records)
    workdir.write_run_record(root, config, "d", sources, resumed=True)
    with open(os.path.join(root, workdir.INPUTS)) as f:
        assert json.load(f) == input_record("d", sources)
    with open(os.path.join(root, workdir.RUN_CONFIG)) as f:
        assert json.load(f) == old  # a resume never rewrites the recorded config


def test_a_broken_run_config_stops_a_resume_with_one_message(tmp_path):
    from sce_jax.runs import loop as run

    (tmp_path / "run_config.json").write_text("{half")
    with pytest.raises(run.USER_ERRORS, match=r"run_config.json: cannot be read as JSON"):
        workdir.check_resume(str(tmp_path), {}, "d", [], [])
