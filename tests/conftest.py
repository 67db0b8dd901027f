"""Shared helpers for the tests: where things are, and how to run a script as a user would."""

import importlib.util
import os
import re
import signal
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


def pytest_xdist_auto_num_workers(config) -> int:
    """pytest.ini's `-n auto`: the default run spreads its tests over worker processes, at most 4 (most
    tests wait on a subprocess or on one core: on 2 cores two workers halve the wall time). A run that
    selects the benchmark or gpu marker, or asks for -s, runs in this one process instead: one benchmark
    at a time, so its timing and its printed table are its own (xdist would swallow -s's output)."""
    selected = (config.getoption("markexpr") or "").replace("not benchmark", "").replace("not gpu", "")
    if "benchmark" in selected or "gpu" in selected or config.getoption("capture") == "no":
        return 0
    return min(os.cpu_count() or 1, 4)


def no_data(what: str) -> str:
    """The skip reason of a test that needs SHARED_DATA/<what>: names the variable and the missing path."""
    if os.environ.get(DATA_ENV):
        source = f"{DATA_ENV}={os.environ[DATA_ENV]}"
    else:
        source = f"{DATA_ENV} unset, default ../shared/data"
    return f"needs {SHARED_DATA / what} ({source}): set {DATA_ENV} to the folder of offline data to run it"


def load_script(name: str):
    """Import algos/<name>.py as a module, so tests can call its pieces and main()."""
    spec = importlib.util.spec_from_file_location(name, ALGOS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    spec.loader.exec_module(module)
    return module


def script_module(name: str):
    """algos/<name>.py imported once per process: a second import would register its gymnasium envs again,
    with classes that the module a test file already holds no longer matches."""
    module = sys.modules.get(name)
    if module is None or getattr(module, "__file__", "") != str(ALGOS / f"{name}.py"):
        module = load_script(name)
    return module


def parse_command_line(module, argv: list[str], monkeypatch):
    """The script's Args from a command line, as its __main__ parses it (presets first, where it has them)."""
    monkeypatch.setattr(sys, "argv", [Path(module.__file__).name, *argv])
    return module.parse_args() if hasattr(module, "parse_args") else module.tyro.cli(module.Args)


def refusal(module, argv: list[str], monkeypatch) -> str:
    """The one-line message a command line is refused with, parsed and run in-process as the script's
    __main__ does: a SystemExit's message is what the command prints, with no traceback (test_bad_inputs
    runs such refusals as commands)."""
    class NotRefused(Exception):  # not an OSError, which a script may catch
        pass

    def too_long(*_):
        raise NotRefused(f"{argv} was not refused within 60 s: it runs")

    previous = signal.signal(signal.SIGALRM, too_long)
    signal.alarm(60)
    try:
        with pytest.raises(SystemExit) as refused:
            module.main(parse_command_line(module, argv, monkeypatch))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    message = str(refused.value.code)
    assert "\n" not in message, f"more than one line: {message!r}"
    return message


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


# The RL benchmarks (issue 22): ten seeds a command, summarised as Agarwal et al. 2021 ask (rl_stats.py).
SEEDS = tuple(range(1, 11))
# Their run folders go to bench/runs/ (runs/<run>/metrics.jsonl each), which docs/make_figures.py draws:
#     python docs/make_figures.py --runs bench/runs
BENCH = ROOT / "bench"
EVAL_LINE = re.compile(r"(greedy|deterministic|stochastic) eval: (-?[\d.]+) \+- ([\d.]+) over (\d+) episodes "
                       r"after (\d+) steps in ([\d.]+) s \((\d+) SPS\)")
LAST_100 = re.compile(r"mean return of the last \d+ training episodes: (-?[\d.]+|nan)")  # ppo.py, dqn.py
P_RIGHT = re.compile(r"P\(right\) ([\d.]+)")  # reinforce.py's short corridor


def run_seeds(script: str, args: list[str], bar: float, seeds: tuple = SEEDS, timeout: float = 900) -> list[dict]:
    """Each seed runs the command exactly as a user types it, one at a time, in bench/; the final
    evaluation line of each run becomes a row of the printed table, and a second table summarises the
    seeds: mean and IQM with 95% bootstrap intervals (one environment a row, so the stratified bootstrap
    is the plain percentile bootstrap over its ten seeds), the share of seeds >= bar, the worst."""
    from rl_stats import summarize, table_row

    BENCH.mkdir(exist_ok=True)
    rows = []
    for seed in seeds:
        start = time.time()
        proc = run([sys.executable, str(ALGOS / script), *args, "--seed", str(seed)], cwd=BENCH, timeout=timeout)
        assert proc.returncode == 0, proc.stderr[-2000:]
        kind, mean, std, episodes, steps, train_s, sps = EVAL_LINE.search(proc.stdout).groups()
        p, last = P_RIGHT.search(proc.stdout), LAST_100.search(proc.stdout)
        rows.append(dict(seed=seed, mean=float(mean), std=float(std), episodes=int(episodes), steps=int(steps),
                         train_s=float(train_s), sps=int(sps), wall_s=time.time() - start,
                         p=float(p.group(1)) if p else None, last100=float(last.group(1)) if last else None))
    print(f"\n{script} {' '.join(args)}")
    print(f"| seed | {kind} eval (mean ± std) | episodes | last 100 training episodes | env steps | train s | SPS "
          "| process wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        last = "-" if r["last100"] is None else f"{r['last100']:.1f}"
        print(f"| {r['seed']} | {r['mean']:.1f} ± {r['std']:.1f} | {r['episodes']} | {last} | {r['steps']} | "
              f"{r['train_s']:.1f} | {r['sps']} | {r['wall_s']:.1f} |")
    print("\n| command | seeds | mean [95% CI] | IQM [95% CI] | seeds ≥ bar | worst |\n|---|---|---|---|---|---|")
    print(table_row(f"`{script} {' '.join(args)}`", summarize([r["mean"] for r in rows], bar), bar))
    print(f"env steps {min(r['steps'] for r in rows)}-{max(r['steps'] for r in rows)}, "
          f"wall {min(r['wall_s'] for r in rows):.1f}-{max(r['wall_s'] for r in rows):.1f} s, "
          f"SPS {min(r['sps'] for r in rows)}-{max(r['sps'] for r in rows)}")
    return rows


def share(rows: list[dict], passed) -> float:
    """The share of seeds whose row passes."""
    return sum(map(passed, rows)) / len(rows)


def side_by_side_sps(module, env_id: str, loop, steps: int, monkeypatch, rounds: int = 3) -> tuple[list, list]:
    """A script's preset and a peer loop timed in this process on CPU seconds, interleaved, `rounds`
    times: an absolute SPS bar fails on a loaded machine whatever the code does; this ratio holds up.
    The script's `time` module is swapped for one whose time() is process_time."""
    import dataclasses
    import types

    import torch

    monkeypatch.setattr(module, "time", types.SimpleNamespace(time=time.process_time, sleep=time.sleep))
    torch.set_num_threads(1)
    ours, peer = [], []
    for _ in range(rounds):
        args = dataclasses.replace(module.preset(env_id), eval_episodes=1, log_interval=10 ** 9)
        ours.append(module.main(args)["charts/SPS"])
        peer.append(loop(steps))
    print(f"\n{module.ALGO}.py {env_id} SPS (CPU seconds) {ours}, peer loop {[round(x) for x in peer]}: "
          f"{max(ours) / max(peer):.2f}x")
    return ours, peer
