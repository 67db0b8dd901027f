"""The data/ scripts a new user runs first: bad input gets one sentence, a failed download says
that --from-file works offline, and --from-file writes exactly what bpe.py and gpt.py read.

Most refusals run in-process (main() under a patched sys.argv; what SystemExit carries is what
Python prints on stderr); one refusal per script, the network failures and the end-to-end runs
are real processes, checked for one line on stderr and no traceback."""

import importlib.util
import json
import shutil
import sys
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import ALGOS, ROOT, SHARED_DATA, no_data, run
from scripts import SCRIPTS

CHAR = ROOT / "data" / "shakespeare_char" / "prepare.py"
BPE_PREP = ROOT / "data" / "shakespeare" / "prepare.py"
PARALLEL = ROOT / "data" / "parallel" / "prepare.py"
BOXOBAN = ROOT / "data" / "get_boxoban.sh"
UNREACHABLE = "http://127.0.0.1:9/input.txt"  # the discard port: the connection is refused at once
TEXT = "ROMEO:\nBut, soft! what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n"


def load(path: Path):
    spec = importlib.util.spec_from_file_location(f"prepare_{path.parent.name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def refusal(module, argv: list[str], monkeypatch) -> str:
    """Run module.main() with argv as a user would type it; return the one sentence it exits with."""
    monkeypatch.setattr(sys, "argv", ["prepare.py", *argv])
    with pytest.raises(SystemExit) as exit_info:
        module.main() if module.__name__ != "prepare_parallel" else module.main(argv)
    message = exit_info.value.code
    assert isinstance(message, str), f"exit code {message!r}, not a sentence"
    assert "\n" not in message.strip() and message.strip().endswith((".", "?")), message
    return message


def one_line_refusal(proc) -> str:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture
def inputs(tmp_path):
    (tmp_path / "text.txt").write_text(TEXT * 20)
    (tmp_path / "latin1.txt").write_bytes("ROMÉO: à demain\n".encode("latin-1"))
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "folder").mkdir()
    return tmp_path


# --- the two tinyshakespeare preparations -------------------------------------------------

BAD_TEXT = [  # (arguments, words the sentence must contain)
    (["--from-file", "{d}/nowhere.txt"], "no such file"),
    (["--from-file", "{d}/folder"], "is a folder"),
    (["--from-file", "{d}/latin1.txt"], "not UTF-8"),
    (["--from-file", "{d}/empty.txt"], "is empty"),
    (["--from-file", "{d}/text.txt", "--val-fraction", "-0.5"], "between 0 and 1"),
    (["--from-file", "{d}/text.txt", "--val-fraction", "nan"], "between 0 and 1"),
    (["--from-file", "{d}/text.txt", "--val-fraction", "1"], "between 0 and 1"),
    (["--from-file", "{d}/text.txt", "--val-fraction", "0"], "between 0 and 1"),
    (["--from-file", "{d}/text.txt", "--val-fraction", "inf"], "between 0 and 1"),
    (["--from-file", "{d}/text.txt", "--val-fraction", "ten"], "between 0 and 1"),
    (["--from-file", "{d}/text.txt", "--out-dir", "{d}/text.txt"], "is a file"),
]


@pytest.mark.parametrize("script", [CHAR, BPE_PREP], ids=["shakespeare_char", "shakespeare"])
@pytest.mark.parametrize("argv, words", BAD_TEXT, ids=[" ".join(a[2:] or a[1:]).replace("{d}/", "") for a, _ in BAD_TEXT])
def test_tinyshakespeare_refuses_bad_input(script, argv, words, inputs, monkeypatch):
    out = inputs / "out"
    argv = [a.format(d=inputs) for a in argv]
    if "--out-dir" not in argv:
        argv += ["--out-dir", str(out)]
    assert words in refusal(load(script), argv, monkeypatch)
    assert not any(out.glob("*.bin")), "a refused run wrote token files"


