"""Tiny Shakespeare with GPT-2's byte-level BPE (tiktoken), for algos/gpt.py.

Downloads the 1.1 MB corpus (or copies a local file given with --from-file), encodes it with
tiktoken's "gpt2" encoding (50,257 tokens; 301,966 + 36,059 tokens for this text), and writes,
next to this file:
    input.txt            the text itself, downloaded or copied
    train.bin, val.bin   the first 90% and the last 10% of the text as uint16 token ids
    meta.json            {"tokenizer": "gpt2", "vocab_size": 50257}

tiktoken downloads the GPT-2 vocabulary once; offline, point TIKTOKEN_CACHE_DIR at a copy of
its cache (this project's CI: TIKTOKEN_CACHE_DIR=../shared/data/tiktoken_cache).

    python data/shakespeare/prepare.py
    TIKTOKEN_CACHE_DIR=../shared/data/tiktoken_cache \
        python data/shakespeare/prepare.py --from-file ../shared/data/tinyshakespeare.txt   # offline

Bad input (a missing, empty or non-UTF-8 file, a folder, a fraction outside (0, 1)), a failed
download and a GPT-2 vocabulary tiktoken cannot load end with one sentence on stderr and exit
code 1.
"""

import argparse
import json
import math
import os
import urllib.request

import numpy as np
import tiktoken

URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
HERE = os.path.dirname(os.path.abspath(__file__))
OFFLINE = "without network, pass a local copy of the text with --from-file PATH"


def decode(data: bytes, name: str) -> str:
    """The bytes of `name` as text, refused with one sentence if empty or not UTF-8."""
    if not data:
        raise SystemExit(f"{name} is empty: give the tinyshakespeare text (1.1 MB).")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SystemExit(f"{name} is not UTF-8 text (byte {e.start}): give a plain-text file.") from None


def read_local(path: str, flag: str) -> str:
    if not os.path.exists(path):
        raise SystemExit(f"{flag}{path}: no such file.")
    if os.path.isdir(path):
        raise SystemExit(f"{flag}{path} is a folder: give the text file itself.")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise SystemExit(f"{flag}{path} cannot be read ({e.strerror or type(e).__name__}).") from None
    return decode(data, flag + path)


def write_bytes(path: str, data: bytes) -> None:
    try:
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.replace(path + ".tmp", path)
    except OSError as e:
        raise SystemExit(f"cannot write {path} ({e.strerror or type(e).__name__}).") from None


def read_text(from_file: str | None, cache: str, url: str) -> tuple[str, str, bytes | None]:
    """The corpus, where it came from, and the bytes main() keeps in `cache` once every check has passed
    (None: `cache` is the corpus already): a local file if given, else the cached download, else a download."""
    if from_file:
        text = read_local(from_file, "--from-file ")
        same = os.path.exists(cache) and os.path.samefile(from_file, cache)
        return text, f"copied from {from_file}", None if same else text.encode("utf-8")
    if os.path.exists(cache):
        return read_local(cache, ""), "already downloaded", None
    print(f"downloading {url}")
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            data = response.read()
    except (OSError, ValueError) as e:  # URLError, HTTPError and timeouts are OSErrors
        reason = getattr(e, "reason", None) or e
        raise SystemExit(f"could not download {url} ({reason}): {OFFLINE}.") from None
    return decode(data, url), f"downloaded from {url}", data


def fraction(value: str) -> float:
    """--val-fraction: a number strictly between 0 and 1 (nan and inf refused with one sentence)."""
    try:
        x = float(value)
    except ValueError:
        x = math.nan
    if not (math.isfinite(x) and 0 < x < 1):
        raise SystemExit(f"--val-fraction {value}: give a number strictly between 0 and 1, e.g. 0.1.")
    return x


def write_split(path: str, ids: list[int]) -> None:  # 50,257 ids fit in uint16
    write_bytes(path, np.array(ids, dtype=np.uint16).tobytes())


def gpt2_encoding():
    """tiktoken's GPT-2 encoding; it downloads the vocabulary once or reads TIKTOKEN_CACHE_DIR."""
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as e:  # requests' connection errors, a bad cache file, ...
        cache = os.environ.get("TIKTOKEN_CACHE_DIR")
        where = f"TIKTOKEN_CACHE_DIR={cache} holds no usable copy" if cache else "TIKTOKEN_CACHE_DIR is not set"
        raise SystemExit(f"tiktoken could not load the GPT-2 vocabulary ({type(e).__name__}; {where}): without "
                         "network, set TIKTOKEN_CACHE_DIR to a folder with tiktoken's cache, e.g. "
                         "TIKTOKEN_CACHE_DIR=../shared/data/tiktoken_cache.") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from-file", help="copy this local file of the text instead of downloading (works offline)")
    parser.add_argument("--out-dir", default=HERE, help="where to write input.txt, train.bin, val.bin, meta.json")
    parser.add_argument("--val-fraction", default="0.1",
                        help="the last fraction of the text kept for validation, strictly between 0 and 1")
    parser.add_argument("--url", default=URL, help="where to download the text from")
    args = parser.parse_args()
    args.val_fraction = fraction(args.val_fraction)
    if os.path.exists(args.out_dir) and not os.path.isdir(args.out_dir):
        raise SystemExit(f"--out-dir {args.out_dir} is a file, not a folder.")
    try:
        os.makedirs(args.out_dir, exist_ok=True)
    except OSError as e:
        raise SystemExit(f"cannot create --out-dir {args.out_dir} ({e.strerror or type(e).__name__}).") from None
    cache = os.path.join(args.out_dir, "input.txt")
    text, source, new_cache = read_text(args.from_file, cache, args.url)
    enc = gpt2_encoding()
    # Split the text first, then encode each part, so no token straddles the boundary.
    cut = int(len(text) * (1 - args.val_fraction))
    train_ids, val_ids = enc.encode_ordinary(text[:cut]), enc.encode_ordinary(text[cut:])
    if not train_ids or not val_ids:
        raise SystemExit(f"{len(text)} characters split at --val-fraction {args.val_fraction} leave an empty "
                         "train or val split: give more text or another fraction.")
    paths = {name: os.path.join(args.out_dir, name) for name in ("input.txt", "train.bin", "val.bin", "meta.json")}
    if new_cache is not None:  # only now: a refused text never replaces the input.txt that the .bin files came from
        write_bytes(cache, new_cache)
    write_split(paths["train.bin"], train_ids)
    write_split(paths["val.bin"], val_ids)
    write_bytes(paths["meta.json"], json.dumps({"tokenizer": "gpt2", "vocab_size": enc.n_vocab}).encode("utf-8"))
    print(f"{len(text):,} characters ({source}): train {len(train_ids):,} tokens, val {len(val_ids):,} tokens "
          f"(vocab {enc.n_vocab})")
    for path in paths.values():
        print(f"wrote {path} ({os.path.getsize(path):,} bytes)" if path != cache or source != "already downloaded"
              else f"kept {path} ({os.path.getsize(path):,} bytes)")


if __name__ == "__main__":
    main()
