"""Full multi-seed learning runs behind the `benchmark` marker (minutes each).

    python -m pytest -m benchmark -s      # prints the numbers the README's results table shows

Each seed runs the script exactly as a user types it, one at a time, so the wall time is the
whole process (start-up, training and the final evaluation) on an otherwise idle machine.
"""

import re
import sys
import time

import pytest
from conftest import ALGOS, ROOT, run

pytestmark = pytest.mark.benchmark
SEEDS = (1, 2, 3, 4, 5)
EVAL_LINE = re.compile(r"greedy eval: (-?[\d.]+) \+- ([\d.]+) over (\d+) episodes after (\d+) steps "
                       r"in ([\d.]+) s \((\d+) SPS\)")


def run_seeds(script: str, args: list[str]) -> list[dict]:
    rows = []
    for seed in SEEDS:
        start = time.time()
        proc = run([sys.executable, str(ALGOS / script), *args, "--seed", str(seed)], cwd=ROOT, timeout=900)
        assert proc.returncode == 0, proc.stderr[-2000:]
        mean, std, episodes, steps, train_s, sps = EVAL_LINE.search(proc.stdout).groups()
        rows.append(dict(seed=seed, mean=float(mean), std=float(std), episodes=int(episodes),
                         steps=int(steps), train_s=float(train_s), sps=int(sps), wall_s=time.time() - start))
    print(f"\n{script} {' '.join(args)}")
    print("| seed | greedy eval (mean ± std) | episodes | env steps | train s | SPS | process wall s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['seed']} | {r['mean']:.1f} ± {r['std']:.1f} | {r['episodes']} | {r['steps']} | "
              f"{r['train_s']:.1f} | {r['sps']} | {r['wall_s']:.1f} |")
    return rows


def test_dqn_solves_mountaincar():
    rows = run_seeds("dqn.py", ["--env-id", "MountainCar-v0"])
    assert sum(r["mean"] >= -110 for r in rows) >= 4
    assert all(r["steps"] <= 120_000 for r in rows)
    assert all(r["wall_s"] <= 60 for r in rows), "each run must finish within 60 s"


def test_dqn_solves_cartpole_fast():
    rows = run_seeds("dqn.py", ["--env-id", "CartPole-v1"])
    assert sum(r["mean"] >= 475 for r in rows) >= 4
    assert all(r["steps"] <= 50_000 for r in rows)
    # A CleanRL-style DQN loop did about 7,400 SPS on this machine.
    assert min(r["sps"] for r in rows) >= 7_400


def test_dqn_solves_acrobot():
    rows = run_seeds("dqn.py", ["--env-id", "Acrobot-v1"])
    assert sum(r["mean"] >= -100 for r in rows) >= 4
