"""Tabular Dyna-Q and Dyna-Q+ (Sutton & Barto, 2nd ed., Chapter 8), in one file.

Dyna-Q learns from each real step twice: once directly, with a Q-learning update, and again and again by planning,
with n more Q-learning updates on transitions replayed from a learned model. The model is a table of the last
outcome of every (S, A) tried. Dyna-Q+ adds an exploration bonus to the planning reward, so that long-untried
actions look attractive and the agent rechecks a model that may have gone stale when the environment changed.

    direct RL (d), planning (f)   Q(S,A) <- Q(S,A) + alpha [R + gamma max_a Q(S',a) - Q(S,A)]
    model learning (e)            Model(S,A) <- R, S'     (a deterministic model: last outcome)
    Dyna-Q+ planning reward       R + kappa sqrt(tau),    tau = time steps since A last tried in S

The letters are the steps of the Tabular Dyna-Q box on p.164, one method of `DynaQ` each. Acting is epsilon-greedy
with ties broken at random, so with all Q = 0 the first episode is a random walk: about 869 steps on the Dyna maze
(the book's figure shows about 1700). Terminal transitions (the model keeps `terminated`) do not bootstrap.

The file registers the book's three mazes with gymnasium (6x9 grids; moves up, down, right, left; walls
and edges block; reward +1 on reaching the goal, which ends the episode), each with a preset (PRESETS)
of its figure's settings, so that picking a figure is picking its maze:
    DynaMaze-v0      Example 8.1, Figure 8.2: steps per episode for n = 0, 5, 50 planning steps
    BlockingMaze-v0  Example 8.2, Figure 8.4: the short way round is blocked after 1000 steps
    ShortcutMaze-v0  Example 8.3, Figure 8.5: a shorter way opens after 3000 steps
Any other gymnasium env with Discrete observation and action spaces works too (FrozenLake-v1, Taxi-v4,
CliffWalking-v1); on a stochastic one (FrozenLake's slippery ice) the model, one outcome per (S, A), is
an approximation. On Taxi the table starts optimistic (--q-init 20, above any return; S&B Section 2.6),
so the agent tries every action before it trusts one; planning then washes the optimism out.

Every curve is the mean of --num-runs independent runs. Under torchrun the runs are split across ranks
(rank r does runs r, r + world_size, ...) and their summed curves all-reduced, so two ranks give exactly
the curves of one process (run i is seeded with seed + i wherever it runs). Rank 0 alone prints, logs,
plots and saves. CPU only: each update touches one table entry.

References
    Sutton & Barto 2018, "Reinforcement Learning: An Introduction", 2nd ed., Sections 8.2-8.3
        (Dyna-Q box p.164; Figures 8.2, 8.4, 8.5; Dyna-Q+ and its footnote p.168).
    Sutton 1990, "Integrated architectures for learning, planning, and reacting based on
        approximating dynamic programming", ICML.
    Zhang, github.com/ShangtongZhang/reinforcement-learning-an-introduction: a widely used reproduction of the figures.

Usage
    python algos/dyna_q.py                                # Figure 8.2 (DynaMaze-v0, 30 runs)
    python algos/dyna_q.py --num-runs 5 --num-episodes 20 # a quick run
    python algos/dyna_q.py --env-id BlockingMaze-v0       # Figure 8.4
    python algos/dyna_q.py --env-id ShortcutMaze-v0       # Figure 8.5
    python algos/dyna_q.py --env-id DynaMaze-v0 --agents dyna-q dyna-q+ --planning-steps 5
    python algos/dyna_q.py --env-id Taxi-v4               # any discrete gymnasium env
    python algos/dyna_q.py --env-id Taxi-v4 --help        # the numbers Taxi-v4 runs with
    torchrun --standalone --nproc_per_node=2 algos/dyna_q.py    # runs split over 2 ranks
    python algos/dyna_q.py --track                        # log curves and figure to W&B
    python algos/dyna_q.py --save-model                   # Q tables to runs/<run_name>/
The figure goes to runs/<run_name>/dyna_q.png. Ctrl-C stops after the current run and reports those finished.
"""

