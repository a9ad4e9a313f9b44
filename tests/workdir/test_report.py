"""The HTML report: links to existing images, the numbers of the manifest and summary, escaping."""

import html.parser
import json
import os

import numpy as np
import pytest

from sce_jax.data import image_io
from sce_jax.workdir import report
from sce_jax.workdir.layout import WorkdirReadError

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress")


class _Page(html.parser.HTMLParser):
    """Collects image sources, link targets, tag names and the visible text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.images, self.links, self.tags, self.text = [], [], [], []
        self.image_attrs = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.images.append(attrs["src"])
            self.image_attrs.append(attrs)
        if tag == "a":
            self.links.append(attrs["href"])

    def handle_data(self, data):
        self.text.append(data)


def _parse(path):
    page = _Page()
    with open(path, encoding="utf-8") as f:
        page.feed(f.read())
    page.joined = " ".join(" ".join(page.text).split())
    return page


def _record(example_id, target, attempt, success, before, after, folder, **extra):
    stem = f"t{target}_a{attempt}"
    record = {
        "example_id": example_id, "source": f"data/{example_id}.png", "label": 3, "status": "ok",
        "reason": None, "prediction": 3, "prob_prediction": 0.9312, "target": target,
        "target_kind": "class", "attempt": attempt, "success": success, "steps": 37,
        "prob_target_before": before, "prob_target_after": after,
        "prediction_after": target if success else 3, "latent_l1": 0.0123, "latent_l2": 0.5,
        "pixel_l1": 0.0456, "pixel_l2": 0.25, "changed_fraction": 0.032,
        "files": {"original": f"{folder}/original.png", "counterfactual": f"{folder}/cf_{stem}.png",
                  "difference": f"{folder}/diff_{stem}.png", "mask": f"{folder}/mask_{stem}.png"},
    }
    record.update(extra)
    return record


@pytest.fixture
def workdir(tmp_path):
    rng = np.random.default_rng(0)
    records = []
    for example_id in (4, 11):
        folder = f"images/{example_id:07d}"
        os.makedirs(tmp_path / folder)
        original = rng.random((8, 8, 1)).astype(np.float32)
        image_io.write_png(str(tmp_path / folder / "original.png"), original)
        for attempt, success in ((0, True), (1, False)):
            cf = np.clip(original + rng.normal(0, 0.1, original.shape), 0, 1)
            stem = f"t2_a{attempt}"
            image_io.write_png(str(tmp_path / folder / f"cf_{stem}.png"), cf)
            image_io.write_png(str(tmp_path / folder / f"diff_{stem}.png"),
                               image_io.difference_heatmap(original, cf))
            image_io.write_png(str(tmp_path / folder / f"mask_{stem}.png"), np.ones((8, 8, 1)))
            records.append(_record(example_id, 2, attempt, success, 0.12, 0.81 if success else 0.33,
                                   folder))
    records.append({"example_id": 7, "source": "data/<u>broken</u>.png", "label": None,
                    "status": "skipped", "reason": "cannot decode image: <script>alert(1)</script>",
                    "target": -1, "attempt": -1, "files": {}})
    with open(tmp_path / "manifest.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    summary = {"num_images": 3, "num_skipped": 1, "num_counterfactuals": 4, "flip_rate": 0.5,
               "mean_latent_l1": 0.0123, "mean_pixel_l1": 0.0456, "mean_pixel_l2": 0.25,
               "mean_changed_fraction": 0.032, "counterfactuals_per_second": 2.345678,
               "elapsed_seconds": 12.34, "complete": True, "lpips_mean": 0.1234,
               "validity": {"mean": 0.5, "count": 4}}
    with open(tmp_path / "summary.json", "w") as f:
        json.dump(summary, f)
    return tmp_path


def test_report_links_exist_and_numbers_appear(workdir):
    path = report.write_report(str(workdir), class_names=CLASS_NAMES)
    assert path == str(workdir / "report.html")
    page = _parse(path)
    assert len(page.images) == 2 * (1 + 2 * 3)  # per image: original + 2 x (cf, difference, mask)
    for link in page.images + page.links:
        assert not os.path.isabs(link) and "://" not in link
        assert (workdir / link).is_file(), link
    # the edit mask is shown beside its counterfactual, and no image is a link to a tiny PNG
    assert sum(link.endswith("mask_t2_a0.png") for link in page.images) == 2
    assert not any(link.endswith(".png") for link in page.links)
    text = page.joined
    for expected in ("50.0%", "0.0123", "0.0456", "3.2%", "2.346", "12.3 s",   # summary
                     "lpips mean", "0.1234", '"count": 4',                    # unknown keys
                     "0.120 → 0.810", "0.120 → 0.330", "p(Pullover (2))",     # probabilities
                     "reach Pullover (2)", "label: Dress (3)", "decision: Dress (3), p 0.931",
                     "✓ changed", "✗ not reached", "37 steps", "#4", "#11"):
        assert expected in text, expected
    assert text.index("#4") < text.index("#11")


def test_small_images_are_enlarged_pixelated(workdir):
    page = _parse(report.write_report(str(workdir)))
    first = page.image_attrs[0]
    assert first["width"] == first["height"] == str(8 * (report.DISPLAY_PIXELS // 8))
    assert first["class"] == "pixelated"
    assert "image-rendering: pixelated" in (workdir / "report.html").read_text()
    assert "class 2" in page.joined  # no class names: indices


def test_manifest_text_is_escaped_and_skips_listed(workdir):
    page = _parse(report.write_report(str(workdir)))
    assert "u" not in page.tags and "script" not in page.tags
    assert "Skipped inputs (1)" in page.joined
    assert "data/<u>broken</u>.png cannot decode image: <script>alert(1)</script>" in page.joined


def test_max_examples_limits_the_rows(workdir):
    page = _parse(report.write_report(str(workdir), max_examples=1))
    assert len(page.images) == 7
    assert "Showing the first 1 of 2 images" in page.joined


def test_missing_image_and_incomplete_run_are_said(workdir):
    os.remove(workdir / "images/0000011/diff_t2_a1.png")
    with open(workdir / "summary.json") as f:
        summary = json.load(f)
    summary["complete"] = False
    with open(workdir / "summary.json", "w") as f:
        json.dump(summary, f)
    page = _parse(report.write_report(str(workdir)))
    assert "missing image: images/0000011/diff_t2_a1.png" in page.joined
    assert "images/0000011/diff_t2_a1.png" not in page.images
    assert "This run stopped before the end" in page.joined


def test_bad_manifests_raise_clear_errors(tmp_path):
    with pytest.raises(WorkdirReadError) as e:
        report.write_report(str(tmp_path))
    assert str(e.value) == f"{tmp_path / 'manifest.jsonl'} does not exist: no manifest to read"
    (tmp_path / "manifest.jsonl").write_text('{"example_id": 1, "status": "skipped"}\n{oops\n')
    with pytest.raises(WorkdirReadError, match=r"manifest.jsonl line 2: not valid JSON"):
        report.write_report(str(tmp_path))
    (tmp_path / "manifest.jsonl").write_text('[1, 2]\n')
    with pytest.raises(WorkdirReadError, match=r"line 1: expected a JSON object with an 'example_id'"):
        report.write_report(str(tmp_path))


def test_report_without_summary_still_renders(tmp_path):
    (tmp_path / "manifest.jsonl").write_text(
        json.dumps({"example_id": 0, "source": "a.png", "status": "skipped", "reason": "file not found"}) + "\n")
    page = _parse(report.write_report(str(tmp_path)))
    assert "summary.json was not found" in page.joined and "file not found" in page.joined


def test_evaluation_plots_are_linked_when_present(workdir):
    page = _parse(report.write_report(str(workdir)))
    assert "Evaluation" not in page.joined  # no evaluation/ folder: no section
    (workdir / "evaluation").mkdir()
    for name in ("distances.png", "best_worst.png"):
        image_io.write_png(str(workdir / "evaluation" / name), np.zeros((200, 300, 3)))
    (workdir / "evaluation" / "notes.txt").write_text("not a plot")
    (workdir / "evaluation" / ".distances.png.123-ab.tmp").write_bytes(b"partial")
    page = _parse(report.write_report(str(workdir)))
    plots = [s for s in page.images if s.startswith("evaluation/")]
    assert plots == ["evaluation/best_worst.png", "evaluation/distances.png"]
    assert "evaluation/metrics.json" not in page.links  # not written: not linked
    (workdir / "evaluation" / "metrics.json").write_text("{}")
    page = _parse(report.write_report(str(workdir)))
    assert "evaluation/metrics.json" in page.links
    assert page.joined.index("Evaluation") < page.joined.index("Counterfactuals (2 images)")


def test_evaluation_headline_figures_are_in_the_summary(workdir):
    """After scripts/evaluate.py: FID, KID with its spread and why it may be negative,
    diversity, non-adversarial rate and ground truth appear in the report's summary."""
    (workdir / "evaluation").mkdir()
    metrics = {"validity": {"flip_rate": 0.75}, "diversity": {"diversity_cosine": {"mean": 0.967}},
               "non_adversarial": {"rate": 0.344}, "realism": {"fid": 12.5, "kid": -0.32, "kid_std": 0.41},
               "ground_truth": {"all_found_rate": 0.25, "dominant_rate": {"square": 0.8}}}
    (workdir / "evaluation" / "metrics.json").write_text(json.dumps(metrics))
    text = _parse(report.write_report(str(workdir), class_names=CLASS_NAMES)).joined
    for expected in ("flip rate re-checked on the PNGs", "75.0%", "0.967", "34.4%", "12.5",
                     "-0.32 ± 0.41", "can be negative", "all factors found", "25.0%",
                     "changes mostly the square", "80.0%"):
        assert expected in text, expected
    assert text.index("can be negative") < text.index("Counterfactuals (")


def test_summary_of_a_resumed_run_names_each_run(workdir):
    summary = json.loads((workdir / "summary.json").read_text())
    summary["runs"] = [{"counterfactuals": 6, "elapsed_seconds": 3.0},
                       {"counterfactuals": 2, "elapsed_seconds": 1.5}]
    (workdir / "summary.json").write_text(json.dumps(summary))
    text = _parse(report.write_report(str(workdir))).joined
    assert "done by 2 runs (resumed): 6 in 3.0 s; 2 in 1.5 s" in text
    assert "runs" not in [line.strip() for line in text.split("\n")]
