"""What the shared tests need to know about each script in algos/.

Every algos/*.py must have an entry: the shared tests fail for a script without one, so a new
script is covered the moment it lands. `tiny` are arguments for a run of a few seconds that
still exercises learning and logging; `metrics` are wandb keys its --track run must log, and (but for
`wandb_only` pictures) keys its runs/<run>/metrics.jsonl must hold; `too_big` are flags that make a network
with a tensor over 2**47 bytes, more than any address space, so an allocator refuses it at once even where
memory is overcommitted (None: the script has no network).
"""

import json
from pathlib import Path

TESTS = Path(__file__).resolve().parent

SCRIPTS = {
    "dqn.py": dict(
        tiny=["--env-id", "CartPole-v1", "--total-timesteps", "1200", "--learning-starts", "400",
              "--eval-episodes", "3", "--log-interval", "400"],
        save=["--save-model"], checkpoint="dqn.pt", reload=["--eval-checkpoint", "{ckpt}", "--eval-episodes", "3"],
        long=["--env-id", "CartPole-v1", "--total-timesteps", "10000000", "--log-interval", "500"],
        ready="step ", after_ctrl_c="evaluate", nonsense=["--learning-rate", "nan"],
        final=["--eval-episodes", "100000"],  # a final evaluation of minutes, to interrupt
        too_big=["--hidden-sizes", "10000000", "10000000"],
        metrics=["charts/episodic_return", "charts/episodic_length", "losses/td_loss",
                 "charts/epsilon", "charts/SPS", "eval/mean_return", "eval/std_return",
                 "eval/episodes", "global_step", "wall_time"],
    ),
    "reinforce.py": dict(
        tiny=["--env-id", "ShortCorridor-v0", "--total-timesteps", "2000", "--episodes-per-update", "4",
              "--eval-episodes", "20", "--log-interval", "500"],
        save=["--save-model"], checkpoint="reinforce.pt", reload=["--eval-checkpoint", "{ckpt}", "--eval-episodes", "3"],
        long=["--total-timesteps", "100000000", "--log-interval", "5000"],
        ready="step ", after_ctrl_c="evaluate", nonsense=["--log-interval", "0"],
        final=["--eval-episodes", "20000"],
        too_big=["--hidden-sizes", "10000000", "10000000"],
        metrics=["charts/episodic_return", "losses/policy_loss", "losses/value_loss", "losses/entropy",
                 "charts/SPS", "eval/mean_return", "eval/std_return", "eval/episodes", "eval/prob_right",
                 "global_step", "wall_time"],
    ),
    "dyna_q.py": dict(
        tiny=["--env-id", "DynaMaze-v0", "--num-runs", "4", "--num-episodes", "5",
              "--planning-steps", "0", "5", "--eval-episodes", "2"],
        save=["--save-model"], checkpoint="q_tables.npz", reload=None,  # tables and figures: nothing reloads them
        long=["--num-runs", "100000"], ready="run(s) on this rank", after_ctrl_c="nothing to keep",
        nonsense=["--kappa", "nan"],
        final=None,  # each run is evaluated inside the loop that Ctrl-C stops
        too_big=None,  # tables of states x actions, no network
        metrics=["eval/steps_per_episode/Dyna-Q n=0", "eval/steps_per_episode/Dyna-Q n=5", "episode",
                 "eval/mean_return/Dyna-Q n=5", "eval/std_return/Dyna-Q n=5",
                 "eval/mean_length/Dyna-Q n=5", "eval/episodes", "eval/runs", "charts/SPS",
                 "global_step", "wall_time"],
    ),
    "seq2seq_attention.py": dict(
        tiny=["--num-iterations", "20", "--eval-interval", "10", "--num-train", "2000", "--num-heldout", "40",
              "--beam-size", "3"],
        save=["--save-model"], checkpoint="seq2seq_attention.pt", reload=["--eval-checkpoint", "{ckpt}", "--beam-size", "3"],
        long=["--num-iterations", "1000000", "--eval-interval", "5", "--num-train", "2000", "--num-heldout", "40",
              "--beam-size", "3"],
        ready="iter ", after_ctrl_c="resume", nonsense=["--length-penalty", "nan"],
        final=["--num-heldout", "200", "--beam-size", "50"],
        too_big=["--hidden-size", "10000000"],
        metrics=["train/loss", "train/lr", "val/loss", "val/exact_match", "eval/exact_match", "eval/bleu",
                 "eval/exact_match_beam", "eval/bleu_beam", "eval/attention/_type", "iter", "wall_time",
                 "ms_per_iter"],
        wandb_only=["eval/attention/_type"],  # the heat map: a picture, not a number for metrics.jsonl
    ),
    "transformer.py": dict(
        tiny=["--num-iterations", "20", "--warmup-steps", "5", "--eval-interval", "10", "--num-train", "2000",
              "--num-heldout", "40", "--d-model", "32", "--d-ff", "64", "--beam-size", "3"],
        save=["--save-model"], checkpoint="transformer.pt", reload=["--eval-checkpoint", "{ckpt}", "--beam-size", "3"],
        long=["--num-iterations", "1000000", "--eval-interval", "5", "--num-train", "2000", "--num-heldout", "40",
              "--d-model", "32", "--d-ff", "64", "--beam-size", "3"],
        ready="iter ", after_ctrl_c="resume", nonsense=["--label-smoothing", "nan"],
        final=["--num-heldout", "200", "--beam-size", "50"],
        too_big=["--d-model", "8000000"],
        metrics=["train/loss", "train/lr", "val/loss", "val/exact_match", "eval/exact_match", "eval/bleu",
                 "eval/exact_match_beam", "eval/bleu_beam", "eval/attention/_type", "iter", "wall_time",
                 "ms_per_iter"],
        wandb_only=["eval/attention/_type"],  # the heat maps: a picture, not a number for metrics.jsonl
    ),
    "gpt.py": dict(
        # The shared tests run in an empty folder without network: a 16 KB dataset committed
        # under tests/fixtures (how it was made: its README) stands in for data/shakespeare_char.
        tiny=["--data-dir", str(TESTS / "fixtures" / "shakespeare_char_tiny"),
              "--max-iters", "30", "--eval-interval", "15", "--eval-iters", "2", "--log-interval", "10",
              "--n-layer", "2", "--n-embd", "64", "--block-size", "32", "--batch-size", "4", "--grad-accum", "2"],
        save=[], checkpoint="ckpt.pt",  # tiny saves already: saving is on by default
        reload=["--eval-checkpoint", "{ckpt}", "--data-dir", str(TESTS / "fixtures" / "shakespeare_char_tiny"),
                "--max-new-tokens", "20"],
        long=["--data-dir", str(TESTS / "fixtures" / "shakespeare_char_tiny"), "--max-iters", "1000000",
              "--eval-iters", "2", "--log-interval", "10", "--n-layer", "2", "--n-embd", "64", "--block-size", "32",
              "--batch-size", "4"],
        ready="iter ", after_ctrl_c="resume", nonsense=["--n-head", "0"],
        final=None,  # the last evaluation is the training loop's last step, under its Ctrl-C rule
        too_big=["--n-embd", "8000000", "--n-layer", "1", "--n-head", "1", "--n-kv-head", "1"],
        metrics=["val/loss", "train/loss", "train/batch_loss", "train/lr", "iter", "wall_time",
                 "ms_per_iter", "tokens_per_s"],
    ),
    "bpe.py": dict(
        # The corpus is bpe.py's own source in the repo (an absolute path), there wherever tests run.
        tiny=["--input", str(TESTS.parent / "algos" / "bpe.py"), "--vocab-size", "400",
              "--log-interval", "50", "--show", "Hello world"],
        save=[], checkpoint="tokenizer.bpe",  # tiny saves already: saving is on by default
        reload=["--eval-checkpoint", "{ckpt}", "--input", str(TESTS.parent / "algos" / "bpe.py"), "--no-save-model"],
        long=["--input", str(TESTS.parent / "algos"), "--trainer", "naive", "--vocab-size", "100000",
              "--log-interval", "20"],
        ready="merges/s", after_ctrl_c="nothing to keep", nonsense=["--vocab-size", "100"],
        final=None,  # seconds of encoding after training, no Ctrl-C handling (see bpe.py's guard)
        too_big=None,  # a table of merges, no network
        metrics=["train/seconds", "train/vocab_size", "train/merges", "train/merges_per_s",
                 "encode/mb_per_s", "compression_ratio"],
    ),
    "ppo.py": dict(
        tiny=["--env-id", "CartPole-v1", "--total-timesteps", "1024", "--num-envs", "4", "--num-steps", "64",
              "--num-minibatches", "4", "--update-epochs", "2", "--eval-episodes", "3", "--log-interval", "256"],
        save=["--save-model"], checkpoint="ppo.pt", reload=["--eval-checkpoint", "{ckpt}", "--eval-episodes", "3"],
        long=["--env-id", "CartPole-v1", "--total-timesteps", "5000000", "--log-interval", "4096"],
        ready="step ", after_ctrl_c="evaluate", nonsense=["--log-interval", "0"],
        final=["--eval-episodes", "20000"],
        too_big=["--hidden-sizes", "10000000", "10000000"],
        metrics=["charts/episodic_return", "charts/episodic_length", "losses/policy_loss", "losses/value_loss",
                 "losses/entropy", "losses/approx_kl", "losses/clipfrac", "losses/explained_variance",
                 "charts/learning_rate", "charts/SPS", "eval/mean_return", "eval/std_return", "eval/episodes",
                 "global_step", "wall_time"],
    ),
    "levin_ts.py": dict(
        tiny=["--train-levels", "40", "--test-levels", "16", "--num-boxes", "2", "--difficulty", "3",
              "--budget", "200", "--eval-budget", "500", "--max-sweeps", "2", "--sweep-levels", "40",
              "--train-steps", "10", "--batch-size", "32", "--batch-levels", "16"],
        save=[], checkpoint="levin_ts.pt",  # tiny saves already: saving is on by default
        reload=["--eval-checkpoint", "{ckpt}", "--eval-budget", "500"],
        long=["--train-levels", "300", "--test-levels", "4", "--budget", "50", "--max-budget", "50",
              "--sweep-levels", "64", "--train-steps", "20", "--batch-size", "32", "--batch-levels", "32",
              "--eval-budget", "50"],
        ready="sweep ", after_ctrl_c="resume", nonsense=["--train-minutes", "nan"],
        final=["--test-levels", "40", "--eval-budget", "200000"],
        too_big=["--channels", "4000000"],
        metrics=["eval/solved", "eval/levels", "eval/mean_expansions", "eval/bound_violations",
                 "charts/expansions_per_s", "losses/policy_loss", "charts/budget", "charts/solved_sweep",
                 "charts/solved_total", "sweep", "wall_time"],
    ),
}


def check_metrics_jsonl(script: str, folder: Path) -> None:
    """Issue 22: every run leaves folder/metrics.jsonl, a header (algo, config; the tests run seed 1)
    and rows with the keys the script logs to wandb (but its `wandb_only` pictures)."""
    header, *rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert header["algo"] == script.removesuffix(".py") and header["config"]["seed"] == 1, header
    logged = {key for row in rows for key in row}
    spec = SCRIPTS[script]
    missing = set(spec["metrics"]) - set(spec.get("wandb_only", ())) - logged
    assert not missing, f"{script}'s metrics.jsonl lacks {sorted(missing)}; it has {sorted(logged)}"