import dataclasses
import json
import math
import os
import random
import signal
import sys
import time
from collections import namedtuple
from dataclasses import dataclass
from typing import Annotated, Iterator, Literal, Optional, get_type_hints

import gymnasium as gym
import numpy as np
import torch
import torch.distributed as dist
import tyro
from matplotlib.figure import Figure

ALGO = "dyna_q"


@dataclass(frozen=True)
class Range:
    """A numeric field's valid values, which check_args enforces: lo <= x <= hi (lo < x with lo_open), and finite."""

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False


@dataclass
class Args:
    """Dyna-Q / Dyna-Q+. --help shows the numbers --env-id runs with: its PRESETS entry, or these defaults. A run
    lasts --num-episodes or --total-steps: giving one of them on the command line unsets the other."""

    exp_name: str = "dyna_q"  # name of this experiment (part of the run name)
    seed: Annotated[int, Range(0, 2**31 - 1)] = 1  # seed of the experiment (run i uses seed + i on any rank)
    track: bool = False  # log to Weights & Biases
    wandb_project_name: str = "algos"  # the wandb project
    wandb_entity: Optional[str] = None  # the wandb entity (team)
    save_model: bool = False  # save every run's final Q table to runs/<run_name>/q_tables.npz
    eval_episodes: Annotated[int, Range(1)] = 10  # greedy episodes per run at the end, in the run's own env

    env_id: str = "DynaMaze-v0"  # DynaMaze-v0 (Fig 8.2), BlockingMaze-v0 (8.4), ShortcutMaze-v0 (8.5), any discrete env
    # the agents to compare; each runs once per value of --planning-steps
    agents: tuple[Literal["dyna-q", "dyna-q+"], ...] = ("dyna-q",)
    # n, the planning updates per real step (0 is plain one-step Q-learning)
    planning_steps: Annotated[tuple[int, ...], Range(0)] = (0, 5, 50)
    num_runs: Annotated[int, Range(1)] = 10  # independent runs averaged into each curve (all ranks together)
    num_episodes: Annotated[Optional[int], Range(1)] = 300  # episodes per run, for a steps-per-episode curve
    total_steps: Annotated[Optional[int], Range(1)] = None  # time steps per run, for a cumulative-reward curve
    alpha: Annotated[float, Range(0, 1, lo_open=True)] = 0.1  # step size
    epsilon: Annotated[float, Range(0, 1)] = 0.1  # probability of a random action
    gamma: Annotated[float, Range(0, 1)] = 0.95  # discount factor
    kappa: Annotated[float, Range(0)] = 1e-3  # Dyna-Q+ bonus weight: planning reward R + kappa sqrt(tau)
    q_init: Annotated[float, Range()] = 0.0  # initial Q(s, a); above every return it is optimistic (S&B 2.6)


# The settings of each figure, whole Args values; any flag given on the command line still wins.
PRESETS = {
    # Figure 8.2: the book's settings, 30 repetitions.
    "DynaMaze-v0": dataclasses.replace(Args(), env_id="DynaMaze-v0", num_runs=30, num_episodes=50),
    # Figures 8.4 and 8.5: the book gives no n, alpha, kappa or run count; these are Zhang's (References).
    "BlockingMaze-v0": dataclasses.replace(
        Args(), env_id="BlockingMaze-v0", agents=("dyna-q", "dyna-q+"), planning_steps=(10,), num_runs=20,
        num_episodes=None, total_steps=3000, alpha=1.0, kappa=1e-4),
    "ShortcutMaze-v0": dataclasses.replace(
        Args(), env_id="ShortcutMaze-v0", agents=("dyna-q", "dyna-q+"), planning_steps=(50,), num_runs=20,
        num_episodes=None, total_steps=6000, alpha=1.0, kappa=1e-3),
    # Rewards -1 a step, +20 at the drop-off, so no return exceeds 19: Q0 = 20 makes every action tried.
    "Taxi-v4": dataclasses.replace(Args(), env_id="Taxi-v4", alpha=0.5, gamma=0.99, q_init=20.0),
}


