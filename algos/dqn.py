"""Deep Q-Network (DQN) with a Double DQN switch, in one file.

DQN learns the optimal action-value function Q*(s, a) with a neural network and acts epsilon-greedily on
it. Two ideas make Q-learning with a network stable (Mnih et al. 2015): an experience replay buffer, sampled
uniformly, that breaks the correlation between consecutive transitions; and a target network, a lagged
copy of the Q-network, that holds the regression target still for a while.

    n-step return  G = r_t + gamma r_t+1 + ... + gamma^(m-1) r_t+m-1,   m = n, or fewer at an episode end
    TD target      y = G + gamma^m (1 - terminated) Q_target(s_t+m, a*)
    DQN            a* = argmax_a Q_target(s_t+m, a)
    Double DQN     a* = argmax_a Q(s_t+m, a)       (van Hasselt et al. 2016, eq. 4)
    loss           L(theta) = E_(s,a,G,s')~D [ huber(Q(s_t, a_t; theta) - y) ]

The Huber loss is the paper's "error clipping": its gradient is the TD error clipped to [-1, 1], so no
separate gradient-norm clipping is needed.

With n = 1 this is the DQN of the paper. n > 1 (Sutton & Barto 2nd ed. sec. 7.1; one of Rainbow's parts,
Hessel et al. 2018) carries a reward n steps back per update instead of one, which is what a sparse task
like MountainCar needs. `terminated` means the MDP ended (the car reached the flag, the pole fell): there
is no future, so nothing is bootstrapped. A time-limit `truncated` episode did not end, the clock just ran
out, so the target still bootstraps from the true last observation. The buffer stores each transition's
bootstrap discount gamma^m (1 - terminated), which covers both cases.

From pixels: an image observation (MinAtar's 10x10 grids of boolean channels, Young & Tian 2019, Atari's dynamics
small enough for a CPU) goes through their small network, one 3x3 convolution and one hidden dense layer of 128
units, instead of the MLP; the replay buffer keeps the grids in their own dtype (bool), a quarter of float32's memory.

Exploration is epsilon-greedy with a linear schedule; with --ez-mu > 0 an exploratory action is held for
a random number of steps (epsilon z-greedy, Dabney et al. 2021).

Distributed: every count (steps, envs, buffer, batch) is for the whole run. Under torchrun each rank steps
its num_envs / world_size environments into its own share of the replay buffer and samples its share of
each minibatch; DistributedDataParallel averages the gradients. Rank 0 alone prints, logs, evaluates, saves.

References
    Mnih et al. 2015, "Human-level control through deep reinforcement learning", Nature 518.
    Mnih et al. 2013, "Playing Atari with Deep Reinforcement Learning", arXiv:1312.5602.
    van Hasselt, Guez, Silver 2016, "Deep Reinforcement Learning with Double Q-learning", AAAI, arXiv:1509.06461.
    Hessel et al. 2018, "Rainbow: Combining Improvements in Deep Reinforcement Learning", AAAI, arXiv:1710.02298.
    Young & Tian 2019, "MinAtar: An Atari-Inspired Testbed for Thorough and Reproducible Reinforcement
        Learning Experiments", arXiv:1903.03176.
    Obando-Ceron & Castro 2021, "Revisiting Rainbow: Promoting more Insightful and Inclusive Deep
        Reinforcement Learning Research", ICML, arXiv:2011.14826 (DQN's parts measured on MinAtar).
    Dabney, Ostrovski, Barreto 2021, "Temporally-Extended epsilon-Greedy Exploration", ICLR, arXiv:2006.01782.
    Sutton & Barto 2018, "Reinforcement Learning: An Introduction", 2nd ed., ch. 6-7.

Usage
    python algos/dqn.py --env-id MountainCar-v0        # the main job (the default env)
    python algos/dqn.py --env-id CartPole-v1 --total-timesteps 20000    # a quick run
    python algos/dqn.py --env-id LunarLander-v3          # Box2D, 300k steps
    python algos/dqn.py --env-id MinAtar/Breakout-v1     # from pixels (also Freeway, SpaceInvaders, ...), 1M
    torchrun --standalone --nproc_per_node=2 algos/dqn.py --env-id CartPole-v1
    python algos/dqn.py --eval-checkpoint runs/<run_name>/dqn.pt    # evaluate, no training
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
from collections import deque
from typing import Annotated, Literal, Optional, get_type_hints

import gymnasium as gym
import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
import tyro
from torch.nn.parallel import DistributedDataParallel as DDP

ALGO = "dqn"


@dataclasses.dataclass(frozen=True)
class Range:
    """Valid values of a numeric field: lo <= x <= hi (lo < x with lo_open), and finite; check_args enforces it."""

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False


@dataclasses.dataclass
class Args:
    """DQN. --env-id picks that environment's tuned numbers (PRESETS) as the defaults shown here;
    any flag still wins. Every count is for the whole run, all ranks together."""

    exp_name: str = "dqn"  # name of this experiment (part of the run name)
    seed: Annotated[int, Range(0, 2**31 - 1)] = 1  # seed of the experiment (rank r uses seed + r)
    torch_deterministic: bool = True  # set torch.backends.cudnn.deterministic
    cuda: bool = True  # use CUDA when it is available
    num_threads: Annotated[int, Range(1)] = 1  # torch CPU threads; small networks run fastest with one
    track: bool = False  # log to Weights & Biases
    wandb_project_name: str = "algos"  # the wandb project
    wandb_entity: Optional[str] = None  # the wandb entity (team)
    save_model: bool = False  # save the Q-network to runs/<run_name>/dqn.pt
    eval_checkpoint: Optional[str] = None  # evaluate this saved model greedily and exit, no training
    eval_episodes: Annotated[int, Range(1)] = 100  # greedy evaluation episodes at the end
    log_interval: Annotated[int, Range(1)] = 5000  # print progress every this many environment steps

    env_id: str = "MountainCar-v0"  # a discrete-action gymnasium id ("module:Env-v0" imports module first)
    # truncate episodes at this many steps (None: the env's limit, MinAtar has none; --eval-checkpoint: the saved one)
    max_episode_steps: Annotated[Optional[int], Range(1)] = None
    loss: Literal["huber", "mse"] = "huber"  # regression loss on the TD error
    double_dqn: bool = True  # choose a* with the online network (Double DQN) instead of the target network
    total_timesteps: Annotated[int, Range(1)] = 500_000  # env steps (all ranks), rounded down to a multiple of num_envs
    num_envs: Annotated[int, Range(1)] = 1  # parallel environments (each rank steps num_envs / world_size)
    learning_rate: Annotated[float, Range(0, lo_open=True)] = 2.5e-4  # Adam step size
    anneal_lr: bool = False  # let the step size fall linearly to 0 over the run (steadier final weights)
    buffer_size: Annotated[int, Range(1)] = 10_000  # replay buffer capacity in transitions, split among ranks
    gamma: Annotated[float, Range(0, 1)] = 0.99  # discount factor
    tau: Annotated[float, Range(0, 1, lo_open=True)] = 1.0  # target update rate: 1 copies, < 1 is Polyak averaging
    target_network_frequency: Annotated[int, Range(1)] = 500  # update the target every this many env steps
    batch_size: Annotated[int, Range(1)] = 128  # transitions per gradient step (each rank samples its share)
    start_e: Annotated[float, Range(0, 1)] = 1.0  # epsilon at the start
    end_e: Annotated[float, Range(0, 1)] = 0.05  # epsilon at the end of the linear schedule
    exploration_fraction: Annotated[float, Range(0, 1)] = 0.5  # fraction of the run over which epsilon falls to end-e
    ez_mu: Annotated[float, Range(0)] = 0.0  # epsilon z-greedy: hold exploratory actions n ~ zeta(mu) steps (0: plain)
    learning_starts: Annotated[int, Range(1)] = 10_000  # environment steps of pure collection before learning
    train_frequency: Annotated[int, Range(1)] = 10  # do gradient-steps updates every this many env steps
    gradient_steps: Annotated[int, Range(1)] = 1  # updates per training round
    n_step: Annotated[int, Range(1)] = 1  # n of the n-step return (1 = one-step Q-learning)
    hidden_sizes: Annotated[tuple[int, ...], Range(1)] = (120, 84)  # widths of the Q-network's hidden layers


# Tuned environments: whole Args values; flags still win. How each was found: README, dqn.py section.
PRESETS = {
    # RL Zoo's tuned DQN with a smaller network; 8-step returns carry the rare flag rewards back.
    "MountainCar-v0": dataclasses.replace(
        Args(), env_id="MountainCar-v0", total_timesteps=120_000, learning_rate=4e-3, gamma=0.98,
        target_network_frequency=600, end_e=0.07, exploration_fraction=0.2, learning_starts=1_000,
        train_frequency=16, gradient_steps=8, n_step=8, hidden_sizes=(64, 64)),
    # Fewer, larger updates on 4 envs: steadier weights at the end, where the evaluation happens.
    "CartPole-v1": dataclasses.replace(
        Args(), env_id="CartPole-v1", total_timesteps=50_000, num_envs=4, learning_rate=1e-3,
        buffer_size=50_000, target_network_frequency=500, exploration_fraction=0.2,
        learning_starts=1_000, train_frequency=8, n_step=8, hidden_sizes=(64, 64)),
    # Swinging up needs torque held in one direction: held exploratory actions (ez_mu 2), n = 4.
    "Acrobot-v1": dataclasses.replace(
        Args(), env_id="Acrobot-v1", total_timesteps=200_000, learning_rate=4e-3, anneal_lr=True,
        gamma=0.98, target_network_frequency=600, end_e=0.07, exploration_fraction=0.2, ez_mu=2.0,
        learning_starts=1_000, train_frequency=16, gradient_steps=8, n_step=4, hidden_sizes=(64, 64)),
    # RL Zoo's DQN run 3x longer: 3-step returns, an annealed step size, a 100k buffer that remembers early crashes.
    "LunarLander-v3": dataclasses.replace(
        Args(), env_id="LunarLander-v3", total_timesteps=300_000, learning_rate=6.3e-4, anneal_lr=True,
        buffer_size=100_000, target_network_frequency=250, end_e=0.05, exploration_fraction=0.12,
        learning_starts=1_000, train_frequency=4, gradient_steps=4, n_step=3, hidden_sizes=(256, 256)),
    # MinAtar, one set for the five games as in Young & Tian 2019: their network, replay size and target period; Adam,
    # Double DQN, 3-step returns, 64 transitions every 4 frames (theirs: 32 every frame), a fifth of their 5M frames;
    # v1: minimal action sets, v0: all 6. MinAtar has no time limit: 100k steps cuts a never-ending greedy episode.
    **{f"MinAtar/{game}-v{v}": dataclasses.replace(
        Args(), env_id=f"MinAtar/{game}-v{v}", total_timesteps=1_000_000, max_episode_steps=100_000,
        learning_rate=3e-4, buffer_size=100_000, target_network_frequency=1_000, batch_size=64, end_e=0.01,
        exploration_fraction=0.1, learning_starts=5_000, train_frequency=4, n_step=3, hidden_sizes=(128,))
       for game in ("Breakout", "Freeway", "SpaceInvaders", "Asterix", "Seaquest") for v in (0, 1)},
}


def preset(env_id: str) -> Args:
    """The defaults a user gets with --env-id env_id."""
    return PRESETS.get(env_id, dataclasses.replace(Args(), env_id=env_id))


# =============================================================================================
# ALGORITHM: environments, the Q-network, n-step transitions, the replay buffer, the TD target,
# the target-network update, exploration, evaluation. Read this first.
# =============================================================================================
def make_envs(env_id: str, num_envs: int, max_episode_steps: Optional[int] = None) -> gym.vector.VectorEnv:
    """Synchronous vector env that records episode returns. gymnasium 1.x resets a finished sub-env on the
    *next* step() (NEXT_STEP autoreset): that call ignores the action and returns the reset observation with
    reward 0. Such a step is not a transition of the MDP and is never written to the replay buffer."""
    if env_id.lower().startswith("minatar/"):  # so that a wrongly cased id gets gymnasium's "Did you mean"
        register_minatar()
    limit = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
    try:
        envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync", **limit)
    except (gym.error.Error, ImportError) as e:  # ImportError: an outdated id still registered, e.g. Hopper-v3
        raise SystemExit(f"--env-id {env_id}: {e} (list the registered ids with: "
                         "python -c \"import gymnasium; gymnasium.pprint_registry()\")") from None
    if not isinstance(envs.single_action_space, gym.spaces.Discrete):
        raise SystemExit(f"DQN needs a discrete action space, but {env_id} has {envs.single_action_space}: "
                         "use a policy-gradient method such as ppo.py for continuous actions.")
    space = envs.single_observation_space
    image = isinstance(space, gym.spaces.Box) and len(space.shape) == 3
    if not (isinstance(space, gym.spaces.Box) and len(space.shape) == 1 or image):
        raise SystemExit(f"this DQN takes a flat Box observation or a channel-last image (height, width, "
                         f"channels), but {env_id} has {space}.")
    channel_first = image and space.shape[0] <= 4 and space.shape[0] < min(space.shape[1:])  # e.g. (4, 84, 84)
    if image and (channel_first or min(space.shape[:2]) < 3 or np.any(space.low < 0) or np.any(space.high > 1)):
        raise SystemExit(f"{env_id}'s images must be channel-last (height, width, channels; a first axis of at "
                         f"most 4 and shorter than the others reads as channels), at least 3x3 (the convolution's "
                         f"window), with values in [0, 1], but its space is {space}: transpose or rescale them with "
                         "an observation wrapper first (Atari: divide by 255).")
    return gym.wrappers.vector.RecordEpisodeStatistics(envs)


def register_minatar() -> None:
    """gymnasium 1.x does not load plugins' ids by itself: MinAtar's must be registered before make."""
    try:
        from minatar.gym import register_envs
    except ModuleNotFoundError:
        raise SystemExit("the MinAtar games need the minatar package: pip install -r requirements.txt") from None
    if "MinAtar/Breakout-v1" not in gym.registry:
        register_envs()


class QNetwork(nn.Module):
    """Q(s, . ; theta): one value per action, from a torso chosen by the observation's shape.

    Flat vectors: an MLP on inputs rescaled to [-1, 1] by the space's finite bounds (MountainCar's velocity lives in
    +-0.07 and would otherwise be a nearly invisible input); unbounded inputs pass unchanged. Images: Young & Tian's
    network, a 3x3 convolution with 16 channels, then the dense layers, all ReLU. The grid, channel-last in its
    space's dtype (MinAtar: bool) and in [0, 1] (make_envs checks), becomes channel-first float32 here and only here."""

    def __init__(self, obs_space: gym.spaces.Box, n_actions: int, hidden_sizes: tuple[int, ...]):
        super().__init__()
        self.image = len(obs_space.shape) == 3
        if self.image:
            rows, cols, channels = obs_space.shape  # channel-last
            self.conv = nn.Sequential(nn.Conv2d(channels, 16, kernel_size=3), nn.ReLU(), nn.Flatten())
            width = 16 * (rows - 2) * (cols - 2)
        else:
            low, high = obs_space.low.astype(np.float64), obs_space.high.astype(np.float64)
            bounded = np.isfinite(low) & np.isfinite(high) & (high > low)
            low, high = np.where(bounded, low, -1.0), np.where(bounded, high, 1.0)  # [-1, 1] maps to itself
            self.register_buffer("obs_center", torch.tensor((high + low) / 2, dtype=torch.float32))
            self.register_buffer("obs_scale", torch.tensor((high - low) / 2, dtype=torch.float32))
            width = obs_space.shape[0]
        layers = []
        for h in hidden_sizes:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.net = nn.Sequential(*layers, nn.Linear(width, n_actions))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.image:  # [B, H, W, C] -> [B, C, H, W] float, the layout Conv2d expects
            return self.net(self.conv(obs.permute(0, 3, 1, 2).float()))
        return self.net((obs.float() - self.obs_center) / self.obs_scale)

    @torch.inference_mode()
    def q_values(self, obs: np.ndarray) -> torch.Tensor:
        """Q(s, .) of a batch of numpy observations, for acting: no gradients."""
        return self(torch.as_tensor(obs, device=self.net[-1].weight.device))


