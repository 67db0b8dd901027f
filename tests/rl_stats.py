"""Statistics for the RL benchmark tables (issue 22), after Agarwal et al. 2021, "Deep Reinforcement
Learning at the Edge of the Statistical Precipice" (NeurIPS, arXiv:2108.13264):

- the interquartile mean (IQM): the mean of the middle half of the runs (floor(n/4) cut from each end), which
  a lucky or a crashed seed moves far less than the mean, and which needs fewer runs than the median for the
  same precision;
- 95% confidence intervals by the stratified percentile bootstrap: resample the runs of each task
  (environment) with replacement, keeping every task's count, recompute the statistic over all of them,
  and take the 2.5th and 97.5th percentiles of the results;
- the share of runs that reach the bar and the worst run, instead of standard errors.

numpy only, so the benchmarks need nothing else.
"""

import numpy as np


def iqm(scores) -> float:
    """Mean of the runs left after cutting floor(n/4) from each end of the sorted scores (the same cut
    as scipy.stats.trim_mean(scores, 0.25), which rliable uses)."""
    x = np.sort(np.asarray(scores, dtype=float).ravel())
    cut = len(x) // 4
    return float(x[cut:len(x) - cut].mean())


def bootstrap_ci(scores_by_task, statistic, reps: int = 2_000, level: float = 0.95, seed: int = 0) -> tuple:
    """Stratified percentile bootstrap interval of statistic(all runs). scores_by_task is one array of
    per-seed scores per task; each replicate resamples every task's own runs, n_task of them."""
    tasks = [np.asarray(s, dtype=float).ravel() for s in scores_by_task]
    rng = np.random.default_rng(seed)
    values = np.empty(reps)
    for i in range(reps):
        values[i] = statistic(np.concatenate([t[rng.integers(0, len(t), len(t))] for t in tasks]))
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def summarize(scores, bar: float) -> dict:
    """One benchmark's row: n, mean and IQM each with a 95% CI, the share of runs >= bar, the worst run."""
    x = np.asarray(scores, dtype=float).ravel()
    if not len(x) or not np.isfinite(x).all():  # a nan would sort above every score and be trimmed from the IQM
        raise ValueError(f"summarize needs finite scores, got {x.tolist()}")
    return dict(n=len(x), mean=float(x.mean()), mean_ci=bootstrap_ci([x], np.mean), iqm=iqm(x),
                iqm_ci=bootstrap_ci([x], iqm), pass_share=float((x >= bar).mean()), worst=float(x.min()))


def table_row(name: str, s: dict, bar: float) -> str:
    """A Markdown row for the README: name | n | mean [CI] | IQM [CI] | runs >= bar | worst."""
    return (f"| {name} | {s['n']} | {s['mean']:.1f} [{s['mean_ci'][0]:.1f}, {s['mean_ci'][1]:.1f}] | "
            f"{s['iqm']:.1f} [{s['iqm_ci'][0]:.1f}, {s['iqm_ci'][1]:.1f}] | "
            f"{s['pass_share']:.0%} (≥ {bar:g}) | {s['worst']:.1f} |")
