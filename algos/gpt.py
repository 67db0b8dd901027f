"""A modern GPT in one file: rotary positions, grouped-query attention, RMSNorm, SwiGLU, KV cache.

A decoder-only transformer learns p(x_t | x_<t) by next-token prediction (Radford et al. 2019). Each block is
pre-norm: x <- x + Attn(RMSNorm(x)); x <- x + MLP(RMSNorm(x)). Compared with GPT-2 (and nanoGPT) four pieces are the
ones of current open models (LLaMA, Touvron et al. 2023):

    RMSNorm     y = g * x / sqrt(mean(x^2) + eps)                     (Zhang & Sennrich 2019)
    SwiGLU      MLP(x) = W2 (silu(W1 x) * W3 x), hidden ~ 8/3 d       (Shazeer 2020)
    RoPE        rotate each pair (q_2i, q_2i+1) of a query at position m by the angle
                m * theta_i, theta_i = base^(-2i/d_head), and the keys alike; then
                <R_m q, R_n k> = <q, R_(n-m) k> depends on the offset n - m only  (Su et al. 2021, eq. 16)
    GQA         n_head query heads share n_kv_head key/value heads (n_head / n_kv_head queries
                per group): n_kv_head = n_head is multi-head, 1 is multi-query (Ainslie et al. 2023)

    attention   softmax(q k^T / sqrt(d_head) + causal mask) v          (Vaswani et al. 2017)
    loss        L = -1/(B T) sum_(b,t) log p(x_(b,t+1) | x_(b,<=t))

--pos-encoding sinusoidal (Vaswani et al. 2017, sec. 3.5) and learned (GPT-2) add a position vector to the token
embedding instead, for the seminar's comparison. Generation keeps each layer's keys and values (the KV cache), so a
new token costs one position's work instead of a pass over the whole context, until the context window fills.

Training: AdamW with weight decay on the matrices only (Loshchilov & Hutter 2019), linear warmup then cosine decay,
gradient clipping and accumulation, bf16 autocast on CUDA (--dtype float16 with a gradient scaler for GPUs without bf16:
V100, T4), optional torch.compile; checkpoints hold the optimizer and RNG states, so --resume continues the run bit for
bit. The defaults are nanoGPT's CPU "baby" sizes on shakespeare_char; the run's last val loss is exact (whole split).

Distributed: --batch-size counts all ranks; under torchrun each rank samples batch_size / world_size sequences per
micro-step from its own seed, and DDP averages the gradients once per iteration (not on the accumulation micro-steps),
so one iteration sees grad_accum x batch_size sequences with any number of ranks. Rank 0 alone prints, logs and saves.

References
    Radford et al. 2019, "Language Models are Unsupervised Multitask Learners" (GPT-2).
    Vaswani et al. 2017, "Attention Is All You Need", arXiv:1706.03762.
    Su et al. 2021, "RoFormer: Enhanced Transformer with Rotary Position Embedding", arXiv:2104.09864.
    Ainslie et al. 2023, "GQA: Training Generalized Multi-Query Transformer Models from
        Multi-Head Checkpoints", arXiv:2305.13245.
    Zhang & Sennrich 2019, "Root Mean Square Layer Normalization", arXiv:1910.07467.
    Shazeer 2020, "GLU Variants Improve Transformer", arXiv:2002.05202.
    Touvron et al. 2023, "LLaMA: Open and Efficient Foundation Language Models", arXiv:2302.13971.
    Holtzman et al. 2020, "The Curious Case of Neural Text Degeneration" (top-p), arXiv:1904.09751.
    Karpathy, nanoGPT (github.com/karpathy/nanoGPT): the training loop this one follows.

Usage
    python data/shakespeare_char/prepare.py            # once: writes data/shakespeare_char/*.bin
    python algos/gpt.py                                # the main job: char-level Shakespeare
    python algos/gpt.py --max-iters 300                # a quick run
    torchrun --standalone --nproc_per_node=2 algos/gpt.py
    python algos/gpt.py --pos-encoding learned         # the seminar's comparison
    python algos/gpt.py --eval-checkpoint runs/<run_name>/ckpt.pt --prompt "ROMEO:"   # val loss, samples
    python algos/gpt.py <the run's flags> --resume runs/<run_name>/ckpt.pt    # Ctrl-C prints this line
    python data/shakespeare/prepare.py && python algos/gpt.py --data-dir data/shakespeare --n-layer 6 --n-head 6 \\
        --n-kv-head 2 --n-embd 384 --block-size 256   # GPT-2 BPE, 29M parameters: a GPU run (2 CPU cores: ~14 s a step)
"""

import dataclasses
import hashlib
import io
import json
import math
import os
import shlex
import signal
import sys
import time
from contextlib import nullcontext
from typing import Annotated, Literal, Optional, get_type_hints

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
import tyro
from torch.nn.parallel import DistributedDataParallel as DDP

ALGO = "gpt"


@dataclasses.dataclass(frozen=True)
class Range:
    """Valid values of a numeric field: lo <= x <= hi (lo < x with lo_open), and finite; check_args enforces them."""

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False


