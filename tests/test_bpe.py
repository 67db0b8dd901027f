"""bpe.py: the incremental trainer's merges identical to the naive one's, ids identical to tiktoken, special tokens,
decode(encode(s)) == s, save/load and corrupt files, DDP shards, and the speed bars.

    python -m pytest tests/test_bpe.py                        # unit tests and a short learning test
    python -m pytest -m benchmark -s tests/test_bpe.py        # speed on tinyshakespeare (prints a table)
"""

import gc
import math
import os
import random
import re
import sys
import time
from collections import Counter

import pytest
from conftest import ALGOS, SHARED_DATA, load_script, no_data, run

bpe = load_script("bpe")
SHAKESPEARE = SHARED_DATA / "tinyshakespeare.txt"
CACHE = SHARED_DATA / "tiktoken_cache"
needs_shakespeare = pytest.mark.skipif(not SHAKESPEARE.exists(),
                                       reason=no_data("tinyshakespeare.txt"))
GPT2, GPT4 = bpe.PATTERNS["gpt2"], bpe.PATTERNS["gpt4"]
EOT = "<|endoftext|>"

# A varied text: scripts, emoji (with joiners and skin tones), whitespace runs, code, numbers,
# contractions in both cases, and the special-token look-alikes.
VARIED = (
    "Hello, world! It's 3:45pm; DON'T PANIC. We'll see, they've gone, I'd say, you're right.\n"
    "Ünïcödé façade naïve café — “quotes” ‘single’ …\n"
    "日本語のテキストと漢字、中文字符，한국어 텍스트, Ελληνικά, русский язык, العربية, עברית, हिन्दी, ไทย\n"
    "emoji: 🤖🎉 👨‍👩‍👧‍👦 👍🏽 🏳️‍🌈 ❤️ \U0001F600\U0001F64F\n"
    "   leading spaces\t\ttabs\t \n\n\n\r\nwindows line\r\n  trailing   \n"
    "def f(x):\n    return {'a': [1, 2, 3], \"b\": x ** 2}  # comment\n\tif x != 0: pass\n"
    "numbers 0 7 42 123 1234 12345 123456789 3.14159 -2.5e-10 0x1F 1,000,000 2026-11-21\n"
    "<|endoftext|> is special but <|endoftext| and |endoftext|> are not. ''' '' ' 's 'S 'll 'LL\n"
)


def fuzz_strings(n: int, seed: int) -> list[str]:
    """Random strings over ASCII, Latin, CJK, emoji, whitespace and any non-surrogate code point."""
    rng = random.Random(seed)
    pools = [(32, 127), (0x80, 0x800), (0x3000, 0xA000), (0x1F300, 0x1FAFF), (0, 0xD800), (0xE000, 0x110000)]
    out = []
    for _ in range(n):
        chars = []
        for _ in range(rng.randrange(0, 40)):
            if rng.random() < 0.15:
                chars.append(rng.choice(" \t\n\r  "))
            else:
                lo, hi = rng.choice(pools)
                chars.append(chr(rng.randrange(lo, hi)))
        out.append("".join(chars))
    return out


def code_text() -> str:
    """The finished scripts' source: code and English prose, present wherever the repo is."""
    return "".join((ALGOS / name).read_text() for name in ("dqn.py", "dyna_q.py", "reinforce.py"))


def unicode_text(seed: int = 0, words: int = 4000) -> str:
    rng = random.Random(seed)
    vocab = ["the", "cat", "naïve", "日本", "語", "テキスト", "한국어", "русский", "🤖", "👍🏽", "42", "3.14",
             "1234567", "don't", "WE'LL", "\t", "  ", "\n\n", "x = y + 1;", "αβγ", "مرحبا"]
    return "".join(rng.choice(vocab) + rng.choice([" ", " ", "", "\n", "  ", ", "]) for _ in range(words))


def corpora() -> dict:
    texts = {
        "code-gpt2": (code_text()[:40_000], GPT2, 250),
        "unicode-gpt4": (unicode_text(), GPT4, 250),
        "overlaps-gpt4": ("aaaaaaa aaa aa bbbbbb abababab aaab baaa " * 30 + "a" * 50, GPT4, 40),
        "ties-gpt2": (" ".join(a + b for a in "pqrs" for b in "wxyz") + " zy xw", GPT2, 30),
    }
    if SHAKESPEARE.exists():
        texts["shakespeare-gpt4"] = (SHAKESPEARE.read_text()[:50_000], GPT4, 300)
    return texts


