"""Reading weight files: safetensors (bfloat16 too), torch pickles, wrappers, bad files."""

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.flax import save_file

from sce_jax.weights.torch_files import WeightFileError, read_state_dict


def test_bfloat16_safetensors_become_float32(tmp_path):
    path = str(tmp_path / "w.safetensors")
    save_file({"a": jnp.asarray([0.5, 1.5, -2.0], jnp.bfloat16), "b": jnp.ones((2, 2))}, path)
    sd = read_state_dict(path)
    assert sd["a"].dtype == np.float32 and sd["a"].tolist() == [0.5, 1.5, -2.0]
    assert sd["b"].dtype == np.float32


def test_wrapped_torch_checkpoint_with_module_prefix(tmp_path):
    torch = pytest.importorskip("torch")
    path = str(tmp_path / "ckpt.pth")
    torch.save({"epoch": 3, "state_dict": {"module.fc.weight": torch.ones(2, 3),
                                           "module.fc.bias": torch.zeros(2)}}, path)
    sd = read_state_dict(path)
    assert sorted(sd) == ["fc.bias", "fc.weight"] and sd["fc.weight"].shape == (2, 3)


def test_unreadable_files_name_the_problem(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(WeightFileError, match="bad.safetensors: not a readable safetensors file"):
        read_state_dict(str(bad))
    with pytest.raises(WeightFileError, match="no such weight file"):
        read_state_dict(str(tmp_path / "missing.safetensors"))
    other = tmp_path / "weights.npy"
    other.write_bytes(b"x")
    with pytest.raises(WeightFileError, match="unknown weight file type"):
        read_state_dict(str(other))
