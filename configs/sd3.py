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
VAE and the transformer in bfloat16 and halves the transformer's 8 GB of float32 weights) and
``shift`` (default 3, SD3's). The argument's parsing is shared with ``configs/flux.py``
(``sce_jax/runs/pipeline_config.py``).
Set the classifier's preprocessing (``--config.classifier.mean=...``, ``std``, ``input_size``)
as it was trained. The prior runs SD3's schedule shift 3; every search step costs
``denoise_steps`` transformer forwards per image (see docs/ports.md, "Transformer priors
(SD3)", for what that costs): an accelerator is what this config is for.
"""

from sce_jax.runs.pipeline_config import parse_argument, pipeline_run_config

# SD3's FlowMatchEulerDiscreteScheduler shift.
DEFAULTS = {"dtype": "float32", "shift": "3.0"}


def get_config(arg: str | None = None):
    values = parse_argument(arg, name="configs/sd3.py", defaults=DEFAULTS)
    return pipeline_run_config(values, prior_kind="sd3", image_size=(256, 256))
