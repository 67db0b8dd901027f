"""Tiny Shakespeare at character level, for algos/gpt.py.

Downloads the 1.1 MB corpus (or reads a local copy with --from-file), maps each distinct
character to an integer id in sorted order, and writes, next to this file:
    train.bin, val.bin   the first 90% and the last 10% of the text as uint16 token ids
    meta.json            {"tokenizer": "char", "vocab_size": V, "itos": [the V characters]}

    python data/shakespeare_char/prepare.py
    python data/shakespeare_char/prepare.py --from-file ../shared/data/tinyshakespeare.txt
"""

import argparse
import json
import os
import urllib.request

import numpy as np

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
    np.array(ids, dtype=np.uint16).tofile(path + ".tmp")
    os.replace(path + ".tmp", path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from-file", help="read this local copy of the text instead of downloading")
    parser.add_argument("--out-dir", default=HERE, help="where to write train.bin, val.bin, meta.json")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="the last fraction of the text kept for validation")
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    text = read_text(args.from_file, os.path.join(args.out_dir, "input.txt"))
    itos = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(itos)}
    ids = [stoi[ch] for ch in text]
    n_train = int(len(ids) * (1 - args.val_fraction))
    write_split(os.path.join(args.out_dir, "train.bin"), ids[:n_train])
    write_split(os.path.join(args.out_dir, "val.bin"), ids[n_train:])
    with open(os.path.join(args.out_dir, "meta.json"), "w") as f:
        json.dump({"tokenizer": "char", "vocab_size": len(itos), "itos": itos}, f)
    print(f"{len(text):,} characters, vocab {len(itos)}: train {n_train:,} tokens, "
          f"val {len(ids) - n_train:,} tokens -> {args.out_dir}")


if __name__ == "__main__":
    main()
