"""Run configs on a local diffusers pipeline: its VAE as the generator, its transformer as the
search's prior, conditioned on precomputed prompt embeddings (``configs/sd3.py``,
``configs/flux.py``).

Such a config takes one argument, ``key=value`` pairs separated by commas: ``pipeline`` (the
pipeline folder, with ``vae/`` and ``transformer/``, or a repo id in the local Hugging Face
cache), ``embeddings`` (a prompt-embeddings ``.npz``, :mod:`sce_jax.priors.prompt_embeddings`)
and ``classifier`` (an orbax checkpoint); optionally ``dtype`` (``bfloat16`` runs the VAE and
the transformer in bfloat16) and ``shift`` (the prior's schedule shift, see
:mod:`sce_jax.search.prior_step`).
"""

from __future__ import annotations

import ml_collections

from sce_jax.runs.config import base_run_config

REQUIRED = ("pipeline", "embeddings", "classifier")
OPTIONAL = ("dtype", "shift")


def parse_argument(arg: str | None, *, name: str, defaults: dict[str, str]) -> dict[str, str]:
    """``"pipeline=A,embeddings=B,classifier=C[,dtype=D][,shift=S]"`` -> dict, the optional
    keys from ``defaults`` where not given; names what is wrong (``name``: the config file)."""
    values = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in REQUIRED + OPTIONAL or not value:
            raise ValueError(f"{name}: bad argument {item!r}; expected key=value with key "
                             f"in {list(REQUIRED + OPTIONAL)}")
        values[key] = value
    missing = [k for k in REQUIRED if k not in values]
    if missing:
        raise ValueError(f"{name} needs {missing} in its argument: "
                         f"--config={name.split('/')[-1][:-3]}:pipeline=DIR,embeddings=FILE.npz,classifier=DIR")
    try:
        float(values["shift"])
    except ValueError:
        raise ValueError(f"{name}: shift={values['shift']!r} is not a number") from None
    return values


def pipeline_run_config(values: dict[str, str], *, prior_kind: str,
                        image_size: tuple[int, int]) -> ml_collections.ConfigDict:
    """The run config of :func:`parse_argument`'s ``values``: the pipeline's ``vae/`` (a KL
    autoencoder) as the generator, its ``transformer/`` as a ``prior_kind`` prior with the prompt
    embeddings as its context, RGB images of ``image_size``, one image per batch."""
    c = base_run_config()
    c.data.channels = 3
    c.data.image_size = tuple(image_size)
    c.generator.diffusers = values["pipeline"]      # its vae/: channels, shift and scale
    c.generator.kind = "kl"
    c.generator.dtype = values["dtype"]
    c.prior.diffusers = values["pipeline"]          # its transformer/
    c.prior.kind = prior_kind
    c.prior.dtype = values["dtype"]
    c.prior.context = values["embeddings"]
    c.classifier.checkpoint = values["classifier"]
    c.classifier.channels = 3
    c.search.prior.enabled = True
    c.search.prior.shift = float(values["shift"])
    c.batch_size = 1
    return c
