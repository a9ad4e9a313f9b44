"""The demo datasets: Fashion-MNIST (read from the Debian package's idx files) and squares
(a synthetic two-factor benchmark with known ground truth, generated in code)."""

from sce_jax.datasets import fashion_mnist, squares

__all__ = ["fashion_mnist", "squares"]
