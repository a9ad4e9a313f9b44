"""The classifier the search explains: differentiable preprocessing + logits + head semantics.

A :class:`Classifier` takes images in [0, 1] (NHWC, at the generator's resolution) and returns
logits. Preprocessing is part of the differentiable function::

    x' = (resize(channels(x)) - mean) / std,      logits = network(x')

where ``channels`` converts grey <-> RGB (grey = 0.299 R + 0.587 G + 0.114 B; RGB = grey
repeated) and ``resize`` is bilinear (antialiased when shrinking).

Heads and what a target means (see :mod:`sce_jax.search.targets`):

- ``"multiclass"`` (softmax over classes): a target is a class index; ``"other"`` means any
  class but the given one.
- ``"multilabel"`` (one sigmoid per output, binary attributes included): a target is an
  attribute index, and the search flips that attribute's decision.

The output's shape is checked where it is known, when the function is traced (once per
compilation; eagerly, on each call, for free): images (N, H, W, C) must give logits
(N, num_outputs). A function returning another shape raises :class:`ClassifierOutputError`
naming it and both shapes, instead of every search failing quietly (too few logits) or an
indexing error deep inside the search (a rank-1 output).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sce_jax.data.geometry import convert_channels
from sce_jax.search.targets import HEADS, Head  # noqa: F401  (Head: part of this module's API)

Array = jax.Array


class ClassifierOutputError(ValueError):
    """A classifier's logits have another shape than (N images, num_outputs)."""


def _function_name(fn: Callable) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


def _checked_logits_fn(fn: Callable, num_outputs: int, name: str) -> Callable:
    """``fn`` with its output shape checked against (images' leading axes, num_outputs).

    The check reads static shapes only, so under ``jax.jit`` it runs when the function is
    traced; an already checked function is re-wrapped from its original (for
    ``dataclasses.replace`` with another ``num_outputs``).
    """
    fn = getattr(fn, "unchecked_logits_fn", fn)

    def logits_fn(params, images):
        out = fn(params, images)
        leading = tuple(np.shape(images)[:-3])  # (N,), or () for one image under jax.vmap
        expected = leading + (num_outputs,)
        got = tuple(np.shape(out))
        if got != expected:
            raise ClassifierOutputError(
                f"the classifier {name!r} (function {_function_name(fn)}) returned logits of "
                f"shape {got} for images of shape {tuple(np.shape(images))}; expected "
                f"{expected}: one row of num_outputs={num_outputs} logits per image")
        return out

    functools.update_wrapper(logits_fn, fn)
    logits_fn.unchecked_logits_fn = fn
    return logits_fn


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """Maps [0, 1] images to the network's input: channels, size, normalisation."""

    input_size: tuple[int, int] | None = None
    channels: int | None = None
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def __call__(self, images: Array) -> Array:
        x = images
        if self.channels is not None and x.shape[-1] != self.channels:
            x = convert_channels(x, self.channels)
        if self.input_size is not None and tuple(x.shape[1:3]) != tuple(self.input_size):
            x = jax.image.resize(x, (x.shape[0], *self.input_size, x.shape[-1]), "bilinear",
                                 antialias=True)
        mean = jnp.asarray(self.mean, x.dtype)
        std = jnp.asarray(self.std, x.dtype)
        return (x - mean) / std


# The normalisation torchvision's ImageNet weights expect.
IMAGENET = Preprocessing(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


@dataclasses.dataclass(frozen=True)
class Classifier:
    """Logits of [0, 1] images, over explicit parameters, with its head type.

    Attributes:
      logits_fn: ``(params, images) -> logits (N, num_outputs)``, preprocessing included; kept
        wrapped in the output-shape check (the given function: ``logits_fn.unchecked_logits_fn``).
      params: the parameters (NNX state for the ported networks).
      head: ``"multiclass"`` or ``"multilabel"``.
      num_outputs: number of classes or attributes.
      features_fn: optional ``(params, images) -> (N, D)`` penultimate features.
      class_names: optional names of the outputs, for reports.
      name: for logs and reports.
    """

    logits_fn: Callable[[Any, Array], Array]
    params: Any
    head: str
    num_outputs: int
    features_fn: Callable[[Any, Array], Array] | None = None
    class_names: tuple[str, ...] | None = None
    name: str = "classifier"

    def __post_init__(self):
        if self.head not in HEADS:
            raise ValueError(HEADS.problem(self.head))
        if self.class_names is not None and len(self.class_names) != self.num_outputs:
            raise ValueError(f"{len(self.class_names)} class names for {self.num_outputs} outputs")
        if int(self.num_outputs) < 1:
            raise ValueError(f"num_outputs={self.num_outputs}: a classifier has at least 1 output")
        object.__setattr__(self, "logits_fn",
                           _checked_logits_fn(self.logits_fn, int(self.num_outputs), self.name))

    def logits(self, images: Array) -> Array:
        return self.logits_fn(self.params, images)

    def features(self, images: Array) -> Array:
        if self.features_fn is None:
            raise ValueError(f"{self.name} exposes no features")
        return self.features_fn(self.params, images)

    def class_name(self, index: int) -> str:
        if self.class_names is None:
            return str(index)
        return self.class_names[index]

    def check_target(self, target: int) -> None:
        if not 0 <= int(target) < self.num_outputs:
            raise ValueError(f"target {HEADS[self.head].output} {target} is out of range: {self.name} has "
                             f"{self.num_outputs} outputs (0..{self.num_outputs - 1})")

    @classmethod
    def from_nnx(cls, model: nnx.Module, *, preprocessing: Preprocessing = Preprocessing(),
                 head: str = "multiclass", num_outputs: int | None = None,
                 class_names: Sequence[str] | None = None, name: str | None = None) -> "Classifier":
        """Wraps an NNX network with ``__call__(x) -> logits`` (and ``features(x)`` if it has one)."""
        graphdef, state = nnx.split(model)

        def logits_fn(params, images):
            net = nnx.merge(graphdef, params)
            return net(preprocessing(images)).astype(jnp.float32)

        features_fn = None
        if hasattr(model, "features") and callable(model.features):
            def features_fn(params, images):
                net = nnx.merge(graphdef, params)
                return net.features(preprocessing(images)).astype(jnp.float32)

        if num_outputs is None:
            num_outputs = _infer_outputs(model)
        return cls(logits_fn, state, head, int(num_outputs), features_fn,
                   tuple(class_names) if class_names is not None else None,
                   name or type(model).__name__)

    @classmethod
    def from_function(cls, fn: Callable[[Any, Array], Array], params: Any = None, *,
                      head: str = "multiclass", num_outputs: int,
                      features_fn: Callable[[Any, Array], Array] | None = None,
                      class_names: Sequence[str] | None = None, name: str = "classifier") -> "Classifier":
        """Wraps any JAX function ``(params, images in [0, 1]) -> logits (N, num_outputs)``.

        The logits' shape is checked when ``fn`` is first traced (see the module docstring):
        another shape raises :class:`ClassifierOutputError` naming ``fn.__qualname__``.
        """
        return cls(fn, params, head, int(num_outputs), features_fn,
                   tuple(class_names) if class_names is not None else None, name)


def _infer_outputs(model: nnx.Module) -> int:
    config = getattr(model, "config", None)
    for attr in ("num_classes", "num_outputs"):
        if config is not None and getattr(config, attr, None) is not None:
            return int(getattr(config, attr))
    raise ValueError("cannot infer the number of outputs of this network; pass num_outputs=")
