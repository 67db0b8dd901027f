"""Tabular Dyna-Q and Dyna-Q+ (Sutton & Barto, 2nd ed., Chapter 8), in one file.

Dyna-Q learns from each real step twice: once directly, with a Q-learning update, and again
and again by planning, with n more Q-learning updates on transitions replayed from a learned
model. The model is a table of the last outcome of every (S, A) tried. Dyna-Q+ adds an
exploration bonus to the planning reward, so that long-untried actions look attractive and the
agent rechecks a model that may have gone stale when the environment changed.

    direct RL (d), planning (f)   Q(S,A) <- Q(S,A) + alpha [R + gamma max_a Q(S',a) - Q(S,A)]
    model learning (e)            Model(S,A) <- R, S'     (a deterministic model: last outcome)
    Dyna-Q+ planning reward       R + kappa sqrt(tau),    tau = time steps since A last tried in S

The letters are the steps of the Tabular Dyna-Q box on p.164; `DynaQ` below has one method per
step. Acting is epsilon-greedy with ties broken at random: with all Q = 0 the first episode is
a random walk, which on the Dyna maze takes about 869 steps on average (the book's figure shows
about 1700). Terminal transitions store `terminated` in the model and do not bootstrap.

The file registers the book's three mazes with gymnasium (6x9 grids; moves up, down, right,
left; walls and edges block; reward +1 on reaching the goal, which ends the episode):
    DynaMaze-v0      Example 8.1, Figure 8.2: steps per episode for n = 0, 5, 50 planning steps
    BlockingMaze-v0  Example 8.2, Figure 8.4: the short way round is blocked after 1000 steps
    ShortcutMaze-v0  Example 8.3, Figure 8.5: a shorter way opens after 3000 steps
Each env id fills its figure's settings from ENV_DEFAULTS, so picking a figure is picking its
maze; any flag given on the command line wins. Any other gymnasium env with Discrete
observation and action spaces works too (FrozenLake-v1, Taxi-v4, CliffWalking-v1). The model
remembers one outcome per (S, A), so on a stochastic env (FrozenLake's slippery ice) it is an
approximation. On Taxi the table starts optimistic (--q-init 20, above any return; S&B
Section 2.6), so that the agent tries every action before it trusts one; planning then washes
the optimism out. --agents x --planning-steps gives the curves to compare, and --num-episodes
(steps per episode, as in Fig 8.2) or --total-steps (cumulative reward per time step, as in
Figs 8.4 and 8.5) the length of each run. Every curve is the mean of --num-runs independent runs.

Distributed: under torchrun the --num-runs runs are split across ranks (rank r does runs r,
r + world_size, ...), and their summed curves are all-reduced, so two ranks give exactly the
curves of one process (run i is seeded with seed + i wherever it runs). Rank 0 alone prints,
logs, plots and saves.
CUDA: the tables are Python lists and numpy arrays in host memory, always. Each update touches
one entry, which a GPU would only slow down, so --cuda is accepted for a uniform command line
and changes nothing; the all-reduce uses gloo on the CPU.

References
    Sutton & Barto 2018, "Reinforcement Learning: An Introduction", 2nd ed., Sections 8.2-8.3
        (Dyna-Q box p.164; Figures 8.2, 8.4, 8.5; Dyna-Q+ and its footnote p.168).
    Sutton 1990, "Integrated architectures for learning, planning, and reacting based on
        approximating dynamic programming", ICML.

Usage
    python algos/dyna_q.py                                # Figure 8.2 (DynaMaze-v0, 30 runs)
    python algos/dyna_q.py --num-runs 5 --num-episodes 20 # a quick run
    python algos/dyna_q.py --env-id BlockingMaze-v0       # Figure 8.4
    python algos/dyna_q.py --env-id ShortcutMaze-v0       # Figure 8.5
    python algos/dyna_q.py --env-id DynaMaze-v0 --agents dyna-q dyna-q+ --planning-steps 5
    python algos/dyna_q.py --env-id Taxi-v4               # any discrete gymnasium env
    torchrun --standalone --nproc_per_node=2 algos/dyna_q.py    # runs split over 2 ranks
    python algos/dyna_q.py --track                        # log curves and figure to W&B
    python algos/dyna_q.py --save-model                   # Q tables to runs/<run_name>/
The figure is written to runs/<run_name>/dyna_q.png.
"""

