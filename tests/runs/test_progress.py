"""The progress line of a dataset run: done/total, rates and ETA from a given clock."""

import io

from sce_jax.runs.progress import Progress


def test_the_line_shows_attempts_and_found_counterfactuals_per_second():
    now = [100.0]
    out = io.StringIO()
    progress = Progress(8, unit="counterfactuals", stream=out, min_interval=0.0,
                        clock=lambda: now[0])
    now[0] = 102.0
    progress.update(4, found=3)
    line = out.getvalue().strip()
    assert "4/8 counterfactuals ( 50.0%) 2.00 counterfactuals/s" in line
    assert "3 found (1.50/s)" in line and "ETA 0:02" in line
    now[0] = 104.0
    progress.update(4)  # the found count stays what it was
    assert out.getvalue().splitlines()[-1].count("3 found (0.75/s)") == 1
    assert "found" not in Progress(1, stream=io.StringIO()).line()  # a count nobody gave
