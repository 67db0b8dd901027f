"""The Transformer of "Attention Is All You Need": an encoder-decoder built of attention alone, with label
smoothing, the warmup schedule, batched beam search and cached incremental decoding, in one file.

The RNN with attention (seq2seq_attention.py) reads a sentence one token after another. The Transformer
(Vaswani et al. 2017) drops the recurrence: every layer lets each position look at all positions at once.
The encoder is N layers of [self-attention, feed-forward]; the decoder is N layers of [causal
self-attention, cross-attention to the encoder's output, feed-forward] (the paper's Figure 1):

    input       x_p = sqrt(d) * E[token_p] + PE(p)         embeddings scaled by sqrt(d) (sec. 3.4)
    positions   PE(p, 2i) = sin(p / 10000^(2i/d)),  PE(p, 2i+1) = cos(p / 10000^(2i/d))     (sec. 3.5)
                for every offset k, PE(p + k) = M_k PE(p) with M_k a fixed block rotation: one linear map
                turns "position p" into "position p + k" at every p (a test checks it). --pos learned: a
                trained table instead (the paper found them equal, Table 3 row E).
    attention   Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + M) V                  (eq. 1)
                M = -inf where a query may not look: padding of the source; in the decoder, the future
    multi-head  head_i = Attention(X_q W_i^Q, X_kv W_i^K, X_kv W_i^V),  d_k = d / h
                MultiHead = Concat(head_1 .. head_h) W^O                                   (sec. 3.2.2)
                self-attention: X_q = X_kv = the layer's input; cross-attention: X_kv = encoder output
    feed-fwd    FFN(x) = max(0, x W_1 + b_1) W_2 + b_2, applied at each position alone    (eq. 2)
    sublayer    --norm post (the paper): LayerNorm(x + Dropout(Sublayer(x)))
                --norm pre: x + Dropout(Sublayer(LayerNorm(x))), and one LayerNorm at the end. Pre-norm
                leaves a straight path of additions from the loss back to the embeddings, so gradients
                reach early layers unscaled and deep stacks train without warmup (Xiong et al. 2020).

Training minimises cross-entropy against label-smoothed targets q = (1 - eps) onehot(y) + eps / V
(eps_ls = 0.1, sec. 5.4): the model is never pushed to certainty, which hurts perplexity but helps
accuracy and BLEU. Adam with beta = (0.9, 0.98), eps 1e-9, and the step size (sec. 5.3, eq. 3)

    --schedule noam      lrate = d^-0.5 * min(step^-0.5, step * warmup^-1.5)    (rises linearly, then 1/sqrt)
                         written here as lr * sqrt(warmup) * min(step^-0.5, step * warmup^-1.5), so
                         --learning-rate is the peak, at step = warmup; (d*warmup)^-0.5 gives the paper's.
    --schedule cosine    the same linear warmup to lr, then a cosine down to lr / 10 at the last step.

Decoding: greedy, or batched beam search ranked by log P(Y|X) / lp(Y), lp(Y) = ((5 + |Y|) / 6)^alpha
(Wu et al. 2016, eq. 14). Both decode incrementally: position t's keys and values never change once
computed (the causal mask), so each step keeps them in a cache and computes only the new position,
O(T) work per step instead of recomputing all T positions (a test checks both give the same logits).

Evaluation: exact match and corpus BLEU as sacreBLEU scores it by default, cased, and lowercased (its -lc; a test
compares both). A PNG of the cross-attention weights, one panel per layer and head, for a test sentence goes to
runs/<run_name>/cross_attention.png; --translate decodes sentences you type, each with its PNG.

Data: by default dates between 1950 and 2049 in 13 human formats ("3 March 1998", "03/03/98", "Tue Mar 03 1998" ...) to
translate into ISO "1998-03-03"; held-out dates never occur in training. Or --data-path: UTF-8 "source<TAB>target"
lines, one file split here or a folder with train.tsv, val.tsv and test.tsv. Tokens are characters, words, tiktoken
subwords, or --tokenizer bpe: byte-level BPE merges learned here from both sides of the training split (the most
frequent adjacent pair of symbols becomes one, --bpe-merges times), so rare words become pieces of known ones. The
vocabularies hold the tokens seen in training (one vocabulary for both sides with --share-embeddings). --bucket-pool
batches pairs of similar length together, as the paper did (sec. 5.1), so little of a batch is padding.

Distributed: under torchrun each rank takes its own rows of every batch (--batch-size counts all ranks)
and DistributedDataParallel averages the gradients; rank 0 alone evaluates, prints, logs and saves. On
CUDA the forward pass runs in bfloat16 autocast (--cpu-bf16: on the CPU too). Ctrl-C stops training at
the end of a step, saves runs/<run_name>/transformer.pt (optimizer, data order, random states included)
and prints the command that resumes it exactly (in the final evaluation: stops it at once, saves, and prints
the command that evaluates the model); --save-model also saves it at every --eval-interval.

References
    Vaswani et al. 2017, "Attention Is All You Need", NeurIPS, arXiv:1706.03762.
    Szegedy et al. 2016, "Rethinking the Inception Architecture for Computer Vision", arXiv:1512.00567
        (label smoothing).
    Ba, Kiros, Hinton 2016, "Layer Normalization", arXiv:1607.06450.
    Xiong et al. 2020, "On Layer Normalization in the Transformer Architecture", arXiv:2002.04745 (pre-norm).
    Press, Wolf 2017, "Using the Output Embedding to Improve Language Models", arXiv:1608.05859 (tying).
    Wu et al. 2016, "Google's Neural Machine Translation System", arXiv:1609.08144 (length penalty).
    Bahdanau, Cho, Bengio 2015, arXiv:1409.0473 (attention in translation, the step before this one).
    Sennrich, Haddow, Birch 2016, "Neural Machine Translation of Rare Words with Subword Units", ACL,
        arXiv:1508.07909 (BPE).
    Papineni et al. 2002, "BLEU: a Method for Automatic Evaluation of Machine Translation", ACL.
    Post 2018, "A Call for Clarity in Reporting BLEU Scores", WMT, arXiv:1804.08771 (sacreBLEU).

Usage
    python algos/transformer.py                                    # date task, the main job
    python algos/transformer.py --num-iterations 300               # a quick run
    python algos/transformer.py --norm pre --pos learned --label-smoothing 0
    torchrun --standalone --nproc_per_node=2 algos/transformer.py
    python algos/transformer.py --save-model                       # keep the model in runs/<run_name>/
    python algos/transformer.py --eval-checkpoint runs/<run_name>/transformer.pt
    python algos/transformer.py --resume runs/<run_name>/transformer.pt --num-iterations 3000    # + its flags
    python algos/transformer.py --eval-checkpoint runs/<run_name>/transformer.pt --translate "3 Mar 1998"
    python algos/transformer.py --data-path data/parallel/multi30k-de-en --tokenizer bpe ...  # README: Multi30k
"""

import contextlib
import dataclasses
import datetime
import hashlib
import heapq
import io
import json
import math
import os
import random
import re
import shlex
import signal
import sys
import time
import typing
from collections import Counter
from dataclasses import dataclass
from typing import Annotated, Literal, NamedTuple, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
import tyro
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.nn.utils.rnn import pad_sequence

ALGO = "transformer"


# Range marks each numeric field's valid values; check_args (MACHINERY, below) enforces them.
@dataclass(frozen=True)
class Range:
    """Valid values of a numeric field: lo <= x <= hi (lo < x with lo_open), and finite."""

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False


