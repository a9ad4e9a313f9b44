"""The counterfactual search of ``sce_jax.search``, written in plain PyTorch.

This is the benchmark's reference: the same algorithm, step for step, as a careful PyTorch
user would write it around diffusers' ``AutoencoderKL`` and a torch classifier, so that the
throughput of sce_jax can be compared with it on the same models, weights and settings.
It follows the method exactly as ``sce_jax.search`` implements it:

output image   ``x_cf = clip(x + m (D(z) - D(z0)), 0, 1)`` (residual; blend and decoded too)
loss           ``cls(f(x_cf) / T, t) + l1 mean|z - z0| + l2 sqrt(||z - z0||^2 + 1e-12)
               + pixel_l1 mean|x_cf - x|``
smoothing      pixel: ``J^T (1/N) sum_n grad_x cls(f(x_cf + sigma eps_n))`` (one decoder pass);
               latent: ``(1/N) sum_n grad_z cls(f(x_cf(z + sigma eps_n)))`` (N decoder passes);
               the N samples are a batch of N*B images, one backward per step
update         mask the gradient with the latent mask, clip and sparsify per example, then
               ``torch.optim.SGD`` (momentum, dampening 0 = optax.sgd) or ``torch.optim.Adam``;
               the latent is reset to ``z0`` outside the latent mask
edit mask      every ``period`` steps after the warm-up:
               ``keep = [blur(d) / max blur(d) >= tau] * allowed``,
               ``d = sum_c |D(z) - D(z0)| * allowed``,
               soft border, latent mask = max-pool + dilation
stopping       an example that reaches its target (or turns non-finite) is frozen; the others
               go on; then the final re-check, and best-so-far for those that failed
diversity      K attempts; attempt k may not change what successful attempts before it changed
               (grown by ``mask.lock_margin`` pixels; no lock when ``lock`` is off)

Differences that are not algorithmic: images are NCHW (PyTorch's layout), and the smoothing
noise comes from a ``torch.Generator`` instead of JAX's per-example keys, so with smoothing on
the two implementations draw different (equally distributed) noise. With smoothing ``"none"``
both compute the same counterfactual up to float rounding (``tests/benchmarks/test_torch_reference.py``).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from sce_jax.data.geometry import LUMA_WEIGHTS
from sce_jax.search.config import SearchSettings
from sce_jax.search.masks import gaussian_kernel1d
from sce_jax.search.objectives import L2_EPS
from sce_jax.search.targets import KINDS
from sce_jax.search.updates import NORM_FLOOR


# --------------------------------------------------------------------------------- models
@dataclasses.dataclass
class TorchGenerator:
    """diffusers' ``AutoencoderKL`` in the search's conventions, NCHW.

    ``z_scaled = (z_raw - shift) * scale`` with ``shift = latents_mean`` (else ``shift_factor``,
    else 0) and ``scale = scaling_factor / latents_std`` (else ``scaling_factor``), as
    diffusers pipelines scale latents; images are in [0, 1] (the VAE sees ``2 x - 1``).
    A VAE whose parameters are bfloat16 (:meth:`in_bfloat16`) decodes in bfloat16: latents
    are cast to it on the way in and images back to float32 on the way out.
    """

    vae: torch.nn.Module
    shift: torch.Tensor   # (1, c, 1, 1) or (1, 1, 1, 1)
    scale: torch.Tensor
    downsample: int

    @classmethod
    def from_diffusers(cls, vae: torch.nn.Module) -> "TorchGenerator":
        config = vae.config
        scaling = float(config.get("scaling_factor") or 1.0)
        mean, std = config.get("latents_mean"), config.get("latents_std")
        shift = list(mean) if mean is not None else [float(config.get("shift_factor") or 0.0)]
        scale = [scaling / float(s) for s in std] if std is not None else [scaling]
        param = next(vae.parameters())

        def as_tensor(values):
            return torch.tensor(values, dtype=param.dtype, device=param.device).reshape(1, -1, 1, 1)
        vae.eval().requires_grad_(False)
        return cls(vae, as_tensor(shift), as_tensor(scale),
                   2 ** (len(config.block_out_channels) - 1))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Scaled posterior mean of images in [0, 1]."""
        vae_dtype = next(self.vae.parameters()).dtype
        raw = self.vae.encode((images * 2.0 - 1.0).to(vae_dtype)).latent_dist.mode()
        return (raw.to(images.dtype) - self.shift) * self.scale

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] (unclipped) of scaled latents."""
        raw = z / self.scale + self.shift
        vae_dtype = next(self.vae.parameters()).dtype
        sample = self.vae.decode(raw.to(vae_dtype)).sample.to(raw.dtype)
        return (sample + 1.0) * 0.5

    def in_bfloat16(self) -> "TorchGenerator":
        """A copy whose VAE computes in bfloat16 (the shift and scale stay float32)."""
        vae = copy.deepcopy(self.vae).to(torch.bfloat16)
        return dataclasses.replace(self, vae=vae)


@dataclasses.dataclass
class TorchClassifier:
    """A torch network over [0, 1] NCHW images: ``logits = net((channels(x) - mean) / std)``.

    ``channels`` converts grey <-> RGB as sce_jax's ``Preprocessing`` does (grey =
    0.299 R + 0.587 G + 0.114 B; RGB = grey repeated). Resizing is not supported: the
    benchmark feeds every classifier at the generator's resolution.
    """

    network: torch.nn.Module
    channels: int | None = None
    mean: Sequence[float] = (0.0,)
    std: Sequence[float] = (1.0,)

    def __post_init__(self):
        self.network.eval().requires_grad_(False)
        param = next(self.network.parameters())
        like = dict(dtype=param.dtype, device=param.device)
        self._mean = torch.tensor(self.mean, **like).reshape(1, -1, 1, 1)
        self._std = torch.tensor(self.std, **like).reshape(1, -1, 1, 1)

    @classmethod
    def from_preprocessing(cls, network: torch.nn.Module, preprocessing: Any) -> "TorchClassifier":
        """Mirrors an ``sce_jax.Preprocessing`` (which must not resize)."""
        if preprocessing.input_size is not None:
            raise ValueError(f"TorchClassifier: resizing to {preprocessing.input_size} is not "
                             "supported; feed the classifier at the generator's resolution")
        return cls(network, preprocessing.channels, tuple(preprocessing.mean),
                   tuple(preprocessing.std))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images
        c = x.shape[1]
        if self.channels is not None and c != self.channels:
            if c == 1 and self.channels == 3:
                x = x.repeat(1, 3, 1, 1)
            elif c == 3 and self.channels == 1:
                w = torch.tensor(LUMA_WEIGHTS, dtype=x.dtype, device=x.device).reshape(1, 3, 1, 1)
                x = (x * w).sum(1, keepdim=True)
            else:
                raise ValueError(f"cannot convert images with {c} channels to {self.channels}")
        return self.network((x - self._mean) / self._std).float()


class TorchSmallCNN(torch.nn.Module):
    """The twin of ``sce_jax.models.small_cnn.SmallCNN`` (names ``convs.{i}``, ``fc``):
    conv3x3 -> activation (-> 2x2 average pool) per stage, global mean, linear head."""

    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int],
                 activation: str = "silu"):
        super().__init__()
        channels = (in_channels,) + tuple(widths)
        self.convs = torch.nn.ModuleList(torch.nn.Conv2d(a, b, 3, padding=1)
                                         for a, b in zip(channels[:-1], channels[1:]))
        self.fc = torch.nn.Linear(channels[-1], num_classes)
        if activation not in ("silu", "relu"):
            raise ValueError(f"TorchSmallCNN: activation must be 'silu' or 'relu', "
                             f"got {activation!r}")
        self.act = torch.nn.SiLU() if activation == "silu" else torch.nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, conv in enumerate(self.convs):
            x = self.act(conv(x))
            if i < len(self.convs) - 1:
                x = F.avg_pool2d(x, 2)
        return self.fc(x.mean((2, 3)))


# ---------------------------------------------------------------------------- objectives
def compose_output(x, decoded, decoded0, mask, mode: str):
    """The returned (and classified) image, clipped to [0, 1]."""
    if mode == "residual":
        out = x + mask * (decoded - decoded0)
    elif mode == "blend":
        out = x + mask * (decoded - x)
    elif mode == "decoded":
        out = decoded
    else:
        raise ValueError(f"unknown output mode {mode!r}")
    return out.clamp(0.0, 1.0)


def latent_proximity(z, z0, l1: float, l2: float):
    """``l1 mean|z - z0| + l2 sqrt(||z - z0||^2 + eps)`` per example (B,)."""
    d = (z - z0).flatten(1)
    out = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
    if l1:
        out = out + l1 * d.abs().mean(-1)
    if l2:
        out = out + l2 * torch.sqrt((d * d).sum(-1) + L2_EPS)
    return out


def pixel_proximity(x_cf, x, pixel_l1: float):
    """``pixel_l1 mean|x_cf - x|`` per example (B,)."""
    if not pixel_l1:
        return torch.zeros(x.shape[0], dtype=x_cf.dtype, device=x_cf.device)
    return pixel_l1 * (x_cf - x).abs().flatten(1).mean(-1)


def _take(logits, target):
    return logits.gather(1, target[:, None])[:, 0]


def target_loss(logits, target, value, *, kind: str, temperature: float, class_loss: str):
    """Per-example loss (B,): CE(l / T, t) | -l_t | -log(1 - softmax(l / T)_t) | BCE(l_t / T, v)."""
    scaled = logits / temperature
    if kind == "class":
        if class_loss == "logit":
            return -_take(logits, target)
        return F.cross_entropy(scaled, target, reduction="none")
    if kind == "other":
        others = scaled.masked_fill(F.one_hot(target, logits.shape[-1]).bool(), -math.inf)
        return torch.logsumexp(scaled, -1) - torch.logsumexp(others, -1)
    if kind == "flip":
        return F.binary_cross_entropy_with_logits(_take(scaled, target), value, reduction="none")
    raise ValueError(KINDS.problem(kind))


def target_probability(logits, target, value, *, kind: str):
    if kind == "class":
        return _take(logits.softmax(-1), target)
    if kind == "other":
        return 1.0 - _take(logits.softmax(-1), target)
    p = torch.sigmoid(_take(logits, target))
    return torch.where(value > 0.5, p, 1.0 - p)


def target_reached(logits, target, value, *, kind: str, goal_probability: float):
    p = target_probability(logits, target, value, kind=kind)
    if kind == "class":
        decided = logits.argmax(-1) == target
    elif kind == "other":
        decided = logits.argmax(-1) != target
    else:
        decided = p > 0.5
    return decided & (p >= goal_probability)


def all_finite(*tensors):
    """Per-example (B,) flag: every entry of every tensor is finite."""
    out = None
    for t in tensors:
        flag = torch.isfinite(t.flatten(1)).all(-1)
        out = flag if out is None else out & flag
    return out


def _rows(flag, like):
    return flag.reshape((-1,) + (1,) * (like.ndim - 1))


def select(keep, new, old):
    """Per-example ``new`` where ``keep`` (B,), else ``old``."""
    return torch.where(_rows(keep, new), new, old)


# --------------------------------------------------------------------------------- masks
def gaussian_blur(maps, sigma: float):
    """Separable Gaussian blur of (B, 1, H, W) maps, zero padding outside the image."""
    if sigma <= 0:
        return maps
    taps = torch.as_tensor(gaussian_kernel1d(sigma), dtype=maps.dtype, device=maps.device)
    r = (taps.numel() - 1) // 2
    out = F.conv2d(maps, taps.reshape(1, 1, -1, 1), padding=(r, 0))
    return F.conv2d(out, taps.reshape(1, 1, 1, -1), padding=(0, r))


def change_map(decoded, reference):
    """``sum_c |decoded - reference|`` as (B, 1, H, W)."""
    return (decoded - reference).abs().sum(1, keepdim=True)


def threshold_mask(change, *, blur_sigma: float, threshold: float):
    """``[blur(d) / max blur(d) >= threshold]`` per example; all ones where d = 0."""
    blurred = gaussian_blur(change, blur_sigma)
    peak = blurred.amax(dim=(1, 2, 3), keepdim=True)
    normalised = torch.where(peak > 0, blurred / torch.where(peak > 0, peak, torch.ones_like(peak)),
                             torch.ones_like(blurred))
    return (normalised >= threshold).to(change.dtype)


def fill_holes(mask):
    """The binary NCHW mask plus the pixels no 4-connected unmasked path joins to the border."""
    free = mask <= 0
    border = torch.zeros_like(free)
    border[..., 0, :] = border[..., -1, :] = border[..., :, 0] = border[..., :, -1] = True
    outside = free & border
    cross = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]],
                         device=mask.device).view(1, 1, 3, 3)
    while True:
        grown = (F.conv2d(outside.to(mask.dtype), cross.to(mask.dtype), padding=1) > 0) & free
        if torch.equal(grown, outside):
            break
        outside = grown
    return torch.where(outside, 0.0, 1.0).to(mask.dtype)


def soften(mask, allowed, border: float):
    """Soft border of ``border`` pixels, kept inside ``allowed``."""
    if border > 0:
        mask = torch.maximum(mask, gaussian_blur(mask, border))
    return mask.clamp(0.0, 1.0) * allowed


def dilate(maps, cells: int):
    """Grows a binary NCHW mask by ``cells`` in every direction (square structuring)."""
    if cells <= 0:
        return maps
    return F.max_pool2d(maps, 2 * cells + 1, 1, padding=cells)


def latent_mask(pixel_mask, factor: int, dilation: int):
    """Latent cells any of whose pixels may change, dilated by ``dilation`` cells."""
    pooled = F.max_pool2d(pixel_mask, factor, factor) if factor > 1 else pixel_mask
    return dilate((pooled > 0).to(pixel_mask.dtype), dilation)


# -------------------------------------------------------------------------------- search
class BatchSearch:
    """One batch: the quantities shared by all attempts and steps."""

    def __init__(self, generator: TorchGenerator, classifier: TorchClassifier,
                 settings: SearchSettings, kind: str, x, z0, decoded0, target, value,
                 noise: torch.Generator):
        self.gen, self.clf, self.s, self.kind = generator, classifier, settings, kind
        self.x, self.z0, self.decoded0, self.target, self.value = x, z0, decoded0, target, value
        self.noise = noise

    def loss_of_logits(self, logits, repeats: int = 1):
        target, value = self.target.repeat(repeats), self.value.repeat(repeats)
        return target_loss(logits, target, value, kind=self.kind, temperature=self.s.temperature,
                           class_loss=self.s.class_loss)

    def probability(self, logits):
        return target_probability(logits, self.target, self.value, kind=self.kind)

    def judged(self, x_cf):
        """The image success is judged on: rounded to 8 bits (halves to even) when judge_8bit."""
        if not self.s.judge_8bit:
            return x_cf
        return torch.round(x_cf.clamp(0.0, 1.0) * 255.0) / 255.0

    def reached(self, logits):
        return target_reached(logits, self.target, self.value, kind=self.kind,
                              goal_probability=self.s.goal_probability)

    def compose(self, decoded, mask, repeats: int = 1):
        x, decoded0 = self.x, self.decoded0
        if repeats > 1:
            x, decoded0, mask = (t.repeat(repeats, 1, 1, 1) for t in (x, decoded0, mask))
        return compose_output(x, decoded, decoded0, mask, self.s.output_mode)

    def _eps(self, count: int, like):
        return torch.randn((count,) + tuple(like.shape), generator=self.noise, device=like.device,
                           dtype=like.dtype)

    def gradient(self, z, mask):
        """Smoothed objective gradient at leaf ``z``; also ``x_cf``, ``D(z)``, clean logits."""
        s = self.s
        space = s.smoothing.space
        n = s.smoothing.num_samples if space != "none" else 1
        sigma = s.smoothing.sigma if space != "none" else 0.0
        chunk = n if s.smoothing.chunk_size <= 0 else min(s.smoothing.chunk_size, n)
        b = z.shape[0]
        z.grad = None

        def proximity(z_, x_cf=None):
            total = latent_proximity(z_, self.z0, s.l1, s.l2).sum()
            if x_cf is not None and s.pixel_l1:
                total = total + pixel_proximity(x_cf, self.x, s.pixel_l1).sum()
            return total

        if space in ("pixel", "none"):
            decoded = self.gen.decode(z)
            x_cf = self.compose(decoded, mask)
            if chunk == n:  # one backward through classifier and decoder
                noisy = x_cf.unsqueeze(0).expand((n,) + x_cf.shape)
                if sigma:
                    noisy = noisy + sigma * self._eps(n, x_cf)
                cls = self.loss_of_logits(self.clf(noisy.reshape((n * b,) + x_cf.shape[1:])), n)
                (cls.sum() / n + proximity(z, x_cf)).backward()
            else:  # chunks of the classifier pass accumulate d/dx_cf, then one decoder VJP
                leaf = x_cf.detach().requires_grad_(True)
                for start in range(0, n, chunk):
                    c = min(chunk, n - start)
                    noisy = leaf.unsqueeze(0) + sigma * self._eps(c, leaf)
                    cls = self.loss_of_logits(self.clf(noisy.reshape((c * b,) + leaf.shape[1:])), c)
                    (cls.sum() / n).backward()
                torch.autograd.backward([x_cf, proximity(z, x_cf)],
                                        [leaf.grad, torch.ones((), dtype=z.dtype, device=z.device)])
        elif space == "latent":
            for start in range(0, n, chunk):  # gradients accumulate in z.grad
                c = min(chunk, n - start)
                z_noisy = (z.unsqueeze(0) + sigma * self._eps(c, z)).reshape((c * b,) + z.shape[1:])
                x_noisy = self.compose(self.gen.decode(z_noisy), mask, c)
                (self.loss_of_logits(self.clf(x_noisy), c).sum() / n).backward()
            if s.pixel_l1:
                decoded = self.gen.decode(z)
                x_cf = self.compose(decoded, mask)
                proximity(z, x_cf).backward()
            else:
                if s.l1 or s.l2:
                    proximity(z).backward()
                with torch.no_grad():
                    decoded = self.gen.decode(z)
                    x_cf = self.compose(decoded, mask)
        else:
            raise ValueError(f"unknown smoothing space {space!r}")
        with torch.no_grad():
            logits = self.clf(self.judged(x_cf.detach()))
        return z.grad.detach().clone(), x_cf.detach(), decoded.detach(), logits


def process_gradient(grad, latent_mask_, settings: SearchSettings):
    """Latent mask, then per-example normalising, clipping and sparsification."""
    grad = grad * latent_mask_
    if settings.normalize_gradient:
        grad = grad / _rows(torch.clamp(grad.flatten(1).norm(dim=-1), min=NORM_FLOOR), grad)
    if settings.clip_norm > 0:
        norm = grad.flatten(1).norm(dim=-1)
        factor = torch.clamp(settings.clip_norm / torch.clamp(norm, min=NORM_FLOOR), max=1.0)
        grad = grad * _rows(factor, grad)
    if settings.sparsify > 0:
        peak = grad.abs().flatten(1).amax(-1)
        grad = torch.where(grad.abs() >= settings.sparsify * _rows(peak, grad), grad,
                           torch.zeros_like(grad))
    return grad


def make_optimizer(z, settings: SearchSettings) -> torch.optim.Optimizer:
    if settings.optimizer == "sgd":
        return torch.optim.SGD([z], lr=settings.learning_rate, momentum=settings.momentum,
                               dampening=0.0)
    if settings.optimizer == "adam":
        return torch.optim.Adam([z], lr=settings.learning_rate)
    raise ValueError(f"unknown optimizer {settings.optimizer!r}")


def _batched_state(optimizer, z) -> dict[str, torch.Tensor]:
    """The optimizer's per-example state tensors (momentum, Adam moments), cloned."""
    return {k: v.clone() for k, v in optimizer.state[z].items()
            if torch.is_tensor(v) and v.ndim > 0 and v.shape[0] == z.shape[0]}


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _run_attempt(search: BatchSearch, allowed, valid, step_times: list | None):
    s, mcfg, gen = search.s, search.s.mask, search.gen
    x, z0, decoded0 = search.x, search.z0, search.decoded0
    lat_allowed = latent_mask(allowed, gen.downsample, 0)
    z = z0.clone().requires_grad_(True)
    optimizer = make_optimizer(z, s)
    pixel_mask, lat_mask = allowed.clone(), lat_allowed.clone()
    finite0 = all_finite(z0, decoded0, x)
    done = ~valid | ~finite0
    success = torch.zeros_like(valid)
    nonfinite = valid & ~finite0
    steps_used = torch.zeros(valid.shape, dtype=torch.int64, device=x.device)
    best_z, best_mask = z0.clone(), pixel_mask.clone()
    best_p = torch.full(valid.shape, -1.0, device=x.device)

    step = 0
    while step < s.steps and bool((~done).any()):  # the host reads `done` every step
        start = time.perf_counter()
        grad, x_cf, decoded, logits = search.gradient(z, pixel_mask)
        with torch.no_grad():
            p = search.probability(logits)
            reached = search.reached(logits)
            finite = all_finite(grad, logits, z)
            active = ~done
            improve = active & finite & (p > best_p)
            best_z = select(improve, z.detach(), best_z)
            best_mask = select(improve, pixel_mask, best_mask)
            best_p = torch.where(improve, p, best_p)
            success = success | (active & finite & reached)
            nonfinite = nonfinite | (active & ~finite)
            done = done | success | nonfinite
            steps_used = torch.where(active, torch.full_like(steps_used, step), steps_used)

            z_before, state_before = z.detach().clone(), _batched_state(optimizer, z)
            finite_grad = torch.where(_rows(finite, grad), grad, torch.zeros_like(grad))
            z.grad = process_gradient(finite_grad, lat_mask, s)
            optimizer.step()
            z_new = z0 + lat_mask * (z - z0)
            new_pixel_mask, new_lat_mask = pixel_mask, lat_mask
            if mcfg.enabled:
                if step >= mcfg.warmup_steps and (step - mcfg.warmup_steps) % mcfg.period == 0:
                    change = change_map(decoded, decoded0) * allowed
                    keep_px = threshold_mask(change, blur_sigma=mcfg.blur_sigma,
                                             threshold=mcfg.threshold)
                    if mcfg.fill_holes:
                        keep_px = fill_holes(keep_px)
                    keep_px = keep_px * allowed
                    new_pixel_mask = soften(keep_px, allowed, mcfg.soft_border)
                    new_lat_mask = latent_mask(new_pixel_mask, gen.downsample,
                                               mcfg.dilation) * lat_allowed
                z_new = z0 + new_lat_mask * (z_new - z0)

            keep = ~done  # frozen examples keep their latent, optimizer state and masks
            z.copy_(select(keep, z_new, z_before))
            state = optimizer.state[z]
            for name, new in _batched_state(optimizer, z).items():
                old = state_before.get(name, torch.zeros_like(new))
                state[name].copy_(select(keep, new, old))
            pixel_mask = select(keep, new_pixel_mask, pixel_mask)
            lat_mask = select(keep, new_lat_mask, lat_mask)
        step += 1
        if step_times is not None:
            _sync(x.device)
            step_times.append(time.perf_counter() - start)

    with torch.no_grad():  # the final re-check of the examples still running
        z_final = z.detach()
        decoded = gen.decode(z_final)
        x_cf = search.compose(decoded, pixel_mask)
        logits = search.clf(search.judged(x_cf))
        p = search.probability(logits)
        reached = search.reached(logits)
        finite = all_finite(x_cf, logits, z_final)
        running = ~done
        success = success | (running & finite & reached)
        nonfinite = nonfinite | (running & ~finite)
        steps_used = torch.where(running, torch.full_like(steps_used, step), steps_used)
        use_best = ~success & (best_p > torch.where(finite, p, torch.full_like(p, -math.inf)))
        z_out = select(use_best, best_z, z_final)
        mask = select(use_best, best_mask, pixel_mask)
        if bool(use_best.any()):
            decoded = gen.decode(z_out)
        x_cf = search.compose(decoded, mask)
        if bool(use_best.any()):
            logits = search.clf(search.judged(x_cf))
        p = search.probability(logits)
        bad = nonfinite | ~all_finite(x_cf, logits)
        image = select(bad, x, x_cf)
    return dict(image=image, latent=z_out, mask=mask, logits=logits,
                prob_after=torch.where(bad, torch.full_like(p, math.nan), p),
                success=success & ~bad & valid, nonfinite=bad & valid, steps=steps_used)


