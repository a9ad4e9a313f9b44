"""The test suite; its folders mirror the packages of ``sce_jax`` (tests/runs/ tests sce_jax/runs/).

Shared helpers (tiny models, run fixtures, the bad-input corpus) sit at this level and are
imported as ``tests.<helper>``.
"""

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout
