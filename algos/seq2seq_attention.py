"""Sequence to sequence with attention: a GRU encoder-decoder with Bahdanau or Luong attention, masking, beam search
and BLEU, in one file.

An encoder reads the source x_1..x_S into vectors h_1..h_S; a decoder writes the target one token at a time. Without
attention (Sutskever et al. 2014) the whole source has to squeeze through the decoder's first state. With attention
(Bahdanau et al. 2015) every decoder step looks back at all h_j, weighs them by how well they match its state s, and
reads their weighted mean, the context c:

    scores      e_j = v^T tanh(W s + U h_j)         additive, "bahdanau" (Bahdanau et al. eq. 6)
                e_j = s^T h_j                       "dot"      (Luong et al. eq. 8)
                e_j = s^T W_a h_j                   "general"  (Luong et al. eq. 8)
    weights     a_j = exp(e_j) / sum_k exp(e_k)     padding positions get e_j = -inf, so a_j = 0
    context     c = sum_j a_j h_j

The papers also differ in *when* the decoder attends. Bahdanau ("bahdanau"): the previous state s_{t-1} queries, then
the GRU reads [embedding of y_{t-1}; c_t]. Luong ("dot", "general"): the GRU steps first (fed the previous attentional
vector, "input feeding", sec. 3.3), its new state s_t queries, and h~_t = tanh(W_c [c_t; s_t]) (eq. 5) predicts y_t.
A bidirectional GRU encoder lets h_j see the whole source; the decoder's state is as wide as h_j, as "dot" requires.

Training minimises the cross-entropy of the next target token. Padding is masked out of the attention and the loss, and
packed sequences keep it out of the encoder's final states, so a sentence's result does not depend on the rest of its
batch (a test checks it). With --teacher-forcing p < 1 the decoder reads its own previous prediction instead of the
true token at a fraction 1 - p of the steps, to practise recovering.

Decoding: greedy, or beam search keeping the K best partial translations per sentence, all sentences and beams in one
batch. Hypotheses are ranked by log P(Y|X) / lp(Y) with the length penalty lp(Y) = ((5 + |Y|) / 6)^alpha (Wu et al.
2016, eq. 14), so that short outputs are not preferred.

Evaluation: exact match and corpus BLEU (Papineni et al. 2002) = BP * exp(mean of log p_n, n = 1..4), p_n the clipped
n-gram precisions over the whole test set, BP = min(1, exp(1 - ref_len / hyp_len)), as sacreBLEU scores by default
(mteval-v13a tokens, "exp" smoothing of zero counts; a test compares them), cased and lowercased (sacreBLEU's -lc). A
PNG of the attention weights of a few test sentences goes to runs/<run_name>/attention.png; --translate draws one for
each sentence it is given.

Data: by default dates between 1950 and 2049 in 13 human formats ("3 March 1998", "03/03/98", "Tue Mar 03 1998", "the
3rd of March 1998" ...) to translate into ISO "1998-03-03"; held-out dates never occur in training; numeric dates are
day first, two-digit years 19xx from 50 up. Or --data-path: UTF-8 "source<TAB>target" lines, one file split here or a
folder with train.tsv, val.tsv and test.tsv (data/parallel/README.md gives the rules and says how to get Tatoeba or
Multi30k). Tokens are characters, words, tiktoken subwords, or a byte-level BPE (Sennrich et al. 2016) learned here
from both sides of the training split, so any Unicode text splits into known symbols and joins back exactly; the
vocabularies hold the tokens seen in training. --bucket-pool batches pairs of similar length, so less is padding.

Distributed: under torchrun each rank takes its own rows of every batch (--batch-size counts all ranks) and
DistributedDataParallel averages the gradients; rank 0 alone evaluates, prints, logs and saves. On CUDA the forward
pass runs in bfloat16 autocast (--dtype float16 for a GPU without bfloat16: float16 with a gradient scaler); on the CPU
only with --cpu-bf16. Ctrl-C stops training at the end of a step, saves runs/<run_name>/seq2seq_attention.pt
(optimizer, data order, random states included) and prints the command that resumes it exactly; in the final
evaluation it stops that at once, saves the model and prints the command that evaluates it.

References
    Sutskever, Vinyals, Le 2014, "Sequence to Sequence Learning with Neural Networks", arXiv:1409.3215.
    Bahdanau, Cho, Bengio 2015, "Neural Machine Translation by Jointly Learning to Align and
        Translate", ICLR, arXiv:1409.0473.
    Luong, Pham, Manning 2015, "Effective Approaches to Attention-based Neural Machine
        Translation", EMNLP, arXiv:1508.04025.
    Sennrich, Haddow, Birch 2016, "Neural Machine Translation of Rare Words with Subword Units", ACL,
        arXiv:1508.07909 (BPE).
    Wu et al. 2016, "Google's Neural Machine Translation System", arXiv:1609.08144 (length penalty).
    Papineni et al. 2002, "BLEU: a Method for Automatic Evaluation of Machine Translation", ACL.
    Post 2018, "A Call for Clarity in Reporting BLEU Scores", WMT, arXiv:1804.08771 (sacreBLEU).

Usage
    python algos/seq2seq_attention.py                              # date task, the main job
    python algos/seq2seq_attention.py --num-iterations 300         # a quick run
    python algos/seq2seq_attention.py --attention general --teacher-forcing 0.8
    torchrun --standalone --nproc_per_node=2 algos/seq2seq_attention.py
    python algos/seq2seq_attention.py --save-model                 # keep the model in runs/<run_name>/
    python algos/seq2seq_attention.py --eval-checkpoint runs/<run_name>/seq2seq_attention.pt  # --data-path x.tsv: on x
    python algos/seq2seq_attention.py --resume runs/<run_name>/seq2seq_attention.pt --num-iterations 2000  # + its flags
    python algos/seq2seq_attention.py --eval-checkpoint runs/<run_name>/seq2seq_attention.pt --translate "3 Mar 1998"
    Multi30k German -> English, Tatoeba English -> French: the commands are in README.md and data/parallel/README.md
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
import textwrap
import time
from collections import Counter
from dataclasses import dataclass
from typing import Annotated, Literal, NamedTuple, Optional, get_type_hints

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
import tyro
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence, pad_sequence

ALGO = "seq2seq_attention"


@dataclass(frozen=True)
class Range:
    """Valid values of a numeric field: lo <= x <= hi (lo < x with lo_open), and finite; check_args enforces them."""

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False


@dataclass
class Args:
    """Encoder-decoder with attention on the date task or a tab-separated parallel corpus."""

    exp_name: str = "seq2seq_attention"  # name of this experiment (part of the run name)
    # seed of the model and the batch order (rank r uses seed + r); the date task's data is fixed
    seed: Annotated[int, Range(0, 2**31 - 1)] = 1
    torch_deterministic: bool = True  # set torch.backends.cudnn.deterministic
    cuda: bool = True  # use CUDA when it is available
    # on CUDA: bf16 or fp16 autocast (fp16 with a gradient scaler) or float32 (TF32 off); CPU: float32 unless --cpu-bf16
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    cpu_bf16: bool = False  # bfloat16 autocast on the CPU too: faster only where the CPU has AVX512-BF16 or AMX
    num_threads: Annotated[int, Range(1)] = 1  # torch CPU threads; small recurrent nets run fastest with one
    track: bool = False  # log to Weights & Biases
    wandb_project_name: str = "algos"  # the wandb project
    wandb_entity: Optional[str] = None  # the wandb entity (team)
    save_model: bool = False  # save the model and all --resume needs to runs/<run_name>/seq2seq_attention.pt
    # continue training to --num-iterations and save to it (its data and model flags; give the training flags again:
    # the command Ctrl-C prints does); the cosine schedule spans the new --num-iterations
    resume: Optional[str] = None
    # evaluate this checkpoint on its test set or another --data-path's pairs, greedy and with --beam-size; no training
    eval_checkpoint: Optional[str] = None
    # --eval-checkpoint: translate these sentences, each with an attention heat map
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

    # score function: additive v^T tanh(W s + U h) (Bahdanau), or Luong's s^T h / s^T W_a h
    attention: Literal["bahdanau", "dot", "general"] = "bahdanau"
    embed_dim: Annotated[int, Range(1)] = 32  # token embedding size
    hidden_size: Annotated[int, Range(1)] = 64  # GRU size per encoder direction; the decoder's is twice this
    dropout: Annotated[float, Range(0, 0.99)] = 0.1  # dropout on embeddings and before the output layer
    # probability that a decoder step in training reads the true previous token (else its own guess)
    teacher_forcing: Annotated[float, Range(0, 1)] = 1.0

    # optimizer steps, each over a batch of all ranks together (counted over all resumes)
    num_iterations: Annotated[int, Range(1)] = 1_000
    batch_size: Annotated[int, Range(1)] = 64  # sentence pairs per step (all ranks together)
    # pairs of similar length share a batch: pools of this many batches sorted by length; 0: random batches
    bucket_pool: Annotated[int, Range(0)] = 0
    learning_rate: Annotated[float, Range(0, lo_open=True)] = 3e-3  # Adam step size, decaying along a cosine to a tenth
    # clip the global gradient norm to this (recurrent nets have rare exploding steps)
    grad_clip: Annotated[float, Range(0, lo_open=True)] = 1.0
    # val loss, greedy exact match and BLEU (and, with --save-model, a checkpoint) every this many steps
    eval_interval: Annotated[int, Range(1)] = 250
    beam_size: Annotated[int, Range(1)] = 5  # beam width of the final beam-search evaluation (1 is greedy)
    length_penalty: Annotated[float, Range(0, 5)] = 0.6  # alpha in lp(Y) = ((5 + |Y|) / 6)^alpha; 0: none; <= 5: finite


# =============================================================================================
# ALGORITHM: the data and tokens, the encoder, attention and decoder, the loss, greedy and beam
# decoding, BLEU, evaluation. Read this first.
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
    """Byte-level BPE learned from the training text (Sennrich et al. 2016, in GPT-2's byte form): the text is cut into
    words (each keeps its leading space), a word into its UTF-8 bytes; then num_merges times the most frequent adjacent
    pair of symbols in the corpus becomes one new symbol (ties: the smaller pair). Only the words holding the merged
    pair are recounted. A symbol is a str of byte values (latin-1). Encoding applies the merges in learned order."""

    WORDS = re.compile(r" ?\w+| ?[^\w\s]+|\s+")

    def __init__(self, texts: list[str], num_merges: int):
        words = Counter(w for text in texts for w in self.WORDS.findall(text))
        symbols = [list(w.encode().decode("latin-1")) for w in words]  # a word as its bytes
        freq, pairs, where, touched = list(words.values()), Counter(), {}, set()

        def count(i: int, sign: int) -> None:  # add (sign 1) or take away (-1) word i's pairs, noting i in where
            for pair in zip(symbols[i], symbols[i][1:]):
                pairs[pair] += sign * freq[i]
                where.setdefault(pair, set()).add(i)
                touched.add(pair)

        for i in range(len(symbols)):
            count(i, 1)
        heap = [(-n, pair) for pair, n in pairs.items()]
        heapq.heapify(heap)
        self.ranks: dict[tuple[str, str], int] = {}
        while heap and len(self.ranks) < num_merges:
            n, best = heapq.heappop(heap)
            if -n != pairs[best] or n == 0:  # a stale entry: the count has changed since it was pushed
                continue
            self.ranks[best] = len(self.ranks)
            touched.clear()
            for i in where.pop(best):
                count(i, -1)
                symbols[i] = self.merge(symbols[i], best)
                count(i, 1)
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
    """Rows of a split, cut to their longest sentences -> src, src_len (kept on the CPU, where
    packing wants it), tgt_in = <s> y_1 .. y_n for the decoder to read, tgt_out = y_1 .. y_n </s>."""
    src, src_len, tgt, tgt_len = (x[index] for x in split)
    src, tgt = src[:, :int(src_len.max())], tgt[:, :int(tgt_len.max())]
    tgt_in = torch.cat([torch.full_like(tgt[:, :1], BOS), tgt[:, :-1]], dim=1)
    return src.to(device), src_len, tgt_in.to(device), tgt.to(device)


# --- Model -------------------------------------------------------------------------------------
class Encoder(nn.Module):
    """Bidirectional GRU over packed sequences: padding never enters the recurrence."""

    def __init__(self, vocab_size: int, embed_dim: int, hidden: int, dropout: float):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD)
        self.rnn = nn.GRU(embed_dim, hidden, batch_first=True, bidirectional=True)
        self.drop = nn.Dropout(dropout)

    def forward(self, src: torch.Tensor, src_len: torch.Tensor):
        x = self.drop(self.embed(src))
        out, h_n = self.rnn(pack_padded_sequence(x, src_len.cpu(), batch_first=True, enforce_sorted=False))
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=src.size(1))
        # h_j = [forward h_j; backward h_j]; the final states: forward at S, backward at 1.
        return out, torch.cat([h_n[0], h_n[1]], dim=-1)


class Attention(nn.Module):
    """Scores of a query s against the encoder's h_j, softmax over the real (unpadded) j."""

    def __init__(self, kind: str, dim: int):
        super().__init__()
        self.kind = kind
        if kind == "bahdanau":
            self.W = nn.Linear(dim, dim, bias=False)
            self.U = nn.Linear(dim, dim)
            self.v = nn.Linear(dim, 1, bias=False)
        elif kind == "general":
            self.W_a = nn.Linear(dim, dim, bias=False)

    def keys(self, h: torch.Tensor) -> torch.Tensor:
        """The part of the score that depends on h_j alone, computed once per source."""
        return self.U(h) if self.kind == "bahdanau" else self.W_a(h) if self.kind == "general" else h

    def forward(self, s, keys, values, mask):
        if self.kind == "bahdanau":
            scores = self.v(torch.tanh(self.W(s).unsqueeze(1) + keys)).squeeze(-1)  # v^T tanh(W s + U h_j)
        else:
            scores = (keys @ s.unsqueeze(-1)).squeeze(-1)  # s^T h_j  or  s^T (W_a h_j)
        weights = scores.float().masked_fill(~mask, float("-inf")).softmax(dim=-1)  # float32 softmax under autocast
        context = (weights.to(values.dtype).unsqueeze(1) @ values).squeeze(1)
        return context, weights


class Decoder(nn.Module):
    """One step of the attentional GRU decoder, Bahdanau's order or Luong's (module docstring)."""

    def __init__(self, vocab_size: int, embed_dim: int, dim: int, kind: str, dropout: float):
        super().__init__()
        self.kind = kind
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD)
        self.attention = Attention(kind, dim)
        self.cell = nn.GRUCell(embed_dim + dim, dim)  # reads [E y_{t-1}; c_t] or [E y_{t-1}; h~_{t-1}]
        self.combine = nn.Linear(2 * dim + (embed_dim if kind == "bahdanau" else 0), dim)
        self.out = nn.Linear(dim, vocab_size)
        self.drop = nn.Dropout(dropout)

    def step(self, y_prev, state, feed, keys, values, mask):
        """-> logits of y_t, the new state s_t, the attentional vector h~_t (the next step's feed), a_t."""
        e = self.drop(self.embed(y_prev))
        if self.kind == "bahdanau":
            context, weights = self.attention(state, keys, values, mask)  # s_{t-1} queries
            state = self.cell(torch.cat([e, context], -1), state)
            h_tilde = torch.tanh(self.combine(torch.cat([state, context, e], -1)))  # a tanh layer, not maxout
        else:
            state = self.cell(torch.cat([e, feed], -1), state)  # input feeding (Luong sec. 3.3)
            context, weights = self.attention(state, keys, values, mask)  # s_t queries
            h_tilde = torch.tanh(self.combine(torch.cat([context, state], -1)))  # Luong eq. 5
        return self.out(self.drop(h_tilde)), state, h_tilde, weights


