"""gpt.py: RoPE, grouped-query attention, the KV cache, causality, learning, resume, bad input,
the data scripts; and (marker `benchmark`) the race against nanoGPT's CPU baby run."""

import copy
import json
import math
import os
import re
import shutil
import shlex
import signal
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ALGOS, ROOT, SHARED_DATA, load_script, no_data, run, script_env

gpt = load_script("gpt")
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "shakespeare_char_tiny"
TINY = dict(data_dir=str(FIXTURE), n_layer=2, n_head=4, n_kv_head=2, n_embd=32, block_size=16, batch_size=4,
            eval_iters=2, log_interval=1, warmup_iters=2)
POS_ENCODINGS = ("rope", "sinusoidal", "learned")


def tiny_model(vocab=23, **kw) -> "gpt.GPT":
    torch.manual_seed(0)
    args = gpt.Args(**{**dict(n_layer=2, n_head=4, n_kv_head=2, n_embd=32, block_size=16), **kw})
    return gpt.GPT(args, vocab).eval()


def test_rope_scores_depend_only_on_the_offset():
    head_dim = 16
    freqs = gpt.rope_frequencies(head_dim, 200, 10000.0)
    torch.manual_seed(0)
    q, k = torch.randn(head_dim), torch.randn(head_dim)

    def score(m, n):  # <R_m q, R_n k>
        qm = gpt.apply_rope(q.view(1, 1, 1, -1), freqs[m:m + 1]).flatten()
        kn = gpt.apply_rope(k.view(1, 1, 1, -1), freqs[n:n + 1]).flatten()
        return torch.dot(qm, kn).item()

    for m, n in [(0, 0), (3, 10), (10, 3), (0, 57)]:
        for shift in (1, 17, 120):
            assert score(m + shift, n + shift) == pytest.approx(score(m, n), abs=1e-4)
    # ... and on the offset it does depend; a rotation keeps the norm.
    assert abs(score(0, 1) - score(0, 40)) > 1e-2
    rotated = gpt.apply_rope(q.view(1, 1, 1, -1), freqs[77:78]).flatten()
    assert rotated.norm().item() == pytest.approx(q.norm().item(), rel=1e-5)


def reference_attention(x, attn, n_head, n_kv_head):
    """Textbook multi-head attention from the layer's weights: each query head h uses key/value
    head h // (n_head / n_kv_head); explicit softmax with a -inf causal mask."""
    B, T, C = x.shape
    hd = C // n_head
    wq, wk, wv = attn.qkv.weight.split([n_head * hd, n_kv_head * hd, n_kv_head * hd])
    heads = []
    for h in range(n_head):
        g = h // (n_head // n_kv_head)
        q = x @ wq[h * hd:(h + 1) * hd].T
        k, v = x @ wk[g * hd:(g + 1) * hd].T, x @ wv[g * hd:(g + 1) * hd].T
        scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
        scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        heads.append(scores.softmax(-1) @ v)
    return torch.cat(heads, dim=-1) @ attn.proj.weight.T


@pytest.mark.parametrize("n_kv_head", [4, 2, 1])
def test_attention_equals_plain_multi_head_attention(n_kv_head):
    torch.manual_seed(0)
    args = gpt.Args(n_head=4, n_kv_head=n_kv_head, n_embd=32, pos_encoding="learned")
    attn = gpt.CausalSelfAttention(args, layer=0)
    x = torch.randn(3, 10, 32)
    with torch.no_grad():
        torch.testing.assert_close(attn(x, None), reference_attention(x, attn, 4, n_kv_head), atol=1e-5, rtol=1e-5)