@pytest.mark.parametrize("script", [CHAR, BPE_PREP], ids=["shakespeare_char", "shakespeare"])
def test_tinyshakespeare_refusal_is_one_line_end_to_end(script, inputs):
    proc = run([sys.executable, str(script), "--from-file", str(inputs / "latin1.txt"), "--out-dir",
                str(inputs / "out")], cwd=inputs, timeout=60)
    assert "not UTF-8" in one_line_refusal(proc)


@pytest.mark.parametrize("script", [CHAR, BPE_PREP], ids=["shakespeare_char", "shakespeare"])
def test_failed_download_says_from_file_works_offline(script, tmp_path):
    proc = run([sys.executable, str(script), "--url", UNREACHABLE, "--out-dir", str(tmp_path / "out")],
               cwd=tmp_path, timeout=60)
    line = one_line_refusal(proc)
    assert UNREACHABLE in line and "--from-file PATH" in line, line
    assert not (tmp_path / "out" / "input.txt").exists()


def test_failed_download_in_process(tmp_path, monkeypatch):
    """A timeout or an HTTP error is a failed download too, said the same way."""
    char = load(CHAR)

    def fail(url, timeout):
        raise urllib.error.HTTPError(url, 404, "Not Found", None, None)
    monkeypatch.setattr(char.urllib.request, "urlopen", fail)
    assert "--from-file PATH" in refusal(char, ["--out-dir", str(tmp_path)], monkeypatch)
    monkeypatch.setattr(char.urllib.request, "urlopen", lambda url, timeout: (_ for _ in ()).throw(TimeoutError()))
    assert "--from-file PATH" in refusal(char, ["--out-dir", str(tmp_path)], monkeypatch)


def test_gpt2_prepare_without_tiktoken_vocabulary_names_the_cache_variable(inputs):
    """No cache and no network (requests is sent to a proxy that refuses): one sentence that
    names TIKTOKEN_CACHE_DIR, not tiktoken's chained tracebacks."""
    empty_cache = inputs / "empty_cache"
    empty_cache.mkdir()
    proxy = "http://127.0.0.1:9"
    proc = run([sys.executable, str(BPE_PREP), "--from-file", str(inputs / "text.txt"), "--out-dir",
                str(inputs / "out")], cwd=inputs, timeout=120, TIKTOKEN_CACHE_DIR=str(empty_cache),
               HTTPS_PROXY=proxy, https_proxy=proxy, HTTP_PROXY=proxy, http_proxy=proxy, NO_PROXY="", no_proxy="")
    assert "TIKTOKEN_CACHE_DIR" in one_line_refusal(proc)
    assert not (inputs / "out" / "train.bin").exists()


