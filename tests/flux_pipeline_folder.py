"""A tiny random FLUX pipeline folder, written by diffusers: ``model_index.json``,
``scheduler/``, ``transformer/`` (a tiny FluxTransformer2DModel, schnell-like: no guidance
embedding) and ``vae/`` (a tiny 4-channel AutoencoderKL with FLUX's kind of latent shift and
scale; the transformer takes 2x2-packed tokens of 16 channels)."""

import json
import os

TRANSFORMER = dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                   attention_head_dim=8, num_attention_heads=2, joint_attention_dim=24,
                   pooled_projection_dim=12, axes_dims_rope=(2, 2, 4), guidance_embeds=False)
VAE = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
           up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16),
           layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=16,
           scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False,
           use_post_quant_conv=False)


def write_tiny_flux_pipeline(root: str, *, seed: int = 0) -> str:
    """Writes the folder (random weights from ``seed``); returns ``root``."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    torch.manual_seed(seed)
    FlowMatchEulerDiscreteScheduler(shift=1.0).save_pretrained(os.path.join(root, "scheduler"))
    FluxTransformer2DModel(**TRANSFORMER).save_pretrained(os.path.join(root, "transformer"))
    AutoencoderKL(**VAE).save_pretrained(os.path.join(root, "vae"))
    index = {"_class_name": "FluxPipeline", "_diffusers_version": "0.42.1",
             "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
             "transformer": ["diffusers", "FluxTransformer2DModel"],
             "vae": ["diffusers", "AutoencoderKL"]}
    for name in ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"):
        index[name] = [None, None]
    with open(os.path.join(root, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2)
    return root
