"""REINFORCE (Monte Carlo policy gradient) with a value, a leave-one-out (RLOO) or no baseline, in one file.

REINFORCE (Williams 1992) plays whole episodes with a stochastic policy pi(a|s; theta) and then nudges
theta so that actions followed by a high return become more likely. No value function is needed to learn; one
can be added as a baseline, which lowers the variance of the update without biasing it.

    objective           J(theta) = E_pi[ G_0 ],   G_t = r_t+1 + gamma r_t+2 + ... (to the episode end)
    policy gradient     grad J = E_pi[ sum_t G_t grad log pi(A_t|S_t) ]      (S&B eq. 13.5-13.8; exact for gamma = 1)
    reward-to-go        only rewards *after* A_t appear in G_t: earlier rewards do not depend on A_t, so
                        their terms have expectation zero and only add variance.
    with a baseline     grad J = E_pi[ sum_t (G_t - b_t) grad log pi(A_t|S_t) ]      (S&B eq. 13.10)
                        for any b_t that does not depend on A_t, because
                        E_a[ b grad log pi(a|s) ] = b sum_a grad pi(a|s) = b grad 1 = 0.
    value baseline      b_t = v(S_t; w), a network fitted to G_t by least squares (S&B sec. 13.4)
    RLOO baseline       k episodes per update; episode i is baselined by the mean of the others,
                        b_t^i = 1/(k-1) sum_{j != i} G_t^j                (Ahmadian et al. 2024)
                        (still unbiased: the other episodes do not depend on A_t^i). With reward-to-go the
                        mean is taken at each t (G_t^j = 0 once episode j has ended): it follows what is left.
    the estimate        g = 1/k sum_i sum_t (G_t^i - b_t^i) grad log pi(A_t^i|S_t^i)
    entropy bonus       optionally, + ent_coef * sum_t H(pi(.|S_t)) per episode (biases g on purpose).

The steps are Adam's (one per update, on -g, and on the least-squares loss of v), not the plain SGD of S&B's boxes:
the scale of g changes a lot as episodes grow, and Adam follows it. With gamma < 1 S&B's box also multiplies step t by
gamma^t; like nearly every implementation this file leaves that factor out (Thomas 2014 shows the result is then not
the exact gradient of the discounted objective). With gamma = 1, as on the short corridor, g is exactly unbiased.

Each update collects k fresh episodes, one per sub-environment, from a reset to their end: waiting for whole
episodes keeps every episode on-policy and does not favour short ones. gymnasium 1.x vector envs reset a
finished sub-env on the *next* step() (NEXT_STEP autoreset); the file masks out every step of a sub-env after
its episode ended (the autoreset step and the new episode it starts included) until the slowest episode of
the batch ends. `global_step` counts every env step simulated, those masked out included. An episode cut by a time
limit (truncated: CartPole's 500 steps, Pendulum's 200) counts as ended, so its last G_t miss the rewards the cut
removed; Monte Carlo returns have nothing to bootstrap from (S&B's episodic tasks have no cuts).

Actions: Categorical over a Discrete space; over a Box, a diagonal Gaussian with a learned state-independent
log std (the env gets the sample clipped to the bounds; its log-probability is the unclipped sample's).

The short corridor (S&B Example 13.1), registered below as ShortCorridor-v0: three non-terminal states that
look the same to the agent, the second with left and right swapped, -1 per step. The observation is constant,
so the policy is one pair of logits and the value baseline one number (S&B Fig. 13.1-13.2). With p = P(right)
the start value is v(p) = (2p - 4) / (p (1 - p)), best at p* = 2 - sqrt(2) ~ 0.586, v* ~ -11.66. The best
policy is stochastic, so there the final evaluation samples from the policy and reports eval/prob_right beside
p* and v*; elsewhere it is greedy (the most likely action, or the Gaussian's mean).

Distributed: under torchrun each rank plays k / world_size of the k episodes of an update; DDP averages the
gradients, and the RLOO baseline sums the returns of all ranks, so the policy gradient is the one a single
process would compute from the same k episodes. Rank 0 alone prints, logs, evaluates and saves.

References
    Williams 1992, "Simple statistical gradient-following algorithms for connectionist
        reinforcement learning", Machine Learning 8.
    Sutton, McAllester, Singh, Mansour 2000, "Policy Gradient Methods for Reinforcement
        Learning with Function Approximation", NeurIPS (the policy gradient theorem).
    Sutton & Barto 2018, "Reinforcement Learning: An Introduction", 2nd ed., ch. 13.
    Thomas 2014, "Bias in Natural Actor-Critic Algorithms", ICML (the dropped gamma^t).
    Kool, van Hoof, Welling 2019, "Buy 4 REINFORCE Samples, Get a Baseline for Free!", ICLR workshop (leave-one-out).
    Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style Optimization for
        Learning from Human Feedback in LLMs", arXiv:2402.14740 (RLOO).

Usage
    python algos/reinforce.py                                     # CartPole-v1, value baseline
    python algos/reinforce.py --baseline rloo                     # leave-one-out baseline
    python algos/reinforce.py --baseline none --total-timesteps 50000    # a quick run
    python algos/reinforce.py --env-id ShortCorridor-v0           # S&B Example 13.1
    torchrun --standalone --nproc_per_node=2 algos/reinforce.py   # episodes split over 2 ranks
    python algos/reinforce.py --env-id Pendulum-v1 --save-model   # continuous actions (learns slowly)
    python algos/reinforce.py --eval-checkpoint runs/<run_name>/reinforce.pt   # evaluate, no training
"""