def test_char_from_file_writes_what_bpe_and_gpt_read_by_default(tmp_path):
    """A user's checkout in miniature: data/shakespeare_char/prepare.py --from-file, then bpe.py
    and gpt.py with their default --input and --data-dir (only the tiny run's sizes given)."""
    prep = tmp_path / "data" / "shakespeare_char" / "prepare.py"
    prep.parent.mkdir(parents=True)
    shutil.copy(CHAR, prep)
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes((ROOT / "README.md").read_bytes())  # ~50 KB of UTF-8 with non-ASCII characters
    proc = run([sys.executable, str(prep), "--from-file", str(corpus)], cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    data = prep.parent
    for name in ("input.txt", "train.bin", "val.bin", "meta.json"):
        assert f"wrote {data / name} ({(data / name).stat().st_size:,} bytes)" in proc.stdout
    assert (data / "input.txt").read_bytes() == corpus.read_bytes()
    text = corpus.read_text(encoding="utf-8")
    meta = json.loads((data / "meta.json").read_text(encoding="utf-8"))
    ids = [np.fromfile(data / f"{s}.bin", dtype=np.uint16) for s in ("train", "val")]
    assert "".join(meta["itos"][i] for i in np.concatenate(ids)) == text
    assert len(ids[0]) == int(len(text) * 0.9) and meta["vocab_size"] == len(set(text))

    (tmp_path / "one.txt").write_text("a")  # refused (an empty split): input.txt stays the text of the .bin files
    proc = run([sys.executable, str(prep), "--from-file", str(tmp_path / "one.txt")], cwd=tmp_path, timeout=60)
    assert proc.returncode != 0 and "leave an empty train or val split" in proc.stderr
    assert (data / "input.txt").read_bytes() == corpus.read_bytes()

    bpe_tiny = SCRIPTS["bpe.py"]["tiny"]
    bpe_tiny = [a for i, a in enumerate(bpe_tiny) if a != "--input" and (i == 0 or bpe_tiny[i - 1] != "--input")]
    proc = run([sys.executable, str(ALGOS / "bpe.py"), *bpe_tiny], cwd=tmp_path, timeout=240)
    assert proc.returncode == 0, proc.stderr
    gpt_tiny = SCRIPTS["gpt.py"]["tiny"]
    gpt_tiny = [a for i, a in enumerate(gpt_tiny) if a != "--data-dir" and (i == 0 or gpt_tiny[i - 1] != "--data-dir")]
    proc = run([sys.executable, str(ALGOS / "gpt.py"), *gpt_tiny, "--max-iters", "4", "--eval-interval", "4"],
               cwd=tmp_path, timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert list(tmp_path.glob("runs/*/ckpt.pt")) and list(tmp_path.glob("runs/*/tokenizer.bpe"))


def test_char_prepare_keeps_a_downloaded_input_and_copies_onto_itself(tmp_path, monkeypatch):
    """A second run reads the input.txt already there (no download); --from-file naming that very
    file leaves it as it is."""
    char = load(CHAR)
    (tmp_path / "input.txt").write_text(TEXT * 10)
    monkeypatch.setattr(char.urllib.request, "urlopen", lambda *a, **k: pytest.fail("downloaded again"))
    for argv in (["--out-dir", str(tmp_path)], ["--out-dir", str(tmp_path), "--from-file", str(tmp_path / "input.txt")]):
        monkeypatch.setattr(sys, "argv", ["prepare.py", *argv])
        char.main()
        assert (tmp_path / "input.txt").read_text() == TEXT * 10
        assert len(np.fromfile(tmp_path / "val.bin", dtype=np.uint16)) == len(TEXT * 10) - int(len(TEXT * 10) * 0.9)


@pytest.mark.skipif(not (SHARED_DATA / "tinyshakespeare.txt").exists(), reason=no_data("tinyshakespeare.txt"))
def test_tinyshakespeare_counts_offline(tmp_path, monkeypatch):
    """The numbers the READMEs give: vocab 65, 1,003,854 / 111,540 characters; GPT-2 BPE
    301,966 / 36,059 tokens (with tiktoken's cache from the same folder)."""
    monkeypatch.setattr(sys, "argv", ["prepare.py", "--from-file", str(SHARED_DATA / "tinyshakespeare.txt"),
                                      "--out-dir", str(tmp_path / "char")])
    load(CHAR).main()
    sizes = [(tmp_path / "char" / f"{s}.bin").stat().st_size // 2 for s in ("train", "val")]
    assert sizes == [1_003_854, 111_540] and json.loads((tmp_path / "char" / "meta.json").read_text())["vocab_size"] == 65
    if not (SHARED_DATA / "tiktoken_cache").is_dir():
        pytest.skip(no_data("tiktoken_cache"))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(SHARED_DATA / "tiktoken_cache"))
    monkeypatch.setattr(sys, "argv", ["prepare.py", "--from-file", str(SHARED_DATA / "tinyshakespeare.txt"),
                                      "--out-dir", str(tmp_path / "bpe")])
    load(BPE_PREP).main()
    sizes = [(tmp_path / "bpe" / f"{s}.bin").stat().st_size // 2 for s in ("train", "val")]
    assert sizes == [301_966, 36_059]
    assert (tmp_path / "bpe" / "input.txt").read_bytes() == (SHARED_DATA / "tinyshakespeare.txt").read_bytes()


# --- parallel corpora -----------------------------------------------------------------------

def anki_zip(path: Path, body: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("fra.txt", body)
    return path


def flip(path: Path, at: int) -> bytes:
    """The file's bytes with 20 of them inverted from offset `at`."""
    data = bytearray(path.read_bytes())
    data[at:at + 20] = bytes(b ^ 0xFF for b in data[at:at + 20])
    return bytes(data)


@pytest.fixture
def corpora(inputs):
    anki_zip(inputs / "fra-eng.zip", "Go.\tVa !\tCC-BY\nHi.\tSalut !\tCC-BY\nHi.\tSalut !\tCC-BY\n".encode())
    anki_zip(inputs / "latin1.zip", "Go.\tVa à pied\tCC\n".encode("latin-1"))
    anki_zip(inputs / "nopairs.zip", b"just one column\n")
    anki_zip(inputs / "newline.zip", "Hello\u2028world.\tBonjour le monde.\tCC-BY\n".encode())  # U+2028 inside
    body = "".join(f"word{i} w{i * 7}\tmot{i}\tCC\n" for i in range(300)).encode()
    with zipfile.ZipFile(inputs / "damaged.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("fra.txt", body)
    (inputs / "damaged.zip").write_bytes(flip(inputs / "damaged.zip", 60))  # inside the deflate stream: zlib.error
    m = inputs / "m30k"
    m.mkdir()
    import gzip
    for stem in ("train", "val", "test_2016_flickr"):
        (m / f"{stem}.en").write_text("A dog runs.\nTwo men talk.\n")
        with gzip.open(m / f"{stem}.de.gz", "wt", encoding="utf-8") as f:
            f.write("Ein Hund rennt.\nZwei Männer reden.\n")
    for name in ("latin1", "cutgz", "short", "badgz"):
        shutil.copytree(m, inputs / f"m30k_{name}")
    with gzip.open(inputs / "m30k_badgz" / "val.de.gz", "wb") as f:
        f.write(body)
    (inputs / "m30k_badgz" / "val.de.gz").write_bytes(flip(inputs / "m30k_badgz" / "val.de.gz", 40))
    (inputs / "m30k_latin1" / "val.en").write_bytes("Un café.\n".encode("latin-1"))
    (inputs / "m30k_cutgz" / "val.de.gz").write_bytes((m / "val.de.gz").read_bytes()[:12])
    (inputs / "m30k_short" / "test_2016_flickr.en").write_text("A dog runs.\n")
    return inputs


BAD_PARALLEL = [
    (["anki", "{d}/nowhere.zip", "--out", "{d}/o.tsv"], "no such file"),
    (["anki", "{d}/folder", "--out", "{d}/o.tsv"], "is a folder"),
    (["anki", "{d}/text.txt", "--out", "{d}/o.tsv"], "not a zip file"),
    (["anki", "{d}/latin1.zip", "--out", "{d}/o.tsv"], "not UTF-8"),
    (["anki", "{d}/nopairs.zip", "--out", "{d}/o.tsv"], "no 'English<TAB>other' lines"),
    (["anki", "{d}/damaged.zip", "--out", "{d}/o.tsv"], "is not a zip file (or is damaged)"),
    (["anki", "{d}/fra-eng.zip", "--out", "{d}/folder"], "is a folder"),
    (["anki", "{d}/fra-eng.zip", "--out", "{d}/o.tsv", "--max-pairs", "-1"], "--max-pairs -1"),
    (["multi30k", "{d}/nowhere", "--out", "{d}/o"], "no such folder"),
    (["multi30k", "{d}/text.txt", "--out", "{d}/o"], "is a file"),
    (["multi30k", "{d}/folder", "--out", "{d}/o"], "has no train.en"),
    (["multi30k", "{d}/m30k_latin1", "--out", "{d}/o"], "not UTF-8"),
    (["multi30k", "{d}/m30k_cutgz", "--out", "{d}/o"], "cannot be read"),
    (["multi30k", "{d}/m30k_badgz", "--out", "{d}/o"], "cannot be read"),  # a damaged deflate stream
    (["multi30k", "{d}/m30k_short", "--out", "{d}/o"], "has 1 lines"),
    (["multi30k", "{d}/m30k", "--out", "{d}/text.txt"], "is a file"),
]


@pytest.mark.parametrize("argv, words", BAD_PARALLEL, ids=[" ".join(a[:2]).replace("{d}/", "") + (f" {a[-2]} {a[-1]}"
                         if a[-2] == "--max-pairs" else " --out " + a[3].replace("{d}/", "")) for a, _ in BAD_PARALLEL])
def test_parallel_refuses_bad_input(argv, words, corpora, monkeypatch):
    argv = [a.format(d=corpora) for a in argv]
    assert words in refusal(load(PARALLEL), argv, monkeypatch)
    assert not (corpora / "o.tsv").exists() and not (corpora / "o").exists()


@pytest.mark.parametrize("argv, words", [
    (["anki", "{d}/fra-eng.zip", "--out", "{d}/o.tsv", "--src", "fr"], "--src does nothing for anki"),
    (["anki", "{d}/fra-eng.zip", "--out", "{d}/o.tsv", "--tgt", "en"], "--tgt does nothing for anki"),
    (["multi30k", "{d}/m30k", "--out", "{d}/o", "--reverse"], "--reverse does nothing for multi30k"),
    (["multi30k", "{d}/m30k", "--out", "{d}/o", "--max-pairs", "5"], "--max-pairs does nothing for multi30k"),
    (["multi30k", "{d}/m30k", "--out", "{d}/o", "--src", "en", "--tgt", "en"], "--src and --tgt are both en"),
], ids=["anki --src", "anki --tgt", "multi30k --reverse", "multi30k --max-pairs", "multi30k --src = --tgt"])
def test_parallel_refuses_flags_it_would_ignore_and_a_copy_task(argv, words, corpora, monkeypatch):
    """The other corpus kind's flags were ignored unseen, and --src equal to --tgt wrote a copy task."""
    argv = [a.format(d=corpora) for a in argv]
    assert words in refusal(load(PARALLEL), argv, monkeypatch)
    assert not (corpora / "o.tsv").exists() and not (corpora / "o").exists()


def test_parallel_writes_pairs_and_says_so(corpora):
    proc = run([sys.executable, str(PARALLEL), "anki", str(corpora / "fra-eng.zip"), "--out", str(corpora / "e.tsv")],
               cwd=corpora, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (corpora / "e.tsv").read_text() == "Go.\tVa !\nHi.\tSalut !\n"
    assert f"wrote {corpora / 'e.tsv'}: 2 pairs, 21 bytes" in proc.stdout
    proc = run([sys.executable, str(PARALLEL), "anki", str(corpora / "newline.zip"), "--out", str(corpora / "n.tsv")],
               cwd=corpora, timeout=60)  # U+2028 is a space in a sentence, not a line break that shifts the pairs
    assert (corpora / "n.tsv").read_text() == "Hello world.\tBonjour le monde.\n", proc.stderr
    proc = run([sys.executable, str(PARALLEL), "multi30k", str(corpora / "m30k"), "--out", str(corpora / "de")],
               cwd=corpora, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for split in ("train", "val", "test"):
        assert (corpora / "de" / f"{split}.tsv").read_text(encoding="utf-8") == \
            "A dog runs.\tEin Hund rennt.\nTwo men talk.\tZwei Männer reden.\n"
        assert f"wrote {corpora / 'de' / f'{split}.tsv'}: 2 pairs" in proc.stdout
    proc = run([sys.executable, str(PARALLEL), "multi30k", str(corpora / "m30k_cutgz"), "--out", str(corpora / "x")],
               cwd=corpora, timeout=60)
    assert "cannot be read" in one_line_refusal(proc)


# --- Boxoban ----------------------------------------------------------------------------------

@pytest.fixture
def boxoban_script(tmp_path):
    if shutil.which("sh") is None:
        pytest.skip("no sh on this machine")
    script = tmp_path / "data" / "get_boxoban.sh"
    script.parent.mkdir()
    shutil.copy(BOXOBAN, script)
    return script


def test_boxoban_failed_download_says_from_dir_works_offline(boxoban_script, tmp_path):
    if shutil.which("curl") is None:
        pytest.skip("no curl on this machine")
    proxy = "http://127.0.0.1:9"
    proc = run(["sh", str(boxoban_script)], cwd=tmp_path, timeout=60, HTTPS_PROXY=proxy, https_proxy=proxy,
               NO_PROXY="", no_proxy="")
    assert "--from-dir DIR" in one_line_refusal(proc)


@pytest.mark.parametrize("argv, words", [(["--from-dir", "{d}/nowhere"], "no such folder"),
                                         (["--from-dir", "{d}/data"], "has no train/000.txt"),
                                         (["--from"], "unknown argument")])
def test_boxoban_refuses_bad_input(argv, words, boxoban_script, tmp_path):
    proc = run(["sh", str(boxoban_script), *[a.format(d=tmp_path) for a in argv]], cwd=tmp_path, timeout=60)
    assert words in one_line_refusal(proc)


def test_boxoban_from_dir_copies_the_levels(boxoban_script, tmp_path):
    src = tmp_path / "copy"
    for f in [f"train/00{i}" for i in range(10)] + ["test/000"]:
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        (src / f"{f}.txt").write_text("; 0\n##########\n#@ $  .  #\n##########\n\n; 1\n##########\n\n")
    proc = run(["sh", str(boxoban_script), "--from-dir", str(src)], cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = boxoban_script.parent / "boxoban" / "unfiltered"
    assert (out / "train" / "009.txt").read_bytes() == (src / "train" / "009.txt").read_bytes()
    assert "(20 levels," in proc.stdout and "test/000.txt (2 levels," in proc.stdout
    # A second source that fails half-way (no train/005.txt) or holds no levels changes nothing; one without a
    # test set says that the old test file is kept, not that it wrote it.
    other = tmp_path / "other"
    for i in range(10):
        (other / "train").mkdir(parents=True, exist_ok=True)
        (other / "train" / f"00{i}.txt").write_text("; 7\n#####\n#@$.#\n#####\n")
    (other / "train" / "005.txt").unlink()
    assert "has no train/005.txt" in one_line_refusal(run(["sh", str(boxoban_script), "--from-dir", str(other)],
                                                          cwd=tmp_path, timeout=60))
    assert (out / "train" / "000.txt").read_bytes() == (src / "train" / "000.txt").read_bytes()
    (other / "train" / "005.txt").write_text("hello\n")
    assert "train/005.txt holds no level" in one_line_refusal(run(["sh", str(boxoban_script), "--from-dir",
                                                                   str(other)], cwd=tmp_path, timeout=60))
    assert not list(out.glob("*/*.tmp"))
    assert (out / "train" / "000.txt").read_bytes() == (src / "train" / "000.txt").read_bytes()
    (other / "train" / "005.txt").write_text("; 7\n#####\n#@$.#\n#####\n")
    proc = run(["sh", str(boxoban_script), "--from-dir", str(other)], cwd=tmp_path, timeout=60)
    assert proc.returncode == 0 and "(10 levels," in proc.stdout and "(kept " in proc.stdout, proc.stderr
