"""Tests that every script in algos/ passes: --help; copied alone, two ranks under torchrun with --track."""

import shutil
import sys

import pytest
from conftest import ALGOS, parse_command_line, run, script_module
from scripts import SCRIPTS, check_metrics_jsonl
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
def test_help(script, capsys, monkeypatch):
    """--help prints the manual and exits 0; parsed in-process as the script's __main__ parses (the
    other tests run every script as a command)."""
    with pytest.raises(SystemExit) as done:
        parse_command_line(script_module(script[:-3]), ["--help"], monkeypatch)
    assert done.value.code == 0
    manual = capsys.readouterr().out
    assert "--seed" in manual and "--track" in manual


@pytest.mark.parametrize("script", ALL)
def test_copied_alone_it_runs_on_two_ranks_and_logs_its_metrics(script, tmp_path):
    """The fork story: the file alone in an empty folder (it imports nothing of the repo) runs under
    torchrun on two CPU ranks (gloo) with --track (WANDB_MODE=offline). Only rank 0 prints, and only
    rank 0 writes a wandb run, inside its run folder, whose history has the script's metric keys, as has
    its runs/<run>/metrics.jsonl (written with or without --track: test_bad_inputs' twins, one process
    each and no --track, read theirs)."""
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
    folders = [p.parent for p in tmp_path.glob("runs/*/metrics.jsonl")]
    assert len(folders) == 1, f"expected one runs/<run>/metrics.jsonl (rank 0's), found {folders}"
    check_metrics_jsonl(script, folders[0])
    files = offline_runs(str(tmp_path))
    assert len(files) == 1, f"expected exactly one wandb run (rank 0's), found {files}"
    assert offline_runs(str(folders[0])) == files, f"the wandb run is not in the run folder {folders[0]}: {files}"
    logged = {key for row in history(files[0]) for key in row}
    missing = set(spec(script)["metrics"]) - logged
    assert not missing, f"{script} --track did not log {sorted(missing)}; it logged {sorted(logged)}"
