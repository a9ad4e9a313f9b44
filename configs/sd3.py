"""Explaining with a local Stable Diffusion 3 pipeline: its VAE as the generator, its
transformer (MMDiT) as the search's prior, conditioned on precomputed prompt embeddings.

    # once, where PyTorch + diffusers + transformers are installed (the empty prompt):
    python scripts/encode_prompt.py --pipeline=/models/sd3 --out=embeddings/empty.npz
    # then (the argument: the pipeline folder, the embeddings, an orbax classifier checkpoint)
    python scripts/explain.py \
        --config=sd3:pipeline=/models/sd3,embeddings=embeddings/empty.npz,classifier=ckpt/clf \
        --config.data.source=/data/images --config.data.image_size=256,256 --workdir=runs/sd3

The argument is ``key=value`` pairs separated by commas: ``pipeline`` (a diffusers SD3 /
SD3.5 pipeline folder with ``vae/`` and ``transformer/``, or a repo id in the local Hugging
Face cache), ``embeddings`` (the .npz of ``scripts/encode_prompt.py``) and ``classifier`` (an
orbax checkpoint, ``scripts/convert_weights.py``); optionally ``dtype`` (``bfloat16`` runs the
VAE and the transformer in bfloat16 and halves the transformer's 8 GB of float32 weights).
Set the classifier's preprocessing (``--config.classifier.mean=...``, ``std``, ``input_size``)
as it was trained. The prior runs SD3's schedule shift 3; every search step costs
``denoise_steps`` transformer forwards per image (see docs/ports.md, "Transformer priors
(SD3)", for what that costs): an accelerator is what this config is for.
"""

from sce_jax.runs.config import base_run_config

REQUIRED = ("pipeline", "embeddings", "classifier")
OPTIONAL = {"dtype": "float32"}


def parse_argument(arg: str | None) -> dict[str, str]:
    """``"pipeline=A,embeddings=B,classifier=C[,dtype=D]"`` -> dict; names what is wrong."""
    values = dict(OPTIONAL)
    for item in filter(None, (arg or "").split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in REQUIRED + tuple(OPTIONAL) or not value:
            raise ValueError(f"configs/sd3.py: bad argument {item!r}; expected key=value with key "
                             f"in {list(REQUIRED + tuple(OPTIONAL))}")
        values[key] = value
    missing = [k for k in REQUIRED if k not in values]
    if missing:
        raise ValueError(f"configs/sd3.py needs {missing} in its argument: "
                         "--config=sd3:pipeline=DIR,embeddings=FILE.npz,classifier=DIR")
    return values


def get_config(arg: str | None = None):
    values = parse_argument(arg)
    c = base_run_config()
    c.data.channels = 3
    c.data.image_size = (256, 256)
    c.generator.diffusers = values["pipeline"]      # its vae/: 16 channels, shift and scale
    c.generator.kind = "kl"
    c.generator.dtype = values["dtype"]
    c.prior.diffusers = values["pipeline"]          # its transformer/
    c.prior.kind = "sd3"
    c.prior.dtype = values["dtype"]
    c.prior.context = values["embeddings"]
    c.classifier.checkpoint = values["classifier"]
    c.classifier.channels = 3
    c.search.prior.enabled = True
    c.search.prior.shift = 3.0                      # SD3's FlowMatchEulerDiscreteScheduler shift
    c.batch_size = 1
    return c
