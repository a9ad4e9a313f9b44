"""The evaluation protocol (sce_jax.evaluation, scripts/evaluate.py) and the ablation configs.

Most checks use a hand-written workdir whose answers are known: a one-channel SmallCNN whose
decision is set by hand (class 0 when the mean of silu(pixel) exceeds 0.2, else class 1),
the shipped Fashion-MNIST autoencoder (for the latent distances), dark originals (class 1;
the target "other" asks to leave it), and counterfactuals that brighten the square, the
background, or too little. One check evaluates a real run of the
tiny models (the run tests' shared reference run) for agreement with the run's own manifest.
"""

import csv
import html.parser
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from flax import nnx
from PIL import Image

from sce_jax import data, evaluation
from sce_jax.assets import asset_path
from sce_jax.data import image_io
from sce_jax.launch.config_files import load_config_module
from sce_jax.models.checkpoint import save_model
from sce_jax.models.small_cnn import SmallCNN, SmallCNNConfig
from sce_jax.runs.config import base_run_config
from sce_jax.search.config import settings_from_config
from tests.run_helpers import ROOT, read_manifest

SIZE = 32  # the shipped Fashion-MNIST autoencoder's size (it is loaded, never built: fast)
THRESHOLD, GAIN = 0.2, 40.0
BOXES = np.array([[6, 6, 20, 20], [10, 8, 20, 20], [4, 4, 16, 16]], np.int32)
ORIGINAL_LEVELS = (0.1, 0.12, 0.08)
# (example, attempt): how the counterfactual is made, and the success the manifest claims.
CASES = {
    (0, 0): ("square", True), (0, 1): ("background", True),
    (1, 0): ("faint square", False), (1, 1): ("square", True),
    (2, 0): ("unchanged", False), (2, 1): ("faint patch", True),  # the claim is wrong
}
EXPECTED_VALID = {(0, 0): True, (0, 1): True, (1, 0): False, (1, 1): True, (2, 0): False,
                  (2, 1): False}


def _silu(x):
    return x / (1.0 + np.exp(-x))


def _brightness_classifier(path, sign=1.0):
    """logits = sign * GAIN * [f - t, t - f], f = mean(silu(x)): class 0 iff f > t (sign 1)."""
    model = SmallCNN(SmallCNNConfig(in_channels=1, num_classes=2, widths=(1,)), rngs=nnx.Rngs(0))
    kernel = np.zeros((3, 3, 1, 1), np.float32)
    kernel[1, 1] = 1.0
    model.convs[0].kernel.set_value(kernel)
    model.convs[0].bias.set_value(np.zeros(1, np.float32))
    model.fc.kernel.set_value(sign * GAIN * np.array([[1.0, -1.0]], np.float32))
    model.fc.bias.set_value(sign * GAIN * np.array([-THRESHOLD, THRESHOLD], np.float32))
    return save_model(model, path)


def _counterfactual(original, box, how):
    top, left, h, w = box
    inside = np.zeros(original.shape[:2], bool)
    inside[top:top + h, left:left + w] = True
    cf = original.copy()
    if how == "square":
        cf[inside] = 1.0
    elif how == "background":
        cf[~inside] = 1.0
    elif how == "faint square":
        cf[inside] = original[inside] + 0.05
    elif how == "faint patch":
        cf[:6, :6] = original[:6, :6] + 0.05
    return cf


