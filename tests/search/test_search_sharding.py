"""An example's result does not depend on batch size, batch composition or device count."""

import numpy as np

from sce_jax import Explainer
from tests.run_helpers import script_arrays
from tests.search_helpers import batch_inputs
from tests.search_helpers import noisy_search_config as search_config
from tests.toy_models import mean_colour_classifier, toy_generator


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

    sharded = script_arrays("tests.sharded_search_script", tmp_path / "sharded.npz")
    np.testing.assert_allclose(sharded["image"], batch8.image[:6], atol=1e-5)
    np.testing.assert_array_equal(sharded["steps"], batch8.steps[:6])
    assert sharded["success"].any()
