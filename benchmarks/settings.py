"""The benchmark settings table: which models, image size, batch and smoothing each setting runs.

Every setting runs the same search in sce_jax and in PyTorch (``benchmarks.torch_search``):

``demo``
    the shipped Fashion-MNIST demo (``sce_jax/assets/fashion_mnist``: a small AutoencoderKL
    with an 8x8x4 latent and a small CNN), 32x32 grey, batch 10, pixel smoothing N = 8, as
    ``configs/fashion_mnist.py`` runs it. Skipped, with a message, when the assets are absent.
``demo_random``
    the same architectures with random weights (runs without the assets; weights do not change
    the cost of a step).
``sd{64,256}_b{1,8,32}_{pixel,latent}_n{1,8,32}``
    a Stable-Diffusion-architecture AutoencoderKL (block widths 128/256/512/512, two resnets
    per level, mid-block attention, 4 latent channels; random weights) at 64x64 or 256x256,
    explaining a torchvision-layout ResNet-50 (random weights, ImageNet normalisation), batch
    1, 8 or 32, pixel or latent smoothing with N = 1, 8 or 32 noise samples.

Memory: the noise samples of a step are evaluated in chunks (``chunk_size``) so that one pass
holds at most ``MAX_CLASSIFIER_IMAGES`` classifier images (pixel smoothing) or
``MAX_DECODER_IMAGES`` decoder images (latent smoothing) at a time; both implementations use
the same chunks. Everything else is the default search config (``default_search_config()``):
SGD with momentum, mask updates. One attempt is timed (every attempt of the K costs the same
per step, and a counterfactual is one attempt's result), and the counterfactuals per second
are extrapolated to ``steps_budget`` steps (100, the default search's budget).
"""

from __future__ import annotations

import dataclasses
import itertools

STEPS_BUDGET = 100

# Images per pass, by image size (64 GiB-class accelerators; host RAM on CPU).
MAX_CLASSIFIER_IMAGES = {32: 4096, 64: 512, 256: 64}
MAX_DECODER_IMAGES = {32: 1024, 64: 64, 256: 8}

SD_VAE = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
              up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
              layers_per_block=2, latent_channels=4, norm_num_groups=32, act_fn="silu",
              scaling_factor=0.18215, mid_block_add_attention=True)
# The demo architectures (scripts/train_demo_models.py: FASHION_AE and the classifier widths).
DEMO_VAE = dict(in_channels=1, out_channels=1, block_out_channels=(32, 64, 64),
                down_block_types=("DownEncoderBlock2D",) * 3,
                up_block_types=("UpDecoderBlock2D",) * 3,
                layers_per_block=1, latent_channels=4, norm_num_groups=16, sample_size=32,
                mid_block_add_attention=False)
DEMO_CLASSIFIER_WIDTHS = (32, 64, 128)
DEMO_NUM_CLASSES = 10


@dataclasses.dataclass(frozen=True)
class BenchmarkSetting:
    """One row of the benchmark.

    Attributes:
      name: the name ``--settings`` uses.
      models: ``"demo"`` (shipped weights), ``"demo_random"`` or ``"sd"`` (see the module doc).
      image_size: height = width in pixels.
      batch: images searched at once.
      space: smoothing space, ``"pixel"`` or ``"latent"``.
      num_samples: noise samples N per step.
      chunk_size: noise samples per pass (0: all at once).
      steps_budget: the search's step budget, for the extrapolated throughput.
    """

    name: str
    models: str
    image_size: int
    batch: int
    space: str
    num_samples: int
    chunk_size: int = 0
    steps_budget: int = STEPS_BUDGET

    def smoothing_overrides(self) -> dict:
        """The ``search.smoothing`` keys this setting sets (the rest of the search config is
        the default; steps and attempts are the timing's, see ``benchmarks.search_timing``)."""
        return {"space": self.space, "num_samples": self.num_samples,
                "chunk_size": self.chunk_size}


def _chunk(image_size: int, batch: int, space: str, num_samples: int) -> int:
    """Noise samples per pass that keep one pass under the image caps (0: no chunking)."""
    cap = (MAX_CLASSIFIER_IMAGES if space == "pixel" else MAX_DECODER_IMAGES)[image_size]
    if batch * num_samples <= cap:
        return 0
    return max(1, cap // batch)


def _sd_settings() -> list[BenchmarkSetting]:
    out = []
    for size, batch, space, n in itertools.product((64, 256), (1, 8, 32), ("pixel", "latent"),
                                                   (1, 8, 32)):
        out.append(BenchmarkSetting(f"sd{size}_b{batch}_{space}_n{n}", "sd", size, batch, space, n,
                                    _chunk(size, batch, space, n)))
    return out


def all_settings() -> dict[str, BenchmarkSetting]:
    """Every setting by name, in table order."""
    demo = dict(image_size=32, batch=10, space="pixel", num_samples=8)
    table = [BenchmarkSetting("demo", "demo", **demo),
             BenchmarkSetting("demo_random", "demo_random", **demo)] + _sd_settings()
    return {s.name: s for s in table}


# Finishes in under 10 minutes on a 2-core CPU (with the default --steps and --repeats).
QUICK = ("demo", "sd64_b1_pixel_n8", "sd64_b1_latent_n1")


def quick_settings(demo_available: bool) -> list[str]:
    """The ``--quick`` preset; the random-weight demo stands in when the assets are absent."""
    return [("demo" if demo_available else "demo_random") if n == "demo" else n for n in QUICK]


def select(names: list[str]) -> list[BenchmarkSetting]:
    """The settings named, in the order given; an unknown name raises with the known ones."""
    table = all_settings()
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"unknown benchmark setting(s) {unknown}; known: demo, demo_random, "
                         "sd{64,256}_b{1,8,32}_{pixel,latent}_n{1,8,32} (e.g. sd64_b1_pixel_n8)")
    return [table[n] for n in names]