@dataclass
class Args:
    """The encoder-decoder Transformer on the date task or a tab-separated parallel corpus."""

    exp_name: str = "transformer"  # name of this experiment (part of the run name)
    # seed of the model and the batch order (rank r uses seed + r); the date task's data is fixed
    seed: Annotated[int, Range(0, 2**31 - 1)] = 1
    torch_deterministic: bool = True  # set torch.backends.cudnn.deterministic
    cuda: bool = True  # use CUDA when it is available
    num_threads: Annotated[int, Range(1)] = 1  # torch CPU threads; this small model runs fastest with one
    # bfloat16 autocast on the CPU too (as always on CUDA): 2x faster where the CPU has AVX512-BF16 or AMX
    cpu_bf16: bool = False
    track: bool = False  # log to Weights & Biases
    wandb_project_name: str = "algos"  # the wandb project
    wandb_entity: Optional[str] = None  # the wandb entity (team)
    save_model: bool = False  # save the model and all --resume needs to runs/<run_name>/transformer.pt
    # continue training this checkpoint to --num-iterations and save to it (its data and model flags; give the training
    # flags again: the command Ctrl-C prints does); --schedule cosine then spans the new --num-iterations
    resume: Optional[str] = None
    # evaluate this checkpoint on its test set, greedy and with --beam-size; no training
    eval_checkpoint: Optional[str] = None
    # with --eval-checkpoint: translate these sentences instead, each with a cross-attention heat map
    translate: Optional[tuple[str, ...]] = None

    # a source<TAB>target file (split here) or a folder with train.tsv/val.tsv/test.tsv; unset: the date task
    data_path: Optional[str] = None
    # how text becomes tokens: characters, words and punctuation, tiktoken subwords, or BPE learned here
    tokenizer: Literal["char", "word", "tiktoken", "bpe"] = "char"
    bpe_merges: Annotated[int, Range(0)] = 8_000  # --tokenizer bpe: merges learned from both training sides
    tiktoken_encoding: str = "gpt2"  # the encoding for --tokenizer tiktoken (offline: set TIKTOKEN_CACHE_DIR)
    # with a single --data-path file: the fraction of pairs held out for validation, and again for test
    heldout_fraction: Annotated[float, Range(0, 0.49, lo_open=True)] = 0.05
    num_train: Annotated[int, Range(1)] = 20_000  # date task: training pairs (from the training dates)
    # date task: validation pairs and test pairs, each (from dates never seen in training)
    num_heldout: Annotated[int, Range(1)] = 1_000

    d_model: Annotated[int, Range(2)] = 64  # width d of every layer (even with sinusoidal positions)
    n_heads: Annotated[int, Range(1)] = 4  # attention heads h per layer; d_model must be a multiple of it
    num_layers: Annotated[int, Range(1)] = 2  # layers N of the encoder, and again of the decoder
    d_ff: Annotated[int, Range(1)] = 256  # hidden size of the position-wise feed-forward network
    # dropout on sublayer outputs, embeddings and attention weights (the paper: 0.1; dates need none)
    dropout: Annotated[float, Range(0, 0.99)] = 0.0
    norm: Literal["post", "pre"] = "post"  # LayerNorm after each residual sum (the paper), or before each sublayer
    pos: Literal["sinusoidal", "learned"] = "sinusoidal"  # fixed sin/cos (sec. 3.5), or a trained table
    max_positions: Annotated[int, Range(1)] = 256  # the longest sentence, in tokens, the position table holds
    share_embeddings: bool = False  # one vocabulary and one embedding table for source and target
    tie_output: bool = False  # the output projection reuses the target embedding matrix

    # optimizer steps, each over a batch of all ranks together (counted over all resumes)
    num_iterations: Annotated[int, Range(1)] = 2_000
    batch_size: Annotated[int, Range(1)] = 64  # sentence pairs per step (all ranks together)
    # pairs of similar length share a batch (sec. 5.1): pools of this many batches sorted by length; 0: random
    bucket_pool: Annotated[int, Range(0)] = 0
    schedule: Literal["noam", "cosine"] = "cosine"  # after warmup: the paper's 1/sqrt(step), or a cosine
    learning_rate: Annotated[float, Range(0, lo_open=True)] = 4e-3  # the peak Adam step size (step = warmup)
    warmup_steps: Annotated[int, Range(1)] = 100  # steps of the linear rise of the step size
    label_smoothing: Annotated[float, Range(0, 0.99)] = 0.1  # eps_ls: target mass spread over all tokens
    grad_clip: Annotated[float, Range(0, lo_open=True)] = 1.0  # clip the global gradient norm to this
    eval_interval: Annotated[int, Range(1)] = 500  # val loss and greedy exact match every this many steps
    beam_size: Annotated[int, Range(1)] = 5  # beam width of the final beam-search evaluation (1 is greedy)
    # alpha of the length penalty ((5 + |Y|) / 6)^alpha (at most 5: finite in float32); 0 ranks by raw log-probability
    length_penalty: Annotated[float, Range(0, 5)] = 0.6


# =============================================================================================
# ALGORITHM: the data and tokens, positions, multi-head attention, the encoder and decoder layers,
# the loss and the schedule, greedy and beam decoding, BLEU, evaluation. Read this first.
# =============================================================================================
# --- Data: the date task, a TSV corpus, tokenisers and vocabularies ----------------------------
PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
DATA_SEED = 20_150_901  # fixes the date task and the split of a TSV file: the same data for every --seed


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th ... 11th, 12th, 13th ... 21st."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def date_formats(d: datetime.date) -> list[str]:
    """The same date written 13 ways. Numeric ones put the day first."""
    month, mon, wday, yy = MONTHS[d.month - 1], MONTHS[d.month - 1][:3], WEEKDAYS[d.weekday()], f"{d.year % 100:02d}"
    return [
        f"{d.day} {month} {d.year}",                           # 3 March 1998
        f"{d.day:02d}/{d.month:02d}/{yy}",                     # 03/03/98
        f"{month} {ordinal(d.day)}, {d.year}",                 # March 3rd, 1998
        f"{wday}, {d.day} {mon} {d.year}",                     # Tuesday, 3 Mar 1998
        f"{d.year}-{d.month}-{d.day}",                         # 1998-3-3
        f"{d.day}.{d.month}.{d.year}",                         # 3.3.1998
        f"{mon} {d.day}, {d.year}",                            # Mar 3, 1998
        f"{d.day:02d} {mon.upper()} {d.year}",                 # 03 MAR 1998
        f"{wday.lower()} {month.lower()} {d.day} {d.year}",    # tuesday march 3 1998
        f"the {ordinal(d.day)} of {month} {d.year}",           # the 3rd of March 1998
        f"{d.year}/{d.month:02d}/{d.day:02d}",                 # 1998/03/03
        f"{d.day:02d}-{mon}-{yy}",                             # 03-Mar-98
        f"{wday[:3]} {mon} {d.day:02d} {d.year}",              # Tue Mar 03 1998
    ]


def date_task(num_train: int, num_heldout: int) -> dict[str, list[tuple[str, str]]]:
    """(human date, ISO date) pairs. Validation and test dates are disjoint from the training
    dates (and from each other), so a held-out score measures generalisation, not recall."""
    first = datetime.date(1950, 1, 1)
    days = (datetime.date(2049, 12, 31) - first).days + 1
    if 2 * num_heldout >= days:
        raise SystemExit(f"--num-heldout {num_heldout} leaves no training dates: the task has {days} "
                         f"dates; use at most {(days - 1) // 2}.")
    rng = random.Random(DATA_SEED)
    order = list(range(days))
    rng.shuffle(order)
    test_days, val_days, train_days = order[:num_heldout], order[num_heldout:2 * num_heldout], order[2 * num_heldout:]

    def pair(day: int) -> tuple[str, str]:
        d = first + datetime.timedelta(days=day)
        return rng.choice(date_formats(d)), d.isoformat()

    return {"train": [pair(rng.choice(train_days)) for _ in range(num_train)],
            "val": [pair(day) for day in val_days], "test": [pair(day) for day in test_days]}


COLUMN_NAME = re.compile(r"(?i:source|target|src|tgt)")  # a first line of two is a header: skipped
LANGUAGE_CODE = re.compile(r"[a-z]{2}(?:[-_][A-Za-z]{2,4})?")  # en, pt-BR: a header or a pair? refused


