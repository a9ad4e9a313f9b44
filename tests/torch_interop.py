"""Shared pieces of the parity tests against PyTorch: layout conversion and batch-norm
statistics worth testing (one torch thread per module: tests/conftest.py)."""

import numpy as np
import torch


def numpy_state_dict(module):
    return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def assert_close(actual, expected, rel=1e-4, floor=1.0):
    """max |actual - expected| <= rel * max(floor, max |expected|)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    bound = rel * max(floor, float(np.abs(expected).max()))
    error = float(np.abs(actual - expected).max())
    assert error <= bound, f"max abs error {error:.3g} > {bound:.3g}"


def nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


def randomise_batch_norms(model, calibration, seed):
    """Random BN scales and shifts; running statistics taken from a calibration batch (NHWC
    numpy; one training-mode pass with momentum 1), then moved off it (mean +- 0.2 std, variance
    x 0.6..1.6), so that neither the defaults (0, 1) nor exact batch statistics are what is
    tested. Returns the model in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    batch_norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in batch_norms:
            bn.weight.uniform_(0.5, 1.5, generator=gen)
            bn.bias.uniform_(-0.3, 0.3, generator=gen)
            bn.momentum = 1.0
        model.train()
        model(nchw(calibration))
        for bn in batch_norms:
            std = bn.running_var.sqrt()
            bn.running_mean.add_(0.2 * std * torch.randn(std.shape, generator=gen))
            bn.running_var.mul_(torch.empty_like(std).uniform_(0.6, 1.6, generator=gen)).add_(1e-3)
    return model.eval()
