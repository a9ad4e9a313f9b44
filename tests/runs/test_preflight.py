"""The dataset run's checks of the models on shapes alone (sce_jax.runs.preflight)."""

import jax.numpy as jnp
import ml_collections
import pytest

from sce_jax import Classifier
from sce_jax.runs import preflight
from sce_jax.runs.errors import RunInputError
from tests.toy_models import toy_generator


def three_logits(params, images):
    return jnp.zeros((images.shape[0], 3))


def test_a_classifier_with_other_logits_is_a_user_error_naming_it():
    config = ml_collections.ConfigDict({"data": {"image_size": (16, 16), "channels": 3},
                                        "classifier": {"checkpoint": "clf"}})
    wrong = Classifier.from_function(three_logits, num_outputs=10, name="wrong")
    with pytest.raises(RunInputError, match=r"^the classifier 'wrong' \(function three_logits\) "
                                            r"returned logits of shape \(1, 3\) for images of "
                                            r"shape \(1, 16, 16, 3\); expected \(1, 10\)"):
        preflight.check_channels(config, toy_generator(), wrong)
    right = Classifier.from_function(three_logits, num_outputs=3)
    preflight.check_channels(config, toy_generator(), right)  # passes
