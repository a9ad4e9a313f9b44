"""Runs one search on 4 CPU devices with a sharded batch; writes the results to an npz.

Started in a subprocess by test_search_sharding.py (the device count is fixed at start-up).
"""

import sys

import jax

jax.config.update("jax_num_cpu_devices", 4)

import numpy as np  # noqa: E402

from sce_jax import Explainer, parallel  # noqa: E402
from tests.search_helpers import batch_inputs  # noqa: E402
from tests.search_helpers import noisy_search_config as search_config
from tests.toy_models import mean_colour_classifier, toy_generator  # noqa: E402


def main(out_path: str) -> None:
    assert jax.device_count() == 4, jax.devices()
    images, targets, ids = batch_inputs()
    explainer = Explainer(toy_generator(), mean_colour_classifier(), search_config(),
                          mesh=parallel.make_mesh())
    # 6 examples on 4 devices: padded to 8, sharded 2 per device
    result = explainer.explain(images[:6], targets[:6], example_ids=ids[:6])
    batch, _ = explainer.prepare_batch(images[:6], targets[:6], kind="class", example_ids=ids[:6])
    assert len(batch.images.sharding.device_set) == 4
    np.savez(out_path, image=result.image, success=result.success, steps=result.steps)


if __name__ == "__main__":
    main(sys.argv[1])
