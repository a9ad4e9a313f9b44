"""Writes the prompt embeddings an SD3 prior takes, from a local SD3 pipeline folder.

    python scripts/encode_prompt.py --pipeline=/models/stable-diffusion-3-medium-diffusers \
        --out=embeddings/empty.npz                              # the empty prompt (default)
    python scripts/encode_prompt.py --pipeline=/models/sd3 --prompt="a photo of a dress" \
        --out=embeddings/dress.npz

The text encoders (CLIP-L, CLIP-G, and T5-XXL when the pipeline has it) run once, in PyTorch,
through diffusers' ``StableDiffusion3Pipeline.encode_prompt``; the transformer and the VAE are
not loaded (without T5 the zero padding's width is read from ``transformer/config.json``). Needs ``torch``, ``diffusers`` and ``transformers`` (optional: explaining does not).
The .npz holds ``encoder_hidden_states`` (1, L, 4096) and ``pooled_projections`` (1, 2048),
float32, plus the prompt and the folder; ``sce_jax.priors.prompt_embeddings`` reads it back.
Nothing is downloaded.

Exit codes: 0 written; 2 a missing or unusable folder, missing PyTorch / diffusers /
transformers, or a file that cannot be written (one ``error: ...`` line).
"""

import json
import os
import sys
import types

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a checkout without installing

from sce_jax.priors.prompt_embeddings import save_prompt_embeddings  # noqa: E402

EXIT_USER_ERROR = 2
PIPELINE_INDEX = "model_index.json"

flags.DEFINE_string("pipeline", None, "Local SD3 pipeline folder (with model_index.json).")
flags.DEFINE_string("prompt", "", "The prompt (default: the empty prompt).")
flags.DEFINE_string("out", None, "Output .npz file.")
flags.DEFINE_integer("max_sequence_length", 256, "T5 tokens (SD3 pipelines' default 256).")
flags.DEFINE_string("device", "cpu", "torch device for the text encoders.")


def _error(message) -> int:
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    return EXIT_USER_ERROR


def _import_torch_diffusers():
    """(torch, StableDiffusion3Pipeline), or a message naming what is missing."""
    # transformers >= 5 may fetch layer kernels from the hub when loading; nothing is fetched here.
    os.environ.setdefault("USE_HUB_KERNELS", "0")
    try:
        import diffusers
        import torch
    except ImportError as e:
        return None, (f"encode_prompt.py needs PyTorch and diffusers ({e}); install them "
                      "with `pip install torch diffusers transformers` (explaining itself does "
                      "not need them)")
    try:
        import transformers  # noqa: F401 - the text encoders are transformers models
    except ImportError as e:
        return None, (f"encode_prompt.py needs transformers for the SD3 text encoders ({e}); "
                      "`pip install transformers sentencepiece`")
    return (torch, diffusers.StableDiffusion3Pipeline), None


def encode(pipeline_dir: str, prompt: str, *, max_sequence_length: int, device: str):
    """(encoder_hidden_states (1, L, D), pooled_projections (1, P)) as float32 numpy."""
    modules, problem = _import_torch_diffusers()
    if problem:
        raise ImportError(problem)
    torch, pipeline_class = modules
    with open(os.path.join(pipeline_dir, PIPELINE_INDEX)) as f:
        index = json.load(f)
    # Components the folder does not have (T5 dropped, say) are passed as None, as diffusers
    # asks; the transformer and the VAE are not needed to encode a prompt.
    absent = {k: None for k, v in index.items()
              if not k.startswith("_") and isinstance(v, list) and v and v[0] is None}
    pipe = pipeline_class.from_pretrained(pipeline_dir, **{**absent, "transformer": None,
                                                           "vae": None},
                                          local_files_only=True, torch_dtype=torch.float32)
    pipe = pipe.to(device)
    if pipe.text_encoder_3 is None:
        # Without T5 diffusers pads with zeros of the transformer's joint_attention_dim, read
        # from transformer/config.json instead of loading the transformer.
        with open(os.path.join(pipeline_dir, "transformer", "config.json")) as f:
            joint = json.load(f)["joint_attention_dim"]
        stand_in = types.SimpleNamespace(config=types.SimpleNamespace(joint_attention_dim=joint))
        object.__setattr__(pipe, "transformer", stand_in)
    with torch.no_grad():
        prompt_embeds, _, pooled, _ = pipe.encode_prompt(
            prompt=prompt, prompt_2=None, prompt_3=None, device=torch.device(device),
            num_images_per_prompt=1, do_classifier_free_guidance=False,
            max_sequence_length=max_sequence_length)
    return prompt_embeds.float().cpu().numpy(), pooled.float().cpu().numpy()


def main(argv):
    if len(argv) > 1:
        return _error(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.pipeline:
        return _error("--pipeline=<SD3 pipeline folder> is required")
    if not FLAGS.out:
        return _error("--out=<file>.npz is required")
    folder = os.path.abspath(os.path.expanduser(FLAGS.pipeline))
    if not os.path.isdir(folder):
        return _error(f"--pipeline={FLAGS.pipeline}: no such folder")
    if not os.path.isfile(os.path.join(folder, PIPELINE_INDEX)):
        return _error(f"--pipeline={FLAGS.pipeline}: no {PIPELINE_INDEX}; expected a diffusers "
                      "SD3 pipeline folder (text_encoder/, text_encoder_2/, tokenizer/ ...)")
    modules, problem = _import_torch_diffusers()
    if problem:
        return _error(problem)
    try:
        hidden, pooled = encode(folder, FLAGS.prompt, max_sequence_length=FLAGS.max_sequence_length,
                                device=FLAGS.device)
    except (OSError, ValueError, TypeError, AttributeError, KeyError, ImportError) as e:
        return _error(f"--pipeline={FLAGS.pipeline}: cannot encode with this folder's text "
                      f"encoders: {type(e).__name__}: {e}")
    try:
        path = save_prompt_embeddings(FLAGS.out, hidden, pooled, prompt=FLAGS.prompt,
                                      pipeline=folder)
    except OSError as e:
        return _error(f"--out={FLAGS.out}: cannot write: {e}")
    print(f"wrote {path}: encoder_hidden_states {hidden.shape}, pooled_projections "
          f"{pooled.shape}, prompt {FLAGS.prompt!r}")
    return 0


FLAGS = flags.FLAGS

if __name__ == "__main__":
    from sce_jax.launch.command_line import parse_flags
    # bad flag: error line, exit 2; --help: exit 0
    app.run(lambda argv: sys.exit(main(argv)), flags_parser=parse_flags)
