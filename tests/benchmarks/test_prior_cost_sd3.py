"""The SD3 prior-cost benchmark measures the same computation in both frameworks."""

import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from benchmarks.prior_cost_sd3 import cost_rows, markdown, parameter_count  # noqa: E402

pytestmark = pytest.mark.torch

TINY = dict(sample_size=8, patch_size=2, in_channels=16, num_layers=5, attention_head_dim=8,
            num_attention_heads=2, joint_attention_dim=12, caption_projection_dim=16,
            pooled_projection_dim=10, out_channels=16, pos_embed_max_size=4)


def test_parameter_count_is_diffusers_without_the_position_buffer():
    torch.manual_seed(0)
    reference = diffusers.SD3Transformer2DModel(**TINY)
    expected = sum(p.numel() for p in reference.parameters())
    assert parameter_count(dict(TINY)) == expected + reference.pos_embed.pos_embed.numel()


def test_rows_time_the_same_forward_in_both_frameworks():
    rows = cost_rows([48], ["float32"], blocks=2, repeats=1, config=TINY, threads=1)
    assert [(r["image"], r["latent"], r["tokens"]) for r in rows] == [(48, 6, 9)]
    for r in rows:
        assert r["max_rel_diff"] < 1e-4
        assert r["jax_ms"] > 0 and r["torch_ms"] > 0
        assert r["full_jax_ms"] == pytest.approx(r["jax_ms"] * 5 / 2)
        assert r["params_measured"] < r["params_full"] == parameter_count(dict(TINY))
    assert "| 48x48 | 6x6x16 | 9 + 333 | float32 |" in markdown(rows)


def test_forward_flops_is_xla_count_of_the_batched_forward(monkeypatch):
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from benchmarks.prior_cost_sd3 import forward_flops
    from sce_jax.models import attention, sd3_transformer
    from sce_jax.models.sd3_transformer import SD3Transformer2DModel, SD3TransformerConfig

    # XLA counts a loop's body once: take the batched attention, as off CPU.
    monkeypatch.setattr(sd3_transformer, "attention", attention._attention_batched)
    config = dict(TINY, num_layers=3, attention_head_dim=64, caption_projection_dim=128,
                  joint_attention_dim=32, dual_attention_layers=(0,), qk_norm="rms_norm")
    model = nnx.eval_shape(lambda: SD3Transformer2DModel(SD3TransformerConfig(**config),
                                                         rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(model)
    args = (jax.ShapeDtypeStruct((1, 8, 8, 16), jnp.float32),     # 16 image tokens
            jax.ShapeDtypeStruct((1, 24, 32), jnp.float32),       # 24 context tokens
            jax.ShapeDtypeStruct((1, 10), jnp.float32), jax.ShapeDtypeStruct((1,), jnp.float32))
    cost = jax.jit(lambda s, *a: nnx.merge(graphdef, s)(*a)).lower(state, *args).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    # XLA also counts norms, softmax, activations: a few percent at this width
    assert cost["flops"] == pytest.approx(forward_flops(config, 16, 24), rel=0.06)
