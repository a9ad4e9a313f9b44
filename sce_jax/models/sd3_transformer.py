"""A Flax NNX port of diffusers' ``SD3Transformer2DModel`` (the MMDiT of Stable Diffusion 3
and 3.5), NHWC.

Semantics are diffusers' own: the input is a noised latent in the pipeline's *scaled*
convention (``(z - shift_factor) * scaling_factor``), the timestep is on diffusers' scale
(``1000 * sigma``), the context is the text encoders' ``prompt_embeds`` (B, L,
joint_attention_dim) and ``pooled_prompt_embeds`` (B, pooled_projection_dim), and the output
is the flow-matching velocity ``eps - z``. Only the layout differs: latents are ``(B, H, W, C)``.

The network, as diffusers computes it (p = patch_size, D = heads * head_dim)::

    x = patchify_conv(z) + crop(pos_embed)              (B, H/p * W/p, D)
    temb = timestep_embedder(sinusoid(t)) + text_embedder(pooled)
    c = context_embedder(encoder_hidden_states)         (B, L, D)
    for block in transformer_blocks:                    joint attention over [x; c]
        c, x = block(x, c, temb)                        AdaLN-Zero modulation by temb
    v = unpatchify(proj_out(norm_out(x, temb)))         (B, H, W, out_channels)

``crop(pos_embed)``: the learned ``pos_embed_max_size``-square grid of position embeddings,
centre-cropped to the input's patch grid (non-square and smaller-than-trained sizes work; larger
than ``pos_embed_max_size`` patches raise). The last block is *context pre-only*: its context
branch only feeds keys and values (AdaLayerNormContinuous, no context output). SD3.5 variants:
``qk_norm="rms_norm"`` normalises queries and keys per head, and the blocks listed in
``dual_attention_layers`` add a second, image-only self-attention (``attn2``) modulated by the
three extra chunks of ``SD35AdaLayerNormZeroX``.

The layers SD3 shares with FLUX (AdaLN-Zero and continuous norms, the timestep / pooled-text
embedding, the feed-forward, RMS norms, linear layers accumulating bfloat16 products in
float32) come from :mod:`sce_jax.models.flux_layers`, the attention from
:mod:`sce_jax.models.attention`; the joint attention with its context-pre-only form, the
cropped position grid and the blocks are here. Precision with ``dtype=bfloat16``: products
in bfloat16 (float32 accumulation), norms, softmax and the residual streams in float32.

The module tree mirrors diffusers' (``transformer_blocks.3.attn.add_q_proj``,
``pos_embed.pos_embed`` ...), so a diffusers state dict loads by layer type without renames.
Load with :meth:`SD3Transformer2DModel.from_pretrained` (a ``transformer/`` folder, a pipeline
folder, or a repo id in the local Hugging Face cache; sharded safetensors with their index;
never the network). Wrap it as the search's prior with :func:`sce_jax.priors.sd3.sd3_prior`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sce_jax.models.attention import attention
from sce_jax.models.diffusers_component import DiffusersComponent
from sce_jax.models.flux_layers import (
    NORM_EPS,
    AdaLayerNormContinuous,
    AdaLayerNormZero,
    CombinedTimestepTextProjEmbeddings,
    FeedForward,
    FluxLayerFactory,
    RMSNorm,
    layer_norm,
)
from sce_jax.models.vae_blocks import LayerFactory
from sce_jax.weights.model_config import ConfigError

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class SD3TransformerConfig:
    """The fields of a diffusers ``SD3Transformer2DModel`` ``config.json``, diffusers' defaults.

    Attributes:
      sample_size: the training latent size; sets only the scale of the initial sincos position
        embeddings (a checkpoint brings its own).
      patch_size: p; latents are cut into p x p patches (H and W must be multiples of p).
      in_channels / out_channels: latent channels in and out (``out_channels`` None: same).
      num_layers: joint transformer blocks; the last is context pre-only.
      attention_head_dim, num_attention_heads: the heads; D = heads * head_dim is the width.
      joint_attention_dim: width of the text encoders' ``encoder_hidden_states``.
      caption_projection_dim: width the context is projected to; must equal D.
      pooled_projection_dim: width of the pooled text embedding.
      pos_embed_max_size: side of the learned position-embedding grid, in patches.
      dual_attention_layers: indices of the blocks with a second self-attention (SD3.5).
      qk_norm: None, or ``"rms_norm"`` (SD3.5): per-head norm of queries and keys.

    SD3-medium: 24 layers, 24 heads of 64 (D = 1536), joint 4096, pooled 2048, max size 192.
    """

    sample_size: int = 128
    patch_size: int = 2
    in_channels: int = 16
    num_layers: int = 18
    attention_head_dim: int = 64
    num_attention_heads: int = 18
    joint_attention_dim: int = 4096
    caption_projection_dim: int = 1152
    pooled_projection_dim: int = 2048
    out_channels: int | None = 16
    pos_embed_max_size: int = 96
    dual_attention_layers: tuple[int, ...] = ()
    qk_norm: str | None = None

    def __post_init__(self):
        def fail(field: str, expected: str):
            raise ConfigError(f"SD3TransformerConfig.{field}={getattr(self, field)!r} is not "
                              f"supported; expected {expected}")

        if isinstance(self.dual_attention_layers, list):
            object.__setattr__(self, "dual_attention_layers", tuple(self.dual_attention_layers))
        for name in ("sample_size", "patch_size", "in_channels", "num_layers",
                     "attention_head_dim", "num_attention_heads", "joint_attention_dim",
                     "caption_projection_dim", "pooled_projection_dim", "pos_embed_max_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                fail(name, "a positive integer")
        if self.out_channels is not None and (not isinstance(self.out_channels, int)
                                              or self.out_channels < 1):
            fail("out_channels", "None or a positive integer")
        if self.caption_projection_dim != self.inner_dim:
            fail("caption_projection_dim", f"num_attention_heads * attention_head_dim = "
                 f"{self.inner_dim} (the context joins the image tokens' attention)")
        if self.inner_dim % 4:
            fail("attention_head_dim", "num_attention_heads * attention_head_dim divisible by 4 "
                 "(2-D sincos position embeddings)")
        bad = [i for i in self.dual_attention_layers
               if not isinstance(i, int) or not 0 <= i < self.num_layers]
        if bad:
            fail("dual_attention_layers", f"block indices in [0, {self.num_layers})")
        if self.qk_norm is not None and self.qk_norm not in QK_NORMS:
            fail("qk_norm", f"None or one of {sorted(QK_NORMS)}")

    @property
    def inner_dim(self) -> int:
        """D: the token width."""
        return self.num_attention_heads * self.attention_head_dim

    @property
    def output_channels(self) -> int:
        return self.out_channels if self.out_channels is not None else self.in_channels


def sincos_position_embedding(dim: int, grid_size: int, base_size: int) -> np.ndarray:
    """diffusers' ``get_2d_sincos_pos_embed(dim, grid_size, base_size)``, (grid^2, dim) float32.

    Positions ``pos = i * base_size / grid_size`` along each axis; per axis
    ``[sin(pos w), cos(pos w)]`` with ``w_k = 10000^(-k / (dim / 4))``, k < dim / 4; the
    column (width) half first, then the row half, as diffusers' ``meshgrid(w, h, "xy")``
    orders them; row-major over the grid.
    """
    pos = np.arange(grid_size, dtype=np.float64) / (grid_size / base_size)
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4.0))

    def axis(p):
        out = np.outer(p.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    rows, cols = np.meshgrid(pos, pos, indexing="ij")
    return np.concatenate([axis(cols), axis(rows)], axis=1).astype(np.float32)


class PatchEmbed(nnx.Module):
    """diffusers ``PatchEmbed`` with SD3 cropping: a p x p, stride-p convolution (``proj``)
    plus the centre crop of the ``pos_embed`` grid (``(1, M^2, D)``, M = pos_embed_max_size)::

        top = (M - H/p) // 2,  left = (M - W/p) // 2
        x[b, i W/p + j] = proj(z)[b, i, j] + grid[top + i, left + j]
    """

    def __init__(self, config: SD3TransformerConfig, *, make: LayerFactory):
        p, d, m = config.patch_size, config.inner_dim, config.pos_embed_max_size
        self.patch_size, self.max_size = p, m
        self.proj = make.conv(config.in_channels, d, p, stride=p, padding=0)
        grid = sincos_position_embedding(d, m, config.sample_size // p)
        self.pos_embed = nnx.Param(jnp.asarray(grid[None], make.param_dtype))

    def __call__(self, z: Array) -> Array:
        b, height, width, _ = z.shape
        p, m = self.patch_size, self.max_size
        h, w = height // p, width // p
        if height % p or width % p:
            raise ValueError(f"SD3Transformer2DModel: latent size {height}x{width} is not a "
                             f"multiple of the patch size {p}")
        if h > m or w > m:
            raise ValueError(f"SD3Transformer2DModel: latent size {height}x{width} is {h}x{w} "
                             f"patches, more than pos_embed_max_size={m} per side")
        x = self.proj(z).reshape(b, h * w, -1).astype(jnp.float32)
        top, left = (m - h) // 2, (m - w) // 2
        grid = self.pos_embed[...].reshape(m, m, -1)[top:top + h, left:left + w]
        return x + grid.reshape(1, h * w, -1).astype(jnp.float32)


def _rms_norm(dim: int, make: LayerFactory) -> RMSNorm:
    return RMSNorm(dim, eps=NORM_EPS, param_dtype=make.param_dtype)


# diffusers Attention's ``qk_norm`` values this port supports -> the per-head norm it builds.
QK_NORMS = {"rms_norm": _rms_norm}


class Attention(nnx.Module):
    """diffusers ``Attention`` with ``JointAttnProcessor2_0``: self-attention over the image
    tokens, joined (when ``added_kv``) by the context tokens' own projections::

        q = [norm_q(to_q x), norm_added_q(add_q_proj c)]    (per head; k, v likewise)
        a = attention(q, k, v)                              (sce_jax.models.attention)
        x' = to_out.0(a[:T_x]),   c' = to_add_out(a[T_x:])  (c' absent if context_pre_only)

    Args:
      dim: token width (query and output).
      heads, head_dim: the heads; ``heads * head_dim`` is the projection width.
      qk_norm: None or a key of :data:`QK_NORMS` (per-head norm of queries and keys).
      added_kv: build the context projections (``add_{q,k,v}_proj``) -- a joint block.
      context_pre_only: the last joint block's attention: context tokens take part as keys and
        values, but their output is dropped (no ``to_add_out``).
    """

    def __init__(self, dim: int, heads: int, head_dim: int, *, qk_norm: str | None,
                 added_kv: bool, context_pre_only: bool = False, make: LayerFactory):
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.to_q = make.linear(dim, inner)
        self.to_k = make.linear(dim, inner)
        self.to_v = make.linear(dim, inner)
        norm = QK_NORMS[qk_norm] if qk_norm is not None else None
        self.norm_q = norm(head_dim, make) if norm else None
        self.norm_k = norm(head_dim, make) if norm else None
        if added_kv:
            self.add_q_proj = make.linear(dim, inner)
            self.add_k_proj = make.linear(dim, inner)
            self.add_v_proj = make.linear(dim, inner)
            self.norm_added_q = norm(head_dim, make) if norm else None
            self.norm_added_k = norm(head_dim, make) if norm else None
        else:
            self.add_q_proj = self.add_k_proj = self.add_v_proj = None
            self.norm_added_q = self.norm_added_k = None
        self.to_out = nnx.List([make.linear(inner, dim)])  # to_out.1 is a dropout
        self.to_add_out = make.linear(inner, dim) if added_kv and not context_pre_only else None

    def _heads(self, x: Array, proj: nnx.Linear, norm: nnx.Module | None) -> Array:
        b, t, _ = x.shape
        y = proj(x).reshape(b, t, self.heads, self.head_dim)
        return norm(y) if norm is not None else y

    def __call__(self, x: Array, context: Array | None = None) -> tuple[Array, Array | None]:
        """``(x', c')`` for image tokens ``x`` (B, T, D) and context tokens ``context``."""
        q = self._heads(x, self.to_q, self.norm_q)
        k = self._heads(x, self.to_k, self.norm_k)
        v = self._heads(x, self.to_v, None)
        tokens = x.shape[1]
        if context is not None:
            q = jnp.concatenate([q, self._heads(context, self.add_q_proj, self.norm_added_q)], 1)
            k = jnp.concatenate([k, self._heads(context, self.add_k_proj, self.norm_added_k)], 1)
            v = jnp.concatenate([v, self._heads(context, self.add_v_proj, None)], 1)
        dtype = self.to_q.dtype or jnp.float32
        a = attention(q.astype(dtype), k.astype(dtype), v.astype(dtype))
        a = a.reshape(a.shape[0], a.shape[1], self.heads * self.head_dim)
        out = self.to_out[0](a[:, :tokens])
        if context is None or self.to_add_out is None:
            return out, None
        return out, self.to_add_out(a[:, tokens:])


class JointTransformerBlock(nnx.Module):
    """diffusers ``JointTransformerBlock`` (MMDiT): image tokens x and context tokens c,
    each with its own AdaLN-Zero modulation (``norm1``, ``norm1_context``), attend jointly::

        x_n = ln(x) (1 + scale_msa) + shift_msa;  c_n likewise
        a_x, a_c = attn(x_n, c_n)
        x += gate_msa a_x    [+ gate_msa2 attn2(ln(x_old) (1 + scale_msa2) + shift_msa2)]
        x += gate_mlp ff(ln(x) (1 + scale_mlp) + shift_mlp)
        c += c_gate_msa a_c;  c += c_gate_mlp ff_context(ln(c) (1 + c_scale_mlp) + c_shift_mlp)

    ``norm1`` has 9 chunks (``SD35AdaLayerNormZeroX``) in a dual-attention block, else 6. With
    ``context_pre_only`` (the last block) c is normalised by AdaLayerNormContinuous, feeds only
    the attention's keys and values, and the block returns ``c = None``. The residual streams
    x and c stay float32.
    """

    def __init__(self, config: SD3TransformerConfig, *, context_pre_only: bool,
                 use_dual_attention: bool, make: LayerFactory):
        d, heads, head = config.inner_dim, config.num_attention_heads, config.attention_head_dim
        self.context_pre_only = context_pre_only
        self.use_dual_attention = use_dual_attention
        self.norm1 = AdaLayerNormZero(d, 9 if use_dual_attention else 6, make=make)
        if context_pre_only:
            self.norm1_context = AdaLayerNormContinuous(d, d, make=make)
        else:
            self.norm1_context = AdaLayerNormZero(d, 6, make=make)
        self.attn = Attention(d, heads, head, qk_norm=config.qk_norm, added_kv=True,
                              context_pre_only=context_pre_only, make=make)
        self.attn2 = (Attention(d, heads, head, qk_norm=config.qk_norm, added_kv=False, make=make)
                      if use_dual_attention else None)
        self.ff = FeedForward(d, make=make)
        self.ff_context = None if context_pre_only else FeedForward(d, make=make)

    def __call__(self, x: Array, c: Array, temb: Array) -> tuple[Array | None, Array]:
        dtype = self.attn.to_q.dtype or jnp.float32
        f32 = jnp.float32
        x_n, gate_msa, shift_mlp, scale_mlp, gate_mlp, *dual = self.norm1(x, temb)
        if self.context_pre_only:
            c_n = self.norm1_context(c, temb)
        else:
            c_n, c_gate_msa, c_shift_mlp, c_scale_mlp, c_gate_mlp = self.norm1_context(c, temb)

        a_x, a_c = self.attn(x_n.astype(dtype), c_n.astype(dtype))
        x_old, x = x, x + gate_msa[:, None].astype(f32) * a_x.astype(f32)
        if self.use_dual_attention:
            shift_msa2, scale_msa2, gate_msa2 = dual
            x2 = layer_norm(x_old) * (1 + scale_msa2[:, None]) + shift_msa2[:, None]
            a2, _ = self.attn2(x2.astype(dtype))
            x = x + gate_msa2[:, None].astype(f32) * a2.astype(f32)
        x_n = layer_norm(x) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
        x = x + gate_mlp[:, None].astype(f32) * self.ff(x_n.astype(dtype)).astype(f32)

        if self.context_pre_only:
            return None, x
        c = c + c_gate_msa[:, None].astype(f32) * a_c.astype(f32)
        c_n = layer_norm(c) * (1 + c_scale_mlp[:, None]) + c_shift_mlp[:, None]
        c = c + c_gate_mlp[:, None].astype(f32) * self.ff_context(c_n.astype(dtype)).astype(f32)
        return c, x


class SD3Transformer2DModel(DiffusersComponent, nnx.Module):
    """diffusers ``SD3Transformer2DModel`` in Flax NNX; latents NHWC.

    Args:
      config: the architecture.
      rngs: for the (random) initial parameters.
      dtype: compute dtype of the linear layers and attention (float32 or bfloat16; bfloat16
        products accumulate in float32); norms, softmax and the residual streams are float32,
        the output is float32.
      param_dtype: parameter dtype (float32 unless memory matters).
    """

    config_class = SD3TransformerConfig
    diffusers_class_name = "SD3Transformer2DModel"
    pipeline_subfolder = "transformer"

    def __init__(self, config: SD3TransformerConfig, *, rngs: nnx.Rngs, dtype: Any = jnp.float32,
                 param_dtype: Any = jnp.float32):
        self.config = config
        self.dtype = dtype
        make = FluxLayerFactory(rngs, dtype, param_dtype)
        d = config.inner_dim
        self.pos_embed = PatchEmbed(config, make=make)
        self.time_text_embed = CombinedTimestepTextProjEmbeddings(
            d, config.pooled_projection_dim, guidance=False, make=make)
        self.context_embedder = make.linear(config.joint_attention_dim,
                                            config.caption_projection_dim)
        self.transformer_blocks = nnx.List([
            JointTransformerBlock(config, context_pre_only=i == config.num_layers - 1,
                                  use_dual_attention=i in config.dual_attention_layers, make=make)
            for i in range(config.num_layers)])
        self.norm_out = AdaLayerNormContinuous(d, d, make=make)
        p = config.patch_size
        self.proj_out = make.linear(d, p * p * config.output_channels)

    def __call__(self, hidden_states: Array, encoder_hidden_states: Array,
                 pooled_projections: Array, timestep: Array) -> Array:
        """The velocity ``(B, H, W, out_channels)`` float32 of diffusers' forward.

        Args:
          hidden_states: scaled latents ``(B, H, W, in_channels)``.
          encoder_hidden_states: ``(B, L, joint_attention_dim)`` prompt embeddings.
          pooled_projections: ``(B, pooled_projection_dim)`` pooled prompt embeddings.
          timestep: ``(B,)`` on diffusers' scale (``1000 * sigma``), any float.
        """
        cfg = self.config
        self._check(hidden_states, encoder_hidden_states, pooled_projections, timestep)
        b, height, width, _ = hidden_states.shape
        p = cfg.patch_size
        x = self.pos_embed(hidden_states)
        temb = self.time_text_embed(timestep, None, pooled_projections)
        c = self.context_embedder(encoder_hidden_states).astype(jnp.float32)
        for block in self.transformer_blocks:
            c, x = block(x, c, temb)
        x = self.norm_out(x, temb).astype(self.proj_out.dtype or jnp.float32)
        x = self.proj_out(x).astype(jnp.float32)
        h, w, o = height // p, width // p, cfg.output_channels
        x = x.reshape(b, h, w, p, p, o).transpose(0, 1, 3, 2, 4, 5)
        return x.reshape(b, h * p, w * p, o)

    def _check(self, z, context, pooled, timestep) -> None:
        cfg = self.config
        problems = []
        if z.ndim != 4 or z.shape[-1] != cfg.in_channels:
            problems.append(f"hidden_states: expected (B, H, W, {cfg.in_channels}) NHWC, got "
                            f"{tuple(z.shape)}")
        b = z.shape[0]
        if context.ndim != 3 or context.shape[0] != b or context.shape[-1] != cfg.joint_attention_dim:
            problems.append(f"encoder_hidden_states: expected ({b}, L, {cfg.joint_attention_dim}),"
                            f" got {tuple(context.shape)}")
        if pooled.shape != (b, cfg.pooled_projection_dim):
            problems.append(f"pooled_projections: expected ({b}, {cfg.pooled_projection_dim}), "
                            f"got {tuple(pooled.shape)}")
        if timestep.shape != (b,):
            problems.append(f"timestep: expected ({b},), got {tuple(timestep.shape)}")
        if problems:
            raise ValueError("SD3Transformer2DModel: " + "; ".join(problems))
