"""Times a jitted decode (and encode) of the ported autoencoders: compile and steady state.

    python scripts/time_decode.py                              # SD VAE, 32x32x4 -> 256x256, f32
    python scripts/time_decode.py --model=tiny                 # TAESD's full config
    python scripts/time_decode.py --latent_size=64 --batch=4 --dtype=bfloat16
    python scripts/time_decode.py --pretrained=/models/sd-vae-ft-mse   # a real folder

Without --pretrained the weights are random (timing does not depend on them): --model=kl is
the Stable Diffusion VAE architecture (block_out_channels 128,256,512,512, two resnets per
level, 4 latent channels, 32 groups, mid-block attention), --model=tiny is AutoencoderTiny's
default (TAESD). Compile time is ``jit(f).lower(...).compile()``; steady state is the median
of --repeats calls of the compiled function, each ended by ``block_until_ready``.
"""

import os
import sys
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a checkout without installing

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from sce_jax.models.autoencoder_kl import AutoencoderKL, AutoencoderKLConfig, DiagonalGaussian  # noqa: E402
from sce_jax.models.autoencoder_tiny import AutoencoderTiny, AutoencoderTinyConfig  # noqa: E402

flags.DEFINE_enum("model", "kl", ["kl", "tiny"], "AutoencoderKL (SD VAE) or AutoencoderTiny (TAESD).")
flags.DEFINE_string("pretrained", "", "Optional diffusers folder / pipeline folder / cached repo id.")
flags.DEFINE_enum("part", "both", ["decode", "encode", "both"], "What to time.")
flags.DEFINE_integer("latent_size", 32, "Latent height and width (the image is 8x larger).")
flags.DEFINE_integer("batch", 1, "Batch size.")
flags.DEFINE_integer("repeats", 5, "Timed calls after compilation (the median is reported).")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
FLAGS = flags.FLAGS

SD_VAE = AutoencoderKLConfig(
    in_channels=3, out_channels=3, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2, latent_channels=4, norm_num_groups=32, sample_size=512)


def random_model(cls, config, dtype):
    """``cls(config)`` with random weights, initialised inside one jit (fast on CPU)."""
    abstract = nnx.eval_shape(lambda: cls(config, rngs=nnx.Rngs(0), dtype=dtype))
    graphdef, _ = nnx.split(abstract)
    state = jax.jit(lambda: nnx.state(cls(config, rngs=nnx.Rngs(0), dtype=dtype)))()
    return nnx.merge(graphdef, state)


def time_compiled(name, fn, *args, repeats):
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(*args))  # first run: allocations, thread pools
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = (cost or {}).get("flops")
    gflops = f", {flops / 1e9:.0f} GFLOP" if flops else ""
    print(f"{name}: compile {compile_s:.1f} s, steady state {np.median(times):.3f} s "
          f"(median of {repeats}; min {min(times):.3f}, max {max(times):.3f}{gflops})")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    dtype = jnp.bfloat16 if FLAGS.dtype == "bfloat16" else jnp.float32
    if FLAGS.model == "kl":
        cls, config = AutoencoderKL, SD_VAE
    else:
        cls, config = AutoencoderTiny, AutoencoderTinyConfig()
    t0 = time.perf_counter()
    if FLAGS.pretrained:
        model = cls.from_pretrained(FLAGS.pretrained, dtype=dtype)
    else:
        model = random_model(cls, config, dtype)
    config = model.config
    graphdef, state = nnx.split(model)
    params = sum(x.size for x in jax.tree.leaves(state))
    f = config.downsample_factor
    h = w = FLAGS.latent_size
    print(f"{cls.__name__}: {params / 1e6:.1f} M parameters, built in {time.perf_counter() - t0:.1f} s; "
          f"{FLAGS.dtype} compute on {jax.devices()[0].device_kind} ({jax.device_count()} device(s))")

    rng = np.random.default_rng(0)
    if FLAGS.part in ("decode", "both"):
        z = jnp.asarray(rng.normal(size=(FLAGS.batch, h, w, config.latent_channels)), dtype)
        decode = lambda s, z: nnx.merge(graphdef, s).decode(z)  # noqa: E731
        time_compiled(f"decode {FLAGS.batch}x{h}x{w}x{config.latent_channels} -> "
                      f"{h * f}x{w * f}x{config.out_channels}", decode, state, z,
                      repeats=FLAGS.repeats)
    if FLAGS.part in ("encode", "both"):
        x = jnp.asarray(rng.uniform(-1, 1, (FLAGS.batch, h * f, w * f, config.in_channels)), dtype)

        def encode(s, x):
            latents = nnx.merge(graphdef, s).encode(x)
            return latents.mean if isinstance(latents, DiagonalGaussian) else latents

        time_compiled(f"encode {FLAGS.batch}x{h * f}x{w * f}x{config.in_channels} -> "
                      f"{h}x{w}x{config.latent_channels}", encode, state, x, repeats=FLAGS.repeats)


if __name__ == "__main__":
    from sce_jax.launch.command_line import parse_flags
    app.run(main, flags_parser=parse_flags)  # bad flag: error line, exit 2; --help: exit 0
