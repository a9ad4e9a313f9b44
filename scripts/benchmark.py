"""Throughput of sce_jax against a PyTorch implementation of the same counterfactual search.

    python scripts/benchmark.py --quick                          # < 10 minutes on a 2-core CPU
    python scripts/benchmark.py --settings=demo,sd64_b8_pixel_n8 --steps=5 --bf16
    python scripts/benchmark.py --list                           # the settings table

Each setting (benchmarks/settings.py) runs the same search, on the same models and weights,
with the same steps, noise samples and batch, in sce_jax (``Explainer``: one compiled program)
and in PyTorch (benchmarks/torch_search.py: diffusers' AutoencoderKL, a torch classifier, a
Python step loop). Results go to benchmarks/results/<machine>-<date>.json and .md.

How it is measured (the same way on both sides):

- success is made impossible (goal probability 2), so every example takes every step, and one
  attempt is timed (each of the K attempts costs the same per step; a counterfactual is one
  attempt's result);
- a first call (compilation for sce_jax, warm-up for PyTorch), then ``--repeats`` calls of the
  search with ``--steps`` steps; each step is timed inside the loop (sce_jax: the host
  progress callback after every step, ``progress_every = 1``; PyTorch: its Python loop);
  step time = the median step, fixed time = median call - steps x step (encoding, ``D(z0)``,
  the final re-check);
- counterfactuals per second are EXTRAPOLATED to the setting's step budget (100):
  ``B / (fixed + budget x step)`` -- the full-budget (worst) case; real searches stop as soon
  as every example of the batch has succeeded;
- compile time = first call - median call (for PyTorch: its first-call overhead);
- peak memory, above what was in use once the models were built, during the steady calls
  (after compilation; the first call's peak is in the JSON): host RSS on CPU (Linux ``VmHWM``,
  reset through ``/proc/self/clear_refs``; for sce_jax it includes the compiler's heap that
  the allocator keeps), the allocators' peaks on GPU; and XLA's own count of the compiled
  search's temporary buffers (``compiled.memory_analysis()``);
- FLOPs per step: XLA's cost analysis of one compiled search step (the smoothed gradient: a
  decoder forward and VJP per decoder pass, N classifier forward/backward passes); achieved
  FLOP/s = FLOPs per step / step time, for both implementations (same algorithm, same FLOPs),
  against a measured peak (a large float32 matmul in XLA and in PyTorch; on GPU or with --bf16
  also a bfloat16 one in each, XLA's accumulating in float32);
- with ``--bf16``, both implementations run again with the autoencoder in bfloat16 (sce_jax:
  ``generator.dtype``, on CPU through ``sce_jax.models.bf16_conv``; PyTorch: the VAE cast to
  bfloat16, latents in and images out in float32), the classifier staying float32.

Each implementation of each setting runs in its own process (``--isolate``), so that memory
peaks and caches do not carry over from one to the other. Other processes on the machine
slow both sides at random: every figure is a median, and the load average is reported.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # leave GPU memory to torch too

import dataclasses  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any, Callable  # noqa: E402

from absl import app, flags, logging  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a checkout without installing

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import machine, timing  # noqa: E402
from benchmarks import settings as bench_settings  # noqa: E402

flags.DEFINE_list("settings", [], "Settings to run (see --list); default: the --quick preset.")
flags.DEFINE_bool("quick", False, "Run the quick preset (demo or demo_random, sd64_b1_pixel_n8, "
                  "sd64_b1_latent_n1).")
flags.DEFINE_integer("steps", 3, "Steps per timed search call (>= 2); throughput is "
                     "extrapolated from the step time to the setting's budget.")
flags.DEFINE_integer("repeats", 2, "Timed calls after the first; medians are reported.")
flags.DEFINE_bool("prior", False, "Also time sce_jax with the demo's generative prior in the "
                  "loop (search.prior on; the demo setting only): the prior's step cost.")
flags.DEFINE_bool("bf16", False, "Also time both implementations with the autoencoder "
                  "computing in bfloat16 (the classifier stays float32).")
flags.DEFINE_integer("threads", 0, "torch.set_num_threads (0: every core this process may use).")
flags.DEFINE_bool("torch_channels_last", False, "Run PyTorch in the channels_last memory format "
                  "instead of its default contiguous NCHW (on a 2-core CPU: faster for the SD "
                  "models, much slower for the demo's).")
flags.DEFINE_bool("isolate", True, "Run each implementation of each setting in its own process.")
flags.DEFINE_string("out_dir", os.path.join(ROOT, "benchmarks", "results"), "Where results go.")
flags.DEFINE_bool("breakdown", False, "Also time a step's parts (decoder forward / VJP, "
                  "classifier forward+backward, sce_jax's step jitted alone) and count the "
                  "convolutions XLA:CPU compiled as plain loops.")
flags.DEFINE_bool("list", False, "Print the settings table and exit.")
flags.DEFINE_string("worker_out", "", "Internal: measure --worker_impl of the one setting in "
                    "this process and write the record as JSON to this path.")
flags.DEFINE_string("worker_impl", "", "Internal: sce_jax, torch, sce_jax_bf16 or torch_bf16.")
FLAGS = flags.FLAGS

MB = 2.0 ** -20
UNREACHABLE_GOAL = 2.0  # probability >= 2 never happens: every example runs every step
                       # (set on the validated settings: a config refuses goals above 1)
DEMO_DIR = os.path.join(ROOT, "sce_jax", "assets", "fashion_mnist")


# ------------------------------------------------------------------------------ machine
cores, cpu_model = machine.cores, machine.cpu_model


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    import diffusers
    import flax
    import torch

    device = jax.devices()[0]
    info = {"cpu": cpu_model(), "cores": cores(), "jax_backend": jax.default_backend(),
            "jax_device": device.device_kind, "python": platform.python_version(),
            "jax": jax.__version__, "flax": flax.__version__, "torch": torch.__version__,
            "diffusers": diffusers.__version__, "torch_threads": torch_threads(),
            "torch_memory_format": "channels_last" if FLAGS.torch_channels_last else "contiguous"}
    if torch.cuda.is_available():
        info["torch_device"] = torch.cuda.get_device_name(0)
    return info


def machine_slug(info: dict[str, Any]) -> str:
    name = info["jax_device"] if info["jax_backend"] != "cpu" else f"{info['cpu']}-{info['cores']}c"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def torch_threads() -> int:
    return FLAGS.threads or cores()


def torch_format():
    import torch
    return torch.channels_last if FLAGS.torch_channels_last else torch.contiguous_format


def matmul_peak(dtype, n: int, repeats: int = 5) -> float:
    """FLOP/s of an ``n x n`` jitted matmul: ``2 n^3 / median time``. bfloat16 operands
    accumulate in float32 (``preferred_element_type``), as the bfloat16 convolutions do: a
    plain bfloat16 matmul is upcast to float32 by XLA:CPU."""
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    f = jax.jit(lambda x, y: jax.lax.dot(x, y, preferred_element_type=jnp.float32))
    jax.block_until_ready(f(a, b))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(f(a, b))
        times.append(time.perf_counter() - start)
    return 2.0 * n ** 3 / statistics.median(times)


def _torch_bfloat16():
    import torch
    return torch.bfloat16


def torch_matmul_peak(n: int, repeats: int = 5, dtype=None) -> float:
    """FLOP/s of an ``n x n`` ``torch.mm`` (float32 unless ``dtype``) on PyTorch's device (its
    BLAS / oneDNN / cuBLAS)."""
    import torch

    torch.set_num_threads(torch_threads())
    device = _torch_device()
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.mm(a, b)
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        sync()
        times.append(time.perf_counter() - start)
    return 2.0 * n ** 3 / statistics.median(times)


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


# ------------------------------------------------------------------------------- memory
class MemoryWatch:
    """Peak memory above a baseline (taken when the watch is made, after the models are built).

    CPU: host RSS, from Linux's ``VmHWM`` / ``VmRSS`` (the high-water mark is reset through
    ``/proc/self/clear_refs``). GPU: ``torch.cuda.max_memory_allocated`` (resettable) or JAX's
    ``peak_bytes_in_use`` (a whole-process peak: each implementation runs in its own process).
    What the allocators keep between calls counts: it is memory the search needs.
    """

    def __init__(self, framework: str):
        self.framework = framework
        self.gpu = (_torch_device().type == "cuda" if framework == "torch"
                    else jax.default_backend() != "cpu")
        self.baseline = self._current()

    _status = staticmethod(machine.process_memory)

    def _current(self) -> int | None:
        if self.gpu and self.framework == "torch":
            import torch
            torch.cuda.synchronize()
            return torch.cuda.memory_allocated()
        if self.gpu:
            return (jax.local_devices()[0].memory_stats() or {}).get("bytes_in_use")
        return self._status("VmRSS")

    def reset_peak(self) -> None:
        if self.gpu and self.framework == "torch":
            import torch
            torch.cuda.reset_peak_memory_stats()
        elif not self.gpu:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")  # VmHWM := VmRSS
            except OSError:
                pass

    def peak(self) -> int | None:
        """Bytes of the peak since the last reset, above the baseline."""
        if self.baseline is None:
            return None
        if self.gpu and self.framework == "torch":
            import torch
            value = torch.cuda.max_memory_allocated()
        elif self.gpu:
            value = (jax.local_devices()[0].memory_stats() or {}).get("peak_bytes_in_use")
        else:
            value = self._status("VmHWM")
        return None if value is None else value - self.baseline


# ------------------------------------------------------------------------------- models
@dataclasses.dataclass
class ModelPair:
    """The same generator and classifier (same weights) in both frameworks, and the inputs."""

    jax_generator: Any
    jax_classifier: Any
    torch_generator: Any
    torch_classifier: Any
    images: np.ndarray         # (B, H, W, C) in [0, 1]
    targets: np.ndarray        # (B,)
    kind: str
    autoencoder_state: dict    # PyTorch-layout weights, to rebuild the port in bfloat16
    autoencoder_config: Any


def smooth_images(batch: int, size: int, channels: int, seed: int = 0) -> np.ndarray:
    """Random images with structure at several scales, (B, size, size, C) in [0, 1]."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0.0, 1.0, (batch, 4, 4, channels)).astype(np.float32)
    fine = rng.uniform(-0.1, 0.1, (batch, size, size, channels)).astype(np.float32)
    up = np.asarray(jax.image.resize(coarse, (batch, size, size, channels), "linear"))
    return np.clip(up + fine, 0.0, 1.0)


