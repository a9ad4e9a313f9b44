"""The edit mask must not close onto the outline of what the search changes.

A classifier that reads a square more strongly at its border than inside (as a real one
reads a coloured square's edges first) makes the first change map a ring; a mask thresholded
from it alone is a hollow ring, and the square's inside could never change. Filling the
mask's holes gives the inside back.
"""

import jax.numpy as jnp
import numpy as np

from sce_jax import Explainer
from sce_jax.search import masks
from tests.search_helpers import small_config
from tests.toy_models import (
    greenish_images,
    mean_colour_classifier,
    toy_generator,
    weighted_colour_classifier,
)


def test_fill_holes_fills_enclosed_pixels_only():
    m = np.zeros((2, 10, 10, 1), np.float32)
    m[0, 2:8, 2:8] = 1
    m[0, 4:6, 4:6] = 0            # a hole: enclosed by the ring
    m[1, 2:8, 2:8] = 1
    m[1, 4:6, 4:10] = 0           # a bay open to the border: not a hole
    filled = np.asarray(masks.fill_holes(jnp.asarray(m)))
    assert filled[0, 4:6, 4:6].min() == 1 and filled[0].sum() == 36
    np.testing.assert_array_equal(filled[1], m[1])
    empty = np.zeros((1, 6, 6, 1), np.float32)
    np.testing.assert_array_equal(np.asarray(masks.fill_holes(jnp.asarray(empty))), empty)


def _ring_classifier():
    """Reads (R - G) of the central 16x16 square: its 4-pixel border 20x more than its inside."""
    weights = np.zeros((32, 32), np.float32)
    weights[8:24, 8:24] = 1.0
    weights[12:20, 12:20] = 0.05
    return weighted_colour_classifier(weights, scale=30.0)


def test_the_mask_does_not_close_onto_the_first_change_ring():
    x = greenish_images(2, size=(32, 32), seed=1)
    config = small_config(steps=60, learning_rate=0.02)
    config.mask.warmup_steps = 2
    config.mask.period = 2
    config.mask.soft_border = 0.0
    config.mask.fill_holes = False   # the behaviour this test reproduces
    explainer_open = Explainer(toy_generator(), _ring_classifier(), config)
    ring = explainer_open.explain(x, targets=[1, 1])
    config.mask.fill_holes = True
    filled = Explainer(toy_generator(), _ring_classifier(), config).explain(x, targets=[1, 1])
    inside = (slice(None), 0, slice(14, 18), slice(14, 18))
    # Without the fill the mask is a hollow ring: the middle of the square is shut.
    assert ring.mask[inside].max() == 0
    assert ring.mask[:, 0, 8:10, 8:24].min() == 1
    # With it, the inside belongs to the edit and the search recolours it.
    assert filled.mask[inside].min() > 0.99
    def reddening(result):
        change = result.image[:, 0] - x
        return (change[:, 14:18, 14:18, 0] - change[:, 14:18, 14:18, 1]).min()
    assert reddening(ring) == 0 and reddening(filled) > 0.01
    assert filled.success[:, 0].all()


def _square_scene():
    """Blue background, a red 10x10 square (rows/cols 8:18) on a 32x32 image."""
    x = np.zeros((1, 32, 32, 3), np.float32)
    x[...] = (0.2, 0.3, 0.8)
    x[:, 8:18, 8:18] = (0.8, 0.1, 0.1)
    return x


def test_a_spot_in_empty_background_is_told_apart_from_real_edits():
    from sce_jax.search import background_spots as spots
    x = _square_scene()
    spot = x.copy()
    spot[:, 24:28, 24:28] = (0.9, 0.8, 0.2)           # a blob painted into the background
    recoloured = x.copy()
    recoloured[:, 8:18, 8:18] = (0.1, 0.8, 0.1)       # the square itself changes colour
    backdrop = x.copy()
    backdrop[x[..., 2] > 0.5] = (0.9, 0.8, 0.3)      # the whole background changes colour
    got = [bool(spots.is_background_spot(jnp.asarray(x), jnp.asarray(cf))[0])
           for cf in (spot, recoloured, backdrop, x)]
    assert got == [True, False, False, False]
    empty = np.asarray(spots.empty_background(jnp.asarray(x)))[0, ..., 0]
    assert empty[0, 0] == 1 and empty[12, 12] == 0 and empty[30, 2] == 1


