"""Byte-level BPE: a naive trainer, an incremental one with the same merges, and tiktoken's encoding.

Byte-pair encoding (Sennrich et al. 2016) starts from the 256 byte values and repeatedly adds
one token: the merge of the most frequent adjacent pair of tokens in the training text. GPT-2
(Radford et al. 2019) made it byte-level, so any string encodes with no unknown token, and
first cuts the text into chunks with a regex (words, numbers, punctuation, whitespace runs)
so that no token spans a word boundary. Merge t is then a rule (a, b) -> t, and encoding a
chunk repeats "merge the adjacent pair with the lowest t" until no pair has a rule.

    chunks      c_1 .. c_m = regex.findall(pattern, text), each counted: n(c)
    pair count  N(a, b) = sum_c n(c) * #{i : c_i = a, c_i+1 = b}   (over unique chunks)
    merge t     (a, b)* = argmax N(a, b); replace every (a, b) with t, left to right

Two trainers make the same merges. train_naive is the definition (minbpe's loop): recount N
over the whole corpus after every merge, O(corpus) each. train_incremental touches only the
chunks holding the merged pair (an index pair -> chunks finds them): each takes its old pairs
out of N and puts its new ones in, and a heap of (-N, a, b) with lazy deletion (a stale entry
is skipped when its count no longer matches) finds the next best pair without a rescan. Ties,
in both: the highest N, then the smallest (first id, second id), whatever the dict order.

Encoding is tiktoken's: the same regex, special tokens found first (`allowed_special`,
`disallowed_special` as in tiktoken's `encode`), then per-chunk BPE with a cache of chunks
already seen; a chunk whose bytes are a token is that token, as in tiktoken. `to_tiktoken`
exports a `tiktoken.Encoding` whose mergeable ranks are the token ids; `from_tiktoken` imports
gpt2, r50k_base, cl100k_base or a `.tiktoken` file and recovers each token's merge: the split
into two lower-ranked tokens that BPE with only the lower ranks makes of its bytes.

Distributed: under torchrun each rank reads every input file and pre-tokenises its own
contiguous shard of it (cut only where both patterns cut anyway, so the counts add up to
those of one process); the chunk counts are gathered to rank 0 (gloo), which alone trains,
prints, logs and saves. There is no tensor work in BPE: it runs on the CPU.

References
    Sennrich, Haddow, Birch 2016, "Neural Machine Translation of Rare Words with Subword
        Units", ACL, arXiv:1508.07909.
    Radford et al. 2019, "Language Models are Unsupervised Multitask Learners" (GPT-2's
        byte-level BPE and its pre-tokenisation regex).
    Gage 1994, "A New Algorithm for Data Compression", C Users Journal (byte-pair encoding).
    OpenAI tiktoken (github.com/openai/tiktoken): the encodings and the `.tiktoken` format.

Usage
    python data/shakespeare_char/prepare.py    # downloads data/shakespeare_char/input.txt (or curl it:)
    curl -o data/shakespeare_char/input.txt \\
        https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt
    python algos/bpe.py                                   # vocab 1,024 on that text
    python algos/bpe.py --trainer naive                   # the same merges by the naive loop, slower
    python algos/bpe.py --vocab-size 512 --show "To be, or not to be"    # a quick run
    python algos/bpe.py --vocab-size 8192 --pattern gpt2 --input my_texts/    # a folder
    python algos/bpe.py --eval-checkpoint runs/<run_name>/tokenizer.bpe --show "Hello world"
    python algos/bpe.py --eval-checkpoint cl100k_base --show "Hello world"    # tiktoken's vocabulary
    torchrun --standalone --nproc_per_node=2 algos/bpe.py           # shards pre-tokenised per rank
    python algos/bpe.py --track                           # merges/s and compression ratio to W&B
Outputs go to runs/<run_name>/: tokenizer.bpe (pattern, special tokens, merges, under a sha256
line that lets a damaged file be refused), vocab.txt (every token for a human) and
tokenizer.tiktoken (tiktoken's file format).
"""

import base64
import dataclasses
import hashlib
import heapq
import json
import math
import os
import signal
import sys
import time
import typing
from collections import Counter
from dataclasses import dataclass
from typing import Annotated, Literal, Optional

import regex
import tiktoken
import tyro

ALGO = "bpe"