@pytest.mark.parametrize("name", sorted(corpora()))
def test_merges_identical_to_the_naive_trainer(name):
    text, pattern, num_merges = corpora()[name]
    counts = bpe.count_chunks([text], pattern)
    fast = bpe.train_incremental(counts, num_merges)
    assert fast == bpe.train_naive(counts, num_merges)
    assert len(fast) == num_merges or name.startswith(("overlaps", "ties"))  # tiny ones may run out


@pytest.mark.parametrize("trainer", ["train_naive", "train_incremental"])
def test_tie_break_is_the_smallest_pair_whatever_the_order(trainer):
    train = getattr(bpe, trainer)
    # (97, 98) "ab" and (99, 100) "cd" both occur once: the smaller pair wins, not the first seen.
    assert train({"cd": 1, "ab": 1}, 1) == [(97, 98)]
    counts = bpe.count_chunks([unicode_text(seed=1, words=1500)], GPT4)
    reference = train(counts, 200)
    items = list(counts.items())
    for seed in range(3):
        random.Random(seed).shuffle(items)
        assert train(dict(items), 200) == reference


@pytest.mark.parametrize("trainer", ["train_naive", "train_incremental"])
def test_training_stops_when_every_chunk_is_one_token(trainer):
    assert getattr(bpe, trainer)({"abc": 5, "ab": 1}, 10) == [(97, 98), (256, 99)]


def test_merge_pair_replaces_left_to_right_without_overlap():
    assert bpe.merge_pair([97, 97, 97], (97, 97), 256) == [256, 97]  # "aaa" -> [aa, a], as encoding does
    assert bpe.merge_pair([97, 97, 97, 97], (97, 97), 256) == [256, 256]
    assert bpe.merge_pair([97, 98, 97, 98, 99], (97, 98), 300) == [300, 300, 99]


@pytest.mark.parametrize("trainer", ["train_naive", "train_incremental"])
def test_merges_by_hand(trainer):
    """Known answers, independent of the other trainer: the most frequent pair, counted with each
    chunk's weight n(c), ties to the smallest pair, overlapping pairs merged left to right."""
    train = getattr(bpe, trainer)
    # Gage's example: aa (4) -> Z; then ab and Za tie at 2, ab is smaller -> Y; ZY -> X; then
    # every pair occurs once and the smallest goes first.
    assert train({"aaabdaaabac": 1}, 10) == [(97, 97), (97, 98), (256, 257), (97, 99), (100, 258), (258, 260),
                                             (261, 259)]
    # weighted: zy occurs 3 times, ab twice (unweighted, over unique chunks, ab would win 2 to 1)
    assert train({"zy": 3, "ab": 1, "abc": 1}, 10) == [(122, 121), (97, 98), (257, 99)]


def test_count_chunks_counts_every_occurrence():
    assert bpe.count_chunks(["the cat the cat", " the"], GPT2) == Counter({" the": 2, " cat": 2, "the": 1})


@pytest.mark.parametrize("name, chunks", [
    ("gpt2", ["Hello", " world", "'s", " 12345", " DON", "'", "TS", "\n\n ", " x"]),
    ("gpt4", ["Hello", " world", "'s", " ", "123", "45", " DON", "'T", "S", "\n\n", " ", " x"]),
])
def test_pre_split_by_hand(name, chunks):
    """GPT-2's pattern: contractions in lower case only, numbers whole; GPT-4's: contractions in
    either case, numbers in runs of at most 3 digits, newlines apart from the spaces after them."""
    assert bpe.regex.findall(bpe.PATTERNS[name], "Hello world's 12345 DON'TS\n\n  x") == chunks


def test_encoder_applies_merges_by_rank():
    """Known answers, independent of tiktoken: the lowest-ranked pair first (not the leftmost),
    the leftmost of equal pairs, and the pair a new token makes with its left neighbour."""
    tok = bpe.Tokenizer.from_merges(GPT4, [(98, 99), (97, 256), (97, 97)])  # bc=256, a+bc=257, aa=258
    assert tok.encode_chunk("abcd") == [257, 100]   # bc first (rank 256), then a+bc (257)
    assert tok.encode_chunk("xabc") == [120, 257]
    assert tok.encode_chunk("aaa") == [258, 97]    # leftmost first
    assert tok.encode_chunk("aabc") == [97, 257]  # aa (258) ranks after bc (256) and a+bc (257)
    tok = bpe.Tokenizer.from_merges(GPT4, [(97, 98), (98, 99)])  # ab=256, bc=257
    assert tok.encode_chunk("abcd") == [256, 99, 100]  # ab (256) before bc (257), though both are possible
    # a chunk whose bytes are a token is that token, as in tiktoken, though BPE would stop at a + bc
    tok = bpe.Tokenizer.from_merges(GPT4, [(98, 99), (97, 98), (257, 99)])  # bc=256, ab=257, ab+c=258
    assert tok.encode_chunk("abc") == [258] == bpe.to_tiktoken(tok).encode_ordinary("abc")
    assert tok.encode_chunk("abcd") == [97, 256, 100]


