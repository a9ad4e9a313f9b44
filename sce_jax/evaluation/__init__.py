"""Evaluation of finished runs: the desiderata, tables and plots.

- :mod:`~sce_jax.evaluation.protocol`: :func:`evaluate_workdirs` (what ``scripts/evaluate.py``
  calls), :func:`evaluate_workdir`, :class:`EvaluationOptions`;
- :mod:`~sce_jax.evaluation.run_outputs`: a workdir's manifest, config and written images;
- :mod:`~sce_jax.evaluation.models`: the run's classifier, a surrogate, the generator;
- :mod:`~sce_jax.evaluation.desiderata`: validity, distances, diversity, realism per run;
- :mod:`~sce_jax.evaluation.factors`: ground-truth fidelity on data with known factors;
- :mod:`~sce_jax.evaluation.tables`, :mod:`~sce_jax.evaluation.plots`: what is written.

The metric formulas live in :mod:`sce_jax.metrics`; this package chooses which rows they see.
"""

from sce_jax.evaluation.protocol import (
                                         EvaluationOptions,
                                         evaluate_run,
                                         evaluate_workdir,
                                         evaluate_workdirs,
)
from sce_jax.evaluation.run_outputs import EvaluationError, RunOutputs, read_run

__all__ = ["EvaluationError", "EvaluationOptions", "RunOutputs", "evaluate_run",
           "evaluate_workdir", "evaluate_workdirs", "read_run"]