def _torch_device():
    import torch
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _port_autoencoder(state: dict, config, dtype=jnp.float32):
    from flax import nnx

    from sce_jax.models.autoencoder_kl import AutoencoderKL
    from sce_jax.weights.strict import load_torch_state_dict_into
    port = nnx.eval_shape(lambda: AutoencoderKL(config, rngs=nnx.Rngs(0), dtype=dtype))
    return load_torch_state_dict_into(port, state, what="the benchmark autoencoder")


def _numpy_state(module) -> dict:
    return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}


def sd_pair(setting) -> ModelPair:
    """SD-architecture VAE + ResNet-50, random weights (torch's initialisers), both frameworks."""
    import diffusers
    import torch
    import torchvision
    from flax import nnx

    from benchmarks.torch_search import TorchClassifier, TorchGenerator
    from sce_jax import Classifier, Generator
    from sce_jax.classifier import IMAGENET
    from sce_jax.models.autoencoder_kl import AutoencoderKLConfig
    from sce_jax.models.resnet import resnet50
    from sce_jax.weights.strict import load_torch_state_dict_into

    device = _torch_device()
    torch.manual_seed(0)
    ae_config = dict(bench_settings.SD_VAE, sample_size=setting.image_size)
    vae = diffusers.AutoencoderKL(**ae_config).eval()
    net = torchvision.models.resnet50(weights=None, num_classes=1000).eval()
    vae_state, net_state = _numpy_state(vae), _numpy_state(net)
    config = AutoencoderKLConfig(**ae_config)
    port = _port_autoencoder(vae_state, config)
    jax_net = nnx.eval_shape(lambda: resnet50(num_classes=1000))
    load_torch_state_dict_into(jax_net, net_state, what="ResNet-50")
    images = smooth_images(setting.batch, setting.image_size, 3)
    return ModelPair(
        Generator.from_autoencoder(port), Classifier.from_nnx(jax_net, preprocessing=IMAGENET),
        TorchGenerator.from_diffusers(vae.to(device)),
        TorchClassifier.from_preprocessing(net.to(device), IMAGENET),
        images, np.full((setting.batch,), 1, np.int32), "class", vae_state, config)