def test_both_trainers_log_the_same_progress():
    counts = bpe.count_chunks([code_text()[:20_000]], GPT2)
    logs = {name: [] for name in ("train_naive", "train_incremental")}
    for name, lines in logs.items():
        getattr(bpe, name)(counts, 100, lambda done, rate, ratio: lines.append((done, ratio)), 30)
    assert logs["train_naive"] == logs["train_incremental"] and [d for d, _ in lines] == [30, 60, 90, 100]


@pytest.fixture(scope="module")
def trained():
    """A vocab of 1,024 trained on Shakespeare (or, absent it, on the code) plus the varied text."""
    text = (SHAKESPEARE.read_text()[:300_000] if SHAKESPEARE.exists() else code_text()) + VARIED * 3
    merges = bpe.train_incremental(bpe.count_chunks([text], GPT4), 1024 - 256 - 2)
    return bpe.Tokenizer.from_merges(GPT4, merges, [EOT, "<|pad|>"])


def test_trained_vocab_encodes_exactly_as_its_tiktoken_export(trained, tmp_path):
    enc = bpe.to_tiktoken(trained)
    for text in [VARIED, code_text()[:20_000], *fuzz_strings(500, seed=2)]:
        assert trained.encode_ordinary(text) == enc.encode_ordinary(text)
        assert trained.encode(text, allowed_special="all") == enc.encode(text, allowed_special="all")
    # the .tiktoken file round trip recovers the merges themselves
    path = str(tmp_path / "t.tiktoken")
    bpe.write_tiktoken(trained, path)
    back = bpe.from_tiktoken(path, GPT4, [EOT, "<|pad|>"])
    assert back.merges == trained.merges and back.special == trained.special


def test_decode_encode_round_trip_on_random_unicode(trained):
    strings = fuzz_strings(1000, seed=3)
    for s in strings:
        assert trained.decode(trained.encode(s)) == s
    joined = EOT.join(strings[:50])
    ids = trained.encode(joined, allowed_special="all")
    assert ids.count(trained.special[EOT]) == 49 and trained.decode(ids) == joined


def test_decode_of_invalid_utf8_replaces(trained):
    e_acute = trained.encode("é")  # two bytes, 0xC3 0xA9
    first_byte = trained.byte_ids[0xC3]
    assert trained.decode([first_byte]) == "\ufffd"
    assert trained.decode([first_byte, trained.byte_ids[ord("a")]]) == "\ufffda"
    assert trained.decode(e_acute) == "é"
    with pytest.raises(ValueError, match="not in this vocabulary"):
        trained.decode([10**6])


def test_special_tokens_both_ways(trained):
    enc = bpe.to_tiktoken(trained)
    text = f"a{EOT}b<|pad|>c"
    with pytest.raises(ValueError, match=re.escape(repr(EOT)) + ".*allowed_special"):
        trained.encode(text)  # disallowed by default, like tiktoken
    with pytest.raises(ValueError):
        enc.encode(text)
    with pytest.raises(ValueError, match="<\\|pad\\|>"):
        trained.encode(text, allowed_special={EOT})  # the other one is still disallowed
    ids = trained.encode(text, allowed_special="all")
    assert ids == enc.encode(text, allowed_special="all")
    assert trained.special[EOT] in ids and trained.special["<|pad|>"] in ids
    plain = trained.encode(text, disallowed_special=())  # as ordinary text
    assert plain == enc.encode(text, disallowed_special=()) == trained.encode_ordinary(text)
    assert trained.special[EOT] not in plain
    only = trained.encode(text, allowed_special={EOT}, disallowed_special=())
    assert only == enc.encode(text, allowed_special={EOT}, disallowed_special=())
    with pytest.raises(ValueError, match="not special tokens"):
        trained.encode(text, allowed_special={"<|nope|>"})


