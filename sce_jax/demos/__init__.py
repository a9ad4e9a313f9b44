"""The shipped demos: their datasets and how their models were trained.

:mod:`~sce_jax.demos.fashion_mnist` reads Fashion-MNIST from the Debian package's idx files;
:mod:`~sce_jax.demos.squares` generates a synthetic two-factor benchmark with known ground
truth; :mod:`~sce_jax.demos.training` trains the demo autoencoders, classifiers and priors
that ``scripts/train_demo_models.py`` writes into ``sce_jax/assets/``.
"""
