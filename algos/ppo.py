"""Proximal Policy Optimization (PPO) for discrete and continuous actions, in one file.

PPO (Schulman et al. 2017) is an actor-critic policy gradient method. It collects a rollout of
num_steps x num_envs transitions with the current policy pi_old, estimates how much better each
action was than expected (the advantage, by GAE), and then takes several epochs of minibatch
steps on a *clipped* surrogate objective, which removes the incentive to move the new policy
far from pi_old on any one sample. That makes it safe to reuse each rollout for many steps.

    ratio               r_t(theta) = pi_theta(a_t|s_t) / pi_old(a_t|s_t)
    clipped surrogate   L_clip = E_t[ min(r_t A_t, clip(r_t, 1 - eps, 1 + eps) A_t) ]   (PPO eq. 7)
    TD error            delta_t = r_t + gamma (1 - terminated_t) V(s_t+1) - V(s_t)
    GAE(lambda)         A_t = delta_t + gamma lambda (1 - done_t) A_t+1            (GAE eq. 16)
    value target        R_t = A_t + V(s_t)
    loss                -L_clip + c_v 1/2 (V(s_t) - R_t)^2 - c_e H[pi_theta(.|s_t)]   (PPO eq. 9)

`terminated` means the MDP ended (the pole fell): nothing lies beyond, so nothing is
bootstrapped. A time-limit `truncated` episode did not end, the clock ran out, so delta_t
still bootstraps from V of the true last observation; only the sum A_t stops there (done_t).

The details that matter ("The 37 Implementation Details of PPO", Huang et al. 2022) are all here:
orthogonal initialisation (sqrt 2 hidden, 0.01 policy head, 1 value head), Adam with a linearly
annealed step size, advantages normalised per minibatch, an optional clipped value loss, an entropy
bonus, global gradient-norm clipping, the approximate KL (k3 estimator, E[(r - 1) - log r]) and
clip fraction logged, and an optional early stop of the epochs when the KL passes --target-kl.

Actions: a Categorical over logits for a Discrete space; for a Box, a diagonal Gaussian
(torch.distributions.Normal) whose mean comes from the network and whose log standard deviation is
a learned, state-independent vector. The sample is clipped to the bounds on its way to the env, but
its log-probability is that of the unclipped sample (what the policy really drew). Continuous
control also normalises observations (running mean and variance, clipped to +-10) and scales
rewards by the running standard deviation of the discounted return (also clipped to +-10), so that
the value loss does not swamp the global gradient norm. Both statistics are updated once per rollout
(summed over ranks; the first rollout sees mean 0 and variance 1), saved with the model and frozen
in the evaluation, so a saved policy sees its own scale.

Observations: a flat vector goes to separate policy and value MLPs; an image (MinAtar's 10x10 grids of
boolean channels, Young & Tian 2019) goes through one convolutional torso shared by a policy head and a
value head, as in the Atari PPO (the losses above then shape one set of features together).

Autoreset. gymnasium 1.x vector envs reset a finished sub-env on the *next* step() (NEXT_STEP):
the step that ends an episode returns the true last observation; the following one ignores the
action and returns the reset observation with reward 0. At that reset step the agent's forward
pass sees the true last observation, so V(s_T) lands in the rollout right after the ending step,
where GAE looks for V(s_t+1): the truncation bootstrap comes for free (SAME_STEP with
info["final_obs"] would need a second forward pass). The reset step itself is not a transition of
the MDP: it is marked invalid and left out of the losses and statistics; global_step counts it.

Distributed: under torchrun the --num-envs environments are split across the ranks, every rank
cuts its rollout into the same number of minibatches, and DistributedDataParallel averages the
gradients, so an update sees the whole rollout; the normalisation statistics are summed over the
ranks, so every rank normalises alike. Rank 0 alone prints, logs, evaluates and saves.

References
    Schulman, Wolski, Dhariwal, Radford, Klimov 2017, "Proximal Policy Optimization Algorithms", arXiv:1707.06347.
    Schulman, Moritz, Levine, Jordan, Abbeel 2016, "High-Dimensional Continuous Control Using Generalized
        Advantage Estimation", ICLR, arXiv:1506.02438.
    Huang, Dossa, Raffin, Kanervisto, Wang 2022, "The 37 Implementation Details of Proximal Policy Optimization",
        ICLR Blog Track.
    Andrychowicz et al. 2021, "What Matters in On-Policy Reinforcement Learning? A Large-Scale Empirical Study",
        ICLR, arXiv:2006.05990.
    Raffin 2020, RL Baselines3 Zoo (the tuned hyperparameters the presets below start from).
    Young & Tian 2019, "MinAtar: An Atari-Inspired Testbed for Thorough and Reproducible Reinforcement
        Learning Experiments", arXiv:1903.03176.

Usage
    python algos/ppo.py                                  # CartPole-v1, 100k steps
    python algos/ppo.py --env-id Pendulum-v1             # continuous actions, 200k steps
    python algos/ppo.py --env-id Acrobot-v1 --total-timesteps 50000    # a quick run
    python algos/ppo.py --env-id HalfCheetah-v5          # MuJoCo (also Hopper-v5, Walker2d-v5), 1M steps
    python algos/ppo.py --env-id LunarLander-v3          # Box2D (also LunarLanderContinuous-v3), 1M steps
    python algos/ppo.py --env-id MinAtar/Breakout-v1     # from pixels (also Freeway, SpaceInvaders, ...), 2M
    python algos/ppo.py --env-id CartPole-v1 --help      # the numbers CartPole gets
    torchrun --standalone --nproc_per_node=2 algos/ppo.py   # 8 envs split over 2 ranks
    python algos/ppo.py --eval-checkpoint runs/<run_name>/ppo.pt    # evaluate, no training
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
import typing
from collections import deque
from dataclasses import dataclass
from typing import Annotated, Optional

import gymnasium as gym
import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import tyro
from torch.distributions import Normal
from torch.nn.parallel import DistributedDataParallel as DDP

ALGO = "ppo"


# Range marks each numeric field's valid values; check_args (MACHINERY, below) enforces them.
@dataclass(frozen=True)
class Range:
    """Valid values of a numeric field: lo <= x <= hi (lo < x with lo_open), and finite."""

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False


@dataclass
class Args:
    """PPO. --env-id picks the defaults shown here: PRESETS[env_id], else these (CleanRL's ppo.py) for discrete
    actions or BOX_ARGS for Box actions; any flag still wins. Every count is for the whole run, all ranks together."""

    exp_name: str = "ppo"  # name of this experiment (part of the run name)
    seed: Annotated[int, Range(0, 2**31 - 1)] = 1  # seed of the experiment (rank r uses seed + r)
    torch_deterministic: bool = True  # set torch.backends.cudnn.deterministic
    cuda: bool = True  # use CUDA when it is available
    num_threads: Annotated[int, Range(1)] = 1  # torch CPU threads; small networks run fastest with one
    track: bool = False  # log to Weights & Biases
    wandb_project_name: str = "algos"  # the wandb project
    wandb_entity: Optional[str] = None  # the wandb entity (team)
    save_model: bool = False  # save the agent and its normalisation statistics to runs/<run_name>/ppo.pt
    eval_checkpoint: Optional[str] = None  # evaluate this saved model deterministically and exit, no training
    eval_episodes: Annotated[int, Range(1)] = 100  # deterministic episodes at the end (argmax, or the Gaussian's mean)
    # after training, film one deterministic episode to runs/<run_name>/episode.gif (MuJoCo renders with EGL)
    capture_video: bool = False
    log_interval: Annotated[int, Range(1)] = 10_000  # print progress every this many env steps (all ranks together)

    # a gymnasium id with a Discrete or flat Box action space ("module:Env-v0" imports module first)
    env_id: str = "CartPole-v1"
    # cut every episode after this many steps (a truncation; None keeps the env's own limit, MinAtar has none;
    # with --eval-checkpoint, None keeps the checkpoint's)
    max_episode_steps: Annotated[Optional[int], Range(1)] = None
    # stop the update epochs early once the approximate KL passes this (0 = never)
    target_kl: Annotated[float, Range(0)] = 0.0
    total_timesteps: Annotated[int, Range(1)] = 500_000  # env steps, all ranks; rounded down to whole rollouts
    # parallel environments (all ranks together; each rank steps num_envs / world_size)
    num_envs: Annotated[int, Range(1)] = 4
    num_steps: Annotated[int, Range(2)] = 128  # steps per environment in each rollout (2+: one may be a reset step)
    # minibatches each rollout is cut into, per epoch (all ranks together: DDP averages the ranks' shares)
    num_minibatches: Annotated[int, Range(1)] = 4
    update_epochs: Annotated[int, Range(1)] = 4  # passes over each rollout
    learning_rate: Annotated[float, Range(0, lo_open=True)] = 2.5e-4  # Adam step size
    anneal_lr: bool = True  # let the step size fall linearly to 0 over the run
    gamma: Annotated[float, Range(0, 1)] = 0.99  # discount factor
    gae_lambda: Annotated[float, Range(0, 1)] = 0.95  # lambda of GAE (0: one-step TD error, 1: MC return minus V)
    clip_coef: Annotated[float, Range(0, lo_open=True)] = 0.2  # eps of the clipped surrogate objective
    clip_vloss: bool = False  # clip the value loss around the rollout's values too (PPO2's baselines variant)
    ent_coef: Annotated[float, Range(0)] = 0.01  # c_e, weight of the entropy bonus (0 = none)
    vf_coef: Annotated[float, Range(0, lo_open=True)] = 0.5  # c_v, weight of the value loss
    max_grad_norm: Annotated[float, Range(0, lo_open=True)] = 0.5  # clip the global gradient norm to this
    normalize_obs: bool = False  # normalise observations by their running mean and standard deviation
    normalize_reward: bool = False  # divide rewards by the running standard deviation of the discounted return
    # initial log standard deviation of the Gaussian policy (Box actions only; its variance stays a float32)
    log_std_init: Annotated[float, Range(-20, 20)] = 0.0
    # widths of the hidden layers of the policy and the value network (separate networks; for images,
    # the dense layers after the convolution, shared by both heads)
    hidden_sizes: Annotated[tuple[int, ...], Range(1)] = (64, 64)


# Box actions without a preset: CleanRL's ppo_continuous_action.py numbers.
BOX_ARGS = dataclasses.replace(
    Args(), total_timesteps=1_000_000, num_envs=1, num_steps=2048, num_minibatches=32, update_epochs=10,
    learning_rate=3e-4, ent_coef=0.0, normalize_obs=True, normalize_reward=True)

# Tuned environments: whole Args values; any flag given on the command line still wins.
# How each was found, and the results per seed, are in the README's ppo.py section.
PRESETS = {
    # RL Zoo's tuned row with 10 epochs: short rollouts, one minibatch, no entropy bonus; 500 in 100k steps.
    "CartPole-v1": dataclasses.replace(
        Args(), env_id="CartPole-v1", total_timesteps=100_000, num_envs=8, num_steps=32, num_minibatches=1,
        update_epochs=10, learning_rate=1e-3, gamma=0.98, gae_lambda=0.8, ent_coef=0.0),
    # RL Zoo's tuned row: long rollouts of 16 envs and normalised observations.
    "Acrobot-v1": dataclasses.replace(
        Args(), env_id="Acrobot-v1", total_timesteps=200_000, num_envs=16, num_steps=256, num_minibatches=64,
        learning_rate=3e-4, gae_lambda=0.94, ent_coef=0.0, normalize_obs=True),
    # RL Zoo's row, 4x shorter rollouts (more updates, as there is no gSDE here); bounded obs kept raw.
    "Pendulum-v1": dataclasses.replace(
        BOX_ARGS, env_id="Pendulum-v1", total_timesteps=200_000, num_envs=4, num_steps=256,
        num_minibatches=16, learning_rate=1e-3, gamma=0.9, log_std_init=-0.5, normalize_obs=False),
    # RL Zoo's LunarLander row: 16 envs x 1024 steps, minibatches of 64, gamma 0.999 for the late landing bonus.
    "LunarLander-v3": dataclasses.replace(
        Args(), env_id="LunarLander-v3", total_timesteps=1_000_000, num_envs=16, num_steps=1024,
        num_minibatches=256, gamma=0.999, gae_lambda=0.98, learning_rate=3e-4),
    # The same numbers with the Gaussian head (RL Zoo uses one row for both); rewards and obs kept raw.
    "LunarLanderContinuous-v3": dataclasses.replace(
        BOX_ARGS, env_id="LunarLanderContinuous-v3", total_timesteps=1_000_000, num_envs=16, num_steps=1024,
        num_minibatches=256, update_epochs=4, gamma=0.999, gae_lambda=0.98, ent_coef=0.01,
        normalize_obs=False, normalize_reward=False),
    # MuJoCo: CleanRL's continuous numbers (BOX_ARGS) at 1M steps; 10 deterministic eval episodes of 1,000 steps.
    **{env_id: dataclasses.replace(BOX_ARGS, env_id=env_id, eval_episodes=10)
       for env_id in ("HalfCheetah-v5", "Hopper-v5", "Walker2d-v5")},
    # MinAtar (Young & Tian 2019; v1 ids: the minimal action set, v0: all 6): their network (3x3x16 conv, 128 units)
    # shared by both heads; 8 envs x 32-step rollouts (4x more updates per frame than the Atari PPO's 128),
    # a larger step size, 2M frames; 100k steps cuts a never-ending greedy episode (MinAtar has no time limit).
    **{f"MinAtar/{game}-v{v}": dataclasses.replace(
        Args(), env_id=f"MinAtar/{game}-v{v}", total_timesteps=2_000_000, max_episode_steps=100_000, num_envs=8,
        num_steps=32, learning_rate=5e-4, hidden_sizes=(128,))
       for game in ("Breakout", "Freeway", "SpaceInvaders", "Asterix", "Seaquest") for v in (0, 1)},
}


def preset(env_id: str) -> Args:
    """The defaults a user gets with --env-id env_id: its preset, else Args() or BOX_ARGS (Box actions)."""
    if env_id in PRESETS:
        return PRESETS[env_id]
    try:
        box = isinstance(gym.make(env_id).action_space, gym.spaces.Box)
    except (gym.error.Error, ImportError):  # an unknown or outdated id: main() says so in one sentence
        box = False
    return dataclasses.replace(BOX_ARGS if box else Args(), env_id=env_id)


# =============================================================================================
# ALGORITHM: environments, running statistics, the actor-critic (Categorical or Gaussian policy),
# GAE, the clipped loss, evaluation. Read this first.
# =============================================================================================
def make_envs(env_id: str, num_envs: int, max_episode_steps: Optional[int] = None) -> gym.vector.VectorEnv:
    """Synchronous vector env (NEXT_STEP autoreset) that records episode returns. Observations are flat
    vectors, or images (height, width, channels) with values in [0, 1] such as MinAtar's boolean grids."""
    if env_id.lower().startswith("minatar/"):  # so that a wrongly cased id gets gymnasium's "Did you mean"
        register_minatar()
    limit = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
    try:
        envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync", **limit)
    except (gym.error.Error, ImportError) as e:  # ImportError: an outdated id still registered, e.g. Hopper-v3
        raise SystemExit(f"--env-id {env_id}: {e} (list the registered ids with: "
                         "python -c \"import gymnasium; gymnasium.pprint_registry()\")") from None
    space, action_space = envs.single_observation_space, envs.single_action_space
    image = isinstance(space, gym.spaces.Box) and len(space.shape) == 3
    if not (isinstance(space, gym.spaces.Box) and len(space.shape) == 1 or image):
        raise SystemExit(f"this PPO takes a flat Box observation or a channel-last image (height, width, "
                         f"channels), but {env_id} has {space}.")
    channel_first = image and space.shape[0] <= 4 and space.shape[0] < min(space.shape[1:])  # e.g. (4, 84, 84)
    if image and (channel_first or min(space.shape[:2]) < 3 or np.any(space.low < 0) or np.any(space.high > 1)):
        raise SystemExit(f"{env_id}'s images must be channel-last (height, width, channels; a first axis of at "
                         f"most 4 and shorter than the others reads as channels), at least 3x3 (the convolution's "
                         f"window), with values in [0, 1], but its space is {space}: transpose or rescale them with "
                         "an observation wrapper first (Atari: divide by 255).")
    if not (isinstance(action_space, gym.spaces.Discrete)
            or (isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1)):
        raise SystemExit(f"this PPO takes a Discrete or flat Box action space, but {env_id} has {action_space}.")
    if isinstance(action_space, gym.spaces.Box):  # Gaussian samples are clipped to the bounds on their way in
        envs = gym.wrappers.vector.TransformAction(envs, lambda a: np.clip(a, action_space.low, action_space.high))
    return gym.wrappers.vector.RecordEpisodeStatistics(envs)


def register_minatar() -> None:
    """gymnasium 1.x does not load plugins' ids by itself: MinAtar's must be registered before make."""
    try:
        from minatar.gym import register_envs
    except ModuleNotFoundError:
        raise SystemExit("the MinAtar games need the minatar package: pip install -r requirements.txt") from None
    if "MinAtar/Breakout-v1" not in gym.registry:
        register_envs()


class RunningMeanStd:
    """Mean and variance of a stream of batches (Chan et al.'s parallel update), in float64.
    Under torchrun `update` sums the batch moments of all ranks first, so the ranks agree."""

    def __init__(self, shape=()):
        self.mean, self.var, self.count = np.zeros(shape), np.ones(shape), 1e-4

    def update(self, x: np.ndarray, distributed: bool = False) -> None:
        x = x.reshape(-1, *self.mean.shape).astype(np.float64)
        moments = np.concatenate([[len(x)], x.sum(0).ravel(), (x ** 2).sum(0).ravel()])
        if distributed:
            dist.all_reduce(torch.from_numpy(moments))  # in place: the tensor shares moments' memory
        n, k = moments[0], self.mean.size  # n >= 1: a reset step is followed by a real one
        b_mean = moments[1:1 + k].reshape(self.mean.shape) / n
        b_var = np.maximum(moments[1 + k:].reshape(self.mean.shape) / n - b_mean ** 2, 0.0)
        delta, total = b_mean - self.mean, self.count + n
        self.mean = self.mean + delta * n / total
        self.var = (self.var * self.count + b_var * n + delta ** 2 * self.count * n / total) / total
        self.count = total


def layer_init(layer: nn.Module, std: float = math.sqrt(2)) -> nn.Module:
    """Orthogonal weights with gain `std`, zero bias (implementation detail 2 of Huang et al.)."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.zeros_(layer.bias)
    return layer


def mlp(in_dim: int, hidden_sizes: tuple[int, ...], out_dim: int, out_std: float) -> nn.Sequential:
    layers, width = [], in_dim
    for h in hidden_sizes:
        layers += [layer_init(nn.Linear(width, h)), nn.Tanh()]
        width = h
    return nn.Sequential(*layers, layer_init(nn.Linear(width, out_dim), out_std))


class Agent(nn.Module):
    """The policy and the value function, and the observation statistics (buffers, so they are
    saved in the state dict and synchronised by DDP's initial broadcast).

    Flat vectors: separate policy and value MLPs (tanh). Images: Young & Tian's MinAtar network as a torso
    shared by both heads, as in the Atari PPO: one 3x3 convolution with 16 channels, then the dense layers
    of hidden_sizes, all ReLU; the grid arrives channel-last (height, width, channels) as float32 0s and 1s
    (every caller converts the env's bools with normalize(torch.from_numpy(obs).to(float32))) and is
    permuted to channel-first in heads(), the only place that does it."""

    def __init__(self, obs_space: gym.spaces.Box, action_space: gym.Space, hidden_sizes: tuple[int, ...],
                 log_std_init: float = 0.0, normalize_obs: bool = False):
        super().__init__()
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        self.image = len(obs_space.shape) == 3
        n_out = int(action_space.n) if self.discrete else action_space.shape[0]
        if self.image:
            rows, cols, channels = obs_space.shape  # channel-last
            layers = [layer_init(nn.Conv2d(channels, 16, kernel_size=3)), nn.ReLU(), nn.Flatten()]
            width = 16 * (rows - 2) * (cols - 2)  # 3x3 without padding: 10x10 -> 8x8
            for h in hidden_sizes:
                layers += [layer_init(nn.Linear(width, h)), nn.ReLU()]
                width = h
            self.torso = nn.Sequential(*layers)
            self.actor = layer_init(nn.Linear(width, n_out), std=0.01)
            self.critic = layer_init(nn.Linear(width, 1), std=1.0)
        else:
            self.actor = mlp(obs_space.shape[0], hidden_sizes, n_out, out_std=0.01)
            self.critic = mlp(obs_space.shape[0], hidden_sizes, 1, out_std=1.0)
        if not self.discrete:
            self.log_std = nn.Parameter(torch.full((n_out,), float(log_std_init)))
        self.normalize_obs = normalize_obs
        self.register_buffer("obs_mean", torch.zeros(obs_space.shape))
        self.register_buffer("obs_std", torch.ones(obs_space.shape))

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        return ((obs - self.obs_mean) / self.obs_std).clamp(-10.0, 10.0) if self.normalize_obs else obs

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The policy's output (logits, or the Gaussian's mean) and V(x), for normalised observations x."""
        if self.image:  # [B, H, W, C] -> [B, C, H, W], the layout Conv2d expects
            x = self.torso(x.permute(0, 3, 1, 2))
        return self.actor(x), self.critic(x).squeeze(-1)

    def forward(self, x: torch.Tensor, actions: Optional[torch.Tensor] = None):
        """For normalised observations x: the actions (sampled from pi(.|x) when none are given),
        log pi(a|x), the entropy H(pi(.|x)) and V(x)."""
        out, value = self.heads(x)
        if self.discrete:
            logp_all = torch.log_softmax(out, -1)
            actions = torch.multinomial(logp_all.exp(), 1).squeeze(1) if actions is None else actions
            logprob = logp_all.gather(1, actions.long().unsqueeze(1)).squeeze(1)
            entropy = -(logp_all.exp() * logp_all).sum(-1)
        else:  # N(mean, diag(exp(log_std)^2)); a nan is caught by check_finite, not by validate_args
            pi = Normal(out, self.log_std.exp(), validate_args=False)
            actions = pi.sample() if actions is None else actions
            logprob, entropy = pi.log_prob(actions).sum(-1), pi.entropy().sum(-1)  # independent dims add
        return actions, logprob, entropy, value


def compute_gae(rewards: torch.Tensor, values: torch.Tensor, next_value: torch.Tensor,
                terminated: torch.Tensor, dones: torch.Tensor, gamma: float, gae_lambda: float):
    """GAE(lambda) over a rollout, time first ([T, num_envs]); returns (advantages, returns).
    values[t + 1] (next_value after the last step) is V of the observation step t returned: after
    an episode's end, its true last observation (see Autoreset above)."""
    advantages, last = torch.zeros_like(rewards), torch.zeros_like(next_value)
    for t in reversed(range(len(rewards))):
        v_next = next_value if t == len(rewards) - 1 else values[t + 1]
        delta = rewards[t] + gamma * (1.0 - terminated[t]) * v_next - values[t]
        last = delta + gamma * gae_lambda * (1.0 - dones[t]) * last
        advantages[t] = last
    return advantages, advantages + values


def ppo_loss(newlogprob, oldlogprob, advantages, newvalue, oldvalue, returns, entropy,
             clip_coef: float, clip_vloss: bool, ent_coef: float, vf_coef: float):
    """The PPO loss on a minibatch (advantages already normalised); returns (loss, stats)."""
    logratio = newlogprob - oldlogprob
    ratio = logratio.exp()
    pg_loss = torch.max(-advantages * ratio,
                        -advantages * ratio.clamp(1 - clip_coef, 1 + clip_coef)).mean()  # -L_clip
    if clip_vloss:  # the larger of the plain and the clipped squared error (PPO2's baselines)
        v_clipped = oldvalue + (newvalue - oldvalue).clamp(-clip_coef, clip_coef)
        v_loss = 0.5 * torch.max((newvalue - returns) ** 2, (v_clipped - returns) ** 2).mean()
    else:
        v_loss = 0.5 * ((newvalue - returns) ** 2).mean()
    entropy = entropy.mean()
    with torch.no_grad():
        stats = {"losses/policy_loss": pg_loss, "losses/value_loss": v_loss, "losses/entropy": entropy,
                 "losses/approx_kl": ((ratio - 1) - logratio).mean(),
                 "losses/clipfrac": ((ratio - 1.0).abs() > clip_coef).float().mean()}
    return pg_loss - ent_coef * entropy + vf_coef * v_loss, stats


def evaluate(agent: Agent, env_id: str, episodes: int, seed: int, device: torch.device,
             max_episode_steps: Optional[int] = None) -> dict:
    """Deterministic returns of `episodes` episodes, one per sub-env (so short episodes are not
    over-counted), with the observation statistics frozen as they were saved."""
    envs = make_envs(env_id, episodes, max_episode_steps)
    obs, _ = envs.reset(seed=seed)
    returns, done = np.zeros(episodes), np.zeros(episodes, dtype=bool)
    while not done.all():
        with torch.no_grad():
            out = agent.heads(agent.normalize(torch.as_tensor(obs, dtype=torch.float32, device=device)))[0]
        actions = out.argmax(-1) if agent.discrete else out  # the most likely action, or the Gaussian's mean
        obs, rewards, terminated, truncated, _ = envs.step(actions.cpu().numpy())
        returns += np.where(done, 0.0, rewards)
        done |= terminated | truncated
    envs.close()
    return {"eval/mean_return": float(returns.mean()), "eval/std_return": float(returns.std()),
            "eval/episodes": episodes}


# =============================================================================================
# MACHINERY: argument checks, run folder, checkpoints, Ctrl-C, distributed set-up, logging.
# Not the algorithm: a first reading can skip to main().
# =============================================================================================
def parse_args() -> Args:
    """Presets first, then the command line: --env-id X makes preset(X) the defaults that every
    other flag overrides, so --help and the printed config show the numbers actually used."""
    env_id, argv = Args.env_id, sys.argv[1:]
    for i, arg in enumerate(argv):
        flag, eq, value = arg.partition("=")
        if flag in ("--env-id", "--env_id") and (eq or i + 1 < len(argv)):  # tyro takes both spellings
            env_id = value if eq else argv[i + 1]
    return tyro.cli(Args, default=preset(env_id))


def check_args(args: Args) -> None:
    """Refuse in one sentence a numeric field outside its declared Range (nan, inf too) or an empty Optional[str]."""
    hints = typing.get_type_hints(Args, include_extras=True)
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
    if args.num_envs % world_size:
        raise SystemExit(f"--num-envs {args.num_envs} does not divide among the {world_size} ranks: "
                         f"make it a multiple of {world_size}.")
    per_rank = args.num_envs // world_size * args.num_steps
    if args.num_minibatches > per_rank // 4:
        raise SystemExit(f"--num-minibatches {args.num_minibatches} must lie between 1 and a quarter of a rank's "
                         f"rollout ({per_rank} steps): up to half the steps can be reset steps, and a minibatch "
                         "needs 2 steps to normalise its advantages; lower it or raise --num-steps.")
    if args.total_timesteps < args.num_envs * args.num_steps:
        raise SystemExit(f"--total-timesteps {args.total_timesteps} is less than one rollout "
                         f"(--num-envs x --num-steps = {args.num_envs * args.num_steps}); raise it.")


def make_run_dir(name: str) -> str:
    """Create runs/<name>/ before any training (an unwritable folder fails at once); a twin
    started in the same second gets <name>-2, since mkdir is atomic."""
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


CHECKPOINT_HEADER = b"algos checkpoint sha256="


def save_checkpoint(path: str, state: dict) -> None:
    """Atomic and verifiable: the sha256 of the torch.save bytes heads the file, which is written
    under a temporary name that replaces `path` only when complete."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    with open(f"{path}.tmp", "wb") as f:
        f.write(CHECKPOINT_HEADER + hashlib.sha256(data).hexdigest().encode() + b"\n" + data)
    os.replace(f"{path}.tmp", path)
    print(f"saved {path}")


def load_checkpoint(path: str, flag: str) -> dict:
    """A checkpoint that save_checkpoint wrote and whose sha256 matches, or one sentence why not."""
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


def save_model(path: str, agent: Agent, reward_rms: RunningMeanStd, args: Args) -> None:
    save_checkpoint(path, {"algo": ALGO, "agent": agent.state_dict(), "env_id": args.env_id,
                           "hidden_sizes": list(args.hidden_sizes), "normalize_obs": args.normalize_obs,
                           "max_episode_steps": args.max_episode_steps,
                           "return_var": float(reward_rms.var), "args": dataclasses.asdict(args)})


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
    """Under torchrun (RANK, WORLD_SIZE set): one process group, nccl on CUDA, gloo on CPU.
    Returns (distributed, rank, world_size, device); a plain run makes no distributed call."""
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


def check_finite(name: str, value: float, step: int, hint: str) -> None:
    """A nan or inf loss stops the run (exit 1) instead of training garbage to the end."""
    if not math.isfinite(value):
        raise SystemExit(f"step {step}: {name} is {value}; {hint}")


def capture_video(agent: Agent, env_id: str, seed: int, device: torch.device, path: str,
                  max_episode_steps: Optional[int] = None) -> None:
    """--capture-video: one deterministic episode as a GIF (every 2nd frame at half size, 25 frames/s;
    MinAtar's 10x10 renders, floats in [0, 1], become 8-bit pictures with 16x16 pixels a cell)."""
    import imageio  # imported here so that a plain run does not pay for it

    try:
        env = gym.make(env_id, render_mode="rgb_array", max_episode_steps=max_episode_steps, disable_env_checker=True)
        obs, _ = env.reset(seed=seed)
        frames, done = [env.render()], False
        while not done:
            x = agent.normalize(torch.as_tensor(obs[None], dtype=torch.float32, device=device))
            with torch.no_grad():
                out = agent.heads(x)[0][0]
            action = int(out.argmax()) if agent.discrete else np.clip(
                out.cpu().numpy(), env.action_space.low, env.action_space.high)
            obs, _, terminated, truncated, _ = env.step(action)
            frames.append(env.render())
            done = terminated or truncated
        env.close()
        if frames[0].dtype == np.uint8:
            pictures = [f[::2, ::2] for f in frames[::2]]
        else:
            pictures = [np.kron(np.asarray(f) * 255, np.ones((16, 16, 1))).astype(np.uint8) for f in frames[::2]]
        imageio.mimsave(path, pictures, duration=40, loop=0)
    except Exception as e:  # no EGL/display library, or a renderer's error: the training results stand
        raise SystemExit(f"--capture-video: could not film {env_id} ({type(e).__name__}: {str(e).splitlines()[0]}); "
                         "MuJoCo envs need an EGL library (MUJOCO_GL=egl) or another MUJOCO_GL backend.") from None
    print(f"filmed one deterministic episode ({len(frames)} frames): {path}")


def evaluate_checkpoint(args: Args) -> dict:
    """--eval-checkpoint: the deterministic returns of a saved agent, no training. The env is
    the checkpoint's own; under torchrun rank 0 alone evaluates."""
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
    agent = Agent(probe.single_observation_space, probe.single_action_space,
                  tuple(ckpt["hidden_sizes"]), normalize_obs=ckpt["normalize_obs"]).to(device)
    probe.close()
    try:
        agent.load_state_dict(ckpt["agent"])
    except RuntimeError as e:
        raise SystemExit(f"--eval-checkpoint {args.eval_checkpoint} does not fit {ckpt['env_id']}'s "
                         f"spaces ({str(e).splitlines()[0]}).") from None
    metrics = evaluate(agent, ckpt["env_id"], args.eval_episodes, args.seed + 100_000, device, limit)
    print(f"{ckpt['env_id']} deterministic eval of {args.eval_checkpoint}: {metrics['eval/mean_return']:.2f} "
          f"+- {metrics['eval/std_return']:.2f} over {metrics['eval/episodes']} episodes")
    if args.capture_video:  # beside the checkpoint, numbered past the films there (the run's episode.gif is kept)
        folder, n = os.path.dirname(args.eval_checkpoint), 1
        while os.path.exists(film := os.path.join(folder, "episode.gif" if n == 1 else f"episode_{n}.gif")):
            n += 1
        capture_video(agent, ckpt["env_id"], args.seed + 200_000, device, film, limit)
    return metrics


def main(args: Args) -> dict:
    """Train (or, with --eval-checkpoint, only evaluate) and return the final metrics: eval/mean_return,
    eval/std_return, eval/episodes (rank 0), charts/SPS, charts/last100_return (the mean of rank 0's last 100
    training episodes, if any ended), global_step, wall_time and the last update's
    losses/* (policy_loss, value_loss, entropy, approx_kl, clipfrac, explained_variance)."""
    check_args(args)
    if args.capture_video:  # mujoco picks its OpenGL backend when first imported: headless EGL, unless set
        os.environ.setdefault("MUJOCO_GL", "egl")
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
    rng = np.random.default_rng(seed)

    run_name = f"{args.env_id.replace(':', '_').replace('/', '_')}__{args.exp_name}__{args.seed}__{int(time.time())}"
    n_envs, T = args.num_envs // world_size, args.num_steps
    envs = make_envs(args.env_id, n_envs, args.max_episode_steps)  # a refused --env-id leaves no run folder
    action_space, obs_shape = envs.single_action_space, envs.single_observation_space.shape
    # A rollout (the obs twice as float32, the actions, 55 bytes of scalars a step with the update's) or a network (its
    # parameters counted on the meta device, nothing allocated: 16 bytes each with gradients and Adam's two moments)
    # larger than memory is refused before the run folder: numpy would only reserve the rollout and fail later, and an
    # allocation can still fail below the machine's memory (a ulimit, a GPU in use).
    make_agent = lambda: Agent(envs.single_observation_space, action_space, args.hidden_sizes, args.log_std_init,
                               args.normalize_obs)
    with torch.device("meta"):
        weights = 16 * sum(p.numel() for p in make_agent().parameters())
    rollout = T * n_envs * (8 * math.prod(obs_shape) + 4 * math.prod(action_space.shape) + 55)
    have = (torch.cuda.get_device_properties(device).total_memory if device.type == "cuda"
            else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else math.inf)
    try:
        if rollout + weights > have:
            raise MemoryError
        # The rollout, preallocated, time first. `valid` is False at NEXT_STEP reset steps.
        b_obs = torch.zeros((T, n_envs, *obs_shape), device=device)  # the float32 inputs normalize() gives the network
        b_actions = torch.zeros((T, n_envs, *action_space.shape), device=device)  # a Discrete shape is ()
        b_logprobs, b_values = torch.zeros((T, n_envs), device=device), torch.zeros((T, n_envs), device=device)
        raw_obs = np.zeros((T, n_envs, *obs_shape), np.float32)
        rewards, disc_returns = np.zeros((T, n_envs), np.float32), np.zeros((T, n_envs))
        terminated, dones, valid = (np.zeros((T, n_envs), bool) for _ in range(3))
    except (MemoryError, RuntimeError) as e:  # numpy's MemoryError; torch's "can't allocate memory", "out of memory"
        if not isinstance(e, MemoryError) and "memory" not in str(e):  # another error (a CUDA kernel's) is not this
            raise
        raise SystemExit(f"a rollout of --num-envs {args.num_envs} x --num-steps {T} ({rollout / 2**30:,.1f} GiB) "
                         f"with a network of --hidden-sizes {' '.join(map(str, args.hidden_sizes)) or '(none)'} "
                         f"({weights / 2**30:,.1f} GiB with its gradients and Adam's moments) does not fit in the "
                         f"memory of this {device.type} ({have / 2**30:,.1f} GiB in all): lower them.") from None
    if is_main:
        run_dir = make_run_dir(run_name)
        print(f"{args.env_id}: {world_size} rank(s) x {n_envs} env(s) x {T} steps per rollout on {device}, "
              f"run folder {run_dir}")
        print("config: " + ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(args).items()))
    logger = RunLog(args, run_name, run_dir) if is_main else None

    agent = make_agent().to(device)
    # DDP broadcasts rank 0's initial weights; the statistics buffers are synchronised by
    # RunningMeanStd.update, so they need no broadcast at every forward pass.
    model = DDP(agent, broadcast_buffers=False) if distributed else agent
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5,
                                 fused=device.type in ("cpu", "cuda"))  # one kernel, not one per tensor
    obs_rms, reward_rms = RunningMeanStd(obs_shape), RunningMeanStd()

    steps_per_iteration = args.num_envs * T  # all ranks together
    num_iterations = args.total_timesteps // steps_per_iteration
    recent_returns, stats = deque(maxlen=100), {}  # CleanRL's measure: the last 100 episodes
    global_step, start_time = 0, time.time()
    next_obs, _ = envs.reset(seed=seed * 1_000)  # sub-env i is seeded seed*1000 + i
    autoreset = np.zeros(n_envs, dtype=bool)
    running_return = np.zeros(n_envs)  # discounted return so far, for reward scaling

    stop = StopFlag()
    for iteration in range(1, num_iterations + 1):
        if args.anneal_lr:
            optimizer.param_groups[0]["lr"] = args.learning_rate * (1.0 - (iteration - 1) / num_iterations)

        for t in range(T):
            raw_obs[t] = next_obs
            x = agent.normalize(torch.from_numpy(next_obs).to(device, torch.float32))
            with torch.no_grad():
                action, logprob, _, value = agent(x)
            b_obs[t], b_actions[t], b_logprobs[t], b_values[t] = x, action, logprob, value
            next_obs, rewards[t], term, trunc, infos = envs.step(action.cpu().numpy())
            valid[t] = ~autoreset  # the step after an episode's end only reset the sub-env
            terminated[t], dones[t] = term, term | trunc
            autoreset = dones[t]
            if args.normalize_reward:
                running_return = running_return * args.gamma + rewards[t]
                disc_returns[t] = running_return
                running_return[autoreset] = 0.0
            if "episode" in infos:
                finished = infos["_episode"]
                ep_returns, lengths = infos["episode"]["r"][finished], infos["episode"]["l"][finished]
                recent_returns.extend(ep_returns.tolist())
                if logger:  # one row per step: wandb keeps only the last value logged at a step
                    step = global_step + (t + 1) * args.num_envs
                    logger.log({"charts/episodic_return": float(ep_returns.mean()), "global_step": step,
                                "charts/episodic_length": float(lengths.mean())}, step=step)
        global_step += steps_per_iteration

        # Rewards scaled by the std of the discounted return (not centred: that would change
        # the task, e.g. make every step of a survival task look costly).
        b_rewards = rewards
        if args.normalize_reward:
            reward_rms.update(disc_returns[valid], distributed)
            b_rewards = np.clip(rewards * (1.0 / math.sqrt(reward_rms.var + 1e-8)), -10, 10)
        with torch.no_grad():
            next_value = agent.heads(agent.normalize(torch.from_numpy(next_obs).to(device, torch.float32)))[1]
            advantages, returns = compute_gae(
                torch.from_numpy(b_rewards).to(device), b_values, next_value,
                torch.from_numpy(terminated).to(device, torch.float32),
                torch.from_numpy(dones).to(device, torch.float32), args.gamma, args.gae_lambda)
        if args.normalize_obs:  # new statistics for the next rollout; this one keeps its inputs
            obs_rms.update(raw_obs[valid], distributed)
            agent.obs_mean.copy_(torch.from_numpy(obs_rms.mean))
            agent.obs_std.copy_(torch.from_numpy(np.sqrt(obs_rms.var + 1e-8)))

        # Epochs of shuffled minibatches over the valid steps of the rollout.
        f_obs, f_actions, f_logprobs, f_values, f_adv, f_returns = (
            a.flatten(0, 1) for a in (b_obs, b_actions, b_logprobs, b_values, advantages, returns))
        valid_idx = np.flatnonzero(valid.reshape(-1))
        for epoch in range(args.update_epochs):
            for mb in np.array_split(rng.permutation(valid_idx), args.num_minibatches):
                mb = torch.from_numpy(mb).to(device)
                _, newlogprob, entropy, newvalue = model(f_obs[mb], f_actions[mb])
                mb_adv = f_adv[mb]
                mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                loss, stats = ppo_loss(newlogprob, f_logprobs[mb], mb_adv, newvalue, f_values[mb], f_returns[mb],
                                       entropy, args.clip_coef, args.clip_vloss, args.ent_coef, args.vf_coef)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()  # DDP all-reduces (averages) the gradients here
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                optimizer.step()
            if args.target_kl > 0:
                kl = stats["losses/approx_kl"].clone()
                if distributed:  # every rank must stop at the same epoch
                    dist.all_reduce(kl)
                    kl /= world_size
                if kl > args.target_kl:
                    break

        y_pred, y_true = f_values[valid_idx], f_returns[valid_idx]
        var_y = y_true.var()
        stats = {k: v.item() for k, v in stats.items()}
        stats["losses/explained_variance"] = float("nan") if var_y == 0 else float(1 - (y_true - y_pred).var() / var_y)

        if is_main and (global_step % args.log_interval < steps_per_iteration or iteration == num_iterations):
            check_finite("the PPO loss", stats["losses/policy_loss"] + stats["losses/value_loss"], global_step,
                         "lower --learning-rate.")
            sps = int(global_step / (time.time() - start_time))
            mean_ret = np.mean(recent_returns) if recent_returns else float("nan")
            print(f"step {global_step:>8}  return(last {len(recent_returns)}) {mean_ret:8.2f}  "
                  f"v_loss {stats['losses/value_loss']:.4f}  kl {stats['losses/approx_kl']:.4f}  "
                  f"clipfrac {stats['losses/clipfrac']:.3f}  SPS {sps}")
            logger.log({**stats, "charts/learning_rate": optimizer.param_groups[0]["lr"],
                        "charts/SPS": sps, "global_step": global_step}, step=global_step)
        # Under torchrun the ranks agree to stop after each iteration (one small all-reduce).
        if stop.agreed(device) if distributed else stop.requested:
            break

    envs.close()
    wall_time = time.time() - start_time
    metrics = {"global_step": global_step, "wall_time": wall_time, "charts/SPS": int(global_step / wall_time), **stats}
    if recent_returns:  # left out when no training episode ended
        metrics["charts/last100_return"] = float(np.mean(recent_returns))
    stop.evaluating = is_main  # from here rank 0's Ctrl-C stops the final evaluation at once; the model is kept below
    with contextlib.suppress(KeyboardInterrupt):
        if is_main and not stop.requested:  # the last iteration printed a progress line, so its loss is finite
            print(f"final evaluation: {args.eval_episodes} episodes (a Ctrl-C stops it and keeps the model)")
            metrics.update(evaluate(agent, args.env_id, args.eval_episodes, args.seed + 100_000, device,
                                    args.max_episode_steps))
            print(f"{args.env_id} deterministic eval: {metrics['eval/mean_return']:.2f} +- "
                  f"{metrics['eval/std_return']:.2f} over {args.eval_episodes} episodes "
                  f"after {global_step} steps in {wall_time:.1f} s ({metrics['charts/SPS']} SPS)")
            print((f"mean return of the last {len(recent_returns)} training episodes: "
                   f"{metrics['charts/last100_return']:.2f}") if recent_returns else "no training episode ended")
            logger.log({**metrics, "global_step": global_step}, step=global_step)
            logger.close()
            if args.save_model:
                save_model(os.path.join(run_dir, "ppo.pt"), agent, reward_rms, args)
            else:
                print(f"(the agent was not saved: add --save-model to keep it in {run_dir}/)")
            if args.capture_video:
                capture_video(agent, args.env_id, args.seed + 200_000, device, os.path.join(run_dir, "episode.gif"),
                              args.max_episode_steps)
    stop.evaluating = False  # evaluated: a Ctrl-C from here asks to stop, and the model is kept below
    if stop.requested if not distributed else stop.agreed(device):  # Ctrl-C in training or the final evaluation
        if is_main:
            path = os.path.join(run_dir, "ppo.pt")
            print(f"interrupted at step {global_step}")
            save_model(path, agent, reward_rms, args)
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