@dataclasses.dataclass
class Args:
    """GPT: train on token files from data/*/prepare.py, or sample from a checkpoint (--eval-checkpoint)."""

    exp_name: str = "gpt"  # name of this experiment (part of the run name)
    seed: Annotated[int, Range(0, 2**31 - 1)] = 1  # seed of the experiment (rank r uses seed + r)
    torch_deterministic: bool = True  # set torch.backends.cudnn.deterministic
    cuda: bool = True  # use CUDA when it is available
    num_threads: Annotated[int, Range(1)] = 1  # torch CPU threads; a model this small runs fastest with one
    track: bool = False  # log to Weights & Biases
    wandb_project_name: str = "algos"  # the wandb project
    wandb_entity: Optional[str] = None  # the wandb entity (team)
    save_model: bool = True  # write runs/<run_name>/ckpt.pt at every evaluation and at the end

    data_dir: str = "data/shakespeare_char"  # folder of data/*/prepare.py's train.bin, val.bin (uint16 ids), meta.json
    # Model
    n_layer: Annotated[int, Range(1)] = 4  # transformer blocks
    n_head: Annotated[int, Range(1)] = 4  # query heads per attention layer
    n_kv_head: Annotated[int, Range(1)] = 4  # key/value heads: n-head is multi-head, 1 multi-query, else grouped-query
    n_embd: Annotated[int, Range(1)] = 128  # model width d
    block_size: Annotated[int, Range(1)] = 64  # context length in tokens (also the position table's size)
    # rotary on q and k, or a sinusoidal/learned vector added to the token embedding
    pos_encoding: Literal["rope", "sinusoidal", "learned"] = "rope"
    # RoPE's base: theta_i = base^(-2i/d_head) falls with i for a base above 1
    rope_base: Annotated[float, Range(1, lo_open=True)] = 10000.0
    dropout: Annotated[float, Range(0, 0.99)] = 0.0  # dropout on attention weights and residual branches (1 zeroes all)
    # Training
    batch_size: Annotated[int, Range(1)] = 12  # sequences per micro-step, all ranks (per rank: batch-size / world size)
    grad_accum: Annotated[int, Range(1)] = 1  # micro-steps per optimizer step
    max_iters: Annotated[int, Range(1)] = 900  # optimizer steps
    learning_rate: Annotated[float, Range(0, lo_open=True)] = 2e-3  # peak step size
    min_lr: Annotated[float, Range(0)] = 1e-4  # step size at the end of the cosine decay
    warmup_iters: Annotated[int, Range(0)] = 50  # linear warmup steps
    lr_decay_iters: Annotated[Optional[int], Range(1)] = None  # steps of the cosine decay (None: --max-iters)
    weight_decay: Annotated[float, Range(0)] = 0.1  # AdamW decoupled weight decay, on the matrices only
    beta1: Annotated[float, Range(0, 0.9999)] = 0.9  # AdamW beta1 (below 1: Adam divides by 1 - beta1^t)
    beta2: Annotated[float, Range(0, 0.9999)] = 0.99  # AdamW beta2 (0.99: few tokens per step)
    grad_clip: Annotated[float, Range(0)] = 1.0  # clip the global gradient norm to this; 0 turns clipping off
    compile: bool = False  # torch.compile the model (pays off on a GPU; a small CPU run mostly compiles)
    # on CUDA: bf16 or fp16 autocast (fp16 with a gradient scaler), or float32 (TF32 off too); CPU runs use float32
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    peak_tflops: Annotated[float, Range(0, lo_open=True)] = 312.0  # peak bf16 TFLOP/s for MFU (A100 312, H100 SXM 989)
    eval_interval: Annotated[int, Range(1)] = 250  # estimate train and val loss every this many steps (and at the end)
    eval_iters: Annotated[int, Range(1)] = 20  # batches per loss estimate (the last val loss uses the whole val split)
    log_interval: Annotated[int, Range(1)] = 50  # print the training loss every this many steps
    # Reload and sample
    resume: Optional[str] = None  # continue this ckpt.pt (repeat its run's flags: Ctrl-C prints them), saving beside it
    eval_checkpoint: Optional[str] = None  # no training: sample from this ckpt.pt, then val loss on --data-dir if there
    prompt: str = "\n"  # text the samples of --eval-checkpoint start from
    num_samples: Annotated[int, Range(1)] = 1  # samples --eval-checkpoint generates
    max_new_tokens: Annotated[int, Range(1)] = 500  # tokens per sample
    temperature: Annotated[float, Range(0)] = 0.8  # divide the logits by this (lower: more conservative; 0 is greedy)
    top_k: Annotated[Optional[int], Range(1)] = 200  # sample among the k most likely tokens only (None: all)
    top_p: Annotated[Optional[float], Range(0, 1, lo_open=True)] = None  # nucleus: fewest tokens of total mass >= p


