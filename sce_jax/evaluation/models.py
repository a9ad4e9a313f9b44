"""The networks evaluation needs, from a run's config: classifier, surrogate, generator.

- the run's classifier judges validity (on the written 8-bit images) and gives the features
  for FID/KID (its penultimate layer, ``features()``);
- the surrogate is another classifier checkpoint for the same task, loaded with the run
  classifier's preprocessing and head; ``"auto"`` takes the shipped demo's surrogate
  (``sce_jax/assets/<demo>/surrogate``) when the run explained that demo's classifier;
- the generator encodes images for the latent distances.

Each network function is wrapped as a host function ``images (N, H, W, C) -> (N, ...)`` numpy
array that runs it jitted in fixed-size batches (:func:`sce_jax.metrics.map_in_batches`).
:class:`Networks` loads each network once and compiles each function once for all the
workdirs of one evaluation (the runs of an ablation share their classifier and generator).
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from sce_jax.assets import ASSET_DIR
from sce_jax.classifier import Classifier
from sce_jax.evaluation.run_outputs import EvaluationError
from sce_jax.generator import Generator
from sce_jax.metrics import map_in_batches
from sce_jax.runs.loaders import load_classifier, load_generator

AUTO = "auto"
HostFn = Callable[[Any], np.ndarray]


def batched(fn: Callable[[Any, Any], Any], params: Any, batch_size: int) -> HostFn:
    """``images -> fn(params, images)`` jitted, applied ``batch_size`` images at a time."""
    jitted = jax.jit(fn)
    return functools.partial(map_in_batches, lambda images: jitted(params, images),
                             batch_size=batch_size)


def _load(kind: str, loader, config: ml_collections.ConfigDict, workdir: str):
    try:
        return loader(config)
    except (OSError, ValueError) as e:
        raise EvaluationError(f"{workdir}: the run's {kind} cannot be loaded ({e})") from e


def run_classifier(config: ml_collections.ConfigDict, workdir: str) -> Classifier:
    """The classifier the run explained (``config.classifier``)."""
    return _load("classifier", load_classifier, config.classifier, workdir)


def run_generator(config: ml_collections.ConfigDict, workdir: str) -> Generator:
    """The generator the run searched in (``config.generator``)."""
    return _load("generator", load_generator, config.generator, workdir)


def resolve_surrogate(spec: str | None, config: ml_collections.ConfigDict) -> str | None:
    """The surrogate checkpoint to use: a path, None (``""``/``"none"``), or ``"auto"``.

    ``"auto"``: when the run's classifier is a shipped demo classifier
    (``<assets>/<demo>/classifier``), that demo's ``surrogate`` beside it; otherwise None.
    """
    if not spec or spec.lower() == "none":
        return None
    if spec != AUTO:
        return os.path.abspath(spec)
    checkpoint = os.path.abspath(str(config.classifier.checkpoint or ""))
    demo = os.path.dirname(checkpoint)
    if (os.path.dirname(demo) == ASSET_DIR and os.path.basename(checkpoint) == "classifier"
            and os.path.isdir(os.path.join(demo, "surrogate"))):
        return os.path.join(demo, "surrogate")
    return None


def surrogate_classifier(path: str, config: ml_collections.ConfigDict, workdir: str,
                         run: Classifier) -> Classifier:
    """The checkpoint at ``path`` with the preprocessing and head of the run's classifier ``run``."""
    if not os.path.isdir(path):
        raise EvaluationError(f"surrogate checkpoint {path} does not exist (--surrogate)")
    surrogate_config = ml_collections.ConfigDict(config.classifier.to_dict())
    surrogate_config.checkpoint = path
    surrogate = _load("surrogate classifier", load_classifier, surrogate_config, workdir)
    if (surrogate.head, surrogate.num_outputs) != (run.head, run.num_outputs):
        raise EvaluationError(
            f"surrogate {path} has {surrogate.num_outputs} {surrogate.head} outputs, the run's "
            f"classifier {run.num_outputs} {run.head} outputs: it cannot judge the same targets")
    return surrogate


class Networks:
    """The networks of the evaluated runs, each loaded once per distinct config section.

    Args:
      batch_size: images per network call of the :meth:`function` wrappers.
    """

    def __init__(self, batch_size: int):
        self.batch_size = int(batch_size)
        self._loaded: dict[tuple, Any] = {}
        self._functions: dict[tuple, HostFn] = {}

    def _get(self, key: tuple, load: Callable[[], Any]) -> Any:
        if key not in self._loaded:
            self._loaded[key] = load()
        return self._loaded[key]

    def classifier(self, config: ml_collections.ConfigDict, workdir: str) -> Classifier:
        key = ("classifier", _section_key(config.classifier))
        return self._get(key, lambda: run_classifier(config, workdir))

    def generator(self, config: ml_collections.ConfigDict, workdir: str) -> Generator:
        key = ("generator", _section_key(config.generator))
        return self._get(key, lambda: run_generator(config, workdir))

    def surrogate(self, path: str, config: ml_collections.ConfigDict, workdir: str) -> Classifier:
        key = ("surrogate", path, _section_key(config.classifier))
        run = self.classifier(config, workdir)
        return self._get(key, lambda: surrogate_classifier(path, config, workdir, run))

    def function(self, network: Classifier | Generator, name: str) -> HostFn:
        """The batched host function of ``network``'s ``<name>_fn`` (``logits``, ``features``,
        ``encode``), compiled once."""
        key = (id(network), name)
        if key not in self._functions:
            self._functions[key] = batched(getattr(network, f"{name}_fn"), network.params,
                                           self.batch_size)
        return self._functions[key]


def _section_key(section: ml_collections.ConfigDict) -> str:
    return json.dumps(section.to_dict(), sort_keys=True, default=str)
