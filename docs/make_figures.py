"""Draw the README's figures from the runs' metrics files (issue 22).

Every script writes runs/<run_name>/metrics.jsonl: a first line {"algo", "run_name", "config"}, then one
JSON object per logged row with "step", "time" (seconds since the start) and the metrics. This script
reads them all, groups the runs by script and environment, and draws one PNG per figure below; runs that
differ only in their seed become one line with a band: the mean over seeds and its 95% percentile-
bootstrap interval, drawn as far as every seed goes. Pictures a script draws itself (dyna_q.py's Sutton & Barto figures, seq2seq's
attention map) are copied as they are. Nothing here imports wandb.

    python docs/make_figures.py                      # runs/ -> docs/figures/
    python docs/make_figures.py --runs bench/runs --out /tmp/figures
"""

import argparse
import json
import os
import shutil
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # no pyplot: no display or backend needed

# name: (script, x key, y key, config field whose values are the lines, title, y label).
# One PNG per environment (or corpus) the runs used: docs/figures/<name>-<env>.png.
CURVES = {
    "dqn": ("dqn", "step", "charts/episodic_return", None, "dqn.py", "episodic return"),
    "ppo": ("ppo", "step", "charts/episodic_return", None, "ppo.py", "episodic return"),
    "reinforce": ("reinforce", "step", "charts/episodic_return", "baseline", "reinforce.py", "episodic return"),
    "reinforce-prob-right": ("reinforce", "step", "charts/prob_right", "baseline", "reinforce.py: P(right)",
                             "P(right)"),
    "levin_ts": ("levin_ts", "charts/expansions_total", "charts/solved_total", "search", "levin_ts.py",
                 "training levels solved so far"),
    "gpt": ("gpt", "time", "val/loss", "pos_encoding", "gpt.py", "validation loss"),
    "bpe": ("bpe", "train/merges", "train/seconds", "trainer", "bpe.py", "training seconds"),
}
X_LABELS = {"step": "environment steps (all ranks)", "time": "seconds since the start (wall clock)",
            "charts/expansions_total": "node expansions in training", "train/merges": "merges"}
# name: (script, the file it writes in its run folder).
PICTURES = {"dyna_q": ("dyna_q", "dyna_q.png"), "seq2seq_attention": ("seq2seq_attention", "attention.png")}
# The config field that names what a run learned on: one figure per value (its last path part for files).
SETTING = {"dqn": "env_id", "ppo": "env_id", "reinforce": "env_id", "dyna_q": "env_id", "levin_ts": "levels_path",
           "gpt": "data_dir", "bpe": "input", "seq2seq_attention": "data_path"}
DEFAULT_SETTING = {"levin_ts": "generated", "seq2seq_attention": "date-task"}  # where the field is None
REFERENCE_LINES = {"reinforce-prob-right": (2 - 2 ** 0.5, "p* = 2 - sqrt(2)")}  # Sutton & Barto Example 13.1
# Fields that do not change what a run learns: runs that differ only in these (and the seed) share a line.
BOOKKEEPING = {"seed", "exp_name", "track", "wandb_project_name", "wandb_entity", "save_model", "eval_checkpoint",
               "resume", "log_interval", "num_threads", "cuda", "torch_deterministic", "compare_uniform",
               # what only the final evaluation or sampling reads
               "eval_episodes", "greedy_eval", "capture_video", "eval_budget", "prompt", "num_samples",
               "max_new_tokens", "temperature", "top_k", "top_p", "peak_tflops", "show", "translate"}
# nanoGPT's CPU "baby" shakespeare_char run (4 layers x 4 heads x 128, block 64, batch 12, 2,000 iterations):
# its val loss at iterations 0/250/500/1000/1500/2000 as measured on this project's machine kind, placed in
# time at 59.6 ms an iteration (its whole run, 119.2 s, back to back with gpt.py in the README's gpt table).
NANOGPT = [(it * 0.0596, loss) for it, loss in
           [(0, 4.165), (250, 2.445), (500, 2.314), (1000, 2.053), (1500, 1.923), (2000, 1.886)]]
REFERENCE_CURVES = {"gpt": (NANOGPT, "nanoGPT, same sizes (measured here, 1 seed)")}
BINS = 60  # points per curve: each run's rows are averaged within each of BINS equal stretches of x


def start_time(run_name: str) -> int:
    """The start time that ends a run name (<...>__<seconds>, a twin's with -2): the order of the runs."""
    last = run_name.rsplit("__", 1)[-1].split("-")[0]
    return int(last) if last.isdigit() else 0