PATTERNS = {  # tiktoken's own strings, so that chunks (and so ids) agree with it exactly
    "gpt2": r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s""",
    "gpt4": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
}
TIKTOKEN_NAMES = ("gpt2", "r50k_base", "cl100k_base")
FORMAT = "bpe.py tokenizer v2"


# Range marks each numeric field's valid values; check_args (MACHINERY, below) enforces them.
@dataclass(frozen=True)
class Range:
    """Valid values of a numeric field: lo <= x <= hi (lo < x with lo_open), and finite."""

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False


@dataclass
class Args:
    """Train a byte-level BPE tokenizer (or evaluate a saved one), time its encoding, and save it."""

    exp_name: str = "bpe"  # name of this experiment (part of the run name)
    seed: Annotated[int, Range()] = 1  # part of the run name only (any integer): training is deterministic
    track: bool = False  # log merges/s, the compression ratio and the final metrics to Weights & Biases
    wandb_project_name: str = "algos"  # the wandb project
    wandb_entity: Optional[str] = None  # the wandb entity (team)
    save_model: bool = True  # write tokenizer.bpe, vocab.txt and tokenizer.tiktoken to runs/<run_name>/

    input: str = "data/shakespeare_char/input.txt"  # UTF-8 text file, or a folder of them: trained and timed on
    vocab_size: Annotated[int, Range(257)] = 1024  # the final vocabulary: 256 bytes + merges + special tokens
    # pre-tokenisation regex: GPT-2's (r50k) or GPT-4's (cl100k, splits numbers into 3 digits)
    pattern: Literal["gpt2", "gpt4"] = "gpt4"
    special_tokens: tuple[str, ...] = ("<|endoftext|>",)  # given the ids after the merges; BPE never makes them
    trainer: Literal["incremental", "naive"] = "incremental"  # naive: recount all pairs each merge, 20-60x slower
    # no training: evaluate a saved tokenizer.bpe, a .tiktoken file (read with --pattern and
    # --special-tokens), or gpt2, r50k_base, cl100k_base (through tiktoken)
    eval_checkpoint: Optional[str] = None
    show: Optional[str] = None  # print this text with its token boundaries, e.g. --show "Hello world"
    log_interval: Annotated[int, Range(1)] = 256  # merges between progress lines


# =============================================================================================
# ALGORITHM: pre-tokenise, train (naive, then incremental), encode, tiktoken interop. Read this first.
# =============================================================================================
def count_chunks(texts: list[str], pattern: str) -> Counter:
    """n(c): how often each pre-tokenised chunk occurs. Training sees only unique chunks."""
    split = regex.compile(pattern)
    counts = Counter()
    for text in texts:
        counts.update(split.findall(text))
    return counts


# ---------------------------------------------------------------------------- training
def merge_pair(ids: list[int], pair: tuple[int, int], new: int) -> list[int]:
    """ids with every (a, b) replaced by new, left to right, as encoding will ("aaa" -> [aa, a])."""
    a, b = pair
    out, j, n = [], 0, len(ids)
    while j < n:
        if ids[j] == a and j + 1 < n and ids[j + 1] == b:
            out.append(new)
            j += 2
        else:
            out.append(ids[j])
            j += 1
    return out


def train_naive(counts: dict, num_merges: int, log=None, log_interval: int = 256) -> list[tuple[int, int]]:
    """The definition, minbpe's loop: count N(a, b) over every chunk, merge the most frequent pair
    everywhere, repeat; O(corpus) per merge. Merge i makes token 256 + i; stops early if no pair is
    left. log(merges_done, merges_per_s, bytes_per_token) is called every log_interval merges."""
    words, freqs = [list(chunk.encode("utf-8")) for chunk in counts], list(counts.values())
    n_bytes = sum(len(w) * f for w, f in zip(words, freqs))
    merges, start = [], time.perf_counter()
    while len(merges) < num_merges:
        pair_counts = Counter()
        for w, f in zip(words, freqs):
            for pair in zip(w, w[1:]):
                pair_counts[pair] += f
        if not pair_counts:
            break  # every chunk is a single token
        pair = min(pair_counts, key=lambda p: (-pair_counts[p], p))  # the highest N, then the smallest
        new = 256 + len(merges)
        merges.append(pair)
        words = [merge_pair(w, pair, new) for w in words]
        if log and (len(merges) % log_interval == 0 or len(merges) == num_merges):
            n_tokens = sum(len(w) * f for w, f in zip(words, freqs))
            log(len(merges), len(merges) / max(time.perf_counter() - start, 1e-9), n_bytes / n_tokens)
    return merges


def train_incremental(counts: dict, num_merges: int, log=None, log_interval: int = 256) -> list[tuple[int, int]]:
    """train_naive's merges (the reference it must equal) without its rescans: only the chunks holding
    the merged pair change N, and a heap of (-N, (a, b)) gives the next pair (the highest N, then the
    smallest (a, b))."""
    words, freqs = [list(chunk.encode("utf-8")) for chunk in counts], list(counts.values())
    pair_counts, where = {}, {}  # N(a, b); pair -> indices of the chunks that hold it (a superset)
    for i, (w, f) in enumerate(zip(words, freqs)):
        for pair in zip(w, w[1:]):
            pair_counts[pair] = pair_counts.get(pair, 0) + f
            where.setdefault(pair, set()).add(i)
    heap = [(-n, pair) for pair, n in pair_counts.items()]  # min-heap: highest N, then smallest pair
    heapq.heapify(heap)
    n_bytes = n_tokens = sum(len(w) * f for w, f in zip(words, freqs))
    merges, start = [], time.perf_counter()
    while len(merges) < num_merges:
        while heap and pair_counts.get(heap[0][1], 0) != -heap[0][0]:
            heapq.heappop(heap)  # stale: the pair's count changed after this entry was pushed
        if not heap:
            break  # every chunk is a single token
        pair = heapq.heappop(heap)[1]
        new = 256 + len(merges)
        merges.append(pair)
        delta = {}  # the change in N of every pair in a touched chunk
        for i in where.pop(pair):
            w, f = words[i], freqs[i]
            out = merge_pair(w, pair, new)
            if len(out) == len(w):
                continue  # a stale index entry: the pair left this chunk in an earlier merge
            for p in zip(w, w[1:]):
                delta[p] = delta.get(p, 0) - f
            for p in zip(out, out[1:]):
                delta[p] = delta.get(p, 0) + f
                if new in p:  # the only pairs this chunk did not hold before
                    where.setdefault(p, set()).add(i)
            n_tokens -= (len(w) - len(out)) * f
            words[i] = out
        for p, d in delta.items():
            if d:
                count = pair_counts.get(p, 0) + d
                if count:
                    pair_counts[p] = count
                    heapq.heappush(heap, (-count, p))  # the old entry goes stale
                else:
                    del pair_counts[p]
        if log and (len(merges) % log_interval == 0 or len(merges) == num_merges):
            log(len(merges), len(merges) / max(time.perf_counter() - start, 1e-9), n_bytes / n_tokens)
    return merges


# ---------------------------------------------------------------------------- the tokenizer
class Tokenizer:
    """Merges (a, b) -> t, the bytes of every id, the pattern and the special tokens.
    byte_ids[v] is the id of byte value v: v itself when trained here, a permutation of 0-255
    for GPT-2's and cl100k's vocabularies."""

    def __init__(self, pattern: str, merges: dict, byte_ids: list, special: dict):
        self.pattern, self.merges, self.special, self.byte_ids = pattern, merges, dict(special), list(byte_ids)
        self.split = regex.compile(pattern)
        self.byte_table = bytes(self.byte_ids)  # for bytes.translate: byte value -> its id
        self.vocab = {t: bytes([v]) for v, t in enumerate(self.byte_ids)}
        for (a, b), t in sorted(merges.items(), key=lambda item: item[1]):
            self.vocab[t] = self.vocab[a] + self.vocab[b]
        self.ranks = {b: t for t, b in sorted(self.vocab.items(), reverse=True)}  # bytes -> lowest id
        self.special_bytes = {t: s.encode("utf-8") for s, t in self.special.items()}
        self.cache = {}  # chunk -> ids: text repeats its words, so most chunks are seen before

    @classmethod
    def from_merges(cls, pattern: str, merges: list, special_tokens=()) -> "Tokenizer":
        n = 256 + len(merges)
        return cls(pattern, {pair: 256 + i for i, pair in enumerate(merges)}, range(256),
                   {s: n + i for i, s in enumerate(special_tokens)})

    @property
    def n_vocab(self) -> int:
        """As tiktoken counts: the largest id + 1 (cl100k leaves gaps before its special tokens)."""
        return 1 + max([*self.vocab, *self.special.values()])

    def encode_chunk(self, chunk: str) -> list[int]:
        """BPE on one chunk: merge the leftmost pair with the lowest id until no pair has a merge.
        A merge's id is its rank, and the pairs it creates rank above it, so this makes the
        same merges, in the same order, as training did. As in tiktoken, a chunk whose bytes
        are a token is that token."""
        data = chunk.encode("utf-8")
        if data in self.ranks:
            return [self.ranks[data]]
        ids, get, none = list(data.translate(self.byte_table)), self.merges.get, 1 << 62
        ranks = [get(pair, none) for pair in zip(ids, ids[1:])]  # ranks[i]: merge of ids[i], ids[i+1]
        while ranks:
            t = min(ranks)
            if t == none:
                break
            i = ranks.index(t)
            ids[i:i + 2] = [t]
            del ranks[i]
            if i > 0:  # only the two pairs next to the new token change
                ranks[i - 1] = get((ids[i - 1], t), none)
            if i < len(ranks):
                ranks[i] = get((t, ids[i + 1]), none)
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode, treating special-token strings as plain text. Each distinct chunk is encoded
        once (text repeats its words) and kept in a cache for later calls."""
        chunks, cache = self.split.findall(text), self.cache
        if len(cache) > 500_000:  # bound the memory on huge, diverse corpora
            cache.clear()
        ids = []
        for chunk in chunks:
            if chunk not in cache:
                cache[chunk] = self.encode_chunk(chunk)
            ids += cache[chunk]
        return ids

    def encode(self, text: str, allowed_special=frozenset(), disallowed_special="all") -> list[int]:
        """tiktoken's semantics: special tokens in `allowed_special` ("all" or a set) become their
        ids; any in `disallowed_special` ("all" = every special not allowed) raises ValueError;
        the rest is ordinary text."""
        allowed = set(self.special) if allowed_special == "all" else set(allowed_special)
        if allowed - set(self.special):
            raise ValueError(f"allowed_special names {sorted(allowed - set(self.special))}, which are not "
                             f"special tokens of this tokenizer ({sorted(self.special)}).")
        disallowed = set(self.special) - allowed if disallowed_special == "all" else set(disallowed_special)
        found = disallowed and special_regex(disallowed).search(text)
        if found:
            raise ValueError(f"the text contains the special token {found.group()!r}, which is disallowed: pass "
                             f"allowed_special={{{found.group()!r}}} (or 'all') to encode it as its special id, "
                             "or disallowed_special=() to encode it as ordinary text.")
        if not allowed:
            return self.encode_ordinary(text)
        ids, start = [], 0
        for m in special_regex(allowed).finditer(text):
            ids += self.encode_ordinary(text[start:m.start()])
            ids.append(self.special[m.group()])
            start = m.end()
        return ids + self.encode_ordinary(text[start:])

    def token_bytes(self, t: int) -> bytes:
        b = self.vocab.get(t, self.special_bytes.get(t))
        if b is None:
            raise ValueError(f"token id {t} is not in this vocabulary of {self.n_vocab} tokens.")
        return b

    def decode(self, ids: list[int]) -> str:
        """The text; bytes that are not valid UTF-8 (a token cut inside a character) become U+FFFD."""
        return b"".join(self.token_bytes(t) for t in ids).decode("utf-8", errors="replace")


def special_regex(tokens) -> regex.Pattern:
    # Longest first, so that a special token that contains another is found whole.
    return regex.compile("|".join(regex.escape(s) for s in sorted(tokens, key=lambda s: (-len(s), s))))

# ---------------------------------------------------------------------------- tiktoken interop
def mergeable_ranks(tok: Tokenizer) -> dict:
    ranks = {b: t for t, b in tok.vocab.items()}
    if len(ranks) < len(tok.vocab):
        dup = Counter(tok.vocab.values()).most_common(1)[0][0]
        raise ValueError(f"two tokens have the same bytes {dup!r}; tiktoken needs one id per byte string.")
    return ranks


def to_tiktoken(tok: Tokenizer, name: str = "bpe"):
    """A tiktoken.Encoding with the same ids: mergeable ranks are the token ids."""
    return tiktoken.Encoding(name, pat_str=tok.pattern, mergeable_ranks=mergeable_ranks(tok),
                             special_tokens=tok.special)


def from_ranks(ranks: dict, pattern: str, special: dict, source: str) -> Tokenizer:
    """Recover the merges of a vocabulary given as {token bytes: rank}: BPE on a token's bytes,
    with only the ranks below its own, must stop at two parts, and those are its merge."""
    if sorted(ranks.get(bytes([v]), -1) for v in range(256)) != list(range(256)):
        raise ValueError(f"{source}: the 256 single bytes must hold ranks 0-255, as in any byte-level BPE.")
    merges = {}
    for token, rank in ranks.items():
        if len(token) == 1:
            continue
        parts = [token[i:i + 1] for i in range(len(token))]
        while True:  # tiktoken's merge loop: the leftmost pair of lowest rank, ranks < rank only
            best, best_rank = -1, rank
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1], rank)
                if r < best_rank:
                    best, best_rank = i, r
            if best < 0:
                break
            parts[best:best + 2] = [parts[best] + parts[best + 1]]
        if len(parts) != 2:
            raise ValueError(f"{source}: token {token!r} (rank {rank}) is not a merge of two lower-ranked tokens.")
        merges[(ranks[parts[0]], ranks[parts[1]])] = rank
    return Tokenizer(pattern, merges, [ranks[bytes([v])] for v in range(256)], special)


