"""The checks a run makes before any work: the models and data open, fit each other and the memory.

:func:`open_inputs` loads the generator, classifier and prior, opens the data and checks their
shapes against each other on abstract values (``jax.eval_shape``: nothing is computed), so a
grey dataset with an RGB autoencoder stops before the first batch. :func:`check_search_memory`
compiles the search for the run's shapes and refuses one that cannot fit
(:mod:`sce_jax.runs.memory_check`); the first batch reuses that compilation.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging

from sce_jax import data as data_lib
from sce_jax import parallel
from sce_jax.classifier import ClassifierOutputError
from sce_jax.explainer import Explainer
from sce_jax.runs import memory_check
from sce_jax.runs.errors import RunInputError
from sce_jax.runs.loaders import (
    check_prior_inputs,
    load_classifier,
    load_generator,
    load_prior,
    load_prior_context,
)
from sce_jax.runs.targets import RUN_TARGET_KINDS
from sce_jax.search.engine import Batch as SearchBatch
from sce_jax.search.slot_scheduler import SlotScheduler
from sce_jax.search.targets import HEADS


def open_inputs(config: ml_collections.ConfigDict):
    """Loads the models and opens the data, checking everything a run needs (no work yet)."""
    generator = load_generator(config.generator)
    classifier = load_classifier(config.classifier)
    prior = load_prior(config.prior) if config.search.prior.enabled else None
    context = load_prior_context(config.prior, prior)
    if RUN_TARGET_KINDS[config.targets.kind].takes_class and config.targets.class_index >= 0:
        classifier.check_target(config.targets.class_index)
    dataset = data_lib.open_configured(
        config.data, num_classes=(classifier.num_outputs
                                  if HEADS[classifier.head].labels_index_outputs else None),
        class_names=classifier.class_names)
    latent_shape = generator.latent_shape(tuple(config.data.image_size))  # not fitting: now
    check_channels(config, generator, classifier)
    if prior is not None:
        check_prior_inputs(prior, latent_shape, context)
    return generator, classifier, prior, context, dataset


def model_name(section: ml_collections.ConfigDict, model) -> str:
    return f"{section.get('checkpoint') or section.get('diffusers')} ({model.name})"


def check_channels(config, generator, classifier) -> None:
    """The data's channels must be what the autoencoder makes and the classifier takes.

    Checked on shapes alone (``jax.eval_shape``: nothing is computed), so a grey dataset with
    an RGB autoencoder stops here, not in the first batch.
    """
    size, channels = tuple(int(v) for v in config.data.image_size), int(config.data.channels)
    latent = jax.ShapeDtypeStruct((1,) + generator.latent_shape(size), jnp.float32)
    made = jax.eval_shape(generator.decode_fn, generator.params, latent).shape[-1]
    if made != channels:
        raise RunInputError(
            f"the generator {model_name(config.generator, generator)} makes {made}-channel "
            f"images but data.channels={channels}; set data.channels={made} (the data is "
            "converted: grey <-> RGB)")
    image = jax.ShapeDtypeStruct((1,) + size + (channels,), jnp.float32)
    try:
        jax.eval_shape(classifier.logits_fn, classifier.params, image)
    except ClassifierOutputError as e:  # it takes the images but gives other logits
        raise RunInputError(str(e)) from None
    except Exception as e:  # noqa: BLE001 - a shape error deep inside the network
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise RunInputError(
            f"the classifier {model_name(config.classifier, classifier)} cannot take "
            f"{channels}-channel {size[0]}x{size[1]} images ({first_line}); set "
            "classifier.channels (and classifier.input_size) to what it was trained on") from None


def batch_rows(config, dataset: data_lib.Dataset, process_count: int) -> int:
    """``batch_size``, but never more than a process's share of the data (no batch of padding)."""
    share = -(-dataset.num_examples // process_count)
    rows = min(int(config.batch_size), max(1, share))
    if rows < int(config.batch_size):
        logging.info("batch_size=%d is more than the %d examples per process: batches of %d",
                     int(config.batch_size), share, rows)
    return rows


def check_search_memory(config, explainer: Explainer, kind: str, rows: int,
                         context: Any = None, scheduler: SlotScheduler | None = None) -> None:
    """Compiles the search for the run's batch shape and refuses it if it cannot fit in memory.

    The first batch reuses this compilation. ``rows`` per process; ``all_others`` searches
    every other class of each image at once (``rows * (classes - 1)`` searches). ``context``:
    the prior's conditioning (one row, given to every image), part of the batch's shapes.
    With a ``scheduler`` (the slot engine) its chunk of steps is compiled and checked instead.
    """
    size, channels = tuple(int(v) for v in config.data.image_size), int(config.data.channels)
    rows *= RUN_TARGET_KINDS[config.targets.kind].searches_per_image(
        explainer.classifier.num_outputs)
    mesh = explainer.mesh
    local = parallel.padded_size(rows, mesh)
    total = local * (jax.process_count() if mesh is not None else 1)
    sharding = parallel.batch_sharding(mesh) if mesh is not None else None

    def spec(shape, dtype):
        return jax.ShapeDtypeStruct((total,) + shape, dtype, sharding=sharding)

    batch = SearchBatch(images=spec(size + (channels,), jnp.float32), targets=spec((), jnp.int32),
                        example_ids=spec((), jnp.int32), regions=spec(size + (1,), jnp.float32),
                        valid=spec((), jnp.bool_),
                        context=None if context is None else jax.tree.map(
                            lambda a: spec(tuple(a.shape[1:]), a.dtype), context))
    if scheduler is not None:
        compiled = scheduler.compile(batch)
        what = f"{scheduler.slots} search slots of {size[0]}x{size[1]}x{channels} images"
    else:
        compiled = explainer.compile(batch, kind=kind)
        what = f"batches of {rows} images of {size[0]}x{size[1]}x{channels}"
    memory_check.check_fits(
        memory_check.compiled_bytes(compiled), max_memory_gb=float(config.max_memory_gb),
        what=what)