def read_runs(folder: Path) -> list[dict]:
    """Every run folder with a metrics.jsonl, oldest first: its header (algo, run_name, config), its rows,
    its path. A resumed run appended a second header and restarted its clock: its later rows' time goes on
    from the last time logged before it. A cut-off last line (a run still writing, or killed) is skipped."""
    runs = []
    for path in sorted(folder.glob("*/metrics.jsonl")):
        try:
            texts = [t for t in path.read_text(encoding="utf-8").splitlines() if t.strip()]
        except (OSError, UnicodeDecodeError) as e:
            sys.exit(f"{path}: cannot read it as UTF-8 text ({type(e).__name__}); delete that run folder.")
        lines = []
        for number, text in enumerate(texts, 1):
            try:
                lines.append(json.loads(text))
            except json.JSONDecodeError:
                if number < len(texts):
                    sys.exit(f"{path} line {number} is not JSON: delete that line or the run folder.")
                print(f"{path}: its last line is cut off (a run still writing, or killed); drawn without it")
        if not lines:
            continue
        if not {"algo", "config"} <= lines[0].keys():
            sys.exit(f"{path}: the first line is not a metrics header; was it written by an algos/ script?")
        rows, offset, last = [], 0.0, 0.0
        for row in lines[1:]:
            if "algo" in row:  # a resume
                offset = last
                continue
            if "time" in row:
                row["time"] = last = row["time"] + offset
            rows.append(row)
        runs.append({**lines[0], "rows": rows, "dir": path.parent})
    return sorted(runs, key=lambda run: (start_time(run["dir"].name), run["dir"].name))


def setting(run: dict) -> str:
    """What the run learned on, as a file-name-safe word: CartPole-v1, shakespeare_char, generated, ..."""
    value = run["config"].get(SETTING[run["algo"]]) or DEFAULT_SETTING.get(run["algo"], "default")
    if SETTING[run["algo"]] == "env_id":  # an id, not a path: MinAtar/Breakout-v1 -> MinAtar_Breakout-v1
        return str(value).replace(":", "_").replace("/", "_")
    return Path(str(value).rstrip("/")).name.replace(":", "_")


def binned(rows: list[dict], x_key: str, y_key: str, edges: np.ndarray) -> np.ndarray:
    """The run's y averaged in each bin of x; an empty bin between two rows is interpolated linearly
    (sparse rows, such as gpt's evaluations, make a line, not steps), and bins before the run's first
    row or after its last stay nan (a short run is not drawn as if it had gone on)."""
    points = np.array([(r[x_key], r[y_key]) for r in rows if r.get(x_key) is not None and y_key in r], float)
    out = np.full(len(edges) - 1, np.nan)
    if len(points):
        which = np.clip(np.searchsorted(edges, points[:, 0], side="right") - 1, 0, len(out) - 1)
        for b in np.unique(which):
            out[b] = points[which == b, 1].mean()
        filled = np.flatnonzero(~np.isnan(out))
        inside = np.arange(filled[0], filled[-1] + 1)
        out[inside] = np.interp(inside, filled, out[filled])
    return out