import dataclasses
import math
import os
import random
import time
from dataclasses import dataclass
from typing import Literal, Optional

import gymnasium as gym
import numpy as np
import torch
import torch.distributed as dist
import tyro
from matplotlib.figure import Figure


@dataclass
class Args:
    """Dyna-Q / Dyna-Q+. Fields left at None default to ENV_DEFAULTS[env_id] (printed at start)."""

    exp_name: str = "dyna_q"
    """name of this experiment (part of the run name)"""
    seed: int = 1
    """seed of the experiment (run i uses seed + i on whichever rank runs it)"""
    torch_deterministic: bool = True
    """accepted for a uniform command line; no torch op runs here, seeded runs repeat exactly"""
    cuda: bool = True
    """accepted for a uniform command line; the tables always live in host memory"""
    track: bool = False
    """log to Weights & Biases"""
    wandb_project_name: str = "algos"
    """the wandb project"""
    wandb_entity: Optional[str] = None
    """the wandb entity (team)"""
    save_model: bool = False
    """save every run's final Q table to runs/<run_name>/q_tables.npz"""
    eval_episodes: int = 10
    """greedy episodes per run at the end, in the run's own env"""

    env_id: str = "DynaMaze-v0"
    """DynaMaze-v0 (Fig 8.2), BlockingMaze-v0 (Fig 8.4), ShortcutMaze-v0 (Fig 8.5), or any discrete gymnasium id"""

    # None below means: take the value from ENV_DEFAULTS[env_id], else from GENERIC_DEFAULTS.
    agents: Optional[tuple[Literal["dyna-q", "dyna-q+"], ...]] = None
    """the agents to compare; each runs once per value of --planning-steps"""
    planning_steps: Optional[tuple[int, ...]] = None
    """n, the planning updates per real step (0 is plain one-step Q-learning)"""
    num_runs: Optional[int] = None
    """independent runs averaged into each curve, all ranks together"""
    num_episodes: Optional[int] = None
    """episodes per run; the curve is steps per episode (give this or --total-steps)"""
    total_steps: Optional[int] = None
    """time steps per run; the curve is cumulative reward (give this or --num-episodes)"""
    alpha: Optional[float] = None
    """step size"""
    epsilon: Optional[float] = None
    """probability of a random action"""
    gamma: Optional[float] = None
    """discount factor"""
    kappa: Optional[float] = None
    """Dyna-Q+ bonus weight: planning reward R + kappa sqrt(tau)"""
    q_init: Optional[float] = None
    """initial Q(s, a); above every return it is optimistic (S&B 2.6): untried actions look best"""


# Per-environment settings. Any flag given on the command line wins over this table, and
# giving --num-episodes or --total-steps replaces the table's budget as a whole.
GENERIC_DEFAULTS = dict(
    agents=("dyna-q",), planning_steps=(0, 5, 50), num_runs=10, num_episodes=300, total_steps=None,
    alpha=0.1, epsilon=0.1, gamma=0.95, kappa=1e-3, q_init=0.0,
)
ENV_DEFAULTS = {
    # Figure 8.2: the book's settings, 30 repetitions.
    "DynaMaze-v0": dict(planning_steps=(0, 5, 50), num_runs=30, num_episodes=50, alpha=0.1,
                        epsilon=0.1, gamma=0.95),
    # Figures 8.4 and 8.5. The book gives neither n, alpha, kappa nor the number of runs; these
    # are those of Zhang's widely used reproduction (github.com/ShangtongZhang/
    # reinforcement-learning-an-introduction), with 20 runs for both.
    "BlockingMaze-v0": dict(agents=("dyna-q", "dyna-q+"), planning_steps=(10,), num_runs=20,
                            num_episodes=None, total_steps=3000, alpha=1.0, kappa=1e-4),
    "ShortcutMaze-v0": dict(agents=("dyna-q", "dyna-q+"), planning_steps=(50,), num_runs=20,
                            num_episodes=None, total_steps=6000, alpha=1.0, kappa=1e-3),
    # Taxi's rewards are -1 a step and +20 at the drop-off, so no return exceeds 19. With Q = 0
    # at the start, a table knows nothing of the states it never visited, and after 500 episodes
    # the greedy policy still wandered from some starts (7.48 against the optimal 7.93). Starting
    # every Q at 20, above any return, makes each untried action look best until it is tried
    # (optimistic initial values, S&B Section 2.6): the agent covers the state space, and n=50
    # planning washes the optimism out of the tried actions within a few hundred episodes.
    # With little planning (n=0, 5) the optimism is still there at the end: that is the lesson.
    "Taxi-v4": dict(planning_steps=(0, 5, 50), num_runs=10, num_episodes=300, alpha=0.5, gamma=0.99,
                    q_init=20.0),
}