def preset(env_id: str) -> Args:
    """The defaults a user gets with --env-id env_id."""
    return PRESETS.get(env_id, dataclasses.replace(Args(), env_id=env_id))


# =============================================================================================
# ALGORITHM: the book's mazes, make_env, the Dyna-Q and Dyna-Q+ agents, one run, greedy evaluation. Read this first.
# =============================================================================================
class Maze(gym.Env):
    """A grid of Examples 8.1-8.3 (rules in the module docstring); the state is row * width + col. Once `change_at`
    time steps have passed since the env was made (across episodes, as in the book), `walls_after` replaces `walls`."""

    MOVES = ((-1, 0), (1, 0), (0, 1), (0, -1))  # up, down, right, left

    def __init__(self, height: int, width: int, start: tuple, goal: tuple, walls: list,
                 walls_after: Optional[list] = None, change_at: float = math.inf):
        self.height, self.width, self.start, self.goal = height, width, tuple(start), tuple(goal)
        self.walls, self.walls_after = {tuple(w) for w in walls}, {tuple(w) for w in walls_after or walls}
        self.observation_space = gym.spaces.Discrete(height * width)
        self.action_space = gym.spaces.Discrete(4)
        self.change_at = change_at
        self.time_step, self.pos = 0, self.start

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = self.start
        return self.pos[0] * self.width + self.pos[1], {}

    def step(self, action):
        walls = self.walls_after if self.time_step >= self.change_at else self.walls
        self.time_step += 1
        row, col = self.pos[0] + self.MOVES[action][0], self.pos[1] + self.MOVES[action][1]
        # An agent standing where a wall appears simply steps out of it on its next move.
        if 0 <= row < self.height and 0 <= col < self.width and (row, col) not in walls:
            self.pos = (row, col)
        at_goal = self.pos == self.goal
        return self.pos[0] * self.width + self.pos[1], float(at_goal), at_goal, False, {}


# The book's mazes as (row, col), row 0 at the top. Episodes end only at the goal.
gym.register("DynaMaze-v0", entry_point=Maze, kwargs=dict(
    height=6, width=9, start=(2, 0), goal=(0, 8),
    walls=[(1, 2), (2, 2), (3, 2), (0, 7), (1, 7), (2, 7), (4, 5)]))
gym.register("BlockingMaze-v0", entry_point=Maze, kwargs=dict(
    height=6, width=9, start=(5, 3), goal=(0, 8), change_at=1000,
    walls=[(3, c) for c in range(0, 8)], walls_after=[(3, c) for c in range(1, 9)]))
gym.register("ShortcutMaze-v0", entry_point=Maze, kwargs=dict(
    height=6, width=9, start=(5, 3), goal=(0, 8), change_at=3000,
    walls=[(3, c) for c in range(1, 9)], walls_after=[(3, c) for c in range(1, 8)]))


def make_env(env_id: str) -> gym.Env:
    try:
        env = gym.make(env_id)
    except (gym.error.Error, ImportError) as e:  # ImportError: an outdated id still registered, e.g. Hopper-v3
        raise SystemExit(f"--env-id {env_id}: {e} (list the registered ids with: "
                         "python -c \"import gymnasium; gymnasium.pprint_registry()\")") from None
    obs, act = env.observation_space, env.action_space
    if not all(isinstance(sp, gym.spaces.Discrete) and sp.start == 0 for sp in (obs, act)):
        raise SystemExit(f"Dyna-Q is tabular and needs Discrete observation and action spaces, but "
                         f"{env_id} has {obs} and {act}: use a discrete env such as Taxi-v4, or "
                         "a method with function approximation such as dqn.py for Box observations.")
    return env


def greedy(q_s: list, rng: random.Random) -> int:
    """argmax_a Q(S, a), ties broken at random."""
    best = max(q_s)
    return rng.choice([a for a, q in enumerate(q_s) if q == best])


# One step S, A -> R, S', real or simulated: what the model keeps of each (S, A) tried and planning replays.
Transition = namedtuple("Transition", "s a r s2 terminated")