def test_special_tokens_take_the_ids_after_the_merges_and_the_longest_match():
    tok = bpe.Tokenizer.from_merges(GPT4, [(97, 98)], ["<|end|>", "<|end|>2"])
    assert tok.special == {"<|end|>": 257, "<|end|>2": 258} and tok.n_vocab == 259
    assert tok.encode("ab<|end|>2<|end|>", allowed_special="all") == [256, 258, 257]  # not <|end|> then "2"
    assert tok.decode([256, 258, 257]) == "ab<|end|>2<|end|>"


@pytest.fixture(scope="module")
def offline_tiktoken():
    """tiktoken.get_encoding, reading TIKTOKEN_CACHE_DIR ($ALGOS_DATA_DIR/tiktoken_cache when unset).
    A skip only where no cache folder exists and the download fails; a cache folder that exists
    but does not load (a damaged or incomplete cache) fails the test."""
    import tiktoken

    with pytest.MonkeyPatch.context() as env:
        if "TIKTOKEN_CACHE_DIR" not in os.environ and CACHE.is_dir():
            env.setenv("TIKTOKEN_CACHE_DIR", str(CACHE))
        cache = os.environ.get("TIKTOKEN_CACHE_DIR", "")

        def get(name):
            try:
                return tiktoken.get_encoding(name)
            except Exception as e:
                if cache and os.path.isdir(cache):
                    pytest.fail(f"TIKTOKEN_CACHE_DIR={cache} exists but tiktoken cannot load {name} from it "
                                f"({type(e).__name__}: {e})")
                pytest.skip(f"tiktoken cannot load {name} ({type(e).__name__}): no cache folder (TIKTOKEN_CACHE_DIR "
                            f"{cache or 'unset'}) and no network; {no_data('tiktoken_cache')}")
        yield get


@pytest.mark.parametrize("ours, theirs", [("gpt2", "gpt2"), ("gpt2", "r50k_base"), ("gpt4", "cl100k_base")])
def test_patterns_are_tiktokens(ours, theirs, offline_tiktoken):
    assert bpe.PATTERNS[ours] == offline_tiktoken(theirs)._pat_str


@pytest.mark.parametrize("name", ["gpt2", "cl100k_base"])
def test_imported_gpt2_and_cl100k_match_tiktoken(name, offline_tiktoken):
    enc = offline_tiktoken(name)
    tok = bpe.from_tiktoken(name)
    assert tok.n_vocab == enc.n_vocab
    for text in [VARIED, code_text(), *fuzz_strings(300, seed=4)]:
        assert tok.encode(text, allowed_special="all") == enc.encode(text, allowed_special="all")
    assert tok.decode(enc.encode_ordinary(VARIED)) == VARIED
    if name == "gpt2":
        assert tok.encode("hello world") == [31373, 995]


@pytest.mark.skipif(not (SHARED_DATA / "r50k_base.tiktoken").exists(), reason=no_data("r50k_base.tiktoken"))
def test_import_of_a_tiktoken_file(offline_tiktoken):
    tok = bpe.from_tiktoken(str(SHARED_DATA / "r50k_base.tiktoken"), GPT2, [EOT])
    assert tok.special == {EOT: 50256}
    enc = offline_tiktoken("r50k_base")
    assert tok.encode(VARIED, allowed_special="all") == enc.encode(VARIED, allowed_special="all")


