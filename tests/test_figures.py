"""docs/make_figures.py (issue 22): its pieces by hand, and the whole command on tiny fake run folders."""

import ast
import importlib.util
import json
import sys

import numpy as np
import pytest
from conftest import ROOT, run

SCRIPT = ROOT / "docs" / "make_figures.py"


def load():
    spec = importlib.util.spec_from_file_location("make_figures", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_run(runs, name, algo, config, rows, picture=None):
    folder = runs / name
    folder.mkdir(parents=True)
    lines = [{"algo": algo, "run_name": name, "config": config}] + rows
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    if picture:
        (folder / picture).write_bytes(b"\x89PNG\r\n\x1a\n fake")


def test_binned_averages_each_bin_and_interpolates_over_empty_bins():
    mf = load()
    rows = [{"step": 1, "r": 1.0}, {"step": 2, "r": 3.0}, {"step": 9, "r": 10.0}, {"step": 5, "other": 0}]
    out = mf.binned(rows, "step", "r", np.array([0, 4, 8, 12]))
    assert out.tolist() == [2.0, 6.0, 10.0]  # bin [4, 8) is empty: halfway between its neighbours
    short = mf.binned(rows[:2], "step", "r", np.array([0, 4, 8, 12]))
    assert short[0] == 2.0 and np.isnan(short[1:]).all()  # a run that ended is not drawn on


def test_a_resumed_run_is_one_run_whose_clock_goes_on(tmp_path):
    mf = load()
    fake_run(tmp_path, "gpt", "gpt", {"seed": 1}, [{"step": 1, "time": 5.0, "val/loss": 3.0},
                                                   {"algo": "gpt", "run_name": "gpt", "config": {"seed": 1}},
                                                   {"step": 2, "time": 1.0, "val/loss": 2.0}])
    (run,) = mf.read_runs(tmp_path)
    assert [r["time"] for r in run["rows"]] == [5.0, 6.0]


def test_runs_that_differ_in_more_than_the_seed_are_separate_lines(tmp_path):
    mf = load()
    for seed in (1, 2):
        for lr in (1e-3, 1e-4):
            fake_run(tmp_path / "runs", f"d{seed}{lr}", "dqn", {"env_id": "E", "seed": seed, "learning_rate": lr},
                     [{"step": s, "charts/episodic_return": s * lr} for s in range(1, 9)])
    groups = mf.lines(mf.read_runs(tmp_path / "runs"), None)
    assert sorted((label, len(runs)) for label, runs in groups.items()) == [("learning_rate=0.0001", 2),
                                                                            ("learning_rate=0.001", 2)]
    assert sorted(mf.lines(mf.read_runs(tmp_path / "runs"), "learning_rate")) == ["0.0001", "0.001"]
    fake_run(tmp_path / "runs", "d3", "dqn", {"env_id": "E", "seed": 3, "learning_rate": 1e-3, "eval_episodes": 5},
             [{"step": 1, "charts/episodic_return": 0.0}])  # what only the final evaluation reads: the same line
    groups = mf.lines(mf.read_runs(tmp_path / "runs"), "learning_rate")
    assert sorted((label, len(runs)) for label, runs in groups.items()) == [("0.0001", 2), ("0.001", 3)]


def test_mean_band_is_the_mean_with_a_bootstrap_interval_around_it():
    mf = load()
    curves = np.array([[0.0, 10.0], [2.0, 10.0], [4.0, 10.0]])
    mean, lo, hi = mf.mean_band(curves)
    assert mean.tolist() == [2.0, 10.0]
    assert lo[0] < 2.0 < hi[0] and 0.0 <= lo[0] and hi[0] <= 4.0
    assert lo[1] == hi[1] == 10.0  # all seeds agree: no band


def test_a_line_is_drawn_only_where_every_seed_has_data():
    """Seeds end at different x (gpt's wall clock, levin_ts's expansions): past the shortest seed a mean of the
    others would jump while the legend counts every seed, so the line ends there."""
    mf = load()
    nan = np.nan
    mean, lo, hi = mf.mean_band(np.array([[0.0, 0.0, 0.0], [100.0, 100.0, nan], [100.0, nan, nan]]))
    assert mean[0] == 200 / 3 and lo[0] <= mean[0] <= hi[0]
    assert np.isnan(mean[1:]).all() and np.isnan(lo[1:]).all() and np.isnan(hi[1:]).all()


def test_a_field_an_older_run_lacks_is_its_own_line(tmp_path):
    """A null value and a field the run does not have at all are two configurations with two labels (one
    label would let one line overwrite the other)."""
    mf = load()
    for name, config in (("a__dqn__1__100", {"env_id": "E", "buffer": None}), ("b__dqn__1__100", {"env_id": "E"})):
        fake_run(tmp_path / "runs", name, "dqn", config, [{"step": 1, "charts/episodic_return": 1.0}])
    groups = mf.lines(mf.read_runs(tmp_path / "runs"), None)
    assert sorted(groups) == ["buffer unset", "buffer=None"]


def test_a_path_typed_two_ways_is_one_line(tmp_path):
    mf = load()
    for seed, data_dir in ((1, "data/shakespeare_char"), (2, "data/shakespeare_char/"), (3, "./data/shakespeare_char")):
        fake_run(tmp_path / "runs", f"shakespeare_char__gpt__{seed}__100", "gpt", {"data_dir": data_dir, "seed": seed},
                 [{"iter": 1, "val/loss": 2.0}])
    fake_run(tmp_path / "runs", "other__gpt__1__100", "gpt", {"data_dir": "data/other", "seed": 1},
             [{"iter": 1, "val/loss": 2.0}])
    groups = mf.lines(mf.read_runs(tmp_path / "runs"), None)
    assert sorted(len(runs) for runs in groups.values()) == [1, 3]


def test_runs_are_read_oldest_first_and_a_cut_off_last_line_is_skipped(tmp_path):
    mf = load()
    fake_run(tmp_path / "runs", "E__dqn__2__100", "dqn", {"env_id": "E"}, [{"step": 1, "charts/episodic_return": 1}])
    fake_run(tmp_path / "runs", "E__dqn__10__200", "dqn", {"env_id": "E"}, [{"step": 1, "charts/episodic_return": 2}])
    with open(tmp_path / "runs" / "E__dqn__10__200" / "metrics.jsonl", "a") as f:
        f.write('\n{"step": 2, "ti')  # a blank line, then a run killed while it wrote
    runs = mf.read_runs(tmp_path / "runs")
    assert [run["dir"].name for run in runs] == ["E__dqn__2__100", "E__dqn__10__200"]  # by start time, not name
    assert runs[1]["rows"] == [{"step": 1, "charts/episodic_return": 2}]


def test_the_figures_never_import_wandb():
    tree = ast.parse(SCRIPT.read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any("wandb" in str(m) for m in names | modules)


def test_the_command_draws_every_figure_from_tiny_fake_runs(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "figures"
    for seed in (1, 2, 3):
        fake_run(runs, f"dqn{seed}", "dqn", {"env_id": "CartPole-v1", "seed": seed},
                 [{"step": s, "time": s / 100, "charts/episodic_return": 10.0 * s + seed} for s in range(1, 50)])
        for baseline in ("none", "value"):
            fake_run(runs, f"rf{baseline}{seed}", "reinforce", {"env_id": "ShortCorridor-v0", "seed": seed,
                                                                 "baseline": baseline},
                     [{"step": s, "charts/episodic_return": -s, "charts/prob_right": 0.5 + s / 200} for s in range(20)])
    fake_run(runs, "lts", "levin_ts", {"search": "lts", "seed": 1, "levels_path": None},
             [{"step": i, "charts/expansions_total": 1000 * i, "charts/solved_total": 3 * i} for i in range(5)])
    fake_run(runs, "gpt", "gpt", {"pos_encoding": "rope", "data_dir": "data/shakespeare_char"},
             [{"step": i, "time": 2.0 * i, "val/loss": 4.0 - i / 10} for i in range(10)])
    fake_run(runs, "bpe", "bpe", {"trainer": "naive", "input": "x.txt"},
             [{"step": None, "train/merges": i, "train/seconds": i / 3} for i in range(10)])
    fake_run(runs, "dq", "dyna_q", {"env_id": "DynaMaze-v0", "num_runs": 2}, picture="dyna_q.png",
             rows=[{"episode": e, "eval/steps_per_episode/Dyna-Q n=0": 800 / e} for e in range(1, 30)])
    fake_run(runs, "s2s", "seq2seq_attention", {"data_path": None}, [], picture="attention.png")
    proc = run([sys.executable, str(SCRIPT), "--runs", str(runs), "--out", str(out)], cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    made = sorted(p.name for p in out.glob("*.png"))
    assert made == ["bpe-x.txt.png", "dqn-CartPole-v1.png", "dyna_q-DynaMaze-v0.png",
                    "dyna_q-fig8.2-DynaMaze-v0.png", "gpt-shakespeare_char.png", "levin_ts-generated.png", "reinforce-ShortCorridor-v0.png",
                    "reinforce-prob-right-ShortCorridor-v0.png", "seq2seq_attention-date-task.png"]
    for name in made:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(f"wrote {out / name}" in proc.stdout for name in made)


def broken_line(runs):
    fake_run(runs, "E__dqn__1__100", "dqn", {"env_id": "E"}, [{"step": 1}, {"step": 2}])
    path = runs / "E__dqn__1__100" / "metrics.jsonl"
    path.write_text(path.read_text().replace('{"step": 1}', '{"step": 1'))


@pytest.mark.parametrize("setup, extra, message", [
    (lambda p: None, [], "no such folder"),
    (lambda p: p.mkdir(), [], "no run folder with a metrics.jsonl"),
    (broken_line, [], "metrics.jsonl line 2 is not JSON: delete that line or the run folder."),
    (lambda p: fake_run(p, "x", "dqn", {}, []), ["--out", "runs/x/metrics.jsonl"], "cannot make that folder"),
])
def test_refusals_are_one_sentence(tmp_path, setup, extra, message):
    setup(tmp_path / "runs")
    proc = run([sys.executable, str(SCRIPT), "--runs", str(tmp_path / "runs"), *extra], cwd=tmp_path, timeout=60)
    assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr
