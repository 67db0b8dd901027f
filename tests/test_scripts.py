"""Tests that every script in algos/ passes: --help, runs copied alone, torchrun, --track."""

import json
import shutil
import sys

import pytest
from conftest import ALGOS, run
from scripts import SCRIPTS
from wandb_history import history, offline_runs

ALL = sorted(p.name for p in ALGOS.glob("*.py"))


def spec(script: str) -> dict:
    if script not in SCRIPTS:
        pytest.fail(f"algos/{script} has no entry in tests/scripts.py: add its tiny arguments "
                    "and the wandb metrics it logs, so the shared tests cover it.")
    return SCRIPTS[script]


def test_every_spec_has_a_script():
    assert set(SCRIPTS) <= set(ALL), f"tests/scripts.py names missing scripts: {set(SCRIPTS) - set(ALL)}"


@pytest.mark.parametrize("script", ALL)
def test_help(script, tmp_path):
    proc = run([sys.executable, str(ALGOS / script), "--help"], cwd=tmp_path, timeout=120)
    assert proc.returncode == 0
    assert "--seed" in proc.stdout and "--track" in proc.stdout


@pytest.mark.parametrize("script", ALL)
def test_runs_copied_alone(script, tmp_path):
    """The fork story: the file alone in an empty folder runs (it imports nothing of the repo), and
    writes runs/<run>/metrics.jsonl with the script's metric keys."""
    shutil.copy(ALGOS / script, tmp_path / script)
    proc = run([sys.executable, script, *spec(script)["tiny"]], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # Issue 22: without --track the run still leaves its metrics, the same keys wandb would get.
    files = list(tmp_path.glob("runs/*/metrics.jsonl"))
    assert len(files) == 1, f"expected one runs/<run>/metrics.jsonl, found {files}"
    header, *rows = [json.loads(line) for line in files[0].read_text().splitlines()]
    assert header["algo"] == script[:-3] and header["config"]["seed"] == 1, header
    logged = {key for row in rows for key in row}
    missing = set(spec(script)["metrics"]) - set(spec(script).get("wandb_only", ())) - logged
    assert not missing, f"{script}'s metrics.jsonl lacks {sorted(missing)}; it has {sorted(logged)}"


@pytest.mark.parametrize("script", ALL)
def test_torchrun_two_ranks(script, tmp_path):
    """Two CPU ranks (gloo) finish; only rank 0 prints, and only rank 0 writes a wandb run."""
    shutil.copy(ALGOS / script, tmp_path / script)
    logs = tmp_path / "torchrun_logs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "--log-dir", str(logs), "--redirects", "3", script, *spec(script)["tiny"], "--track"]
    proc = run(cmd, cwd=tmp_path, timeout=300, WANDB_MODE="offline")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rank0 = list(logs.glob("*/attempt_0/0/stdout.log"))
    rank1 = list(logs.glob("*/attempt_0/1/stdout.log"))
    assert len(rank0) == len(rank1) == 1, f"expected one log per rank under {logs}"
    assert rank0[0].read_text().strip(), "rank 0 printed nothing"
    assert rank1[0].read_text().strip() == "", f"rank 1 printed:\n{rank1[0].read_text()[:500]}"
    assert len(offline_runs(str(tmp_path))) == 1, "expected exactly one wandb run (rank 0's)"


@pytest.mark.parametrize("script", ALL)
def test_track_offline_logs_metrics(script, tmp_path):
    """--track with WANDB_MODE=offline writes a run under runs/ whose history has the metrics."""
    proc = run([sys.executable, str(ALGOS / script), *spec(script)["tiny"], "--track"],
               cwd=tmp_path, WANDB_MODE="offline")
    assert proc.returncode == 0, proc.stderr[-2000:]
    files = offline_runs(str(tmp_path / "runs"))
    assert len(files) == 1, f"expected one offline wandb run under runs/, found {files}"
    logged = {key for row in history(files[0]) for key in row}
    missing = set(spec(script)["metrics"]) - logged
    assert not missing, f"{script} --track did not log {sorted(missing)}; it logged {sorted(logged)}"