def read_tsv(path: str) -> list[tuple[str, str]]:
    """The (source, target) pairs of a UTF-8 file of source<TAB>target lines. Blank lines and a
    first line of column names are skipped; a first line of two language codes is refused."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw.startswith((b"PK\x03\x04", b"\x1f\x8b")):  # a download still packed: fra-eng.zip, x.tsv.gz
            raise SystemExit(f"{path} is a zip or gzip file: unpack it, or make the TSV with data/parallel/prepare.py.")
        lines = io.StringIO(raw.decode("utf-8-sig"), newline=None)  # newlines as open() reads them; no BOM
    except OSError as e:
        raise SystemExit(f"{path}: cannot read it ({e.strerror}).") from None
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise SystemExit(f"{path} line {line} is not UTF-8 text: save the file as UTF-8.") from None
    pairs, rows = [], [(n, line) for n, line in enumerate(lines, 1) if line.strip()]  # blank lines skipped
    for k, (number, line) in enumerate(rows):
        fields = [field.strip() for field in line.rstrip("\n").split("\t")]
        if len(fields) != 2 or not all(fields):
            raise SystemExit(f"{path} line {number} has {len(fields)} tab-separated fields ({sum(map(bool, fields))} "
                             "non-empty), not 'source<TAB>target': fix or delete that line.")
        if k == 0 and all(LANGUAGE_CODE.fullmatch(field) for field in fields):
            raise SystemExit(f"{path} line {number} ({fields[0]}<TAB>{fields[1]}) may be a header of language "
                             "codes or a pair: delete it if it is a header, else move it below the first pair.")
        if not (k == 0 and all(COLUMN_NAME.fullmatch(field) for field in fields)):
            pairs.append((fields[0], fields[1]))
    if not pairs:
        raise SystemExit(f"{path} has 0 pairs: a corpus file needs source<TAB>target lines.")
    return pairs


def tsv_corpus(path: str, heldout_fraction: float) -> dict[str, list[tuple[str, str]]]:
    """A folder with train/val/test.tsv, or one file shuffled and split, heldout_fraction each for val and test."""
    if os.path.isdir(path):
        files = {split: os.path.join(path, f"{split}.tsv") for split in ("train", "val", "test")}
        missing = [f for f in files.values() if not os.path.isfile(f)]
        if missing:
            raise SystemExit(f"--data-path {path} is a folder without {', '.join(missing)}: "
                             "give a folder with train.tsv, val.tsv and test.tsv, or one .tsv file.")
        return {split: read_tsv(f) for split, f in files.items()}
    if not os.path.isfile(path):
        raise SystemExit(f"--data-path {path}: no such file or folder; give a source<TAB>target .tsv, or a "
                         "folder with train.tsv, val.tsv and test.tsv (the repository's data/parallel/README.md).")
    pairs = read_tsv(path)
    random.Random(DATA_SEED).shuffle(pairs)
    n_held = int(len(pairs) * heldout_fraction)
    if n_held < 1 or len(pairs) - 2 * n_held < 1:
        raise SystemExit(f"--data-path {path} has {len(pairs)} pairs: too few to hold out {heldout_fraction} "
                         "for validation and for test; add pairs or change --heldout-fraction.")
    return {"test": pairs[:n_held], "val": pairs[n_held:2 * n_held], "train": pairs[2 * n_held:]}


class BytePairEncoding:
    """Byte-level BPE learned from the training text (Sennrich et al. 2016, in GPT-2's byte form): the text is
    cut into words (each keeps its leading space), a word into its UTF-8 bytes; then num_merges times the
    most frequent adjacent pair of symbols in the corpus becomes one new symbol (ties: the smaller pair).
    Only the words holding the merged pair are recounted. A symbol is a str of byte values (latin-1), so any
    text splits into known bytes and joins back exactly. Encoding applies the merges in learned order."""

    WORDS = re.compile(r" ?\w+| ?[^\w\s]+|\s+")

    def __init__(self, texts: list[str], num_merges: int):
        words = Counter(w for text in texts for w in self.WORDS.findall(text))
        symbols = [list(w.encode().decode("latin-1")) for w in words]  # a word as its bytes
        freq, pairs, where = list(words.values()), Counter(), {}
        for i, word in enumerate(symbols):
            for pair in zip(word, word[1:]):
                pairs[pair] += freq[i]
                where.setdefault(pair, set()).add(i)
        heap = [(-n, pair) for pair, n in pairs.items()]
        heapq.heapify(heap)
        self.ranks: dict[tuple[str, str], int] = {}
        while heap and len(self.ranks) < num_merges:
            n, best = heapq.heappop(heap)
            if -n != pairs[best] or n == 0:  # a stale entry: the count has changed since it was pushed
                continue
            self.ranks[best] = len(self.ranks)
            touched = set()
            for i in where.pop(best):
                word = symbols[i]
                for pair in zip(word, word[1:]):
                    pairs[pair] -= freq[i]
                    touched.add(pair)
                word[:] = self.merge(word, best)
                for pair in zip(word, word[1:]):
                    pairs[pair] += freq[i]
                    where.setdefault(pair, set()).add(i)
                    touched.add(pair)
            for pair in touched - {best}:
                heapq.heappush(heap, (-pairs[pair], pair))
            del pairs[best]
        self.cache: dict[str, list[str]] = {}

    @staticmethod
    def merge(word: list[str], pair: tuple[str, str]) -> list[str]:
        """Every occurrence of the pair, left to right, made one symbol."""
        out, i = [], 0
        while i < len(word):
            if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
                out.append(word[i] + word[i + 1])
                i += 2
            else:
                out.append(word[i])
                i += 1
        return out

    def encode_word(self, w: str) -> list[str]:
        if w not in self.cache:
            word = list(w.encode().decode("latin-1"))
            while len(word) > 1:  # the earliest-learned merge that applies, until none does
                pair = min(zip(word, word[1:]), key=lambda p: self.ranks.get(p, math.inf))
                if pair not in self.ranks:
                    break
                word = self.merge(word, pair)
            self.cache[w] = word
        return self.cache[w]

    def split(self, text: str) -> list[str]:
        return [symbol for w in self.WORDS.findall(text) for symbol in self.encode_word(w)]

    @staticmethod
    def join(tokens: list[str]) -> str:
        return "".join(tokens).encode("latin-1").decode("utf-8", errors="replace")


class Tokenizer:
    """Text <-> token strings: characters, words, tiktoken subwords (strings of token ids), or byte-level BPE learned
    here from the training split. Words are runs of letters and digits, which may hold inner hyphens, apostrophes,
    periods and commas (peut-être, l'homme, 3.50), and punctuation marks; they are joined back with spaces."""

    WORD = re.compile(r"\w+(?:[-'’.,]\w+)*|([^\w\s])\1*")  # a run of one mark ("--", "...") is one token

    def __init__(self, kind: str, encoding: str = "gpt2", train_texts: list[str] = (), bpe_merges: int = 0):
        self.kind = kind
        if kind == "bpe":
            self.bpe = BytePairEncoding(train_texts, bpe_merges)
        if kind == "tiktoken":
            import tiktoken  # only this tokenizer needs it
            if encoding not in tiktoken.list_encoding_names():  # names are exact: GPT2 or cl100k is unknown
                raise SystemExit(f"--tiktoken-encoding {encoding!r} is unknown: use one of "
                                 f"{', '.join(tiktoken.list_encoding_names())}.")
            try:
                self.enc = tiktoken.get_encoding(encoding)
            except Exception as e:
                raise SystemExit(f"tiktoken could not load {encoding!r} ({type(e).__name__}): it downloads its "
                                 "vocabulary once; offline, set TIKTOKEN_CACHE_DIR to a cache that holds it.") from None

    def split(self, text: str) -> list[str]:
        if self.kind == "tiktoken":
            return [str(i) for i in self.enc.encode_ordinary(text)]  # "<|endoftext|>" in a text is plain text
        if self.kind == "bpe":
            return self.bpe.split(text)
        return list(text) if self.kind == "char" else [m.group() for m in self.WORD.finditer(text)]

    def join(self, tokens: list[str]) -> str:
        if self.kind == "tiktoken":
            return self.enc.decode([int(t) for t in tokens if t.isdigit()])
        if self.kind == "bpe":
            return self.bpe.join(tokens)
        return ("" if self.kind == "char" else " ").join(tokens)


class Vocab:
    """Token string <-> id; ids 0-3 are <pad>, <s>, </s>, <unk>."""

    def __init__(self, tokens: list[str]):
        self.itos = SPECIALS + [t for t, _ in Counter(tokens).most_common() if t not in SPECIALS]
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    def encode(self, tokens: list[str]) -> list[int]:
        return [self.stoi.get(t, UNK) for t in tokens]

    def decode(self, ids) -> list[str]:
        """Ids up to the first </s>; padding and <s> dropped."""
        ids = list(ids)
        return [self.itos[i] for i in ids[:ids.index(EOS) if EOS in ids else None] if i not in (PAD, BOS)]


def epoch_order(lengths: torch.Tensor, batch_size: int, pool: int, gen: torch.Generator) -> torch.Tensor:
    """One epoch's order of the training pairs; its consecutive batch_size slices are the batches. pool 0: a random
    permutation. Else, as in the paper (sec. 5.1), the permutation's full batches are cut into pools of `pool`
    batches, each pool is sorted by length and cut into batches, and the batches are shuffled."""
    order = torch.randperm(len(lengths), generator=gen)
    if pool == 0:
        return order
    order = order[:len(order) // batch_size * batch_size]  # the rest are drawn again next epoch
    pools = [p[torch.sort(lengths[p], stable=True).indices] for p in order.split(pool * batch_size)]
    batches = torch.cat(pools).view(-1, batch_size)
    return batches[torch.randperm(len(batches), generator=gen)].flatten()


def to_tensors(seqs: list[list[int]], add_eos: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (N, max_len) ids and the true lengths."""
    seqs = [torch.tensor(s + [EOS] if add_eos else s, dtype=torch.long) for s in seqs]
    return pad_sequence(seqs, batch_first=True, padding_value=PAD), torch.tensor([len(s) for s in seqs])


class Split(NamedTuple):
    """One split of the corpus as padded ids: the sources, and the targets ending in </s>."""
    src: torch.Tensor      # (N, S) source ids, PAD after the sentence
    src_len: torch.Tensor  # (N,) source lengths
    tgt: torch.Tensor      # (N, T) target ids y_1 .. y_n </s>, then PAD
    tgt_len: torch.Tensor  # (N,) target lengths with </s>


def batch_of(split: Split, index: torch.Tensor, device: torch.device):
    """Rows of a split, cut to their longest sentences -> src, tgt_in = <s> y_1 .. y_n for the decoder to
    read, tgt_out = y_1 .. y_n </s> to predict. Padding is PAD, which the masks and the loss leave out."""
    src, src_len, tgt, tgt_len = (x[index] for x in split)
    src, tgt = src[:, :int(src_len.max())], tgt[:, :int(tgt_len.max())]
    tgt_in = torch.cat([torch.full_like(tgt[:, :1], BOS), tgt[:, :-1]], dim=1)
    return src.to(device), tgt_in.to(device), tgt.to(device)


# --- Model: the paper's Figure 1, bottom to top --------------------------------------------------
def sinusoidal_table(num_positions: int, d_model: int) -> torch.Tensor:
    """PE(p, 2i) = sin(p w_i), PE(p, 2i+1) = cos(p w_i), w_i = 10000^(-2i/d) (sec. 3.5) -> (P, d)."""
    p = torch.arange(num_positions, dtype=torch.float64).unsqueeze(1)
    w = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    table = torch.zeros(num_positions, d_model, dtype=torch.float64)
    table[:, 0::2], table[:, 1::2] = torch.sin(p * w), torch.cos(p * w)
    return table.float()


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention over h heads, written out (eq. 1 and sec. 3.2.2)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.h, self.d_k = n_heads, d_model // n_heads
        self.w_q, self.w_k, self.w_v, self.w_o = (nn.Linear(d_model, d_model) for _ in range(4))
        self.drop = nn.Dropout(dropout)
        self.weights = None  # the last attention weights (B, h, T_q, T_k), for the heat maps

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, d) -> (B, h, T, d_k): head i gets features i*d_k .. (i+1)*d_k - 1."""
        return x.view(x.size(0), x.size(1), self.h, self.d_k).transpose(1, 2)

    def keys_values(self, x_kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """K = X W^K, V = X W^V, split into heads. Cross-attention computes them once per source."""
        return self.split_heads(self.w_k(x_kv)), self.split_heads(self.w_v(x_kv))

    def forward(self, x_q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor):
        """x_q (B, T_q, d); k, v (B, h, T_k, d_k); mask (B or 1, T_q or 1, T_k), True where a query may
        look -> (B, T_q, d)."""
        q = self.split_heads(self.w_q(x_q))                            # Q = X W^Q      (B, h, T_q, d_k)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_k)         # Q K^T / sqrt(d_k)  (B, h, T_q, T_k)
        # -inf where masked gives a weight of exactly 0; the softmax runs in float32 under autocast.
        weights = scores.float().masked_fill(~mask.unsqueeze(1), float("-inf")).softmax(dim=-1)
        self.weights = weights.detach()
        heads = self.drop(weights).to(v.dtype) @ v                     # (B, h, T_q, d_k)
        merged = heads.transpose(1, 2).reshape(x_q.size(0), x_q.size(1), self.h * self.d_k)  # Concat(heads)
        return self.w_o(merged)                                        # ... W^O


class FeedForward(nn.Module):
    """FFN(x) = max(0, x W_1 + b_1) W_2 + b_2 at every position (eq. 2)."""

    def __init__(self, d_model: int, d_ff: int, dropout: float):
        super().__init__()
        self.w_1, self.w_2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(self.drop(F.relu(self.w_1(x))))


class Residual(nn.Module):
    """A sublayer with its residual connection and LayerNorm: post LayerNorm(x + Dropout(f(x))), the
    paper's sec. 3.1, or pre x + Dropout(f(LayerNorm(x)))."""

    def __init__(self, d_model: int, dropout: float, norm: str):
        super().__init__()
        self.post, self.norm, self.drop = norm == "post", nn.LayerNorm(d_model), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, sublayer) -> torch.Tensor:
        return self.norm(x + self.drop(sublayer(x))) if self.post else x + self.drop(sublayer(self.norm(x)))


class EncoderLayer(nn.Module):
    """Self-attention over the source (padding masked), then the feed-forward network."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float, norm: str):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.ffn = FeedForward(d_model, d_ff, dropout)
        self.res_attn, self.res_ffn = Residual(d_model, dropout, norm), Residual(d_model, dropout, norm)

    def forward(self, x: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        x = self.res_attn(x, lambda y: self.self_attn(y, *self.self_attn.keys_values(y), src_mask))
        return self.res_ffn(x, self.ffn)


class DecoderLayer(nn.Module):
    """Causal self-attention over the target so far, cross-attention to the encoder's output, feed-forward."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float, norm: str):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.ffn = FeedForward(d_model, d_ff, dropout)
        self.res_self, self.res_cross, self.res_ffn = (Residual(d_model, dropout, norm) for _ in range(3))

    def forward(self, x, memory_kv, src_mask, causal_mask, cache: Optional[dict] = None) -> torch.Tensor:
        """memory_kv: the cross-attention's keys and values of the encoder output. With a cache, x holds new
        positions only: the keys and values of the earlier ones come from the cache, and the new join them."""
        def self_attention(y):
            k, v = self.self_attn.keys_values(y)
            if cache is not None:
                if "k" in cache:
                    k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
                cache["k"], cache["v"] = k, v
            return self.self_attn(y, k, v, causal_mask)

        x = self.res_self(x, self_attention)
        x = self.res_cross(x, lambda y: self.cross_attn(y, *memory_kv, src_mask))
        return self.res_ffn(x, self.ffn)


class DecoderState(NamedTuple):
    """What incremental decoding carries from step to step, one row per sentence (or beam)."""
    memory_kv: list   # per decoder layer: the cross-attention's (K, V) of the encoder output
    src_mask: torch.Tensor  # (B, 1, S) True at real source tokens
    caches: list      # per decoder layer: {"k", "v"} of the target positions decoded so far

    def select(self, rows: torch.Tensor) -> "DecoderState":
        """The state of the given rows (beam search keeps the rows of the surviving beams)."""
        return DecoderState([(k[rows], v[rows]) for k, v in self.memory_kv], self.src_mask[rows],
                            [{name: t[rows] for name, t in c.items()} for c in self.caches])


class Transformer(nn.Module):
    def __init__(self, src_vocab: int, tgt_vocab: int, d_model: int, n_heads: int, num_layers: int, d_ff: int,
                 dropout: float, norm: str, pos: str, max_positions: int, share_embeddings: bool = False,
                 tie_output: bool = False):
        super().__init__()
        self.d_model = d_model
        self.src_embed = nn.Embedding(src_vocab, d_model, padding_idx=PAD)
        self.tgt_embed = self.src_embed if share_embeddings else nn.Embedding(tgt_vocab, d_model, padding_idx=PAD)
        if pos == "sinusoidal":
            self.register_buffer("pe", sinusoidal_table(max_positions, d_model), persistent=False)
        else:
            self.pos_embed = nn.Embedding(max_positions, d_model)
        self.drop = nn.Dropout(dropout)
        layer = (d_model, n_heads, d_ff, dropout, norm)
        self.encoder = nn.ModuleList(EncoderLayer(*layer) for _ in range(num_layers))
        self.decoder = nn.ModuleList(DecoderLayer(*layer) for _ in range(num_layers))
        # Pre-norm's residual stream is never normalised inside the stack: one LayerNorm at each end does it.
        self.enc_norm = nn.LayerNorm(d_model) if norm == "pre" else nn.Identity()
        self.dec_norm = nn.LayerNorm(d_model) if norm == "pre" else nn.Identity()
        self.out = nn.Linear(d_model, tgt_vocab)
        for name, p in self.named_parameters():  # Glorot for the projections, N(0, 1/d) for embeddings:
            if p.dim() > 1:                      # sqrt(d) * E then has entries of variance 1, near PE's 1/2
                nn.init.normal_(p, std=d_model ** -0.5) if "embed" in name else nn.init.xavier_uniform_(p)
        with torch.no_grad():  # <pad> embeds to zero
            self.src_embed.weight[PAD].zero_()
            self.tgt_embed.weight[PAD].zero_()
        if tie_output:
            self.out.weight = self.tgt_embed.weight

    def embed(self, embedding: nn.Embedding, tokens: torch.Tensor, start: int = 0) -> torch.Tensor:
        """sqrt(d) * E[token] + position, then dropout (sec. 3.4, 5.4); positions start..start+T-1."""
        positions = torch.arange(start, start + tokens.size(1), device=tokens.device)
        pos = self.pe[positions] if hasattr(self, "pe") else self.pos_embed(positions)
        return self.drop(embedding(tokens) * math.sqrt(self.d_model) + pos)

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> the encoder output (B, S, d) and the source mask (B, 1, S), True at real tokens."""
        src_mask = (src != PAD).unsqueeze(1)
        x = self.embed(self.src_embed, src)
        for layer in self.encoder:
            x = layer(x, src_mask)
        return self.enc_norm(x), src_mask

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V) of every target position at once: the causal mask lets position t see 0..t."""
        memory, src_mask = self.encode(src)
        T = tgt_in.size(1)
        causal = torch.ones(T, T, dtype=torch.bool, device=src.device).tril().unsqueeze(0)  # (1, T, T)
        x = self.embed(self.tgt_embed, tgt_in)
        for layer in self.decoder:
            x = layer(x, layer.cross_attn.keys_values(memory), src_mask, causal)
        return self.out(self.dec_norm(x))

    def start(self, src: torch.Tensor, copies: int = 1) -> DecoderState:
        """Encode once; each sentence's state is repeated `copies` times (the beams), caches empty."""
        memory, src_mask = (x.repeat_interleave(copies, dim=0) for x in self.encode(src))
        return DecoderState([layer.cross_attn.keys_values(memory) for layer in self.decoder], src_mask,
                            [{} for _ in self.decoder])

    def step(self, y_prev: torch.Tensor, state: DecoderState, t: int) -> torch.Tensor:
        """Logits (B, V) of the next token, from the decoder input y_prev (B,) at position t; positions
        0..t-1 are read from the cache, which grows by this one. The new position may see them all: no mask."""
        x = self.embed(self.tgt_embed, y_prev.unsqueeze(1), start=t)
        see_all = torch.ones(1, 1, t + 1, dtype=torch.bool, device=x.device)
        for layer, memory_kv, cache in zip(self.decoder, state.memory_kv, state.caches):
            x = layer(x, memory_kv, state.src_mask, see_all, cache)
        return self.out(self.dec_norm(x))[:, 0]


# --- Training: the label-smoothed loss and the step size ---------------------------------------
def label_smoothed_loss(logits: torch.Tensor, tgt_out: torch.Tensor, eps: float) -> torch.Tensor:
    """Cross-entropy against q = (1 - eps) onehot(y) + eps / V, that is (1 - eps) (-log p_y) + eps mean_v (-log p_v),
    averaged over the real target tokens (padding does not count). eps = 0 is the plain cross-entropy."""
    logp = logits.float().log_softmax(dim=-1)
    nll = -logp.gather(-1, tgt_out.unsqueeze(-1)).squeeze(-1)
    real = tgt_out != PAD
    return (((1 - eps) * nll - eps * logp.mean(dim=-1)) * real).sum() / real.sum()


def learning_rate_at(step: int, args: Args) -> float:
    """Step size of optimizer step `step` (1, 2, ...): a linear rise to args.learning_rate at warmup, then
    noam: lr sqrt(warmup) min(step^-0.5, step warmup^-1.5) (eq. 3 with lr = (d warmup)^-0.5), or a cosine."""
    w = args.warmup_steps
    if args.schedule == "noam":
        return args.learning_rate * math.sqrt(w) * min(step ** -0.5, step * w ** -1.5)
    if step <= w:
        return args.learning_rate * step / w
    progress = (step - w) / max(1, args.num_iterations - w)
    return args.learning_rate * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, progress))))


