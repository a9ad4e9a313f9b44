"""``Explainer``: the programmatic API over the jitted search.

    explainer = sce_jax.Explainer(generator, classifier, config)
    result = explainer.explain(images, targets=[3, 7])      # numpy arrays, (B, K, ...)

The explainer compiles :func:`sce_jax.search.engine.explain_batch` once per (target kind,
batch shape), pads a batch to a multiple of the device count, shards it over the ``data``
mesh axis and replicates the parameters. Over many images, ``explain_stream`` keeps a fixed
number of searches in flight and refills each as soon as it is done (continuous batching,
:mod:`sce_jax.search.slot_scheduler`), yielding each image's result when it is ready::

    for index, result in explainer.explain_stream(images, slots=32):   # any iterable
        ...                                                            # result: one row With a :class:`sce_jax.prior.Prior` and
``search.prior.enabled``, the prior keeps the edits on the generator's image manifold. For use inside your own ``jax.jit``, call
``explain_batch`` directly (see its docstring).
"""

from __future__ import annotations

import functools
import itertools
from typing import Any, Callable, Iterable, Iterator, Sequence

import jax
import ml_collections
import numpy as np

from sce_jax import api_inputs, parallel
from sce_jax.classifier import HEADS, Classifier
from sce_jax.generator import Generator
from sce_jax.prior import Prior
from sce_jax.search.config import SearchSettings, settings_from_config
from sce_jax.search.engine import Batch, Explanation, SearchModels, SearchParams, explain_batch
from sce_jax.search.slot_scheduler import SlotScheduler


