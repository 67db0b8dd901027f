"""Tiny Shakespeare with GPT-2's byte-level BPE (tiktoken), for algos/gpt.py.

Downloads the 1.1 MB corpus (or reads a local copy with --from-file), encodes it with
tiktoken's "gpt2" encoding (50,257 tokens; 301,966 + 36,059 tokens for this text), and writes,
next to this file:
    train.bin, val.bin   the first 90% and the last 10% of the text as uint16 token ids
    meta.json            {"tokenizer": "gpt2", "vocab_size": 50257}

tiktoken downloads the GPT-2 vocabulary once; offline, point TIKTOKEN_CACHE_DIR at a copy of
its cache (this project's CI: TIKTOKEN_CACHE_DIR=../shared/data/tiktoken_cache).

    python data/shakespeare/prepare.py
    python data/shakespeare/prepare.py --from-file ../shared/data/tinyshakespeare.txt
"""

import argparse
import json
import os
import urllib.request

import numpy as np
import tiktoken

URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
HERE = os.path.dirname(os.path.abspath(__file__))


def read_text(from_file: str | None, cache: str) -> str:
    """The corpus: a local file if given, else the cached download, else a fresh download."""
    if from_file:
        with open(from_file, encoding="utf-8") as f:
            return f.read()
    if not os.path.exists(cache):
        print(f"downloading {URL}")
        with urllib.request.urlopen(URL, timeout=60) as response:
            data = response.read()
        with open(cache + ".tmp", "wb") as f:
            f.write(data)
        os.replace(cache + ".tmp", cache)
    with open(cache, encoding="utf-8") as f:
        return f.read()


def write_split(path: str, ids: list[int]) -> None:
    np.array(ids, dtype=np.uint16).tofile(path + ".tmp")  # 50,257 ids fit in uint16
    os.replace(path + ".tmp", path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from-file", help="read this local copy of the text instead of downloading")
    parser.add_argument("--out-dir", default=HERE, help="where to write train.bin, val.bin, meta.json")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="the last fraction of the text kept for validation")
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    text = read_text(args.from_file, os.path.join(args.out_dir, "input.txt"))
    enc = tiktoken.get_encoding("gpt2")
    # Split the text first, then encode each part, so no token straddles the boundary.
    cut = int(len(text) * (1 - args.val_fraction))
    train_ids, val_ids = enc.encode_ordinary(text[:cut]), enc.encode_ordinary(text[cut:])
    write_split(os.path.join(args.out_dir, "train.bin"), train_ids)
    write_split(os.path.join(args.out_dir, "val.bin"), val_ids)
    with open(os.path.join(args.out_dir, "meta.json"), "w") as f:
        json.dump({"tokenizer": "gpt2", "vocab_size": enc.n_vocab}, f)
    print(f"{len(text):,} characters: train {len(train_ids):,} tokens, val {len(val_ids):,} tokens "
          f"(vocab {enc.n_vocab}) -> {args.out_dir}")


if __name__ == "__main__":
    main()
