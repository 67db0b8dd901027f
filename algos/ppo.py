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

The details that matter ("The 37 Implementation Details of PPO", Huang et al. 2022) are all
here: orthogonal initialisation (sqrt 2 hidden, 0.01 policy head, 1 value head), Adam with a
linearly annealed step size, advantages normalised per minibatch, an optional clipped value
loss, an entropy bonus, global gradient-norm clipping, the approximate KL (k3 estimator,
E[(r - 1) - log r]) and clip fraction logged, and an optional early stop of the epochs when
the KL passes --target-kl.

Actions: a Categorical over logits for a Discrete space; for a Box, a diagonal Gaussian whose
mean comes from the network and whose log standard deviation is a learned vector that does not
depend on the state. The sample is clipped to the bounds on its way to the env, but its
log-probability is that of the unclipped sample (what the policy really drew). Continuous
control also normalises observations (running mean and variance, clipped to +-10; Pendulum's
bounded ones excepted, see the table) and scales rewards by the running standard deviation of
the discounted return, so that the value loss does not swamp the global gradient norm. Both
statistics are updated once per rollout (summed over ranks), saved with the model, and frozen
in the evaluation, without which a saved policy would see inputs of another scale.

Autoreset. gymnasium 1.x vector envs reset a finished sub-env on the *next* step() (NEXT_STEP):
the step that ends an episode returns the true last observation; the following step ignores
the action and returns the reset observation with reward 0. This file keeps that mode, and
gets the truncation bootstrap for free: at the reset step the agent's forward pass sees the
true last observation, so its value V(s_T) lands in the rollout right after the ending step,
where GAE looks for V(s_t+1). The reset step itself is not a transition of the MDP: it is
marked invalid and left out of the losses and of the statistics. (SAME_STEP with
info["final_obs"] would need a second forward pass on the final observations instead.)
global_step counts every env step, reset steps included.

Distributed: under torchrun the --num-envs environments are split across the ranks (each
runs num_envs / world_size), every rank cuts its rollout into the same number of minibatches,
and DistributedDataParallel averages the gradients, so an update sees the whole rollout. The
normalisation statistics are summed over the ranks, so every rank normalises alike.
Rank 0 alone prints, logs, evaluates and saves.

References
    Schulman, Wolski, Dhariwal, Radford, Klimov 2017, "Proximal Policy Optimization
        Algorithms", arXiv:1707.06347.
    Schulman, Moritz, Levine, Jordan, Abbeel 2016, "High-Dimensional Continuous Control Using
        Generalized Advantage Estimation", ICLR, arXiv:1506.02438.
    Huang, Dossa, Raffin, Kanervisto, Wang 2022, "The 37 Implementation Details of Proximal
        Policy Optimization", ICLR Blog Track.
    Andrychowicz et al. 2021, "What Matters in On-Policy Reinforcement Learning? A Large-Scale
        Empirical Study", ICLR, arXiv:2006.05990.
    Raffin 2020, RL Baselines3 Zoo (the tuned hyperparameters the table below starts from).

Usage
    python algos/ppo.py                                  # CartPole-v1, 100k steps
    python algos/ppo.py --env-id Pendulum-v1             # continuous actions, 200k steps
    python algos/ppo.py --env-id Acrobot-v1 --total-timesteps 50000    # a quick run
    torchrun --standalone --nproc_per_node=2 algos/ppo.py   # 8 envs split over 2 ranks
    python algos/ppo.py --env-id Acrobot-v1 --track      # log to Weights & Biases
    python algos/ppo.py --env-id Pendulum-v1 --save-model
    python algos/ppo.py --eval-checkpoint runs/<run_name>/ppo.pt    # evaluate, no training
