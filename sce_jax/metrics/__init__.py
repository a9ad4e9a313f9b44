"""The desiderata of counterfactual explanations, per counterfactual.

- :mod:`~sce_jax.metrics.validity`: flip rate on the 8-bit counterfactual.
- :mod:`~sce_jax.metrics.proximity`: L1 / L2 distances in pixels and latents.
- :mod:`~sce_jax.metrics.sparsity`: changed fraction, Hoyer sparsity.
- :mod:`~sce_jax.metrics.diversity`: ``1 - |cos|`` and pairwise distances between attempts.
- :mod:`~sce_jax.metrics.realism`: FID and KID from any feature network.
- :mod:`~sce_jax.metrics.non_adversarial`: agreement of an independent surrogate classifier.
- :mod:`~sce_jax.metrics.ground_truth`: which known factor a counterfactual moved.
- :mod:`~sce_jax.metrics.cout`, :mod:`~sce_jax.metrics.mnac`: the DiME/ACE protocol metrics.
- :mod:`~sce_jax.metrics.summary`: run-level summary of manifest records (``summary.json``).

Images are ``(..., H, W, C)`` in [0, 1]. LPIPS is not provided yet (it needs its weights).
"""

from sce_jax.metrics.batching import map_in_batches
from sce_jax.metrics.cout import area_under_curve, cout, transition_curves
from sce_jax.metrics.diversity import diversity
from sce_jax.metrics.ground_truth import factor_changes, factors_found
from sce_jax.metrics.mnac import attributes_changed, mnac
from sce_jax.metrics.non_adversarial import non_adversarial_rate, surrogate_flips
from sce_jax.metrics.proximity import l1_distance, l2_distance, proximity
from sce_jax.metrics.realism import (
                                     KID,
                                     GaussianStatistics,
                                     compute_features,
                                     fid,
                                     frechet_distance,
                                     gaussian_statistics,
                                     kid,
                                     mmd2_unbiased,
                                     polynomial_kernel,
                                     trace_sqrt_product,
)
from sce_jax.metrics.sparsity import changed_fraction, hoyer_sparsity, sparsity
from sce_jax.metrics.summary import run_summary, summarise_records, summarise_values
from sce_jax.metrics.validity import flip_rate, quantise_8bit, reaches_target, validity

__all__ = [
    "KID", "GaussianStatistics", "area_under_curve", "attributes_changed", "changed_fraction",
    "compute_features", "cout", "diversity", "factor_changes", "factors_found", "fid",
    "flip_rate", "frechet_distance", "gaussian_statistics", "hoyer_sparsity", "kid",
    "l1_distance", "l2_distance", "map_in_batches", "mmd2_unbiased", "mnac",
    "non_adversarial_rate", "polynomial_kernel", "proximity", "quantise_8bit", "reaches_target",
    "run_summary", "sparsity", "summarise_records", "summarise_values", "surrogate_flips",
    "trace_sqrt_product", "transition_curves", "validity",
]