def resolve_defaults(args: Args) -> tuple[Args, list[str]]:
    """Fill every field left at None from the table; return the args and the filled names."""
    table = {**GENERIC_DEFAULTS, **ENV_DEFAULTS.get(args.env_id, {})}
    if args.num_episodes is not None or args.total_steps is not None:  # the user set the budget
        del table["num_episodes"], table["total_steps"]
    filled = {k: v for k, v in table.items() if getattr(args, k) is None}
    return dataclasses.replace(args, **filled), sorted(filled)


def validate(args: Args) -> None:
    """Reject flag combinations that cannot work, with one sentence naming the fix."""
    if args.num_episodes is not None and args.total_steps is not None:
        raise SystemExit("--num-episodes and --total-steps were both given: give one, episodes for "
                         "a steps-per-episode curve or time steps for a cumulative-reward curve.")
    budget = args.num_episodes if args.num_episodes is not None else args.total_steps
    if budget < 1:
        raise SystemExit(f"the run length {budget} must be at least 1 episode or time step.")
    if args.num_runs < 1 or args.eval_episodes < 1:
        raise SystemExit("--num-runs and --eval-episodes must be at least 1.")
    if not args.planning_steps or min(args.planning_steps) < 0:
        raise SystemExit(f"--planning-steps {args.planning_steps} needs one or more values >= 0.")
    if len(set(args.planning_steps)) < len(args.planning_steps) or len(set(args.agents)) < len(args.agents):
        raise SystemExit("--agents and --planning-steps must not repeat a value (each gives a curve).")
    if not (0 < args.alpha <= 1 and 0 <= args.epsilon <= 1 and 0 <= args.gamma <= 1 and args.kappa >= 0):
        raise SystemExit(f"need 0 < --alpha <= 1, 0 <= --epsilon <= 1, 0 <= --gamma <= 1 and "
                         f"--kappa >= 0; got {args.alpha}, {args.epsilon}, {args.gamma}, {args.kappa}.")


class Maze(gym.Env):
    """A grid of Sutton & Barto's Examples 8.1-8.3. The state is row * width + col. A move into
    a wall or off the grid leaves the agent where it is. Reward +1 on entering the goal, which
    ends the episode; 0 otherwise. Once `change_at` time steps have been taken since the env was
    made (counted across episodes, as in the book), `walls_after` replaces `walls`."""

    MOVES = ((-1, 0), (1, 0), (0, 1), (0, -1))  # up, down, right, left

    def __init__(self, height: int, width: int, start: tuple, goal: tuple, walls: list,
                 walls_after: Optional[list] = None, change_at: Optional[int] = None):
        self.height, self.width, self.start, self.goal = height, width, tuple(start), tuple(goal)
        self.walls = {tuple(w) for w in walls}
        self.walls_after = {tuple(w) for w in walls_after} if walls_after is not None else self.walls
        self.change_at = change_at
        self.observation_space = gym.spaces.Discrete(height * width)
        self.action_space = gym.spaces.Discrete(4)
        self.time_step, self.pos = 0, self.start

    def current_walls(self) -> set:
        changed = self.change_at is not None and self.time_step >= self.change_at
        return self.walls_after if changed else self.walls

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = self.start
        return self.pos[0] * self.width + self.pos[1], {}

    def step(self, action):
        walls = self.current_walls()
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
    except (gym.error.Error, ModuleNotFoundError) as e:
        raise SystemExit(f"{type(e).__name__}: {e}\nList the registered ids with: "
                         "python -c \"import gymnasium; gymnasium.pprint_registry()\"") from None
    obs, act = env.observation_space, env.action_space
    if not all(isinstance(sp, gym.spaces.Discrete) and sp.start == 0 for sp in (obs, act)):
        raise SystemExit(f"Dyna-Q is tabular and needs Discrete observation and action spaces, but "
                         f"{env_id} has {obs} and {act}: use a discrete env such as Taxi-v4, or "
                         "algos/dqn.py for Box observations.")
    return env


