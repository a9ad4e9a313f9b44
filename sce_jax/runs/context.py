"""What every step of a run needs, made once when its inputs are open: one value to pass
instead of the config, the workdir, the explainer, the classifier's jitted logits, the target
kind and the prior's conditioning handed from function to function."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import ml_collections

from sce_jax.classifier import Classifier
from sce_jax.explainer import Explainer


@dataclasses.dataclass(frozen=True)
class RunContext:
    """The run's fixed parts.

    Attributes:
      config: the resolved run config (class names turned into indices).
      workdir: the absolute path of the run's folder.
      explainer: the compiled search (its generator, classifier, prior and settings).
      kind: the search's target kind ("class", "other" or "flip").
      logits_jit: the classifier's ``(params, images) -> logits``, jitted once.
      prior_context: the prior's conditioning (one row, given to every image), or None.
    """

    config: ml_collections.ConfigDict
    workdir: str
    explainer: Explainer
    kind: str
    logits_jit: Callable
    prior_context: Any = None

    @property
    def classifier(self) -> Classifier:
        return self.explainer.classifier

    def logits(self, images) -> Any:
        """The classifier's logits of [0, 1] images (jitted)."""
        return self.logits_jit(self.classifier.params, images)
