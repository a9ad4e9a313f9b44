"""sce_jax: visual counterfactual explanations of image classifiers in JAX/Flax.

The public API: :class:`Generator` (the autoencoder the search runs in), :class:`Classifier`
(the model explained), :class:`Prior` (an optional flow-matching model that keeps edits on the
image manifold), :class:`Explainer` (the search), :func:`default_search_config`, and
:func:`save_explanation` (a result as PNGs, manifest and report, as the dataset run writes them).
Importing the package has no side effects.
"""

from sce_jax.classifier import Classifier, Preprocessing
from sce_jax.explainer import Explainer, all_other_classes
from sce_jax.generator import Generator
from sce_jax.prior import Prior
from sce_jax.saving import save_explanation
from sce_jax.search.config import default_search_config

__version__ = "0.1.0"

__all__ = ["Classifier", "Explainer", "Generator", "Preprocessing", "Prior", "all_other_classes",
           "default_search_config", "save_explanation", "__version__"]