# =============================================================================================
# ALGORITHM: the data, the model (RoPE, attention with GQA and a KV cache, SwiGLU, blocks), the
# optimizer and its schedule, the loss estimate, sampling. Read this first.
# =============================================================================================
# ----------------------------------------------------------------------------- data
def load_dataset(data_dir: str, block_size: int) -> tuple[dict[str, np.ndarray], dict]:
    """train.bin / val.bin (each over a block long) memory-mapped as in nanoGPT: the OS reads the pages a batch
    touches, so a corpus larger than memory trains too and torchrun's ranks share one copy; and meta.json."""
    paths = {split: os.path.join(data_dir, f"{split}.bin") for split in ("train", "val")}
    meta_path = os.path.join(data_dir, "meta.json")
    if not all(os.path.exists(p) for p in (*paths.values(), meta_path)):
        prepare = os.path.join(data_dir, "prepare.py")
        how = (f"with `python {prepare}` (add --from-file PATH offline)" if os.path.exists(prepare) else
               "first (the repository's data/shakespeare_char/prepare.py; see its README)")
        raise SystemExit(f"no dataset in --data-dir {data_dir} (it needs train.bin, val.bin and meta.json): "
                         f"prepare it {how}, or point --data-dir at a folder that has them.")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        vocab = int(meta["vocab_size"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"{meta_path} is not a meta.json written by a data prepare script ({type(e).__name__}): "
                         "prepare the data again.") from None
    data = {}
    for split, path in paths.items():
        n, odd = divmod(os.path.getsize(path), 2)
        if odd:
            raise SystemExit(f"{path} has an odd number of bytes, so it is not uint16 ids: prepare the data again.")
        if n <= block_size + 1:
            raise SystemExit(f"{path} has {n} tokens, too few for --block-size {block_size}: "
                             "prepare more text (or, to train, lower --block-size).")
        data[split] = np.memmap(path, dtype=np.uint16, mode="r")
        if int(data[split].max()) >= vocab:
            raise SystemExit(f"{path} holds token id {int(data[split].max())}, but meta.json's vocab_size is "
                             f"{vocab}: prepare the data again.")
    return data, meta


def get_batch(data: np.ndarray, batch_size: int, block_size: int, generator: torch.Generator):
    """batch_size random windows x = data[i : i+T] and their next tokens y = data[i+1 : i+T+1], as int64 tensors."""
    starts = torch.randint(len(data) - block_size, (batch_size, 1), generator=generator)
    window = torch.from_numpy(data[(starts + torch.arange(block_size + 1)).numpy()].astype(np.int64))  # one gather
    return window[:, :-1], window[:, 1:]


# ----------------------------------------------------------------------------- model
def rope_frequencies(head_dim: int, length: int, base: float) -> torch.Tensor:
    """e^(i m theta_j) for positions m < length and pairs j < head_dim/2, as complex numbers."""
    theta = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float64), theta)
    return torch.polar(torch.ones_like(angles), angles).to(torch.complex64)


def apply_rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x_2j, x_2j+1) of x (B, T, heads, d_head) by m theta_j: times e^(i m theta_j) (Su eq. 34)."""
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(pairs * freqs[:, None, :]).flatten(-2).type_as(x)


def sinusoidal_table(length: int, dim: int) -> torch.Tensor:
    """PE(m, 2j) = sin(m theta_j), PE(m, 2j+1) = cos(m theta_j), theta_j = 10000^(-2j/d) (Vaswani et al. sec. 3.5)."""
    rotations = rope_frequencies(dim, length, 10000.0)
    return torch.stack((rotations.imag, rotations.real), dim=-1).flatten(-2)[:, :dim]


class KVCache:
    """Each layer's keys and values of the positions seen so far, (B, n_kv_head, block_size, d_head)."""

    def __init__(self, n_layer: int, batch: int, n_kv_head: int, length: int, head_dim: int, device, dtype):
        self.k = [torch.zeros(batch, n_kv_head, length, head_dim, device=device, dtype=dtype) for _ in range(n_layer)]
        self.v = [torch.zeros_like(k) for k in self.k]


class CausalSelfAttention(nn.Module):
    """Grouped-query attention: n_head query heads, n_kv_head key/value heads."""

    def __init__(self, args: Args, layer: int):
        super().__init__()
        self.layer, self.n_head, self.n_kv_head, self.dropout = layer, args.n_head, args.n_kv_head, args.dropout
        self.head_dim = args.n_embd // args.n_head
        # q, k and v in one matmul; with fewer kv heads, k and v are narrower than q.
        self.qkv = nn.Linear(args.n_embd, (args.n_head + 2 * args.n_kv_head) * self.head_dim, bias=False)
        self.proj = nn.Linear(args.n_embd, args.n_embd, bias=False)

    def forward(self, x, freqs, cache: Optional[KVCache] = None, start: int = 0):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split([self.n_head * self.head_dim] + 2 * [self.n_kv_head * self.head_dim], dim=-1)
        q, k, v = (t.view(B, T, -1, self.head_dim) for t in (q, k, v))  # (B, T, heads, d_head)
        if freqs is not None:
            q, k = apply_rope(q, freqs), apply_rope(k, freqs)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, heads, T, d_head)
        mask = None
        if cache is not None:  # store this chunk's keys/values, attend over everything up to it
            cache.k[self.layer][:, :, start:start + T] = k
            cache.v[self.layer][:, :, start:start + T] = v
            k, v = cache.k[self.layer][:, :, :start + T], cache.v[self.layer][:, :, :start + T]
            # query start+i sees keys 0..start+i (is_causal would wrongly align queries with the first keys)
            mask = torch.arange(start + T, device=x.device) <= torch.arange(start, start + T, device=x.device)[:, None]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                           dropout_p=self.dropout if self.training else 0.0,
                                           enable_gqa=self.n_kv_head != self.n_head)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class SwiGLU(nn.Module):
    """MLP(x) = W2 (silu(W1 x) * W3 x); hidden 8/3 d (rounded up to 32) keeps a 4d GELU MLP's parameter count."""

    def __init__(self, n_embd: int):
        super().__init__()
        hidden = 32 * math.ceil(8 * n_embd / 3 / 32)
        self.gate_up = nn.Linear(n_embd, 2 * hidden, bias=False)  # W1 and W3 in one matmul
        self.proj = nn.Linear(hidden, n_embd, bias=False)  # W2

    def forward(self, x):
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.proj(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, args: Args, layer: int):
        super().__init__()
        self.norm1, self.norm2 = nn.RMSNorm(args.n_embd), nn.RMSNorm(args.n_embd)
        self.attn, self.mlp = CausalSelfAttention(args, layer), SwiGLU(args.n_embd)
        self.drop = nn.Dropout(args.dropout)

    def forward(self, x, freqs, cache=None, start=0):
        x = x + self.drop(self.attn(self.norm1(x), freqs, cache, start))
        return x + self.drop(self.mlp(self.norm2(x)))


