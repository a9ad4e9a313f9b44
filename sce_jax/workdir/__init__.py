"""The on-disk format of a run's folder (a workdir), and everything that reads or writes it.

- :mod:`~sce_jax.workdir.layout`: file names, atomic writes, part files, manifest, summary,
  the resume check;
- :mod:`~sce_jax.workdir.inputs`: ``inputs.json``, the ordered input set a resume must see;
- :mod:`~sce_jax.workdir.records` and :mod:`~sce_jax.workdir.record_names`: one manifest
  record per (example, target, attempt), with class names and the goal in words;
- :mod:`~sce_jax.workdir.example_files`: the PNGs of one explained image;
- :mod:`~sce_jax.workdir.lock`: ``run.lock``, one run per workdir;
- :mod:`~sce_jax.workdir.committed_files`: a resume's check that the committed records' files
  exist (an example with a missing one is explained again);
- :mod:`~sce_jax.workdir.results_table`, :mod:`~sce_jax.workdir.report`,
  :mod:`~sce_jax.workdir.throughput`: ``results.csv``, ``report.html`` and the summary's
  throughput over resumed invocations.
"""