class Explainer:
    """Finds K diverse counterfactuals per (image, target).

    Args:
      generator: the autoencoder (or encoder-less generator) to search in.
      classifier: the classifier to explain.
      config: a search config (``sce_jax.search.default_search_config()``; missing keys take
        the defaults, unknown keys raise).
      mesh: a device mesh with a ``data`` axis (default: all devices when there are several,
        else none). With several processes (``jax.distributed``), each process passes its own
        rows to ``explain``/``prepare_batch`` and gets its own rows back.
      progress: optional host function ``(attempt, step, num_done, num_valid)`` called every
        ``config.progress_every`` steps from inside the compiled loop.
      prior: the generative prior (:class:`sce_jax.prior.Prior`) used when
        ``config.prior.enabled``; a config that enables it without one raises.
    """

    def __init__(self, generator: Generator, classifier: Classifier,
                 config: ml_collections.ConfigDict | dict | SearchSettings | None = None, *,
                 mesh: jax.sharding.Mesh | None = None,
                 progress: Callable[[Any, Any, Any, Any], None] | None = None,
                 prior: Prior | None = None):
        self.generator = generator
        self.classifier = classifier
        self.prior = prior
        self.settings: SearchSettings = (config if isinstance(config, SearchSettings)
                                         else settings_from_config(config))
        if self.settings.prior.active and prior is None:
            raise ValueError("search.prior.enabled is set but no prior was given: pass "
                             "Explainer(..., prior=...) or set search.prior.enabled = False")
        if prior is not None and prior.needs_context and self.settings.prior.active:
            self._needs_context = True
        else:
            self._needs_context = False
        if mesh is None and jax.device_count() > 1:
            mesh = parallel.make_mesh()
        self.mesh = mesh
        self.progress = progress
        self.trace_count = 0
        self._compiled: dict[str, Callable] = {}
        self.models = SearchModels(generator.spec, classifier.logits_fn,
                                   prior.velocity_fn if prior is not None else None)
        params = SearchParams(generator.params, classifier.params,
                              prior.params if prior is not None and self.settings.prior.active else None)
        self.search_params = parallel.replicate(params, mesh) if mesh is not None else params

    def default_kind(self, targets_given: bool) -> str:
        head = HEADS[self.classifier.head]
        return head.kind_with_targets if targets_given else head.default_kind

    def compiled(self, kind: str) -> Callable:
        """The jitted ``(search_params, batch) -> Explanation`` for a target kind
        (``search_params``: :attr:`search_params`, the models' parameters as placed)."""
        if kind not in self._compiled:
            search = functools.partial(explain_batch, models=self.models, settings=self.settings,
                                       kind=kind, progress=self.progress)

            def traced(params, batch):
                self.trace_count += 1  # runs once per compilation (tracing), not per call
                return search(params, batch)

            self._compiled[kind] = jax.jit(traced)
        return self._compiled[kind]

    def prepare_batch(self, images, targets=None, *, kind: str, example_ids=None, regions=None,
                      latents=None, valid=None, context=None) -> tuple[Batch, int]:
        """Validates and pads host arrays into a :class:`Batch`; returns it and the real size.

        Every argument is checked against the batch size (and latents against the generator's
        latent shape) first, by :mod:`sce_jax.api_inputs`; a ValueError names the argument.
        """
        images = api_inputs.checked_images(images)
        b, h, w, _ = images.shape
        latent_shape = self.generator.latent_shape((h, w))
        targets = api_inputs.checked_targets(targets, b, kind=kind,
                                             class_names=self.classifier.class_names)
        example_ids = api_inputs.checked_example_ids(example_ids, b)
        regions = api_inputs.checked_regions(regions, b, h, w)
        latents = api_inputs.checked_latents(latents, b, latent_shape)
        valid = api_inputs.checked_valid(valid, b)
        if targets is None:
            if kind == "class":
                raise ValueError("target kind 'class' needs targets (one class index or name per image)")
            targets = np.full((b,), -1 if kind == "other" else 0, np.int32)
        if example_ids is None:
            example_ids = np.arange(b, dtype=np.int32)
        if regions is None:
            regions = np.ones((b, h, w, 1), np.float32)
        valid = np.ones((b,), bool) if valid is None else np.asarray(valid, bool)
        for t in targets[valid]:  # rows that are not valid (padding) are never searched
            if not (kind == "other" and t == -1):
                self.classifier.check_target(int(t))
        arrays = dict(images=images, targets=targets, example_ids=example_ids, regions=regions,
                      valid=valid)
        if latents is not None:
            arrays["latents"] = np.asarray(latents, np.float32)
        if context is None and self._needs_context:
            raise ValueError(f"the prior {self.prior.name} needs a context (prompt embeddings): "
                             "pass context=... (a pytree of per-image arrays)")
        if context is not None:
            arrays["context"] = jax.tree.map(lambda a: _per_image(np.asarray(a), b), context)
        size = parallel.padded_size(b, self.mesh)
        arrays = parallel.pad_batch(arrays, size)
        arrays["valid"][b:] = False
        batch = Batch(**arrays)
        if self.mesh is not None:
            batch = parallel.shard_batch(batch, self.mesh)
        return batch, b

    def compile(self, batch: Batch, *, kind: str):
        """Compiles the search for ``batch``'s shapes (arrays or ``jax.ShapeDtypeStruct``s).

        Returns the ``jax.stages.Compiled`` (``memory_analysis()`` tells what it needs); later
        calls on batches of that shape reuse the compilation.
        """
        return self.compiled(kind).lower(self.search_params, batch).compile()

    def explain_arrays(self, batch: Batch, *, kind: str) -> Explanation:
        """Runs the compiled search on a prepared batch (device arrays, no host transfer)."""
        return self.compiled(kind)(self.search_params, batch)

    def explain(self, images, targets: Sequence[int | str] | np.ndarray | None = None, *,
                kind: str | None = None, example_ids=None, regions=None, latents=None,
                context=None) -> Explanation:
        """Explains a batch of images in [0, 1], shape (B, H, W, C).

        Args:
          images: floating-point inputs in [0, 1] at a size the generator accepts (integer
            images are refused: convert uint8 with ``images.astype(np.float32) / 255``).
          targets: per image, an index or a class name of ``classifier.class_names``: the
            class to reach (kind "class"), the class to leave (kind "other"; default: the
            predicted class), or the attribute to flip (kind "flip"; default 0).
          kind: "class", "other" or "flip" (default: "class" with targets, "other" without,
            "flip" for multilabel classifiers). So ``explain(images)`` leaves each image's
            predicted class, as the dataset run's default (``targets.kind = "other"``) does,
            and ``explain(images, targets)`` reaches the given classes.
          example_ids: global ids that key the randomness (default 0..B-1).
          regions: optional (B, H, W[, 1]) masks, 1 where the image may change.
          latents: starting latents, for generators without an encoder.
          context: conditioning for the generator and the prior (a pytree of arrays with a
            leading axis of B, or of one row that is repeated for every image).

        Returns:
          An :class:`~sce_jax.search.engine.Explanation` of numpy arrays, unpadded.
        """
        kind = kind or self.default_kind(targets is not None)
        batch, size = self.prepare_batch(images, targets, kind=kind, example_ids=example_ids,
                                         regions=regions, latents=latents, context=context)
        out = self.explain_arrays(batch, kind=kind)
        return jax.tree.map(lambda a: parallel.local_rows(a)[:size], out)


    def slot_scheduler(self, kind: str, *, slots: int, chunk_steps: int | None = None,
                       min_slots: int | None = None) -> SlotScheduler:
        """A :class:`~sce_jax.search.slot_scheduler.SlotScheduler` over this explainer's models (its
        ``run`` takes blocks from :meth:`prepare_batch` with a group key per row)."""
        return SlotScheduler(self.models, self.settings, kind, self.search_params, slots=slots,
                             chunk_steps=chunk_steps, min_slots=min_slots, mesh=self.mesh)

    def explain_stream(self, images: Iterable, targets: Iterable | None = None, *,
                       kind: str | None = None, example_ids: Iterable | None = None,
                       regions: Iterable | None = None, context=None, slots: int = 32,
                       chunk_steps: int | None = None) -> Iterator[tuple[int, Explanation]]:
        """Explains an iterable of images (H, W, C) through ``slots`` searches in flight.

        Yields ``(index, explanation)`` as each image's K attempts are done (not in input
        order): ``index`` is the image's position in ``images``, ``explanation`` holds one row
        (leading axis 1), equal to what :meth:`explain` gives for that image (randomness is
        keyed on the example id, default ``index``). ``targets``, ``example_ids`` and
        ``regions`` are iterables of per-image values, as for :meth:`explain`; ``context`` is
        one row given to every image. Images are read ``slots`` at a time, as the slots need
        them; ``chunk_steps``: steps between refills (default: a multiple of the mask period,
        :func:`sce_jax.search.slot_scheduler.aligned_chunk_steps`). One process only (several: use
        :meth:`explain`).
        """
        kind = kind or self.default_kind(targets is not None)
        rows = zip(images, targets if targets is not None else itertools.repeat(None),
                   example_ids if example_ids is not None else itertools.count(),
                   regions if regions is not None else itertools.repeat(None))
        scheduler = self.slot_scheduler(kind, slots=slots, chunk_steps=chunk_steps)

        def blocks():
            start, shapes = 0, {}
            while block := list(itertools.islice(rows, scheduler.slots)):
                size = len(block)
                block += block[:1] * (scheduler.slots - size)  # one shape: padding never runs
                image, target, ids, region = zip(*block)
                batch, _ = self.prepare_batch(
                    api_inputs.stacked_stream_rows("images", image, start, shapes),
                    None if targets is None else list(target), kind=kind,
                    example_ids=np.asarray(ids, np.int32),
                    regions=None if regions is None else api_inputs.stacked_stream_rows(
                        "regions", region, start, shapes),
                    valid=np.arange(len(block)) < size,
                    context=None if context is None else jax.tree.map(lambda a: np.asarray(a)[:1], context))
                yield batch, range(start, start + size)
                start += size

        yield from scheduler.run(blocks())

def _per_image(array: np.ndarray, batch: int) -> np.ndarray:
    """A context leaf with a leading axis of ``batch``; one row is repeated for every image."""
    if array.ndim == 0 or array.shape[0] not in (1, batch):
        raise ValueError(f"a context array of shape {array.shape} has no leading axis of 1 or "
                         f"{batch} (the batch size)")
    return np.broadcast_to(array, (batch,) + array.shape[1:]).copy() if array.shape[0] == 1 else array


def all_other_classes(predictions: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Expands images into one search per class other than the prediction.

    Returns ``(image_index, target)`` arrays of length ``B * (num_classes - 1)``.
    """
    predictions = np.asarray(predictions).reshape(-1)
    index = np.repeat(np.arange(predictions.shape[0]), num_classes - 1)
    offsets = np.tile(np.arange(1, num_classes), predictions.shape[0])
    target = (predictions[index] + offsets) % num_classes
    return index, target.astype(np.int32)