class GPT(nn.Module):
    """Token embedding -> n_layer pre-norm blocks -> RMSNorm -> logits through the tied embedding."""

    def __init__(self, args: Args, vocab_size: int):
        super().__init__()
        self.args, self.vocab_size = args, vocab_size
        self.tok_emb = nn.Embedding(vocab_size, args.n_embd)
        self.blocks = nn.ModuleList(Block(args, i) for i in range(args.n_layer))
        self.norm = nn.RMSNorm(args.n_embd)
        self.lm_head = nn.Linear(args.n_embd, vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # weight tying (Press & Wolf 2017)
        # RoPE's angles for block_size positions: a buffer, not a parameter, so never trained
        self.register_buffer("freqs", rope_frequencies(args.n_embd // args.n_head, args.block_size, args.rope_base)
                             if args.pos_encoding == "rope" else None, persistent=False)
        self.pos_emb = nn.Embedding(args.block_size, args.n_embd) if args.pos_encoding == "learned" else None
        # The sine table is scaled to the RMS of the learned table's N(0, 0.02) init, so as not to drown the
        # 0.02-sized token embeddings (Vaswani et al. scale those up by sqrt(d); ours are tied to the output).
        self.register_buffer("sinusoids", 0.02 * math.sqrt(2) * sinusoidal_table(args.block_size, args.n_embd)
                             if args.pos_encoding == "sinusoidal" else None, persistent=False)
        # GPT-2 initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2 n_layer).
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * args.n_layer) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, mean=0.0, std=std)

    def forward(self, idx, targets=None, cache: Optional[KVCache] = None, start: int = 0):
        """Logits (B, T, vocab) of idx (B, T) at positions start..start+T-1; with targets, the mean cross-entropy."""
        T = idx.shape[1]
        if start + T > self.args.block_size:
            raise ValueError(f"positions up to {start + T} exceed block_size {self.args.block_size} "
                             f"(the {self.args.pos_encoding} table's size): crop the input to the last "
                             f"{self.args.block_size} tokens or train with a larger --block-size.")
        x = self.tok_emb(idx)
        if self.pos_emb is not None:
            x = x + self.pos_emb.weight[start:start + T]
        if self.sinusoids is not None:
            x = x + self.sinusoids[start:start + T]
        freqs = self.freqs[start:start + T] if self.freqs is not None else None
        for block in self.blocks:
            x = block(x, freqs, cache, start)
        logits = self.lm_head(self.norm(x))
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss


