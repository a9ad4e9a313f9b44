"""The FLUX cost benchmark's rows on a tiny config: the timed blocks compute what diffusers'
blocks compute, and the full-model row is the stated extrapolation."""

import pytest

from sce_jax.models.flux_transformer import FluxTransformer2DModelConfig

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytestmark = pytest.mark.torch

TINY = FluxTransformer2DModelConfig(num_layers=3, num_single_layers=5, attention_head_dim=16,
                                    num_attention_heads=2, axes_dims_rope=(4, 6, 6))


def test_rows_measure_both_blocks_and_extrapolate():
    from benchmarks.prior_cost_flux import flux_cost_rows, markdown, parameter_count
    rows = flux_cost_rows(image_sizes=(32,), dtypes=("float32",), repeats=1, config=TINY)
    double, single, full = rows
    assert (double["block"], single["block"], full["measured"]) == ("double", "single", False)
    assert double["tokens"] == 4 + 512                     # (32 / 8 / 2)^2 image tokens + text
    for row in (double, single):
        assert row["max_rel_diff"] < 1e-4                  # same weights, same outputs as diffusers
        assert row["sce_jax_ms"] > 0 and row["diffusers_ms"] > 0
    assert full["sce_jax_ms"] == pytest.approx(3 * double["sce_jax_ms"] + 5 * single["sce_jax_ms"])
    assert full["diffusers_ms"] == pytest.approx(3 * double["diffusers_ms"] + 5 * single["diffusers_ms"])
    counts = parameter_count(TINY)
    assert full["params"] == counts["model"] > 3 * counts["double"] + 5 * counts["single"]
    assert full["weights_gb"] == pytest.approx(counts["model"] * 4 / 1e9)
    table = markdown(rows)
    assert "full (3 double + 5 single)" in table and "extrapolated" in table
