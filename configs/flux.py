"""Explaining with a local FLUX.1 pipeline: its VAE as the generator, its transformer as the
search's prior, conditioned on precomputed prompt embeddings (T5 tokens and the pooled CLIP
vector).

    # once, where PyTorch + diffusers + transformers are installed (here the empty prompt):
    #   pipe = diffusers.FluxPipeline.from_pretrained("/models/flux-schnell")
    #   embeds, pooled, _ = pipe.encode_prompt("", prompt_2=None, max_sequence_length=256)
    #   sce_jax.priors.prompt_embeddings.save_prompt_embeddings(
    #       "embeddings/flux_empty.npz", embeds.float().numpy(), pooled.float().numpy())
    python scripts/explain.py \
        --config=flux:pipeline=/models/flux-schnell,embeddings=embeddings/flux_empty.npz,classifier=ckpt/clf \
        --config.data.source=/data/images --workdir=runs/flux

The argument is as for ``configs/sd3.py`` (``sce_jax/runs/pipeline_config.py``): ``pipeline``
(a diffusers FLUX pipeline folder with ``vae/`` and ``transformer/``, or a repo id in the local
Hugging Face cache), ``embeddings``, ``classifier``; optionally ``dtype`` (``bfloat16``: the
12B transformer's weights take 24 GB instead of 48) and ``shift``. FluxPipeline shifts its
schedule by the image's token count (``mu`` from 0.5 at 256 tokens to 1.15 at 4096, shift
``exp(mu)``); the default here, ``exp(0.5) = 1.65``, is a 256x256 image's (16x16 tokens of
2x2-packed 32x32 latents). FLUX.1-schnell's scheduler uses no shift: pass ``shift=1``; at
other sizes pass ``exp(mu)`` for that size. A guidance-distilled model (dev) gets
FluxPipeline's default guidance 3.5. Every search step costs ``denoise_steps`` transformer
forwards per image (docs/ports.md, "FLUX transformer"): an accelerator is what this config is for.
"""

import math

from sce_jax.runs.pipeline_config import parse_argument, pipeline_run_config

DEFAULTS = {"dtype": "float32", "shift": str(round(math.exp(0.5), 4))}


def get_config(arg: str | None = None):
    values = parse_argument(arg, name="configs/flux.py", defaults=DEFAULTS)
    return pipeline_run_config(values, prior_kind="flux", image_size=(256, 256))