def greedy(q_s: list, rng: random.Random) -> int:
    """argmax_a Q(S, a), ties broken at random."""
    best = max(q_s)
    return rng.choice([a for a, q in enumerate(q_s) if q == best])


class DynaQ:
    """Tabular Dyna-Q, one method per step of the box on p.164."""

    def __init__(self, n_states: int, n_actions: int, alpha: float, gamma: float,
                 epsilon: float, rng: random.Random, q_init: float = 0.0):
        self.n_actions, self.alpha, self.gamma, self.epsilon, self.rng = n_actions, alpha, gamma, epsilon, rng
        self.q = [[q_init] * n_actions for _ in range(n_states)]  # (a) initialise Q(s, a)
        self.model = {}     # S -> {A: (R, S', terminated)}, the last outcome of each tried action
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
        self.model[s][a] = (r, s2, terminated)

    def sample_model(self) -> tuple:
        """(f) S <- random previously observed state; A <- random action previously taken in S;
        R, S' <- Model(S, A)."""
        s = self.rng.choice(self.observed)
        a = self.rng.choice(self.tried[s])
        return (s, a, *self.model[s][a])

    def plan(self, n: int) -> None:
        """(f) n Q-learning updates on simulated experience."""
        for _ in range(n):
            self.update(*self.sample_model())


class DynaQPlus(DynaQ):
    """Dyna-Q+ (Section 8.3): planning reward R + kappa sqrt(tau), where tau counts the time
    steps since A was last taken in S. Per the footnote on p.168, planning may pick actions never
    tried in S, which the model takes to lead back to S with reward 0 (tau counts from step 0)."""

    def __init__(self, *args, kappa: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.kappa = kappa
        self.last_tried = {}  # (S, A) -> the time step A was last taken in S

    def learn_model(self, s, a, r, s2, terminated) -> None:
        super().learn_model(s, a, r, s2, terminated)
        self.last_tried[(s, a)] = self.time_step

    def sample_model(self) -> tuple:
        s = self.rng.choice(self.observed)
        a = self.rng.randrange(self.n_actions)  # any action, tried or not
        r, s2, terminated = self.model[s].get(a, (0.0, s, False))
        tau = self.time_step - self.last_tried.get((s, a), 0)
        return s, a, r + self.kappa * math.sqrt(tau), s2, terminated


def run_once(env: gym.Env, agent: DynaQ, n: int, args: Args, seed: int) -> list:
    """One independent run (the book's "repetition"): the steps of each of --num-episodes
    episodes, or the cumulative reward after each of --total-steps time steps."""
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
        if terminated or truncated:
            if args.num_episodes:
                curve.append(episode_steps)
            s, _ = env.reset()
            episode_steps = 0
        else:
            s = s2
    return curve


def evaluate(env: gym.Env, q: list, episodes: int, rng: random.Random, max_steps: int = 1000) -> list:
    """(return, length) of greedy episodes in the run's own env (so a maze keeps the walls it has
    reached). An episode stops after max_steps: a greedy policy can circle forever in a maze."""
    results = []
    for _ in range(episodes):
        s, _ = env.reset()
        ret, length, done = 0.0, 0, False
        while not done and length < max_steps:
            s, r, terminated, truncated, _ = env.step(greedy(q[s], rng))
            ret, length, done = ret + r, length + 1, terminated or truncated
        results.append((ret, length))
    return results


def summary_rows(length: int, by_episode: bool) -> list:
    """The x values of the printed table: the first 10 episodes and every fifth of the run,
    or every twelfth of the time steps (which hits the mazes' change points)."""
    if by_episode:
        xs = {*range(1, min(10, length) + 1), *np.linspace(0, length, 6)[1:].round().astype(int)}
    else:
        xs = set(np.linspace(0, length, 13)[1:].round().astype(int))
    return sorted(x for x in xs if x >= 1)  # short runs would otherwise round to a row 0


def plot(path: str, curves: np.ndarray, labels: list, args: Args, change_at: Optional[int]) -> None:
    """The figure as a PNG, written atomically."""
    fig = Figure(figsize=(6, 4), dpi=120)
    ax = fig.subplots()
    xs = np.arange(1, curves.shape[1] + 1)
    for curve, label in zip(curves, labels):
        ax.plot(xs, curve, label=label)
    if args.num_episodes:
        ax.set(xlabel="Episodes", ylabel="Steps per episode")
        if curves.shape[1] > 1:  # like Fig 8.2, leave the first episode (a random walk) off the scale
            ax.set_ylim(0, 1.05 * curves[:, 1:].max())
    else:
        ax.set(xlabel="Time steps", ylabel="Cumulative reward")
        if change_at is not None and change_at < curves.shape[1]:
            ax.axvline(change_at, color="grey", linestyle=":", label="walls change")
    ax.set_title(f"{args.env_id}, mean of {args.num_runs} runs")
    ax.legend()
    fig.tight_layout()
    tmp = path + ".tmp"
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)


