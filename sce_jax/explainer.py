"""``Explainer``: the programmatic API over the jitted search.

    explainer = sce_jax.Explainer(generator, classifier, config)
    result = explainer.explain(images, targets=[3, 7])      # numpy arrays, (B, K, ...)

The explainer compiles :func:`sce_jax.search.engine.explain_batch` once per (target kind,
batch shape), pads a batch to a multiple of the device count, shards it over the ``data``
mesh axis and replicates the parameters. For use inside your own ``jax.jit``, call
``explain_batch`` directly (see its docstring).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import ml_collections
import numpy as np

from sce_jax import parallel
from sce_jax.classifier import Classifier
from sce_jax.generator import Generator
from sce_jax.search.config import SearchSettings, settings_from_config
from sce_jax.search.engine import Batch, Explanation, explain_batch


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
    """

    def __init__(self, generator: Generator, classifier: Classifier,
                 config: ml_collections.ConfigDict | dict | None = None, *,
                 mesh: jax.sharding.Mesh | None = None,
                 progress: Callable[[Any, Any, Any, Any], None] | None = None):
        self.generator = generator
        self.classifier = classifier
        self.settings: SearchSettings = settings_from_config(config)
        if mesh is None and jax.device_count() > 1:
            mesh = parallel.make_mesh()
        self.mesh = mesh
        self.progress = progress
        self.trace_count = 0
        self._compiled: dict[str, Callable] = {}
        if mesh is not None:
            self._gen_params = parallel.replicate(generator.params, mesh)
            self._cls_params = parallel.replicate(classifier.params, mesh)
        else:
            self._gen_params, self._cls_params = generator.params, classifier.params

    def _count_trace(self):
        self.trace_count += 1

    def default_kind(self, targets_given: bool) -> str:
        if self.classifier.head == "multilabel":
            return "flip"
        return "class" if targets_given else "other"

    def compiled(self, kind: str) -> Callable:
        """The jitted ``(gen_params, cls_params, batch) -> Explanation`` for a target kind."""
        if kind not in self._compiled:
            fn = functools.partial(
                explain_batch, decode_fn=self.generator.decode_fn,
                encode_fn=self.generator.encode_fn if self.generator.has_encoder else None,
                logits_fn=self.classifier.logits_fn, settings=self.settings, kind=kind,
                downsample=self.generator.downsample, progress=self.progress,
                on_trace=self._count_trace)
            self._compiled[kind] = jax.jit(fn)
        return self._compiled[kind]

    def prepare_batch(self, images, targets=None, *, kind: str, example_ids=None, regions=None,
                      latents=None, valid=None) -> tuple[Batch, int]:
        """Validates and pads host arrays into a :class:`Batch`; returns it and the real size."""
        images = np.asarray(images, np.float32)
        if images.ndim != 4:
            raise ValueError(f"images must be (B, H, W, C), got shape {images.shape}")
        b, h, w, _ = images.shape
        self.generator.latent_shape((h, w))
        if targets is None:
            if kind == "class":
                raise ValueError("target kind 'class' needs targets (one class index per image)")
            targets = np.full((b,), -1 if kind == "other" else 0, np.int32)
        targets = np.asarray(targets, np.int32).reshape(-1)
        if targets.shape[0] != b:
            raise ValueError(f"{targets.shape[0]} targets for {b} images")
        if example_ids is None:
            example_ids = np.arange(b, dtype=np.int32)
        example_ids = np.asarray(example_ids, np.int32).reshape(-1)
        if regions is None:
            regions = np.ones((b, h, w, 1), np.float32)
        regions = np.asarray(regions, np.float32)
        if regions.ndim == 3:
            regions = regions[..., None]
        if regions.shape != (b, h, w, 1):
            raise ValueError(f"regions must be (B, H, W[, 1]) = ({b}, {h}, {w}), got {regions.shape}")
        valid = np.ones((b,), bool) if valid is None else np.asarray(valid, bool).reshape(-1)
        if valid.shape[0] != b:
            raise ValueError(f"{valid.shape[0]} valid flags for {b} images")
        for t in targets[valid]:  # rows that are not valid (padding) are never searched
            if not (kind == "other" and t == -1):
                self.classifier.check_target(int(t))
        arrays = dict(images=images, targets=targets, example_ids=example_ids, regions=regions,
                      valid=valid)
        if latents is not None:
            arrays["latents"] = np.asarray(latents, np.float32)
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
        return self.compiled(kind).lower(self._gen_params, self._cls_params, batch).compile()

    def explain_arrays(self, batch: Batch, *, kind: str) -> Explanation:
        """Runs the compiled search on a prepared batch (device arrays, no host transfer)."""
        return self.compiled(kind)(self._gen_params, self._cls_params, batch)

    def explain(self, images, targets: Sequence[int] | np.ndarray | None = None, *,
                kind: str | None = None, example_ids=None, regions=None, latents=None) -> Explanation:
        """Explains a batch of images in [0, 1], shape (B, H, W, C).

        Args:
          images: the inputs, at a size the generator accepts.
          targets: per image, the class to reach (kind "class"), the class to leave (kind
            "other"; default: the predicted class), or the attribute to flip (kind "flip";
            default 0).
          kind: "class", "other" or "flip" (default: "class" with targets, "other" without,
            "flip" for multilabel classifiers).
          example_ids: global ids that key the randomness (default 0..B-1).
          regions: optional (B, H, W[, 1]) masks, 1 where the image may change.
          latents: starting latents, for generators without an encoder.

        Returns:
          An :class:`~sce_jax.search.engine.Explanation` of numpy arrays, unpadded.
        """
        kind = kind or self.default_kind(targets is not None)
        batch, size = self.prepare_batch(images, targets, kind=kind, example_ids=example_ids,
                                         regions=regions, latents=latents)
        out = self.explain_arrays(batch, kind=kind)
        return jax.tree.map(lambda a: parallel.local_rows(a)[:size], out)


def all_other_classes(predictions: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Expands images into one search per class other than the prediction.

    Returns ``(image_index, target)`` arrays of length ``B * (num_classes - 1)``.
    """
    predictions = np.asarray(predictions).reshape(-1)
    index = np.repeat(np.arange(predictions.shape[0]), num_classes - 1)
    offsets = np.tile(np.arange(1, num_classes), predictions.shape[0])
    target = (predictions[index] + offsets) % num_classes
    return index, target.astype(np.int32)