class NStepWindow:
    """Turns each sub-env's stream of one-step transitions into n-step ones: every sub-env keeps its
    last n (obs, action, reward); a full window's oldest entry leaves as (s_t, a_t, G, s_t+n, gamma^n),
    and an episode's end flushes every entry (discount gamma^m, or 0 if the episode terminated)."""

    def __init__(self, n: int, num_envs: int, gamma: float):
        self.n, self.gamma, self.windows = n, gamma, [[] for _ in range(num_envs)]

    def push(self, env: int, obs, action, reward, next_obs, terminated: bool, truncated: bool) -> list:
        """Add one real transition of sub-env `env`; return the n-step transitions now complete."""
        window = self.windows[env]
        window.append((obs, action, reward))
        if terminated or truncated:
            leaving = len(window)  # the episode is over: every entry leaves
        elif len(window) == self.n:
            leaving = 1  # the oldest entry now has its n rewards
        else:
            return []
        out = []
        for k, (obs_k, action_k, _) in enumerate(window[:leaving]):
            ret = sum(self.gamma ** j * r for j, (_, _, r) in enumerate(window[k:]))
            discount = 0.0 if terminated else self.gamma ** (len(window) - k)
            out.append((obs_k, action_k, ret, next_obs, discount))
        del window[:leaving]
        return out


