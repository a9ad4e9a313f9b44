"""End to end: explain_dataset on a handful of images with tiny random models (seconds)."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from sce_jax.runs import loop as run
from sce_jax.workdir.layout import ResumeConfigError
from tests import run_helpers as helpers

TIMING_FIELDS = ("counterfactuals_per_second", "elapsed_seconds", "runs")  # differ run to run


@pytest.fixture(scope="module")
def checkpoints(tiny_checkpoints):
    return tiny_checkpoints  # tests/conftest.py


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(folder / f"img{i}.png")
    (folder / "img2.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")  # corrupt
    return str(folder)


def tiny_config(checkpoints, source):
    return helpers.tiny_config(checkpoints, source, search__steps=4, output__report=True,
                               engine="auto")  # one process: the slot engine, as users run it


def _manifest(workdir):
    with open(os.path.join(workdir, "manifest.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_run_writes_images_manifest_summary_and_report(checkpoints, image_folder, tmp_path):
    workdir = str(tmp_path / "run")
    summary = run.explain_dataset(tiny_config(checkpoints, image_folder), workdir)
    records = _manifest(workdir)
    ok = [r for r in records if r["status"] == "ok"]
    skipped = [r for r in records if r["status"] == "skipped"]
    assert len(ok) == 4 * 2 and len(skipped) == 1
    assert skipped[0]["source"].endswith("img2.png") and "decode" in skipped[0]["reason"]
    assert sorted({r["example_id"] for r in ok}) == [0, 1, 3, 4]
    assert {r["attempt"] for r in ok} == {0, 1}
    for r in ok:
        assert r["target"] == r["prediction"]  # kind "other": leave the predicted class
        for name in ("original", "counterfactual", "difference", "mask"):
            path = os.path.join(workdir, r["files"][name])
            assert os.path.isfile(path), path
        cf = np.asarray(Image.open(os.path.join(workdir, r["files"]["counterfactual"])))
        assert cf.shape == (16, 16) and cf.dtype == np.uint8
        assert 0.0 <= r["prob_target_after"] <= 1.0 and r["steps"] <= 4
    assert summary["num_images"] == 5 and summary["num_skipped"] == 1
    assert summary["num_counterfactuals"] == 8
    assert summary["flip_rate"] == pytest.approx(np.mean([r["success"] for r in ok]))
    with open(os.path.join(workdir, "report.html")) as f:
        html = f.read()
    assert "img2.png" in html and ok[0]["files"]["counterfactual"] in html


def test_run_by_class_name_says_what_it_does_and_records_names(checkpoints, image_folder, tmp_path,
                                                                capsys):
    """targets.class_name, class names and the goal in each record, results.csv, and the
    loading/compiling messages before the progress line."""
    import csv

    config = helpers.tiny_config(checkpoints, image_folder, search__steps=2, search__attempts=1,
                                output__report=False, classifier__class_names=("cat", "dog", "owl"),
                                targets__kind="class", targets__class_name="Owl")
    workdir = str(tmp_path / "run")
    run.explain_dataset(config, workdir)
    err = capsys.readouterr().err
    assert err.index("loading the models and the data") < err.index("compiling the search") < err.index("[")
    ok = [r for r in _manifest(workdir) if r["status"] == "ok"]
    assert {(r["target"], r["target_name"], r["goal"]) for r in ok} == {(2, "owl", "reach owl")}
    assert all(r["prediction_name"] == ("cat", "dog", "owl")[r["prediction"]] for r in ok)
    with open(os.path.join(workdir, "run_config.json")) as f:
        assert json.load(f)["targets"] == {"kind": "class", "class_index": 2, "class_name": ""}
    with open(os.path.join(workdir, "results.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 and {row["goal"] for row in rows if row["status"] == "ok"} == {"reach owl"}


@pytest.mark.parametrize("engine", ["batch", "slots"])
def test_resume_after_interruption_gives_the_uninterrupted_manifest(checkpoints, image_folder, tmp_path,
                                                                    engine):
    config = tiny_config(checkpoints, image_folder)
    config.engine = engine
    full_dir, resumed_dir = str(tmp_path / "full"), str(tmp_path / "resumed")
    run.explain_dataset(config, full_dir)

    state = run.RunState()
    state.stop.set()  # as after SIGTERM: finish the batch in flight, then stop
    partial = run.explain_dataset(config, resumed_dir, state=state)
    assert partial["complete"] is False
    assert 0 < len(_manifest(resumed_dir)) < len(_manifest(full_dir))
    run.explain_dataset(config, resumed_dir)
    assert _manifest(resumed_dir) == _manifest(full_dir)
    for r in _manifest(full_dir):
        if r["status"] == "ok":
            a = np.asarray(Image.open(os.path.join(full_dir, r["files"]["counterfactual"])))
            b = np.asarray(Image.open(os.path.join(resumed_dir, r["files"]["counterfactual"])))
            np.testing.assert_array_equal(a, b)
    # a rerun of a finished run does nothing and duplicates nothing
    with open(os.path.join(resumed_dir, "summary.json")) as f:
        before = json.load(f)
    again = run.explain_dataset(config, resumed_dir)
    # ... and keeps the throughput of the two runs that did the work (interrupted, resumed)
    assert again["counterfactuals_per_second"] == before["counterfactuals_per_second"] > 0
    assert [r["counterfactuals"] > 0 for r in again["runs"]] == [True, True]
    assert _manifest(resumed_dir) == _manifest(full_dir)


def test_slot_and_batch_engines_write_the_same_records(checkpoints, image_folder, tmp_path):
    """The slot engine (one slot fewer than the images, chunks of 3 steps) writes what the
    batch engine writes, one part file per chunk that finished examples."""
    manifests = {}
    for engine in ("batch", "slots"):
        config = tiny_config(checkpoints, image_folder)
        config.search.steps = 6
        config.output.report = False
        config.engine, config.slots, config.chunk_steps = engine, 3, 3
        run.explain_dataset(config, str(tmp_path / engine))
        manifests[engine] = _manifest(str(tmp_path / engine))
    keys = ("example_id", "status", "target", "attempt", "steps", "success", "prediction_after")
    assert [[r.get(k) for k in keys] for r in manifests["slots"]] == [
        [r.get(k) for k in keys] for r in manifests["batch"]]
    for a, b in zip(manifests["slots"], manifests["batch"]):
        if a["status"] == "ok":
            assert a["prob_target_after"] == pytest.approx(b["prob_target_after"], abs=1e-4)
            assert a["files"] == b["files"]
    parts = os.listdir(tmp_path / "slots" / "parts")
    assert len(parts) >= 2 and len({r["example_id"] for r in manifests["slots"]}) == 5


def test_resume_with_another_config_is_refused(checkpoints, image_folder, tmp_path):
    config = tiny_config(checkpoints, image_folder)
    workdir = str(tmp_path / "run")
    state = run.RunState()
    state.stop.set()
    run.explain_dataset(config, workdir, state=state)
    config.search.steps = 5
    with pytest.raises(ResumeConfigError, match="differs in: search"):
        run.explain_dataset(config, workdir)


def test_bad_run_level_inputs_stop_before_any_work(checkpoints, image_folder, tmp_path):
    config = tiny_config(checkpoints, image_folder)
    config.data.source = str(tmp_path / "missing")
    with pytest.raises(Exception, match="does not exist"):
        run.explain_dataset(config, str(tmp_path / "a"))
    config = tiny_config(checkpoints, image_folder)
    config.data.image_size = (15, 16)
    with pytest.raises(ValueError, match="not a multiple"):
        run.explain_dataset(config, str(tmp_path / "b"))
    config = tiny_config(checkpoints, image_folder)
    config.targets.kind = "class"
    config.targets.class_index = 7
    with pytest.raises(ValueError, match="out of range"):
        run.explain_dataset(config, str(tmp_path / "c"))
    for name in ("a", "b", "c"):
        assert not os.path.exists(tmp_path / name / "manifest.jsonl")


def test_csv_targets_over_a_padded_batch_with_an_empty_target(checkpoints, image_folder, tmp_path):
    # 3 rows, batches of 2: the second batch is padded, and row 1 has no target. Padding and
    # the empty target are never searched (once they made the target check fail the run).
    csv = tmp_path / "targets.csv"
    csv.write_text(f"path,target\n{image_folder}/img0.png,1\n{image_folder}/img1.png,\n"
                   f"{image_folder}/img3.png,2\n")
    config = tiny_config(checkpoints, str(csv))
    config.targets.kind = "csv"
    config.output.report = False
    summary = run.explain_dataset(config, str(tmp_path / "run"))
    records = _manifest(str(tmp_path / "run"))
    assert summary["complete"] and summary["num_images"] == 3 and summary["num_skipped"] == 1
    assert [(r["example_id"], r["status"], r["target"]) for r in records] == [
        (0, "ok", 1), (0, "ok", 1), (1, "skipped", -1), (2, "ok", 2), (2, "ok", 2)]
    assert records[2]["reason"] == "the CSV gives no target for this image"


def test_resume_with_a_changed_input_set_is_refused(checkpoints, image_folder, tmp_path):
    import shutil

    from sce_jax.workdir.inputs import InputSetChangedError
    from sce_jax.workdir.layout import INPUTS as INPUTS_FILE

    folder = tmp_path / "images"
    shutil.copytree(image_folder, folder)
    config = tiny_config(checkpoints, str(folder))
    config.output.report = False
    workdir = str(tmp_path / "run")
    run.explain_dataset(config, workdir)
    with open(os.path.join(workdir, INPUTS_FILE)) as f:
        assert json.load(f)["sources"] == [str(folder / f"img{i}.png") for i in range(5)]
    manifest = _manifest(workdir)
    # a file that sorts between two others shifts every later id: resuming would map results
    # to the wrong files and never explain the new one
    shutil.copy(folder / "img0.png", folder / "img1_late.png")
    with pytest.raises(InputSetChangedError, match=r"\(6 inputs now, 5 when the workdir was made; "
                       r"added: img1_late.png\); resume with the inputs"):
        run.explain_dataset(config, workdir)
    assert issubclass(InputSetChangedError, run.USER_ERRORS)
    # a workdir written before inputs.json existed is checked against its records' sources
    os.remove(os.path.join(workdir, INPUTS_FILE))
    with pytest.raises(InputSetChangedError, match=r"example 2 was .*img2.png, it is now .*img1_late.png"):
        run.explain_dataset(config, workdir)
    assert _manifest(workdir) == manifest  # nothing was touched
    os.remove(folder / "img1_late.png")  # the original set resumes (nothing left to do)
    assert run.explain_dataset(config, workdir)["complete"]
    assert os.path.exists(os.path.join(workdir, INPUTS_FILE)) and _manifest(workdir) == manifest


def test_batches_never_exceed_the_data_and_a_search_too_large_is_refused(
        checkpoints, image_folder, tmp_path, monkeypatch):
    from sce_jax.explainer import Explainer
    from sce_jax.runs import memory_check

    config = tiny_config(checkpoints, image_folder)
    config.output.report = False
    config.batch_size = 100000  # 5 images: batches of 5 rows, not 100000
    config.max_memory_gb = 1e-6
    config.engine = "slots"
    with pytest.raises(memory_check.MemoryLimitError, match=(
            r"^the search for 5 search slots of 16x16x1 images needs about [0-9.e-]+ GB")):
        run.explain_dataset(config, str(tmp_path / "refused"))  # the slot engine's chunk
    config.engine = "batch"
    with pytest.raises(memory_check.MemoryLimitError, match=(
            r"^the search for batches of 5 images of 16x16x1 needs about [0-9.e-]+ GB of "
            r"memory, more than 1e-06 GB \(max_memory_gb=1e-06\); lower batch_size")):
        run.explain_dataset(config, str(tmp_path / "refused"))
    assert not os.path.exists(tmp_path / "refused" / "parts")
    with pytest.raises(memory_check.MemoryLimitError, match=r"more than .* GB \(the machine's RAM\)"):
        memory_check.check_fits(2 ** 60, max_memory_gb=0.0, what="a test")

    shapes = []
    search = Explainer.explain_arrays
    monkeypatch.setattr(Explainer, "explain_arrays", lambda self, batch, *, kind: (
        shapes.append(batch.images.shape), search(self, batch, kind=kind))[1])
    config.max_memory_gb = 0.0
    summary = run.explain_dataset(config, str(tmp_path / "run"))
    assert summary["complete"] and shapes == [(5, 16, 16, 1)]