def rotation_matrices(positions, head_dim: int, base: float) -> torch.Tensor:
    """R_m for each position m (len(positions), d_head, d_head): block-diagonal, the block of the
    pair (2j, 2j+1) the rotation [[cos a, -sin a], [sin a, cos a]] by a = m base^(-2j/d_head)
    (Su et al. 2021, eq. 15), built entry by entry, independently of gpt.rope_frequencies."""
    R = torch.zeros(len(positions), head_dim, head_dim, dtype=torch.float64)
    for i, m in enumerate(positions):
        for j in range(head_dim // 2):
            a = m * base ** (-2 * j / head_dim)
            R[i, 2 * j:2 * j + 2, 2 * j:2 * j + 2] = torch.tensor([[math.cos(a), -math.sin(a)],
                                                                   [math.sin(a), math.cos(a)]])
    return R.float()


def reference_rope_attention(x, attn, n_head, n_kv_head, positions, base):
    """reference_attention with the query and key of position m multiplied by R_m."""
    B, T, C = x.shape
    hd = C // n_head
    R = rotation_matrices(positions, hd, base)  # (T, hd, hd)
    wq, wk, wv = attn.qkv.weight.split([n_head * hd, n_kv_head * hd, n_kv_head * hd])
    heads = []
    for h in range(n_head):
        g = h // (n_head // n_kv_head)
        q = torch.einsum("tij,btj->bti", R, x @ wq[h * hd:(h + 1) * hd].T)
        k = torch.einsum("tij,btj->bti", R, x @ wk[g * hd:(g + 1) * hd].T)
        v = x @ wv[g * hd:(g + 1) * hd].T
        scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
        scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        heads.append(scores.softmax(-1) @ v)
    return torch.cat(heads, dim=-1) @ attn.proj.weight.T


@pytest.mark.parametrize("n_kv_head", [4, 2, 1])
def test_attention_with_rope_equals_explicit_rotation_matrices(n_kv_head):
    """The layer as the model calls it (RoPE on, positions 5..14 as after a 5-token prefix)
    against q_m = R_m W_q x_m, k_n = R_n W_k x_n with R built from cos and sin: catches a key
    rotated the other way or not at all, a wrong theta_j, and a query head paired with the wrong
    key/value group (issue 24: the learning test passed the first of these)."""
    torch.manual_seed(0)
    args = gpt.Args(n_head=4, n_kv_head=n_kv_head, n_embd=32, pos_encoding="rope")
    attn = gpt.CausalSelfAttention(args, layer=0)
    x = torch.randn(3, 10, 32)
    positions = range(5, 15)
    freqs = gpt.rope_frequencies(8, 64, args.rope_base)[5:15]
    with torch.no_grad():
        expected = reference_rope_attention(x, attn, 4, n_kv_head, positions, args.rope_base)
        torch.testing.assert_close(attn(x, freqs), expected, atol=1e-5, rtol=1e-5)
        # ... and the rotations matter here: without them the output is another one.
        assert not torch.allclose(attn(x, freqs), reference_attention(x, attn, 4, n_kv_head), atol=1e-3)


def test_attention_scores_depend_only_on_the_offset(monkeypatch):
    """Inside the layer: with the same input vector at every position, q_m = R_m q and k_n = R_n k,
    so the score q_m . k_n = q . R_(n-m) k of every head must depend on n - m only (a Toeplitz
    matrix), though not be constant; and the layer's output is the same at positions 0..15 as
    at 30..45 for any input (Su et al. 2021, eq. 16)."""
    seen = {}
    sdpa = gpt.F.scaled_dot_product_attention

    def spy(q, k, v, **kw):  # the queries and keys the layer hands to the attention kernel
        seen["q"], seen["k"] = q, k
        return sdpa(q, k, v, **kw)

    monkeypatch.setattr(gpt.F, "scaled_dot_product_attention", spy)
    torch.manual_seed(0)
    args = gpt.Args(n_head=4, n_kv_head=2, n_embd=32, pos_encoding="rope")
    attn = gpt.CausalSelfAttention(args, layer=0)
    freqs = gpt.rope_frequencies(8, 64, args.rope_base)
    T = 16
    with torch.no_grad():
        attn(torch.randn(32).expand(1, T, 32), freqs[:T])
        q, k = seen["q"][0], seen["k"][0].repeat_interleave(2, dim=0)  # (heads, T, d_head)
        scores = q @ k.transpose(-1, -2)  # (heads, m, n), before the mask
        for d in range(-T + 1, T):
            diagonal = scores.diagonal(offset=d, dim1=-2, dim2=-1)  # the entries with n - m = d
            torch.testing.assert_close(diagonal, diagonal[:, :1].expand_as(diagonal), atol=1e-4, rtol=1e-4)
        assert (scores[:, 0, 0] - scores[:, 0, 9]).abs().min() > 1e-3  # the offset does count
        x = torch.randn(2, T, 32)
        torch.testing.assert_close(attn(x, freqs[30:30 + T]), attn(x, freqs[:T]), atol=1e-5, rtol=1e-5)


def test_swiglu_is_w2_of_silu_w1x_times_w3x():
    torch.manual_seed(0)
    mlp = gpt.SwiGLU(32)
    x = torch.randn(2, 5, 32)
    w1, w3 = mlp.gate_up.weight.chunk(2)  # gate_up holds W1 then W3
    with torch.no_grad():
        expected = (torch.nn.functional.silu(x @ w1.T) * (x @ w3.T)) @ mlp.proj.weight.T
        torch.testing.assert_close(mlp(x), expected, atol=1e-6, rtol=1e-5)
    assert w1.shape == (96, 32)  # 8/3 d = 85.3, rounded up to a multiple of 32


def test_weight_decay_on_every_matrix_and_on_nothing_else():
    model = tiny_model()
    args = gpt.Args(weight_decay=0.1)
    groups = gpt.configure_optimizer(model, args, torch.device("cpu")).param_groups
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    params = list(model.parameters())  # the tied embedding once
    assert len(decay) == sum(len(g["params"]) for g in groups) == len(params)
    for name, p in model.named_parameters():
        assert decay[id(p)] == (0.1 if p.dim() == 2 else 0.0), name
    assert sum(p.dim() == 1 for p in params) == 2 * 2 + 1  # the norm gains: 2 per block and the final one


def num_parameters(args: "gpt.Args", vocab_size: int) -> int:
    """The closed form: embedding (tied with the head) + per layer [qkv, out proj, SwiGLU, 2 norm
    gains] + final norm + a learned position table. GQA shrinks k and v to n_kv_head heads."""
    d, hd = args.n_embd, args.n_embd // args.n_head
    hidden = 32 * math.ceil(8 * d / 3 / 32)
    attn = d * (args.n_head + 2 * args.n_kv_head) * hd + d * d
    per_layer = attn + 3 * d * hidden + 2 * d
    pos = args.block_size * d if args.pos_encoding == "learned" else 0
    return vocab_size * d + args.n_layer * per_layer + d + pos


def test_parameter_count_follows_the_formula():
    vocab, d, n_head, hd = 65, 128, 8, 16
    counts = {}
    for n_kv_head in (8, 4, 2, 1):
        for pos in POS_ENCODINGS:
            args = gpt.Args(n_layer=3, n_head=n_head, n_kv_head=n_kv_head, n_embd=d, pos_encoding=pos)
            n = sum(p.numel() for p in gpt.GPT(args, vocab).parameters())
            assert n == num_parameters(args, vocab), (n_kv_head, pos)
            counts[n_kv_head, pos] = n
    # Each kv head fewer saves its k and v projections, 2 d d_head per layer.
    for n_kv_head in (4, 2, 1):
        assert counts[8, "rope"] - counts[n_kv_head, "rope"] == 3 * 2 * d * hd * (8 - n_kv_head)
    assert counts[8, "learned"] - counts[8, "rope"] == 64 * d  # the learned table, block_size x d


@pytest.mark.parametrize("pos", POS_ENCODINGS)
def test_kv_cache_gives_the_logits_of_a_full_recompute(pos):
    model = tiny_model(pos_encoding=pos)
    idx = torch.randint(0, 23, (2, 16), generator=torch.Generator().manual_seed(1))
    cache = gpt.KVCache(2, 2, 2, 16, 8, "cpu", torch.float32)
    with torch.no_grad():
        full, _ = model(idx)
        prefill, _ = model(idx[:, :5], cache=cache)  # a prompt of 5 tokens, then one at a time
        torch.testing.assert_close(prefill, full[:, :5], atol=1e-5, rtol=1e-5)
        for t in range(5, 16):
            step, _ = model(idx[:, t:t + 1], cache=cache, start=t)
            torch.testing.assert_close(step[:, 0], full[:, t], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(step[:, 0], model(idx[:, :t + 1])[0][:, -1], atol=1e-5, rtol=1e-5)


def test_generation_with_and_without_cache_agree_past_the_block():
    model = tiny_model()
    prompt = torch.tensor([[1, 2, 3]])
    runs = [gpt.generate(model, prompt, 30, top_k=None, use_cache=c, generator=torch.Generator().manual_seed(7))
            for c in (True, False)]  # 33 tokens: the 16-token context fills twice
    assert runs[0].shape == (1, 33)
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("pos", POS_ENCODINGS)
def test_a_future_token_never_changes_an_earlier_logit(pos):
    model = tiny_model(pos_encoding=pos)
    idx = torch.randint(0, 23, (1, 16), generator=torch.Generator().manual_seed(2))
    for j in (0, 7, 15):
        changed = idx.clone()
        changed[0, j] = (idx[0, j] + 5) % 23
        with torch.no_grad():
            a, b = model(idx)[0], model(changed)[0]
        assert torch.equal(a[:, :j], b[:, :j]), f"a logit before position {j} changed"
        assert not torch.allclose(a[:, j], b[:, j])


def test_batches_pair_each_window_with_its_next_tokens():
    """get_batch: x is data[i:i+T] for a random start i, and y the same window one token later,
    so the model learns p(x_(t+1) | x_<=t); every start, up to len - T - 1, can be drawn."""
    data = torch.arange(100) * 7
    x, y = gpt.get_batch(data.numpy().astype(np.uint16), 2000, 8, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (2000, 8)
    starts = x[:, 0] // 7
    assert torch.equal(x, data[starts[:, None] + torch.arange(8)])
    assert torch.equal(y, data[starts[:, None] + torch.arange(1, 9)])
    assert set(starts.tolist()) == set(range(92))


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    args = gpt.Args(n_layer=2, n_head=4, n_kv_head=2, n_embd=64, block_size=16)
    model = gpt.GPT(args, 20)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = torch.randint(0, 20, (4, 16), generator=torch.Generator().manual_seed(3))
    y = torch.randint(0, 20, (4, 16), generator=torch.Generator().manual_seed(4))  # random: memorise it
    first = None
    for _ in range(150):
        _, loss = model(x, y)
        first = first or loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 2.5 and loss.item() < 0.1, (first, loss.item())


def test_sampling_restricts_to_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(2000, 1)
    g = torch.Generator().manual_seed(0)
    nucleus = gpt.sample_next(logits, 1.0, None, 0.7, g).flatten()  # 0.5 + 0.3 reaches 0.7
    assert set(nucleus.tolist()) == {0, 1}
    assert (nucleus == 0).float().mean().item() == pytest.approx(0.5 / 0.8, abs=0.04)
    assert set(gpt.sample_next(logits, 1.0, 3, None, g).flatten().tolist()) == {0, 1, 2}
    assert set(gpt.sample_next(logits, 1e-3, None, None, g).flatten().tolist()) == {0}  # near-greedy


def test_init_scales_the_residual_projections_by_one_over_sqrt_2_n_layer():
    """GPT-2's init: every matrix N(0, 0.02), except the two projections that write into the
    residual stream (attention's output and the MLP's down projection), N(0, 0.02 / sqrt(2 n_layer)),
    so that the residual stream's variance does not grow with depth."""
    torch.manual_seed(0)
    n_layer = 6
    model = gpt.GPT(gpt.Args(n_layer=n_layer, n_head=4, n_kv_head=2, n_embd=128, block_size=16), 50)
    matrices = {n: p for n, p in model.named_parameters() if p.dim() == 2}
    scaled = {n for n in matrices if n.endswith(("attn.proj.weight", "mlp.proj.weight"))}
    assert len(scaled) == 2 * n_layer
    for name, p in matrices.items():
        std = 0.02 / math.sqrt(2 * n_layer) if name in scaled else 0.02
        assert p.mean().item() == pytest.approx(0.0, abs=3 * std / math.sqrt(p.numel()) + 1e-9), name
        assert p.std().item() == pytest.approx(std, rel=0.05), name  # >= 6,400 samples: about 1% error


@pytest.mark.parametrize("grad_clip", [0.0, 0.05])
def test_each_step_applies_the_mean_gradient_of_its_micro_batches_clipped(grad_clip, tmp_path, monkeypatch):
    """main() with --grad-accum 3: the gradient the optimizer applies at each step is the gradient
    of the mean loss over that step's 3 micro-batches (each micro-step's loss divided by 3), and,
    with --grad-clip c, that gradient scaled to a global norm of c where its norm exceeds c
    (clip_grad_norm_); --grad-clip 0 applies it as it is. Checked against a copy of the model
    taken just before each step, on the very batches main() drew."""
    batches, steps = [], []
    real_get_batch, real_configure = gpt.get_batch, gpt.configure_optimizer

    def get_batch(*a, **kw):
        batches.append(real_get_batch(*a, **kw))
        return batches[-1]

    def configure_optimizer(model, *a, **kw):
        optimizer = real_configure(model, *a, **kw)

        def before_step(*_):  # the micro-steps come right after the evaluation: the last 3 batches are theirs
            grads = {n: p.grad.clone() for n, p in model.named_parameters()}
            steps.append((copy.deepcopy(model), grads, batches[-3:]))
        optimizer.register_step_pre_hook(before_step)
        return optimizer

    monkeypatch.setattr(gpt, "get_batch", get_batch)
    monkeypatch.setattr(gpt, "configure_optimizer", configure_optimizer)
    main_tiny(tmp_path, monkeypatch, max_iters=3, grad_accum=3, grad_clip=grad_clip, eval_interval=3)
    assert len(steps) == 3
    for model, applied, micro in steps:
        model.zero_grad(set_to_none=True)
        loss = sum(model(x, y)[1] for x, y in micro) / len(micro)
        loss.backward()
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])).item()
        scale = min(1.0, grad_clip / (norm + 1e-6)) if grad_clip > 0 else 1.0
        if grad_clip > 0:
            assert norm > 2 * grad_clip, "the test needs gradients that the clip shrinks"
        for name, p in model.named_parameters():
            torch.testing.assert_close(applied[name], scale * p.grad, rtol=1e-4, atol=1e-7, msg=name)


