"""Tiny random SD3 pipeline folders, written by diffusers (and transformers, when installed).

A folder has ``model_index.json``, ``scheduler/``, ``transformer/`` (a tiny
SD3Transformer2DModel) and ``vae/`` (a tiny 16-channel AutoencoderKL with SD3's latent shift and
scale); with ``text_encoders=True`` also two tiny CLIP text encoders with projection and their
byte-level tokenizers (every byte a token, no merges), and no T5, as a pipeline with T5 dropped.
"""

import json
import os

TRANSFORMER = dict(sample_size=8, patch_size=2, in_channels=16, num_layers=2,
                   attention_head_dim=8, num_attention_heads=2, joint_attention_dim=32,
                   caption_projection_dim=16, pooled_projection_dim=16, out_channels=16,
                   pos_embed_max_size=8)
VAE = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
           up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16),
           layers_per_block=1, latent_channels=16, norm_num_groups=4, sample_size=16,
           scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False,
           use_post_quant_conv=False)
CLIP_WIDTH = 8  # two encoders: prompt embeddings 16 wide, padded to joint_attention_dim 32


def _byte_unicode() -> list[str]:
    """GPT-2 / CLIP's printable stand-in character for each of the 256 bytes."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def _write_clip_tokenizer(folder: str) -> int:
    os.makedirs(folder, exist_ok=True)
    chars = _byte_unicode()
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    with open(os.path.join(folder, "vocab.json"), "w") as f:
        json.dump({t: i for i, t in enumerate(tokens)}, f)
    with open(os.path.join(folder, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n")
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"model_max_length": 77, "bos_token": "<|startoftext|>",
                   "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
                   "pad_token": "<|endoftext|>", "tokenizer_class": "CLIPTokenizer"}, f)
    return len(tokens)


def write_tiny_sd3_pipeline(root: str, *, text_encoders: bool = False, seed: int = 0) -> str:
    """Writes the folder (random weights from ``seed``); returns ``root``."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

    index = {"_class_name": "StableDiffusion3Pipeline", "_diffusers_version": "0.42.1",
             "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
             "transformer": ["diffusers", "SD3Transformer2DModel"],
             "vae": ["diffusers", "AutoencoderKL"],
             "image_encoder": [None, None], "feature_extractor": [None, None]}
    for name in ("text_encoder", "text_encoder_2", "text_encoder_3",
                 "tokenizer", "tokenizer_2", "tokenizer_3"):
        index[name] = [None, None]
    torch.manual_seed(seed)
    FlowMatchEulerDiscreteScheduler(shift=3.0).save_pretrained(os.path.join(root, "scheduler"))
    SD3Transformer2DModel(**TRANSFORMER).save_pretrained(os.path.join(root, "transformer"))
    AutoencoderKL(**VAE).save_pretrained(os.path.join(root, "vae"))
    if text_encoders:
        from transformers import CLIPTextConfig, CLIPTextModelWithProjection
        for encoder, tokenizer in (("text_encoder", "tokenizer"),
                                   ("text_encoder_2", "tokenizer_2")):
            vocab = _write_clip_tokenizer(os.path.join(root, tokenizer))
            config = CLIPTextConfig(vocab_size=vocab, hidden_size=CLIP_WIDTH,
                                    intermediate_size=2 * CLIP_WIDTH, num_hidden_layers=2,
                                    num_attention_heads=2, max_position_embeddings=77,
                                    projection_dim=CLIP_WIDTH, bos_token_id=vocab - 2,
                                    eos_token_id=vocab - 1, pad_token_id=vocab - 1)
            CLIPTextModelWithProjection(config).eval().save_pretrained(os.path.join(root, encoder))
            index[encoder] = ["transformers", "CLIPTextModelWithProjection"]
            index[tokenizer] = ["transformers", "CLIPTokenizer"]
    with open(os.path.join(root, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2)
    return root
