"""Full multi-seed learning runs behind the `benchmark` marker (minutes each).

    python -m pytest -m benchmark -s      # prints the numbers the README's results table shows

Each seed runs the script exactly as a user types it, one at a time, so the wall time is the
whole process (start-up, training and the final evaluation) on an otherwise idle machine.
"""

import pytest
from conftest import run_seeds

pytestmark = pytest.mark.benchmark


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
    assert all(r["mean"] >= -100 for r in rows), "the README reports 5/5 seeds"
    assert all(r["steps"] <= 200_000 for r in rows)
