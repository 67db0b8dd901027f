"""ppo.py: GAE, the clipped loss, the Gaussian, normalisation, autoreset handling, checkpoints,
errors, learning; the 5-seed benchmarks sit behind the `benchmark` marker."""

import copy
import dataclasses
import json
import sys
import time

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import ALGOS, load_script, refusal, run, run_seeds, share, side_by_side_sps

ppo = load_script("ppo")


def flat(n: int) -> gym.spaces.Box:
    """A flat observation space of n unbounded floats."""
    return gym.spaces.Box(-np.inf, np.inf, (n,), np.float32)


def test_gae_by_hand_with_a_termination_and_a_truncation():
    """One env, six steps, gamma = lambda = 0.5 (so gamma lambda = 0.25):
    t=0 ordinary, t=1 terminates, t=2 is the NEXT_STEP reset step (its input is the final
    observation of the terminated episode, V = 5, which must not be used), t=3 is truncated by
    a time limit, t=4 the reset step whose V = 4 is that of the truncated episode's final
    observation (it must be used), t=5 ordinary and bootstraps from next_value = 6."""
    col = lambda *xs: torch.tensor(xs, dtype=torch.float32).unsqueeze(1)
    rewards = col(1, 3, 0, 1, 0, 3)
    values = col(1, 2, 5, 1, 4, 2)
    terminated = col(0, 1, 0, 0, 0, 0)
    dones = col(0, 1, 0, 1, 0, 0)
    adv, ret = ppo.compute_gae(rewards, values, torch.tensor([6.0]), terminated, dones, 0.5, 0.5)
    # t=5: delta = 3 + 0.5*6 - 2 = 4.
    # t=3: delta = 1 + 0.5*4 - 1 = 2 (bootstraps through the truncation); done: the sum stops.
    # t=1: delta = 3 + 0 - 2 = 1 (no bootstrap through the termination); done: the sum stops.
    # t=0: delta = 1 + 0.5*2 - 1 = 1, A = 1 + 0.25 * 1 = 1.25.
    for t, a in [(0, 1.25), (1, 1.0), (3, 2.0), (5, 4.0)]:
        assert adv[t, 0].item() == pytest.approx(a), t
        assert ret[t, 0].item() == pytest.approx(a + values[t, 0].item()), t


def test_gae_lambda_one_is_the_discounted_return_minus_v():
    rewards = torch.tensor([[1.0], [2.0], [4.0]])
    values = torch.tensor([[0.5], [0.25], [1.0]])
    zeros = torch.zeros_like(rewards)
    adv, ret = ppo.compute_gae(rewards, values, torch.tensor([8.0]), zeros, zeros, 0.5, 1.0)
    torch.testing.assert_close(ret[:, 0], torch.tensor([1 + 1 + 1 + 1.0, 2 + 2 + 2.0, 4 + 4.0]))


def test_clipped_loss_on_a_hand_made_batch():
    ratios = torch.tensor([1.5, 0.5, 1.1, 0.7])
    advantages = torch.tensor([1.0, -1.0, 2.0, 1.0])
    old = torch.tensor([-1.0, -2.0, -0.5, -0.1])
    new = (old + ratios.log()).requires_grad_()
    newvalue = torch.tensor([1.0, 2.0, 3.0, 4.0])
    oldvalue = torch.tensor([1.5, 2.0, 2.0, 4.0])
    returns = torch.tensor([0.0, 2.0, 5.0, 4.0])
    entropy = torch.full((4,), 0.5)
    loss, stats = ppo.ppo_loss(new, old, advantages, newvalue, oldvalue, returns, entropy,
                               clip_coef=0.2, clip_vloss=False, ent_coef=0.01, vf_coef=0.5)
    # min(r A, clip(r) A): 1.2 (clipped), -0.8 (clipped), 2.2, 0.7 (r < 0.8 but A > 0: unclipped)
    assert stats["losses/policy_loss"].item() == pytest.approx(-(1.2 - 0.8 + 2.2 + 0.7) / 4)
    assert stats["losses/value_loss"].item() == pytest.approx(0.5 * (1 + 0 + 4 + 0) / 4)
    assert stats["losses/clipfrac"].item() == pytest.approx(0.75)
    expected_kl = ((ratios - 1) - ratios.log()).mean().item()
    assert stats["losses/approx_kl"].item() == pytest.approx(expected_kl)
    assert loss.item() == pytest.approx(-(1.2 - 0.8 + 2.2 + 0.7) / 4 - 0.01 * 0.5 + 0.5 * 0.625)
    # The clipped samples push no gradient; the others get -A r / batch.
    loss.backward()
    torch.testing.assert_close(new.grad, torch.tensor([0.0, 0.0, -2 * 1.1 / 4, -1 * 0.7 / 4]))
    # Clipped value loss: V_clip = old + clip(new - old, +-0.2) = 1.3, 2, 2.2, 4; the larger error wins.
    _, stats = ppo.ppo_loss(new, old, advantages, newvalue, oldvalue, returns, entropy,
                            clip_coef=0.2, clip_vloss=True, ent_coef=0.01, vf_coef=0.5)
    assert stats["losses/value_loss"].item() == pytest.approx(0.5 * (1.3 ** 2 + 0 + 2.8 ** 2 + 0) / 4)


def test_gaussian_head_log_prob_and_entropy_by_the_formula():
    """The Box head is N(mean, diag(exp(log_std)^2)) over independent dimensions:
    log pi(a|s) = sum_i [-(a_i - mu_i)^2 / (2 sigma_i^2) - log sigma_i - log(2 pi) / 2] and
    H = sum_i [1/2 + log(2 pi) / 2 + log sigma_i], the same in every state."""
    torch.manual_seed(0)
    agent = ppo.Agent(flat(4), gym.spaces.Box(-2.0, 2.0, (3,)), (16,))
    with torch.no_grad():
        agent.log_std.copy_(torch.tensor([-1.0, 0.0, 0.7]))
    x, actions = torch.randn(5, 4), torch.randn(5, 3) * 2
    _, logprob, entropy, _ = agent(x, actions)
    mean, log_std = agent.actor(x), agent.log_std
    by_hand = (-(actions - mean) ** 2 / (2 * log_std.exp() ** 2) - log_std - 0.5 * np.log(2 * np.pi)).sum(-1)
    torch.testing.assert_close(logprob, by_hand)
    torch.testing.assert_close(entropy, (0.5 + 0.5 * np.log(2 * np.pi) + log_std).sum().expand(5))