def main(args: Args) -> dict:
    """Run --num-runs runs of every agent, average and report. Returns global_step (real time
    steps, all runs), wall_time, charts/SPS, eval/runs and eval/episodes (greedy, all runs), and
    per curve label (e.g. "Dyna-Q n=5"): eval/steps_per_episode/<label> (a list, one mean per
    episode) or eval/cumulative_reward/<label> (a list, one mean per time step), and
    eval/mean_return/<label>, eval/std_return/<label>, eval/mean_length/<label> of the greedy
    episodes."""
    args, filled = resolve_defaults(args)
    validate(args)

    # Distributed set-up: torchrun sets RANK and WORLD_SIZE; a plain run has neither.
    distributed = "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank = int(os.environ.get("RANK", 0)) if distributed else 0
    world_size = int(os.environ["WORLD_SIZE"]) if distributed else 1
    if distributed:
        dist.init_process_group("gloo")  # the curves are host arrays, even with --cuda
    is_main = rank == 0

    probe = make_env(args.env_id)
    n_states, n_actions = int(probe.observation_space.n), int(probe.action_space.n)
    change_at = getattr(probe.unwrapped, "change_at", None)
    probe.close()
    by_episode = args.num_episodes is not None
    length = args.num_episodes if by_episode else args.total_steps
    curve_key = "eval/steps_per_episode" if by_episode else "eval/cumulative_reward"
    agents = [(kind, n) for kind in args.agents for n in args.planning_steps]
    labels = [f"{'Dyna-Q+' if kind == 'dyna-q+' else 'Dyna-Q'} n={n}" for kind, n in agents]
    my_runs = range(rank, args.num_runs, world_size)  # this rank's share of the runs

    run_name = f"{args.env_id.replace(':', '_')}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_dir = os.path.join("runs", run_name)
    if is_main:
        print(f"{args.env_id}: {n_states} states x {n_actions} actions; {args.num_runs} runs over "
              f"{world_size} rank(s); tables in host memory")
        print("settings (* = per-env default table): " + ", ".join(
            f"{k}={getattr(args, k)}{'*' if k in filled else ''}" for k in GENERIC_DEFAULTS))

    # Sums over this rank's runs; the all-reduce below adds the other ranks' sums.
    curves = np.zeros((len(agents), length))
    evals = np.zeros((len(agents), 4))  # sum of returns, of squared returns, of lengths; episodes
    q_tables = np.zeros((len(agents), args.num_runs, n_states, n_actions) if args.save_model else 0)
    counts = np.array([len(my_runs), 0.0])  # runs, real time steps
    start_time = time.time()
    for i, ((kind, n), label) in enumerate(zip(agents, labels)):
        agent_start = time.time()
        for run in my_runs:
            env, rng = make_env(args.env_id), random.Random(args.seed + run)
            hyper = dict(alpha=args.alpha, gamma=args.gamma, epsilon=args.epsilon, rng=rng, q_init=args.q_init)
            agent = (DynaQPlus(n_states, n_actions, kappa=args.kappa, **hyper) if kind == "dyna-q+"
                     else DynaQ(n_states, n_actions, **hyper))
            curves[i] += run_once(env, agent, n, args, seed=args.seed + run)
            for ret, steps in evaluate(env, agent.q, args.eval_episodes, rng):
                evals[i] += (ret, ret * ret, steps, 1)
            counts[1] += agent.time_step
            if args.save_model:
                q_tables[i, run] = agent.q
            env.close()
        if is_main:
            print(f"{label}: {len(my_runs)} run(s) on this rank in {time.time() - agent_start:.1f} s")
    if distributed:
        for array in (curves, evals, q_tables, counts):
            dist.all_reduce(torch.from_numpy(array))  # sums in place: the tensor shares the memory
    num_runs, global_step = int(counts[0]), int(counts[1])
    curves /= num_runs
    wall_time = time.time() - start_time

    metrics = {"global_step": global_step, "wall_time": wall_time,
               "charts/SPS": int(global_step / wall_time), "eval/runs": num_runs,
               "eval/episodes": int(evals[0, 3])}
    for label, curve, (s, s2, steps, k) in zip(labels, curves, evals):
        metrics[f"{curve_key}/{label}"] = curve.tolist()
        metrics[f"eval/mean_return/{label}"] = s / k
        metrics[f"eval/std_return/{label}"] = math.sqrt(max(s2 / k - (s / k) ** 2, 0.0))
        metrics[f"eval/mean_length/{label}"] = steps / k
    if is_main:
        x_name = "episode" if by_episode else "time step"
        print(f"\n{'steps per episode' if by_episode else 'cumulative reward'}, mean of {num_runs} runs")
        print(f"{x_name:>10} " + " ".join(f"{label:>14}" for label in labels))
        for x in summary_rows(length, by_episode):
            print(f"{x:>10} " + " ".join(f"{curve[x - 1]:>14.1f}" for curve in curves))
        print()
        for label in labels:
            print(f"{label}: greedy eval {metrics[f'eval/mean_return/{label}']:.2f} +- "
                  f"{metrics[f'eval/std_return/{label}']:.2f} return, "
                  f"{metrics[f'eval/mean_length/{label}']:.1f} steps over {metrics['eval/episodes']} episodes")
        print(f"{num_runs} runs x {len(agents)} agent(s): {global_step} time steps in {wall_time:.1f} s "
              f"({metrics['charts/SPS']} SPS)")
        os.makedirs(run_dir, exist_ok=True)
        figure = os.path.join(run_dir, "dyna_q.png")
        plot(figure, curves, labels, args, change_at)
        print(f"figure: {figure}")
        if args.save_model:
            path = os.path.join(run_dir, "q_tables.npz")
            with open(path + ".tmp", "wb") as f:  # a file object, so numpy adds no .npz suffix
                np.savez(f, env_id=args.env_id, labels=labels, q_tables=q_tables)
            os.replace(path + ".tmp", path)
            print(f"saved {path}: q_tables[agent, run, state, action]")
        if args.track:
            import wandb  # imported here so that a plain run does not pay for it
            wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, name=run_name,
                       config=dataclasses.asdict(args), dir=run_dir)
            x_key = "episode" if by_episode else "time_step"
            wandb.define_metric(f"{curve_key}/*", step_metric=x_key)
            stride = max(1, length // 1000)  # at most about 1000 points per curve
            xs = list(range(stride, length + 1, stride))
            for x in xs:
                wandb.log({x_key: x, **{f"{curve_key}/{label}": curve[x - 1] for label, curve in zip(labels, curves)}})
            chart = wandb.plot.line_series(xs=xs, ys=[curve[stride - 1::stride].tolist() for curve in curves],
                                           keys=labels, title=f"{args.env_id}: {curve_key}", xname=x_key)
            wandb.log({f"charts/{curve_key.split('/')[1]}": chart, "charts/figure": wandb.Image(figure),
                       **{k: v for k, v in metrics.items() if not isinstance(v, list)}})
            wandb.finish()
    if distributed:
        dist.destroy_process_group()
    return metrics


if __name__ == "__main__":
    main(tyro.cli(Args))