class DynaQ:
    """Tabular Dyna-Q, one method per step of the box on p.164."""

    def __init__(self, n_states: int, n_actions: int, alpha: float, gamma: float,
                 epsilon: float, rng: random.Random, q_init: float = 0.0):
        self.n_actions, self.alpha, self.gamma, self.epsilon, self.rng = n_actions, alpha, gamma, epsilon, rng
        self.q = [[q_init] * n_actions for _ in range(n_states)]  # (a) initialise Q(s, a)
        self.model = {}     # S -> {A: Transition}, the last outcome of each action tried in S
        self.tried = {}     # S -> the actions taken in S so far
        self.observed = []  # the states observed so far, in order
        self.time_step = 0  # real time steps, across episodes

    def act(self, s: int) -> int:
        """(b) epsilon-greedy(S, Q)."""
        if self.rng.random() < self.epsilon:
            return self.rng.randrange(self.n_actions)
        return greedy(self.q[s], self.rng)

    def update(self, s: int, a: int, r: float, s2: int, terminated: bool) -> None:
        """(d) and (f): one Q-learning update; no bootstrap from a terminal S'."""
        target = r if terminated else r + self.gamma * max(self.q[s2])
        self.q[s][a] += self.alpha * (target - self.q[s][a])

    def learn_model(self, s: int, a: int, r: float, s2: int, terminated: bool) -> None:
        """(e) Model(S, A) <- R, S'."""
        self.time_step += 1
        if s not in self.model:
            self.model[s], self.tried[s] = {}, []
            self.observed.append(s)
        if a not in self.model[s]:
            self.tried[s].append(a)
        self.model[s][a] = Transition(s, a, r, s2, terminated)

    def sample_model(self) -> Transition:
        """(f) S <- random previously observed state; A <- random action previously taken in S; R, S' <- Model(S, A)."""
        s = self.rng.choice(self.observed)
        return self.model[s][self.rng.choice(self.tried[s])]

    def plan(self, n: int) -> None:
        """(f) n Q-learning updates on simulated experience."""
        for _ in range(n):
            self.update(*self.sample_model())