class ReplayBuffer:
    """The last `capacity` transitions in preallocated arrays; new ones overwrite the oldest.
    A transition is (s_t, a_t, G, s_t+m, gamma^m (1 - terminated)) with G the n-step return."""

    def __init__(self, capacity: int, obs_space: gym.spaces.Box, rng: np.random.Generator):
        self.capacity, self.rng, self.pos, self.size = capacity, rng, 0, 0
        self.obs, self.next_obs = np.zeros((2, capacity, *obs_space.shape), obs_space.dtype)  # MinAtar: bool grids
        self.actions = np.zeros(capacity, np.int64)
        self.returns, self.discounts = np.zeros((2, capacity), np.float32)

    def add(self, obs, action, ret, next_obs, discount) -> None:
        self.obs[self.pos], self.actions[self.pos], self.returns[self.pos] = obs, action, ret
        self.next_obs[self.pos], self.discounts[self.pos] = next_obs, discount
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, device: torch.device):
        """A uniform minibatch (with replacement) as tensors on `device`."""
        idx = self.rng.integers(0, self.size, batch_size)
        arrays = (self.obs, self.actions, self.returns, self.next_obs, self.discounts)
        return tuple(torch.from_numpy(a[idx]).to(device) for a in arrays)


def td_target(q_network: nn.Module, target_network: nn.Module, returns: torch.Tensor,
              next_obs: torch.Tensor, discounts: torch.Tensor, double_dqn: bool) -> torch.Tensor:
    """y = G + gamma^m (1 - terminated) Q_target(s', a*); a* from the online net for Double DQN."""
    with torch.no_grad():
        next_q_target = target_network(next_obs)
        chooser = q_network(next_obs) if double_dqn else next_q_target
        next_q = next_q_target.gather(1, chooser.argmax(dim=1, keepdim=True)).squeeze(1)
        return returns + discounts * next_q