def test_learning_rate_schedule():
    args = gpt.Args(learning_rate=1e-3, min_lr=1e-4, warmup_iters=10, max_iters=110)
    lrs = [gpt.learning_rate(it, args) for it in range(111)]
    assert lrs[9] == pytest.approx(1e-3) and lrs[0] == pytest.approx(1e-4)
    assert lrs[60] == pytest.approx(0.55e-3)  # half way down the cosine
    assert lrs[110] == pytest.approx(1e-4) and all(a >= b for a, b in zip(lrs[9:], lrs[10:]))


def test_exact_val_loss_is_the_mean_over_every_block_of_the_split():
    """The number a run reports at its end: each non-overlapping block of T tokens of val.bin
    predicts the T tokens one step later, every prediction weighted alike (1600 tokens: 99
    blocks of 16, so the batches of 4 x batch_size are not all full)."""
    data, meta = gpt.load_dataset(str(FIXTURE), 16)
    model = tiny_model(vocab=meta["vocab_size"])
    args = gpt.Args(block_size=16, batch_size=4, eval_iters=2)
    val = torch.from_numpy(data["val"].astype(np.int64))
    with torch.no_grad():
        logits = torch.cat([model(val[i:i + 16][None])[0] for i in range(0, 99 * 16, 16)])
        log_p = logits.log_softmax(-1).gather(-1, val[1:99 * 16 + 1].view(99, 16, 1))
        out = gpt.estimate_loss(model, data, args, nullcontext(), torch.device("cpu"), exact_val=True)
    assert out["val/loss"] == pytest.approx(-log_p.mean().item(), rel=1e-5)
    assert out["val/loss"] == pytest.approx(math.log(meta["vocab_size"]), abs=0.1)  # the untrained model


