"""Turn a downloaded parallel corpus into the tab-separated files seq2seq_attention.py reads.

    # Tatoeba pairs from manythings.org/anki (one zip per language, English first on each line)
    python data/parallel/prepare.py anki fra-eng.zip --out data/parallel/eng-fra.tsv
    python data/parallel/prepare.py anki fra-eng.zip --out data/parallel/fra-eng.tsv --reverse

    # Multi30k (task 1): a folder with train/val/test .en and .de files (plain or .gz)
    python data/parallel/prepare.py multi30k multi30k-raw/ --out data/parallel/multi30k-en-de/

The output is one "source<TAB>target" line per pair: one file for anki (the training script
holds out validation and test pairs itself), a folder with train.tsv, val.tsv and test.tsv
for Multi30k (its official splits). Standard library only; see README.md beside this file.
"""

import argparse
import gzip
import io
import os
import zipfile


def clean(text: str) -> str:
    """One line of text: tabs and newlines inside a sentence would break the format."""
    return " ".join(text.replace("\t", " ").split())


def anki_pairs(zip_path: str, reverse: bool, max_pairs: int) -> list[tuple[str, str]]:
    """The .txt inside a manythings.org zip has 'English<TAB>other<TAB>attribution' lines.
    Duplicate pairs are dropped; the order (by English length) is kept."""
    with zipfile.ZipFile(zip_path) as z:
        names = [n for n in z.namelist() if n.endswith(".txt") and not n.startswith("_")]
        if not names:
            raise SystemExit(f"{zip_path} holds no .txt file: is it a manythings.org/anki zip?")
        text = z.read(max(names, key=lambda n: z.getinfo(n).file_size)).decode("utf-8")
    pairs, seen = [], set()
    for line in text.splitlines():
        columns = line.split("\t")
        if len(columns) < 2:
            continue
        pair = (clean(columns[1]), clean(columns[0])) if reverse else (clean(columns[0]), clean(columns[1]))
        if pair[0] and pair[1] and pair not in seen:
            seen.add(pair)
            pairs.append(pair)
    return pairs[:max_pairs] if max_pairs else pairs


def read_lines(folder: str, stem: str) -> list[str]:
    for name in (stem, stem + ".gz"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            opener = gzip.open if name.endswith(".gz") else open
            with opener(path, "rb") as f:
                return [clean(line) for line in io.TextIOWrapper(f, encoding="utf-8")]
    raise SystemExit(f"{folder} has no {stem} or {stem}.gz: download Multi30k's raw task-1 files first.")


def multi30k_splits(folder: str, src: str, tgt: str) -> dict[str, list[tuple[str, str]]]:
    """Multi30k's files are line-aligned: line i of train.en translates line i of train.de.
    Its validation split is called 'val'; test is 'test_2016_flickr'."""
    splits = {}
    for split, stem in (("train", "train"), ("val", "val"), ("test", "test_2016_flickr")):
        source, target = read_lines(folder, f"{stem}.{src}"), read_lines(folder, f"{stem}.{tgt}")
        if len(source) != len(target):
            raise SystemExit(f"{stem}.{src} has {len(source)} lines but {stem}.{tgt} has {len(target)}.")
        splits[split] = [(s, t) for s, t in zip(source, target) if s and t]
    return splits


def write_tsv(path: str, pairs: list[tuple[str, str]]) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.writelines(f"{s}\t{t}\n" for s, t in pairs)
    os.replace(path + ".tmp", path)
    print(f"wrote {len(pairs)} pairs to {path}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=["anki", "multi30k"])
    parser.add_argument("input", help="the anki .zip, or the folder of Multi30k's raw files")
    parser.add_argument("--out", required=True, help="a .tsv file (anki) or a folder (multi30k)")
    parser.add_argument("--reverse", action="store_true", help="anki: translate into English instead")
    parser.add_argument("--max-pairs", type=int, default=0, help="anki: keep the first N pairs (shortest first); 0 = all")
    parser.add_argument("--src", default="en", help="multi30k: source language suffix")
    parser.add_argument("--tgt", default="de", help="multi30k: target language suffix")
    args = parser.parse_args(argv)
    if args.kind == "anki":
        write_tsv(args.out, anki_pairs(args.input, args.reverse, args.max_pairs))
    else:
        for split, pairs in multi30k_splits(args.input, args.src, args.tgt).items():
            write_tsv(os.path.join(args.out, f"{split}.tsv"), pairs)


if __name__ == "__main__":
    main()