class DynaQPlus(DynaQ):
    """Dyna-Q+ (Section 8.3): planning reward R + kappa sqrt(tau). Per the footnote on p.168, planning may pick
    actions never tried in S, which the model takes to lead back to S with reward 0 (tau counts from step 0)."""

    def __init__(self, *args, kappa: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.kappa = kappa
        self.last_tried = {}  # (S, A) -> the time step A was last taken in S

    def learn_model(self, s, a, r, s2, terminated) -> None:
        super().learn_model(s, a, r, s2, terminated)
        self.last_tried[(s, a)] = self.time_step

    def sample_model(self) -> Transition:
        s = self.rng.choice(self.observed)
        a = self.rng.randrange(self.n_actions)  # any action, tried or not
        return self.model[s].get(a) or Transition(s, a, 0.0, s, False)

    def plan(self, n: int) -> None:
        """(f) with the bonus added to the model's reward."""
        for _ in range(n):
            s, a, r, s2, terminated = self.sample_model()
            tau = self.time_step - self.last_tried.get((s, a), 0)
            self.update(s, a, r + self.kappa * math.sqrt(tau), s2, terminated)


def run_once(env: gym.Env, agent: DynaQ, n: int, args: Args, seed: int) -> list:
    """One independent run (the book's "repetition"); its curve: steps per episode, or cumulative reward per step."""
    curve, episode_steps, cumulative_reward = [], 0, 0.0
    s, _ = env.reset(seed=seed)
    while (len(curve) < args.num_episodes) if args.num_episodes else (agent.time_step < args.total_steps):
        a = agent.act(s)                                      # (b)
        s2, r, terminated, truncated, _ = env.step(a)         # (c)
        agent.update(s, a, r, s2, terminated)                 # (d)
        agent.learn_model(s, a, r, s2, terminated)            # (e)
        agent.plan(n)                                         # (f)
        episode_steps += 1
        cumulative_reward += r
        if args.total_steps:
            curve.append(cumulative_reward)
        s = s2
        if terminated or truncated:
            if args.num_episodes:
                curve.append(episode_steps)
            s, _ = env.reset()
            episode_steps = 0
    return curve


def evaluate(env: gym.Env, q: list, episodes: int, rng: random.Random, max_steps: int = 1000) -> Iterator:
    """Yields (return, length) of greedy episodes in the run's own env (so a maze keeps the walls it
    has reached). An episode stops after max_steps: a greedy policy can circle forever in a maze."""
    for _ in range(episodes):
        s, _ = env.reset()
        ret, length, done = 0.0, 0, False
        while not done and length < max_steps:
            s, r, terminated, truncated, _ = env.step(greedy(q[s], rng))
            ret, length, done = ret + r, length + 1, terminated or truncated
        yield ret, length


# =============================================================================================
# MACHINERY: argument checks, run folder, checkpoints, Ctrl-C, distributed set-up, logging.
# Not the algorithm: a first reading can skip to main().
# =============================================================================================
def parse_args() -> Args:
    """Presets first, then the command line: --env-id X makes preset(X) the defaults that the other flags override."""
    env_id, argv = Args.env_id, sys.argv[1:]
    for i, arg in enumerate(argv):
        flag, eq, value = arg.partition("=")
        if flag in ("--env-id", "--env_id") and (eq or i + 1 < len(argv)):  # tyro takes both spellings
            env_id = value if eq else argv[i + 1]
    default = preset(env_id)
    given = {a.split("=", 1)[0].replace("_", "-") for a in argv}  # tyro takes --total_steps too
    if {"--num-episodes", "--total-steps"} & given:  # a budget given replaces the preset's
        default = dataclasses.replace(default, num_episodes=None, total_steps=None)
    return tyro.cli(Args, default=default)


def check_args(args: Args) -> None:
    """Refuse in one sentence a numeric field outside its declared Range (nan, inf too) or an empty Optional[str]."""
    hints = get_type_hints(Args, include_extras=True)
    for name, value in dataclasses.asdict(args).items():
        if value == "" and hints[name] == Optional[str]:  # else it would pass for "not given" (None) unseen
            raise SystemExit(f"--{name.replace('_', '-')} was given an empty value: give one, or leave the flag out.")
        for r in (m for m in getattr(hints[name], "__metadata__", ()) if isinstance(m, Range)):
            for v in value if isinstance(value, (tuple, list)) else (value,):
                if v is not None and not (math.isfinite(v) and (v > r.lo if r.lo_open else v >= r.lo) and v <= r.hi):
                    bounds = f"{'above' if r.lo_open else 'at least'} {r.lo:g}" if r.lo > -math.inf else "finite"
                    bounds += f" and at most {r.hi:g}" if r.hi < math.inf else ""
                    raise SystemExit(f"--{name.replace('_', '-')} {v} is not allowed: it must be {bounds}.")


def validate(args: Args) -> None:
    """Combinations of flags that would otherwise run silently wrong, one sentence each."""
    if (args.num_episodes is None) == (args.total_steps is None):
        raise SystemExit("give exactly one of --num-episodes (a steps-per-episode curve) and "
                         "--total-steps (a cumulative-reward curve), not both or neither.")
    if not args.agents or not args.planning_steps:
        raise SystemExit("--agents and --planning-steps need at least one value each.")
    if len(set(args.planning_steps)) < len(args.planning_steps) or len(set(args.agents)) < len(args.agents):
        raise SystemExit("--agents and --planning-steps must not repeat a value (each gives a curve).")


def make_run_dir(name: str) -> str:
    """Create runs/<name>/ before training (an unwritable folder fails at once); a same-second twin gets <name>-2."""
    for path in [f"runs/{name}"] + [f"runs/{name}-{n}" for n in range(2, 100)]:
        try:
            os.makedirs(path)
            return path
        except FileExistsError:
            continue
        except OSError as e:
            raise SystemExit(f"cannot create the run folder {path} ({e.strerror}): "
                             "run from a folder you can write to.") from None
    raise SystemExit(f"runs/{name}: 99 runs of this name exist already; choose another --exp-name.")


class StopFlag:
    """Ctrl-C sets .requested and the loop stops at the end of its step, so the work is saved whole; a second Ctrl-C
    quits at once without saving. Under torchrun every rank hears it."""

    def __init__(self):
        self.requested, self.at = False, 0.0
        signal.signal(signal.SIGINT, self.handler)

    def handler(self, signum, frame):
        if not self.requested:
            self.requested, self.at = True, time.time()
            print("Ctrl-C: stopping after this step to save the work (again to quit without saving).",
                  file=sys.stderr, flush=True)
        elif time.time() - self.at > 2:  # torchrun repeats the first Ctrl-C at once: not a second one
            raise SystemExit("stopped by a second Ctrl-C; nothing was saved.")


class RunLog:
    """Every logged row goes to <run_dir>/metrics.jsonl as the run goes (one JSON object a line, after a
    first line with the config), so any run can be read back or plotted without wandb; with --track the
    same rows go to wandb too. Pictures and charts go to wandb only."""

    def __init__(self, args: Args, run_name: str, run_dir: str):
        self.wandb = None
        if args.track:  # a wandb run in run_dir, or one sentence saying why wandb could not start
            import wandb  # imported here so that a plain run does not pay for it
            try:
                wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, name=run_name,
                           config=dataclasses.asdict(args), dir=run_dir)
            except Exception as e:
                raise SystemExit(f"--track: wandb could not start ({type(e).__name__}: {str(e).splitlines()[0]}); "
                                 "run `wandb login`, or set WANDB_MODE=offline to log to files.") from None
            self.wandb = wandb
        self.path, self.start = os.path.join(run_dir, "metrics.jsonl"), time.time()
        self.file = open(self.path, "a", buffering=1)  # line-buffered: each row is in the file once printed
        header = {"algo": ALGO, "run_name": run_name, "config": dataclasses.asdict(args)}
        print(json.dumps(header, default=float), file=self.file)
        print(f"metrics: {self.path}")

    def log(self, row: dict, step: Optional[int] = None) -> None:
        line = {"step": step, "time": round(time.time() - self.start, 3)}
        line |= {k: v for k, v in row.items() if isinstance(v, (int, float, str, list, np.generic))}
        print(json.dumps(line, default=float), file=self.file)
        if self.wandb:
            self.wandb.log(row, step=step)

    def close(self) -> None:
        self.file.close()
        if self.wandb:
            self.wandb.finish()