def write_workdir(workdir, checkpoints, *, surrogate=None):
    """A run workdir as scripts/explain.py writes it, with the CASES above (no search)."""
    os.makedirs(workdir)
    images = np.stack([np.full((SIZE, SIZE), v, np.float32) for v in ORIGINAL_LEVELS])
    source = os.path.join(workdir, "data.npz")
    data.write_npz(source, images=np.rint(images * 255).astype(np.uint8),
                   labels=np.array([1, 1, 1]), boxes=BOXES)
    config = base_run_config()
    config.data.source = source
    config.data.image_size = (SIZE, SIZE)
    config.generator.checkpoint, config.classifier.checkpoint = checkpoints
    config.classifier.class_names = ("bright", "dark")
    with open(os.path.join(workdir, "run_config.json"), "w") as f:
        f.write(config.to_json_best_effort())
    records = []
    for (example, attempt), (how, claimed) in CASES.items():
        folder = f"images/{example:07d}"
        os.makedirs(os.path.join(workdir, folder), exist_ok=True)
        original = images[example][..., None]
        image_io.write_png(os.path.join(workdir, folder, "original.png"), original)
        cf = _counterfactual(original, BOXES[example], how)
        files = {"original": f"{folder}/original.png",
                 "counterfactual": f"{folder}/cf_t1_a{attempt}.png"}
        image_io.write_png(os.path.join(workdir, files["counterfactual"]), cf)
        records.append({
            "example_id": example, "source": f"{source}[{example}]", "label": 1, "status": "ok",
            "reason": None, "prediction": 1, "prob_prediction": 0.99, "target": 1,
            "target_kind": "other", "attempt": attempt, "success": claimed,
            "success_float": claimed, "nonfinite": False, "steps": 7,
            "prob_target_before": 0.01, "prob_target_after": 0.5,
            "prediction_after": 0 if claimed else 1, "latent_l1": 0.01 * (example + 1),
            "latent_l2": 0.1 * (attempt + 1), "pixel_l1": 0.0, "pixel_l2": 0.0,
            "changed_fraction": 0.0, "files": files})
    records.append({"example_id": 3, "source": f"{source}[3]", "label": None,
                    "status": "skipped", "reason": "cannot decode", "target": -1, "attempt": -1,
                    "files": {}})
    with open(os.path.join(workdir, "manifest.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump({"num_images": 4, "flip_rate": 0.5}, f)
    return workdir


def _png(workdir, relative):
    return np.asarray(Image.open(os.path.join(workdir, relative)), np.float64)[..., None] / 255.0


@pytest.fixture(scope="module")
def shared(run_fixtures):
    return run_fixtures  # tests/conftest.py


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """Two hand-written workdirs evaluated together (surrogate = the classifier itself)."""
    root = tmp_path_factory.mktemp("evaluation")
    classifier = _brightness_classifier(str(root / "clf"))
    checkpoints = (asset_path("fashion_mnist", "autoencoder"), classifier)
    workdirs = [write_workdir(str(root / name), checkpoints) for name in ("run_a", "run_b")]
    options = evaluation.EvaluationOptions(surrogate=classifier, kid_subsets=3)
    results = evaluation.evaluate_workdirs(workdirs, str(root / "tables"), options=options)
    return {"root": root, "workdirs": workdirs, "results": results, "checkpoints": checkpoints}


def test_metrics_json_matches_hand_computed_values(evaluated):
    workdir = evaluated["workdirs"][0]
    with open(os.path.join(workdir, "evaluation", "metrics.json")) as f:
        m = json.load(f)
    rows = [json.loads(line) for line in open(os.path.join(workdir, "evaluation",
                                                           "counterfactuals.jsonl"))]
    assert [(r["example_id"], r["attempt"]) for r in rows] == list(CASES)
    assert {(r["example_id"], r["attempt"]): r["success"] for r in rows} == EXPECTED_VALID

    table = m["table"]
    # validity is re-checked on the PNGs: the manifest's wrong claim for (2, 1) is not copied
    assert table["flip_rate"] == pytest.approx(3 / 6)
    assert table["flip_rate_first_attempt"] == pytest.approx(1 / 3)
    assert table["images_with_valid"] == pytest.approx(2 / 3)  # of the images explained
    assert m["validity"]["agreement_with_manifest"] == pytest.approx(5 / 6)
    assert m["validity"]["per_target"] == {"1": {"count": 6, "flip_rate": 0.5}}
    assert table["num_images"] == 4 and table["num_counterfactuals"] == 6

    valid = [k for k, v in EXPECTED_VALID.items() if v]
    originals = {e: _png(workdir, f"images/{e:07d}/original.png") for e in range(3)}
    cfs = {k: _png(workdir, f"images/{k[0]:07d}/cf_t1_a{k[1]}.png") for k in CASES}
    d = {k: cfs[k] - originals[k[0]] for k in CASES}
    assert table["pixel_l1"] == pytest.approx(np.mean([np.abs(d[k]).mean() for k in valid]), rel=1e-5)
    assert table["pixel_l2"] == pytest.approx(np.mean([np.sqrt((d[k] ** 2).sum()) for k in valid]), rel=1e-5)
    assert table["changed_fraction"] == pytest.approx(
        np.mean([(np.abs(d[k]) > 2 / 255).mean() for k in valid]), rel=1e-6)
    assert table["search_latent_l1"] == pytest.approx(np.mean([0.01, 0.01, 0.02]))
    hoyer_rows = {(r["example_id"], r["attempt"]): r["hoyer"] for r in rows}
    assert hoyer_rows[(2, 0)] is None  # nothing changed: Hoyer undefined (NaN -> null)

    # diversity: only example 0 has two valid attempts; they change disjoint regions
    assert table["diversity_cosine"] == pytest.approx(1.0)
    assert table["pairwise_l1"] == pytest.approx(np.abs(cfs[(0, 0)] - cfs[(0, 1)]).mean(), rel=1e-5)
    assert m["diversity"]["diversity_cosine"]["count"] == 1

    # realism: the features are f = mean(silu(x)) (one dimension): FID and KID by hand
    f_orig = np.array([_silu(originals[e]).mean() for e in range(3)])
    f_cf = np.array([_silu(cfs[k]).mean() for k in valid])
    fid = (f_orig.mean() - f_cf.mean()) ** 2 + (f_orig.std(ddof=1) - f_cf.std(ddof=1)) ** 2
    assert table["fid"] == pytest.approx(fid, rel=1e-4)

    def k(a, b):
        return (np.outer(a, b) + 1.0) ** 3

    def within(a):
        return (k(a, a).sum() - np.trace(k(a, a))) / (len(a) * (len(a) - 1))

    assert table["kid"] == pytest.approx(within(f_orig) + within(f_cf) - 2 * k(f_orig, f_cf).mean(),
                                         rel=1e-4)
    assert m["realism"]["kid_std"] == pytest.approx(0.0, abs=1e-9)  # every subset is the whole set

    # the surrogate is the classifier itself: every valid counterfactual convinces it
    assert table["non_adversarial_rate"] == 1.0

    # ground truth: (0, 0) and (1, 1) changed the square, (0, 1) the background
    assert table["gt_dominant_square_colour_rate"] == pytest.approx(2 / 3)
    assert table["gt_dominant_background_colour_rate"] == pytest.approx(1 / 3)
    assert table["gt_found_square_colour_rate"] == 1.0
    assert table["gt_found_background_colour_rate"] == 0.5
    assert table["gt_all_found_rate"] == 0.5
    assert m["ground_truth"]["factor_names"] == ["square colour", "background colour"]


def test_latent_distances_are_of_the_encoded_written_images(evaluated):
    import jax

    from sce_jax.generator import Generator
    from sce_jax.models.checkpoint import load_model

    workdir = evaluated["workdirs"][0]
    generator = Generator.from_autoencoder(load_model(evaluated["checkpoints"][0]))
    rows = [json.loads(line) for line in open(os.path.join(workdir, "evaluation",
                                                           "counterfactuals.jsonl"))]
    x = np.stack([_png(workdir, f"images/{r['example_id']:07d}/original.png") for r in rows])
    cf = np.stack([_png(workdir, r["counterfactual"]) for r in rows])
    encode = jax.jit(generator.encode_fn)
    dz = (np.asarray(encode(generator.params, cf.astype(np.float32)))
          - np.asarray(encode(generator.params, x.astype(np.float32))))
    for r, d in zip(rows, dz):
        assert r["latent_l1"] == pytest.approx(np.abs(d).mean(), rel=1e-4, abs=1e-7)
        assert r["latent_l2"] == pytest.approx(np.sqrt((d ** 2).sum()), rel=1e-4, abs=1e-7)
        assert r["search_latent_l1"] == pytest.approx(0.01 * (r["example_id"] + 1))
    assert rows[4]["latent_l1"] == 0.0  # (2, 0) is the original itself
    assert rows[0]["latent_l1"] > 0.0


def test_tables_hold_one_row_per_workdir(evaluated):
    tables = evaluated["root"] / "tables"
    lines = (tables / "evaluation.md").read_text().splitlines()
    assert len(lines) == 2 + 2
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert all(len(row) == len(header) for row in cells)
    assert [row[0] for row in cells] == ["run_a", "run_b"]
    assert cells[0][header.index("flip rate")] == "50.0%"
    assert cells[1][header.index("GT found: background colour")] == "50.0%"
    with open(tables / "evaluation.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == ["run_a", "run_b"]
    for row, result in zip(rows, evaluated["results"]):
        assert float(row["flip_rate"]) == result["table"]["flip_rate"] == 0.5
        assert float(row["pixel_l1"]) == pytest.approx(result["table"]["pixel_l1"])
        assert float(row["gt_all_found_rate"]) == 0.5


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.links = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "a":
            self.links.append(attrs["href"])


def test_plots_are_pngs_and_the_report_links_them(evaluated):
    workdir = evaluated["workdirs"][0]
    names = ("best_worst.png", "distances.png", "flip_rate_per_class.png")
    for name in names:
        path = os.path.join(workdir, "evaluation", name)
        with Image.open(path) as image:
            assert image.format == "PNG"
            image.verify()
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("L"))
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100
        assert pixels.std() > 0  # something is drawn
    page = _Links()
    page.feed(open(os.path.join(workdir, "report.html"), encoding="utf-8").read())
    assert sorted(s for s in page.images if s.startswith("evaluation/")) == \
        [f"evaluation/{n}" for n in names]
    assert "evaluation/metrics.json" in page.links
    assert "images/0000000/cf_t1_a0.png" in page.images  # the rest of the report is kept
    for link in page.images + page.links:
        assert os.path.isfile(os.path.join(workdir, link)), link


def test_a_disagreeing_surrogate_gives_rate_zero(evaluated):
    inverted = _brightness_classifier(str(evaluated["root"] / "inverted"), sign=-1.0)
    run = evaluation.read_run(evaluated["workdirs"][1])
    options = evaluation.EvaluationOptions(surrogate=inverted, encode_latents=False,
                                           kid_subsets=1)
    result = evaluation.evaluate_run(run, options)
    assert result["table"]["non_adversarial_rate"] == 0.0
    assert result["non_adversarial"]["surrogate"] == inverted
    assert "latent_l1" not in result["table"]
    assert result["latents"] == "not computed (encode_latents off)"
    none = evaluation.evaluate_run(run, evaluation.EvaluationOptions(
        surrogate="", encode_latents=False, kid_subsets=1))
    assert none["table"]["non_adversarial_rate"] is None
    assert all("surrogate_success" not in r for r in none["counterfactuals"])


def test_a_run_with_only_skipped_inputs_has_no_numbers_but_counts(evaluated, tmp_path):
    workdir = write_workdir(str(tmp_path / "skips"), evaluated["checkpoints"])
    with open(os.path.join(workdir, "manifest.jsonl")) as f:
        skips = [line for line in f if '"skipped"' in line]
    with open(os.path.join(workdir, "manifest.jsonl"), "w") as f:
        f.writelines(skips)
    result = evaluation.evaluate_workdir(workdir, evaluation.EvaluationOptions(surrogate=""))
    assert result["table"]["num_images"] == 1 and result["table"]["num_counterfactuals"] == 0
    assert result["table"]["flip_rate"] is None and result["table"]["fid"] is None
    assert os.path.isfile(os.path.join(workdir, "evaluation", "metrics.json"))
    assert not any(n.endswith(".png") for n in os.listdir(os.path.join(workdir, "evaluation")))


def test_a_workdir_without_manifest_is_named_before_any_work(evaluated, tmp_path):
    good = write_workdir(str(tmp_path / "good"), evaluated["checkpoints"])
    bad = str(tmp_path / "bad")
    os.makedirs(bad)
    with open(os.path.join(bad, "run_config.json"), "w") as f:
        f.write("{}")
    with pytest.raises(evaluation.EvaluationError) as e:
        evaluation.evaluate_workdirs([good, bad, str(tmp_path / "nowhere")], str(tmp_path / "t"))
    message = str(e.value)
    assert f"{bad}: no manifest (manifest.jsonl is missing)" in message
    assert f"{tmp_path / 'nowhere'}: no such folder" in message
    assert good not in message
    assert not os.path.exists(os.path.join(good, "evaluation"))  # nothing was evaluated


def test_script_exits_2_naming_the_workdir(tmp_path):
    missing = str(tmp_path / "not_a_run")
    os.makedirs(missing)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "evaluate.py"),
                           f"--workdirs={missing}"], capture_output=True, text=True,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"error: cannot evaluate:\n  {missing}: no manifest" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_real_run_evaluates_in_agreement_with_its_manifest(shared, tmp_path):
    workdir = str(tmp_path / "reference")
    shutil.copytree(shared["reference"], workdir)
    result = evaluation.evaluate_workdir(workdir, evaluation.EvaluationOptions(
        surrogate="", kid_subsets=2, plots=False))
    records = read_manifest(workdir)
    ok = [r for r in records if r["status"] == "ok"]
    assert result["table"]["num_images"] == 9 and result["summary"]["num_skipped"] == 1
    assert result["table"]["num_counterfactuals"] == len(ok) == len(result["counterfactuals"])
    assert result["validity"]["agreement_with_manifest"] == 1.0
    assert result["table"]["flip_rate"] == pytest.approx(np.mean([r["success"] for r in ok]))
    for row, record in zip(result["counterfactuals"], ok):
        assert (row["example_id"], row["attempt"]) == (record["example_id"], record["attempt"])
        # the search's float image vs its 8-bit file: at most half a grey level apart
        assert row["pixel_l1"] == pytest.approx(record["pixel_l1"], abs=0.5 / 255)
        assert row["search_latent_l2"] == record["latent_l2"]
    assert result["ground_truth"]["note"].endswith("has no known factor regions")
    assert not os.path.exists(os.path.join(workdir, "report.html"))  # the run wrote none