"""

import dataclasses
import math
import os
import random
import time
from collections import deque
from dataclasses import dataclass
from typing import Annotated, Optional

import gymnasium as gym
import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import tyro
from torch.nn.parallel import DistributedDataParallel as DDP


def from_table(metavar: str):
    """Marks a field whose default comes from ENV_DEFAULTS (None until resolve_defaults)."""
    return tyro.conf.arg(metavar=metavar, help_behavior_hint="(default: per-env table)")


@dataclass
class Args:
    """PPO. Fields marked "per-env table" default to ENV_DEFAULTS[env_id] (printed at start)."""

    exp_name: str = "ppo"
    """name of this experiment (part of the run name)"""
    seed: int = 1
    """seed of the experiment (rank r uses seed + r)"""
    torch_deterministic: bool = True
    """set torch.backends.cudnn.deterministic"""
    cuda: bool = True
    """use CUDA when it is available"""
    num_threads: int = 1
    """torch CPU threads; small networks run fastest with one"""
    track: bool = False
    """log to Weights & Biases"""
    wandb_project_name: str = "algos"
    """the wandb project"""
    wandb_entity: Optional[str] = None
    """the wandb entity (team)"""
    save_model: bool = False
    """save the agent and its normalisation statistics to runs/<run_name>/ppo.pt"""
    eval_checkpoint: Optional[str] = None
    """evaluate this saved model deterministically and exit, no training"""
    eval_episodes: int = 100
    """deterministic evaluation episodes at the end (argmax action, or the Gaussian's mean)"""
    log_interval: int = 10_000
    """print progress every this many environment steps"""

    env_id: str = "CartPole-v1"
    """a gymnasium id with a Discrete or flat Box action space ("module:Env-v0" imports module first)"""
    target_kl: float = 0.0
    """stop the update epochs early once the approximate KL passes this (0 = never)"""

    # None below means: take the value from ENV_DEFAULTS[env_id], else from the generic table.
    total_timesteps: Annotated[Optional[int], from_table("INT")] = None
    """environment steps, all ranks together"""
    num_envs: Annotated[Optional[int], from_table("INT")] = None
    """parallel environments, all ranks together (split evenly across ranks)"""
    num_steps: Annotated[Optional[int], from_table("INT")] = None
    """steps per environment in each rollout"""
    num_minibatches: Annotated[Optional[int], from_table("INT")] = None
    """minibatches each rollout is cut into, per epoch"""
    update_epochs: Annotated[Optional[int], from_table("INT")] = None
    """passes over each rollout"""
    learning_rate: Annotated[Optional[float], from_table("FLOAT")] = None
    """Adam step size"""
    anneal_lr: Annotated[Optional[bool], from_table("{True,False}")] = None
    """let the step size fall linearly to 0 over the run"""
    gamma: Annotated[Optional[float], from_table("FLOAT")] = None
    """discount factor"""
    gae_lambda: Annotated[Optional[float], from_table("FLOAT")] = None
    """lambda of GAE (0: one-step TD error, 1: Monte Carlo return minus V)"""
    clip_coef: Annotated[Optional[float], from_table("FLOAT")] = None
    """eps of the clipped surrogate objective"""
    clip_vloss: Annotated[Optional[bool], from_table("{True,False}")] = None
    """clip the value loss around the rollout's values too (PPO2's baselines variant)"""
    ent_coef: Annotated[Optional[float], from_table("FLOAT")] = None
    """c_e, weight of the entropy bonus"""
    vf_coef: Annotated[Optional[float], from_table("FLOAT")] = None
    """c_v, weight of the value loss"""
    max_grad_norm: Annotated[Optional[float], from_table("FLOAT")] = None
    """clip the global gradient norm to this"""
    normalize_obs: Annotated[Optional[bool], from_table("{True,False}")] = None
    """normalise observations by their running mean and standard deviation"""
    normalize_reward: Annotated[Optional[bool], from_table("{True,False}")] = None
    """divide rewards by the running standard deviation of the discounted return"""
    log_std_init: Annotated[Optional[float], from_table("FLOAT")] = None
    """initial log standard deviation of the Gaussian policy (Box actions only)"""
    hidden_sizes: Annotated[Optional[tuple[int, ...]], from_table("INT [INT ...]")] = None
    """widths of the hidden layers of the policy and the value network (separate networks)"""


# Per-environment hyperparameters. Any flag given on the command line wins over this table.
# The generic rows are CleanRL's defaults (discrete: ppo.py, Box: ppo_continuous_action.py).
# CartPole is RL Zoo's tuned row (8 envs x 32 steps, one minibatch of 256, gamma 0.98, lambda
# 0.8, no entropy bonus, step size annealed from 1e-3) with 10 update epochs instead of 20:
# all of 5 seeds still evaluate to 500, with about a quarter less CPU time per run.
# Acrobot is RL Zoo's row (16 envs x 256 steps, 4 epochs, lambda 0.94, normalised observations).
# Pendulum starts from RL Zoo's row (4 envs, 10 epochs, gamma 0.9, lambda 0.95, step size 1e-3),
# which relies on gSDE exploration; without it, 4 x 1024-step rollouts ended at -545 here (seed
# 1). Rollouts of 4 x 256 steps (4 times as many updates, same minibatch of 64) did best among
# those tried (seeds 1-3: -196, -202, -181; 4 x 128: -188, -244, -213; 8 x 64, 16 x 32 and
# 2 x 256 did worse on seed 2). The initial standard deviation is e^-0.5 = 0.6 (torque in +-2).
# Its observations (cos, sin, angular velocity) are bounded and are not normalised: once the
# pendulum stays up, the running statistics of cos theta narrow and the rare hanging or
# spinning states come in far out of range (seed 4: -372 with, -201 without; seed 2: -202, -192).
# With this row seeds 1-5 evaluated to -180, -192, -187, -201, -150.
GENERIC_DEFAULTS = dict(
    total_timesteps=500_000, num_envs=4, num_steps=128, num_minibatches=4, update_epochs=4,
    learning_rate=2.5e-4, anneal_lr=True, gamma=0.99, gae_lambda=0.95, clip_coef=0.2, clip_vloss=False,
    ent_coef=0.01, vf_coef=0.5, max_grad_norm=0.5, normalize_obs=False, normalize_reward=False,
    log_std_init=0.0, hidden_sizes=(64, 64),
)
GENERIC_BOX_DEFAULTS = dict(
    GENERIC_DEFAULTS, total_timesteps=1_000_000, num_envs=1, num_steps=2048, num_minibatches=32,
    update_epochs=10, learning_rate=3e-4, ent_coef=0.0, normalize_obs=True, normalize_reward=True,
)
ENV_DEFAULTS = {
    "CartPole-v1": dict(
        total_timesteps=100_000, num_envs=8, num_steps=32, num_minibatches=1, update_epochs=10,
        learning_rate=1e-3, gamma=0.98, gae_lambda=0.8, ent_coef=0.0,
    ),
    "Acrobot-v1": dict(
        total_timesteps=200_000, num_envs=16, num_steps=256, num_minibatches=64, update_epochs=4,
        learning_rate=3e-4, gamma=0.99, gae_lambda=0.94, ent_coef=0.0, normalize_obs=True,
    ),
    "Pendulum-v1": dict(
        total_timesteps=200_000, num_envs=4, num_steps=256, num_minibatches=16, update_epochs=10,
        learning_rate=1e-3, gamma=0.9, gae_lambda=0.95, ent_coef=0.0, log_std_init=-0.5,
        normalize_obs=False,
    ),
}


def resolve_defaults(args: Args, box_actions: bool) -> tuple[Args, list[str]]:
    """Fill every field left at None from the table; return the args and the filled names."""
    generic = GENERIC_BOX_DEFAULTS if box_actions else GENERIC_DEFAULTS
    table = {**generic, **ENV_DEFAULTS.get(args.env_id, {})}
    filled = {k: v for k, v in table.items() if getattr(args, k) is None}
    return dataclasses.replace(args, **filled), sorted(filled)


def validate(args: Args, world_size: int) -> None:
    """Reject flag combinations that cannot work, with one sentence naming the fix."""
    if args.num_envs < 1 or args.num_envs % world_size:
        raise SystemExit(f"--num-envs {args.num_envs} is not a positive multiple of the number of "
                         f"ranks ({world_size}): every rank runs the same number of environments.")
    per_rank = args.num_envs // world_size * args.num_steps
    if not 1 <= args.num_minibatches <= per_rank // 4:
        raise SystemExit(f"--num-minibatches {args.num_minibatches} must lie between 1 and a quarter of a "
                         f"rank's rollout ({per_rank} steps, --num-envs / ranks x --num-steps): up to half "
                         "the steps can be reset steps, and a minibatch needs 2 steps to normalise its "
                         "advantages; lower it or raise --num-steps.")
    if args.total_timesteps < args.num_envs * args.num_steps:
        raise SystemExit(f"--total-timesteps {args.total_timesteps} is less than one rollout "
                         f"(--num-envs x --num-steps = {args.num_envs * args.num_steps}); raise it.")
    for name in ("gamma", "gae_lambda"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise SystemExit(f"--{name.replace('_', '-')} {getattr(args, name)} must lie in [0, 1].")
    if args.update_epochs < 1 or args.eval_episodes < 1:
        raise SystemExit("--update-epochs and --eval-episodes must be at least 1.")


def make_envs(env_id: str, num_envs: int) -> gym.vector.VectorEnv:
    """Synchronous vector env (NEXT_STEP autoreset) that records episode returns."""
    try:
        envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync")
    except (gym.error.Error, ModuleNotFoundError) as e:
        raise SystemExit(f"{type(e).__name__}: {e}\nList the registered ids with: "
                         "python -c \"import gymnasium; gymnasium.pprint_registry()\"") from None
    space, action_space = envs.single_observation_space, envs.single_action_space
    if not (isinstance(space, gym.spaces.Box) and len(space.shape) == 1):
        raise SystemExit(f"this PPO takes a flat Box observation, but {env_id} has {space}.")
    if not (isinstance(action_space, gym.spaces.Discrete)
            or (isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1)):
        raise SystemExit(f"this PPO takes a Discrete or flat Box action space, but {env_id} has "
                         f"{action_space}.")
    return gym.wrappers.vector.RecordEpisodeStatistics(envs)


class RunningMeanStd:
    """Mean and variance of a stream of batches (Chan et al.'s parallel update), in float64.

    Under torchrun `update` sums the batch moments of all ranks first, so the ranks agree."""

    def __init__(self, shape=()):
        self.mean, self.var, self.count = np.zeros(shape), np.ones(shape), 1e-4

    def update(self, x: np.ndarray, distributed: bool = False) -> None:
        x = x.reshape(-1, *self.mean.shape).astype(np.float64)
        moments = np.concatenate([[len(x)], x.sum(0).ravel(), (x ** 2).sum(0).ravel()])
        if distributed:
            t = torch.from_numpy(moments)
            dist.all_reduce(t)
            moments = t.numpy()
        n, k = moments[0], self.mean.size
        if n == 0:
            return
        b_mean = moments[1:1 + k].reshape(self.mean.shape) / n
        b_var = np.maximum(moments[1 + k:].reshape(self.mean.shape) / n - b_mean ** 2, 0.0)
        delta, total = b_mean - self.mean, self.count + n
        self.mean = self.mean + delta * n / total
        self.var = (self.var * self.count + b_var * n + delta ** 2 * self.count * n / total) / total
        self.count = total


def layer_init(layer: nn.Linear, std: float = math.sqrt(2)) -> nn.Linear:
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


def gaussian_log_prob(mean: torch.Tensor, log_std: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, diag(exp(log_std)^2)), summed over the action dimensions."""
    return (-0.5 * ((x - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def gaussian_entropy(log_std: torch.Tensor, batch: int) -> torch.Tensor:
    """H = sum_i (1/2 log(2 pi e) + log sigma_i), the same for every state."""
    return (0.5 + 0.5 * math.log(2 * math.pi) + log_std).sum().expand(batch)


class Agent(nn.Module):
    """Separate policy and value MLPs, and the observation statistics (buffers, so they are
    saved in the state dict and synchronised by DDP's initial broadcast)."""

    def __init__(self, obs_dim: int, action_space: gym.Space, hidden_sizes: tuple[int, ...],
                 log_std_init: float = 0.0, normalize_obs: bool = False):
        super().__init__()
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        n_out = int(action_space.n) if self.discrete else action_space.shape[0]
        self.actor = mlp(obs_dim, hidden_sizes, n_out, out_std=0.01)
        self.critic = mlp(obs_dim, hidden_sizes, 1, out_std=1.0)
        if not self.discrete:
            self.log_std = nn.Parameter(torch.full((n_out,), float(log_std_init)))
        self.normalize_obs = normalize_obs
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        if not self.normalize_obs:
            return obs
        return ((obs - self.obs_mean) / self.obs_std).clamp(-10.0, 10.0)

    def set_obs_stats(self, rms: RunningMeanStd) -> None:
        self.obs_mean.copy_(torch.from_numpy(rms.mean))
        self.obs_std.copy_(torch.from_numpy(np.sqrt(rms.var + 1e-8)))

    @torch.no_grad()
    def act(self, x: torch.Tensor):
        """Sample actions for normalised observations x; return them, their log-probs and V(x)."""
        out = self.actor(x)
        if self.discrete:
            logp_all = torch.log_softmax(out, -1)
            action = torch.multinomial(logp_all.exp(), 1)
            logprob = logp_all.gather(1, action).squeeze(1)
            action = action.squeeze(1)
        else:
            action = out + self.log_std.exp() * torch.randn_like(out)
            logprob = gaussian_log_prob(out, self.log_std, action)
        return action, logprob, self.critic(x).squeeze(-1)

    @torch.no_grad()
    def greedy(self, x: torch.Tensor) -> torch.Tensor:
        """The deterministic action: the most likely one, or the Gaussian's mean."""
        out = self.actor(x)
        return out.argmax(-1) if self.discrete else out

    def forward(self, x: torch.Tensor, actions: torch.Tensor):
        """log pi(a|x), the entropy H(pi(.|x)) and V(x), with gradients (the update's pass)."""
        out = self.actor(x)
        if self.discrete:
            logp_all = torch.log_softmax(out, -1)
            logprob = logp_all.gather(1, actions.long().unsqueeze(1)).squeeze(1)
            entropy = -(logp_all.exp() * logp_all).sum(-1)
        else:
            logprob = gaussian_log_prob(out, self.log_std, actions)
            entropy = gaussian_entropy(self.log_std, len(x))
        return logprob, entropy, self.critic(x).squeeze(-1)


def compute_gae(rewards: torch.Tensor, values: torch.Tensor, next_value: torch.Tensor,
                terminated: torch.Tensor, dones: torch.Tensor, gamma: float, gae_lambda: float):
    """GAE(lambda) over a rollout, time first ([T, num_envs]); returns (advantages, returns).

    values[t + 1] (next_value after the last step) is V of the observation that step t
    returned. When step t ended an episode that is the true last observation (it is the
    input of the NEXT_STEP reset step t + 1), so a truncation bootstraps from it; a
    termination multiplies it by 0, and done_t stops the sum A_t from reaching across."""
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(next_value)
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


def to_env_actions(actions: np.ndarray, action_space: gym.Space) -> np.ndarray:
    """Gaussian samples are clipped to the bounds on their way to the env."""
    if isinstance(action_space, gym.spaces.Box):
        return np.clip(actions, action_space.low, action_space.high)
    return actions


def evaluate(agent: Agent, env_id: str, episodes: int, seed: int, device: torch.device) -> np.ndarray:
    """Deterministic returns of `episodes` episodes, one per sub-env (so short episodes are not
    over-counted), with the observation statistics frozen as they were saved."""
    envs = make_envs(env_id, episodes)
    obs, _ = envs.reset(seed=seed)
    returns, done = np.zeros(episodes), np.zeros(episodes, dtype=bool)
    while not done.all():
        x = agent.normalize(torch.as_tensor(obs, dtype=torch.float32, device=device))
        actions = agent.greedy(x).cpu().numpy()
        obs, rewards, terminated, truncated, _ = envs.step(to_env_actions(actions, envs.single_action_space))
        returns += np.where(done, 0.0, rewards)
        done |= terminated | truncated
    envs.close()
    return returns


def save_checkpoint(path: str, agent: Agent, reward_rms: RunningMeanStd, args: Args) -> None:
    """Write atomically: a crash mid-write never leaves a half-written checkpoint behind.
    The observation statistics are buffers of the agent; the return statistics (training
    only) are stored beside them."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    torch.save({"agent": agent.state_dict(), "env_id": args.env_id, "hidden_sizes": list(args.hidden_sizes),
                "normalize_obs": args.normalize_obs, "return_var": float(reward_rms.var),
                "args": dataclasses.asdict(args)}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SystemExit(f"--eval-checkpoint {path}: no such file.") from None
    except Exception as e:
        raise SystemExit(f"--eval-checkpoint {path} is not a readable checkpoint "
                         f"({type(e).__name__}); write a new one with --save-model.") from None
    if not isinstance(ckpt, dict) or not {"agent", "env_id", "hidden_sizes", "normalize_obs"} <= ckpt.keys():
        raise SystemExit(f"--eval-checkpoint {path} is not a ppo.py checkpoint (expected keys agent, "
                         "env_id, hidden_sizes, normalize_obs); write one with --save-model.")
    return ckpt


def report_eval(returns: np.ndarray) -> dict:
    return {"eval/mean_return": float(returns.mean()), "eval/std_return": float(returns.std()),
            "eval/episodes": len(returns)}


def evaluate_checkpoint(args: Args) -> dict:
    """--eval-checkpoint: the deterministic returns of a saved agent, no training. The env is
    the checkpoint's own; under torchrun rank 0 alone evaluates."""
    ckpt = load_checkpoint(args.eval_checkpoint)
    if int(os.environ.get("RANK", 0)) != 0:
        return {}
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
    torch.set_num_threads(args.num_threads)
    probe = make_envs(ckpt["env_id"], 1)
    agent = Agent(probe.single_observation_space.shape[0], probe.single_action_space,
                  tuple(ckpt["hidden_sizes"]), normalize_obs=ckpt["normalize_obs"]).to(device)
    probe.close()
    try:
        agent.load_state_dict(ckpt["agent"])
    except RuntimeError as e:
        raise SystemExit(f"--eval-checkpoint {args.eval_checkpoint} does not fit {ckpt['env_id']}'s "
                         f"spaces ({str(e).splitlines()[0]}).") from None
    metrics = report_eval(evaluate(agent, ckpt["env_id"], args.eval_episodes, args.seed + 100_000, device))
    print(f"{ckpt['env_id']} deterministic eval of {args.eval_checkpoint}: {metrics['eval/mean_return']:.2f} "
          f"+- {metrics['eval/std_return']:.2f} over {metrics['eval/episodes']} episodes")
    return metrics


def main(args: Args) -> dict:
    """Train (or, with --eval-checkpoint, only evaluate) and return the final metrics:
    eval/mean_return, eval/std_return, eval/episodes (rank 0), charts/SPS, global_step,
    wall_time and the last update's losses/* (policy_loss, value_loss, entropy, approx_kl,
    clipfrac, explained_variance)."""
    if args.eval_checkpoint is not None:
        return evaluate_checkpoint(args)

    # Distributed set-up: torchrun sets RANK and WORLD_SIZE; a plain run has neither.
    distributed = "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank = int(os.environ.get("RANK", 0)) if distributed else 0
    world_size = int(os.environ["WORLD_SIZE"]) if distributed else 1
    probe = make_envs(args.env_id, 1)  # the action space picks the generic table
    args, filled = resolve_defaults(args, isinstance(probe.single_action_space, gym.spaces.Box))
    probe.close()
    validate(args, world_size)
    use_cuda = args.cuda and torch.cuda.is_available()
    if distributed:
        dist.init_process_group("nccl" if use_cuda else "gloo")
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(args.num_threads)
    is_main = rank == 0

    seed = args.seed + rank
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    rng = np.random.default_rng(seed)

    run_name = f"{args.env_id.replace(':', '_')}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_dir = os.path.join("runs", run_name)
    n_envs, T = args.num_envs // world_size, args.num_steps
    if is_main:
        print(f"{args.env_id}: {world_size} rank(s) x {n_envs} env(s) x {T} steps per rollout on {device}")
        print("hyperparameters (* = per-env default table): " + ", ".join(
            f"{k}={getattr(args, k)}{'*' if k in filled else ''}" for k in sorted(GENERIC_DEFAULTS)))
    wandb = None
    if args.track and is_main:
        import wandb  # imported here so that a plain run does not pay for it
        os.makedirs(run_dir, exist_ok=True)
        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, name=run_name,
                   config=dataclasses.asdict(args), dir=run_dir)

    envs = make_envs(args.env_id, n_envs)
    action_space = envs.single_action_space
    obs_dim = envs.single_observation_space.shape[0]
    agent = Agent(obs_dim, action_space, args.hidden_sizes, args.log_std_init, args.normalize_obs).to(device)
    # DDP broadcasts rank 0's initial weights; the statistics buffers are synchronised by
    # RunningMeanStd.update, so they need no broadcast at every forward pass.
    model = DDP(agent, broadcast_buffers=False) if distributed else agent
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5,
                                 fused=device.type in ("cpu", "cuda"))  # one kernel, not one per tensor
    obs_rms, reward_rms = RunningMeanStd((obs_dim,)), RunningMeanStd()

    # The rollout, preallocated (time first). `valid` is False at NEXT_STEP reset steps.
    act_shape = () if agent.discrete else action_space.shape
    b_obs = torch.zeros((T, n_envs, obs_dim), device=device)
    b_actions = torch.zeros((T, n_envs, *act_shape), device=device)
    b_logprobs, b_values = torch.zeros((T, n_envs), device=device), torch.zeros((T, n_envs), device=device)
    raw_obs = np.zeros((T, n_envs, obs_dim), np.float32)
    rewards, disc_returns = np.zeros((T, n_envs), np.float32), np.zeros((T, n_envs))
    terminated, dones, valid = (np.zeros((T, n_envs), bool) for _ in range(3))

    steps_per_iteration = args.num_envs * T  # all ranks together
    num_iterations = args.total_timesteps // steps_per_iteration
    recent_returns, stats = deque(maxlen=20), {}
    global_step, start_time = 0, time.time()
    next_obs, _ = envs.reset(seed=seed * 1_000)  # sub-env i is seeded seed*1000 + i
    autoreset = np.zeros(n_envs, dtype=bool)
    running_return = np.zeros(n_envs)  # discounted return so far, for reward scaling

    for iteration in range(1, num_iterations + 1):
        if args.anneal_lr:
            optimizer.param_groups[0]["lr"] = args.learning_rate * (1.0 - (iteration - 1) / num_iterations)

        for t in range(T):
            raw_obs[t] = next_obs
            x = agent.normalize(torch.from_numpy(next_obs).to(device, torch.float32))
            action, logprob, value = agent.act(x)
            b_obs[t], b_actions[t], b_logprobs[t], b_values[t] = x, action, logprob, value
            next_obs, rewards[t], term, trunc, infos = envs.step(
                to_env_actions(action.cpu().numpy(), action_space))
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
                if wandb:  # one row per step: wandb keeps only the last value logged at a step
                    step = global_step + (t + 1) * args.num_envs
                    wandb.log({"charts/episodic_return": float(ep_returns.mean()), "global_step": step,
                               "charts/episodic_length": float(lengths.mean())}, step=step)
        global_step += steps_per_iteration

        # Rewards scaled by the std of the discounted return (not centred: that would change
        # the task, e.g. make every step of a survival task look costly).
        scale = 1.0
        if args.normalize_reward:
            reward_rms.update(disc_returns[valid], distributed)
            scale = 1.0 / math.sqrt(reward_rms.var + 1e-8)
        b_rewards = torch.from_numpy(np.clip(rewards * scale, -10, 10) if args.normalize_reward else rewards)
        with torch.no_grad():
            next_value = agent.critic(agent.normalize(torch.from_numpy(next_obs).to(device, torch.float32)))
            advantages, returns = compute_gae(
                b_rewards.to(device), b_values, next_value.squeeze(-1),
                torch.from_numpy(terminated).to(device, torch.float32),
                torch.from_numpy(dones).to(device, torch.float32), args.gamma, args.gae_lambda)
        if args.normalize_obs:  # new statistics for the next rollout; this one keeps its inputs
            obs_rms.update(raw_obs[valid], distributed)
            agent.set_obs_stats(obs_rms)

        # Epochs of shuffled minibatches over the valid steps of the rollout.
        flat = lambda a: a.reshape(T * n_envs, *a.shape[2:])
        f_obs, f_actions, f_logprobs, f_values = flat(b_obs), flat(b_actions), flat(b_logprobs), flat(b_values)
        f_adv, f_returns = flat(advantages), flat(returns)
        valid_idx = np.flatnonzero(valid.reshape(-1))
        for epoch in range(args.update_epochs):
            for mb in np.array_split(rng.permutation(valid_idx), args.num_minibatches):
                mb = torch.from_numpy(mb).to(device)
                newlogprob, entropy, newvalue = model(f_obs[mb], f_actions[mb])
                mb_adv = f_adv[mb]
                mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                loss, stats = ppo_loss(newlogprob, f_logprobs[mb], mb_adv, newvalue, f_values[mb],
                                       f_returns[mb], entropy, args.clip_coef, args.clip_vloss,
                                       args.ent_coef, args.vf_coef)
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
            sps = int(global_step / (time.time() - start_time))
            mean_ret = np.mean(recent_returns) if recent_returns else float("nan")
            print(f"step {global_step:>8}  return(last {len(recent_returns)}) {mean_ret:8.2f}  "
                  f"v_loss {stats['losses/value_loss']:.4f}  kl {stats['losses/approx_kl']:.4f}  "
                  f"clipfrac {stats['losses/clipfrac']:.3f}  SPS {sps}")
            if wandb:
                wandb.log({**stats, "charts/learning_rate": optimizer.param_groups[0]["lr"],
                           "charts/SPS": sps, "global_step": global_step}, step=global_step)

    envs.close()
    wall_time = time.time() - start_time
    metrics = {"global_step": global_step, "wall_time": wall_time,
               "charts/SPS": int(global_step / wall_time), **stats}
    if is_main:
        returns = evaluate(agent, args.env_id, args.eval_episodes, args.seed + 100_000, device)
        metrics.update(report_eval(returns))
        print(f"{args.env_id} deterministic eval: {metrics['eval/mean_return']:.2f} +- "
              f"{metrics['eval/std_return']:.2f} over {len(returns)} episodes "
              f"after {global_step} steps in {wall_time:.1f} s ({metrics['charts/SPS']} SPS)")
        if args.save_model:
            path = os.path.join(run_dir, "ppo.pt")
            save_checkpoint(path, agent, reward_rms, args)
            print(f"saved {path}")
        if wandb:
            wandb.log({**metrics, "global_step": global_step}, step=global_step)
            wandb.finish()
    if distributed:
        dist.destroy_process_group()
    return metrics


if __name__ == "__main__":
    main(tyro.cli(Args))
