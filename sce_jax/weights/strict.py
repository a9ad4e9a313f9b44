"""Strict loading of a PyTorch-layout state dict into an NNX port.

Every tensor in the file must be used, every parameter of the model must be filled, and every
shape must match after the layout transform. Anything else raises :class:`WeightMismatchError`
listing *all* missing, unexpected and mis-shaped tensors at once, so a wrong checkpoint is
diagnosed in one read instead of one key per attempt.
"""

from __future__ import annotations

from typing import Callable, Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from sce_jax.weights.torch_layout import tensor_rules


class WeightMismatchError(ValueError):
    """A checkpoint does not fit a model: lists every missing, unexpected, mis-shaped tensor."""

    def __init__(self, what: str, missing=(), unexpected=(), misshaped=()):
        self.missing = sorted(missing)
        self.unexpected = sorted(unexpected)
        self.misshaped = sorted(misshaped)
        lines = [f"the weights do not fit {what}:"]
        if self.missing:
            lines.append(f"  missing from the checkpoint ({len(self.missing)}):")
            lines += [f"    {k}" for k in self.missing]
        if self.unexpected:
            lines.append(f"  unexpected in the checkpoint ({len(self.unexpected)}):")
            lines += [f"    {k}" for k in self.unexpected]
        if self.misshaped:
            lines.append(f"  wrong shape ({len(self.misshaped)}), as checkpoint vs model (PyTorch layout):")
            lines += [f"    {k}: {a} vs {b}" for k, a, b in self.misshaped]
        super().__init__("\n".join(lines))


def load_torch_state_dict_into(
    model: nnx.Module,
    state_dict: Mapping[str, np.ndarray],
    *,
    what: str | None = None,
    rename: Callable[[str], str] | None = None,
) -> nnx.Module:
    """Fills ``model`` in place from a PyTorch-layout ``state_dict`` (numpy arrays); strict.

    Args:
      model: an NNX port whose attribute paths mirror the PyTorch module names.
      state_dict: tensor name -> array, as in ``torch.nn.Module.state_dict()``.
      what: a name for the model in error messages.
      rename: optional map from legacy checkpoint names to the current ones (applied first).

    Returns:
      ``model``, for chaining.

    Raises:
      WeightMismatchError: with the full lists of missing, unexpected and mis-shaped tensors.
    """
    what = what or type(model).__name__
    if rename is not None:
        renamed = {}
        for key, value in state_dict.items():
            new = rename(key)
            if new in renamed:
                raise WeightMismatchError(what, unexpected=[f"{key} (duplicate of {new})"])
            renamed[new] = value
        state_dict = renamed
    rules, ignored = tensor_rules(model)
    state = nnx.state(model)
    flat = {tuple(k): v for k, v in nnx.to_flat_state(state)}
    by_key = {rule.torch_key: rule for rule in rules}
    missing = [k for k in by_key if k not in state_dict]
    ignorable = set(ignored)
    unexpected = [k for k in state_dict if k not in by_key and k not in ignorable]
    misshaped, updates = [], {}
    for key, rule in by_key.items():
        if key not in state_dict:
            continue
        array = np.asarray(state_dict[key])
        target = flat[rule.nnx_path]
        target_value = target.get_value()
        try:
            converted = rule.to_nnx(array)
        except ValueError:
            converted = None
        if converted is None or converted.shape != tuple(target_value.shape):
            torch_shape = tuple(rule.to_torch(np.zeros(target_value.shape, np.int8)).shape)
            misshaped.append((key, tuple(array.shape), torch_shape))
            continue
        updates[rule.nnx_path] = jnp.asarray(converted, dtype=target_value.dtype)
    if missing or unexpected or misshaped:
        raise WeightMismatchError(what, missing, unexpected, misshaped)
    for path, value in updates.items():
        variable = flat[path]
        variable.set_value(value)
    nnx.update(model, state)
    return model
