"""ppo.py: GAE, the clipped loss, the Gaussian, normalisation, autoreset handling, checkpoints,
errors, learning; the 5-seed benchmarks sit behind the `benchmark` marker."""

import dataclasses
import re
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import ALGOS, load_script, run, run_seeds

ppo = load_script("ppo")


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
    agent = ppo.Agent(4, gym.spaces.Box(-2.0, 2.0, (3,)), (16,))
    with torch.no_grad():
        agent.log_std.copy_(torch.tensor([-1.0, 0.0, 0.7]))
    x, actions = torch.randn(5, 4), torch.randn(5, 3) * 2
    _, logprob, entropy, _ = agent(x, actions)
    mean, log_std = agent.actor(x), agent.log_std
    by_hand = (-(actions - mean) ** 2 / (2 * log_std.exp() ** 2) - log_std - 0.5 * np.log(2 * np.pi)).sum(-1)
    torch.testing.assert_close(logprob, by_hand)
    torch.testing.assert_close(entropy, (0.5 + 0.5 * np.log(2 * np.pi) + log_std).sum().expand(5))


def test_agent_log_probs_match_its_samples():
    """Sampling (no actions given) and the update's pass agree on log pi(a|s) for both heads
    (the ratio starts at exactly 1)."""
    torch.manual_seed(0)
    for space in (gym.spaces.Discrete(3), gym.spaces.Box(-2.0, 2.0, (2,))):
        agent = ppo.Agent(4, space, (16,), log_std_init=-0.5)
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


def test_torchrun_two_ranks_share_normalisation_statistics(tmp_path):
    """Under torchrun the running statistics are summed over the ranks (all_reduce) and the
    environments split between them; rank 0's checkpoint then evaluates like its final eval."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ALGOS / "ppo.py"), "--env-id", "Pendulum-v1", "--total-timesteps", "2048", "--num-envs", "4",
           "--num-steps", "256", "--num-minibatches", "4", "--update-epochs", "2", "--normalize-obs",
           "--eval-episodes", "2", "--save-model"]
    proc = run(cmd, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 rank(s) x 2 env(s)" in proc.stdout
    [path] = list((tmp_path / "runs").glob("*/ppo.pt"))
    ckpt = ppo.load_checkpoint(str(path), "--eval-checkpoint")
    assert not torch.equal(ckpt["agent"]["obs_std"], torch.ones(3))
    trained = float(re.search(r"deterministic eval: (-?[\d.]+)", proc.stdout).group(1))
    proc = run([sys.executable, str(ALGOS / "ppo.py"), "--eval-checkpoint", str(path), "--eval-episodes", "2"],
               cwd=tmp_path, timeout=120)
    assert proc.returncode == 0 and f"{trained:.2f} +-" in proc.stdout, proc.stdout


@pytest.mark.parametrize("args, message", [
    (["--env-id", "NoSuchEnv-v0"], "pprint_registry"),
    (["--env-id", "Blackjack-v1"], "flat Box observation"),
    (["--num-envs", "4", "--num-steps", "8", "--num-minibatches", "32"], "--num-minibatches 32 must lie"),
    (["--total-timesteps", "100"], "less than one rollout"),
    (["--gae-lambda", "1.5"], "--gae-lambda 1.5 is not allowed: it must be at least 0 and at most 1."),
    (["--log-interval", "0"], "--log-interval 0 is not allowed"),
    (["--log-std-init", "nan"], "--log-std-init nan is not allowed"),
    (["--num-threads", "0"], "--num-threads 0 is not allowed"),
    (["--total-timesteps", "0"], "--total-timesteps 0 is not allowed"),
    (["--eval-checkpoint", "missing.pt"], "cannot read it"),
    (["--eval-checkpoint", "corrupt.pt"], "its sha256 does not match"),
])
def test_bad_input_gets_one_clear_sentence(args, message, tmp_path):
    (tmp_path / "corrupt.pt").write_bytes(b"this is not a checkpoint")
    proc = run([sys.executable, str(ALGOS / "ppo.py"), *args], cwd=tmp_path, timeout=120)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_envs_must_divide_among_ranks_and_a_checkpoint_must_be_ppos(tmp_path):
    with pytest.raises(SystemExit, match="--num-envs 3 does not divide among the 2 ranks"):
        ppo.validate(cartpole(num_envs=3), world_size=2)
    path = str(tmp_path / "dqn.pt")
    ppo.save_checkpoint(path, {"algo": "dqn"})
    with pytest.raises(SystemExit, match="is a dqn.py checkpoint, not ppo.py's"):
        ppo.load_checkpoint(path, "--eval-checkpoint")


def test_learns_cartpole_quickly(tmp_path, monkeypatch):
    """Fails if learning breaks: a random policy scores about 22. The default run (100k steps,
    about 10 s idle): shorter runs anneal the step size sooner and end anywhere from 125 to 500."""
    monkeypatch.chdir(tmp_path)
    metrics = ppo.main(cartpole(seed=1, eval_episodes=20))
    assert metrics["eval/mean_return"] >= 475, metrics


# ---- benchmarks: python -m pytest tests/test_ppo.py -m benchmark -s -------------------------


@pytest.mark.benchmark
def test_ppo_solves_cartpole_fast():
    rows = run_seeds("ppo.py", ["--env-id", "CartPole-v1"])
    assert all(r["mean"] == 500.0 for r in rows), "deterministic eval 500 in 5 of 5 seeds"
    assert all(r["steps"] <= 100_000 for r in rows)
    # A CleanRL-style PPO loop did about 8,000 SPS on this machine with one thread, idle.
    assert min(r["sps"] for r in rows) >= 8_000


@pytest.mark.benchmark
def test_ppo_solves_acrobot():
    rows = run_seeds("ppo.py", ["--env-id", "Acrobot-v1"])
    assert sum(r["mean"] >= -100 for r in rows) >= 4
    assert all(r["steps"] <= 200_000 for r in rows)


@pytest.mark.benchmark
def test_ppo_solves_pendulum():
    rows = run_seeds("ppo.py", ["--env-id", "Pendulum-v1"])
    assert sum(r["mean"] >= -200 for r in rows) >= 4
    assert all(r["steps"] <= 200_000 for r in rows)
