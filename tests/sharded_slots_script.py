"""Runs the slot engine on 2 CPU devices (slots sharded over ``data``); writes an npz.

Started in a subprocess by test_slots.py (the device count is fixed at start-up).
"""

import sys

import jax

jax.config.update("jax_num_cpu_devices", 2)

import numpy as np  # noqa: E402

from sce_jax import Explainer, parallel  # noqa: E402
from tests.search_helpers import slot_config as config  # noqa: E402
from tests.search_helpers import uneven_inputs
from tests.toy_models import mean_colour_classifier, toy_generator  # noqa: E402


def main(out_path: str) -> None:
    assert jax.device_count() == 2, jax.devices()
    images, targets, ids = uneven_inputs(5)
    explainer = Explainer(toy_generator(), mean_colour_classifier(), config(),
                          mesh=parallel.make_mesh())
    scheduler = explainer.slot_scheduler("class", slots=3, chunk_steps=4)
    assert scheduler.slots == 4  # rounded up to a multiple of the devices
    streamed = dict(explainer.explain_stream(images, targets, example_ids=ids, slots=3,
                                             chunk_steps=4))
    rows = [streamed[i] for i in range(len(images))]
    np.savez(out_path, image=np.concatenate([r.image for r in rows]),
             success=np.concatenate([r.success for r in rows]),
             steps=np.concatenate([r.steps for r in rows]))


if __name__ == "__main__":
    main(sys.argv[1])