import contextlib
import dataclasses
import hashlib
import io
import json
import math
import os
import random
import shlex
import signal
import sys
import time
from typing import Annotated, Literal, Optional, get_type_hints

import gymnasium as gym
import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import tyro
from torch.distributions import Categorical, Independent, Normal
from torch.nn.parallel import DistributedDataParallel as DDP

ALGO = "reinforce"
CHECKPOINT_HEADER = b"algos checkpoint sha256="


@dataclasses.dataclass(frozen=True)
class Range:
    """Valid values of a numeric field: lo <= x <= hi (lo < x with lo_open), and finite; check_args enforces it."""

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False


@dataclasses.dataclass
class Args:
    """REINFORCE. --env-id picks that environment's tuned numbers (PRESETS) as the defaults shown
    here; any flag still wins. Every count is for the whole run, all ranks together."""

    exp_name: str = "reinforce"  # name of this experiment (part of the run name)
    seed: Annotated[int, Range(0, 2**31 - 1)] = 1  # seed of the experiment (rank r uses seed + r)
    torch_deterministic: bool = True  # set torch.backends.cudnn.deterministic
    cuda: bool = True  # use CUDA when it is available
    num_threads: Annotated[int, Range(1)] = 1  # torch CPU threads; small networks run fastest with one
    track: bool = False  # log to Weights & Biases
    wandb_project_name: str = "algos"  # the wandb project
    wandb_entity: Optional[str] = None  # the wandb entity (team)
    save_model: bool = False  # save the policy (and value network) to runs/<run_name>/reinforce.pt
    eval_checkpoint: Optional[str] = None  # evaluate this saved model (its own env, greedy or not) instead of training
    log_interval: Annotated[int, Range(1)] = 10_000  # print progress every this many environment steps

    env_id: str = "CartPole-v1"  # a gymnasium id, Discrete or Box actions ("module:Env-v0" imports module first)
    # none: G_t; value: G_t - v(S_t) with a learned v (S&B 13.4); rloo: G_t minus the other episodes' mean
    baseline: Literal["none", "value", "rloo"] = "value"
    total_timesteps: Annotated[int, Range(1)] = 500_000  # env steps; training stops at the first update past it
    episodes_per_update: Annotated[int, Range(1)] = 8  # k: whole episodes per update (one per sub-env)
    learning_rate: Annotated[float, Range(0, lo_open=True)] = 1e-3  # Adam step size of the policy (alpha^theta in S&B)
    value_learning_rate: Annotated[float, Range(0, lo_open=True)] = 1e-3  # Adam step size of the baseline v (alpha^w)
    anneal_lr: bool = True  # let both step sizes fall linearly to 0 over the run (steadier final policy)
    gamma: Annotated[float, Range(0, 1)] = 0.99  # discount factor
    ent_coef: Annotated[float, Range(0)] = 0.0  # weight of the entropy bonus (0 = plain REINFORCE)
    hidden_sizes: Annotated[tuple[int, ...], Range(1)] = (64, 64)  # hidden layer widths of both networks (none: linear)
    greedy_eval: bool = True  # evaluate the most likely action (True) or the stochastic policy itself (False)
    eval_episodes: Annotated[int, Range(1)] = 100  # evaluation episodes at the end


