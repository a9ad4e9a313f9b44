"""Starting a run: the command line, config files, console entry points, ``jax.distributed``,
the compilation cache and the log filter. Nothing here is imported by the library itself."""
