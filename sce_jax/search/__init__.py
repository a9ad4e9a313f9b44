"""The counterfactual search: objectives, smoothing, masks, the loop."""

from sce_jax.search.config import (
                                   SearchConfigError,
                                   SearchSettings,
                                   default_search_config,
                                   settings_from_config,
)
from sce_jax.search.engine import Batch, Explanation, explain_batch
from sce_jax.search.masks import region_from_labels

__all__ = [
    "Batch", "Explanation", "SearchConfigError", "SearchSettings", "default_search_config",
    "explain_batch", "region_from_labels", "settings_from_config",
]