def from_tiktoken(source: str, pattern: str = PATTERNS["gpt4"], special_tokens=()) -> Tokenizer:
    """Import gpt2, r50k_base or cl100k_base through tiktoken (its pattern and special tokens),
    or a .tiktoken file (with the given pattern; special tokens get the ids after the ranks)."""
    if source in TIKTOKEN_NAMES:
        enc = tiktoken.get_encoding(source)  # offline: set TIKTOKEN_CACHE_DIR to a cache of its files
        return from_ranks(enc._mergeable_ranks, enc._pat_str, enc._special_tokens, source)
    ranks = {}
    with open(source, "rb") as f:  # parsed here: tiktoken's loader caches by path and can go stale
        for n, line in enumerate(f, 1):
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
            except ValueError:
                raise ValueError(f"{source} line {n}: expected 'base64-token rank'; "
                                 "this is not a .tiktoken file.") from None
    if not ranks:
        raise ValueError(f"{source} holds no tokens.")
    n = max(ranks.values()) + 1
    return from_ranks(ranks, pattern, {s: n + i for i, s in enumerate(special_tokens)}, source)


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


def validate(args: Args) -> None:
    """Values that would fail later, one sentence each naming the fix."""
    specials = args.special_tokens
    if args.eval_checkpoint is None and args.vocab_size < 256 + len(specials) + 1:
        raise SystemExit(f"--vocab-size {args.vocab_size} leaves no room for a merge: it must exceed 256 "
                         f"bytes + {len(specials)} special token(s).")
    if any(not s for s in specials) or len(set(specials)) < len(specials):
        raise SystemExit(f"--special-tokens {specials} must be distinct non-empty strings.")
    for flag, texts in ("--show", [args.show or ""]), ("--special-tokens", specials):
        if any("\ud800" <= c <= "\udfff" for text in texts for c in text):  # bytes the terminal could not decode
            raise SystemExit(f"{flag} holds bytes that are not UTF-8 (a terminal in another encoding?): "
                             "type it again in a UTF-8 terminal.")
    source = args.eval_checkpoint
    if source and not source.endswith(".tiktoken") and (args.pattern, specials) != (Args.pattern, Args.special_tokens):
        raise SystemExit(f"--eval-checkpoint {source} has its own pattern and special tokens: drop --pattern and "
                         "--special-tokens (they are read only with a .tiktoken file).")
    if source is not None and source not in TIKTOKEN_NAMES and os.path.isdir(source):
        raise SystemExit(f"--eval-checkpoint {source} is a folder: give the tokenizer file inside it, "
                         f"{os.path.join(source, 'tokenizer.bpe')} (or its tokenizer.tiktoken).")
    if source is not None and source not in TIKTOKEN_NAMES and not os.path.isfile(source):
        raise SystemExit(f"--eval-checkpoint {source}: no such file; give a tokenizer.bpe, a .tiktoken file, "
                         f"or one of {', '.join(TIKTOKEN_NAMES)}.")
    # Evaluating, a missing default --input only means no timing; a path the user typed must exist.
    if (source is None or args.input != Args.input) and not os.path.exists(args.input):
        raise SystemExit(f"--input {args.input}: no such file or folder; download tinyshakespeare with "
                         "the curl line in this file's docstring, or point --input at your own text.")


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
        line |= {k: v for k, v in row.items() if isinstance(v, (int, float, str, list))}
        print(json.dumps(line, default=float), file=self.file)
        if self.wandb:
            self.wandb.log(row, step=step)

    def close(self) -> None:
        self.file.close()
        if self.wandb:
            self.wandb.finish()