class Seq2Seq(nn.Module):
    def __init__(self, src_vocab: int, tgt_vocab: int, embed_dim: int, hidden: int, kind: str, dropout: float):
        super().__init__()
        self.encoder = Encoder(src_vocab, embed_dim, hidden, dropout)
        self.decoder = Decoder(tgt_vocab, embed_dim, 2 * hidden, kind, dropout)
        self.init_state = nn.Linear(2 * hidden, 2 * hidden)

    def encode(self, src, src_len):
        """-> s_0 = tanh(W [final forward state; final backward state]), the first feed h~_0 = 0,
        the attention's keys (Attention.keys) and values h_j, and the mask (True at real positions)."""
        h, final = self.encoder(src, src_len)
        mask = torch.arange(src.size(1), device=src.device) < src_len.to(src.device).unsqueeze(1)
        state = torch.tanh(self.init_state(final))
        return state, torch.zeros_like(state), self.decoder.attention.keys(h), h, mask

    def forward(self, src, src_len, tgt_in, teacher_forcing: float = 1.0):
        """Logits (B, T, V); step t reads the true y_{t-1} or, with probability 1 - teacher_forcing, its own guess."""
        state, feed, keys, values, mask = self.encode(src, src_len)
        logits = []
        for t in range(tgt_in.size(1)):
            y_prev = tgt_in[:, t]
            if t > 0 and teacher_forcing < 1.0:
                own = torch.rand(y_prev.shape, device=y_prev.device) >= teacher_forcing
                y_prev = torch.where(own, logits[-1].argmax(-1), y_prev)
            step_logits, state, feed, _ = self.decoder.step(y_prev, state, feed, keys, values, mask)
            logits.append(step_logits)
        return torch.stack(logits, dim=1)