def test_categorical_head_log_prob_and_entropy_by_the_formula():
    """The Discrete head is a softmax over the logits: log pi(a|s) = l_a - log sum_b exp(l_b)
    and H = -sum_a pi(a|s) log pi(a|s) (written out here, not through log_softmax)."""
    torch.manual_seed(0)
    agent = ppo.Agent(flat(4), gym.spaces.Discrete(3), (16,))
    with torch.no_grad():
        agent.actor[-1].weight.mul_(300.0)  # logits of order 1, not 0.01: a wrong formula shows
    x, actions = torch.randn(6, 4), torch.tensor([0, 1, 2, 2, 1, 0])
    _, logprob, entropy, _ = agent(x, actions)
    logits = agent.actor(x).detach()
    assert logits.std() > 0.3
    probs = logits.exp() / logits.exp().sum(-1, keepdim=True)
    torch.testing.assert_close(logprob, probs[torch.arange(6), actions].log())
    torch.testing.assert_close(entropy, -(probs * probs.log()).sum(-1))


def test_agent_samples_follow_its_distribution():
    """20,000 samples in one state: the Categorical's frequencies are softmax(l) (l = 1, 0, -1:
    0.665, 0.245, 0.090), the Gaussian's mean and standard deviation are mu and exp(log_std)
    per dimension (an argmax or the mean instead of a sample would not explore)."""
    torch.manual_seed(0)
    n = 20_000
    agent = ppo.Agent(flat(4), gym.spaces.Discrete(3), (16,))
    with torch.no_grad():
        agent.actor[-1].weight.zero_()
        agent.actor[-1].bias.copy_(torch.tensor([1.0, 0.0, -1.0]))
        actions, _, _, _ = agent(torch.randn(n, 4))
    freq = torch.bincount(actions, minlength=3) / n
    torch.testing.assert_close(freq, torch.softmax(torch.tensor([1.0, 0.0, -1.0]), 0), atol=0.015, rtol=0)
    agent = ppo.Agent(flat(4), gym.spaces.Box(-2.0, 2.0, (2,)), (16,))
    with torch.no_grad():
        agent.actor[-1].weight.zero_()
        agent.actor[-1].bias.copy_(torch.tensor([0.5, -1.0]))
        agent.log_std.copy_(torch.tensor([-1.0, 0.5]))
        actions, _, _, _ = agent(torch.randn(n, 4))
    torch.testing.assert_close(actions.mean(0), torch.tensor([0.5, -1.0]), atol=0.05, rtol=0)
    torch.testing.assert_close(actions.std(0), torch.tensor([-1.0, 0.5]).exp(), rtol=0.03, atol=0)


def test_observation_normalisation_by_the_formula():
    agent = ppo.Agent(flat(2), gym.spaces.Discrete(2), (8,), normalize_obs=True)
    agent.obs_mean.copy_(torch.tensor([1.0, -2.0]))
    agent.obs_std.copy_(torch.tensor([2.0, 0.5]))
    obs = torch.tensor([[3.0, -1.0], [1.0, 10.0]])
    torch.testing.assert_close(agent.normalize(obs), torch.tensor([[1.0, 2.0], [0.0, 10.0]]))  # 24 clipped to 10
    assert torch.equal(ppo.Agent(flat(2), gym.spaces.Discrete(2), (8,)).normalize(obs), obs)


def test_agent_log_probs_match_its_samples():
    """Sampling (no actions given) and the update's pass agree on log pi(a|s) for both heads
    (the ratio starts at exactly 1)."""
    torch.manual_seed(0)
    for space in (gym.spaces.Discrete(3), gym.spaces.Box(-2.0, 2.0, (2,))):
        agent = ppo.Agent(flat(4), space, (16,), log_std_init=-0.5)
        x = torch.randn(7, 4)
        with torch.no_grad():
            action, logprob, _, value = agent(x)
        _, newlogprob, entropy, newvalue = agent(x, action)
        torch.testing.assert_close(newlogprob, logprob)
        torch.testing.assert_close(newvalue, value)
        assert entropy.shape == (7,)


def test_running_mean_std_equals_the_statistics_of_all_batches():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(n, 2)) for n in (5, 50, 500)]
    rms = ppo.RunningMeanStd((2,))
    for b in batches:
        rms.update(b)
    everything = np.concatenate(batches)
    np.testing.assert_allclose(rms.mean, everything.mean(0), rtol=1e-4)
    np.testing.assert_allclose(rms.var, everything.var(0), rtol=1e-3)


