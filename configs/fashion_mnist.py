"""The shipped Fashion-MNIST demo: 20 test garments (2 per class), any-other-class targets.

    python scripts/explain.py --config=configs/fashion_mnist.py --workdir=runs/fashion_mnist
    python scripts/explain.py --config=configs/fashion_mnist.py:tiny --workdir=/tmp/fm_tiny

The models (a small AutoencoderKL with an 8x8x4 latent and a small CNN, 90.5% test accuracy)
were trained by scripts/train_demo_models.py and ship in sce_jax/assets/fashion_mnist/.
Search defaults: sce_jax/search/config.py; the values set here were chosen on this demo
(WORKSPACE.md, "Tuning the defaults"). ``:tiny`` shrinks everything for a seconds-long check.
"""

from sce_jax.assets import asset_path
from sce_jax.datasets.fashion_mnist import CLASS_NAMES
from sce_jax.run_config import base_run_config


def get_config(arg: str | None = None):
    c = base_run_config()
    c.data.source = asset_path("fashion_mnist", "test_subset.npz", must_exist=False)
    c.data.image_size = (32, 32)
    c.data.channels = 1
    c.generator.checkpoint = asset_path("fashion_mnist", "autoencoder", must_exist=False)
    c.classifier.checkpoint = asset_path("fashion_mnist", "classifier", must_exist=False)
    # The demo's latent flow-matching prior keeps edits on the autoencoder's image manifold.
    c.prior.checkpoint = asset_path("fashion_mnist", "prior", must_exist=False)
    c.search.prior.enabled = True
    c.classifier.class_names = tuple(CLASS_NAMES)
    c.targets.kind = "other"
    c.batch_size = 10
    if arg == "tiny":
        c.data.limit = 4
        c.batch_size = 2
        c.search.steps = 5
        c.search.smoothing.num_samples = 2
    elif arg not in (None, ""):
        raise ValueError(f"unknown config argument {arg!r}; use nothing or 'tiny'")
    return c
