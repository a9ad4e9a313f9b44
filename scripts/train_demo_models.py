"""Trains the demo models that ship in sce_jax/assets/ (Fashion-MNIST and squares).

    apt-get install dataset-fashion-mnist       # the idx files, /usr/share/datasets/fashion-mnist
    python scripts/train_demo_models.py --out=sce_jax/assets

For each demo: a small AutoencoderKL (orbax checkpoint + a diffusers-format copy that
diffusers' PyTorch class loads), the classifier to explain, and an independently trained
surrogate classifier (other seed and widths; for the non-adversarial-rate metric). Also writes
the demo data (a balanced Fashion-MNIST test subset; a squares test set with its factors) and
provenance.json with the settings, seeds and measured quality. Deterministic given the seeds.
"""

import dataclasses
import json
import os
import shutil
import sys
import time

from absl import app, flags, logging

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from sce_jax.demos import fashion_mnist, squares  # noqa: E402
from sce_jax.demos import training as T  # noqa: E402
from sce_jax.models.autoencoder_kl import AutoencoderKL, AutoencoderKLConfig  # noqa: E402
from sce_jax.models.checkpoint import save_model  # noqa: E402
from sce_jax.models.small_cnn import SmallCNN, SmallCNNConfig  # noqa: E402
from sce_jax.weights.diffusers_dirs import save_pretrained_diffusers  # noqa: E402

flags.DEFINE_string("out", os.path.join(ROOT, "sce_jax", "assets"), "Asset directory to (re)write.")
flags.DEFINE_enum("demo", "all", ["all", "fashion_mnist", "squares"], "Which demo to train.")
flags.DEFINE_list("roles", ["autoencoder", "classifier", "surrogate", "prior"],
                  "Which models of the demo to (re)train; the others keep their shipped files "
                  "(--roles=data: none, only the test and validation images are rewritten).")
flags.DEFINE_float("scale", 1.0, "Multiplies every step count (0.05 for a quick check).")
FLAGS = flags.FLAGS

# Small enough to train in minutes on 2 CPU cores: 32x32x1 -> 8x8x4 and 64x64x3 -> 8x8x4.
FASHION_AE = dict(in_channels=1, out_channels=1, block_out_channels=(16, 32, 32),
                  down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                  layers_per_block=1, latent_channels=4, norm_num_groups=8, sample_size=32,
                  mid_block_add_attention=False)
SQUARES_AE = dict(in_channels=3, out_channels=3, block_out_channels=(16, 32, 32, 32),
                  down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                  layers_per_block=1, latent_channels=4, norm_num_groups=8, sample_size=64,
                  mid_block_add_attention=False)

# The demo priors: a 4-block DiT over the 8x8 latent grid (one token per latent cell).
PRIOR_SIZE = dict(hidden_size=64, depth=4, num_heads=4)
PRIOR_STEPS = 800


def steps(n: int) -> int:
    return max(10, int(n * FLAGS.scale))


def _fresh(directory: str) -> str:
    if os.path.exists(directory):
        shutil.rmtree(directory)
    return directory


def pad_to_32(images: np.ndarray) -> np.ndarray:
    """28x28 Fashion-MNIST -> 32x32 (2 black pixels each side), float32 [0, 1] NHWC."""
    x = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
    if x.ndim == 3:
        x = x[..., None]
    return np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))


def train_demo(name, out, train_x, train_y, test_x, test_y, ae_config, widths, surrogate_widths,
               ae_steps, cls_steps, num_classes, seed, augment_flip, record, prior_steps):
    if "autoencoder" in FLAGS.roles:
        train_autoencoder(name, out, train_x, test_x, ae_config, ae_steps, seed, record)
    for role, w, s in (("classifier", widths, seed + 1), ("surrogate", surrogate_widths, seed + 2)):
        if role not in FLAGS.roles:
            continue
        t0 = time.time()
        config = SmallCNNConfig(in_channels=train_x.shape[-1], num_classes=num_classes, widths=w)
        model = SmallCNN(config, rngs=nnx.Rngs(s))
        model = T.train_classifier(model, train_x, train_y, T.TrainSettings(cls_steps, 128, 2e-3, seed=s),
                                   augment_flip=augment_flip)
        acc = T.accuracy(model, test_x, test_y)
        record[role] = {"widths": list(w), "steps": cls_steps, "batch_size": 128, "seed": s,
                        "learning_rate": 2e-3, "test_accuracy": acc,
                        "train_seconds": round(time.time() - t0, 1)}
        logging.info("%s %s: test accuracy %.4f", name, role, acc)
        save_model(model, _fresh(os.path.join(out, name, role)))
    if "prior" in FLAGS.roles:
        train_prior(name, out, train_x, test_x, prior_steps, seed + 3, record)
    return record