def main_tiny(tmp_path, monkeypatch, **kw) -> dict:
    monkeypatch.chdir(tmp_path)
    return gpt.main(gpt.Args(**{**TINY, **kw}))


def only_ckpt(tmp_path, exp_name) -> str:
    [path] = tmp_path.glob(f"runs/*__{exp_name}__*/ckpt.pt")
    return str(path)


def test_resume_continues_the_uninterrupted_run(tmp_path, monkeypatch, capsys):
    """Stop after 6 of 12 steps, resume: the same losses and, bit for bit, the same weights and
    optimizer state as a run that was never interrupted (dropout on, so the RNG state counts)."""
    common = dict(dropout=0.1, lr_decay_iters=12, eval_interval=6)
    main_tiny(tmp_path, monkeypatch, exp_name="whole", max_iters=12, **common)
    whole_log = capsys.readouterr().out
    main_tiny(tmp_path, monkeypatch, exp_name="half", max_iters=6, **common)
    capsys.readouterr()
    half = Path(only_ckpt(tmp_path, "half"))
    snapshot = half.with_name("snapshot.pt")  # a resumed run saves to the file it resumed, not to ckpt.pt beside it
    shutil.move(half, snapshot)
    resumed = main_tiny(tmp_path, monkeypatch, exp_name="half", max_iters=12, resume=str(snapshot), **common)
    assert not half.exists()
    shutil.move(snapshot, half)
    resumed_log = capsys.readouterr().out
    losses = lambda log: re.findall(r"iter (\d+): loss ([\d.]+)", log)
    assert losses(resumed_log) == losses(whole_log)[6:] and len(losses(resumed_log)) == 6
    a, b = (gpt.load_checkpoint(only_ckpt(tmp_path, name), "--resume") for name in ("whole", "half"))
    assert a["iter"] == b["iter"] == 12 and resumed["iter"] == 12
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_eval_checkpoint_continues_the_prompt_and_repeats_the_final_val_loss(tmp_path, monkeypatch, capsys):
    trained = main_tiny(tmp_path, monkeypatch, max_iters=20, eval_interval=20)
    out = gpt.main(gpt.Args(eval_checkpoint=only_ckpt(tmp_path, "gpt"), prompt="First", num_samples=2,
                            max_new_tokens=40, top_p=0.9))  # no dataset in tmp_path: samples only
    assert len(out["samples"]) == 2 and "val/loss" not in out
    assert all(s.startswith("First") and len(s) == 45 for s in out["samples"])
    assert "First" in capsys.readouterr().out
    out = gpt.main(gpt.Args(eval_checkpoint=only_ckpt(tmp_path, "gpt"), data_dir=TINY["data_dir"], max_new_tokens=5))
    assert out["val/loss"] == trained["val/loss"] and out["train/loss"] == trained["train/loss"]
    # The same number of characters, two of them swapped: other ids, refused (the sizes alone agreed).
    shuffled = tmp_path / "swapped"
    shutil.copytree(TINY["data_dir"], shuffled)
    meta = json.loads((shuffled / "meta.json").read_text())
    meta["itos"][1], meta["itos"][2] = meta["itos"][2], meta["itos"][1]
    (shuffled / "meta.json").write_text(json.dumps(meta))
    for flag in ("eval_checkpoint", "resume"):
        with pytest.raises(SystemExit, match=r"does not fit --data-dir .*d \(char with 58 tokens in both, but other"):
            gpt.main(gpt.Args(**{**TINY, flag: only_ckpt(tmp_path, "gpt"), "data_dir": str(shuffled), "max_iters": 30}))