def demo_pair(setting) -> ModelPair:
    """The shipped demo models (or the same architectures with random weights)."""
    import diffusers
    import torch
    from flax import nnx

    from benchmarks.torch_search import TorchClassifier, TorchGenerator, TorchSmallCNN
    from sce_jax import Classifier, Generator, Preprocessing
    from sce_jax.models.autoencoder_kl import AutoencoderKL, AutoencoderKLConfig
    from sce_jax.models.small_cnn import SmallCNN, SmallCNNConfig
    from sce_jax.weights.checkpoint import load_model
    from sce_jax.weights.torch_layout import nnx_to_torch_state_dict

    device = _torch_device()
    if setting.models == "demo":
        port = load_model(os.path.join(DEMO_DIR, "autoencoder"), expect=AutoencoderKL)
        classifier = load_model(os.path.join(DEMO_DIR, "classifier"), expect=SmallCNN)
        vae = diffusers.AutoencoderKL.from_pretrained(
            os.path.join(DEMO_DIR, "autoencoder_diffusers"))
        subset = os.path.join(DEMO_DIR, "test_subset.npz")
        images = (np.load(subset)["images"] if os.path.exists(subset) else None)
    else:
        torch.manual_seed(0)
        vae = diffusers.AutoencoderKL(**bench_settings.DEMO_VAE)
        port = _port_autoencoder(_numpy_state(vae), AutoencoderKLConfig(**bench_settings.DEMO_VAE))
        classifier = SmallCNN(SmallCNNConfig(in_channels=1,
                                             num_classes=bench_settings.DEMO_NUM_CLASSES,
                                             widths=bench_settings.DEMO_CLASSIFIER_WIDTHS),
                              rngs=nnx.Rngs(0))
        images = None
    if images is None or len(images) < setting.batch:
        images = smooth_images(setting.batch, setting.image_size, 1)
    images = np.asarray(images[:setting.batch], np.float32)
    if images.ndim == 3:
        images = images[..., None]
    if images.max() > 1.0:
        images = images / 255.0
    cfg = classifier.config
    net = TorchSmallCNN(cfg.in_channels, cfg.num_classes, cfg.widths, cfg.activation)
    net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in
                         nnx_to_torch_state_dict(classifier).items()})
    plain = Preprocessing()
    return ModelPair(
        Generator.from_autoencoder(port), Classifier.from_nnx(classifier, preprocessing=plain),
        TorchGenerator.from_diffusers(vae.eval().to(device)),
        TorchClassifier.from_preprocessing(net.to(device), plain),
        images, np.full((setting.batch,), -1, np.int32), "other", _numpy_state(vae), port.config)


def demo_missing() -> str | None:
    """Why the shipped demo cannot run, or None."""
    needed = ("autoencoder", "classifier", "autoencoder_diffusers")
    missing = [n for n in needed if not os.path.exists(os.path.join(DEMO_DIR, n))]
    if missing:
        return (f"demo assets missing in {DEMO_DIR} ({', '.join(missing)}); make them with "
                "`python scripts/train_demo_models.py --demo=fashion_mnist`, or run the setting "
                "demo_random (same architectures, random weights)")
    return None


# ------------------------------------------------------------------------------- timing
TIMED_ATTEMPTS = 1  # every attempt costs the same per step: one is timed, cf/s is per attempt


def search_config(setting, steps: int):
    """The setting's search config, ``steps`` per attempt, one attempt, success impossible."""
    import sce_jax
    c = sce_jax.default_search_config()
    c.steps = steps
    c.attempts = TIMED_ATTEMPTS
    c.smoothing.update(setting.search_overrides()["smoothing"])
    return c


def search_settings(config):
    """The validated settings of a benchmark config, with success made impossible."""
    from sce_jax.search.config import settings_from_config
    return dataclasses.replace(settings_from_config(config), goal_probability=UNREACHABLE_GOAL)


def _summarise(first: float, calls: list[float], step_times: list[float], steps: int, setting,
               **extra) -> dict:
    """Step time = median of the steps timed inside the loops; fixed = call - steps x step;
    counterfactuals per second extrapolated to the step budget: B / (fixed + budget x step)."""
    call = statistics.median(calls)
    step = statistics.median(step_times)
    fixed = call - steps * step
    per_attempt = fixed + setting.steps_budget * step
    return dict(first_call_s=first, compile_s=first - call, call_s=call, calls_s=calls,
                step_s=step, step_s_min=min(step_times), step_s_max=max(step_times),
                steps_timed=len(step_times), fixed_s=fixed,
                cf_per_s=setting.batch / per_attempt if per_attempt > 0 else None, **extra)