class CounterEnv(gym.Env):
    """Observation [episode, t]. Even episodes terminate and odd ones truncate, at lengths 3, 4, 5."""

    observation_space = gym.spaces.Box(0.0, 1e4, shape=(2,), dtype=np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode = getattr(self, "episode", -1) + 1
        self.t = 0
        return np.array([self.episode, 0], np.float32), {}

    def step(self, action):
        self.t += 1
        end = self.t == 3 + self.episode % 3
        obs = np.array([self.episode, self.t], np.float32)
        return obs, 1.0, end and self.episode % 2 == 0, end and self.episode % 2 == 1, {}


gym.register("PPOCounterEnv-v0", entry_point=CounterEnv)


def test_reset_steps_are_left_out_and_final_observations_are_valued(monkeypatch, tmp_path):
    """Runs main()'s real loop on CounterEnv: the update never sees a reset step (whose input
    is an episode's final observation [ep, end]), and the rollout does see every final
    observation, right after its episode's last step, so V(s_T) is there to bootstrap from."""
    acted, trained = [], []

    class RecordingAgent(ppo.Agent):
        def forward(self, x, actions=None):  # no actions: the rollout samples; given: the update
            (acted if actions is None else trained).append(x.clone())
            return super().forward(x, actions)

    monkeypatch.setattr(ppo, "Agent", RecordingAgent)
    monkeypatch.chdir(tmp_path)
    ppo.main(ppo.Args(env_id="PPOCounterEnv-v0", num_envs=2, num_steps=16, num_minibatches=2,
                      update_epochs=1, total_timesteps=96, eval_episodes=1, log_interval=10**9))
    is_final = lambda x: x[:, 1] == 3 + x[:, 0] % 3
    trained = torch.cat(trained)
    assert len(trained) > 60 and not is_final(trained).any(), "a reset step reached the loss"
    per_env = torch.stack(acted, dim=1)  # [env, step, obs]: 3 rollouts of 16 steps, 2 envs
    starts = 0
    for env_obs in per_env:
        for prev, cur in zip(env_obs[:-1], env_obs[1:]):
            if cur[0] > 0 and cur[1] == 0:  # a new episode: the input before it was the final obs
                assert prev[0] == cur[0] - 1 and is_final(prev[None])[0], (prev, cur)
                starts += 1
    assert starts >= 8


def test_main_normalises_each_minibatch_and_anneals_the_step_size(monkeypatch, tmp_path):
    """Runs main()'s real update loop (8 iterations x 2 epochs x 4 minibatches) and records what
    reaches the loss and the optimizer: each minibatch's advantages are its GAE advantages
    (returns - V_old) shifted to mean 0 and scaled to std 1, and the step size of iteration i
    of N is lr (1 - (i - 1) / N), or lr throughout without --anneal-lr; the global gradient norm
    reaching Adam is at most --max-grad-norm (and is clipped to it on several steps)."""
    losses, lrs, norms = [], [], []
    real_loss = ppo.ppo_loss

    def recording_loss(newlogprob, oldlogprob, advantages, newvalue, oldvalue, returns, *rest):
        losses.append((advantages.clone(), returns - oldvalue))
        return real_loss(newlogprob, oldlogprob, advantages, newvalue, oldvalue, returns, *rest)

    class RecordingAdam(torch.optim.Adam):
        def step(self, *a, **k):
            lrs.append(self.param_groups[0]["lr"])
            norms.append(torch.cat([p.grad.ravel() for p in self.param_groups[0]["params"]]).norm().item())
            return super().step(*a, **k)

    monkeypatch.setattr(ppo, "ppo_loss", recording_loss)
    monkeypatch.setattr(torch.optim, "Adam", RecordingAdam)
    monkeypatch.chdir(tmp_path)
    args = cartpole(seed=2, **TINY)  # 2048 steps of 4 x 64: N = 8 iterations, lr 1e-3
    ppo.main(args)
    assert len(losses) == len(lrs) == 8 * 2 * 4
    for mb_adv, gae_adv in losses:
        assert gae_adv.std() > 0.1
        torch.testing.assert_close(mb_adv, (gae_adv - gae_adv.mean()) / (gae_adv.std() + 1e-8))
    expected = [1e-3 * (1 - i / 8) for i in range(8) for _ in range(2 * 4)]
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert max(norms) <= 0.5 * (1 + 1e-5) and sum(n > 0.49 for n in norms) >= 8, "clipped to --max-grad-norm 0.5"
    lrs.clear()
    ppo.main(dataclasses.replace(args, anneal_lr=False))
    assert lrs == [1e-3] * 64


def test_each_rollout_bootstraps_from_v_of_the_observation_after_it(monkeypatch, tmp_path):
    """In main(), GAE's next_value is the critic's V of the observation that follows the rollout
    (the first one the next rollout acts on), not 0: 8 rollouts of 4 envs x 64 steps."""
    gae_calls, critic_calls, acted = [], [], []
    real_gae = ppo.compute_gae

    def recording_gae(rewards, values, next_value, *rest):
        gae_calls.append((next_value.clone(), critic_calls[-1]))  # the critic's last call came just before
        return real_gae(rewards, values, next_value, *rest)

    class RecordingAgent(ppo.Agent):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.critic.register_forward_hook(lambda m, i, o: critic_calls.append((i[0].clone(), o.detach().clone())))

        def forward(self, x, actions=None):
            if actions is None:
                acted.append(x.clone())
            return super().forward(x, actions)

    monkeypatch.setattr(ppo, "compute_gae", recording_gae)
    monkeypatch.setattr(ppo, "Agent", RecordingAgent)
    monkeypatch.chdir(tmp_path)
    ppo.main(cartpole(seed=2, **TINY))
    assert len(gae_calls) == 8 and len(acted) == 8 * 64
    for i, (next_value, (critic_in, critic_out)) in enumerate(gae_calls):
        assert critic_out.abs().min() > 0
        torch.testing.assert_close(next_value, critic_out.squeeze(-1))
        if i < 7:
            torch.testing.assert_close(critic_in, acted[(i + 1) * 64])


def test_env_id_picks_the_preset_and_any_flag_wins(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["ppo.py", "--learning-rate", "3e-4", "--env-id", "CartPole-v1"])
    args = ppo.parse_args()
    assert args.learning_rate == 3e-4, "a flag given on the command line wins over the preset"
    assert args == dataclasses.replace(ppo.PRESETS["CartPole-v1"], learning_rate=3e-4)
    monkeypatch.setattr(sys, "argv", ["ppo.py", "--env-id=Pendulum-v1"])
    assert ppo.parse_args() == ppo.PRESETS["Pendulum-v1"]
    # No preset: Box actions get the continuous-control numbers, discrete ones the plain Args().
    box = ppo.preset("MountainCarContinuous-v0")
    assert box == dataclasses.replace(ppo.BOX_ARGS, env_id="MountainCarContinuous-v0")
    assert box.normalize_obs and box.normalize_reward
    # The MuJoCo presets: the continuous numbers at 1M steps, evaluated over 10 episodes.
    assert ppo.preset("Hopper-v5") == dataclasses.replace(ppo.BOX_ARGS, env_id="Hopper-v5", eval_episodes=10)
    # MinAtar's v0 ids (all 6 actions) get v1's numbers, the 100k-step cut of an endless episode included.
    assert ppo.preset("MinAtar/Seaquest-v0") == dataclasses.replace(ppo.PRESETS["MinAtar/Seaquest-v1"],
                                                                    env_id="MinAtar/Seaquest-v0")
    discrete = ppo.preset("MountainCar-v0")
    assert discrete == ppo.Args(env_id="MountainCar-v0")
    assert not discrete.normalize_obs and discrete.ent_coef == 0.01


TINY = dict(total_timesteps=2_048, num_envs=4, num_steps=64, num_minibatches=4,
            update_epochs=2, eval_episodes=5, log_interval=10**9)
PENDULUM = dict(total_timesteps=4_096, num_envs=4, num_steps=256, num_minibatches=8,
                update_epochs=2, eval_episodes=4, log_interval=10**9, normalize_obs=True)


def cartpole(**changes) -> "ppo.Args":
    """The numbers a user gets with --env-id CartPole-v1, with some changed."""
    return dataclasses.replace(ppo.preset("CartPole-v1"), **changes)


@pytest.mark.parametrize("env_id", ["HalfCheetah-v5", "LunarLander-v3", "LunarLanderContinuous-v3"])
def test_mujoco_and_box2d_presets_run_a_few_hundred_steps(env_id, tmp_path, monkeypatch):
    """Smoke run of each new preset (the bars are the benchmarks below): the pinned mujoco/box2d
    load, the preset's networks fit the env's spaces, and a short run trains and evaluates."""
    monkeypatch.chdir(tmp_path)
    args = dataclasses.replace(ppo.preset(env_id), seed=1, total_timesteps=512, num_envs=2, num_steps=256,
                               num_minibatches=4, update_epochs=1, eval_episodes=2, log_interval=10**9)
    metrics = ppo.main(args)
    assert metrics["global_step"] == 512 and metrics["eval/episodes"] == 2
    assert all(np.isfinite(metrics[k]) for k in ("losses/value_loss", "losses/policy_loss", "eval/mean_return"))


def test_capture_video_films_the_deterministic_episode(tmp_path, monkeypatch):
    """--capture-video writes runs/<run>/episode.gif: every 2nd frame of one deterministic episode, at
    half size; a renderer that fails is one sentence after the results, not a traceback."""
    import imageio

    monkeypatch.chdir(tmp_path)
    args = dataclasses.replace(ppo.preset("LunarLander-v3"), total_timesteps=512, num_envs=2, num_steps=256,
                               num_minibatches=4, update_epochs=1, eval_episodes=1, log_interval=10**9,
                               capture_video=True)
    ppo.main(args)
    (gif,) = tmp_path.glob("runs/*/episode.gif")
    frames = imageio.mimread(gif)
    assert len(frames) > 1 and frames[0].shape[:2] == (200, 300), "400x600 LunarLander frames at half size"
    real_make = gym.make
    monkeypatch.setattr(ppo.gym, "make", lambda env_id, **kw: (_ for _ in ()).throw(RuntimeError("no display"))
                        if kw.get("render_mode") else real_make(env_id, **kw))
    with pytest.raises(SystemExit, match="--capture-video: could not film LunarLander-v3 .RuntimeError: no display"):
        ppo.capture_video(ppo.Agent(flat(8), gym.spaces.Discrete(4), (8,)), "LunarLander-v3", 0, torch.device("cpu"),
                          str(tmp_path / "x.gif"))


def test_seeded_runs_repeat_exactly(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    timing = ("wall_time", "charts/SPS")
    a = {k: v for k, v in ppo.main(cartpole(seed=3, **TINY)).items() if k not in timing}
    b = {k: v for k, v in ppo.main(cartpole(seed=3, **TINY)).items() if k not in timing}
    c = {k: v for k, v in ppo.main(cartpole(seed=4, **TINY)).items() if k not in timing}
    assert a == b
    assert a["losses/value_loss"] != c["losses/value_loss"], "another seed should give another run"


@pytest.mark.parametrize("switches", [
    dict(clip_vloss=True, anneal_lr=False, target_kl=0.001),
    dict(normalize_obs=True, normalize_reward=True, ent_coef=0.01),
])
def test_non_default_switches_train(switches, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    metrics = ppo.main(cartpole(**{**TINY, **switches}))
    assert all(np.isfinite(metrics[k]) for k in ("losses/value_loss", "losses/policy_loss", "losses/approx_kl"))
    assert metrics["eval/episodes"] == 5


def test_saved_model_keeps_its_statistics_and_evaluates_alike(tmp_path, monkeypatch):
    """Pendulum normalises observations: the checkpoint carries the statistics, and evaluating
    it reproduces the returns of the evaluation at the end of training."""
    monkeypatch.chdir(tmp_path)
    trained = ppo.main(dataclasses.replace(ppo.preset("Pendulum-v1"), seed=5, save_model=True, **PENDULUM))
    [path] = list((tmp_path / "runs").glob("*/ppo.pt"))
    assert not list((tmp_path / "runs").glob("*/*.tmp")), "the atomic write left a temp file"
    ckpt = ppo.load_checkpoint(str(path), "--eval-checkpoint")
    assert ckpt["normalize_obs"] and ckpt["return_var"] != 1.0
    assert not torch.equal(ckpt["agent"]["obs_std"], torch.ones(3)), "observation statistics not saved"
    evaluated = ppo.main(ppo.Args(seed=5, eval_checkpoint=str(path), eval_episodes=4))
    for key in ("eval/mean_return", "eval/std_return", "eval/episodes"):
        assert evaluated[key] == trained[key]
    with pytest.raises(SystemExit, match="plays Pendulum-v1, the env it was trained on: drop --env-id Acrobot-v1"):
        ppo.main(ppo.Args(env_id="Acrobot-v1", eval_checkpoint=str(path)))  # refused, not silently ignored
    with pytest.raises(SystemExit, match="--eval-checkpoint only evaluates: drop --track and --save-model."):
        ppo.main(ppo.Args(eval_checkpoint=str(path), save_model=True))


TWO_RANK_DRIVER = """
import dataclasses, json, os, sys
import gymnasium as gym
import numpy as np
sys.path.insert(0, sys.argv[1])
from conftest import load_script

ppo = load_script("ppo")
seen, made, agents, stats = [], [], [], []


class Recorder(gym.vector.VectorWrapper):
    # Every observation the training envs return, with its reward and its step's done flag.
    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        seen.append((obs.copy(), np.zeros(len(obs)), np.zeros(len(obs), bool)))
        return obs, info

    def step(self, actions):
        obs, reward, term, trunc, info = self.env.step(actions)
        seen.append((obs.copy(), reward.copy(), term | trunc))
        return obs, reward, term, trunc, info


real_make_envs = ppo.make_envs
def make_envs(env_id, n, *rest):  # the first call makes the training envs; the evaluation's are not recorded
    made.append(n)
    return Recorder(real_make_envs(env_id, n, *rest)) if len(made) == 1 else real_make_envs(env_id, n, *rest)


class Agent(ppo.Agent):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        if not next(self.parameters()).is_meta:  # main's memory check counts the parameters of one on the meta device
            agents.append(self)


class RunningMeanStd(ppo.RunningMeanStd):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        stats.append(self)


real_gae, gae_rewards = ppo.compute_gae, []
def compute_gae(rewards, *rest):  # the rewards GAE sees, after the scaling
    gae_rewards.append(rewards.numpy().copy())
    return real_gae(rewards, *rest)


ppo.make_envs, ppo.Agent, ppo.RunningMeanStd, ppo.compute_gae = make_envs, Agent, RunningMeanStd, compute_gae
metrics = ppo.main(dataclasses.replace(ppo.preset("Pendulum-v1"), **json.loads(sys.argv[2])))
[agent], [obs_rms, reward_rms] = agents, stats
assert obs_rms.mean.shape == (3,) and reward_rms.mean.shape == ()
np.savez(f"rank{os.environ['RANK']}.npz", obs=np.stack([o for o, _, _ in seen]),
         reward=np.stack([r for _, r, _ in seen]), done=np.stack([d for _, _, d in seen]),
         gae_rewards=np.stack(gae_rewards), obs_mean=agent.obs_mean.numpy(), obs_std=agent.obs_std.numpy(),
         return_var=reward_rms.var,
         params=np.concatenate([p.detach().numpy().ravel() for p in agent.parameters()]),
         eval_mean=metrics.get("eval/mean_return", np.nan))
"""


def test_torchrun_two_ranks_agree_on_statistics_equal_to_one_process_over_their_data(tmp_path):
    """Pendulum under torchrun, 2 ranks x 2 envs x 2 rollouts of 128 steps (each env truncates
    once, at step 200), both statistics on. Each rank records every observation and reward its
    envs return; afterwards the ranks must hold the same observation mean and std and the same
    variance of the discounted return, and these must equal one computation over both ranks'
    data (the observations acted on, reset steps left out; the discounted return restarted after
    each episode's end), and each rollout's rewards reach GAE divided by the standard deviation
    of the returns so far. The ranks' weights must agree too (DDP averages the gradients), and
    rank 0's checkpoint evaluates like its final evaluation."""
    (tmp_path / "driver.py").write_text(TWO_RANK_DRIVER)
    gamma = 0.9  # the Pendulum preset's
    config = dict(total_timesteps=1024, num_envs=4, num_steps=128, num_minibatches=4, update_epochs=2,
                  normalize_obs=True, normalize_reward=True, eval_episodes=2, log_interval=10**9,
                  save_model=True, seed=3)
    proc = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                "driver.py", str(ALGOS.parent / "tests"), json.dumps(config)], cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 rank(s) x 2 env(s) x 128 steps" in proc.stdout
    ranks = [np.load(tmp_path / f"rank{r}.npz") for r in (0, 1)]
    observations, returns = [], []
    for rank in ranks:
        obs, reward, done = rank["obs"], rank["reward"], rank["done"]
        assert obs.shape == (2 * 128 + 1, 2, 3) and done[1:].sum() == 2  # reset, 256 steps; 2 truncations
        acted_on = obs[:-1][~done[:-1]]  # the last observation is only bootstrapped from
        observations.append(acted_on)
        for env in range(2):
            g = 0.0
            for t in range(1, len(obs)):  # step t - 1 acted on obs[t - 1] and returned reward[t]
                g = g * gamma + reward[t, env]
                if not done[t - 1, env]:  # a reset step is no transition: left out
                    returns.append((t - 1, g))
                if done[t, env]:
                    g = 0.0
    assert not np.allclose(observations[0].mean(0), observations[1].mean(0), atol=0.05), "ranks saw alike data"
    observations = np.concatenate(observations)
    assert len(observations) == 2 * 2 * 256 - 4 and len(returns) == len(observations)
    # Rollout k's rewards reach GAE divided by the std of the returns of rollouts 1..k.
    scales = [np.sqrt(np.var([g for t, g in returns if t < 128 * k]) + 1e-8) for k in (1, 2)]
    for rank in ranks:
        for k in (0, 1):
            rewards = rank["reward"][1 + 128 * k:1 + 128 * (k + 1)]
            np.testing.assert_allclose(rank["gae_rewards"][k], np.clip(rewards / scales[k], -10, 10), rtol=1e-5)
    returns = [g for _, g in returns]
    for rank in ranks:
        np.testing.assert_allclose(rank["obs_mean"], observations.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(rank["obs_std"], np.sqrt(observations.var(0) + 1e-8), rtol=1e-5)
        assert float(rank["return_var"]) == pytest.approx(np.var(returns), rel=1e-5)
    np.testing.assert_array_equal(ranks[0]["params"], ranks[1]["params"])
    [path] = list((tmp_path / "runs").glob("*/ppo.pt"))
    ckpt = ppo.load_checkpoint(str(path), "--eval-checkpoint")
    np.testing.assert_array_equal(ckpt["agent"]["obs_std"].numpy(), ranks[0]["obs_std"])
    assert ckpt["return_var"] == float(ranks[0]["return_var"])
    evaluated = ppo.main(ppo.Args(seed=3, eval_checkpoint=str(path), eval_episodes=2))
    assert evaluated["eval/mean_return"] == float(ranks[0]["eval_mean"])


# Combinations, environments, checkpoints; each field's range (bounds, nan, inf): test_bad_inputs.py.
@pytest.mark.parametrize("args, message", [
    (["--env-id", "NoSuchEnv-v0"], "pprint_registry"),
    (["--env-id", "Blackjack-v1"], "flat Box observation"),
    (["--num-envs", "4", "--num-steps", "8", "--num-minibatches", "32"], "--num-minibatches 32 must lie"),
    (["--total-timesteps", "100"], "less than one rollout"),
    (["--num-envs", "1", "--num-steps", str(10**14), "--total-timesteps", str(10**14)],
     "--num-steps 100000000000000 ("),  # was torch's "can't allocate memory" traceback
    (["--eval-checkpoint", "missing.pt"], "cannot read it"),
    (["--eval-checkpoint", "corrupt.pt"], "its sha256 does not match"),
])
def test_bad_input_gets_one_clear_sentence(args, message, tmp_path, monkeypatch):
    (tmp_path / "corrupt.pt").write_bytes(b"this is not a checkpoint")
    monkeypatch.chdir(tmp_path)
    assert message in refusal(ppo, args, monkeypatch)
    assert not (tmp_path / "runs").exists()  # refused before the run folder


def test_one_step_rollouts_are_refused():
    """With --num-steps 1 a rollout can hold only reset steps (every env cut at the same step, e.g. Pendulum's 200):
    the statistics then divided by zero and the run ended in a traceback. Two steps always hold a real one."""
    with pytest.raises(SystemExit, match="--num-steps 1 is not allowed: it must be at least 2"):
        ppo.check_args(cartpole(num_steps=1))
    ppo.check_args(cartpole(num_steps=2))


def test_envs_must_divide_among_ranks_and_a_checkpoint_must_be_ppos(tmp_path):
    with pytest.raises(SystemExit, match="--num-envs 3 does not divide among the 2 ranks"):
        ppo.validate(cartpole(num_envs=3), world_size=2)
    path = str(tmp_path / "dqn.pt")
    ppo.save_checkpoint(path, {"algo": "dqn"})
    with pytest.raises(SystemExit, match="is a dqn.py checkpoint, not ppo.py's"):
        ppo.load_checkpoint(path, "--eval-checkpoint")


def test_learns_cartpole_quickly(tmp_path, monkeypatch):
    """Fails if learning breaks. The default run (100k steps, about 10 s idle): shorter runs
    anneal the step size sooner and end anywhere from 125 to 500. Measured at this seed (issue
    24): the untrained agent (the same initial weights, lr 1e-12) scores 225.4 in this
    deterministic eval (over initial-weight seeds 1-20 anywhere from 9 to 500, so the seed is
    fixed), sampling from it about 21; broken variants score 9.75 with GAE bootstrapping through
    terminations (no 1 - terminated) and 9.75 with the ratio inverted (pi_old / pi_theta)."""
    monkeypatch.chdir(tmp_path)
    metrics = ppo.main(cartpole(seed=1, eval_episodes=20))
    assert metrics["eval/mean_return"] >= 475, metrics


# ---- benchmarks: python -m pytest tests/test_ppo.py -m benchmark -s -------------------------


@pytest.mark.benchmark
def test_ppo_solves_cartpole_fast():
    rows = run_seeds("ppo.py", ["--env-id", "CartPole-v1"], bar=500)
    assert share(rows, lambda r: r["mean"] == 500.0) >= 0.8, "deterministic eval 500 in >= 80% of 10 seeds"
    assert all(r["steps"] <= 100_000 for r in rows)




@pytest.mark.benchmark
def test_ppo_cartpole_sps_side_by_side_with_a_cleanrl_style_loop(tmp_path, monkeypatch):
    """The README's speed target for `ppo.py` (CartPole): SPS at least a CleanRL-style PPO loop's
    (~8,000 alone on the idle machine; timed back to back, the loop ~9,600 and ours ~14,000, 1.46x).
    An absolute SPS bar fails on a loaded machine whatever the code does, so both are measured
    here, in this process, one thread, on CPU seconds of their training loops (our SPS with the
    script's clock swapped for process_time), interleaved, 100k steps each, best of 3 rounds: our
    preset must reach at least 1.0x the loop's SPS. Measured for issue 24 at load ~3: 14,949
    against 10,826 (1.38x); with a 256x256 matmul wasted at every env step, 0.59x (fails)."""
    monkeypatch.chdir(tmp_path)
    ours, loop = side_by_side_sps(ppo, "CartPole-v1", cleanrl_style_ppo_sps, 100_000, monkeypatch)
    assert max(ours) >= 1.0 * max(loop), "the README's target: >= 1.0x (measured back to back 1.46x)"


def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


def cleanrl_style_ppo_sps(total_timesteps: int = 100_000, seed: int = 1) -> float:
    """CleanRL's ppo.py loop and defaults on CartPole-v1 (4 envs x 128 steps, 4 minibatches, 4
    epochs, 64-64 tanh actor and critic, Adam 2.5e-4 annealed, GAE 0.99/0.95, clip 0.2 with value
    clipping, entropy 0.01, grad norm 0.5): env steps per CPU second of the loop."""
    torch.manual_seed(seed)
    num_envs, num_steps, num_minibatches, update_epochs = 4, 128, 4, 4
    envs = gym.vector.SyncVectorEnv([lambda: gym.wrappers.RecordEpisodeStatistics(gym.make("CartPole-v1"))
                                     for _ in range(num_envs)])
    n_obs, n_act = envs.single_observation_space.shape[0], envs.single_action_space.n
    critic = nn.Sequential(layer_init(nn.Linear(n_obs, 64)), nn.Tanh(), layer_init(nn.Linear(64, 64)), nn.Tanh(),
                           layer_init(nn.Linear(64, 1), std=1.0))
    actor = nn.Sequential(layer_init(nn.Linear(n_obs, 64)), nn.Tanh(), layer_init(nn.Linear(64, 64)), nn.Tanh(),
                          layer_init(nn.Linear(64, n_act), std=0.01))
    params = list(actor.parameters()) + list(critic.parameters())
    optimizer = torch.optim.Adam(params, lr=2.5e-4, eps=1e-5)
    batch_size = num_envs * num_steps
    minibatch_size = batch_size // num_minibatches
    num_iterations = total_timesteps // batch_size
    obs = torch.zeros((num_steps, num_envs, n_obs))
    actions, logprobs, rewards, dones, values = (torch.zeros((num_steps, num_envs)) for _ in range(5))
    global_step = 0
    start = time.process_time()
    next_obs, _ = envs.reset(seed=seed)
    next_obs, next_done = torch.Tensor(next_obs), torch.zeros(num_envs)
    for iteration in range(1, num_iterations + 1):
        optimizer.param_groups[0]["lr"] = (1.0 - (iteration - 1.0) / num_iterations) * 2.5e-4
        for step in range(num_steps):
            global_step += num_envs
            obs[step], dones[step] = next_obs, next_done
            with torch.no_grad():
                dist = torch.distributions.Categorical(logits=actor(next_obs))
                action = dist.sample()
                logprobs[step], values[step] = dist.log_prob(action), critic(next_obs).flatten()
            actions[step] = action
            next_obs, reward, terminations, truncations, _ = envs.step(action.numpy())
            rewards[step] = torch.tensor(reward)
            next_obs, next_done = torch.Tensor(next_obs), torch.Tensor(np.logical_or(terminations, truncations))
        with torch.no_grad():
            next_value = critic(next_obs).reshape(1, -1)
            advantages = torch.zeros_like(rewards)
            lastgaelam = 0
            for t in reversed(range(num_steps)):
                nextnonterminal = 1.0 - (next_done if t == num_steps - 1 else dones[t + 1])
                nextvalues = next_value if t == num_steps - 1 else values[t + 1]
                delta = rewards[t] + 0.99 * nextvalues * nextnonterminal - values[t]
                advantages[t] = lastgaelam = delta + 0.99 * 0.95 * nextnonterminal * lastgaelam
            returns = advantages + values
        b_obs, b_logprobs, b_actions = obs.reshape(-1, n_obs), logprobs.reshape(-1), actions.reshape(-1)
        b_advantages, b_returns, b_values = advantages.reshape(-1), returns.reshape(-1), values.reshape(-1)
        b_inds = np.arange(batch_size)
        for _ in range(update_epochs):
            np.random.shuffle(b_inds)
            for begin in range(0, batch_size, minibatch_size):
                mb = b_inds[begin:begin + minibatch_size]
                dist = torch.distributions.Categorical(logits=actor(b_obs[mb]))
                newlogprob, entropy = dist.log_prob(b_actions.long()[mb]), dist.entropy()
                newvalue = critic(b_obs[mb]).view(-1)
                ratio = (newlogprob - b_logprobs[mb]).exp()
                mb_adv = b_advantages[mb]
                mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                pg_loss = torch.max(-mb_adv * ratio, -mb_adv * torch.clamp(ratio, 0.8, 1.2)).mean()
                v_clipped = b_values[mb] + torch.clamp(newvalue - b_values[mb], -0.2, 0.2)
                v_loss = 0.5 * torch.max((newvalue - b_returns[mb]) ** 2, (v_clipped - b_returns[mb]) ** 2).mean()
                loss = pg_loss - 0.01 * entropy.mean() + v_loss * 0.5
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(params, 0.5)
                optimizer.step()
    sps = global_step / (time.process_time() - start)
    envs.close()
    return sps


@pytest.mark.benchmark
def test_ppo_solves_acrobot():
    rows = run_seeds("ppo.py", ["--env-id", "Acrobot-v1"], bar=-100)
    assert share(rows, lambda r: r["mean"] >= -100) >= 0.8
    assert all(r["steps"] <= 200_000 for r in rows)


@pytest.mark.benchmark
def test_ppo_solves_pendulum():
    rows = run_seeds("ppo.py", ["--env-id", "Pendulum-v1"], bar=-200)
    assert share(rows, lambda r: r["mean"] >= -200) >= 0.8
    assert all(r["steps"] <= 200_000 for r in rows)


# Issue 20: MuJoCo at 1M steps, 3 seeds (CleanRL's 1M numbers as bars, on the mean over seeds of the
# deterministic evaluation; each run at most 15 minutes here), and LunarLander (>= 200 in 4 of 5 seeds).
MUJOCO_BARS = {"HalfCheetah-v5": 1443, "Hopper-v5": 2383, "Walker2d-v5": 2288}


@pytest.mark.benchmark
@pytest.mark.parametrize("env_id", list(MUJOCO_BARS))
def test_ppo_mujoco_reaches_cleanrls_1m_numbers(env_id):
    rows = run_seeds("ppo.py", ["--env-id", env_id], bar=MUJOCO_BARS[env_id], seeds=(1, 2, 3), timeout=1200)
    assert np.mean([r["mean"] for r in rows]) >= MUJOCO_BARS[env_id]
    assert all(r["steps"] <= 1_000_000 and r["train_s"] <= 900 for r in rows)


@pytest.mark.benchmark
@pytest.mark.parametrize("env_id", ["LunarLander-v3", "LunarLanderContinuous-v3"])
def test_ppo_lands_the_lunar_lander(env_id):
    rows = run_seeds("ppo.py", ["--env-id", env_id], bar=200, seeds=(1, 2, 3, 4, 5))
    assert sum(r["mean"] >= 200 for r in rows) >= 4
    assert all(r["steps"] <= 1_000_000 for r in rows)


# Issue 21: images. MinAtar's grids are channel-last booleans (10, 10, C); the torso is Young & Tian's network.
MINATAR_BREAKOUT = gym.spaces.Box(0.0, 1.0, (10, 10, 4), bool)  # as minatar.gym declares it


def test_image_torso_shapes_and_channel_order():
    """Both heads come out of one torso with the right shapes, and the torso reads the grid channel-last:
    a 3x3 filter that picks the centre cell of channel 2 must light up exactly where that channel's one
    true cell is (row 3, column 6 -> 8x8 map position (2, 5)); a transposed or mixed-up layout moves it."""
    agent = ppo.Agent(MINATAR_BREAKOUT, gym.spaces.Discrete(3), (128,))
    obs = torch.zeros(5, 10, 10, 4, dtype=torch.bool)
    obs[0, 3, 6, 2] = True
    logits, value = agent.heads(obs.float())
    assert logits.shape == (5, 3) and value.shape == (5,)
    _, logprob, entropy, value2 = agent(obs.float())
    assert logprob.shape == entropy.shape == (5,) and torch.equal(value, value2)
    conv = agent.torso[0]
    assert conv.in_channels == 4 and conv.out_channels == 16 and conv.kernel_size == (3, 3)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[0, 2, 1, 1] = 1.0  # output channel 0 = input channel 2 at the window's centre
    features = agent.torso[:3](obs.float().permute(0, 3, 1, 2))  # conv, ReLU, flatten
    fmap = features[0].view(16, 8, 8)[0]
    assert fmap[2, 5] == 1.0 and fmap.sum() == 1.0
    # and heads() feeds the torso the same permutation: the same grid gives the same features
    seen = []
    agent.torso[2].register_forward_hook(lambda m, i, o: seen.append(o))
    agent.heads(obs.float())
    torch.testing.assert_close(seen[0], features)


def test_minatar_preset_runs_and_its_checkpoint_evaluates_alike(tmp_path, monkeypatch):
    """A short run of the MinAtar Breakout preset: the bool grids go through the float32 rollout storage,
    the shared torso trains, the checkpoint keeps the episode cut, and --eval-checkpoint rebuilds the same
    agent (same logits and values on random grids: an untrained agent often scores 0 here as well)."""
    monkeypatch.chdir(tmp_path)
    evaluated_agents, real_evaluate = [], ppo.evaluate
    monkeypatch.setattr(ppo, "evaluate",
                        lambda a, *r: evaluated_agents.append(copy.deepcopy(a)) or real_evaluate(a, *r))
    args = dataclasses.replace(ppo.preset("MinAtar/Breakout-v1"), total_timesteps=2048, num_steps=64,
                               eval_episodes=3, log_interval=10**9, save_model=True, seed=3)
    trained = ppo.main(args)
    assert trained["global_step"] == 2048 and np.isfinite(trained["losses/value_loss"])
    [ckpt] = list((tmp_path / "runs").glob("*/ppo.pt"))
    assert ckpt.parent.name.startswith("MinAtar_Breakout-v1__"), "the run folder must not nest at the slash"
    assert ppo.load_checkpoint(str(ckpt), "x")["max_episode_steps"] == 100_000
    evaluated = ppo.main(ppo.Args(seed=3, eval_checkpoint=str(ckpt), eval_episodes=3))
    assert evaluated["eval/mean_return"] == trained["eval/mean_return"]
    grids = (torch.rand(16, 10, 10, 4, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    trained_agent, loaded_agent = evaluated_agents
    for a, b in zip(loaded_agent.heads(grids), trained_agent.heads(grids)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    fresh = ppo.Agent(MINATAR_BREAKOUT, gym.spaces.Discrete(3), (128,))
    assert not torch.allclose(fresh.heads(grids)[1], trained_agent.heads(grids)[1]), "the check must be able to fail"


def test_max_episode_steps_cuts_training_evaluation_and_the_checkpoints_episodes(tmp_path, monkeypatch):
    """CartPole cut at 5 steps: every training and evaluation episode returns at most 5 (uncut, the
    same short run's deterministic episodes last longer), and the checkpoint's evaluation cuts them too."""
    monkeypatch.chdir(tmp_path)
    short = dict(seed=2, total_timesteps=2048, eval_episodes=5, log_interval=10**9)
    assert ppo.main(cartpole(**short))["eval/mean_return"] > 5
    cut = ppo.main(cartpole(max_episode_steps=5, save_model=True, **short))
    assert cut["charts/last100_return"] <= 5 and cut["eval/mean_return"] <= 5
    [ckpt] = list((tmp_path / "runs").glob("*/ppo.pt"))
    assert ppo.main(ppo.Args(eval_checkpoint=str(ckpt), eval_episodes=5))["eval/mean_return"] <= 5


def test_capture_video_films_a_minatar_grid(tmp_path):
    """MinAtar renders 10x10 float pictures: the GIF gets 8-bit frames of 160x160 pixels."""
    import imageio.v3 as iio

    ppo.make_envs("MinAtar/Breakout-v1", 1)  # registers the MinAtar ids, as main() does first
    path = tmp_path / "episode.gif"
    ppo.capture_video(ppo.Agent(MINATAR_BREAKOUT, gym.spaces.Discrete(3), (16,)), "MinAtar/Breakout-v1", 0,
                      torch.device("cpu"), str(path), max_episode_steps=40)
    frames = iio.imread(path)
    assert frames.dtype == np.uint8 and frames.shape[1:] == (160, 160, 3) and 1 <= len(frames) <= 21
    assert frames.max() > 0


def test_max_episode_steps_truncates():
    envs = ppo.make_envs("CartPole-v1", 1, 7)
    envs.reset(seed=0)
    for t in range(7):  # CartPole pushed alternately stays up for 7 steps
        _, _, terminated, truncated, _ = envs.step(np.array([t % 2]))
    assert not terminated[0] and truncated[0]


def test_underscore_env_id_picks_its_preset_too(monkeypatch):
    """tyro takes --env_id as well as --env-id: both spellings must bring the env's preset."""
    monkeypatch.setattr(sys, "argv", ["ppo.py", "--env_id", "Pendulum-v1"])
    assert ppo.parse_args() == ppo.PRESETS["Pendulum-v1"]
    monkeypatch.setattr(sys, "argv", ["ppo.py", "--env_id=Acrobot-v1"])
    assert ppo.parse_args() == ppo.PRESETS["Acrobot-v1"]


@pytest.mark.parametrize("env_id", ["Hopper-v3", "NoSuchEnv-v0"])
def test_outdated_or_unknown_env_id_is_one_sentence(env_id):
    """Hopper-v3 is still registered but raises ImportError (in preset() too); an unknown id was two lines."""
    assert ppo.preset(env_id) == ppo.Args(env_id=env_id)
    with pytest.raises(SystemExit) as refused:
        ppo.make_envs(env_id, 1)
    message = str(refused.value)
    assert message.startswith(f"--env-id {env_id}: ") and "pprint_registry" in message and "\n" not in message


def test_filming_a_checkpoint_keeps_the_films_beside_it(tmp_path, monkeypatch, capsys):
    """--eval-checkpoint --capture-video numbers its film past the run's episode.gif, which it used to overwrite."""
    monkeypatch.chdir(tmp_path)
    ppo.main(cartpole(save_model=True, **TINY))
    [ckpt] = tmp_path.glob("runs/*/ppo.pt")
    (ckpt.parent / "episode.gif").write_bytes(b"the training run's film")
    for n in (2, 3):
        ppo.main(ppo.Args(eval_checkpoint=str(ckpt), eval_episodes=1, capture_video=True))
        assert f"): {ckpt.parent / f'episode_{n}.gif'}\n" in capsys.readouterr().out
    assert (ckpt.parent / "episode.gif").read_bytes() == b"the training run's film"