# --- Decoding ----------------------------------------------------------------------------------
@torch.no_grad()
def greedy_decode(model: Transformer, src: torch.Tensor, max_len: int) -> torch.Tensor:
    """Argmax at every step, all sentences at once, with the cache -> ids (B, T), PAD after </s>."""
    state = model.start(src)
    y = torch.full((src.size(0),), BOS, dtype=torch.long, device=src.device)
    done = torch.zeros_like(y, dtype=torch.bool)
    out = []
    for t in range(max_len):
        y = model.step(y, state, t).argmax(-1).masked_fill(done, PAD)
        out.append(y)
        done |= y == EOS
        if done.all():
            break
    return torch.stack(out, 1)


def length_penalty(length: torch.Tensor, alpha: float) -> torch.Tensor:
    """lp(Y) = ((5 + |Y|) / 6)^alpha (Wu et al. 2016, eq. 14)."""
    return ((5.0 + length) / 6.0) ** alpha


@torch.no_grad()
def beam_search(model: Transformer, src: torch.Tensor, beam_size: int, max_len: int, alpha: float):
    """Batched beam search -> the best hypothesis per sentence, ids (B, T), PAD after </s>. Row b * K + k holds beam k
    of sentence b. A finished beam stays in the beam, extended only by PAD at no cost: it competes with the live ones
    until the end. Live candidates share a length, so log P / lp ranks them as log P does: K = 1 is exactly greedy."""
    B, K, device = src.size(0), beam_size, src.device
    state = model.start(src, K)
    scores = torch.zeros(B, K, device=device)
    scores[:, 1:] = float("-inf")  # the K copies start identical: let only one of them expand
    lengths, finished = torch.zeros(B, K, device=device), torch.zeros(B, K, dtype=torch.bool, device=device)
    y = torch.full((B * K,), BOS, dtype=torch.long, device=device)
    history = torch.zeros(B * K, 0, dtype=torch.long, device=device)
    rows = torch.arange(B, device=device).unsqueeze(1) * K
    for t in range(max_len):
        logp = model.step(y, state, t).float().log_softmax(-1).view(B, K, -1)
        V = logp.size(-1)
        pad_only = torch.where(torch.arange(V, device=device) == PAD, 0.0, float("-inf"))
        logp = torch.where(finished.unsqueeze(-1), pad_only, logp)
        candidates = scores.unsqueeze(-1) + logp  # (B, K, V)
        cand_len = torch.where(finished, lengths, torch.full_like(lengths, t + 1)).unsqueeze(-1).expand(B, K, V)
        _, index = (candidates / length_penalty(cand_len, alpha)).view(B, -1).topk(K, dim=-1)
        origin, token = index // V, index % V
        scores = candidates.view(B, -1).gather(1, index)
        lengths = cand_len.reshape(B, -1).gather(1, index)
        finished = finished.gather(1, origin) | (token == EOS)
        flat = (origin + rows).view(-1)
        state, y = state.select(flat), token.view(-1)  # each surviving beam takes its parent's cache
        history = torch.cat([history[flat], y.unsqueeze(1)], dim=1)
        if finished.all():
            break
    best = (scores / length_penalty(lengths, alpha)).argmax(-1)
    return history.view(B, K, -1)[torch.arange(B, device=device), best]


