"""The shared attention: its CPU path (head by head) against the batched path other platforms
take, and both against PyTorch's scaled_dot_product_attention."""

import jax.numpy as jnp
import numpy as np
import pytest

from sce_jax.models.attention import _attention_batched, _attention_per_head, attention

RNG = np.random.default_rng(7)
Q, K, V = (RNG.normal(size=(2, 9, 3, 8)).astype(np.float32) for _ in range(3))


def test_both_paths_agree():
    args = [jnp.asarray(a) for a in (Q, K, V)]
    np.testing.assert_allclose(np.asarray(_attention_per_head(*args)),
                               np.asarray(_attention_batched(*args)), atol=1e-6)


@pytest.mark.torch
def test_matches_torch_sdpa():
    torch = pytest.importorskip("torch")
    q, k, v = (torch.from_numpy(a).transpose(1, 2) for a in (Q, K, V))
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).numpy()
    out = attention(*(jnp.asarray(a) for a in (Q, K, V)))
    np.testing.assert_allclose(np.asarray(out), expected, atol=1e-5)
    half = attention(*(jnp.asarray(a, jnp.bfloat16) for a in (Q, K, V)))
    assert half.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(half, np.float32), expected, atol=3e-2)