def plot(path: str, curves: np.ndarray, labels: list, title: str, by_episode: bool, change_at: float) -> None:
    """The figure as a PNG, written atomically."""
    fig = Figure(figsize=(6, 4), dpi=120)
    ax = fig.subplots()
    ax.plot(np.arange(1, curves.shape[1] + 1), curves.T, label=labels)
    if by_episode:
        ax.set(xlabel="Episodes", ylabel="Steps per episode")
        if curves.shape[1] > 1:  # like Fig 8.2, leave the first episode (a random walk) off the scale
            ax.set_ylim(0, 1.05 * curves[:, 1:].max())
    else:
        ax.set(xlabel="Time steps", ylabel="Cumulative reward")
        if change_at < curves.shape[1]:
            ax.axvline(change_at, color="grey", linestyle=":", label="walls change")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path + ".tmp", format="png")
    os.replace(path + ".tmp", path)


def main(args: Args) -> dict:
    """Run --num-runs runs of every agent, average and report (Ctrl-C: the finished runs, exit 130). Returns global_step
    (real time steps, all runs), wall_time, charts/SPS, eval/runs, eval/episodes (greedy, all runs) and per curve label
    (e.g. "Dyna-Q n=5") eval/steps_per_episode/<label> or eval/cumulative_reward/<label> (a list, one mean per episode
    or time step), and eval/mean_return/, eval/std_return/ and eval/mean_length/<label> of the greedy episodes."""
    check_args(args)
    validate(args)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1  # under torchrun, which sets WORLD_SIZE and RANK
    rank, world_size = (int(os.environ.get("RANK", 0)), int(os.environ["WORLD_SIZE"])) if distributed else (0, 1)
    if distributed:
        dist.init_process_group("gloo")  # gloo: the tables and curves live in host memory
    is_main = rank == 0

    probe = make_env(args.env_id)  # refuses an env that is not tabular before anything is written
    n_states, n_actions = int(probe.observation_space.n), int(probe.action_space.n)
    change_at = getattr(probe.unwrapped, "change_at", math.inf)
    probe.close()
    # With Q0 < 0 an action tried beats the untried ones: a greedy agent repeats its first moves round a loop.
    if args.epsilon == 0 and args.q_init < 0 and args.num_episodes and probe.spec.max_episode_steps is None:
        raise SystemExit(f"--epsilon 0 with --q-init {args.q_init} below 0 can circle forever in {args.env_id}, "
                         "whose episodes have no time limit: raise --epsilon above 0 or --q-init to 0 or more.")
    run_name = f"{args.env_id.replace(':', '_').replace('/', '_')}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_dir = make_run_dir(run_name) if is_main else ""
    logger = RunLog(args, run_name, run_dir) if is_main else None  # metrics.jsonl, and wandb with --track
    by_episode = args.num_episodes is not None
    length = args.num_episodes if by_episode else args.total_steps
    curve_key = "eval/steps_per_episode" if by_episode else "eval/cumulative_reward"
    agents = [(kind, n) for kind in args.agents for n in args.planning_steps]
    labels = [f"{'Dyna-Q+' if kind == 'dyna-q+' else 'Dyna-Q'} n={n}" for kind, n in agents]
    my_runs = range(rank, args.num_runs, world_size)  # this rank's share of the runs
    if is_main:
        print(f"{args.env_id}: {n_states} states x {n_actions} actions; {args.num_runs} runs over {world_size} rank(s)")
        print("config: " + ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(args).items()))

    # Sums over this rank's finished runs; the all-reduce below adds the other ranks' sums.
    curves = np.zeros((len(agents), length))
    evals = np.zeros((len(agents), 4))  # greedy episodes: the sums of returns, squared returns, lengths, episodes
    q_tables = np.zeros((len(agents), args.num_runs, n_states, n_actions) if args.save_model else 0)
    finished = np.zeros(args.num_runs)  # 1 for each run that every agent completed
    time_steps = np.zeros(1)            # real time steps, all agents and runs
    start_time = last_print = time.time()
    stop = StopFlag()  # every rank listens: the report sums the runs that each rank finished
    for done, run in enumerate(my_runs, 1):
        if stop.requested:
            break
        for i, (kind, n) in enumerate(agents):
            env, rng = make_env(args.env_id), random.Random(args.seed + run)
            hyper = dict(alpha=args.alpha, gamma=args.gamma, epsilon=args.epsilon, rng=rng, q_init=args.q_init)
            agent = (DynaQPlus(n_states, n_actions, kappa=args.kappa, **hyper) if kind == "dyna-q+"
                     else DynaQ(n_states, n_actions, **hyper))
            curves[i] += run_once(env, agent, n, args, seed=args.seed + run)
            for ret, steps in evaluate(env, agent.q, args.eval_episodes, rng):
                evals[i] += (ret, ret * ret, steps, 1)
            time_steps += agent.time_step
            if args.save_model:
                q_tables[i, run] = agent.q
            env.close()
        finished[run] = 1
        if is_main and (time.time() - last_print >= 1.0 or done == len(my_runs)):
            print(f"{done}/{len(my_runs)} run(s) on this rank in {time.time() - start_time:.1f} s")
            last_print = time.time()
    if distributed:
        for array in (curves, evals, q_tables, finished, time_steps):
            dist.all_reduce(torch.from_numpy(array))  # sums in place: the tensor shares the memory
    num_runs, global_step = int(finished.sum()), int(time_steps[0])
    if num_runs == 0:
        if is_main:
            print("interrupted before the first run finished: there is nothing to report or save.")
        sys.exit(130)
    curves /= num_runs
    wall_time = time.time() - start_time

    metrics = {"global_step": global_step, "wall_time": wall_time, "charts/SPS": int(global_step / wall_time),
               "eval/runs": num_runs, "eval/episodes": int(evals[0, 3])}  # column 3: episodes (equal for every agent)
    for label, curve, (returns, squares, lengths, episodes) in zip(labels, curves, evals):
        metrics[f"{curve_key}/{label}"] = curve.tolist()
        metrics[f"eval/mean_return/{label}"] = returns / episodes
        metrics[f"eval/std_return/{label}"] = math.sqrt(max(squares / episodes - (returns / episodes) ** 2, 0.0))
        metrics[f"eval/mean_length/{label}"] = lengths / episodes
    if is_main:
        print(f"\n{'steps per episode' if by_episode else 'cumulative reward'}, mean of {num_runs} runs")
        print(f"{'episode' if by_episode else 'time step':>10} " + " ".join(f"{label:>14}" for label in labels))
        # rows: episodes 1-10 and every fifth of the run, or every twelfth of the time steps (the mazes' change points)
        rows = set(range(1, min(10, length) + 1)) if by_episode else set()
        rows |= set(np.linspace(0, length, 6 if by_episode else 13)[1:].round().astype(int))
        for x in sorted(x for x in rows if x >= 1):  # a short run would otherwise round to a row 0
            print(f"{x:>10} " + " ".join(f"{curve[x - 1]:>14.1f}" for curve in curves))
        print()
        for label in labels:
            print(f"{label}: greedy eval {metrics[f'eval/mean_return/{label}']:.2f} +- "
                  f"{metrics[f'eval/std_return/{label}']:.2f} return, "
                  f"{metrics[f'eval/mean_length/{label}']:.1f} steps over {metrics['eval/episodes']} episodes")
        print(f"{num_runs} runs x {len(agents)} agent(s): {global_step} time steps in {wall_time:.1f} s "
              f"({metrics['charts/SPS']} SPS)")
        figure = os.path.join(run_dir, "dyna_q.png")
        plot(figure, curves, labels, f"{args.env_id}, mean of {num_runs} runs", by_episode, change_at)
        print(f"wrote {figure}")
        # The curves (at most about 1000 rows each), then the metrics; with --track a line chart and the figure too.
        x_key, stride = "episode" if by_episode else "time_step", max(1, length // 1000)
        xs, wandb = list(range(stride, length + 1, stride)), logger.wandb
        last = {k: v for k, v in metrics.items() if not isinstance(v, list)}
        if wandb:
            wandb.define_metric(f"{curve_key}/*", step_metric=x_key)
            last[f"charts/{curve_key.split('/')[1]}"] = wandb.plot.line_series(xs=xs, keys=labels, xname=x_key,
                ys=[curve[stride - 1::stride].tolist() for curve in curves], title=f"{args.env_id}: {curve_key}")
            last["charts/figure"] = wandb.Image(figure)
        for x in xs:
            logger.log({x_key: x, **{f"{curve_key}/{label}": curve[x - 1] for label, curve in zip(labels, curves)}})
        logger.log(last)
        logger.close()
        if args.save_model:
            path = os.path.join(run_dir, "q_tables.npz")
            runs = np.flatnonzero(finished)  # all of them, unless Ctrl-C stopped the run early
            with open(path + ".tmp", "wb") as f:  # a file object, so numpy adds no .npz suffix
                np.savez(f, env_id=args.env_id, labels=labels, runs=runs, q_tables=q_tables[:, runs])
            os.replace(path + ".tmp", path)
            print(f"saved {path}: q_tables[agent, run, state, action] of the runs numbered in runs")
        else:
            print(f"(the Q tables were not saved: add --save-model to keep them in {run_dir}/q_tables.npz)")
        if num_runs < args.num_runs:
            kept = "the table, the figure and the Q tables" if args.save_model else "the table and the figure"
            print(f"interrupted after {num_runs} of {args.num_runs} runs: {kept} show only those.")
    if distributed:
        dist.barrier()  # all ranks finished (rank 0 evaluates last) before the group goes
        dist.destroy_process_group()
    if num_runs < args.num_runs:
        sys.exit(130)
    return metrics


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # progress lines appear even when redirected
    try:
        main(parse_args())
    except KeyboardInterrupt:  # Ctrl-C before the training loop listens for it
        print("stopped by Ctrl-C before training; nothing was saved.", file=sys.stderr)
        sys.exit(130)