def train_prior(name, out, train_x, test_x, prior_steps, seed, record):
    """A latent flow-matching prior on the shipped autoencoder's latents of the training set.

    Sample quality: FID and KID between decoded prior samples (Euler, 25 steps) and as many test
    images, in the surrogate's penultimate features; the same figures for the autoencoder's
    reconstructions of other test images give the floor the prior is compared with.
    """
    from sce_jax import Classifier, Generator
    from sce_jax.metrics import realism
    from sce_jax.models.latent_flow import LatentFlowConfig, LatentFlowTransformer
    from sce_jax.prior import Prior
    from sce_jax.search import prior_step

    t0 = time.time()
    generator = Generator.from_autoencoder(_load(os.path.join(out, name, "autoencoder")))
    latents = T.encode_all(generator, train_x)
    h, w, c = latents.shape[1:]
    config = LatentFlowConfig(latent_channels=c, sample_size=(h, w), **PRIOR_SIZE)
    model = LatentFlowTransformer(config, rngs=nnx.Rngs(seed))
    model, loss = T.train_flow_prior(model, latents, T.TrainSettings(prior_steps, 128, 1e-3, seed=seed))
    prior = Prior.from_nnx(model)
    n = min(500, len(test_x) // 2)
    sample = jax.jit(lambda p, e: generator.decode_fn(generator.params, prior_step.sample(
        lambda z, t, ctx: prior.velocity_fn(p, z, t, ctx), e, steps=25, shift=1.0)))
    eps = jax.random.normal(jax.random.key(seed), (n, h, w, c))
    samples = np.clip(np.concatenate([np.asarray(sample(prior.params, eps[i:i + 250]))
                                      for i in range(0, n, 250)]), 0, 1)
    recon = np.clip(np.concatenate([np.asarray(generator.decode(generator.encode(test_x[n + i:n + i + 250])))
                                    for i in range(0, n, 250)]), 0, 1)
    surrogate = Classifier.from_nnx(_load(os.path.join(out, name, "surrogate")))
    features = jax.jit(surrogate.features_fn)
    feats = lambda x: np.concatenate([np.asarray(features(surrogate.params, x[i:i + 250]))  # noqa: E731
                                      for i in range(0, len(x), 250)])
    real, fake, rec = feats(test_x[:n]), feats(samples), feats(recon)
    kid_s, kid_r = realism.kid(real, fake, subset_size=min(500, n)), realism.kid(real, rec, subset_size=min(500, n))
    record["prior"] = {
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()},
        "steps": prior_steps, "batch_size": 128, "learning_rate": 1e-3, "seed": seed,
        "final_loss": round(loss, 5), "train_seconds": round(time.time() - t0, 1),
        "sample_quality": {
            "num_images": n, "features": "surrogate penultimate", "sampler": "Euler, 25 steps, shift 1",
            "fid_samples_vs_test": round(realism.fid(real, fake), 3),
            "kid_samples_vs_test": round(kid_s.mean, 5),
            "fid_reconstructions_vs_test": round(realism.fid(real, rec), 3),
            "kid_reconstructions_vs_test": round(kid_r.mean, 5)}}
    logging.info("%s prior: %s", name, record["prior"])
    save_model(model, _fresh(os.path.join(out, name, "prior")))