def test_save_load_round_trip(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the run folder of the evaluation below
    path = str(tmp_path / "tokenizer.bpe")
    bpe.save(trained, path)
    back = bpe.load(path)
    assert (back.pattern, back.merges, back.special, back.byte_ids) == \
        (trained.pattern, trained.merges, trained.special, trained.byte_ids)
    assert back.encode(VARIED, allowed_special="all") == trained.encode(VARIED, allowed_special="all")
    bpe.write_vocab(trained, str(tmp_path / "vocab.txt"))
    lines = (tmp_path / "vocab.txt").read_text().splitlines()
    assert len(lines) == trained.n_vocab and lines[-1].endswith("(special)")
    assert re.fullmatch(r"\s*256 \[.+\] = \[.+\] \+ \[.+\]", lines[256])
    (tmp_path / "empty.txt").write_text("")  # nothing to encode: no rate and no ratio
    evaluated = bpe.main(bpe.Args(eval_checkpoint=path, input=str(tmp_path / "empty.txt"), save_model=False))
    assert "compression_ratio" not in evaluated and "encode/mb_per_s" not in evaluated


def flip_a_digit(data: bytes) -> bytes:
    i = data.rindex(b" ") - 1  # the last digit of the first id of the last merge
    return data[:i] + bytes([ord("0") + (data[i] - ord("0") + 1) % 10]) + data[i + 1:]


@pytest.mark.parametrize("mutate", [
    lambda data: b"not a tokenizer" + data[data.index(b"\n"):],                  # another header
    lambda data: data[:len(data) * 2 // 3],                                     # truncated
    flip_a_digit,                                                               # one merge changed
    lambda data: data.replace(b"bpe.py tokenizer v2", b"bpe.py tokenizer v1"),  # another version
    lambda data: b"",                                                           # empty
    lambda data: b"\xff\xfe" + data,                                            # not UTF-8
], ids=["header", "truncated", "flipped", "version", "empty", "binary"])
def test_damaged_files_are_refused_by_their_sha256(trained, tmp_path, mutate):
    path = tmp_path / "tokenizer.bpe"
    bpe.save(trained, str(path))
    path.write_bytes(mutate(path.read_bytes()))
    with pytest.raises(ValueError, match=re.escape(str(path)) + " is damaged or was not written by bpe.py: "
                       "it does not match the sha256 on its first line"):
        bpe.load(str(path))


@pytest.mark.parametrize("pattern", [GPT2, GPT4], ids=["gpt2", "gpt4"])
def test_shards_pre_tokenise_to_the_chunks_of_the_whole(pattern):
    text = (SHAKESPEARE.read_text() if SHAKESPEARE.exists() else code_text()) + VARIED
    whole = bpe.count_chunks([text], pattern)
    for world_size in (2, 3, 7):
        pieces = [bpe.shard(text, r, world_size) for r in range(world_size)]
        assert "".join(pieces) == text and all(pieces)
        assert sum((bpe.count_chunks([p], pattern) for p in pieces), Counter()) == whole


def test_bad_arguments_fail_with_one_sentence(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # runs/ would go here
    with pytest.raises(SystemExit, match="--vocab-size 200 is not allowed: it must be at least 257"):
        bpe.main(bpe.Args(vocab_size=200))
    with pytest.raises(SystemExit, match="--vocab-size 257 leaves no room"):  # 256 bytes + 1 special token
        bpe.main(bpe.Args(vocab_size=257))
    for bad in (0, -1, float("nan")):
        with pytest.raises(SystemExit, match=f"--log-interval {bad} is not allowed"):
            bpe.main(bpe.Args(log_interval=bad))
    with pytest.raises(SystemExit, match="--input .*no such file"):
        bpe.main(bpe.Args(input=str(tmp_path / "missing.txt")))
    with pytest.raises(SystemExit, match="--special-tokens"):
        bpe.main(bpe.Args(input=str(ALGOS / "dqn.py"), special_tokens=("<a>", "<a>")))
    for name, content in (("empty.txt", b""), ("single.txt", b"a\nb")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(SystemExit, match=f"--input {name} has nothing to merge"):
            bpe.main(bpe.Args(input=name))
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(SystemExit, match="latin1.txt is not UTF-8 text"):
        bpe.main(bpe.Args(input="latin1.txt"))
    with pytest.raises(SystemExit, match="--eval-checkpoint nope.bpe: no such file"):
        bpe.main(bpe.Args(eval_checkpoint="nope.bpe"))
    with pytest.raises(SystemExit, match=re.escape(f"is a folder: give the tokenizer file inside it, {tmp_path}/tok")):
        bpe.main(bpe.Args(eval_checkpoint=str(tmp_path)))
    with pytest.raises(SystemExit, match="--input my_corpus.txtt: no such file or folder"):  # evaluating too
        bpe.main(bpe.Args(eval_checkpoint="gpt2", input="my_corpus.txtt"))
    bpe.save(bpe.Tokenizer.from_merges(GPT4, [(104, 105)]), "one.bpe")  # but the default --input may be absent
    assert bpe.main(bpe.Args(eval_checkpoint="one.bpe", save_model=False)) == {}
    for flags in (dict(show="caf\udce9"), dict(special_tokens=("<|\udce9|>",))):  # from a Latin-1 terminal
        flag = "--" + next(iter(flags)).replace("_", "-")
        with pytest.raises(SystemExit, match=f"^{flag} holds bytes that are not UTF-8"):
            bpe.main(bpe.Args(input=str(ALGOS / "dqn.py"), **flags))
    (tmp_path / "data").mkdir()  # gpt's prepare.py writes binary token files beside input.txt
    (tmp_path / "data" / "input.txt").write_text("To be, or not to be")
    (tmp_path / "data" / "train.bin").write_bytes(bytes([0, 5, 0, 17]) * 100)  # valid UTF-8, full of NULs
    with pytest.raises(SystemExit, match="train.bin holds NUL bytes, so it is binary, not text: point --input at"):
        bpe.main(bpe.Args(input="data"))
    bad = tmp_path / "bad.bpe"
    bad.write_text("hello\n")
    folders = sorted((tmp_path / "runs").glob("*"))
    for flags in (dict(pattern="gpt2"), dict(special_tokens=())):  # a tokenizer.bpe or a name brings its own
        for source in ("bad.bpe", "gpt2"):
            with pytest.raises(SystemExit, match=f"--eval-checkpoint {source} has its own pattern and special tokens"):
                bpe.main(bpe.Args(eval_checkpoint=source, **flags))
    assert sorted((tmp_path / "runs").glob("*")) == folders, "refused before a run folder is made"
    proc = run([sys.executable, str(ALGOS / "bpe.py"), "--eval-checkpoint", str(bad)], cwd=tmp_path, timeout=60)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "is damaged or was not written by bpe.py" in proc.stderr.strip().splitlines()[-1]


def test_learning_compression_grows_with_the_vocabulary(tmp_path, monkeypatch):
    """Bytes per token on the code corpus (104 KB): 1.0 untrained (bytes alone); the real trainer
    1.719 at vocab 400 and 2.906 at 1,200. Broken variants measured in a copy: merging the least
    frequent pair 1.001 and 1.012; pair counts not weighted by the chunk counts 1.570 and 2.349
    (it passes the first bar, and the second catches it); measured on the same corpus and sizes."""
    monkeypatch.chdir(tmp_path)  # runs/ would go here
    corpus = tmp_path / "code.txt"
    corpus.write_text(code_text())
    small = bpe.main(bpe.Args(input=str(corpus), vocab_size=400, save_model=False))
    large = bpe.main(bpe.Args(input=str(corpus), vocab_size=1200))
    assert small["train/vocab_size"] == 400 and large["train/vocab_size"] == 1200
    assert small["train/merges"] == 400 - 257 and large["train/merges"] == 1200 - 257
    # bytes per token: 1.0 with bytes alone; each merge can only join tokens
    assert 1.5 < small["compression_ratio"] < large["compression_ratio"]
    assert large["compression_ratio"] > 2.5
    # the metric is what the saved tokenizer does to the corpus
    tok = bpe.load(str(next(tmp_path.glob("runs/*/tokenizer.bpe"))))
    text = code_text()
    assert large["compression_ratio"] == pytest.approx(len(text.encode("utf-8")) / len(tok.encode_ordinary(text)))


@needs_shakespeare
def test_the_chunk_cache_encodes_each_distinct_chunk_once(trained, monkeypatch):
    """What makes encode_ordinary faster than BPE on every chunk (README: 1.5-2.1x), counted
    rather than timed: from an empty cache each distinct chunk of tinyshakespeare goes through
    encode_chunk once, a second pass through none, and the ids are those of encode_chunk on
    every chunk. The speed next to tiktoken and the uncached loop is measured in CPU seconds by
    test_benchmark_against_naive_and_tiktoken (-m benchmark): in the default run, beside the
    other xdist worker on 2 cores, our share of tiktoken's speed went from 0.41 alone to 0.236."""
    text = SHAKESPEARE.read_text()
    chunks = trained.split.findall(text)
    uncached = [t for chunk in chunks for t in trained.encode_chunk(chunk)]
    calls = []
    encode_chunk = trained.encode_chunk
    monkeypatch.setattr(trained, "encode_chunk", lambda chunk: calls.append(chunk) or encode_chunk(chunk))
    trained.cache.clear()
    assert trained.encode_ordinary(text) == uncached
    assert sorted(calls) == sorted(set(chunks)) and len(calls) < len(chunks) / 10
    calls.clear()
    assert trained.encode_ordinary(text) == uncached and calls == []


def test_script_trains_saves_shows_and_reloads(tmp_path):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text(code_text()[:30_000])
    (tmp_path / "corpus" / "b.txt").write_text(VARIED * 20)
    script = str(ALGOS / "bpe.py")
    proc = run([sys.executable, script, "--input", "corpus", "--vocab-size", "600", "--log-interval", "100",
                "--show", "Hello world<|endoftext|>"], cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "merges/s" in proc.stdout
    pieces = re.search(r"tokens for \d+ bytes:\n(.*)\n", proc.stdout).group(1)
    assert pieces.endswith("[<|endoftext|>]") and pieces[1:-1].replace("][", "") == "Hello world<|endoftext|>"
    run_dir = next((tmp_path / "runs").iterdir())
    saved = {"tokenizer.bpe", "vocab.txt", "tokenizer.tiktoken"}
    assert {p.name for p in run_dir.iterdir()} == saved | {"metrics.jsonl"}  # issue 22: every run logs its metrics
    assert all(f"saved {os.path.join('runs', run_dir.name, name)}\n" in proc.stdout for name in saved)
    assert proc.stdout.index("saved runs") < proc.stdout.index("encoded --input at")  # saved before the timing
    assert f"metrics: {os.path.join('runs', run_dir.name, 'metrics.jsonl')}\n" in proc.stdout
    ids = re.search(r"ids: (\[.*\])", proc.stdout).group(1)
    for load in ("tokenizer.bpe", "tokenizer.tiktoken"):
        again = run([sys.executable, script, "--eval-checkpoint", str(run_dir / load), "--input", "corpus",
                     "--special-tokens", EOT, "--show", "Hello world<|endoftext|>", "--no-save-model"],
                    cwd=tmp_path, timeout=120)
        assert again.returncode == 0, again.stderr[-2000:]
        assert f"ids: {ids}" in again.stdout and "encoded --input at" in again.stdout
        assert "\n(the tokenizer was not saved: add --save-model" in again.stdout
    naive = run([sys.executable, script, "--input", "corpus", "--vocab-size", "600", "--trainer", "naive",
                 "--show", "Hello world<|endoftext|>", "--no-save-model"], cwd=tmp_path, timeout=300)
    assert naive.returncode == 0 and "(naive)" in naive.stdout and f"ids: {ids}" in naive.stdout


def test_torchrun_two_ranks_train_the_same_tokenizer(tmp_path):
    """Each rank pre-tokenises half of the text; rank 0 trains on the gathered counts."""
    corpus = tmp_path / "code.txt"
    corpus.write_text(code_text())
    args = [str(ALGOS / "bpe.py"), "--input", str(corpus), "--vocab-size", "400"]
    assert run([sys.executable, *args, "--exp-name", "one"], cwd=tmp_path).returncode == 0
    two = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args,
               "--exp-name", "two"], cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-2000:]
    assert "over 2 rank(s)" in two.stdout
    files = {p.parent.name.split("__")[1]: p.read_text() for p in (tmp_path / "runs").glob("*/tokenizer.bpe")}
    assert files.keys() == {"one", "two"} and files["one"] == files["two"]


# ---------------------------------------------------------------------------- benchmarks
TRAINED = re.compile(r"trained vocab (\d+) in ([\d.]+) s")
ENCODED = re.compile(r"encoded --input at ([\d.]+) MB/s .*; ([\d.]+) MB/s a second time\): ([\d.]+) bytes/token")


@pytest.mark.benchmark
@needs_shakespeare
def test_benchmark_speed_on_tinyshakespeare(tmp_path):
    """The issue's bars: vocab 1,024 in <= 2 s, 8,192 in <= 20 s, encoding >= 4 MB/s."""
    rows = []
    for vocab, pattern, bar in [(1024, "gpt4", 2.0), (8192, "gpt4", 20.0), (1024, "gpt2", 2.0), (8192, "gpt2", 20.0)]:
        start = time.time()
        proc = run([sys.executable, str(ALGOS / "bpe.py"), "--input", str(SHAKESPEARE), "--vocab-size", str(vocab),
                    "--pattern", pattern, "--no-save-model", "--log-interval", "100000"], cwd=tmp_path, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        wall = time.time() - start
        _, train_s = TRAINED.search(proc.stdout).groups()
        mb_per_s, warm, ratio = ENCODED.search(proc.stdout).groups()
        rows.append((vocab, pattern, float(train_s), bar, wall, float(mb_per_s), float(warm), float(ratio)))
    print("\n| vocab | pattern | train s (bar) | process wall s | encode MB/s, empty cache (bar 4) | "
          "second pass MB/s | bytes/token |")
    print("|---|---|---|---|---|---|---|")
    for vocab, pattern, train_s, bar, wall, mb, warm, ratio in rows:
        print(f"| {vocab:,} | {pattern} | {train_s:.2f} (≤ {bar:g}) | {wall:.1f} | {mb:.1f} | {warm:.1f} | {ratio:.3f} |")
    for vocab, pattern, train_s, bar, wall, mb, warm, ratio in rows:
        assert train_s <= bar, f"vocab {vocab} ({pattern}) took {train_s} s"
        assert mb >= 4.0, f"encoding at {mb} MB/s"


@pytest.mark.benchmark
@needs_shakespeare
def test_benchmark_against_naive_and_tiktoken():
    """Speed-up over the naive loop (same merges) on 100 KB, and encoding next to tiktoken on
    tinyshakespeare, both in CPU seconds measured side by side. README: 68x (60x on a loaded
    machine; 57x here with load 10 on 2 cores); ours 7.1 MB/s against tiktoken's 17.4 (0.41;
    0.34 here under that load) and 1.5-2.1x encode_chunk on every chunk. Run it alone: in the
    default run, beside the other xdist worker, ours fell to 0.236 of tiktoken on a slower machine."""
    text = SHAKESPEARE.read_text()[:100_000]
    counts = bpe.count_chunks([text], GPT4)
    fast_s = math.inf
    for _ in range(3):  # best of 3: it takes a few hundredths of a second
        start = time.process_time()
        fast = bpe.train_incremental(counts, 512 - 256)
        fast_s = min(fast_s, time.process_time() - start)
    start = time.process_time()
    slow = bpe.train_naive(counts, 512 - 256)
    naive_s = time.process_time() - start
    assert fast == slow
    tok = bpe.Tokenizer.from_merges(GPT4, bpe.train_incremental(bpe.count_chunks([SHAKESPEARE.read_text()], GPT4), 767), [EOT])
    enc, full = bpe.to_tiktoken(tok), SHAKESPEARE.read_text()
    n_bytes, chunks, mb_per_s, ids = len(full.encode()), tok.split.findall(full), {}, {}

    def ours():
        tok.cache.clear()
        return tok.encode_ordinary(full)  # from an empty cache

    def uncached():  # encode_chunk on every chunk, the regex split done beforehand
        return [t for chunk in chunks for t in tok.encode_chunk(chunk)]

    def tiktoken():
        return enc.encode_ordinary(full)

    for _ in range(5):  # best of 5, interleaved
        for f in (ours, uncached, tiktoken):
            gc.collect()
            gc.disable()  # as timeit does: a collection inside one timing, not the others, moved the ratios
            start = time.process_time()
            ids[f.__name__] = f()
            mb_per_s[f.__name__] = max(mb_per_s.get(f.__name__, 0), n_bytes / 1e6 / (time.process_time() - start))
            gc.enable()
    assert ids["ours"] == ids["uncached"] == ids["tiktoken"]
    print(f"\n100 KB, vocab 512: incremental {fast_s:.3f} s, naive {naive_s:.1f} s ({naive_s / fast_s:.0f}x), "
          f"identical merges\nencode tinyshakespeare, vocab 1,024: ours {mb_per_s['ours']:.1f} MB/s (empty cache), "
          f"uncached {mb_per_s['uncached']:.1f}, tiktoken {mb_per_s['tiktoken']:.1f} MB/s, identical ids (CPU seconds)")
    assert naive_s / fast_s >= 40, f"the incremental trainer only {naive_s / fast_s:.0f}x the naive one"
    assert mb_per_s["ours"] >= 0.3 * mb_per_s["tiktoken"], mb_per_s
    assert mb_per_s["ours"] >= 1.25 * mb_per_s["uncached"], mb_per_s


def test_a_folder_is_read_whole_without_hidden_folders(tmp_path):
    """--input DIR and DIR/ read the same files, sorted, and never .git's or __pycache__'s binary files."""
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "index").write_bytes(b"\xff\xfe not text")
    (tmp_path / "sub" / "__pycache__").mkdir(parents=True)
    (tmp_path / "sub" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\xa7\r\r\n not text")
    (tmp_path / "sub" / "b.txt").write_text("second")
    (tmp_path / "a.txt").write_text("first")
    assert bpe.read_texts(str(tmp_path)) == bpe.read_texts(str(tmp_path) + "/") == ["first", "second"]