def soft_update(target_network: nn.Module, q_network: nn.Module, tau: float) -> None:
    """theta_target <- tau * theta + (1 - tau) * theta_target; tau = 1 copies the weights."""
    with torch.no_grad():
        for p_t, p in zip(target_network.parameters(), q_network.parameters()):
            p_t.lerp_(p, tau)


def linear_schedule(start_e: float, end_e: float, duration: float, t: int) -> float:
    """Epsilon falls linearly from start_e to end_e over `duration` steps, then stays."""
    return max(end_e, start_e + (end_e - start_e) * t / max(duration, 1.0))


def explore(q_values_fn, obs, epsilon: float, hold: np.ndarray, held_action: np.ndarray,
            mu: float, n_actions: int, rng: np.random.Generator) -> np.ndarray:
    """Epsilon z-greedy (Dabney et al. 2021, Alg. 1) for a batch of sub-envs.

    A sub-env that is not already exploring starts, with probability epsilon, to hold one uniformly random action
    for n ~ zeta(mu) steps, P(n) proportional to n^-mu; plain epsilon-greedy is n = 1 (mu = 0 here). Holding an
    action gives exploration momentum: in MountainCar uniform random actions dither and practically never reach
    the flag. `hold` (steps left) and `held_action` change in place; q_values_fn(obs) runs only when a sub-env
    acts greedily."""
    start = (hold == 0) & (rng.random(len(hold)) < epsilon)
    if start.any():
        hold[start] = rng.zipf(mu, start.sum()) if mu else 1
        held_action[start] = rng.integers(n_actions, size=start.sum())
    exploring = hold > 0
    actions = held_action.copy()
    if not exploring.all():
        actions[~exploring] = q_values_fn(obs).argmax(1).cpu().numpy()[~exploring]
    hold[exploring] -= 1
    return actions


