"""The benchmark's peak FLOP/s and the share of it a step reaches (benchmarks/peak.py,
benchmarks/report.py), and what a benchmark setting times (benchmarks/settings.py,
benchmarks/search_timing.py). No timing is asserted: the rates are given to the functions."""

import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import peak, report
from benchmarks import settings as bench_settings

GFLOP = 1e9


def _kernel(name):
    return peak.Kernel(name, 1.0, lambda: None, ())


def test_the_peak_is_the_best_kernel_given():
    rates = {"a": 30 * GFLOP, "b": 92 * GFLOP, "c": 61 * GFLOP}
    measured = peak.measure_peak([_kernel(n) for n in rates], repeats=1,
                                 rate=lambda kernel, repeats: rates[kernel.name])
    assert measured == {"flops_per_s": 92 * GFLOP, "best": "b", "kernels": rates}
    assert peak.measure_peak([], repeats=1)["flops_per_s"] is None


def test_a_step_faster_than_every_kernel_sets_the_peak():
    assert peak.bounding_peak(92 * GFLOP, [149 * GFLOP, None, 40 * GFLOP]) == 149 * GFLOP
    assert peak.bounding_peak(92 * GFLOP, [40 * GFLOP]) == 92 * GFLOP
    assert peak.bounding_peak(None, [None]) is None
    assert peak.share_of_peak(46 * GFLOP, 92 * GFLOP) == pytest.approx(0.5)
    assert peak.share_of_peak(None, 92 * GFLOP) is None
    with pytest.raises(ValueError, match="above the peak"):
        peak.share_of_peak(149 * GFLOP, 92 * GFLOP)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_xla_kernels_compute_their_products_and_count_their_flops(dtype):
    kernels = {k.name: k for k in peak.jax_kernels(dtype, sizes=(4, 8), conv_shape=(1, 5, 5, 3))}
    assert len(kernels) == 2 * len(peak.LAYOUTS) + 2
    for n in (4, 8):
        for layout in peak.LAYOUTS:
            k = kernels[f"XLA matmul {n} {layout}"]
            a, b = (np.asarray(x, np.float32) for x in k.args)
            expected = {"NN": a @ b, "NT": a @ b.T, "TN": a.T @ b}[layout]
            out = k()
            assert out.dtype == jnp.float32  # float32 accumulation
            np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-4)
            assert k.flops == 2 * n ** 3
    bmm = kernels[f"XLA batched matmul {peak.BATCHED_MATMULS}x4"]
    np.testing.assert_allclose(np.asarray(bmm()), np.matmul(*(np.asarray(x, np.float32)
                                                              for x in bmm.args)),
                               rtol=1e-5, atol=1e-4)
    assert bmm.flops == peak.BATCHED_MATMULS * 2 * 4 ** 3
    conv = kernels["XLA conv3x3 1x5x5x3"]
    assert conv().shape == (1, 5, 5, 3) and conv.flops == 2 * 25 * 3 * 3 * 9


def test_pytorch_kernels_compute_their_products():
    torch = pytest.importorskip("torch")
    kernels = {k.name: k for k in peak.torch_kernels(torch.float32, sizes=(4,),
                                                     conv_shape=(1, 5, 5, 3), threads=1)}
    for layout in peak.LAYOUTS:
        k = kernels[f"PyTorch matmul 4 {layout}"]
        a, b = (x.numpy() for x in k.args)
        expected = {"NN": a @ b, "NT": a @ b.T, "TN": a.T @ b}[layout]
        np.testing.assert_allclose(k().numpy(), expected, rtol=1e-5, atol=1e-5)
    assert tuple(kernels["PyTorch conv3x3 1x5x5x3"]().shape) == (1, 3, 5, 5)


def _report(sce_jax_rate, torch_rate, kernel_peak):
    flops = 1.49 * GFLOP
    setting = {"name": "sd64_b1_pixel_n8", "batch": 1, "space": "pixel", "num_samples": 8,
               "chunk_size": 0, "steps_budget": 100}

    def impl(rate):
        return {"cf_per_s": 1.0, "step_s": flops / rate, "fixed_s": 0.1, "compile_s": 1.0,
                "peak_bytes": 0, "xla_temp_bytes": 0}
    record = report.finish_record({"setting": setting, "flops_per_step": flops,
                                   "sce_jax": impl(sce_jax_rate), "torch": impl(torch_rate)})
    machine = {"cpu": "cpu", "cores": 2, "jax_backend": "cpu", "jax_device": "cpu",
               "python": "3", "jax": "0", "flax": "0", "torch": "0", "torch_threads": 2,
               "torch_memory_format": "contiguous", "diffusers": "0"}
    return {"date": "today", "machine": machine, "steps": 3, "repeats": 2, "load_before": None,
            "load_after": None, "results": [record],
            "peak": {"float32": {"flops_per_s": kernel_peak, "best": "XLA matmul 2048 NN",
                                 "kernels": {}}}}


def _share_cells(text):
    row = [line for line in text.splitlines() if line.startswith("| sd64_b1_pixel_n8")][0]
    return row.split(" | ")[-1].rstrip(" |")


def test_the_share_of_peak_is_computed_against_the_bounding_peak():
    within = _report(46 * GFLOP, 23 * GFLOP, 92 * GFLOP)
    assert report.report_peaks(within)["float32"] == pytest.approx(92 * GFLOP)
    assert _share_cells(report.markdown(within)) == "50% / 25%"
    # the case seen on a 2-core AMD EPYC: a step at 149 GFLOP/s, a single matmul at 92
    beyond = _report(149 * GFLOP, 46 * GFLOP, 92 * GFLOP)
    assert report.report_peaks(beyond)["float32"] == pytest.approx(149 * GFLOP)
    text = report.markdown(beyond)
    assert _share_cells(text) == "100% / 31%"
    assert "a float32 step ran faster than every kernel, so its 149.0 GFLOP/s" in text


def test_a_setting_times_one_attempt_of_the_given_steps_with_its_smoothing():
    from benchmarks.search_timing import TIMED_ATTEMPTS, search_config

    setting = bench_settings.select(["sd64_b8_latent_n32"])[0]
    assert not hasattr(setting, "attempts")
    c = search_config(setting, steps=3)
    assert (c.steps, c.attempts) == (3, TIMED_ATTEMPTS) == (3, 1)
    assert (c.smoothing.space, c.smoothing.num_samples, c.smoothing.chunk_size) == (
        "latent", 32, setting.chunk_size) and setting.chunk_size == 8  # 64 decoder images a pass
