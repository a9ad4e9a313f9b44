"""save_explanation writes the workdir format: manifest, summary, results.csv and report."""

import os

import numpy as np

import sce_jax
from sce_jax import Explainer, metrics
from sce_jax.data import image_io
from sce_jax.workdir import layout as workdir
from tests.search_helpers import small_config
from tests.toy_models import greenish_images, mean_colour_classifier, toy_generator


def test_saved_explanation_reads_back_as_a_run(tmp_path):
    generator, classifier = toy_generator(), mean_colour_classifier()
    images = greenish_images(2)
    config = small_config(steps=10, **{"smoothing.num_samples": 1})
    result = Explainer(generator, classifier, config).explain(images, targets=[1, 1])
    out = sce_jax.save_explanation(result, images, str(tmp_path / "saved"), classifier=classifier,
                                   example_ids=[5, 3])
    records = workdir.read_manifest(out)
    assert [(r["example_id"], r["attempt"]) for r in records] == [(5, 0), (3, 0)]
    # success is judged on the written 8-bit PNG, by the rule the evaluation uses
    written = np.stack([image_io.read_png(os.path.join(out, r["files"]["counterfactual"]))
                        for r in records]).astype(np.float32) / 255.0
    judged = metrics.reaches_target(np.asarray(classifier.logits(written)), np.array([1, 1]),
                                    kind="class")
    assert [r["success"] for r in records] == judged.tolist()
    summary = workdir.read_summary(out)
    assert summary == {**metrics.run_summary(records), "complete": True}
    assert summary["flip_rate"] == np.mean(judged)
    assert os.path.isfile(os.path.join(out, workdir.RESULTS_CSV))
    assert os.path.isfile(os.path.join(out, workdir.REPORT))