def evaluate(q_network: QNetwork, env_id: str, episodes: int, seed: int, max_episode_steps: Optional[int],
             where: str) -> dict:
    """Greedy returns of `episodes` episodes, one per sub-env, so short episodes are not over-counted (the first
    episodes to finish in a shared env are biased towards short ones); printed, `where` saying after what."""
    envs = make_envs(env_id, episodes, max_episode_steps)
    obs, _ = envs.reset(seed=seed)
    returns, done = np.zeros(episodes), np.zeros(episodes, dtype=bool)
    while not done.all():
        obs, rewards, terminated, truncated, _ = envs.step(q_network.q_values(obs).argmax(1).cpu().numpy())
        returns += np.where(done, 0.0, rewards)
        done |= terminated | truncated
    envs.close()
    mean, std = float(returns.mean()), float(returns.std())
    print(f"{env_id} greedy eval: {mean:.2f} +- {std:.2f} over {episodes} episodes {where}")
    return {"eval/mean_return": mean, "eval/std_return": std, "eval/episodes": episodes}


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
    """Combinations of flags that would otherwise run silently wrong, one sentence each."""
    for name in ("num_envs", "buffer_size", "batch_size"):
        if getattr(args, name) % world_size:
            raise SystemExit(f"--{name.replace('_', '-')} {getattr(args, name)} does not divide among "
                             f"the {world_size} ranks: make it a multiple of {world_size}.")
    for name in ("train_frequency", "target_network_frequency"):
        if getattr(args, name) % args.num_envs:
            raise SystemExit(f"--{name.replace('_', '-')} {getattr(args, name)} is not a multiple of "
                             f"--num-envs {args.num_envs}: pick values so that it divides evenly.")
    if args.learning_starts < args.num_envs * args.n_step:
        raise SystemExit(f"--learning-starts {args.learning_starts} is below --num-envs x --n-step = "
                         f"{args.num_envs * args.n_step}: the first n-step transitions are not "
                         "complete by then, so the buffer would be empty; raise --learning-starts.")
    # main trains at iterations that are multiples of train_frequency // num_envs; the last is at step last_train
    last_train = max(args.total_timesteps // args.num_envs, 1) // (args.train_frequency // args.num_envs)
    last_train *= args.train_frequency
    if args.learning_starts >= last_train:
        last = f"{last_train}, the last step that trains" if last_train else "0: no step trains"
        raise SystemExit(f"--learning-starts {args.learning_starts} is not below {last} (--total-timesteps "
                         f"{args.total_timesteps}, --train-frequency {args.train_frequency}): the network would "
                         "never train.")
    if args.start_e < args.end_e:
        raise SystemExit(f"--start-e {args.start_e} is below --end-e {args.end_e}: epsilon falls from --start-e "
                         "to --end-e, so give a --start-e of at least --end-e.")
    if 0 < args.ez_mu <= 1:
        raise SystemExit(f"--ez-mu {args.ez_mu} must be 0 (plain epsilon-greedy) or above 1 "
                         "(the zeta distribution is only defined there; the paper uses 2).")


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


CHECKPOINT_HEADER = b"algos checkpoint sha256="


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


def save_model(run_dir: str, q_network: nn.Module, args: Args) -> str:
    """<run_dir>/dqn.pt, atomic and verifiable (the sha256 of the torch.save bytes heads a temp file that is then
    renamed); returns its path."""
    path, buffer = os.path.join(run_dir, "dqn.pt"), io.BytesIO()
    torch.save({"algo": ALGO, "q_network": q_network.state_dict(), "env_id": args.env_id,
                "hidden_sizes": list(args.hidden_sizes), "max_episode_steps": args.max_episode_steps,
                "args": dataclasses.asdict(args)}, buffer)
    data = buffer.getvalue()
    with open(f"{path}.tmp", "wb") as f:
        f.write(CHECKPOINT_HEADER + hashlib.sha256(data).hexdigest().encode() + b"\n" + data)
    os.replace(f"{path}.tmp", path)
    print(f"saved {path}")
    return path


class StopFlag:
    """Ctrl-C sets .requested and the loop stops at the end of its step, so the work is saved whole; a second Ctrl-C
    quits at once without saving. Under torchrun every rank hears it, and agreed() lets the ranks stop at the same step,
    so none is left waiting in a collective. Once .evaluating is set, the first Ctrl-C raises KeyboardInterrupt: the
    final evaluation stops at once, and main keeps the trained model all the same."""

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

    def agreed(self, device: torch.device) -> bool:
        """Every rank calls this at the same step: any rank's request becomes every rank's."""
        flag = torch.tensor([float(self.requested)], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        self.requested = bool(flag.item())
        return self.requested


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
    """--eval-checkpoint: the greedy returns of a saved network on its own env; no training, rank 0 only."""
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
    limit = ckpt.get("max_episode_steps") if args.max_episode_steps is None else args.max_episode_steps
    probe = make_envs(ckpt["env_id"], 1, limit)
    q_network = QNetwork(probe.single_observation_space, int(probe.single_action_space.n),
                         tuple(ckpt["hidden_sizes"])).to(device)
    probe.close()
    try:
        q_network.load_state_dict(ckpt["q_network"])
    except RuntimeError as e:
        raise SystemExit(f"--eval-checkpoint {args.eval_checkpoint} does not fit {ckpt['env_id']}'s "
                         f"spaces ({str(e).splitlines()[0]}).") from None
    return evaluate(q_network, ckpt["env_id"], args.eval_episodes, args.seed + 100_000, limit,
                    f"of {args.eval_checkpoint}")


def main(args: Args) -> dict:
    """Train (or, with --eval-checkpoint, only evaluate); return eval/mean_return, eval/std_return,
    eval/episodes and, for training, charts/SPS, global_step, wall_time, losses/td_loss (last logged) and
    charts/last100_return (the mean of rank 0's last 100 training episodes, if any ended)."""
    check_args(args)
    if args.eval_checkpoint is not None:
        return evaluate_checkpoint(args)
    distributed, rank, world_size, device = setup_distributed(args)
    validate(args, world_size)
    is_main = rank == 0
    num_envs, batch_size = args.num_envs // world_size, args.batch_size // world_size  # this rank's shares

    seed = args.seed + rank
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    rng = np.random.default_rng(seed)

    run_name = f"{args.env_id.replace(':', '_').replace('/', '_')}__{args.exp_name}__{args.seed}__{int(time.time())}"
    envs = make_envs(args.env_id, num_envs, args.max_episode_steps)  # a refused --env-id leaves no run folder
    obs_space, n_actions = envs.single_observation_space, int(envs.single_action_space.n)
    # A replay buffer or a network larger than the machine's memory is refused before the run folder (numpy would only
    # reserve the buffer and fail hours later); the network's parameters are counted on the meta device, nothing
    # allocated, at 20 bytes each with the target copy, gradients and Adam's moments (on a GPU too: a margin).
    make_q = lambda: QNetwork(obs_space, n_actions, args.hidden_sizes)
    with torch.device("meta"):
        weights = 20 * sum(p.numel() for p in make_q().parameters())
    need = args.buffer_size * (2 * obs_space.dtype.itemsize * math.prod(obs_space.shape) + 16)  # 2 obs, a, G, gamma^m
    have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else math.inf
    if need + weights > have:
        raise SystemExit(f"a replay buffer of --buffer-size {args.buffer_size} ({need / 2**30:,.1f} GiB) with a "
                         f"network of --hidden-sizes {' '.join(map(str, args.hidden_sizes)) or '(none)'} "
                         f"({weights / 2**30:,.1f} GiB with its target copy, gradients and Adam's moments) does not "
                         f"fit in the memory here ({have / 2**30:,.1f} GiB in all): lower them.")
    rb = ReplayBuffer(args.buffer_size // world_size, obs_space, rng)
    if is_main:
        run_dir = make_run_dir(run_name)
        print(f"{args.env_id}: {world_size} rank(s) x {num_envs} env(s) on {device}, run folder {run_dir}")
        print("config: " + ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(args).items()))
    logger = RunLog(args, run_name, run_dir) if is_main else None

    q_network = make_q().to(device)
    # DDP broadcasts rank 0's initial weights, so the target copy below is the same everywhere.
    model = DDP(q_network) if distributed else q_network
    target_network = make_q().to(device)
    target_network.load_state_dict(q_network.state_dict())
    optimizer = torch.optim.Adam(q_network.parameters(), lr=args.learning_rate, fused=device.type in ("cpu", "cuda"))
    loss_fn = F.smooth_l1_loss if args.loss == "huber" else F.mse_loss
    window = NStepWindow(args.n_step, num_envs, args.gamma)

    # The schedule is in iterations (one step of every env), the same on every rank.
    num_iterations = max(args.total_timesteps // args.num_envs, 1)
    train_every = args.train_frequency // args.num_envs
    target_every = args.target_network_frequency // args.num_envs
    recent_returns = deque(maxlen=100)  # Young & Tian's measure: the last 100 training episodes
    td_loss = torch.zeros(())
    start_time = time.time()
    obs, _ = envs.reset(seed=seed * 1_000)  # sub-env i is seeded seed*1000 + i
    autoreset = np.zeros(num_envs, dtype=bool)
    hold, held_action = np.zeros(num_envs, np.int64), np.zeros(num_envs, np.int64)

    stop = StopFlag()
    for iteration in range(1, num_iterations + 1):
        global_step = iteration * args.num_envs  # environment steps so far, all ranks together
        epsilon = linear_schedule(args.start_e, args.end_e, args.exploration_fraction * args.total_timesteps,
                                  global_step)
        actions = explore(q_network.q_values, obs, epsilon, hold, held_action, args.ez_mu, n_actions, rng)
        next_obs, rewards, terminated, truncated, infos = envs.step(actions)
        for i in np.flatnonzero(~autoreset):  # NEXT_STEP autoreset (make_envs): skip the sub-envs just reset
            for transition in window.push(i, obs[i], actions[i], rewards[i], next_obs[i], terminated[i], truncated[i]):
                rb.add(*transition)
        autoreset = terminated | truncated
        hold[autoreset] = 0  # a new episode starts without a held action
        obs = next_obs

        if "episode" in infos:
            finished = infos["_episode"]
            returns, lengths = infos["episode"]["r"][finished], infos["episode"]["l"][finished]
            recent_returns.extend(returns.tolist())
            if logger:  # one row per step: wandb keeps only the last value logged at a step
                logger.log({"charts/episodic_return": float(returns.mean()), "global_step": global_step,
                            "charts/episodic_length": float(lengths.mean())}, step=global_step)

        if global_step > args.learning_starts and iteration % train_every == 0:
            if args.anneal_lr:
                optimizer.param_groups[0]["lr"] = args.learning_rate * (1.0 - (iteration - 1) / num_iterations)
            for _ in range(args.gradient_steps):
                b_obs, b_actions, b_returns, b_next_obs, b_discounts = rb.sample(batch_size, device)
                y = td_target(q_network, target_network, b_returns, b_next_obs, b_discounts, args.double_dqn)
                q_values = model(b_obs).gather(1, b_actions.unsqueeze(1)).squeeze(1)
                td_loss = loss_fn(q_values, y)
                optimizer.zero_grad(set_to_none=True)
                td_loss.backward()  # DDP all-reduces (averages) the gradients here
                optimizer.step()

        if global_step > args.learning_starts and iteration % target_every == 0:
            soft_update(target_network, q_network, args.tau)

        log_now = global_step % args.log_interval < args.num_envs or iteration == num_iterations
        if is_main and log_now:
            if not math.isfinite(td_loss.item()):  # a nan or inf loss stops the run (exit 1)
                raise SystemExit(f"step {global_step}: the TD loss is {td_loss.item()}; lower --learning-rate.")
            sps = int(global_step / (time.time() - start_time))
            mean_ret = np.mean(recent_returns) if recent_returns else float("nan")
            print(f"step {global_step:>8}  return(last {len(recent_returns)}) {mean_ret:8.2f}  "
                  f"epsilon {epsilon:.3f}  td_loss {td_loss.item():.4f}  SPS {sps}")
            if logger:
                logger.log({"losses/td_loss": td_loss.item(), "charts/epsilon": epsilon,
                            "charts/SPS": sps, "global_step": global_step}, step=global_step)
        if stop.requested if not distributed else log_now and stop.agreed(device):  # torchrun: agree at progress steps
            break

    envs.close()
    wall_time = time.time() - start_time
    metrics = {"global_step": global_step, "wall_time": wall_time, "charts/SPS": int(global_step / wall_time),
               "losses/td_loss": td_loss.item()}
    if recent_returns:  # left out when no training episode ended
        metrics["charts/last100_return"] = float(np.mean(recent_returns))
    stop.evaluating = is_main  # from here rank 0's Ctrl-C stops the final evaluation at once; the model is kept below
    with contextlib.suppress(KeyboardInterrupt):
        if is_main and not stop.requested:  # the TD loss was checked at the last step, which always logs
            print(f"final evaluation: {args.eval_episodes} episodes (a Ctrl-C stops it and keeps the model)")
            metrics |= evaluate(q_network, args.env_id, args.eval_episodes, args.seed + 100_000, args.max_episode_steps,
                                f"after {global_step} steps in {wall_time:.1f} s ({metrics['charts/SPS']} SPS)")
            print((f"mean return of the last {len(recent_returns)} training episodes: "
                   f"{metrics['charts/last100_return']:.2f}") if recent_returns else "no training episode ended")
            logger.log({**metrics, "global_step": global_step}, step=global_step)
            logger.close()
            if args.save_model:
                save_model(run_dir, q_network, args)
            else:
                print(f"(the Q-network was not saved: add --save-model to keep it in {run_dir}/)")
    stop.evaluating = False  # evaluated: a Ctrl-C from here asks to stop, and the model is kept below
    if stop.requested if not distributed else stop.agreed(device):  # Ctrl-C in training or the final evaluation
        if is_main:
            print(f"interrupted at step {global_step}")
            path = save_model(run_dir, q_network, args)
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