# ----------------------------------------------------------------------------- ablation configs

def _ablation():
    return load_config_module(os.path.join(ROOT, "configs", "ablation.py"))


def _flat(config, prefix=""):
    out = {}
    for key, value in config.items():
        if hasattr(value, "items"):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


INTENDED = {
    "no_smoothing": {"search.smoothing.space": "none"},
    "latent_smoothing": {"search.smoothing.space": "latent"},
    "no_mask": {"search.mask.enabled": False},
    "no_lock": {"search.lock": False},
    "single_attempt": {"search.attempts": 1},
    "no_prior": {"search.prior.enabled": False},
    "prior_weak": {"search.prior.strength": "half"},
    "prior_strong": {"search.prior.strength": "+0.2"},
    "goal_0.5": {"search.goal_probability": 0.5},
    "goal_0.75": {"search.goal_probability": 0.75},
    "no_fill": {"search.mask.fill_holes": False},
    "keep_spots": {"search.reject_background_spots": False},
    "no_area_cap": {"search.mask.max_area": 1.0},   # Fashion-MNIST ships no cap: no change there
    "raw_gradient": {"search.normalize_gradient": False},  # likewise: only squares normalises
}


@pytest.mark.parametrize("suffix", ["", ",tiny", ",squares", ",squares,tiny"])
def test_each_ablation_differs_from_full_in_exactly_its_key(suffix):
    ablation = _ablation()
    full = _flat(ablation.get_config("full" + suffix))
    assert set(ablation.VARIANTS) == {"full", *INTENDED}
    for variant, changes in INTENDED.items():
        config = ablation.get_config(variant + suffix)
        settings_from_config(config.search)  # a valid search config
        flat = _flat(config)
        differs = {k: flat[k] for k in flat if flat[k] != full.get(k)}
        strength = full["search.prior.strength"]
        relative = {"half": round(strength / 2, 4), "+0.2": round(min(1.0, strength + 0.2), 4)}
        expected = {k: relative.get(v, v) if isinstance(v, str) else v for k, v in changes.items()}
        assert differs == {k: v for k, v in expected.items() if full[k] != v}, variant
        assert set(flat) == set(full)
        assert ablation.CHANGED_KEYS[variant] == next(iter(changes))


def test_full_is_the_demo_config_and_tiny_shrinks_it():
    ablation = _ablation()
    demo = load_config_module(os.path.join(ROOT, "configs", "fashion_mnist.py"))
    assert _flat(ablation.get_config("full")) == _flat(demo.get_config())
    assert ablation.get_config(None).to_dict() == ablation.get_config("full").to_dict()
    tiny = ablation.get_config("no_mask,tiny")
    assert tiny.data.limit == 4 and tiny.search.steps == 5 and tiny.search.mask.enabled is False


def test_unknown_ablations_say_why():
    ablation = _ablation()
    with pytest.raises(ValueError, match="unknown ablation 'no_masks'; one of full, "):
        ablation.get_config("no_masks")
    with pytest.raises(ValueError, match=r"unknown ablation option\(s\) \['huge'\]"):
        ablation.get_config("no_mask,huge")


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.py"):
        load_config_module(tmp_path / "nope.py")
