"""Adapters that turn ported generative transformers into :class:`sce_jax.prior.Prior`."""
