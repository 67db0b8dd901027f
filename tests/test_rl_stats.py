"""The benchmark statistics (rl_stats.py) checked by hand."""

import numpy as np
import pytest
from rl_stats import bootstrap_ci, iqm, summarize, table_row


def test_iqm_is_the_mean_of_the_middle_half():
    assert iqm(range(1, 11)) == pytest.approx(np.mean([3, 4, 5, 6, 7, 8]))  # 10 runs: 2 cut from each end
    assert iqm([1, 2, 3, 4]) == pytest.approx(2.5)  # 4 runs: 1 cut from each end
    assert iqm([5.0, 5.0, 5.0]) == 5.0  # fewer than 4 runs: nothing to cut
    # One crashed seed moves the mean by 50 and the IQM not at all.
    assert iqm([500] * 9 + [0]) == 500 and np.mean([500] * 9 + [0]) == 450


def test_bootstrap_interval_holds_the_estimate_and_narrows_with_more_runs():
    rng = np.random.default_rng(1)
    few, many = rng.normal(100, 10, 10), rng.normal(100, 10, 1000)
    lo, hi = bootstrap_ci([few], np.mean)
    assert lo < few.mean() < hi
    lo2, hi2 = bootstrap_ci([many], np.mean)
    assert hi2 - lo2 < (hi - lo) / 5  # width ~ 1/sqrt(n): 10x narrower in theory
    assert bootstrap_ci([[7.0] * 5], np.mean) == (7.0, 7.0)
    assert bootstrap_ci([few], np.mean) == (lo, hi)  # seeded: the table does not change between calls


def test_bootstrap_is_stratified_by_task():
    # Task A's runs all score 0 and task B's all 1; a replicate that keeps each task's count always has
    # a mean of exactly 0.5. An unstratified bootstrap over the 20 pooled runs would spread around 0.5.
    assert bootstrap_ci([[0.0] * 10, [1.0] * 10], np.mean) == (0.5, 0.5)


def test_summary_row():
    s = summarize([-100, -105, -120, -98, -101, -99, -102, -150, -97, -103], bar=-110)
    assert s["n"] == 10 and s["worst"] == -150 and s["pass_share"] == 0.8
    # sorted: -150 -120 | -105 -103 -102 -101 -100 -99 | -98 -97
    assert s["iqm"] == pytest.approx(np.mean([-105, -103, -102, -101, -100, -99]))
    assert s["iqm_ci"][0] <= s["iqm"] <= s["iqm_ci"][1]
    row = table_row("MountainCar-v0", s, -110)
    assert row.startswith("| MountainCar-v0 | 10 | -107.5 [") and "80% (≥ -110)" in row and row.endswith("| -150.0 |")
    for bad in ([], [500.0] * 9 + [float("nan")]):  # a nan seed would sort above 500 and leave the IQM at 500
        with pytest.raises(ValueError, match="summarize needs finite scores"):
            summarize(bad, bar=475)
