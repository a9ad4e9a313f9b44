"""The squares benchmark: known ground truth (square colour = class; background = confounder).

    python scripts/explain.py --config=configs/squares.py --workdir=runs/squares

24 generated 64x64 RGB test images; the classifier was trained on data where the background
colour agrees with the class 90% of the time, so it may read either factor. The test set stores
each image's square box and background class, so a counterfactual can be checked against the
factor it changed (sce_jax.metrics.ground_truth). Models: sce_jax/assets/squares/.
``:validation``: 24 images of another seed (5), where settings are chosen.
"""

from sce_jax.demos.squares import CLASS_NAMES
from sce_jax.runs.config import shipped_demo_config


def get_config(arg: str | None = None):
    c = shipped_demo_config("squares", "test_set.npz", image_size=(64, 64), channels=3,
                            class_names=CLASS_NAMES, batch_size=8, arg=arg,
                            validation_file="validation_set.npz")
    # Normalised gradient steps on the strongest latent cells. The classifier is very confident
    # (p = 1 - 1e-5): plain SGD stalls, and Adam, which takes a full step on every latent cell
    # whatever its gradient, spread the edit into the background (a red square's gradient is
    # only 2x stronger on the square than off it): two of 24 first attempts never reached the
    # goal and green -> red painted blotches beside the square. Unit-norm SGD steps (length =
    # learning rate) on the cells with at least half the largest gradient recolour the square
    # itself: 24 of 24 first attempts (README, "Explanation quality"; docs/tuning.md, "Tuning the
    # defaults"). A red square on its blue background needs up to 120 steps: budget 150
    # (``:tiny`` keeps its 5 steps: a seconds-long check, as fashion_mnist:tiny).
    c.search.normalize_gradient = True
    c.search.sparsify = 0.5
    c.search.learning_rate = 0.15
    if arg != "tiny":
        c.search.steps = 150
    # The mask covers at most 40% of the image (a square is 6-25% of it): without the cap one
    # flip recoloured the whole image and the flips changed 49% of the pixels on average (30%
    # with it; README, "Explanation quality").
    c.search.mask.max_area = 0.4
    # The prior stays at the default strength 0.3: without it 83% of the flips put most of their
    # change on the square (92% with it); a stronger one (0.5) lost one green square (9 of 10)
    # and mottles the recoloured ones.
    return c