def train_autoencoder(name, out, train_x, test_x, ae_config, ae_steps, seed, record):
    t0 = time.time()
    ae = AutoencoderKL(AutoencoderKLConfig(**ae_config), rngs=nnx.Rngs(seed))
    ae, parts = T.train_autoencoder(ae, train_x, T.TrainSettings(ae_steps, 32, 2e-3, seed=seed))
    std = T.latent_std(ae, train_x[:4096])
    ae = T.with_config(ae, scaling_factor=round(1.0 / std, 5))
    record["autoencoder"] = {
        "config": ae_config, "steps": ae_steps, "batch_size": 32, "learning_rate": 2e-3,
        "kl_weight": 1e-4, "seed": seed, "scaling_factor": round(1.0 / std, 5),
        "test_reconstruction_mae": T.reconstruction_error(ae, test_x[:2000]),
        "train_seconds": round(time.time() - t0, 1)}
    logging.info("%s autoencoder: %s", name, record["autoencoder"])
    save_model(ae, _fresh(os.path.join(out, name, "autoencoder")))
    save_pretrained_diffusers(ae, _fresh(os.path.join(out, name, "autoencoder_diffusers")))


def main(argv):
    del argv
    out = os.path.abspath(FLAGS.out)
    os.makedirs(out, exist_ok=True)
    provenance_path = os.path.join(out, "provenance.json")
    provenance = json.load(open(provenance_path)) if os.path.exists(provenance_path) else {}

    if FLAGS.demo in ("all", "fashion_mnist"):
        train = fashion_mnist.load_split("train")
        test = fashion_mnist.load_split("test")
        train_x, test_x = pad_to_32(train.images), pad_to_32(test.images)
        record = train_demo("fashion_mnist", out, train_x, train.labels, test_x, test.labels,
                            FASHION_AE, (32, 64, 128, 128), (24, 48, 96), steps(1200), steps(4500), 10,
                            seed=0, augment_flip=True, record=provenance.get("fashion_mnist", {}),
                            prior_steps=steps(PRIOR_STEPS))
        subset = os.path.join(out, "fashion_mnist", "test_subset.npz")
        record["data"] = fashion_mnist.write_test_subset(subset, per_class=2, seed=0, pad_to=32)
        # Settings are chosen on these, never on the test subset the README reports.
        record["validation_data"] = fashion_mnist.write_test_subset(
            os.path.join(out, "fashion_mnist", "validation_subset.npz"), per_class=2, seed=1,
            pad_to=32, exclude=record["data"]["source_indices"])
        record["command"] = "python scripts/train_demo_models.py --demo=fashion_mnist"
        provenance["fashion_mnist"] = record

    if FLAGS.demo in ("all", "squares"):
        rate = 0.9
        train = squares.generate(12000, seed=1, confounder_rate=rate)
        test = squares.generate(2000, seed=2, confounder_rate=rate)
        record = train_demo("squares", out, train.images, train.labels, test.images, test.labels,
                            SQUARES_AE, (16, 32, 64), (12, 24, 48), steps(800), steps(600), 2,
                            seed=10, augment_flip=False, record=provenance.get("squares", {}),
                            prior_steps=steps(PRIOR_STEPS))
        unconfounded = squares.generate(2000, seed=3, confounder_rate=0.5)
        record["classifier"]["accuracy_unconfounded"] = T.accuracy(
            _load(os.path.join(out, "squares", "classifier")),
            unconfounded.images, unconfounded.labels)
        record["data"] = squares.write_test_set(os.path.join(out, "squares", "test_set.npz"),
                                                num=24, seed=4, confounder_rate=rate)
        # Seeds 1-4 made the training, evaluation and test images; the validation set is seed 5.
        record["validation_data"] = squares.write_test_set(
            os.path.join(out, "squares", "validation_set.npz"), num=24, seed=5, confounder_rate=rate)
        record["confounder_rate"] = rate
        record["command"] = "python scripts/train_demo_models.py --demo=squares"
        provenance["squares"] = record

    with open(provenance_path, "w") as f:
        json.dump(provenance, f, indent=2, sort_keys=True)
    print(json.dumps(provenance, indent=2, sort_keys=True))


def _load(directory):
    from sce_jax.models.checkpoint import load_model
    return load_model(directory)


if __name__ == "__main__":
    from sce_jax.launch.command_line import parse_flags
    app.run(main, flags_parser=parse_flags)  # bad flag: error line, exit 2; --help: exit 0