def test_bad_input_gives_one_clear_sentence(tmp_path, monkeypatch):
    cases = [
        (dict(n_embd=30, n_head=4), "--n-embd 30 is not divisible by --n-head 4"),
        (dict(n_head=6, n_kv_head=4, n_embd=48), "--n-head 6 is not a multiple of --n-kv-head 4"),
        (dict(data_dir=str(tmp_path / "nothing")), "prepare it first (the repository's data/shakespeare_char"),
        (dict(n_head=0), "--n-head 0 is not allowed: it must be at least 1."),
        (dict(rope_base=0.0), "--rope-base 0.0 is not allowed: it must be above 1."),
        (dict(weight_decay=math.nan), "--weight-decay nan is not allowed"),
        (dict(block_size=100_000), "has 14400 tokens, too few for --block-size 100000"),
        (dict(block_size=1000, batch_size=10**6), "GiB of activations, more than the"),
        (dict(resume="nowhere.pt"), "--resume nowhere.pt: cannot read it"),
        (dict(eval_checkpoint=str(FIXTURE / "train.bin")), "is damaged or is not a checkpoint"),
        (dict(eval_checkpoint="any.pt", track=True), "only samples and evaluates, it logs nothing: drop --track"),
        # training ignored these: now refused, and none of these refusals leaves a run folder (below)
        (dict(top_k=5), "--top-k: sampling flags, read only with --eval-checkpoint; drop them to train"),
        (dict(prompt="ROMEO:", max_new_tokens=9), "--prompt, --max-new-tokens: sampling flags"),
        (dict(learning_rate=1e-5), "--learning-rate 1e-05 is below --min-lr 0.0001, where the cosine decay ends"),
        (dict(dropout=1.0), "--dropout 1.0 is not allowed: it must be at least 0 and at most 0.99."),
        (dict(n_embd=262144, n_head=1, n_kv_head=1, block_size=8, batch_size=1, n_layer=1),
         "--n-embd 262144 with --n-layer 1 makes 824,666,488,832 parameters, about 12288 GiB with their gradients"),
    ]
    for flag in ("eval_checkpoint", "resume"):  # a run folder instead of the file in it
        cases.append(({flag: str(tmp_path)}, f": give the checkpoint file in it, {tmp_path / 'ckpt.pt'}."))
    cut = tmp_path / "cut"  # a token file cut in the middle of an id
    shutil.copytree(FIXTURE, cut)
    (cut / "val.bin").write_bytes((FIXTURE / "val.bin").read_bytes()[:-1])
    cases.append((dict(data_dir=str(cut)), "val.bin has an odd number of bytes, so it is not uint16 ids"))
    for kw, message in cases:
        with pytest.raises(SystemExit, match=re.escape(message)):
            main_tiny(tmp_path, monkeypatch, **kw)
    assert not (tmp_path / "runs").exists(), "a refusal left a run folder behind"
    model = tiny_model(pos_encoding="learned")
    with pytest.raises(ValueError, match="positions up to 17 exceed block_size 16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="exceed block_size 16 .the rope table"):
        tiny_model()(torch.zeros(1, 4, dtype=torch.long), start=14)
    main_tiny(tmp_path, monkeypatch, max_iters=2, eval_interval=2)
    with pytest.raises(SystemExit, match=re.escape("was trained with a different model: --n-layer 2 (given 3)")):
        main_tiny(tmp_path, monkeypatch, n_layer=3, max_iters=4, resume=only_ckpt(tmp_path, "gpt"))
    with pytest.raises(SystemExit, match="is already at iteration 2: raise --max-iters"):
        main_tiny(tmp_path, monkeypatch, max_iters=2, resume=only_ckpt(tmp_path, "gpt"))
    import tiktoken

    def offline(name):  # what tiktoken raises without network or cache
        raise ConnectionError("no network")

    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    with pytest.raises(SystemExit, match="tiktoken could not load 'gpt2' .ConnectionError.*TIKTOKEN_CACHE_DIR"):
        gpt.make_codec({"tokenizer": "gpt2"})
    monkeypatch.setenv("WORLD_SIZE", "2")  # validate() reads it before any distributed call
    with pytest.raises(SystemExit, match=re.escape("--batch-size 3 does not divide among the 2 ranks")):
        main_tiny(tmp_path, monkeypatch, batch_size=3)


def test_a_diverging_run_stops_at_the_first_non_finite_loss(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit, match=r"^step \d+: the training loss is (nan|inf); lower --learning-rate"):
        main_tiny(tmp_path, monkeypatch, learning_rate=1e6, max_iters=200, eval_interval=200)
    assert "final:" not in capsys.readouterr().out


def test_ctrl_c_saves_and_the_printed_command_resumes_bit_exactly(tmp_path):
    """SIGINT mid-run: exit 130 with "to resume it: ..."; that command, run as printed, ends with
    the weights of a run that was never interrupted (dropout on, so the RNG states count)."""
    flags = ["--data-dir", TINY["data_dir"], "--n-layer", "2", "--n-embd", "32", "--block-size", "16",
             "--batch-size", "4", "--eval-iters", "2", "--log-interval", "1", "--dropout", "0.1",
             "--max-iters", "300", "--eval-interval", "100", "--exp-name"]
    proc = subprocess.Popen([sys.executable, str(ALGOS / "gpt.py"), *flags, "cut"], cwd=tmp_path, env=script_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("iter 20:"):
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert re.search(r"^saved runs/\S+/ckpt.pt\ninterrupted at iteration \d+$", out, re.M), out
    [command] = [line[len("to resume it: "):] for line in out.splitlines() if line.startswith("to resume it: ")]
    words = shlex.split(command)
    assert words[0] == "python" and words[-2] == "--resume"
    assert run([sys.executable, *words[1:]], cwd=tmp_path, timeout=300).returncode == 0
    assert run([sys.executable, str(ALGOS / "gpt.py"), *flags, "whole"], cwd=tmp_path, timeout=300).returncode == 0
    a, b = (gpt.load_checkpoint(only_ckpt(tmp_path, name), "--resume") for name in ("whole", "cut"))
    assert a["iter"] == b["iter"] == 300
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_missing_data_says_how_to_prepare_it(tmp_path):
    """The default run in a folder without data: one sentence, no traceback."""
    proc = run([sys.executable, str(ALGOS / "gpt.py")], cwd=tmp_path, timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "no dataset in --data-dir data/shakespeare_char" in proc.stderr
    assert not (tmp_path / "runs").exists()  # refused before the run folder is made
    # A fork has no data/ folder: the hint names the repository's prepare script in words.
    assert "prepare it first (the repository's data/shakespeare_char/prepare.py" in proc.stderr


def test_char_prepare_roundtrip(tmp_path):
    text = "To be, or not to be: that is the question.\n" * 50
    (tmp_path / "in.txt").write_text(text)
    proc = run([sys.executable, str(ROOT / "data/shakespeare_char/prepare.py"), "--from-file",
                str(tmp_path / "in.txt"), "--out-dir", str(tmp_path)], cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["tokenizer"] == "char" and meta["vocab_size"] == len(set(text))
    ids = np.concatenate([np.fromfile(tmp_path / f"{s}.bin", dtype=np.uint16) for s in ("train", "val")])
    assert len(np.fromfile(tmp_path / "train.bin", dtype=np.uint16)) == int(len(text) * 0.9)
    assert "".join(meta["itos"][i] for i in ids) == text


@pytest.mark.skipif(not (SHARED_DATA / "tiktoken_cache").is_dir(), reason=no_data("tiktoken_cache"))
def test_gpt2_bpe_prepare_roundtrip(tmp_path, monkeypatch):
    import tiktoken
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(SHARED_DATA / "tiktoken_cache"))
    text = "ROMEO:\nBut, soft! what light through yonder window breaks?\n" * 40
    (tmp_path / "in.txt").write_text(text)
    proc = run([sys.executable, str(ROOT / "data/shakespeare/prepare.py"), "--from-file", str(tmp_path / "in.txt"),
                "--out-dir", str(tmp_path)], cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "meta.json").read_text()) == {"tokenizer": "gpt2", "vocab_size": 50257}
    enc = tiktoken.get_encoding("gpt2")
    parts = [enc.decode(np.fromfile(tmp_path / f"{s}.bin", dtype=np.uint16).tolist()) for s in ("train", "val")]
    assert "".join(parts) == text
    # gpt.py trains on the BPE tokens and samples through tiktoken.
    main_tiny(tmp_path, monkeypatch, data_dir=str(tmp_path), block_size=8, max_iters=3, eval_interval=3)
    out = gpt.main(gpt.Args(eval_checkpoint=only_ckpt(tmp_path, "gpt"), prompt="ROMEO:", max_new_tokens=5))
    assert out["samples"][0].startswith("ROMEO:") and len(enc.encode(out["samples"][0])) >= 6


def prepare_shakespeare_char(out: Path) -> Path:
    if not (SHARED_DATA / "tinyshakespeare.txt").exists():
        pytest.skip(no_data("tinyshakespeare.txt"))
    proc = run([sys.executable, str(ROOT / "data/shakespeare_char/prepare.py"), "--from-file",
                str(SHARED_DATA / "tinyshakespeare.txt"), "--out-dir", str(out)], cwd=out.parent, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return out


def test_learns_shakespeare_char(tmp_path, monkeypatch):
    """150 steps of the default model, seed 1: the exact val loss falls from 4.248 (untrained)
    to 2.215. The bar, 2.33, sits where the broken models fail, measured with the same 150 steps
    (issue 24; it was 2.6, which all of them passed): keys rotated the other way from the
    queries 2.448, no positions at all (RoPE left out) 2.447, attention output zeroed (a bigram
    model) 2.511; characters drawn by their frequency alone give 3.3."""
    data = prepare_shakespeare_char(tmp_path / "shakespeare_char")
    monkeypatch.chdir(tmp_path)
    metrics = gpt.main(gpt.Args(data_dir=str(data), max_iters=150, eval_interval=150, log_interval=50,
                                save_model=False))
    assert metrics["val/loss"] < 2.33, metrics


# ----------------------------------------------------------------------------- benchmark

NANOGPT_BABY = ["config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=20",
                "--log_interval=1", "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4",
                "--n_embd=128", "--max_iters=2000", "--lr_decay_iters=2000", "--dropout=0.0"]


@pytest.mark.benchmark
def test_faster_than_nanogpt_to_the_same_loss(tmp_path):
    """gpt.py's default run (nanoGPT's baby sizes: 4 layers, 4 heads, 128 wide, block 64, batch
    12) must reach val loss <= 1.88 in at most 80% of nanoGPT's wall time, nanoGPT run right
    before on the same machine (NANOGPT_DIR: a nanoGPT checkout whose data/shakespeare_char is
    prepared). Without a checkout nothing can be timed side by side, so the test skips: a fixed
    reference would pass or fail with the machine's load (FACTS' 96 ms/iter x 2,000 = 192 s let
    gpt.py be 1.29x slower than the 119.2 s nanoGPT measured here); the loss alone is
    test_default_run_reaches_the_loss_over_seeds's."""
    nanogpt_dir = os.environ.get("NANOGPT_DIR")
    if not nanogpt_dir:
        pytest.skip("needs NANOGPT_DIR, a nanoGPT checkout with data/shakespeare_char prepared, to time it side by side")
    data = prepare_shakespeare_char(tmp_path / "shakespeare_char")
    start = time.time()
    proc = run([sys.executable, "train.py", *NANOGPT_BABY], cwd=Path(nanogpt_dir), timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    nano_val = float(re.findall(r"step 2000: train loss [\d.]+, val loss ([\d.]+)", proc.stdout)[-1])
    rows = [("nanoGPT train.py (baby CPU config)", nano_val, 2000, time.time() - start)]
    start = time.time()
    proc = run([sys.executable, str(ALGOS / "gpt.py"), "--data-dir", str(data)], cwd=tmp_path, timeout=900)
    wall = time.time() - start
    assert proc.returncode == 0, proc.stderr[-2000:]
    val, iters = re.search(r"final: val loss ([\d.]+), train loss [\d.]+ after (\d+) iters", proc.stdout).groups()
    rows.append(("python algos/gpt.py", float(val), int(iters), wall))
    print("\n| run | val loss | iterations | wall s | ms/iter (whole process) |\n|---|---|---|---|---|")
    for name, v, n, w in rows:
        print(f"| {name} | {v:.4f} | {n} | {w:.1f} | {1000 * w / n:.1f} |")
    print(f"gpt.py / nanoGPT wall time: {wall / rows[0][3]:.2f}")
    assert float(val) <= 1.88
    assert wall <= 0.8 * rows[0][3]


@pytest.mark.benchmark
def test_default_run_reaches_the_loss_over_seeds(tmp_path):
    """Seeds 1-3 of the default run: the exact val loss (whole val split) is <= 1.88 in each."""
    data = prepare_shakespeare_char(tmp_path / "shakespeare_char")
    rows = []
    for seed in (1, 2, 3):
        start = time.time()
        proc = run([sys.executable, str(ALGOS / "gpt.py"), "--data-dir", str(data), "--seed", str(seed)],
                   cwd=tmp_path, timeout=900)
        assert proc.returncode == 0, proc.stderr[-2000:]
        val = float(re.search(r"final: val loss ([\d.]+)", proc.stdout).group(1))
        rows.append((seed, val, time.time() - start))
    print("\n| seed | val loss (exact) | wall s |\n|---|---|---|")
    for seed, val, wall in rows:
        print(f"| {seed} | {val:.4f} | {wall:.1f} |")
    assert all(val <= 1.88 for _, val, _ in rows)