def measure_jax(pair: ModelPair, setting, steps: int, repeats: int, generator=None,
                prior=None) -> dict:
    """Times sce_jax's Explainer: whole calls, and each step through the progress callback
    (with the generative ``prior`` in the loop when one is given)."""
    from sce_jax import Explainer

    stamps: list[tuple[int, float]] = []

    def progress(attempt, step, num_done, num_valid):  # runs on the host after every step
        stamps.append((int(step), time.perf_counter()))

    config = search_config(setting, steps)
    config.progress_every = 1
    config.prior.enabled = prior is not None
    explainer = Explainer(generator or pair.jax_generator, pair.jax_classifier,
                          search_settings(config), progress=progress, prior=prior)
    batch, _ = explainer.prepare_batch(pair.images, pair.targets, kind=pair.kind)

    def call() -> float:
        stamps.clear()
        start = time.perf_counter()
        jax.block_until_ready(explainer.explain_arrays(batch, kind=pair.kind))
        return time.perf_counter() - start

    watch = MemoryWatch("jax")
    watch.reset_peak()
    first = call()
    first_peak = watch.peak()
    watch.reset_peak()
    calls, step_times = [], []
    for _ in range(repeats):
        calls.append(call())
        ordered = sorted(stamps, key=lambda s: s[1])
        step_times += [t1 - t0 for (s0, t0), (s1, t1) in zip(ordered, ordered[1:]) if s1 == s0 + 1]
    if not step_times:
        raise RuntimeError("the progress callback did not time any step; use --steps >= 2")
    peak = watch.peak()
    # XLA's own accounting of the compiled search (the executable is cached: no recompilation).
    memory = explainer.compile(batch, kind=pair.kind).memory_analysis()
    return _summarise(first, calls, step_times, steps, setting, peak_bytes=peak,
                      first_call_peak_bytes=first_peak,
                      xla_temp_bytes=getattr(memory, "temp_size_in_bytes", None),
                      xla_argument_bytes=getattr(memory, "argument_size_in_bytes", None))


def measure_torch(pair: ModelPair, setting, steps: int, repeats: int, generator=None) -> dict:
    """Times the PyTorch search: whole calls, and each step inside its Python loop (with
    ``pair.torch_generator`` unless ``generator``)."""
    from benchmarks.torch_search import explain_batch_torch

    device = _torch_device()
    settings = search_settings(search_config(setting, steps))
    step_times: list[float] = []

    def call(record: bool) -> float:
        start = time.perf_counter()
        explain_batch_torch(generator or pair.torch_generator, pair.torch_classifier, pair.images, pair.targets,
                            settings, kind=pair.kind, device=device, memory_format=torch_format(),
                            step_times=step_times if record else None)
        return time.perf_counter() - start

    watch = MemoryWatch("torch")
    watch.reset_peak()
    first = call(False)
    first_peak = watch.peak()
    watch.reset_peak()
    calls = [call(True) for _ in range(repeats)]
    return _summarise(first, calls, step_times, steps, setting, peak_bytes=watch.peak(),
                      first_call_peak_bytes=first_peak)


def _jax_step(pair: ModelPair, settings):
    """One search step's smoothed gradient (``objective_gradient``), jitted, over parameters."""
    from sce_jax.search.smoothing import objective_gradient

    gen, clf = pair.jax_generator, pair.jax_classifier

    def step(gen_params, cls_params, z, inputs):
        return objective_gradient(z, 0, inputs, decode=lambda l: gen.decode_fn(gen_params, l),
                                  logits_fn=lambda x: clf.logits_fn(cls_params, x),
                                  settings=settings, kind=pair.kind)
    return jax.jit(step)


def _step_inputs(pair: ModelPair, concrete: bool):
    """``(z, StepInputs)`` for one step at ``z0``: arrays, or shapes only."""
    from sce_jax.search.smoothing import StepInputs

    gen = pair.jax_generator
    b, h, w, c = pair.images.shape
    keys = jax.vmap(jax.random.key)(jnp.arange(b))
    if not concrete:
        f32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
        z = f32(b, *gen.latent_shape((h, w)))
        return z, StepInputs(f32(b, h, w, c), z, f32(b, h, w, c), f32(b, h, w, 1),
                             jax.ShapeDtypeStruct((b,), jnp.int32), f32(b),
                             jax.eval_shape(lambda: keys))
    x = jnp.asarray(pair.images)
    z0 = jax.jit(gen.encode_fn)(gen.params, x)
    decoded0 = jax.jit(gen.decode_fn)(gen.params, z0)
    return z0, StepInputs(x, z0, decoded0, jnp.ones((b, h, w, 1)), jnp.ones((b,), jnp.int32),
                          jnp.zeros((b,)), keys)


def step_flops(pair: ModelPair, setting) -> float | None:
    """FLOPs of one search step (smoothed gradient, all N samples in one pass) per XLA."""

    config = search_config(setting, 1)
    config.smoothing.chunk_size = 0  # the cost analysis counts a loop body once: no loop
    z, inputs = _step_inputs(pair, concrete=False)
    step = _jax_step(pair, search_settings(config))
    lowered = step.lower(pair.jax_generator.params, pair.jax_classifier.params, z, inputs)
    cost = lowered.compile().cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    return float(cost["flops"]) if cost and "flops" in cost else None


def _median_ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # compile / warm up
    return timing.median_ms(fn, repeats)


