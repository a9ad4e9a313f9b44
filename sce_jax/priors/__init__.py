"""Builders of :class:`sce_jax.prior.Prior` from the ported generative transformers."""