# Tuned environments, whole Args values (how each was found: the README's reinforce.py section).
PRESETS = {
    # Half the generic budget: most seeds are greedy 475+ by then (the README's table).
    "CartPole-v1": dataclasses.replace(Args(), env_id="CartPole-v1", total_timesteps=250_000),
    # S&B 13.1: a constant input needs no hidden layer; gamma 1 as in the book; the best policy is stochastic.
    "ShortCorridor-v0": dataclasses.replace(
        Args(), env_id="ShortCorridor-v0", total_timesteps=100_000, gamma=1.0, learning_rate=1e-2,
        value_learning_rate=3e-2, hidden_sizes=(), greedy_eval=False, eval_episodes=2000),
}


def preset(env_id: str) -> Args:
    """The defaults a user gets with --env-id env_id."""
    return PRESETS.get(env_id, dataclasses.replace(Args(), env_id=env_id))


# =============================================================================================
# ALGORITHM: the short corridor, environments, the policy (and value) network, collecting whole
# episodes, reward-to-go, the RLOO baseline, the REINFORCE loss, evaluation. Read this first.
# =============================================================================================
class ShortCorridor(gym.Env):
    """S&B Example 13.1: states 0, 1, 2 and the goal 3; action 0 = left (a wall stops it in state 0), 1 = right,
    except in state 1, where the two are swapped."""

    observation_space = gym.spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.state = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        right = (action == 1) != (self.state == 1)  # the actions are reversed in state 1
        self.state = max(self.state + (1 if right else -1), 0)
        return np.zeros(1, np.float32), -1.0, self.state == 3, False, {}


def corridor_value(p: float) -> float:
    """Start value of the policy that goes right with probability p (S&B Example 13.1)."""
    return (2 * p - 4) / (p * (1 - p))


CORRIDOR_P_STAR = 2 - math.sqrt(2)
CORRIDOR_V_STAR = corridor_value(CORRIDOR_P_STAR)
# A cap far beyond the optimal policy's episodes (mean 11.7 steps), against a policy stuck near p = 0 or 1.
gym.register("ShortCorridor-v0", entry_point=ShortCorridor, max_episode_steps=1_000)


def make_envs(env_id: str, num_envs: int) -> gym.vector.VectorEnv:
    """Synchronous vector env (NEXT_STEP autoreset) with a flat Box observation."""
    if env_id.lower().startswith("minatar/") and "MinAtar/Breakout-v1" not in gym.registry:  # registered, so that
        with contextlib.suppress(ModuleNotFoundError):  # the check below says why its images do not fit here
            from minatar.gym import register_envs  # (without minatar, gymnasium says "not found")
            register_envs()
    try:
        envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync")
    except (gym.error.Error, ImportError) as e:  # ImportError: an outdated id still registered, e.g. Hopper-v3
        raise SystemExit(f"--env-id {env_id}: {e} (list the registered ids with: "
                         "python -c \"import gymnasium; gymnasium.pprint_registry()\")") from None
    space, action_space = envs.single_observation_space, envs.single_action_space
    flat_obs, box_actions = (isinstance(s, gym.spaces.Box) and len(s.shape) == 1 for s in (space, action_space))
    if not (flat_obs and (box_actions or isinstance(action_space, gym.spaces.Discrete))):
        raise SystemExit(f"this REINFORCE takes a flat Box observation and a Discrete or flat Box action "
                         f"space, but {env_id} has {space} and {action_space}.")
    if box_actions:  # Gaussian samples are clipped to the bounds on their way in
        envs = gym.wrappers.vector.TransformAction(envs, lambda a: np.clip(a, action_space.low, action_space.high))
    return envs


def mlp(in_dim: int, hidden_sizes: tuple[int, ...], out_dim: int, out_std: float) -> nn.Sequential:
    """tanh MLP with PyTorch's default init, but for the last layer: orthogonal with gain out_std, zero bias."""
    layers, width = [], in_dim
    for h in hidden_sizes:
        layers += [nn.Linear(width, h), nn.Tanh()]
        width = h
    last = nn.Linear(width, out_dim)
    nn.init.orthogonal_(last.weight, out_std)
    nn.init.zeros_(last.bias)
    return nn.Sequential(*layers, last)