def configure_optimizer(model: nn.Module, args: Args, device: torch.device) -> torch.optim.AdamW:
    """AdamW; decay the matrices (embedding, projections) but not the norm gains."""
    groups = [{"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": args.weight_decay},
              {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.learning_rate, betas=(args.beta1, args.beta2),
                             fused=device.type in ("cpu", "cuda"))


def learning_rate(it: int, args: Args) -> float:
    """Linear warmup to learning_rate, then cosine decay to min_lr at lr_decay_iters."""
    decay_iters = args.lr_decay_iters or args.max_iters
    if it < args.warmup_iters:
        return args.learning_rate * (it + 1) / args.warmup_iters
    if it >= decay_iters:
        return args.min_lr
    progress = (it - args.warmup_iters) / max(decay_iters - args.warmup_iters, 1)
    return args.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (args.learning_rate - args.min_lr)


@torch.no_grad()
def estimate_loss(model: nn.Module, data: dict, args: Args, ctx, device, exact_val: bool = False) -> dict:
    """Mean loss over eval_iters batches per split, the same each time (a fixed seed): estimates differ only
    by the model. exact_val: the val loss over every non-overlapping block instead (a run's final number)."""
    model.eval()
    out = {}
    for split in ("train", "val"):
        if split == "val" and exact_val:
            T = args.block_size
            n = (len(data["val"]) - 1) // T
            tokens = torch.from_numpy(data["val"][:n * T + 1].astype(np.int64))  # the val split, read whole
            x, y = tokens[:-1].view(n, T), tokens[1:].view(n, T)
            batches = list(zip(x.split(4 * args.batch_size), y.split(4 * args.batch_size)))
        else:
            g = torch.Generator().manual_seed(12345)
            batches = [get_batch(data[split], args.batch_size, args.block_size, g) for _ in range(args.eval_iters)]
        with ctx:
            total = sum(model(x.to(device), y.to(device))[1].item() * len(x) for x, y in batches)
        out[f"{split}/loss"] = total / sum(len(x) for x, _ in batches)
    model.train()
    return out


# ----------------------------------------------------------------------------- sampling
def sample_next(logits: torch.Tensor, temperature: float, top_k: Optional[int], top_p: Optional[float],
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """One token per row from softmax(logits / temperature), kept to the top k and/or the nucleus top_p."""
    logits = logits / max(temperature, 1e-6)
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        probs, order = torch.sort(F.softmax(logits, dim=-1), descending=True)
        drop = probs.cumsum(-1) - probs >= top_p  # mass before this token already reached p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)


@torch.no_grad()
def generate(model: GPT, idx: torch.Tensor, max_new_tokens: int, temperature=1.0, top_k=None, top_p=None,
             use_cache: bool = True, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Extend idx (B, T) by max_new_tokens sampled tokens, each conditioned on the last block_size. Once the context is
    full, cached positions would run past the table: the last block_size tokens are recomputed, as without the cache."""
    block = model.args.block_size
    cache, length = None, 0  # length: positions held in the cache
    for _ in range(max_new_tokens):
        if use_cache and 0 < length < block:
            logits, _ = model(idx[:, -1:], cache=cache, start=length)  # the new token at position `length`
            length += 1
        else:
            context = idx[:, -block:]
            if use_cache:
                cache = KVCache(model.args.n_layer, idx.shape[0], model.args.n_kv_head, block,
                                model.args.n_embd // model.args.n_head, idx.device, model.tok_emb.weight.dtype)
            logits, _ = model(context, cache=cache)
            length = context.shape[1]
        idx = torch.cat((idx, sample_next(logits[:, -1], temperature, top_k, top_p, generator)), dim=1)
    return idx


def make_codec(meta: dict):
    """encode(str) -> list[int] and decode(list[int]) -> str for the dataset's tokenizer."""
    if meta["tokenizer"] == "char":
        itos = meta["itos"]
        stoi = {ch: i for i, ch in enumerate(itos)}

        def encode(text):
            unknown = sorted(set(text) - stoi.keys())
            if unknown:
                raise SystemExit(f"--prompt has characters the model never saw: {unknown!r}; use others.")
            return [stoi[ch] for ch in text]
        return encode, lambda ids: "".join(itos[i] for i in ids)
    import tiktoken  # only the BPE datasets need it
    try:
        enc = tiktoken.get_encoding(meta["tokenizer"])
    except Exception as e:  # e.g. no network and no cache: one sentence
        raise SystemExit(f"tiktoken could not load {meta['tokenizer']!r} ({type(e).__name__}): it downloads its "
                         "vocabulary once; offline, set TIKTOKEN_CACHE_DIR to a cache that holds it.") from None
    return enc.encode_ordinary, enc.decode


# =============================================================================================
# MACHINERY: argument checks, run folder, checkpoints, Ctrl-C, distributed set-up, logging.
# Not the algorithm: a first reading can skip to main().
# =============================================================================================
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


def validate(args: Args) -> None:
    """Combinations of flags that cannot work, one sentence each naming the fix."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))  # read before any distributed call
    if args.n_embd % args.n_head:
        raise SystemExit(f"--n-embd {args.n_embd} is not divisible by --n-head {args.n_head}: "
                         "each head gets n_embd / n_head dimensions; pick sizes that divide.")
    if args.n_head % args.n_kv_head:
        raise SystemExit(f"--n-head {args.n_head} is not a multiple of --n-kv-head {args.n_kv_head}: "
                         "each key/value head serves an equal group of query heads.")
    if args.pos_encoding == "rope" and (args.n_embd // args.n_head) % 2:
        raise SystemExit(f"--pos-encoding rope rotates pairs of dimensions, but the head size "
                         f"{args.n_embd // args.n_head} is odd: change --n-embd or --n-head.")
    if args.batch_size % world_size:
        raise SystemExit(f"--batch-size {args.batch_size} does not divide among the {world_size} ranks: "
                         f"make it a multiple of {world_size}.")
    if args.resume and args.eval_checkpoint:
        raise SystemExit("--resume trains and --eval-checkpoint does not: give one of them.")
    if args.eval_checkpoint and args.track:
        raise SystemExit("--eval-checkpoint only samples and evaluates, it logs nothing: drop --track.")
    if args.eval_checkpoint and not args.prompt:
        raise SystemExit('--prompt is empty: give the text to continue, e.g. --prompt "ROMEO:" or a newline.')
    sampling = [f"--{k.replace('_', '-')}" for k in ("prompt", "num_samples", "max_new_tokens", "temperature",
                                                     "top_k", "top_p") if getattr(args, k) != getattr(Args, k)]
    if sampling and not args.eval_checkpoint:  # training would ignore them silently
        raise SystemExit(f"{', '.join(sampling)}: sampling flags, read only with --eval-checkpoint; drop them to "
                         "train, or add --eval-checkpoint runs/<run>/ckpt.pt to sample from a trained model.")
    if args.min_lr > args.learning_rate and not args.eval_checkpoint:  # the "decay" would climb to min_lr
        raise SystemExit(f"--learning-rate {args.learning_rate:g} is below --min-lr {args.min_lr:g}, where the cosine "
                         "decay ends: raise --learning-rate, or lower --min-lr too.")
    if (args.dtype == "bfloat16" and args.cuda and torch.cuda.is_available()
            and not torch.cuda.is_bf16_supported(including_emulation=False)):
        raise SystemExit(f"--dtype bfloat16: this GPU ({torch.cuda.get_device_name()}) has no bfloat16; "
                         "pass --dtype float16 (trained with a gradient scaler) or --dtype float32.")


def autocast_context(dtype: str, device: torch.device):
    """--dtype's autocast on CUDA; none for float32 and on the CPU (bf16 matmuls are slow on most CPUs)."""
    if device.type != "cuda" or dtype == "float32":
        return nullcontext()
    return torch.autocast("cuda", dtype=getattr(torch, dtype))


def make_run_dir(name: str) -> str:
    """Make runs/<name>/ before training, so an unwritable folder fails at once; a same-second twin gets <name>-2."""
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
    """Atomic and verifiable: the torch.save bytes, headed by their sha256, go to a temp file that replaces path."""
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
        folder = f": give the checkpoint file in it, {os.path.join(path, 'ckpt.pt')}" if os.path.isdir(path) else ""
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
    quits at once without saving. Under torchrun every rank hears it, and agreed() lets the ranks stop at the same step,
    so none is left waiting in a collective."""

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

    def agreed(self, device: torch.device) -> bool:
        """Every rank calls this at the same step: any rank's request becomes every rank's."""
        flag = torch.tensor([float(self.requested)], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        self.requested = bool(flag.item())
        return self.requested


def setup_distributed(args: Args) -> tuple[bool, int, int, torch.device]:
    """Under torchrun one process group (nccl on CUDA, gloo on CPU); returns (distributed, rank, world_size, device)."""
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


def check_finite(name: str, value: float, step: int, hint: str) -> None:
    """A nan or inf loss stops the run (exit 1) instead of training garbage to the end."""
    if not math.isfinite(value):
        raise SystemExit(f"step {step}: {name} is {value}; {hint}")


def check_vocabulary(flag: str, path: str, saved: dict, data_dir: str, meta: dict) -> None:
    """A checkpoint reads only data of its own tokenizer, size and ids (a char set of the same size is not enough)."""
    if saved != meta:
        mine, theirs = (f"{m.get('tokenizer')} with {m['vocab_size']} tokens" for m in (saved, meta))
        differ = f"{mine}, --data-dir {theirs}" if mine != theirs else f"{mine} in both, but other ids"
        raise SystemExit(f"{flag} {path} does not fit --data-dir {data_dir} ({differ}): give the run's own.")


def resume_checkpoint(args: Args) -> dict:
    """--resume: the checkpoint, if the given flags build the same network and leave steps to do."""
    ckpt = load_checkpoint(args.resume, "--resume")
    saved = ckpt["args"]  # these fields define the network: only the same ones can go on training it
    diff = [f"--{k.replace('_', '-')} {saved[k]} (given {getattr(args, k)})" for k in
            ("n_layer", "n_head", "n_kv_head", "n_embd", "block_size", "pos_encoding", "rope_base")
            if saved.get(k) != getattr(args, k)]
    if diff:
        raise SystemExit(f"--resume {args.resume} was trained with a different model: {', '.join(diff)}; "
                         "repeat the run's flags to resume it, or start a new run.")
    if ckpt["iter"] >= args.max_iters:
        raise SystemExit(f"--resume {args.resume} is already at iteration {ckpt['iter']}: "
                         "raise --max-iters above it (the cosine decay follows, unless --lr-decay-iters is given).")
    if not os.access(os.path.dirname(args.resume) or ".", os.W_OK):
        raise SystemExit(f"--resume {args.resume}: the run saves beside it, but its folder is not writable; "
                         "copy it to a folder you can write to.")
    return ckpt


def evaluate_checkpoint(args: Args) -> dict:
    """--eval-checkpoint: samples from the model built with the checkpoint's own flags, then its exact val loss."""
    ckpt = load_checkpoint(args.eval_checkpoint, "--eval-checkpoint")
    if int(os.environ.get("RANK", 0)) != 0:
        return {}
    data = None
    if os.path.exists(os.path.join(args.data_dir, "val.bin")):
        data, meta = load_dataset(args.data_dir, ckpt["args"]["block_size"])
        check_vocabulary("--eval-checkpoint", args.eval_checkpoint, ckpt["meta"], args.data_dir, meta)
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
    torch.set_num_threads(args.num_threads)
    torch.manual_seed(args.seed)
    saved = Args(**{k: v for k, v in ckpt["args"].items() if k in {f.name for f in dataclasses.fields(Args)}})
    model = GPT(saved, ckpt["meta"]["vocab_size"]).to(device).eval()
    model.load_state_dict(ckpt["model"])
    encode, decode = make_codec(ckpt["meta"])
    idx = torch.tensor([encode(args.prompt)] * args.num_samples, device=device)
    out = generate(model, idx, args.max_new_tokens, args.temperature, args.top_k, args.top_p)
    metrics = {"samples": [decode(row.tolist()) for row in out]}
    for s in metrics["samples"]:
        print(s, "\n" + "-" * 40)
    where = f"{args.eval_checkpoint} (iteration {ckpt['iter']})"
    if data is None:
        print(f"{where}: no val loss, --data-dir {args.data_dir} holds no dataset")
        return metrics
    metrics.update(estimate_loss(model, data, saved, autocast_context(args.dtype, device), device, exact_val=True))
    print(f"{where}: train loss {metrics['train/loss']:.4f}, val loss {metrics['val/loss']:.4f} (whole split)")
    return metrics


def main(args: Args) -> dict:
    """Train, or with --eval-checkpoint sample and evaluate, and return the final metrics: val/loss (exact),
    train/loss, iter, wall_time (s, evaluations included), ms_per_iter and tokens_per_s (training alone)."""
    check_args(args)
    validate(args)
    if args.eval_checkpoint:
        return evaluate_checkpoint(args)
    ckpt = resume_checkpoint(args) if args.resume else None
    distributed, rank, world_size, device = setup_distributed(args)
    use_cuda, is_main = device.type == "cuda", rank == 0
    torch.backends.cuda.matmul.allow_tf32 = use_cuda and args.dtype != "float32"
    torch.backends.cudnn.deterministic = args.torch_deterministic
    # The data and the memory check come before the run folder: a refusal leaves no empty folder behind.
    data, meta = load_dataset(args.data_dir, args.block_size)
    if ckpt is not None:
        check_vocabulary("--resume", args.resume, ckpt["meta"], args.data_dir, meta)
    # Refuse what memory cannot hold: the float32 weights, gradients and AdamW's two moments (16 bytes a parameter,
    # counted on the meta device without allocating), then a micro-step's float32 activations (measured on a CPU): per
    # token 32 n_embd-wide vectors per layer and 3 vocab-wide; with dropout also 3 T x T matrices per head and layer.
    with torch.device("meta"):
        weights = 16 * sum(p.numel() for p in GPT(args, meta["vocab_size"]).parameters())
    batch, T, L, H = args.batch_size // world_size, args.block_size, args.n_layer, args.n_head  # batch: per rank
    need = 4 * batch * T * (32 * L * args.n_embd + 3 * meta["vocab_size"] + 3 * L * H * T * (args.dropout > 0))
    have = (torch.cuda.get_device_properties(device).total_memory if use_cuda
            else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else math.inf)
    if weights > have:
        raise SystemExit(f"--n-embd {args.n_embd} with --n-layer {L} makes {weights // 16:,} parameters, about "
                         f"{weights / 2**30:.0f} GiB with their gradients and AdamW's moments, more than the "
                         f"{have / 2**30:.0f} GiB of this {device.type}: lower --n-embd or --n-layer.")
    if need + weights > have:
        raise SystemExit(f"--block-size {T} with {batch} sequences per micro-step and rank needs about "
                         f"{need / 2**30:.0f} GiB of activations, more than the {(have - weights) / 2**30:.0f} GiB "
                         f"this {device.type} has beside the model: lower --block-size or --batch-size (and raise "
                         "--grad-accum to keep the tokens per step).")
    task = os.path.basename(os.path.abspath(args.data_dir))
    run_dir = (os.path.dirname(args.resume) or "." if ckpt is not None  # a resumed run writes beside its checkpoint
               else make_run_dir(f"{task}__{args.exp_name}__{args.seed}__{int(time.time())}") if is_main else "")
    ckpt_path = args.resume or os.path.join(run_dir, "ckpt.pt")  # a resumed run saves to the file it resumed
    # float16 would round small gradients to 0: the scaler scales the loss up and the gradients back (disabled: a no-op)
    ctx = autocast_context(args.dtype, device)
    scaler = torch.amp.GradScaler("cuda", enabled=use_cuda and args.dtype == "float16")

    torch.manual_seed(args.seed + rank)  # dropout; the weights are broadcast from rank 0 by DDP
    data_rng = torch.Generator().manual_seed(args.seed + rank)  # this rank's own batches
    model = raw_model = GPT(args, meta["vocab_size"]).to(device)
    optimizer = configure_optimizer(model, args, device)
    it = start_iter = ckpt["iter"] if ckpt is not None else 0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):  # saved by a float16 run; a disabled scaler ignores it
            scaler.load_state_dict(ckpt["scaler"])
        if world_size == len(ckpt["rng_states"]):  # the same ranks continue their own streams
            state = ckpt["rng_states"][rank]
            data_rng.set_state(state["data"])
            torch.set_rng_state(state["torch"])
            if use_cuda and state["cuda"] is not None:
                torch.cuda.set_rng_state(state["cuda"], device)
    model = torch.compile(model) if args.compile else model
    model = DDP(model, device_ids=[device.index] if use_cuda else None) if distributed else model

    n_params = sum(p.numel() for p in raw_model.parameters())
    tokens_per_iter = args.grad_accum * args.batch_size * args.block_size
    if is_main:
        print(f"{args.data_dir}: train {len(data['train']):,} / val {len(data['val']):,} tokens, vocab "
              f"{meta['vocab_size']}; {n_params:,} parameters; {world_size} rank(s) on {device}; {tokens_per_iter:,} "
              f"tokens per iteration; run folder {run_dir}" + (f"; resuming at iteration {start_iter}" if ckpt else ""))
    logger = RunLog(args, os.path.basename(os.path.abspath(run_dir)), run_dir) if is_main else None

    def checkpoint(it: int) -> None:
        mine = {"data": data_rng.get_state(), "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(device) if use_cuda else None}
        states = [mine] * world_size  # one process: its own; under torchrun all_gather fills in every rank's
        if distributed:
            dist.all_gather_object(states, mine)
        if is_main:
            save_checkpoint(ckpt_path, {"algo": ALGO, "model": raw_model.state_dict(), "iter": it,
                                        "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                                        "args": dataclasses.asdict(args), "meta": meta, "rng_states": states})

    metrics: dict = {}
    start_time = log_time = time.time()
    loss_sum, loss_count, eval_seconds = 0.0, 0, 0.0
    stop = StopFlag()
    while True:
        if it % args.eval_interval == 0 or it == args.max_iters:
            eval_start = time.time()
            if is_main:
                metrics.update(estimate_loss(raw_model, data, args, ctx, device, exact_val=it == args.max_iters))
                print(f"step {it}: train loss {metrics['train/loss']:.4f}, val loss {metrics['val/loss']:.4f}")
                check_finite("the val loss", metrics["val/loss"], it, "lower --learning-rate.")
                logger.log({**metrics, "iter": it}, it)  # metrics holds the two losses only
            if it > start_iter and args.save_model:
                checkpoint(it)
            eval_time = time.time() - eval_start
            log_time += eval_time  # ms/iter counts training steps only
            eval_seconds += eval_time
        # Under torchrun the ranks stop at the same iteration: the exact resume needs all their RNG states.
        if it == args.max_iters or (stop.agreed(device) if distributed else stop.requested):
            break
        lr = learning_rate(it, args)
        for group in optimizer.param_groups:
            group["lr"] = lr
        step_loss = 0.0
        for micro in range(args.grad_accum):
            if distributed:  # all-reduce the gradients only once, after the last micro-step
                model.require_backward_grad_sync = micro == args.grad_accum - 1
            # Sampled here, not prefetched: the checkpoint's RNG state then points at the next batch.
            x, y = get_batch(data["train"], batch, args.block_size, data_rng)
            with ctx:
                _, loss = model(x.to(device), y.to(device))
            scaler.scale(loss / args.grad_accum).backward()
            step_loss = step_loss + loss.detach() / args.grad_accum
        if args.grad_clip > 0:
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        scaler.step(optimizer)  # optimizer.step(), unless float16 gradients overflowed
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        it += 1
        check_finite("the training loss", step_loss.item(), it, "lower --learning-rate (or raise --warmup-iters).")
        loss_sum, loss_count = loss_sum + step_loss, loss_count + 1
        if is_main and (it % args.log_interval == 0 or it == args.max_iters):
            now = time.time()
            ms = 1000 * (now - log_time) / loss_count
            row = {"train/batch_loss": loss_sum.item() / loss_count, "train/lr": lr, "ms_per_iter": ms,
                   "tokens_per_s": tokens_per_iter * 1000 / ms}
            if use_cuda:  # model FLOPs utilisation: 6 N per token for the matmuls, 12 L d T for attention (PaLM)
                row["mfu"] = (6 * n_params + 12 * L * args.n_embd * T) * row["tokens_per_s"] / (args.peak_tflops * 1e12)
            print(f"iter {it}: loss {row['train/batch_loss']:.4f}, lr {lr:.2e}, {ms:.1f} ms/iter, "
                  f"{row['tokens_per_s']:,.0f} tokens/s" + (f", mfu {100 * row['mfu']:.1f}%" if use_cuda else ""))
            logger.log({**row, "iter": it}, it)
            log_time, loss_sum, loss_count = now, 0.0, 0

    if it < args.max_iters:  # Ctrl-C: keep everything needed to go on
        checkpoint(it)
        if is_main:
            argv = sys.argv[1:]  # this command's arguments, less a --resume PATH of its own
            argv = [a for i, a in enumerate(argv) if "--resume" not in (a.split("=")[0], argv[i - 1] if i else "")]
            # under torchrun, as many ranks again: they continue their own random streams exactly
            launcher = ["torchrun", "--standalone", f"--nproc_per_node={world_size}"] if distributed else ["python"]
            print(f"interrupted at iteration {it}\nto resume it: "
                  + shlex.join([*launcher, sys.argv[0], *argv, "--resume", ckpt_path]))
        sys.exit(130)
    wall_time, done = time.time() - start_time, it - start_iter
    train_seconds = wall_time - eval_seconds
    metrics.update({"iter": it, "wall_time": wall_time, "ms_per_iter": 1000 * train_seconds / max(done, 1),
                    "tokens_per_s": tokens_per_iter * done / train_seconds})
    if is_main:
        print(f"final: val loss {metrics['val/loss']:.4f}, train loss {metrics['train/loss']:.4f} after "
              f"{it} iters; {wall_time:.1f} s, of which {eval_seconds:.1f} s evaluating and saving "
              f"({metrics['ms_per_iter']:.1f} ms/iter, {metrics['tokens_per_s']:,.0f} tokens/s)")
        print("sample from it with: " + shlex.join(["python", sys.argv[0], "--eval-checkpoint", ckpt_path])
              if args.save_model else f"(the model was not saved: drop --no-save-model to keep it in {run_dir}/)")
        logger.log(dict(metrics), it)
        logger.close()
    if distributed:
        dist.barrier()  # all ranks finished (rank 0 evaluates last) before the group goes
        dist.destroy_process_group()
    return metrics


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # progress lines appear even when redirected
    try:
        main(tyro.cli(Args))
    except KeyboardInterrupt:  # Ctrl-C before the training loop listens for it
        print("stopped by Ctrl-C before training; nothing was saved.", file=sys.stderr)
        sys.exit(130)