def mean_band(curves: np.ndarray, reps: int = 1_000, seed: int = 0) -> tuple:
    """Mean over seeds (rows of curves) and its 95% percentile-bootstrap band, bin by bin, drawn only in
    the bins where every seed has data: past a seed's end a mean of the others would jump, not learn."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(curves), (reps, len(curves)))
    every = ~np.isnan(curves).any(axis=0)
    mean, lo, hi = (np.full(curves.shape[1], np.nan) for _ in range(3))
    boot = curves[:, every][picks].mean(axis=1)  # reps x complete bins
    mean[every], lo[every], hi[every] = curves[:, every].mean(axis=0), *np.percentile(boot, [2.5, 97.5], axis=0)
    return mean, lo, hi


def lines(runs: list[dict], line_field) -> dict:
    """The runs grouped by configuration less its bookkeeping fields and seed: one line each, labelled by
    the line field and by every other field in which the groups differ."""
    groups = defaultdict(list)
    for run in runs:  # a path typed two ways (data/x/, ./data/x) is one value
        config = {k: os.path.normpath(v) if isinstance(v, str) and "/" in v else str(v)
                  for k, v in run["config"].items() if k not in BOOKKEEPING}
        groups[tuple(sorted(config.items()))].append(run)
    configs = [dict(key) for key in groups]
    differ = sorted({k for c in configs for k in c if len({o.get(k) for o in configs}) > 1} - {line_field})
    labelled = {}
    for config, group in zip(configs, groups.values()):
        # a field an older run lacks is "unset", not "None" like a null value: two lines never share a label
        words = [config.get(line_field, f"{line_field} unset")] if line_field else []
        labelled[", ".join(words + [f"{k}={config[k]}" if k in config else f"{k} unset" for k in differ])] = group
    return labelled


def draw_curves(name: str, runs: list[dict], out: Path) -> list[Path]:
    """One PNG per environment (or corpus): a line with its seed band per configuration, named by the
    line field and by any other field in which that figure's configurations differ."""
    script, x_key, y_key, line_field, title, y_label = CURVES[name]
    by_env = defaultdict(list)
    for run in runs:
        if run["algo"] == script and any(y_key in r for r in run["rows"]):
            by_env[setting(run)].append(run)
    written = []
    for env, env_runs in sorted(by_env.items()):
        xs = [r[x_key] for run in env_runs for r in run["rows"] if r.get(x_key) is not None and y_key in r]
        if not xs or max(xs) <= 0:
            continue
        edges = np.linspace(0, max(xs), BINS + 1)
        centres = (edges[:-1] + edges[1:]) / 2
        fig = Figure(figsize=(6, 4), dpi=100)
        ax = fig.add_subplot()
        groups = lines(env_runs, line_field)
        for label, line_runs in sorted(groups.items()):
            curves = [binned(run["rows"], x_key, y_key, edges) for run in line_runs]
            mean, lo, hi = mean_band(np.array(curves))
            seeds = f"{len(curves)} seed{'s' * (len(curves) > 1)}"
            ax.plot(centres, mean, label=f"{label} ({seeds})" if label else seeds)
            ax.fill_between(centres, lo, hi, alpha=0.25)
        if name in REFERENCE_CURVES:
            points, text = REFERENCE_CURVES[name]
            ax.plot(*zip(*points), color="black", linestyle="--", marker="o", markersize=3, label=text)
        if name in REFERENCE_LINES:
            value, text = REFERENCE_LINES[name]
            ax.axhline(value, color="black", linestyle="--", linewidth=1, label=text)
        band = "mean and 95% bootstrap band over seeds" if max(map(len, groups.values())) > 1 else "one seed"
        ax.set(title=f"{title}, {env}: {band}", xlabel=X_LABELS.get(x_key, x_key), ylabel=y_label)
        ax.title.set_fontsize(9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"{name}-{env}.png"
        fig.savefig(path)
        written.append(path)
    return written


# Sutton & Barto 2nd ed., sec. 8.2, on Figure 8.2: the agents reach (epsilon-)optimal performance after
# about 25 (n = 0), five (n = 5) and three (n = 50) episodes; the shortest path is 14 steps.
BOOK_FIG_8_2 = {"Dyna-Q n=0": 25, "Dyna-Q n=5": 5, "Dyna-Q n=50": 3}


def draw_dyna_maze(runs: list[dict], out: Path) -> list[Path]:
    """Figure 8.2 from the newest DynaMaze-v0 run's curves (steps per episode, each a mean over its
    runs), with the book's episode counts from its text beside them."""
    mazes = [run for run in runs if run["algo"] == "dyna_q" and run["config"].get("env_id") == "DynaMaze-v0"]
    rows = [r for r in (mazes[-1]["rows"] if mazes else []) if r.get("episode") is not None]
    if not rows:
        return []
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot()
    for key in sorted(k for k in rows[0] if k.startswith("eval/steps_per_episode/")):
        label = key.split("/", 2)[2]
        (line,) = ax.plot([r["episode"] for r in rows], [r[key] for r in rows], label=f"{label} (ours)")
        if label in BOOK_FIG_8_2:
            ax.axvline(BOOK_FIG_8_2[label], color=line.get_color(), linestyle=":", linewidth=1.5,
                       label=f"{label}: the book's ~{BOOK_FIG_8_2[label]} episodes to near-optimal")
    ax.axhline(14, color="black", linestyle="--", linewidth=1, label="shortest path, 14 steps")
    num_runs = mazes[-1]["config"].get("num_runs")
    ax.set(ylim=(0, 800), xlabel="episode", ylabel=f"steps per episode (mean of {num_runs} runs)",
           title="dyna_q.py, Sutton & Barto Fig. 8.2 (Dyna maze), beside the text of sec. 8.2")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "dyna_q-fig8.2-DynaMaze-v0.png"
    fig.savefig(path)
    return [path]


def copy_pictures(name: str, runs: list[dict], out: Path) -> list[Path]:
    """The newest run's own picture, per environment (or corpus), copied as the script drew it."""
    script, file = PICTURES[name]
    newest = {}
    for run in runs:
        if run["algo"] == script and (run["dir"] / file).exists():
            newest[setting(run)] = run  # runs are read oldest first
    written = []
    for env, run in sorted(newest.items()):
        path = out / f"{name}-{env}.png"
        shutil.copyfile(run["dir"] / file, path)
        written.append(path)
    return written


def main(argv=None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="folder of run folders (default: runs)")
    parser.add_argument("--out", type=Path, default=Path("docs/figures"), help="where the PNGs go")
    args = parser.parse_args(argv)
    if not args.runs.is_dir():
        sys.exit(f"--runs {args.runs}: no such folder; run the benchmarks first (see the README).")
    runs = read_runs(args.runs)
    if not runs:
        sys.exit(f"--runs {args.runs}: no run folder with a metrics.jsonl in it.")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        sys.exit(f"--out {args.out}: cannot make that folder ({e.strerror}); give a folder you can write to.")
    written = [p for name in CURVES for p in draw_curves(name, runs, args.out)]
    written += [p for name in PICTURES for p in copy_pictures(name, runs, args.out)] + draw_dyna_maze(runs, args.out)
    for path in written:
        print(f"wrote {path}")
    return written


if __name__ == "__main__":
    main()