class Agent(nn.Module):
    """The policy pi(a|s; theta) and, for --baseline value, the baseline v(s; w)."""

    def __init__(self, obs_dim: int, action_space: gym.Space, hidden_sizes: tuple[int, ...], value: bool):
        super().__init__()
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        n_out = int(action_space.n) if self.discrete else action_space.shape[0]
        self.actor = mlp(obs_dim, hidden_sizes, n_out, out_std=0.01)  # small: the policy starts near uniform
        if not self.discrete:
            self.log_std = nn.Parameter(torch.zeros(n_out))  # state-independent
        self.critic = mlp(obs_dim, hidden_sizes, 1, out_std=1.0) if value else None

    def dist(self, obs: torch.Tensor):
        out = self.actor(obs)  # logits, or the mean of a diagonal Gaussian: its dimensions' log-probs and entropies add
        try:
            return Categorical(logits=out) if self.discrete else Independent(Normal(out, self.log_std.exp()), 1)
        except ValueError:  # torch.distributions refuses them: one sentence instead of its traceback
            raise SystemExit("the policy broke (nan logits or a zero standard deviation): "
                             "lower --learning-rate.") from None

    def forward(self, obs: torch.Tensor, actions: torch.Tensor):
        """log pi(a|s), the entropy H(pi(.|s)) and v(s) (None without a value baseline)."""
        d = self.dist(obs)
        value = self.critic(obs).squeeze(-1) if self.critic is not None else None
        return d.log_prob(actions), d.entropy(), value


def play_episodes(envs: gym.vector.VectorEnv, agent: Agent, device: torch.device, seed: Optional[int], greedy: bool):
    """One whole episode in every sub-env, until the slowest ends; yields each step's obs, actions, rewards, alive."""
    obs, _ = envs.reset(seed=seed)
    alive = np.ones(envs.num_envs, dtype=bool)
    while alive.any():
        with torch.inference_mode():  # greedy: the most likely action, or the Gaussian's mean
            pi = agent.dist(torch.as_tensor(obs, dtype=torch.float32, device=device))
            actions = (pi.mode if greedy else pi.sample()).cpu().numpy()
        next_obs, rewards, terminated, truncated, _ = envs.step(actions)
        yield obs, actions, np.where(alive, rewards, 0.0), alive.copy()  # rewards are 0 once an episode has ended
        alive &= ~(terminated | truncated)
        obs = next_obs


def collect_episodes(envs: gym.vector.VectorEnv, agent: Agent, device: torch.device, seed: Optional[int] = None):
    """The steps of play_episodes, stacked: [T, num_envs, ...] obs, actions, rewards, alive."""
    return tuple(np.stack(x) for x in zip(*play_episodes(envs, agent, device, seed, greedy=False)))