# --- BLEU, as sacreBLEU computes it by default (13a tokenisation, exp smoothing, one reference) ---
_13A_RULES = [
    (re.compile(r"([!-&(-+/:-@\[-`{-~])"), r" \1 "),  # ASCII punctuation except ' , - .
    (re.compile(r"([^0-9])([.,])"), r"\1 \2 "),       # . and , split off unless after a digit
    (re.compile(r"([.,])([^0-9])"), r" \1 \2"),       # ... or unless before one
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),           # a dash after a digit
]


def tokenize_13a(line: str) -> list[str]:
    """The mteval-v13a tokenisation (as in sacreBLEU): unescape a few entities, split punctuation."""
    line = line.rstrip().replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    for entity, char in (("&quot;", '"'), ("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">")):
        line = line.replace(entity, char)
    line = f" {line} "
    for pattern, replacement in _13A_RULES:
        line = pattern.sub(replacement, line)
    return line.split()


def ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def corpus_bleu(hypotheses: list[str], references: list[str], lowercase: bool = False, max_n: int = 4) -> float:
    """Corpus BLEU in [0, 100]: n-gram matches and counts summed over all sentences; lowercase: sacreBLEU's -lc."""
    matches, totals, hyp_len, ref_len = [0] * max_n, [0] * max_n, 0, 0
    for hyp, ref in zip(hypotheses, references, strict=True):
        h, r = (tokenize_13a(x.lower() if lowercase else x) for x in (hyp, ref))
        hyp_len, ref_len = hyp_len + len(h), ref_len + len(r)
        for n in range(1, max_n + 1):
            matches[n - 1] += sum((ngrams(h, n) & ngrams(r, n)).values())  # clipped: min(hyp, ref) per n-gram
            totals[n - 1] += max(len(h) - n + 1, 0)
    if not any(matches) or not all(totals):
        return 0.0
    log_precisions, halvings = [], 1.0
    for m, total in zip(matches, totals):
        halvings *= 1 if m else 2  # "exp" smoothing (mteval's): 1 / (2^k total) for the k-th empty order
        log_precisions.append(math.log(m / total if m else 1.0 / (halvings * total)))
    brevity = 1.0 if hyp_len >= ref_len else math.exp(1 - ref_len / hyp_len)
    return 100.0 * brevity * math.exp(sum(log_precisions) / max_n)


# --- Evaluation and the heat maps --------------------------------------------------------------
def translate(model, split: Split, decode: str, args: Args, max_len: int, device, batch: int = 250):
    """Ids of the decoded sources of a split, sentence by sentence, greedy or beam."""
    out = []
    for rows in torch.arange(len(split.src)).split(batch):
        src, _, _ = batch_of(split, rows, device)
        ids = (greedy_decode(model, src, max_len) if decode == "greedy"
               else beam_search(model, src, args.beam_size, max_len, args.length_penalty))
        out.extend(ids.tolist())
    return out


def score(hyp_ids, references: list[str], tgt_vocab: Vocab, tokenizer: Tokenizer) -> dict:
    """Exact match and BLEU, the references split and joined as the hypotheses were: a perfect translation
    scores 1 and 100 whatever its punctuation (with words, BLEU of the tokenised text, else of the text)."""
    hyps = [tokenizer.join(tgt_vocab.decode(ids)) for ids in hyp_ids]
    references = [tokenizer.join(tokenizer.split(r)) for r in references]
    exact = sum(h == r for h, r in zip(hyps, references)) / len(references)
    return {"exact_match": exact, "bleu": corpus_bleu(hyps, references),
            "bleu_lc": corpus_bleu(hyps, references, lowercase=True), "hypotheses": hyps}


def evaluate(model, pairs, split: Split, tgt_vocab, tokenizer, args: Args, max_len: int, device, label: str) -> dict:
    """Exact match and BLEU of greedy and of beam decoding on the test split, printed with 3 examples."""
    model.eval()
    refs = [t for _, t in pairs]
    greedy = score(translate(model, split, "greedy", args, max_len, device), refs, tgt_vocab, tokenizer)
    beam = score(translate(model, split, "beam", args, max_len, device), refs, tgt_vocab, tokenizer)
    print(f"test ({len(refs)} pairs) {label}: greedy exact match {greedy['exact_match']:.4f} BLEU "
          f"{greedy['bleu']:.2f} (lowercased {greedy['bleu_lc']:.2f}) | beam {args.beam_size} exact match "
          f"{beam['exact_match']:.4f} BLEU {beam['bleu']:.2f} (lowercased {beam['bleu_lc']:.2f})")
    for (source, target), hyp in list(zip(pairs, greedy["hypotheses"]))[:3]:
        print(f"  {source!r} -> {hyp!r} (reference {target!r})")
    return {"eval/exact_match": greedy["exact_match"], "eval/bleu": greedy["bleu"], "eval/bleu_lc": greedy["bleu_lc"],
            "eval/exact_match_beam": beam["exact_match"], "eval/bleu_beam": beam["bleu"],
            "eval/bleu_beam_lc": beam["bleu_lc"]}


@torch.no_grad()
def attention_figure(model, source: str, src_vocab, tgt_vocab, tokenizer, max_len, device, path: str) -> str:
    """Heat maps of the cross-attention weights while the model reads its own greedy translation of one source, one
    panel per decoder layer (rows of panels) and head (columns), saved as a PNG -> the translation."""
    from matplotlib.figure import Figure  # no pyplot: no display or backend needed

    model.eval()
    src_tokens = tokenizer.split(source)
    src = torch.tensor([src_vocab.encode(src_tokens)], device=device)
    out_tokens = tgt_vocab.decode(greedy_decode(model, src, max_len)[0].tolist())
    tgt_in = torch.tensor([[BOS] + tgt_vocab.encode(out_tokens)], device=device)
    model(src, tgt_in)  # every cross_attn keeps its weights (1, h, T, S)
    rows, cols = len(model.decoder), model.decoder[0].cross_attn.h
    fig = Figure(figsize=(2.6 * cols, 2.6 * rows + 0.6))
    for i, layer in enumerate(model.decoder):
        for j in range(cols):
            ax = fig.add_subplot(rows, cols, i * cols + j + 1)
            ax.imshow(layer.cross_attn.weights[0, j].cpu().numpy(), cmap="viridis", vmin=0, vmax=1, aspect="auto")
            ax.set_xticks(range(len(src_tokens)), [tokenizer.join([t]) for t in src_tokens], fontsize=6, rotation=90)
            ax.set_yticks(range(len(out_tokens) + 1), [tokenizer.join([t]) for t in out_tokens] + ["</s>"], fontsize=6)
            ax.set_title(f"layer {i + 1} head {j + 1}", fontsize=8)
    fig.suptitle(f"cross-attention: {source} -> {tokenizer.join(out_tokens)} (rows: output, columns: source)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path + ".tmp.png", dpi=100)
    os.replace(path + ".tmp.png", path)
    return tokenizer.join(out_tokens)


# =============================================================================================
# MACHINERY: argument checks, run folder, checkpoints, Ctrl-C, distributed set-up, logging.
# Not the algorithm: a first reading can skip to main().
# =============================================================================================
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
    """Combinations of flags that cannot work, one sentence each."""
    if args.batch_size % world_size:
        raise SystemExit(f"--batch-size {args.batch_size} is not a multiple of the {world_size} ranks: "
                         "pick a batch size that divides evenly.")
    if args.eval_checkpoint and (args.resume or args.save_model or args.track):
        raise SystemExit("--eval-checkpoint only evaluates: drop --resume, --save-model and --track.")
    if args.translate and not args.eval_checkpoint:
        raise SystemExit("--translate needs a trained model: add --eval-checkpoint runs/<run_name>/transformer.pt.")
    if args.translate is not None and not all(s.strip() for s in args.translate or [""]):  # a bare --translate: ()
        raise SystemExit("--translate was given an empty sentence or none: give each sentence as one quoted argument.")
    if args.d_model % args.n_heads:
        raise SystemExit(f"--d-model {args.d_model} is not a multiple of --n-heads {args.n_heads}: each head "
                         "gets d_model / n_heads features; pick numbers that divide.")
    if args.pos == "sinusoidal" and args.d_model % 2:
        raise SystemExit(f"--d-model {args.d_model} is odd: sinusoidal positions come in sin/cos pairs; "
                         "use an even width or --pos learned.")
    if args.warmup_steps >= args.num_iterations and not args.eval_checkpoint:  # resumed: the new total counts
        raise SystemExit(f"--warmup-steps {args.warmup_steps} is not below --num-iterations {args.num_iterations}: "
                         "the step size would only rise; lower --warmup-steps or raise --num-iterations.")
    # a data flag where it does not apply is refused, not ignored (a checkpoint's are checked against its own)
    date_task, one_file = not args.data_path, bool(args.data_path) and not os.path.isdir(args.data_path)
    for name, applies, where in (("num_train", date_task, "the date task (no --data-path)"),
                                 ("num_heldout", date_task, "the date task (no --data-path)"),
                                 ("heldout_fraction", one_file, "a single --data-path file"),
                                 ("tiktoken_encoding", args.tokenizer == "tiktoken", "--tokenizer tiktoken"),
                                 ("bpe_merges", args.tokenizer == "bpe", "--tokenizer bpe")):
        if not (applies or args.resume or args.eval_checkpoint) and getattr(args, name) != getattr(Args(), name):
            raise SystemExit(f"--{name.replace('_', '-')} {getattr(args, name)} applies only to {where}: drop it.")


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


# The flags that fix a checkpoint's data, vocabularies and shapes: --resume and --eval-checkpoint take its own.
RUN_FIELDS = ("data_path", "tokenizer", "tiktoken_encoding", "bpe_merges", "heldout_fraction", "num_train",
              "num_heldout", "d_model", "n_heads", "num_layers", "d_ff", "norm", "pos", "max_positions",
              "share_embeddings", "tie_output")


def checkpoint_args(args: Args, ckpt: dict, flag: str, path: str) -> Args:
    """args with the checkpoint's RUN_FIELDS; one given otherwise on the command line is refused."""
    clash = [f"--{k.replace('_', '-')} {getattr(args, k)} (it has {ckpt['args'][k]})" for k in RUN_FIELDS
             if getattr(args, k) not in (ckpt["args"][k], getattr(Args(), k))]
    if clash:
        raise SystemExit(f"{flag} {path} was trained with other data or another model: {', '.join(clash)}; "
                         "drop those flags, and its own are used.")
    if flag == "--resume" and ckpt["iteration"] >= args.num_iterations:
        raise SystemExit(f"--resume {path} is already at iteration {ckpt['iteration']}: raise --num-iterations "
                         "above it to train further.")
    if flag == "--resume" and not os.access(os.path.dirname(path) or ".", os.W_OK):
        raise SystemExit(f"--resume {path}: cannot write beside it; copy it to a folder you can write to.")
    own = {k: ckpt["args"][k] for k in RUN_FIELDS if getattr(args, k) == getattr(Args(), k) != ckpt["args"][k]}
    if own and int(os.environ.get("RANK", 0)) == 0:  # said, since a flag given at its default value looks ignored
        print(f"{flag} {path}: from the checkpoint " + ", ".join(f"{k}={v}" for k, v in own.items()))
    return dataclasses.replace(args, **{k: ckpt["args"][k] for k in RUN_FIELDS},
                               save_model=args.save_model or flag == "--resume")  # else a resume's new steps are lost


def main(args: Args) -> dict:
    """Train, then evaluate on the test set (with --eval-checkpoint: evaluate only). Returns evaluate()'s eval/* and,
    after training, the last val/*, train/* (of rank 0's rows of the last batch), iter, wall_time and ms_per_iter."""
    check_args(args)
    distributed, rank, world_size, device = setup_distributed(args)
    validate(args, world_size)
    is_main = rank == 0
    args = dataclasses.replace(args, translate=args.translate or ())  # checked: from here unset is no sentences
    path, flag = (args.resume, "--resume") if args.resume else (args.eval_checkpoint, "--eval-checkpoint")
    ckpt = load_checkpoint(path, flag) if path else None
    # Data paths are saved absolute, so a checkpoint finds its data from any folder; --data-path naming the same
    # file by another path, or the data where it has moved, stands in for it (the vocabularies must then match).
    args = dataclasses.replace(args, data_path=args.data_path and os.path.abspath(args.data_path))
    if ckpt and ckpt["args"]["data_path"]:
        saved = ckpt["args"]["data_path"] = os.path.abspath(ckpt["args"]["data_path"])
        if args.data_path and (not os.path.exists(saved) or os.path.exists(args.data_path)
                               and os.path.samefile(args.data_path, saved)):
            ckpt["args"]["data_path"] = args.data_path
        elif not os.path.exists(saved):
            raise SystemExit(f"{flag} {path} was trained on {saved}, which is not there now: give its data with "
                             "--data-path.")
    if ckpt:
        args = checkpoint_args(args, ckpt, flag, path)
    run_dir = (os.path.dirname(args.resume) or ".") if args.resume else ""  # a resumed run writes beside it
    if is_main and not path:
        task = os.path.splitext(os.path.basename(os.path.normpath(args.data_path)))[0] if args.data_path else "dates"
        run_dir = make_run_dir(f"{task}__{args.exp_name}__{args.seed}__{int(time.time())}")

    # Data: every rank builds the same vocabularies and tensors.
    data = (tsv_corpus(args.data_path, args.heldout_fraction) if args.data_path
            else date_task(args.num_train, args.num_heldout))
    train_texts = [text for pair in data["train"] for text in pair]  # --tokenizer bpe learns from both sides
    tokenizer = Tokenizer(args.tokenizer, args.tiktoken_encoding, train_texts, args.bpe_merges)
    tokens = {name: ([tokenizer.split(s) for s, _ in pairs], [tokenizer.split(t) for _, t in pairs])
              for name, pairs in data.items()}
    if args.share_embeddings:  # one vocabulary of both sides' tokens
        src_vocab = tgt_vocab = Vocab([tok for side in tokens["train"] for sent in side for tok in sent])
    else:
        src_vocab, tgt_vocab = (Vocab([tok for sent in tokens["train"][side] for tok in sent]) for side in (0, 1))
    if ckpt and (src_vocab.itos, tgt_vocab.itos) != (ckpt["src_vocab"], ckpt["tgt_vocab"]):
        raise SystemExit(f"{flag} {path}: its data ({args.data_path or 'the date task'}) now gives other "
                         "vocabularies than it was trained with; give it the data it was trained on.")
    tensors = {name: Split(*to_tensors([src_vocab.encode(s) for s in srcs], add_eos=False),
                           *to_tensors([tgt_vocab.encode(t) for t in tgts], add_eos=True))
               for name, (srcs, tgts) in tokens.items()}
    longest = max(max(split.src.size(1), split.tgt.size(1)) for split in tensors.values())
    if longest > args.max_positions:
        raise SystemExit(f"a sentence of {longest} tokens is longer than --max-positions "
                         f"{args.max_positions}: raise it to at least {longest}, or drop the long pairs.")
    # decoding stops at twice the longest training target, or where the positions end (the heat map re-reads
    # <s> and the output: one position more)
    max_len = min(2 * tensors["train"].tgt.size(1), args.max_positions - 1)
    if is_main:
        print(f"{args.data_path or 'date task'}: " + ", ".join(f"{k} {len(v)}" for k, v in data.items())
              + f" pairs; vocab {len(src_vocab.itos)} -> {len(tgt_vocab.itos)} ({args.tokenizer}); "
              f"{world_size} rank(s) on {device}; {args.norm}-norm, {args.pos} positions")

    torch.manual_seed(args.seed + rank)  # dropout; DDP broadcasts rank 0's initial weights
    torch.backends.cudnn.deterministic = args.torch_deterministic
    make_model = lambda: Transformer(len(src_vocab.itos), len(tgt_vocab.itos), args.d_model, args.n_heads,
                                     args.num_layers, args.d_ff, args.dropout, args.norm, args.pos,
                                     args.max_positions, args.share_embeddings, args.tie_output)
    # A network that memory cannot hold is refused, its empty run folder removed: its parameters counted on the meta
    # device (nothing allocated), 16 bytes each with their gradients and Adam's two moments, and its float32 buffers
    # (the sinusoidal table).
    with torch.device("meta"):
        meta = make_model()
    params, table = sum(p.numel() for p in meta.parameters()), sum(b.numel() for b in meta.buffers())
    need, have = 16 * params + 4 * table, (
        torch.cuda.get_device_properties(device).total_memory if device.type == "cuda"
        else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else math.inf)
    if need > have:
        if is_main and not path:
            os.rmdir(run_dir)
        raise SystemExit(f"--d-model {args.d_model}, --d-ff {args.d_ff}, --num-layers {args.num_layers} and "
                         f"--max-positions {args.max_positions} make {params:,} parameters and {table:,} table "
                         f"entries, {need / 2**30:,.1f} GiB with the gradients and Adam's moments, more than the "
                         f"{have / 2**30:,.1f} GiB of this {device.type}: lower them.")
    model = make_model().to(device)
    if ckpt:
        model.load_state_dict(ckpt["model"])
    if args.eval_checkpoint:
        metrics, folder = {}, os.path.dirname(path) or "."
        if is_main and args.translate and not os.access(folder, os.W_OK):
            raise SystemExit(f"--translate writes its heat maps beside {path}, and {folder} is not writable; "
                             "copy the checkpoint to a folder you can write to.")
        for i, n in enumerate(len(tokenizer.split(sentence)) for sentence in args.translate):
            if n > args.max_positions:
                raise SystemExit(f"--translate sentence {i + 1} has {n} tokens, more than the {args.max_positions} "
                                 "positions of this model: shorten it.")
        n = 1  # translation_<n>.png counts on past the heat maps already there: none is overwritten
        for sentence in args.translate if is_main else ():
            while os.path.exists(figure := os.path.join(folder, f"translation_{n}.png")):
                n += 1
            greedy = attention_figure(model, sentence, src_vocab, tgt_vocab, tokenizer, max_len, device, figure)
            src = torch.tensor([src_vocab.encode(tokenizer.split(sentence))], device=device)
            beam = beam_search(model, src, args.beam_size, max_len, args.length_penalty)[0].tolist()
            print(f"{sentence!r}\n  greedy: {greedy!r}\n  beam {args.beam_size}: "
                  f"{tokenizer.join(tgt_vocab.decode(beam))!r}\n  cross-attention heat map: {figure}")
        if is_main and not args.translate:
            metrics = evaluate(model, data["test"], tensors["test"], tgt_vocab, tokenizer, args, max_len, device,
                               f"after {ckpt['iteration']} iterations ({path})")
        if distributed:
            dist.barrier()  # all ranks finished (rank 0 evaluates last) before the group goes
            dist.destroy_process_group()
        return metrics
    if is_main:
        print(f"{sum(p.numel() for p in model.parameters()):,} parameters")
    ddp_model = DDP(model) if distributed else model
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate, betas=(0.9, 0.98), eps=1e-9)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" or args.cpu_bf16)
    logger = RunLog(args, os.path.basename(os.path.abspath(run_dir)), run_dir) if is_main else None

    @torch.no_grad()
    def validation() -> dict:
        """The plain cross-entropy (no smoothing) per real token, greedy exact match and BLEU."""
        model.eval()
        losses, n_tokens = [], 0
        for rows in torch.arange(len(tensors["val"].src)).split(250):
            src, tgt_in, tgt_out = batch_of(tensors["val"], rows, device)
            with autocast:
                logits = model(src, tgt_in)
            real = int((tgt_out != PAD).sum())  # weigh each chunk's per-token mean by its tokens
            losses.append(label_smoothed_loss(logits, tgt_out, 0.0).item() * real)
            n_tokens += real
        hyps = translate(model, tensors["val"], "greedy", args, max_len, device)
        model.train()
        scores = score(hyps, [t for _, t in data["val"]], tgt_vocab, tokenizer)
        return {"val/loss": sum(losses) / n_tokens, "val/exact_match": scores["exact_match"],
                "val/bleu": scores["bleu"]}

    def save(path: str) -> None:
        """Every rank calls it; rank 0 saves all an exact resume needs, each rank's random state (dropout) included."""
        mine = {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
        states = [None] * world_size if distributed else [mine]
        if distributed:
            dist.all_gather_object(states, mine)
        if is_main:
            save_checkpoint(path, {"algo": ALGO, "args": dataclasses.asdict(args), "model": model.state_dict(),
                                   "src_vocab": src_vocab.itos, "tgt_vocab": tgt_vocab.itos,
                                   "optimizer": optimizer.state_dict(), "iteration": it, "order": order,
                                   "cursor": cursor, "order_rng": order_gen.get_state(), "rng": states})

    order_gen = torch.Generator().manual_seed(args.seed)  # without the rank: every rank draws the same permutation
    n_train, per_rank = len(tensors["train"].src), args.batch_size // world_size
    if n_train < args.batch_size:  # else some rank's share of a batch would be empty
        raise SystemExit(f"the training split has {n_train} pairs, fewer than --batch-size {args.batch_size}: "
                         "lower --batch-size or add training pairs.")
    lengths = tensors["train"].src_len + tensors["train"].tgt_len
    it, order, cursor = 0, epoch_order(lengths, args.batch_size, args.bucket_pool, order_gen), 0
    if ckpt:  # continue where it stopped: the step, the data order, the optimizer and the random streams
        optimizer.load_state_dict(ckpt["optimizer"])
        it, order, cursor = ckpt["iteration"], ckpt["order"], ckpt["cursor"]
        order_gen.set_state(ckpt["order_rng"])
        if len(ckpt["rng"]) == world_size:  # the same ranks continue their own random streams
            torch.set_rng_state(ckpt["rng"][rank]["torch"])
            if device.type == "cuda":
                torch.cuda.set_rng_state(ckpt["rng"][rank]["cuda"], device)
    start_it, metrics, train_loss, eval_seconds, start = it, {}, float("nan"), 0.0, time.time()
    checkpoint = (args.resume or os.path.join(run_dir, f"{ALGO}.pt")) if is_main else ""  # a resume saves to its file
    stop = StopFlag()
    while it < args.num_iterations:
        if stop.requested if not distributed else stop.agreed(device):  # under torchrun all ranks stop at one step
            break
        if cursor + args.batch_size > len(order):  # a new epoch
            order, cursor = epoch_order(lengths, args.batch_size, args.bucket_pool, order_gen), 0
        rows = order[cursor:cursor + args.batch_size][rank * per_rank:(rank + 1) * per_rank]
        cursor += args.batch_size
        src, tgt_in, tgt_out = batch_of(tensors["train"], rows, device)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(it + 1, args)
        with autocast:
            logits = ddp_model(src, tgt_in)
        loss = label_smoothed_loss(logits, tgt_out, args.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # DDP averages the gradients of the ranks here
        nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
        train_loss, it = loss.item(), it + 1
        if not math.isfinite(train_loss):  # stop (exit 1) instead of training garbage to the end
            raise SystemExit(f"step {it}: the training loss is {train_loss}; lower --learning-rate or --grad-clip.")
        if is_main and (it % args.eval_interval == 0 or it == args.num_iterations):
            eval_start = time.time()
            metrics = {"train/loss": train_loss, "train/lr": learning_rate_at(it, args), **validation(), "iter": it}
            now = time.time()
            eval_seconds += now - eval_start  # ms_per_iter counts training steps alone
            metrics |= {"wall_time": now - start, "ms_per_iter": 1000 * (now - start - eval_seconds) / (it - start_it)}
            print(f"iter {it:>6}  train loss {train_loss:.4f}  val loss {metrics['val/loss']:.4f}  "
                  f"val exact match {metrics['val/exact_match']:.4f}  val BLEU {metrics['val/bleu']:.2f}  "
                  f"{metrics['ms_per_iter']:.1f} ms/iter")
            logger.log(metrics, it)
        if args.save_model and it % args.eval_interval == 0 and it < args.num_iterations:
            save(checkpoint)  # a killed run loses at most one interval
    wall_time = time.time() - start

    if args.save_model and it == args.num_iterations:  # before the final evaluation: no failure there can cost it
        save(checkpoint)
    stop.evaluating = is_main  # from here rank 0's Ctrl-C stops the final evaluation at once; the work is kept below
    with contextlib.suppress(KeyboardInterrupt):
        if is_main and it == args.num_iterations and not stop.requested:
            print(f"final evaluation: greedy and beam {args.beam_size} on {len(data['test'])} test pairs "
                  "(a Ctrl-C stops it and keeps the model)")
            metrics |= evaluate(model, data["test"], tensors["test"], tgt_vocab, tokenizer, args, max_len, device,
                                f"after {it} iterations in {wall_time:.1f} s") | {"wall_time": wall_time}
            figure = os.path.join(run_dir, "cross_attention.png")
            attention_figure(model, data["test"][0][0], src_vocab, tgt_vocab, tokenizer, max_len, device, figure)
            print(f"wrote {figure} (cross-attention of a test sentence, every layer and head)")
            picture = {"eval/attention": logger.wandb.Image(figure)} if logger.wandb else {}
            final = {k: v for k, v in metrics.items() if k.startswith("eval/")} | {"wall_time": wall_time}
            logger.log(final | picture, it)
            logger.close()
            if not args.save_model:
                print(f"(the model was not saved: add --save-model to keep it in {run_dir}/)")
    stop.evaluating = False  # evaluated: a Ctrl-C from here asks to stop, and the model is kept below
    if stop.requested if not distributed else stop.agreed(device):  # Ctrl-C: keep the work, say how to go on
        if is_main:
            print(f"interrupted at iteration {it}")
        save(checkpoint)
        if is_main and it == args.num_iterations:  # trained: what is left is the evaluation
            print("to evaluate it: " + shlex.join(["python", sys.argv[0], "--eval-checkpoint", checkpoint,
                                                   "--beam-size", str(args.beam_size),
                                                   "--length-penalty", str(args.length_penalty)]))
        elif is_main:
            argv = sys.argv[1:]  # this command's arguments, less a --resume PATH of its own
            argv = [a for i, a in enumerate(argv) if "--resume" not in (a.split("=")[0], argv[i - 1] if i else "")]
            # under torchrun, as many ranks again: they continue their own random streams exactly
            launcher = ["torchrun", "--standalone", f"--nproc_per_node={world_size}"] if distributed else ["python"]
            print("to resume it: " + shlex.join([*launcher, sys.argv[0], *argv, "--resume", checkpoint]))
        sys.exit(130)
    if distributed:
        dist.destroy_process_group()  # every rank has passed the agreement above, after rank 0's evaluation
    return metrics

if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # progress lines appear even when redirected
    try:
        main(tyro.cli(Args))
    except KeyboardInterrupt:  # Ctrl-C before the training loop listens for it
        print("stopped by Ctrl-C before training; nothing was saved.", file=sys.stderr)
        sys.exit(130)