def sequence_loss(logits: torch.Tensor, tgt_out: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over real target tokens; padded positions do not count."""
    return F.cross_entropy(logits.float().flatten(0, 1), tgt_out.flatten(), ignore_index=PAD)


# --- Decoding ----------------------------------------------------------------------------------
@torch.no_grad()
def greedy_decode(model: Seq2Seq, src, src_len, max_len: int):
    """Argmax at every step, all sentences at once -> ids (B, T), PAD after </s>, and attention (B, T, S)."""
    state, feed, keys, values, mask = model.encode(src, src_len)
    y = torch.full((src.size(0),), BOS, dtype=torch.long, device=src.device)
    done = torch.zeros_like(y, dtype=torch.bool)
    out, attn = [], []
    for _ in range(max_len):
        logits, state, feed, weights = model.decoder.step(y, state, feed, keys, values, mask)
        y = logits.argmax(-1).masked_fill(done, PAD)
        out.append(y)
        attn.append(weights)
        done |= y == EOS
        if done.all():
            break
    return torch.stack(out, 1), torch.stack(attn, 1)


def length_penalty(length: torch.Tensor, alpha: float) -> torch.Tensor:
    return ((5.0 + length) / 6.0) ** alpha  # lp(Y) = ((5 + |Y|) / 6)^alpha (Wu et al. 2016, eq. 14)


@torch.no_grad()
def beam_search(model: Seq2Seq, src, src_len, beam_size: int, max_len: int, alpha: float) -> torch.Tensor:
    """Batched beam search -> the best hypothesis per sentence, ids (B, T), PAD after </s>. Row b * K + k holds beam k
    of sentence b. A finished beam stays in the beam, extended only by PAD at no cost: it competes with the live ones
    until the end. Live candidates share a length, so log P / lp ranks them as log P does: K = 1 is exactly greedy."""
    B, K, device = src.size(0), beam_size, src.device
    state, feed, keys, values, mask = (x.repeat_interleave(K, dim=0) for x in model.encode(src, src_len))
    scores = torch.zeros(B, K, device=device)
    scores[:, 1:] = float("-inf")  # the K copies start identical: let only one of them expand
    lengths, finished = torch.zeros(B, K, device=device), torch.zeros(B, K, dtype=torch.bool, device=device)
    y = torch.full((B * K,), BOS, dtype=torch.long, device=device)
    history = torch.zeros(B * K, 0, dtype=torch.long, device=device)
    rows = torch.arange(B, device=device).unsqueeze(1) * K
    for t in range(max_len):
        logits, state, feed, _ = model.decoder.step(y, state, feed, keys, values, mask)
        logp = logits.float().log_softmax(-1).view(B, K, -1)
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
        state, feed, y = state[flat], feed[flat], token.view(-1)
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


# --- Evaluation and the heat map ---------------------------------------------------------------
def translate(model, split: Split, decode: str, args: Args, max_len: int, device, batch: int = 250):
    """Ids of the decoded sources of a split, sentence by sentence, greedy or beam."""
    out = []
    for rows in torch.arange(len(split.src)).split(batch):
        src, src_len, _, _ = batch_of(split, rows, device)
        ids = (greedy_decode(model, src, src_len, max_len)[0] if decode == "greedy"
               else beam_search(model, src, src_len, args.beam_size, max_len, args.length_penalty))
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


def attention_figure(model, pairs, src_vocab, tgt_vocab, tokenizer, max_len, device, path: str) -> list[str]:
    """The greedy translations; a PNG of their attention weights, a panel each (rows: output, columns: source)."""
    from matplotlib.figure import Figure  # no pyplot: no display or backend needed

    model.eval()
    fig, translations = Figure(figsize=(4.2 * len(pairs), 4.2)), []
    for k, (source, _) in enumerate(pairs):
        src_tokens = tokenizer.split(source)
        src = torch.tensor([src_vocab.encode(src_tokens)], device=device)
        ids, weights = greedy_decode(model, src, torch.tensor([len(src_tokens)]), max_len)
        out_tokens = tgt_vocab.decode(ids[0].tolist())
        ax = fig.add_subplot(1, len(pairs), k + 1)
        ax.imshow(weights[0, :len(out_tokens) + 1].cpu().numpy(), cmap="viridis", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(src_tokens)), [tokenizer.join([t]) for t in src_tokens], fontsize=7, rotation=90)
        ax.set_yticks(range(len(out_tokens) + 1), [tokenizer.join([t]) for t in out_tokens] + ["</s>"], fontsize=7)
        translations.append(tokenizer.join(out_tokens))
        ax.set_title(textwrap.fill(source, 60) + "\n-> " + textwrap.fill(translations[-1], 60), fontsize=8)
        ax.set_xlabel("source")
    fig.axes[0].set_ylabel("output")
    fig.tight_layout()
    fig.savefig(path + ".tmp.png", dpi=110)
    os.replace(path + ".tmp.png", path)
    return translations


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


def validate(args: Args, world_size: int) -> None:
    """Combinations of flags that cannot work, one sentence each."""
    if args.batch_size % world_size:
        raise SystemExit(f"--batch-size {args.batch_size} is not a multiple of the {world_size} ranks: "
                         "pick a batch size that divides evenly.")
    if args.eval_checkpoint and (args.resume or args.save_model or args.track):
        raise SystemExit("--eval-checkpoint only evaluates: drop --resume, --save-model and --track.")
    if args.translate and not args.eval_checkpoint:
        raise SystemExit("--translate needs a trained model: add --eval-checkpoint "
                         "runs/<run_name>/seq2seq_attention.pt.")
    if args.translate is not None and not all(s.strip() for s in args.translate or [""]):  # a bare --translate: ()
        raise SystemExit("--translate was given an empty sentence or none: give each sentence as one quoted argument.")
    # a data flag where it does not apply is refused, not ignored (a checkpoint's are checked against its own)
    date_task, one_file = not args.data_path, bool(args.data_path) and not os.path.isdir(args.data_path)
    for name, applies, where in (("num_train", date_task, "the date task (no --data-path)"),
                                 ("num_heldout", date_task, "the date task (no --data-path)"),
                                 ("heldout_fraction", one_file, "a single --data-path file"),
                                 ("tiktoken_encoding", args.tokenizer == "tiktoken", "--tokenizer tiktoken"),
                                 ("bpe_merges", args.tokenizer == "bpe", "--tokenizer bpe")):
        if not (applies or args.resume or args.eval_checkpoint) and getattr(args, name) != getattr(Args(), name):
            raise SystemExit(f"--{name.replace('_', '-')} {getattr(args, name)} applies only to {where}: drop it.")
    if (args.dtype == "bfloat16" and args.cuda and torch.cuda.is_available()
            and not torch.cuda.is_bf16_supported(including_emulation=False)):
        raise SystemExit(f"--dtype bfloat16: this GPU ({torch.cuda.get_device_name()}) has no bfloat16; "
                         "pass --dtype float16 (trained with a gradient scaler) or --dtype float32.")


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
              "num_heldout", "attention", "embed_dim", "hidden_size")


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
    eval_path = None  # --eval-checkpoint with another --data-path: the model's own data, scored on that one; with
    # --translate (no pairs to score) checkpoint_args refuses the other --data-path instead, as transformer.py does
    if ckpt and args.eval_checkpoint and not args.translate and args.data_path not in (None, ckpt["args"]["data_path"]):
        eval_path, args = args.data_path, dataclasses.replace(args, data_path=None)
    if ckpt:
        args = checkpoint_args(args, ckpt, flag, path)
    run_dir = (os.path.dirname(args.resume) or ".") if args.resume else ""  # a resumed run writes beside it
    if is_main and not path:
        task = os.path.splitext(os.path.basename(os.path.normpath(args.data_path)))[0] if args.data_path else "dates"
        run_dir = make_run_dir(f"{task}__{args.exp_name}__{args.seed}__{int(time.time())}")

    # Data: every rank builds the same vocabularies and tensors.
    data = (tsv_corpus(args.data_path, args.heldout_fraction) if args.data_path
            else date_task(args.num_train, args.num_heldout))
    if eval_path:  # a file: all its pairs; a folder: its test.tsv
        data["test"] = read_tsv(os.path.join(eval_path, "test.tsv") if os.path.isdir(eval_path) else eval_path)
    train_texts = [text for pair in data["train"] for text in pair]  # --tokenizer bpe learns from both sides
    tokenizer = Tokenizer(args.tokenizer, args.tiktoken_encoding, train_texts, args.bpe_merges)
    tokens = {name: ([tokenizer.split(s) for s, _ in pairs], [tokenizer.split(t) for _, t in pairs])
              for name, pairs in data.items()}
    src_vocab, tgt_vocab = (Vocab([tok for sent in tokens["train"][side] for tok in sent]) for side in (0, 1))
    if ckpt and (src_vocab.itos, tgt_vocab.itos) != (ckpt["src_vocab"], ckpt["tgt_vocab"]):
        raise SystemExit(f"{flag} {path}: its data ({args.data_path or 'the date task'}) now gives other "
                         "vocabularies than it was trained with; give it the data it was trained on.")
    tensors = {name: Split(*to_tensors([src_vocab.encode(s) for s in srcs], add_eos=False),
                           *to_tensors([tgt_vocab.encode(t) for t in tgts], add_eos=True))
               for name, (srcs, tgts) in tokens.items()}
    max_len = 2 * tensors["train"].tgt.size(1)  # decoding stops at twice the longest training target
    if is_main:
        print(f"{args.data_path or 'date task'}: " + ", ".join(f"{k} {len(v)}" for k, v in data.items())
              + f" pairs; vocab {len(src_vocab.itos)} -> {len(tgt_vocab.itos)} ({args.tokenizer}); "
              f"{world_size} rank(s) on {device}; attention {args.attention}")

    torch.manual_seed(args.seed + rank)  # dropout and teacher forcing; DDP broadcasts rank 0's initial weights
    torch.backends.cudnn.deterministic = args.torch_deterministic
    make_model = lambda: Seq2Seq(len(src_vocab.itos), len(tgt_vocab.itos), args.embed_dim, args.hidden_size,
                                 args.attention, args.dropout)
    # A network that memory cannot hold is refused, its empty run folder removed: its parameters counted on the meta
    # device (nothing allocated), 16 bytes each with their gradients and Adam's two moments.
    with torch.device("meta"):
        need = 16 * sum(p.numel() for p in make_model().parameters())
    have = (torch.cuda.get_device_properties(device).total_memory if device.type == "cuda"
            else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else math.inf)
    if need > have:
        if is_main and not path:
            os.rmdir(run_dir)
        raise SystemExit(f"--hidden-size {args.hidden_size} and --embed-dim {args.embed_dim} make "
                         f"{need // 16:,} parameters, {need / 2**30:,.1f} GiB with their gradients and Adam's moments, "
                         f"more than the {have / 2**30:,.1f} GiB of this {device.type}: lower them.")
    model = make_model().to(device)
    if ckpt:
        model.load_state_dict(ckpt["model"])
    if args.eval_checkpoint:
        metrics, folder = {}, os.path.dirname(path) or "."
        if is_main and args.translate and not os.access(folder, os.W_OK):
            raise SystemExit(f"--translate writes its heat maps beside {path}, and {folder} is not writable; "
                             "copy the checkpoint to a folder you can write to.")
        n = 1  # translation_<n>.png counts on past the heat maps already there: none is overwritten
        for sentence in args.translate if is_main else ():
            while os.path.exists(figure := os.path.join(folder, f"translation_{n}.png")):
                n += 1
            greedy = attention_figure(model, [(sentence, "")], src_vocab, tgt_vocab, tokenizer, max_len, device,
                                      figure)[0]
            src = torch.tensor([src_vocab.encode(tokenizer.split(sentence))], device=device)
            beam = beam_search(model, src, torch.tensor([src.size(1)]), args.beam_size, max_len,
                               args.length_penalty)[0].tolist()
            print(f"{sentence!r}\n  greedy: {greedy!r}\n  beam {args.beam_size}: "
                  f"{tokenizer.join(tgt_vocab.decode(beam))!r}\n  attention heat map: {figure}")
        if is_main and not args.translate:
            label = f"after {ckpt['iteration']} iterations ({path})" + (f" on {eval_path}" if eval_path else "")
            metrics = evaluate(model, data["test"], tensors["test"], tgt_vocab, tokenizer, args, max_len, device, label)
        if distributed:
            dist.barrier()  # all ranks finished (rank 0 evaluates last) before the group goes
            dist.destroy_process_group()
        return metrics
    ddp_model = DDP(model) if distributed else model
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    # --dtype's autocast on CUDA (on the CPU only with --cpu-bf16). float16 would round small gradients to 0: the
    # scaler multiplies the loss before backward and divides the gradients after; disabled, it changes nothing.
    use_cuda = device.type == "cuda"
    autocast = torch.autocast(device.type, enabled=args.dtype != "float32" if use_cuda else args.cpu_bf16,
                              dtype=torch.float16 if use_cuda and args.dtype == "float16" else torch.bfloat16)
    scaler = torch.amp.GradScaler("cuda", enabled=use_cuda and args.dtype == "float16")
    if use_cuda and args.dtype == "float32":  # float32 means float32: no TF32 tensor cores in matmuls or the GRUs
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    logger = RunLog(args, os.path.basename(os.path.abspath(run_dir)), run_dir) if is_main else None

    def lr_at(it: int) -> float:  # cosine from the full step size down to a tenth
        return args.learning_rate * (0.1 + 0.45 * (1 + math.cos(math.pi * it / args.num_iterations)))

    @torch.no_grad()
    def validation() -> dict:
        model.eval()
        losses, n_tokens = [], 0
        for rows in torch.arange(len(tensors["val"].src)).split(250):
            src, src_len, tgt_in, tgt_out = batch_of(tensors["val"], rows, device)
            with autocast:
                logits = model(src, src_len, tgt_in)
            real = int((tgt_out != PAD).sum())  # weigh each chunk's per-token mean by its tokens
            losses.append(sequence_loss(logits, tgt_out).item() * real)
            n_tokens += real
        hyps = translate(model, tensors["val"], "greedy", args, max_len, device)
        model.train()
        scores = score(hyps, [t for _, t in data["val"]], tgt_vocab, tokenizer)
        return {"val/loss": sum(losses) / n_tokens, "val/exact_match": scores["exact_match"],
                "val/bleu": scores["bleu"]}

    def save(path: str) -> None:
        """Every rank calls it; rank 0 saves all an exact resume needs, each rank's random state included."""
        mine = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if use_cuda else None}
        states = [None] * world_size if distributed else [mine]
        if distributed:
            dist.all_gather_object(states, mine)
        if is_main:
            save_checkpoint(path, {"algo": ALGO, "args": dataclasses.asdict(args), "model": model.state_dict(),
                                   "src_vocab": src_vocab.itos, "tgt_vocab": tgt_vocab.itos,
                                   "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "iteration": it,
                                   "order": order, "cursor": cursor, "order_rng": order_gen.get_state(), "rng": states})

    order_gen = torch.Generator().manual_seed(args.seed)  # without the rank: every rank draws the same permutation
    n_train, per_rank = len(tensors["train"].src), args.batch_size // world_size
    if n_train < args.batch_size:  # else some rank's share of a batch would be empty
        raise SystemExit(f"the training split has {n_train} pairs, fewer than --batch-size {args.batch_size}: "
                         "lower --batch-size or add training pairs.")
    lengths = tensors["train"].src_len + tensors["train"].tgt_len
    it, order, cursor = 0, epoch_order(lengths, args.batch_size, args.bucket_pool, order_gen), 0
    if ckpt:  # continue where it stopped: the step, the data order, the optimizer and the random streams
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):  # saved by a float16 run; a disabled scaler ignores it
            scaler.load_state_dict(ckpt["scaler"])
        it, order, cursor = ckpt["iteration"], ckpt["order"], ckpt["cursor"]
        order_gen.set_state(ckpt["order_rng"])
        if len(ckpt["rng"]) == world_size:  # the same ranks continue their own random streams
            torch.set_rng_state(ckpt["rng"][rank]["torch"])
            if use_cuda:
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
        src, src_len, tgt_in, tgt_out = batch_of(tensors["train"], rows, device)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(it)
        with autocast:
            logits = ddp_model(src, src_len, tgt_in, args.teacher_forcing)
        loss = sequence_loss(logits, tgt_out)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()  # DDP averages the gradients of the ranks here
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        scaler.step(optimizer)  # optimizer.step(), unless float16 gradients overflowed
        scaler.update()
        train_loss, it = loss.item(), it + 1
        if not math.isfinite(train_loss):  # stop (exit 1) instead of training garbage to the end
            raise SystemExit(f"step {it}: the training loss is {train_loss}; lower --learning-rate or --grad-clip.")
        if is_main and (it % args.eval_interval == 0 or it == args.num_iterations):
            eval_start = time.time()
            metrics = {"train/loss": train_loss, "train/lr": lr_at(it - 1), **validation(), "iter": it}
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
            final = evaluate(model, data["test"], tensors["test"], tgt_vocab, tokenizer, args, max_len, device,
                             f"after {it} iterations in {wall_time:.1f} s") | {"wall_time": wall_time}
            metrics |= final
            figure = os.path.join(run_dir, "attention.png")
            attention_figure(model, data["test"][:4], src_vocab, tgt_vocab, tokenizer, max_len, device, figure)
            print(f"wrote {figure} (attention heat maps of test sentences)")
            picture = {"eval/attention": logger.wandb.Image(figure)} if logger.wandb else {}
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