def test_a_square_touching_the_border_is_not_taken_for_background():
    from sce_jax.search import background_spots as spots
    x = _square_scene()
    x[:, 0:10, 0:10] = (0.8, 0.1, 0.1)               # a second square in the corner
    empty = np.asarray(spots.empty_background(jnp.asarray(x)))[0, ..., 0]
    assert empty[3, 3] == 0 and empty[25, 25] == 1


def test_max_area_keeps_only_the_strongest_change():
    rng = np.random.default_rng(0)
    change = rng.random((2, 16, 16, 1)).astype(np.float32)
    change[1] *= 0.01
    change[1, 3:7, 3:7] = 1.0        # one strong 4x4 patch on a weak, even change
    free = np.asarray(masks.threshold_mask(jnp.asarray(change), blur_sigma=0.0, threshold=0.2))
    capped = np.asarray(masks.threshold_mask(jnp.asarray(change), blur_sigma=0.0, threshold=0.2,
                                             max_area=0.25))
    assert free[0].mean() > 0.7 and capped[0].mean() == 0.25
    # Within the cap the mask keeps the largest values: every kept value beats every dropped one.
    assert change[0][capped[0] > 0].min() > change[0][capped[0] == 0].max()
    # Below the cap the threshold alone decides: the patch, nothing of the weak change.
    assert capped[1].sum() == 16 and capped[1, 3:7, 3:7].min() == 1


def test_a_capped_mask_fills_its_holes_only_within_the_cap():
    ring = np.ones((2, 10, 10, 1), np.float32)
    ring[:, 2:8, 2:8] = 0            # a frame around the middle (64 of 100 pixels): a 36-pixel hole
    ring[1] = 0
    ring[1, 3:6, 3:6] = 1            # a small ring: 8 pixels and its 1-pixel hole
    ring[1, 4, 4] = 0
    out = np.asarray(masks.fill_holes_within(jnp.asarray(ring), max_area=0.7))
    np.testing.assert_array_equal(out[0], ring[0])           # filled it would cover 100% > 70%
    assert out[1].sum() == 9 and out[1, 4, 4] == 1            # filled it covers 9%: filled
    np.testing.assert_array_equal(np.asarray(masks.fill_holes_within(jnp.asarray(ring))),
                                  np.asarray(masks.fill_holes(jnp.asarray(ring))))


def test_a_capped_search_that_fails_returns_a_confined_state():
    """Unconfined, the warm-up flips the whole image; capped to one 4x4 block, the mean colour
    cannot reach the goal. The failed search must return its best *confined* state, not the
    whole-image warm-up state that could never count as a success."""
    x = greenish_images(3, seed=1)
    settings = {"goal_probability": 0.9, "mask.warmup_steps": 6, "learning_rate": 0.5,
                "steps": 30, "mask.soft_border": 0.0, "mask.dilation": 0}
    clf = mean_colour_classifier(scale=20.0)
    free = Explainer(toy_generator(), clf, small_config(**settings)).explain(x, targets=[1] * 3)
    assert free.success[:, 0].all()                        # the whole image flips it
    capped = Explainer(toy_generator(), clf, small_config(**{"mask.max_area": 0.0625, **settings})
                       ).explain(x, targets=[1] * 3)
    assert not capped.success[:, 0].any()
    changed = (np.abs(capped.image[:, 0] - x).max(-1) > 1e-3).mean((1, 2))
    assert (changed <= 0.1).all(), changed                 # one block and ties, not the image
    assert (capped.prob_after[:, 0] < 0.9).all()           # as written, it is no success either
