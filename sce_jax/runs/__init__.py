"""The dataset-wide explanation run behind ``scripts/explain.py``.

:func:`sce_jax.runs.loop.explain_dataset` reads a run config (:mod:`~sce_jax.runs.config`),
loads the models (:mod:`~sce_jax.runs.loaders`), chooses the targets
(:mod:`~sce_jax.runs.targets`) and the engine (:mod:`~sce_jax.runs.engines`), and writes the
results through :mod:`sce_jax.workdir`.
"""