def reward_to_go(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """G_t = r_t+1 + gamma G_t+1 along dim 0 (time), G = 0 past the end (where rewards must be 0)."""
    returns, future = torch.zeros_like(rewards), torch.zeros_like(rewards[0])
    for t in reversed(range(len(rewards))):
        returns[t] = future = rewards[t] + gamma * future
    return returns


def rloo_baseline(returns: torch.Tensor, group_sum: torch.Tensor, group_size: int) -> torch.Tensor:
    """b_t^i = (sum_j G_t^j - G_t^i) / (k - 1); returns [T, n] are this rank's episodes, group_sum [T] sums all k."""
    return (group_sum.unsqueeze(1) - returns) / (group_size - 1)


def reinforce_loss(logprob: torch.Tensor, advantages: torch.Tensor, alive: torch.Tensor, episodes: int) -> torch.Tensor:
    """-1/k sum_i sum_t (G_t^i - b_t^i) log pi(A_t^i|S_t^i); its gradient is -g."""
    return -(advantages.detach() * logprob * alive).sum() / episodes


def prob_right(agent: Agent, device: torch.device) -> float:
    """The short corridor's P(right): its observation is always 0, so one state holds the whole policy."""
    with torch.inference_mode():
        return agent.dist(torch.zeros(1, 1, device=device)).probs[0, 1].item()


def evaluate(agent: Agent, env_id: str, episodes: int, seed: int, greedy: bool, device: torch.device,
             where: str) -> dict:
    """Play `episodes` episodes, one per sub-env (so short ones are not over-counted); print and return the metrics."""
    envs = make_envs(env_id, episodes)
    corridor = isinstance(envs.unwrapped.envs[0].unwrapped, ShortCorridor)
    returns = sum(rewards for _, _, rewards, _ in play_episodes(envs, agent, device, seed, greedy))
    envs.close()
    mean, std = float(returns.mean()), float(returns.std())
    metrics = {"eval/mean_return": mean, "eval/std_return": std, "eval/episodes": episodes}
    print(f"{env_id} {'greedy' if greedy else 'stochastic'} eval: {mean:.2f} +- {std:.2f} "
          f"over {episodes} episodes {where}")
    if corridor:
        p = metrics["eval/prob_right"] = prob_right(agent, device)
        print(f"short corridor: P(right) {p:.4f} (analytic p* = {CORRIDOR_P_STAR:.4f}), mean return {mean:.2f} "
              f"(analytic v* = {CORRIDOR_V_STAR:.2f}; v(P(right)) = {corridor_value(p):.2f})")
    return metrics


# =============================================================================================
# MACHINERY: argument checks, run folder, checkpoints, Ctrl-C, distributed set-up, logging.
# Not the algorithm: a first reading can skip to main().
# =============================================================================================
def parse_args() -> Args:
    """Presets first, then the command line, so --help and the printed config show the numbers used."""
    env_id, argv = Args.env_id, sys.argv[1:]
    for i, arg in enumerate(argv):
        flag, eq, value = arg.partition("=")
        if flag in ("--env-id", "--env_id") and (eq or i + 1 < len(argv)):  # tyro takes both spellings
            env_id = value if eq else argv[i + 1]
    return tyro.cli(Args, default=preset(env_id))


def check_args(args: Args) -> None:
    """Refuse in one sentence a numeric field outside its declared Range (nan, inf too) or an empty Optional[str]."""
    hints = get_type_hints(Args, include_extras=True)
    for name, value in dataclasses.asdict(args).items():
        if value == "" and hints[name] == Optional[str]:  # else it would pass for "not given" (None) unseen
            raise SystemExit(f"--{name.replace('_', '-')} was given an empty value: give one, or leave the flag out.")
        for r in (m for m in getattr(hints[name], "__metadata__", ()) if isinstance(m, Range)):
            for v in value if isinstance(value, (tuple, list)) else (value,):
                if v is not None and not (math.isfinite(v) and (v > r.lo if r.lo_open else v >= r.lo) and v <= r.hi):
                    bounds = f"{'above' if r.lo_open else 'at least'} {r.lo:g}"
                    bounds += f" and at most {r.hi:g}" if r.hi < math.inf else ""
                    raise SystemExit(f"--{name.replace('_', '-')} {v} is not allowed: it must be {bounds}.")


def validate(args: Args, world_size: int) -> None:
    """Combinations of flags that would otherwise fail or run silently wrong, one sentence each."""
    k = args.episodes_per_update
    if args.baseline == "rloo" and k < 2:
        raise SystemExit(f"--baseline rloo needs at least 2 episodes per update to leave one out, "
                         f"but --episodes-per-update is {k}: use 2 or more.")
    if k % world_size:
        raise SystemExit(f"--episodes-per-update {k} does not divide among the {world_size} ranks: "
                         f"make it a multiple of {world_size}, so that every rank plays the same number.")


def make_run_dir(name: str) -> str:
    """Create runs/<name>/ before training (an unwritable folder fails at once); a same-second twin gets <name>-2."""
    for path in [f"runs/{name}"] + [f"runs/{name}-{n}" for n in range(2, 100)]:
        try:
            os.makedirs(path)
            return path
        except FileExistsError:  # mkdir is atomic: a twin started in the same second moves on to <name>-2
            continue
        except OSError as e:
            raise SystemExit(f"cannot create the run folder {path} ({e.strerror}): "
                             "run from a folder you can write to.") from None
    raise SystemExit(f"runs/{name}: 99 runs of this name exist already; choose another --exp-name.")


def save_model(run_dir: str, agent: Agent, args: Args) -> str:
    """<run_dir>/reinforce.pt, atomic and verifiable (the sha256 of the torch.save bytes heads a temp file that is
    then renamed); returns its path."""
    path, buffer = os.path.join(run_dir, "reinforce.pt"), io.BytesIO()
    torch.save({"algo": ALGO, "agent": agent.state_dict(), "env_id": args.env_id,
                "hidden_sizes": list(args.hidden_sizes), "baseline": args.baseline,
                "greedy_eval": args.greedy_eval, "args": dataclasses.asdict(args)}, buffer)
    data = buffer.getvalue()
    with open(f"{path}.tmp", "wb") as f:
        f.write(CHECKPOINT_HEADER + hashlib.sha256(data).hexdigest().encode() + b"\n" + data)
    os.replace(f"{path}.tmp", path)
    print(f"saved {path}")
    return path


def load_checkpoint(path: str, flag: str) -> dict:
    """A checkpoint that save_model wrote and whose sha256 matches, or one sentence why not."""
    try:
        with open(path, "rb") as f:
            header, _, data = f.read().partition(b"\n")
    except OSError as e:
        folder = f": give the checkpoint file in it, {os.path.join(path, f'{ALGO}.pt')}" if os.path.isdir(path) else ""
        raise SystemExit(f"{flag} {path}: cannot read it ({e.strerror}){folder}.") from None
    if header != CHECKPOINT_HEADER + hashlib.sha256(data).hexdigest().encode():
        raise SystemExit(f"{flag} {path} is damaged or is not a checkpoint of these scripts "
                         "(its sha256 does not match): use another one or train again.")
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if state.get("algo") != ALGO:
        raise SystemExit(f"{flag} {path} is a {state.get('algo')}.py checkpoint, not {ALGO}.py's.")
    return state


class StopFlag:
    """Ctrl-C sets .requested and the loop stops at the end of its step, so the work is saved whole; a second Ctrl-C
    quits at once without saving. Under torchrun every rank hears it. Once .evaluating is set, the first Ctrl-C raises
    KeyboardInterrupt: the final evaluation stops at once, and main keeps the trained model all the same."""

    def __init__(self):
        self.requested, self.at, self.evaluating = False, 0.0, False
        signal.signal(signal.SIGINT, self.handler)

    def handler(self, signum, frame):
        if not self.requested:
            self.requested, self.at = True, time.time()
            if self.evaluating:
                raise KeyboardInterrupt
            print("Ctrl-C: stopping after this step to save the work (again to quit without saving).",
                  file=sys.stderr, flush=True)
        elif time.time() - self.at > 2:  # torchrun repeats the first Ctrl-C at once: not a second one
            raise SystemExit("stopped by a second Ctrl-C; nothing was saved.")


def setup_distributed(args: Args) -> tuple[bool, int, int, torch.device]:
    """Under torchrun (RANK, WORLD_SIZE set): one process group, nccl on CUDA, gloo on CPU; else no distributed call."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank, world_size = (int(os.environ.get("RANK", 0)), int(os.environ["WORLD_SIZE"])) if distributed else (0, 1)
    use_cuda = args.cuda and torch.cuda.is_available()
    if distributed:
        dist.init_process_group("nccl" if use_cuda else "gloo")
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(args.num_threads)
    return distributed, rank, world_size, device


class RunLog:
    """Every logged row goes to <run_dir>/metrics.jsonl as the run goes (one JSON object a line, after a first
    line with the config), so any run can be read back or plotted without wandb; with --track, to wandb too."""

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


def evaluate_checkpoint(args: Args) -> dict:
    """--eval-checkpoint: evaluate a saved agent in its own env and mode (greedy or not); under torchrun, on rank 0."""
    ckpt = load_checkpoint(args.eval_checkpoint, "--eval-checkpoint")
    if args.track or args.save_model:  # nothing is trained, logged or saved
        raise SystemExit("--eval-checkpoint only evaluates: drop --track and --save-model.")
    if args.env_id not in (ckpt["env_id"], Args.env_id):  # another env is refused, not ignored
        raise SystemExit(f"--eval-checkpoint {args.eval_checkpoint} plays {ckpt['env_id']}, the env it was "
                         f"trained on: drop --env-id {args.env_id}.")
    if int(os.environ.get("RANK", 0)) != 0:
        return {}
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
    torch.set_num_threads(args.num_threads)
    torch.manual_seed(args.seed)  # a stochastic evaluation samples from torch's generator
    probe = make_envs(ckpt["env_id"], 1)
    agent = Agent(probe.single_observation_space.shape[0], probe.single_action_space,
                  tuple(ckpt["hidden_sizes"]), value=ckpt["baseline"] == "value").to(device)
    probe.close()
    try:
        agent.load_state_dict(ckpt["agent"])
    except RuntimeError as e:
        raise SystemExit(f"--eval-checkpoint {args.eval_checkpoint} does not fit {ckpt['env_id']}'s "
                         f"spaces ({str(e).splitlines()[0]}).") from None
    return evaluate(agent, ckpt["env_id"], args.eval_episodes, args.seed + 100_000, ckpt["greedy_eval"], device,
                    f"of {args.eval_checkpoint}")


def main(args: Args) -> dict:
    """Train (or, with --eval-checkpoint, only evaluate) and return the final metrics: eval/mean_return,
    eval/std_return, eval/episodes (rank 0), eval/prob_right (short corridor); when training also charts/SPS,
    global_step, wall_time, the last update's losses/policy_loss, losses/entropy (and losses/value_loss)."""
    check_args(args)
    if args.eval_checkpoint is not None:
        return evaluate_checkpoint(args)
    distributed, rank, world_size, device = setup_distributed(args)
    validate(args, world_size)
    is_main = rank == 0

    seed = args.seed + rank
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic

    run_name = f"{args.env_id.replace(':', '_').replace('/', '_')}__{args.exp_name}__{args.seed}__{int(time.time())}"
    local_k = args.episodes_per_update // world_size
    envs = make_envs(args.env_id, local_k)  # a refused --env-id leaves no run folder
    make_agent = lambda: Agent(envs.single_observation_space.shape[0], envs.single_action_space,
                               args.hidden_sizes, value=args.baseline == "value")
    # A network that memory cannot hold, refused before the run folder: its parameters counted on the meta device
    # (nothing allocated), 16 bytes each with their gradients and Adam's two moments.
    with torch.device("meta"):
        need = 16 * sum(p.numel() for p in make_agent().parameters())
    have = (torch.cuda.get_device_properties(device).total_memory if device.type == "cuda"
            else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else math.inf)
    if need > have:
        raise SystemExit(f"--hidden-sizes {' '.join(map(str, args.hidden_sizes))} make {need // 16:,} parameters, "
                         f"{need / 2**30:,.1f} GiB with their gradients and Adam's moments, more than the "
                         f"{have / 2**30:,.1f} GiB of this {device.type}: lower them.")
    if is_main:
        run_dir = make_run_dir(run_name)
        print(f"{args.env_id}: baseline {args.baseline}, {world_size} rank(s) x {local_k} episode(s) "
              f"per update on {device}, run folder {run_dir}")
        print("config: " + ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(args).items()))
    logger = RunLog(args, run_name, run_dir) if is_main else None

    corridor = isinstance(envs.unwrapped.envs[0].unwrapped, ShortCorridor)  # progress rows carry P(right)
    agent = make_agent().to(device)
    model = DDP(agent) if distributed else agent  # DDP broadcasts rank 0's weights at the start
    actor = [p for n, p in agent.named_parameters() if not n.startswith("critic.")]
    critic = [] if agent.critic is None else [{"params": agent.critic.parameters(), "lr": args.value_learning_rate}]
    optimizer = torch.optim.Adam([{"params": actor, "lr": args.learning_rate}, *critic])

    global_step, recent_returns, losses = 0, [], {}
    start_time, next_log = time.time(), args.log_interval
    stop = StopFlag()  # every rank listens: the ranks agree below, so none is left inside a collective
    while global_step < args.total_timesteps:
        if args.anneal_lr:
            for g, lr in zip(optimizer.param_groups, (args.learning_rate, args.value_learning_rate)):
                g["lr"] = lr * max(1.0 - global_step / args.total_timesteps, 0.0)
        batch = collect_episodes(envs, agent, device, seed=seed * 1_000 if global_step == 0 else None)
        obs, actions, rewards, alive = (torch.as_tensor(x, device=device) for x in batch)
        obs, rewards, alive = obs.float(), rewards.float(), alive.float()
        returns = reward_to_go(rewards, args.gamma)  # [T, local_k]

        # Summed over ranks: env steps (masked ones too). Max over ranks: the longest episode (RLOO pads to it), Ctrl-C.
        counts = torch.tensor([returns.numel(), len(returns), stop.requested], device=device)
        if distributed:
            dist.all_reduce(counts[:1])
            dist.all_reduce(counts[1:], op=dist.ReduceOp.MAX)
        global_step += int(counts[0])

        logprob, entropy, values = model(obs, actions)  # [T, local_k] each
        if args.baseline == "none":
            advantages = returns
        elif args.baseline == "value":  # S&B 13.4: b = v(S_t; w)
            advantages = returns - values.detach()
        else:  # RLOO: the group is the k episodes of all ranks
            group_sum = torch.zeros(int(counts[1]), device=device)  # a slot per step of the longest episode of any rank
            group_sum[:len(returns)] = returns.sum(1)
            if distributed:
                dist.all_reduce(group_sum)
            advantages = returns - rloo_baseline(returns, group_sum[:len(returns)], args.episodes_per_update)
        policy_loss = reinforce_loss(logprob, advantages, alive, local_k)
        entropy_sum = (entropy * alive).sum()
        loss = policy_loss - args.ent_coef * entropy_sum / local_k  # per episode, like the policy loss
        losses = {"losses/policy_loss": policy_loss.item(), "losses/entropy": (entropy_sum / alive.sum()).item()}
        if values is not None:
            value_loss = ((values - returns) ** 2 * alive).sum() / alive.sum()  # S&B 13.4: fit v(S_t; w) to G_t
            loss = loss + value_loss
            losses["losses/value_loss"] = value_loss.item()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # DDP all-reduces (averages) the gradients here
        optimizer.step()

        episode_returns = (rewards * alive).sum(0).tolist()
        recent_returns = (recent_returns + episode_returns)[-20:]
        if logger:
            logger.log({"charts/episodic_return": float(np.mean(episode_returns)), **losses,
                        "global_step": global_step}, step=global_step)
        if is_main and (global_step >= next_log or global_step >= args.total_timesteps):
            if not math.isfinite(losses["losses/policy_loss"]):  # a nan or inf loss stops the run (exit 1)
                raise SystemExit(f"step {global_step}: the policy loss is {losses['losses/policy_loss']}; "
                                 "lower --learning-rate or --value-learning-rate.")
            next_log = (global_step // args.log_interval + 1) * args.log_interval
            sps = int(global_step / (time.time() - start_time))
            print(f"step {global_step:>8}  return(last {len(recent_returns)}) {np.mean(recent_returns):8.2f}  "
                  + "  ".join(f"{k.split('/')[1]} {v:.4f}" for k, v in losses.items()) + f"  SPS {sps}")
            p_right = {"charts/prob_right": prob_right(agent, device)} if corridor else {}
            logger.log({"charts/SPS": sps, "global_step": global_step, **p_right}, step=global_step)
        if counts[2]:  # the same on every rank: all stop after this update
            stop.requested = True
            break

    envs.close()
    wall_time = time.time() - start_time
    metrics = {"global_step": global_step, "wall_time": wall_time, "charts/SPS": int(global_step / wall_time), **losses}
    stop.evaluating = is_main  # from here rank 0's Ctrl-C stops the final evaluation at once; the model is kept below
    with contextlib.suppress(KeyboardInterrupt):
        if is_main and not stop.requested:  # the last update's losses were checked by the last progress line
            print(f"final evaluation: {args.eval_episodes} episodes (a Ctrl-C stops it and keeps the model)")
            metrics |= evaluate(agent, args.env_id, args.eval_episodes, args.seed + 100_000, args.greedy_eval, device,
                                f"after {global_step} steps in {wall_time:.1f} s ({metrics['charts/SPS']} SPS)")
            logger.log({**metrics, "global_step": global_step}, step=global_step)
            logger.close()
            if args.save_model:
                save_model(run_dir, agent, args)
            else:
                print(f"(the policy was not saved: add --save-model to keep it in {run_dir}/)")
    stop.evaluating = False  # evaluated: a Ctrl-C from here asks to stop, and the model is kept below
    if distributed:  # rank 0 evaluated while the others waited here: does any rank stop?
        flag = torch.tensor([float(stop.requested)], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        stop.requested = bool(flag.item())
    if stop.requested:  # Ctrl-C in training or in the final evaluation
        if is_main:
            print(f"interrupted at step {global_step}")
            path = save_model(run_dir, agent, args)
            print("to evaluate it: " + shlex.join(["python", sys.argv[0], "--eval-checkpoint", path,
                                                   "--eval-episodes", str(args.eval_episodes)]))
        sys.exit(130)
    if distributed:
        dist.destroy_process_group()  # every rank has passed the agreement above, after rank 0's evaluation
    return metrics


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # progress lines appear even when redirected
    try:
        main(parse_args())
    except KeyboardInterrupt:  # Ctrl-C before the training loop listens for it
        print("stopped by Ctrl-C before training; nothing was saved.", file=sys.stderr)
        sys.exit(130)
