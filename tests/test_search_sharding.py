"""An example's result does not depend on batch size, batch composition or device count."""

import os
import subprocess
import sys

import numpy as np

from sce_jax import Explainer
from tests.search_helpers import batch_inputs, noisy_search_config as search_config
from tests.toy_models import mean_colour_classifier, toy_generator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_batch_of_one_eight_and_four_devices_agree(tmp_path):
    images, targets, ids = batch_inputs()
    explainer = Explainer(toy_generator(), mean_colour_classifier(), search_config())
    batch8 = explainer.explain(images, targets, example_ids=ids)
    singles = [explainer.explain(images[i:i + 1], targets[i:i + 1], example_ids=ids[i:i + 1])
               for i in (0, 3, 5)]
    for row, single in zip((0, 3, 5), singles):
        np.testing.assert_allclose(single.image[0], batch8.image[row], atol=1e-5)
        assert single.steps[0].tolist() == batch8.steps[row].tolist()
    # a different batch composition (reversed order) gives the same per-example results
    rev = explainer.explain(images[::-1], targets[::-1], example_ids=ids[::-1])
    np.testing.assert_allclose(rev.image[::-1], batch8.image, atol=1e-5)

    out = tmp_path / "sharded.npz"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "tests.sharded_search_script", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sharded = np.load(out)
    np.testing.assert_allclose(sharded["image"], batch8.image[:6], atol=1e-5)
    np.testing.assert_array_equal(sharded["steps"], batch8.steps[:6])
    assert sharded["success"].any()
