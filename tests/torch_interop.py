"""Shared pieces of the parity tests against PyTorch: layout conversion and torch threads."""

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def single_torch_thread():
    """torch with one intra-op thread while this module runs: on inputs this small its thread
    pool costs far more than it saves (and competes with XLA's threads)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)
