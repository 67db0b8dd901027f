"""Shared helpers for the tests: where things are, and how to run a script as a user would."""

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ALGOS = ROOT / "algos"
# Offline copies of the downloads (tinyshakespeare, tiktoken's cache, Boxoban, Multi30k): the folder
# ALGOS_DATA_DIR names, else ../shared/data beside the checkout. Tests that need it skip without it.
DATA_ENV = "ALGOS_DATA_DIR"
SHARED_DATA = Path(os.environ.get(DATA_ENV) or ROOT.parent / "shared" / "data").expanduser().resolve()


def no_data(what: str) -> str:
    """The skip reason of a test that needs SHARED_DATA/<what>: names the variable and the missing path."""
    source = f"{DATA_ENV}={os.environ[DATA_ENV]}" if os.environ.get(DATA_ENV) else f"{DATA_ENV} unset, default ../shared/data"
    return f"needs {SHARED_DATA / what} ({source}): set {DATA_ENV} to the folder of offline data to run it"


def load_script(name: str):
    """Import algos/<name>.py as a module, so tests can call its pieces and main()."""
    spec = importlib.util.spec_from_file_location(name, ALGOS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    spec.loader.exec_module(module)
    return module


def script_env(**extra) -> dict:
    """The environment for a script run: no wandb network, one thread, offline tiktoken."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RANK", "WORLD_SIZE")}
    env.update(WANDB_MODE="disabled", WANDB_SILENT="true", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    if (SHARED_DATA / "tiktoken_cache").is_dir():
        env.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED_DATA / "tiktoken_cache"))
    env.update(extra)
    return env


def run(cmd: list[str], cwd: Path, timeout: float = 300, **env) -> subprocess.CompletedProcess:
    """Run a command, capture its output, and show it if the test fails."""
    proc = subprocess.run(cmd, cwd=cwd, env=script_env(**env), capture_output=True, text=True,
                          timeout=timeout)
    print(f"$ {' '.join(map(str, cmd))}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Small networks run fastest with one thread on this CPU; tests call main() in-process."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SEEDS = (1, 2, 3, 4, 5)
EVAL_LINE = re.compile(r"(greedy|deterministic) eval: (-?[\d.]+) \+- ([\d.]+) over (\d+) episodes after (\d+) "
                       r"steps in ([\d.]+) s \((\d+) SPS\)")


def run_seeds(script: str, args: list[str]) -> list[dict]:
    """The RL benchmarks: each seed runs the command exactly as a user types it, one at a time,
    and the final evaluation line of each run becomes a row of the printed table."""
    rows = []
    for seed in SEEDS:
        start = time.time()
        proc = run([sys.executable, str(ALGOS / script), *args, "--seed", str(seed)], cwd=ROOT, timeout=900)
        assert proc.returncode == 0, proc.stderr[-2000:]
        kind, mean, std, episodes, steps, train_s, sps = EVAL_LINE.search(proc.stdout).groups()
        rows.append(dict(seed=seed, mean=float(mean), std=float(std), episodes=int(episodes),
                         steps=int(steps), train_s=float(train_s), sps=int(sps), wall_s=time.time() - start))
    print(f"\n{script} {' '.join(args)}")
    print(f"| seed | {kind} eval (mean ± std) | episodes | env steps | train s | SPS | process wall s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['seed']} | {r['mean']:.1f} ± {r['std']:.1f} | {r['episodes']} | {r['steps']} | "
              f"{r['train_s']:.1f} | {r['sps']} | {r['wall_s']:.1f} |")
    return rows
