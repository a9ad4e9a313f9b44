"""Converts PyTorch checkpoints into the orbax checkpoints a run config names.

    # an autoencoder: a diffusers folder, a pipeline folder (its vae/), or a cached repo id
    python scripts/convert_weights.py --autoencoder=/models/sd-vae-ft-mse --out=ckpt/vae
    python scripts/convert_weights.py --autoencoder=madebyollin/taesd --kind=tiny --out=ckpt/taesd

    # a torchvision classifier (.pth/.pt state dict or checkpoint dict, or .safetensors)
    python scripts/convert_weights.py --classifier=resnet50.pth --arch=resnet50 --out=ckpt/clf
    python scripts/convert_weights.py --classifier=vit_b_16.pth --arch=vit_b_16 --out=ckpt/vit

Loading is strict: a missing, unexpected or mis-shaped tensor stops with the full lists.
The classifier's number of classes is read from its head unless --num_classes is given.
"""

import os
import sys

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sce_jax.launch import command_line  # noqa: E402
from sce_jax.models.checkpoint import save_model  # noqa: E402
from sce_jax.models.registry import GENERATOR_KINDS  # noqa: E402

flags.DEFINE_string("autoencoder", "", "diffusers folder, pipeline folder or cached repo id")
flags.DEFINE_enum("kind", "kl", GENERATOR_KINDS.names(), "the autoencoder's generator kind "
                  "(sce_jax.models.registry.GENERATOR_KINDS: kl = AutoencoderKL, tiny = "
                  "AutoencoderTiny / TAESD)")
flags.DEFINE_string("classifier", "", "torchvision checkpoint file")
flags.DEFINE_enum("arch", "resnet50", ["resnet18", "resnet34", "resnet50", "resnet101", "densenet121",
                                        "vit_b_16"],
                  "classifier architecture")
flags.DEFINE_integer("num_classes", 0, "classifier outputs (0: read from the checkpoint's head)")
flags.DEFINE_integer("image_size", 0, "ViT input size (0: the checkpoint's; another size "
                     "resamples the position embeddings)")
flags.DEFINE_string("out", "", "output checkpoint directory (must not exist yet)")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if bool(FLAGS.autoencoder) == bool(FLAGS.classifier):
        raise app.UsageError("give exactly one of --autoencoder and --classifier")
    if not FLAGS.out:
        raise app.UsageError("--out is required")
    if FLAGS.image_size and not FLAGS.arch.startswith("vit"):
        raise app.UsageError("--image_size applies to ViT architectures only")
    try:
        if FLAGS.autoencoder:
            model = GENERATOR_KINDS[FLAGS.kind].from_pretrained(FLAGS.autoencoder)
        else:
            from sce_jax.models.torchvision_import import load_torchvision_classifier
            model = load_torchvision_classifier(FLAGS.classifier, FLAGS.arch,
                                                num_classes=FLAGS.num_classes or None,
                                                image_size=FLAGS.image_size or None)
    except (ValueError, OSError) as e:  # a missing or unreadable checkpoint names itself
        return command_line.error(command_line.plain_message(e))
    path = save_model(model, FLAGS.out)
    print(f"wrote {type(model).__name__} to {path}")


if __name__ == "__main__":
    from sce_jax.launch.command_line import parse_flags
    app.run(main, flags_parser=parse_flags)  # bad flag: error line, exit 2; --help: exit 0
