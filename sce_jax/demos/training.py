"""Training the small demo models that ship with the package (Fashion-MNIST, squares).

Nothing can be downloaded where this project is built, so the demo's autoencoder and
classifiers are trained here, in JAX, by ``scripts/train_demo_models.py``. This module holds
the training steps so they are testable:

autoencoder (a small diffusers-layout ``AutoencoderKL``), on images ``x`` in [-1, 1]::

    L = mean|D(z) - x| + mean (D(z) - x)^2 + beta * KL(q(z|x) || N(0, I)),   z ~ q(z|x)
    KL = 1/2 mean(mu^2 + sigma^2 - 1 - log sigma^2)

classifier: softmax cross-entropy on [0, 1] images, Adam. After training, the autoencoder's
``scaling_factor`` is set to ``1 / std(z)`` over the training set, as Stable Diffusion's 0.18215
was, so the latents the search sees have unit scale.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import nnx


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    steps: int
    batch_size: int
    learning_rate: float
    seed: int = 0
    kl_weight: float = 1e-4
    log_every: int = 100


def _batches(num: int, batch_size: int, steps: int, seed: int):
    rng = np.random.default_rng(seed)
    order = rng.permutation(num)
    pos = 0
    for _ in range(steps):
        if pos + batch_size > num:
            order = rng.permutation(num)
            pos = 0
        yield order[pos:pos + batch_size]
        pos += batch_size


def _cosine(settings: TrainSettings):
    warmup = min(100, settings.steps // 10)
    return optax.warmup_cosine_decay_schedule(0.0, settings.learning_rate, warmup,
                                              settings.steps, settings.learning_rate * 0.05)


def autoencoder_loss(model, images01, key, kl_weight: float):
    """The loss above and its parts; ``images01`` in [0, 1]."""
    x = images01 * 2.0 - 1.0
    posterior = model.encode(x)
    z = posterior.sample(key)
    recon = model.decode(z)
    l1 = jnp.mean(jnp.abs(recon - x))
    l2 = jnp.mean((recon - x) ** 2)
    mean, logvar = posterior.mean, posterior.logvar
    kl = 0.5 * jnp.mean(mean ** 2 + jnp.exp(logvar) - 1.0 - logvar)
    return l1 + l2 + kl_weight * kl, {"l1": l1, "l2": l2, "kl": kl}


def train_autoencoder(model: nnx.Module, images01: np.ndarray, settings: TrainSettings,
                      log: Callable[[str], None] = logging.info) -> tuple[nnx.Module, dict]:
    """Trains ``model`` in place on [0, 1] NHWC images; returns it and the last metrics."""
    graphdef, params = nnx.split(model)
    tx = optax.adam(_cosine(settings))
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, batch, key):
        def loss_fn(p):
            return autoencoder_loss(nnx.merge(graphdef, p), batch, key, settings.kl_weight)
        (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, parts

    key = jax.random.key(settings.seed)
    start = time.time()
    parts = {}
    for i, idx in enumerate(_batches(len(images01), settings.batch_size, settings.steps, settings.seed)):
        params, opt_state, loss, parts = step(params, opt_state, jnp.asarray(images01[idx]),
                                              jax.random.fold_in(key, i))
        if (i + 1) % settings.log_every == 0 or i + 1 == settings.steps:
            log(f"autoencoder step {i + 1}/{settings.steps}: loss {float(loss):.4f} "
                f"l1 {float(parts['l1']):.4f} kl {float(parts['kl']):.3f} ({time.time() - start:.0f}s)")
    nnx.update(model, params)
    return model, {k: float(v) for k, v in parts.items()}


def latent_std(model: nnx.Module, images01: np.ndarray, batch_size: int = 256) -> float:
    """Standard deviation of the posterior means over ``images01`` (for ``scaling_factor``)."""
    graphdef, params = nnx.split(model)
    encode = jax.jit(lambda p, x: nnx.merge(graphdef, p).encode(x * 2.0 - 1.0).mean)
    means = [np.asarray(encode(params, jnp.asarray(images01[i:i + batch_size])))
             for i in range(0, len(images01), batch_size)]
    return float(np.std(np.concatenate(means)))


def reconstruction_error(model: nnx.Module, images01: np.ndarray, batch_size: int = 256) -> float:
    """Mean absolute error of ``D(mean E(x))`` in [0, 1] units."""
    graphdef, params = nnx.split(model)

    @jax.jit
    def recon(p, x):
        ae = nnx.merge(graphdef, p)
        return jnp.clip((ae.decode(ae.encode(x * 2.0 - 1.0).mean) + 1.0) / 2.0, 0.0, 1.0)

    errors = [np.abs(np.asarray(recon(params, jnp.asarray(images01[i:i + batch_size])))
                     - images01[i:i + batch_size]).mean(axis=(1, 2, 3))
              for i in range(0, len(images01), batch_size)]
    return float(np.concatenate(errors).mean())


def train_classifier(model: nnx.Module, images01: np.ndarray, labels: np.ndarray,
                     settings: TrainSettings, *, augment_flip: bool = False,
                     log: Callable[[str], None] = logging.info) -> nnx.Module:
    """Softmax cross-entropy training with Adam (and optional horizontal flips)."""
    graphdef, params = nnx.split(model)
    tx = optax.adamw(_cosine(settings), weight_decay=1e-4)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, x, y, key):
        if augment_flip:
            flip = jax.random.bernoulli(key, 0.5, (x.shape[0], 1, 1, 1))
            x = jnp.where(flip, x[:, :, ::-1], x)

        def loss_fn(p):
            logits = nnx.merge(graphdef, p)(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    key = jax.random.key(settings.seed)
    start = time.time()
    for i, idx in enumerate(_batches(len(images01), settings.batch_size, settings.steps, settings.seed)):
        params, opt_state, loss = step(params, opt_state, jnp.asarray(images01[idx]),
                                       jnp.asarray(labels[idx]), jax.random.fold_in(key, i))
        if (i + 1) % settings.log_every == 0 or i + 1 == settings.steps:
            log(f"classifier step {i + 1}/{settings.steps}: loss {float(loss):.4f} "
                f"({time.time() - start:.0f}s)")
    nnx.update(model, params)
    return model


def accuracy(model: nnx.Module, images01: np.ndarray, labels: np.ndarray, batch_size: int = 512) -> float:
    graphdef, params = nnx.split(model)
    predict = jax.jit(lambda p, x: jnp.argmax(nnx.merge(graphdef, p)(x), -1))
    preds = np.concatenate([np.asarray(predict(params, jnp.asarray(images01[i:i + batch_size])))
                            for i in range(0, len(images01), batch_size)])
    return float(np.mean(preds == labels))


def with_config(model: nnx.Module, **changes: Any) -> nnx.Module:
    """The same weights under a config with some fields replaced (e.g. scaling_factor)."""
    cls = type(model)
    config = dataclasses.replace(model.config, **changes)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: cls(config, rngs=nnx.Rngs(0))))
    return nnx.merge(graphdef, nnx.state(model))


def flow_matching_loss(model, latents, key):
    """Rectified-flow loss ``mean (v_theta(z_t, t) - (eps - z))^2`` with logit-normal ``t``.

    ``t = sigmoid(u)``, ``u ~ N(0, 1)`` (SD3's sampling of training times), ``eps ~ N(0, I)``,
    ``z_t = (1 - t) z + t eps``.
    """
    k_t, k_eps = jax.random.split(key)
    t = jax.nn.sigmoid(jax.random.normal(k_t, (latents.shape[0],)))
    eps = jax.random.normal(k_eps, latents.shape)
    tb = t[:, None, None, None]
    z_t = (1.0 - tb) * latents + tb * eps
    return jnp.mean((model(z_t, t) - (eps - latents)) ** 2)


def train_flow_prior(model: nnx.Module, latents: np.ndarray, settings: TrainSettings,
                     log: Callable[[str], None] = logging.info) -> tuple[nnx.Module, float]:
    """Trains a velocity model on scaled latents (N, h, w, c) with Adam; returns it and its loss.

    Horizontal flips of the latent grid are not used: an autoencoder's latents are not
    flip-equivariant in general.
    """
    graphdef, params = nnx.split(model)
    tx = optax.adamw(_cosine(settings), weight_decay=1e-4)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, batch, key):
        loss, grads = jax.value_and_grad(
            lambda p: flow_matching_loss(nnx.merge(graphdef, p), batch, key))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    key = jax.random.key(settings.seed)
    start = time.time()
    recent = []
    for i, idx in enumerate(_batches(len(latents), settings.batch_size, settings.steps, settings.seed)):
        params, opt_state, loss = step(params, opt_state, jnp.asarray(latents[idx]),
                                       jax.random.fold_in(key, i))
        recent = (recent + [float(loss)])[-100:] if (i + 1) % 10 == 0 else recent
        if (i + 1) % settings.log_every == 0 or i + 1 == settings.steps:
            log(f"prior step {i + 1}/{settings.steps}: loss {float(loss):.4f} "
                f"({time.time() - start:.0f}s)")
    nnx.update(model, params)
    return model, float(np.mean(recent)) if recent else float("nan")


def encode_all(generator, images01: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Scaled latents ``E(x)`` of many [0, 1] images, in batches (numpy out)."""
    encode = jax.jit(generator.encode_fn)
    return np.concatenate([np.asarray(encode(generator.params, jnp.asarray(images01[i:i + batch_size])))
                           for i in range(0, len(images01), batch_size)])