def _pass_sizes(setting) -> tuple[int, int]:
    """Images per decoder pass and per classifier pass of one step (one chunk of samples)."""
    samples = setting.chunk_size or setting.num_samples
    decoder = setting.batch * (samples if setting.space == "latent" else 1)
    return decoder, setting.batch * samples


def count_loop_nest_convolutions(hlo_text: str) -> tuple[int, int]:
    """(convolutions, those XLA:CPU emitted as its own loop nests rather than library calls).

    A heuristic on the optimised HLO text of XLA:CPU: a convolution it lowers itself carries
    the ``outer_dimension_partitions`` backend config of its parallel loop emitter.
    """
    convs = [line for line in hlo_text.splitlines() if " convolution(" in line]
    return len(convs), sum("outer_dimension_partitions" in line for line in convs)


BREAKDOWN_REPEATS = 3  # at least: the parts are short, and other processes add spikes


def breakdown_jax(pair: ModelPair, setting, repeats: int) -> dict:
    """Where an sce_jax step's time goes: its parts jitted alone, the step alone, and how
    XLA compiled the convolutions of the whole search (inside its ``while`` loop)."""
    from sce_jax import Explainer

    gen, clf = pair.jax_generator, pair.jax_classifier
    dec_batch, clf_batch = _pass_sizes(setting)
    z0, inputs = _step_inputs(pair, concrete=True)
    z = jnp.tile(z0, (dec_batch // z0.shape[0], 1, 1, 1))
    x = jnp.tile(inputs.x, (clf_batch // z0.shape[0], 1, 1, 1))
    decode = jax.jit(gen.decode_fn)
    decode_vjp = jax.jit(lambda p, z_: jax.vjp(lambda l: gen.decode_fn(p, l), z_)[1](
        jnp.ones_like(gen.decode_fn(p, z_)))[0])
    clf_grad = jax.jit(lambda p, x_: jax.grad(lambda i: jnp.sum(clf.logits_fn(p, i)[:, 0]))(x_))
    settings = search_settings(search_config(setting, 1))
    step = _jax_step(pair, settings)
    ready = jax.block_until_ready
    out = {
        "decoder_forward_ms": _median_ms(lambda: ready(decode(gen.params, z)), repeats),
        "decoder_forward_vjp_ms": _median_ms(lambda: ready(decode_vjp(gen.params, z)), repeats),
        "classifier_forward_backward_ms": _median_ms(lambda: ready(clf_grad(clf.params, x)),
                                                     repeats),
        "step_alone_ms": _median_ms(lambda: ready(step(gen.params, clf.params, z0, inputs)),
                                    repeats),
        "decoder_images": dec_batch, "classifier_images": clf_batch,
    }
    if jax.default_backend() == "cpu":
        explainer = Explainer(gen, clf, search_settings(search_config(setting, 2)))
        batch, _ = explainer.prepare_batch(pair.images, pair.targets, kind=pair.kind)
        search = explainer.compiled(pair.kind).lower(explainer.search_params, batch)
        search_hlo = search.compile().as_text()
        step_hlo = step.lower(gen.params, clf.params, z0, inputs).compile().as_text()
        out["search_convolutions"], out["search_loop_nest_convolutions"] = \
            count_loop_nest_convolutions(search_hlo)
        out["step_alone_convolutions"], out["step_alone_loop_nest_convolutions"] = \
            count_loop_nest_convolutions(step_hlo)
    return out


def breakdown_torch(pair: ModelPair, setting, repeats: int) -> dict:
    """The same parts in PyTorch."""
    import torch

    gen, clf = pair.torch_generator, pair.torch_classifier
    device = _torch_device()
    dec_batch, clf_batch = _pass_sizes(setting)
    x1 = torch.from_numpy(np.ascontiguousarray(pair.images.transpose(0, 3, 1, 2))).to(device)
    with torch.no_grad():
        z1 = gen.encode(x1)
    z = z1.repeat(dec_batch // z1.shape[0], 1, 1, 1).contiguous(memory_format=torch_format())
    x = x1.repeat(clf_batch // x1.shape[0], 1, 1, 1).contiguous(memory_format=torch_format())
    sync = (torch.cuda.synchronize if device.type == "cuda" else (lambda: None))

    def decoder_forward():
        with torch.no_grad():
            gen.decode(z)
        sync()

    def decoder_forward_vjp():
        leaf = z.clone().requires_grad_(True)
        gen.decode(leaf).sum().backward()
        sync()

    def classifier_forward_backward():
        leaf = x.clone().requires_grad_(True)
        clf(leaf)[:, 0].sum().backward()
        sync()

    return {"decoder_forward_ms": _median_ms(decoder_forward, repeats),
            "decoder_forward_vjp_ms": _median_ms(decoder_forward_vjp, repeats),
            "classifier_forward_backward_ms": _median_ms(classifier_forward_backward, repeats),
            "decoder_images": dec_batch, "classifier_images": clf_batch}


IMPLEMENTATIONS = ("sce_jax", "torch", "sce_jax_bf16", "torch_bf16", "sce_jax_prior")


def measure_setting(setting, impls: tuple[str, ...], steps: int, repeats: int,
                    breakdown: bool = False) -> dict:
    """Measures the named implementations of one setting in this process."""
    import torch

    record: dict[str, Any] = {"setting": dataclasses.asdict(setting)}
    if setting.models == "demo" and demo_missing():
        record["skipped"] = demo_missing()
        return record
    torch.set_num_threads(torch_threads())
    if jax.default_backend() != "cpu":
        torch.backends.cuda.matmul.allow_tf32 = True  # as JAX's default float32 precision on GPU
        torch.backends.cudnn.benchmark = True
    pair = sd_pair(setting) if setting.models == "sd" else demo_pair(setting)
    pair.torch_generator.vae.to(memory_format=torch_format())
    pair.torch_classifier.network.to(memory_format=torch_format())
    for impl in impls:
        logging.info("%s: timing %s", setting.name, impl)
        if impl == "sce_jax":
            record[impl] = measure_jax(pair, setting, steps, repeats)
            logging.info("%s: XLA cost analysis of one step", setting.name)
            record["flops_per_step"] = step_flops(pair, setting)
            if breakdown:
                logging.info("%s: sce_jax breakdown", setting.name)
                record.setdefault("breakdown", {})[impl] = breakdown_jax(
                    pair, setting, max(repeats, BREAKDOWN_REPEATS))
        elif impl == "torch":
            record[impl] = measure_torch(pair, setting, steps, repeats)
            if breakdown:
                logging.info("%s: PyTorch breakdown", setting.name)
                record.setdefault("breakdown", {})[impl] = breakdown_torch(
                    pair, setting, max(repeats, BREAKDOWN_REPEATS))
        elif impl == "sce_jax_bf16":
            from sce_jax import Generator
            port = _port_autoencoder(pair.autoencoder_state, pair.autoencoder_config, jnp.bfloat16)
            record[impl] = measure_jax(pair, setting, steps, repeats,
                                       generator=Generator.from_autoencoder(port))
        elif impl == "sce_jax_prior":
            if setting.models != "demo":
                record[impl] = {"skipped": "the prior is timed on the shipped demo only"}
                continue
            from sce_jax.loaders import load_prior
            from sce_jax.run_config import base_run_config
            prior_config = base_run_config().prior
            prior_config.checkpoint = os.path.join(DEMO_DIR, "prior")
            prior = load_prior(prior_config)
            record[impl] = measure_jax(pair, setting, steps, repeats, prior=prior)
        elif impl == "torch_bf16":
            record[impl] = measure_torch(pair, setting, steps, repeats,
                                         generator=pair.torch_generator.in_bfloat16())
        else:
            raise ValueError(f"unknown implementation {impl!r}; one of {IMPLEMENTATIONS}")
    return record


def finish_record(record: dict) -> dict:
    """Adds achieved FLOP/s and the sce_jax / PyTorch throughput ratio."""
    flops = record.get("flops_per_step")
    for impl in IMPLEMENTATIONS:
        if impl in record and flops and record[impl].get("step_s", 0) > 0:
            record[impl]["achieved_flops_per_s"] = flops / record[impl]["step_s"]
    if "sce_jax" in record and "torch" in record:
        jax_rate, torch_rate = record["sce_jax"]["cf_per_s"], record["torch"]["cf_per_s"]
        record["speedup"] = jax_rate / torch_rate if jax_rate and torch_rate else None
    for jax_impl, torch_impl, key in (("sce_jax_bf16", "torch", "speedup_bf16_vs_torch"),
                                      ("sce_jax_bf16", "torch_bf16", "speedup_bf16_vs_torch_bf16")):
        if jax_impl in record and torch_impl in record:
            a, b = record[jax_impl]["cf_per_s"], record[torch_impl]["cf_per_s"]
            record[key] = a / b if a and b else None
    if "step_s" in record.get("sce_jax_prior", {}) and "sce_jax" in record:
        record["prior_step_ratio"] = record["sce_jax_prior"]["step_s"] / record["sce_jax"]["step_s"]
    return record


# ------------------------------------------------------------------------------ reports
def _fmt(value, spec: str, scale: float = 1.0) -> str:
    return "n/a" if value is None else format(value * scale, spec)


def markdown(report: dict) -> str:
    """The results as a Markdown page: what was measured where, and one row per setting."""
    m = report["machine"]
    peak = report["peak_flops_per_s"]
    torch_device = f"; PyTorch on {m['torch_device']}" if "torch_device" in m else ""
    lines = [
        f"# sce_jax vs PyTorch: counterfactual search throughput ({report['date']})", "",
        f"- machine: {m['cpu']}, {m['cores']} cores; JAX backend {m['jax_backend']} "
        f"({m['jax_device']}){torch_device}",
        f"- versions: python {m['python']}, jax {m['jax']}, flax {m['flax']}, torch {m['torch']} "
        f"({m['torch_threads']} threads, {m['torch_memory_format']} memory format), "
        f"diffusers {m['diffusers']}",
        "- measured matmul peak (n x n matmuls, n = 2048 on CPU, 8192 on GPU, in XLA and in "
        "PyTorch; '% of peak' below is of the larger float32 one): "
        + ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in peak.items()),
        f"- load average (1, 5, 15 min) before / after: {report['load_before']} / "
        f"{report['load_after']}; other processes shared the machine, so every time is a median",
        f"- method: one attempt timed, {report['steps']} steps per call, {report['repeats']} calls "
        "after a first (compiling / warm-up) call; step = median step timed inside the loop; "
        "fixed = call - steps x step. **cf/s is extrapolated** to the step budget: "
        "B / (fixed + budget x step), every example running the whole budget (success disabled; "
        "real searches stop earlier). A counterfactual is one attempt's result (K attempts cost "
        "K times as much).",
        "",
    ]
    bf16 = any("sce_jax_bf16" in r for r in report["results"])
    head = ["setting", "B", "smoothing", "budget", "sce_jax cf/s", "PyTorch cf/s",
            "sce_jax / PyTorch", "step ms (sce_jax / PyTorch)", "fixed s (sce_jax / PyTorch)",
            "sce_jax compile s", "peak MB (sce_jax / PyTorch)", "XLA temp MB", "GFLOP/step",
            "GFLOP/s (sce_jax / PyTorch)", "% of f32 peak (sce_jax / PyTorch)"]
    if bf16:
        head += ["bf16-VAE cf/s (sce_jax / PyTorch)", "bf16-VAE step ms (sce_jax / PyTorch)",
                 "sce_jax bf16 / PyTorch f32", "sce_jax bf16 / PyTorch bf16",
                 "% of bf16 peak (sce_jax bf16)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    peak_f32 = max((v for k, v in peak.items() if k.startswith("float32")), default=None)
    peak_bf16 = max((v for k, v in peak.items() if k.startswith("bfloat16")), default=None)
    for r in report["results"]:
        s = r["setting"]
        smoothing = f"{s['space']} N={s['num_samples']}" + (f" (chunk {s['chunk_size']})"
                                                              if s["chunk_size"] else "")
        if "skipped" in r or "error" in r or "sce_jax" not in r or "torch" not in r:
            note = r.get("skipped") or r.get("error") or "incomplete"
            cells = [s["name"], str(s["batch"]), smoothing, str(s["steps_budget"]),
                     ("skipped: " if "skipped" in r else "failed: ") + note.replace("|", "/")]
            lines.append("| " + " | ".join(cells + [""] * (len(head) - len(cells))) + " |")
            continue
        j, t = r["sce_jax"], r["torch"]
        achieved = [x.get("achieved_flops_per_s") for x in (j, t)]
        fraction = [a / peak_f32 if a and peak_f32 else None for a in achieved]
        row = [s["name"], str(s["batch"]), smoothing, str(s["steps_budget"]),
               _fmt(j["cf_per_s"], ".3g"), _fmt(t["cf_per_s"], ".3g"),
               _fmt(r.get("speedup"), ".2f") + "x",
               f"{_fmt(j['step_s'], '.0f', 1e3)} / {_fmt(t['step_s'], '.0f', 1e3)}",
               f"{_fmt(j['fixed_s'], '.2f')} / {_fmt(t['fixed_s'], '.2f')}",
               _fmt(j["compile_s"], ".1f"),
               f"{_fmt(j['peak_bytes'], '.0f', MB)} / {_fmt(t['peak_bytes'], '.0f', MB)}",
               _fmt(j.get("xla_temp_bytes"), ".0f", MB),
               _fmt(r.get("flops_per_step"), ".2f", 1e-9),
               f"{_fmt(achieved[0], '.1f', 1e-9)} / {_fmt(achieved[1], '.1f', 1e-9)}",
               f"{_fmt(fraction[0], '.0f', 100.0)}% / {_fmt(fraction[1], '.0f', 100.0)}%"]
        if bf16:
            b, tb = r.get("sce_jax_bf16") or {}, r.get("torch_bf16") or {}
            row += [f"{_fmt(b.get('cf_per_s'), '.3g')} / {_fmt(tb.get('cf_per_s'), '.3g')}",
                    f"{_fmt(b.get('step_s'), '.0f', 1e3)} / {_fmt(tb.get('step_s'), '.0f', 1e3)}",
                    _fmt(r.get("speedup_bf16_vs_torch"), ".2f") + "x",
                    _fmt(r.get("speedup_bf16_vs_torch_bf16"), ".2f") + "x",
                    _fmt(b["achieved_flops_per_s"] / peak_bf16 if b.get("achieved_flops_per_s")
                         and peak_bf16 else None, ".0f", 100.0) + "%"]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines += prior_markdown(report["results"])
    lines += breakdown_markdown(report["results"])
    return "\n".join(lines)


def prior_markdown(results: list[dict]) -> list[str]:
    """The step cost of the generative prior (``--prior``): sce_jax with it on vs off."""
    rows = [r for r in results if "step_s" in r.get("sce_jax_prior", {})]
    if not rows:
        return []
    lines = ["## The generative prior's step cost (sce_jax, same run)", "",
             "| setting | step ms, prior off | step ms, prior on | on / off | cf/s on / off |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        off, on = r["sce_jax"], r["sce_jax_prior"]
        lines.append(f"| {r['setting']['name']} | {_fmt(off['step_s'], '.1f', 1e3)} | "
                     f"{_fmt(on['step_s'], '.1f', 1e3)} | {_fmt(r.get('prior_step_ratio'), '.2f')}x"
                     f" | {_fmt(on['cf_per_s'], '.3g')} / {_fmt(off['cf_per_s'], '.3g')} |")
    return lines + [""]


def breakdown_markdown(results: list[dict]) -> list[str]:
    """A table of where a step's time goes, for the settings measured with --breakdown."""
    rows = []
    for r in results:
        parts = r.get("breakdown") or {}
        j, t = parts.get("sce_jax", {}), parts.get("torch", {})
        if not j and not t:
            continue
        name = r["setting"]["name"]
        dec, cls = (j or t)["decoder_images"], (j or t)["classifier_images"]

        def row(part: str, key: str) -> str:
            return f"| {name} | {part} | {_fmt(j.get(key), '.0f')} | {_fmt(t.get(key), '.0f')} |"

        in_loop = [_fmt(r.get(impl, {}).get("step_s"), ".0f", 1e3) for impl in ("sce_jax", "torch")]
        rows += [row(f"decoder forward ({dec} images)", "decoder_forward_ms"),
                 row(f"decoder forward + VJP ({dec} images)", "decoder_forward_vjp_ms"),
                 row(f"classifier forward + backward ({cls} images)",
                     "classifier_forward_backward_ms"),
                 row("one step, jitted alone", "step_alone_ms"),
                 f"| {name} | one step inside the search loop | {in_loop[0]} | {in_loop[1]} |"]
        if "search_convolutions" in j:
            rows.append(
                f"| {name} | convolutions XLA:CPU emitted as plain loops: whole search / step "
                f"alone | {j['search_loop_nest_convolutions']} of {j['search_convolutions']} / "
                f"{j['step_alone_loop_nest_convolutions']} of {j['step_alone_convolutions']} | |")
    if not rows:
        return []
    return ["## Where a step's time goes (ms, medians)", "",
            "| setting | part | sce_jax | PyTorch |", "|---|---|---|---|"] + rows + [""]


def output_paths(out_dir: str, slug: str, date: str) -> tuple[str, str]:
    base = os.path.join(out_dir, f"{slug}-{date}")
    candidate, n = base, 1
    while os.path.exists(candidate + ".json"):
        n += 1
        candidate = f"{base}-{n}"
    return candidate + ".json", candidate + ".md"


def _run_worker(name: str, impl: str) -> dict:
    """One implementation of one setting in a fresh process of this script."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        command = [sys.executable, os.path.abspath(__file__), f"--settings={name}",
                   f"--steps={FLAGS.steps}", f"--repeats={FLAGS.repeats}",
                   f"--threads={FLAGS.threads}",
                   f"--torch_channels_last={FLAGS.torch_channels_last}",
                   f"--breakdown={FLAGS.breakdown}", f"--worker_impl={impl}", f"--worker_out={out}"]
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode != 0 or not os.path.exists(out):
            tail = " ".join((proc.stderr or "").strip().splitlines()[-3:])
            reason = ("killed (out of memory?)" if proc.returncode in (-9, 137)
                      else f"exit code {proc.returncode}")
            return {"error": f"{impl}: {reason}: {tail}"}
        with open(out) as f:
            return json.load(f)


def run_setting(setting) -> dict:
    """All implementations of one setting, each in its own process unless --isolate=false."""
    impls = (("sce_jax", "torch") + (("sce_jax_bf16", "torch_bf16") if FLAGS.bf16 else ())
             + (("sce_jax_prior",) if FLAGS.prior else ()))
    if not FLAGS.isolate:
        return finish_record(measure_setting(setting, impls, FLAGS.steps, FLAGS.repeats,
                                             FLAGS.breakdown))
    record: dict[str, Any] = {"setting": dataclasses.asdict(setting)}
    for impl in impls:
        part = _run_worker(setting.name, impl)
        if "error" in part or "skipped" in part:
            record.update({k: part[k] for k in ("error", "skipped") if k in part})
            break
        record.setdefault("breakdown", {}).update(part.pop("breakdown", {}))
        record.update(part)
    if not record.get("breakdown"):
        record.pop("breakdown", None)
    return finish_record(record)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.list:
        for s in bench_settings.all_settings().values():
            print(f"{s.name:24s} {s.models:12s} {s.image_size:4d}px  B={s.batch:<3d} {s.space:6s} "
                  f"N={s.num_samples:<3d} chunk={s.chunk_size:<3d} K={s.attempts} "
                  f"budget={s.steps_budget}")
        return 0
    if FLAGS.steps < 2 or FLAGS.repeats < 1:
        raise app.UsageError("--steps must be >= 2 (steps are timed between consecutive ones) "
                             "and --repeats >= 1")
    names = list(FLAGS.settings)
    if FLAGS.quick or not names:
        names = names + [n for n in bench_settings.quick_settings(demo_missing() is None)
                         if n not in names]
    try:
        settings = bench_settings.select(names)
    except ValueError as e:
        raise app.UsageError(str(e))

    if FLAGS.worker_out:
        record = measure_setting(settings[0], (FLAGS.worker_impl,), FLAGS.steps, FLAGS.repeats,
                                 FLAGS.breakdown)
        with open(FLAGS.worker_out, "w") as f:
            json.dump(record, f)
        return 0

    info = machine_info()
    size = 2048 if jax.default_backend() == "cpu" else 8192
    peak = {"float32": matmul_peak(jnp.float32, size),
            "float32 (PyTorch)": torch_matmul_peak(size)}
    if jax.default_backend() != "cpu" or FLAGS.bf16:
        peak["bfloat16 (float32 accumulation)"] = matmul_peak(jnp.bfloat16, size)
        peak["bfloat16 (PyTorch)"] = torch_matmul_peak(size, dtype=_torch_bfloat16())
    report = {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "machine": info,
              "peak_flops_per_s": peak, "steps": FLAGS.steps, "repeats": FLAGS.repeats,
              "load_before": load_average(), "results": []}
    for s in settings:
        print(f"[benchmark] {s.name} ...", flush=True)
        start = time.perf_counter()
        record = run_setting(s)
        report["results"].append(record)
        status = record.get("skipped") or record.get("error") or (
            f"sce_jax {_fmt(record['sce_jax']['cf_per_s'], '.3g')} cf/s, PyTorch "
            f"{_fmt(record['torch']['cf_per_s'], '.3g')} cf/s, "
            f"ratio {_fmt(record['speedup'], '.2f')}")
        print(f"[benchmark] {s.name}: {status} ({time.perf_counter() - start:.0f} s)", flush=True)
    report["load_after"] = load_average()

    os.makedirs(FLAGS.out_dir, exist_ok=True)
    json_path, md_path = output_paths(FLAGS.out_dir, machine_slug(info),
                                      datetime.date.today().isoformat())
    with open(json_path, "w") as f:
        json.dump(report, f, indent=2)
    text = markdown(report)
    with open(md_path, "w") as f:
        f.write(text)
    print(text)
    print(f"written: {json_path}, {md_path}")
    return 0


if __name__ == "__main__":
    from sce_jax.command_line import parse_flags
    app.run(main, flags_parser=parse_flags)  # bad flag: error line, exit 2; --help: exit 0