# ---------------------------------------------------------------------------- corpus and shards
def read_texts(path: str) -> list[str]:
    """The text of a file, or of every file under a folder (sorted, hidden ones skipped)."""
    files = [path] if os.path.isfile(path) else []
    for root, dirs, names in os.walk(path):  # walks nothing when path is a file
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]  # .git, bytecode
        files += [os.path.join(root, name) for name in names if not name.startswith(".")]
    files.sort()
    if not files:
        raise SystemExit(f"--input {path} holds no files to read.")
    texts = []
    for f in files:
        try:
            with open(f, encoding="utf-8") as fh:
                texts.append(fh.read())
        except UnicodeDecodeError as e:
            raise SystemExit(f"{f} is not UTF-8 text ({e.reason} at byte {e.start}): convert it, or "
                             "leave it out of --input.") from None
        except OSError as e:
            raise SystemExit(f"--input {f}: cannot read it ({e.strerror}).") from None
        if "\x00" in texts[-1]:  # decodes as UTF-8, but is binary (gpt's train.bin beside input.txt)
            raise SystemExit(f"{f} holds NUL bytes, so it is binary, not text: point --input at the text files, "
                             "or leave it out of --input.")
    return texts


def shard(text: str, rank: int, world_size: int) -> str:
    """This rank's contiguous piece of the text. Pieces end just after a newline that has a
    non-space on both sides: neither pattern lets a chunk cross that point nor changes the
    chunk before it when the text ends there, so the pieces' chunks are the whole's."""
    cuts, safe_cut = [0], regex.compile(r"\S\n(?=\S)")  # a newline with a non-space on both sides
    for k in range(1, world_size):
        m = safe_cut.search(text, max(len(text) * k // world_size, cuts[-1]))
        cuts.append(m.end() if m else len(text))
    cuts.append(len(text))
    return text[cuts[rank]:cuts[rank + 1]]


# ---------------------------------------------------------------------------- save / load
def save(tok: Tokenizer, path: str) -> None:
    """A readable file: a header with the sha256 of the rest, a JSON line (the pattern, the id of
    every byte, the special tokens), then the merges "a b" in id order (the k-th makes 256 + k)."""
    order = sorted(tok.merges.items(), key=lambda item: item[1])
    if [t for _, t in order] != list(range(256, 256 + len(order))):
        raise ValueError("the merges' ids are not 256, 257, ... in order; save cannot write them.")
    body = json.dumps({"pattern": tok.pattern, "byte_ids": tok.byte_ids, "special": tok.special}) + "\n"
    body += "".join(f"{a} {b}\n" for (a, b), _ in order)
    write_atomic(path, f"{FORMAT} sha256={hashlib.sha256(body.encode('utf-8')).hexdigest()}\n{body}")


def write_atomic(path: str, text: str) -> None:
    """Write a temporary file, then rename it: `path` is never half written."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    os.replace(tmp, path)


def load(path: str) -> Tokenizer:
    """Read a file written by save(). Its first line holds the sha256 of the rest, so a damaged,
    truncated or foreign file is refused (ValueError) before anything in it is trusted."""
    with open(path, "rb") as f:
        header, _, body = f.read().partition(b"\n")
    if header != f"{FORMAT} sha256={hashlib.sha256(body).hexdigest()}".encode():
        raise ValueError(f"{path} is damaged or was not written by bpe.py: it does not match the sha256 on "
                         f"its first line ({FORMAT!r} expected); train and save it again.")
    meta, *lines = body.decode("utf-8").splitlines()
    meta, merges = json.loads(meta), {tuple(map(int, line.split())): 256 + k for k, line in enumerate(lines)}
    return Tokenizer(meta["pattern"], merges, meta["byte_ids"], meta["special"])


def write_vocab(tok: Tokenizer, path: str) -> None:
    """Every token for a human: id, text, and the two tokens it merges."""
    parts = {t: pair for pair, t in tok.merges.items()}
    lines = []
    for t in sorted(tok.vocab):
        line = f"{t:>6} [{render(tok.vocab[t])}]"
        if t in parts:
            a, b = parts[t]
            line += f" = [{render(tok.vocab[a])}] + [{render(tok.vocab[b])}]"
        lines.append(line)
    lines += [f"{t:>6} {s} (special)" for s, t in sorted(tok.special.items(), key=lambda x: x[1])]
    write_atomic(path, "\n".join(lines) + "\n")


def write_tiktoken(tok: Tokenizer, path: str) -> None:
    """tiktoken's file format: one "base64(token bytes) rank" line per token."""
    ranks = sorted(mergeable_ranks(tok).items(), key=lambda item: item[1])
    write_atomic(path, "".join(f"{base64.b64encode(b).decode()} {t}\n" for b, t in ranks))


def load_any(source: str, args: Args) -> Tokenizer:
    """--eval-checkpoint: a tiktoken name, a .tiktoken file or a tokenizer.bpe; errors become one sentence."""
    try:
        if source in TIKTOKEN_NAMES or source.endswith(".tiktoken"):
            return from_tiktoken(source, PATTERNS[args.pattern], args.special_tokens)
        return load(source)
    except ValueError as e:  # its message starts with the file's name
        raise SystemExit(f"--eval-checkpoint {e}") from None
    except OSError as e:  # an unreadable file, or tiktoken's download with no network and no cache
        raise SystemExit(f"--eval-checkpoint {source}: cannot read it ({type(e).__name__}: {e.strerror or e}); "
                         "for a tiktoken name offline, set TIKTOKEN_CACHE_DIR to tiktoken's cache.") from None


# ---------------------------------------------------------------------------- evaluation
def render(b: bytes) -> str:
    """A token for a human: its text, unprintable characters escaped (\\n), invalid UTF-8 as \\xNN."""
    text = b.decode("utf-8", errors="backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def show(tok: Tokenizer, text: str) -> str:
    ids = tok.encode(text, allowed_special="all")
    pieces = "".join(f"[{render(tok.token_bytes(t))}]" for t in ids)
    return f"{len(ids)} tokens for {len(text.encode('utf-8'))} bytes:\n{pieces}\nids: {ids}"


def time_encoding(tok: Tokenizer, texts: list[str]) -> tuple[float, float, float]:
    """MB/s of encoding the texts from an empty chunk cache, MB/s of a second pass (the cache now
    holds every chunk: regex split and look-ups only), and bytes per token."""
    tok.cache.clear()
    n_bytes, rates = sum(len(t.encode("utf-8")) for t in texts), []
    for _ in range(2):
        start = time.perf_counter()
        n_tokens = sum(len(tok.encode_ordinary(t)) for t in texts)
        rates.append(n_bytes / 1e6 / (time.perf_counter() - start))
    return rates[0], rates[1], n_bytes / max(n_tokens, 1)


def main(args: Args) -> dict:
    """Train on --input (or evaluate --eval-checkpoint), save, time encoding of --input and show.
    Returns train/seconds, train/vocab_size and train/merges (when trained), encode/mb_per_s
    (from an empty cache), encode/mb_per_s_warm (a second pass) and compression_ratio (UTF-8
    bytes per token) on --input, on rank 0; {} on other ranks."""
    check_args(args)
    validate(args)
    distributed = "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank, world_size = 0, 1
    if distributed:  # imported only here: a plain run does not pay the seconds of importing torch
        import torch.distributed as dist
        dist.init_process_group("gloo")
        rank, world_size = dist.get_rank(), dist.get_world_size()
    is_main = rank == 0
    source = args.eval_checkpoint or os.path.normpath(args.input)
    run_name = f"{os.path.basename(source)}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_dir = make_run_dir(run_name) if is_main else None
    logger = RunLog(args, run_name, run_dir) if is_main else None  # metrics.jsonl, and wandb with --track
    if not args.eval_checkpoint:  # every rank pre-tokenises its shard of every file
        texts = read_texts(args.input)
        start = time.perf_counter()
        counts = count_chunks([shard(t, rank, world_size) for t in texts], PATTERNS[args.pattern])
        if distributed:
            gathered = [None] * world_size if is_main else None
            dist.gather_object(counts, gathered, dst=0)
            counts = sum(gathered, Counter()) if is_main else None
    if not is_main:  # rank 0 alone trains (on the gathered counts), evaluates and saves
        dist.destroy_process_group()
        return {}
    metrics = {}

    if args.eval_checkpoint:
        tok = load_any(args.eval_checkpoint, args)
        texts = [t for t in read_texts(args.input) if t] if os.path.exists(args.input) else []  # empty files: no rate
        print(f"loaded {args.eval_checkpoint}: {tok.n_vocab} tokens ({len(tok.merges)} merges, "
              f"{len(tok.special)} special)" + ("" if texts else f"; no text in --input {args.input} to encode"))
    else:
        if not any(len(chunk.encode("utf-8")) > 1 for chunk in counts):
            raise SystemExit(f"--input {args.input} has nothing to merge (it is empty, or no chunk is longer "
                             "than one byte): train on some text.")
        num_merges = args.vocab_size - 256 - len(args.special_tokens)
        print(f"{sum(map(len, texts)):,} characters in {len(texts)} file(s) over {world_size} rank(s): "
              f"{sum(counts.values()):,} chunks, {len(counts):,} unique ({args.pattern} pattern) "
              f"in {time.perf_counter() - start:.2f} s; training {num_merges} merges ({args.trainer})")

        def log(done, rate, ratio):  # train/vocab_size so far: the 256 bytes and the merges (specials come last)
            print(f"merges {done:>6}/{num_merges}: {rate:,.0f} merges/s, {ratio:.3f} bytes/token")
            logger.log({"train/merges": done, "train/merges_per_s": rate, "compression_ratio": ratio,
                        "train/seconds": time.perf_counter() - start, "train/vocab_size": 256 + done})

        train = train_naive if args.trainer == "naive" else train_incremental
        merges = train(counts, num_merges, log, args.log_interval)
        seconds = time.perf_counter() - start
        tok = Tokenizer.from_merges(PATTERNS[args.pattern], merges, args.special_tokens)
        if len(merges) < num_merges:
            print(f"stopped early: after {len(merges)} merges every chunk is one token")
        metrics.update({"train/seconds": seconds, "train/vocab_size": tok.n_vocab, "train/merges": len(merges)})
        print(f"trained vocab {tok.n_vocab} in {seconds:.2f} s (pre-tokenising included)")

    # Saved first: nothing trained is lost to Ctrl-C (or an error) in the timing of a large --input below.
    if args.save_model:
        for file, writer in ("tokenizer.bpe", save), ("vocab.txt", write_vocab), ("tokenizer.tiktoken", write_tiktoken):
            try:
                writer(tok, os.path.join(run_dir, file))
                print(f"saved {os.path.join(run_dir, file)}")
            except ValueError as e:  # ids save cannot lay out, or two tokens with the same bytes
                print(f"not written: {file}: {e}")
    else:
        print(f"(the tokenizer was not saved: add --save-model to keep it in {run_dir}/)")
    if texts:
        mb_per_s, warm, ratio = time_encoding(tok, texts)
        metrics.update({"encode/mb_per_s": mb_per_s, "encode/mb_per_s_warm": warm, "compression_ratio": ratio})
        print(f"encoded --input at {mb_per_s:.2f} MB/s (empty cache at the start; {warm:.2f} MB/s "
              f"a second time): {ratio:.3f} bytes/token")
    if args.show is not None:
        print(show(tok, args.show))
    logger.log(metrics)
    logger.close()
    if distributed:
        dist.destroy_process_group()
    return metrics


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # progress lines appear even when redirected
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C raises even if the parent ignored it
    try:
        main(tyro.cli(Args))
    except KeyboardInterrupt:  # no StopFlag: training takes seconds, partial merges are not worth keeping
        print("stopped by Ctrl-C: only the files printed as saved were written.", file=sys.stderr)
        sys.exit(130)
