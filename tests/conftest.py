"""Fixtures shared by several test modules (pytest finds them here; no test imports another)."""

import inspect

import pytest

from tests import run_helpers


@pytest.fixture(scope="session")
def run_fixtures(tmp_path_factory):
    """Tiny models, 9 images (one corrupt), the run's config file, a compilation cache and the
    uninterrupted reference run (:func:`tests.run_helpers.run_fixtures`), made once a session."""
    return run_helpers.run_fixtures(tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """A tiny grey AutoencoderKL (downsample 2) and a 3-class SmallCNN: their checkpoint paths."""
    return run_helpers.tiny_checkpoints(tmp_path_factory)


def _uses_torch(module) -> bool:
    """Whether a test module is marked ``torch``, or any of its tests is."""
    if module.get_closest_marker("torch") is not None:
        return True
    return any(mark.name == "torch" for test in vars(module.obj).values()
               if inspect.isfunction(test) for mark in getattr(test, "pytestmark", []))


@pytest.fixture(scope="module", autouse=True)
def single_torch_thread(request):
    """torch with one intra-op thread while a module marked ``torch`` (or holding a test
    marked so) runs: on inputs this small its thread pool costs far more than it saves (and
    competes with XLA's threads)."""
    torch = None
    if _uses_torch(request.node):
        try:
            import torch
        except ImportError:  # the module's torch tests say so themselves
            pass
    if torch is None:
        yield
        return

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