def _nchw(a: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.transpose(a, (0, 3, 1, 2)))).to(device)


def _nhwc(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    a = (t.float() if t.is_floating_point() else t).numpy()
    return np.transpose(a, (0, 2, 3, 1)) if a.ndim == 4 else a


def explain_batch_torch(generator: TorchGenerator, classifier: TorchClassifier, images: np.ndarray,
                        targets: Sequence[int] | np.ndarray, settings: SearchSettings, *,
                        kind: str = "class", regions: np.ndarray | None = None,
                        valid: np.ndarray | None = None, device: str | torch.device = "cpu",
                        memory_format: torch.memory_format = torch.contiguous_format,
                        step_times: list | None = None) -> dict[str, np.ndarray]:
    """All K attempts of the search for one batch, in PyTorch.

    Args:
      generator, classifier: the torch models (on ``device``).
      images: (B, H, W, C) float in [0, 1] (NHWC like sce_jax; converted to NCHW here).
      targets: (B,) the class to reach ("class"), to leave ("other"; -1: the prediction), or
        the attribute to flip ("flip").
      settings: the same static settings sce_jax runs on (``settings_from_config(config)``).
      regions: optional (B, H, W, 1) masks, 1 where the image may change.
      valid: optional (B,) bool, False for padding examples (they do no work).
      memory_format: of the images (``torch.channels_last`` runs convolutions NHWC in memory,
        usually faster; convert the models with ``.to(memory_format=...)`` as well).
      step_times: if given, the wall time of every step is appended to it (seconds).

    Returns:
      numpy arrays in sce_jax's layout: per attempt (B, K, ...) ``image``, ``latent``, ``mask``
      (NHWC), ``success``, ``nonfinite``, ``steps``, ``prob_after``, ``prediction_after``; per
      example ``target``, ``prediction``, ``prob_before``.
    """
    if settings.prior.active:
        raise NotImplementedError("the PyTorch reference has no generative prior: benchmark "
                                  "the search without one (search.prior.enabled = False)")
    if kind not in KINDS:
        raise ValueError(KINDS.problem(kind))
    images = np.asarray(images, np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must be (B, H, W, C), got shape {images.shape}")
    b, h, w, _ = images.shape
    if regions is None:
        regions = np.ones((b, h, w, 1), np.float32)
    regions = np.asarray(regions, np.float32)
    valid = np.ones((b,), bool) if valid is None else np.asarray(valid, bool)
    x = _nchw(images, device).contiguous(memory_format=memory_format)
    noise = torch.Generator(device=device).manual_seed(settings.seed)
    with torch.no_grad():
        z0 = generator.encode(x)
        decoded0 = generator.decode(z0)
        logits0 = classifier(x)
    prediction = logits0.argmax(-1)
    target = torch.as_tensor(np.asarray(targets, np.int64).reshape(-1), device=x.device)
    if kind == "other":
        target = torch.where(target < 0, prediction, target)
    attribute_on = _take(logits0, target.clamp(min=0)) > 0
    value = torch.where(attribute_on, 0.0, 1.0).to(x.dtype)
    search = BatchSearch(generator, classifier, settings, kind, x, z0, decoded0, target, value,
                         noise)
    region_t = _nchw(regions, device)
    valid_t = torch.as_tensor(valid, device=x.device)

    locked = torch.zeros_like(region_t)
    attempts = []
    for _ in range(settings.attempts):
        allowed = region_t * (1.0 - locked)
        res = _run_attempt(search, allowed, valid_t, step_times)
        with torch.no_grad():
            change = change_map(res["image"], x)
            significant = threshold_mask(change, blur_sigma=settings.mask.blur_sigma,
                                         threshold=settings.mask.threshold) * (change > 0)
            changed = dilate(significant, settings.mask.lock_margin)
            if settings.lock:
                locked = torch.maximum(locked, changed * _rows(res["success"], changed).to(x.dtype))
        res["prediction_after"] = res["logits"].argmax(-1)
        attempts.append({k: _nhwc(v) for k, v in res.items() if k != "logits"})
    out = {k: np.stack([a[k] for a in attempts], axis=1) for k in attempts[0]}
    out.update(target=target.cpu().numpy(), prediction=prediction.cpu().numpy(),
               prob_before=search.probability(logits0).cpu().numpy())
    return out
