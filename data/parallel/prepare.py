"""Turn a downloaded parallel corpus into the tab-separated files seq2seq_attention.py reads.

    # Tatoeba pairs from manythings.org/anki (one zip per language, English first on each line)
    python data/parallel/prepare.py anki fra-eng.zip --out data/parallel/eng-fra.tsv
    python data/parallel/prepare.py anki fra-eng.zip --out data/parallel/fra-eng.tsv --reverse

    # Multi30k (task 1): a folder with train/val/test .en and .de files (plain or .gz)
    python data/parallel/prepare.py multi30k multi30k-raw/ --out data/parallel/multi30k-en-de/

The output is one "source<TAB>target" line per pair: one file for anki (the training script
holds out validation and test pairs itself), a folder with train.tsv, val.tsv and test.tsv
for Multi30k (its official splits). Standard library only; see README.md beside this file.
Bad input (a missing path, a folder for a file or the reverse, a damaged zip or .gz, text that
is not UTF-8, no pairs at all) ends with one sentence on stderr and exit code 1. Both corpora are
downloaded by hand (see README.md), so the script itself needs no network.
"""

import argparse
import gzip
import io
import os
import zipfile
import zlib


def clean(text: str) -> str:
    """One line of text: tabs and newlines inside a sentence would break the format."""
    return " ".join(text.replace("\t", " ").split())


def anki_pairs(zip_path: str, reverse: bool, max_pairs: int) -> list[tuple[str, str]]:
    """The .txt inside a manythings.org zip has 'English<TAB>other<TAB>attribution' lines.
    Duplicate pairs are dropped; the order (by English length) is kept."""
    if not os.path.exists(zip_path):
        raise SystemExit(f"{zip_path}: no such file (download the zip from manythings.org/anki first).")
    if os.path.isdir(zip_path):
        raise SystemExit(f"{zip_path} is a folder: anki takes the downloaded .zip file itself.")
    try:
        with zipfile.ZipFile(zip_path) as z:
            names = [n for n in z.namelist() if n.endswith(".txt") and not n.startswith("_")]
            if not names:
                raise SystemExit(f"{zip_path} holds no .txt file: is it a manythings.org/anki zip?")
            name = max(names, key=lambda n: z.getinfo(n).file_size)
            text = z.read(name).decode("utf-8")
    except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError):  # damaged, encrypted...
        raise SystemExit(f"{zip_path} is not a zip file (or is damaged): download the manythings.org/anki zip again.") from None
    except UnicodeDecodeError as e:
        raise SystemExit(f"{name} in {zip_path} is not UTF-8 text (byte {e.start}).") from None
    except OSError as e:
        raise SystemExit(f"{zip_path} cannot be read ({e.strerror or type(e).__name__}).") from None
    pairs, seen = [], set()
    for line in text.split("\n"):  # not splitlines(): it also breaks at U+2028 and other separators in a sentence
        columns = line.split("\t")
        if len(columns) < 2:
            continue
        pair = (clean(columns[1]), clean(columns[0])) if reverse else (clean(columns[0]), clean(columns[1]))
        if pair[0] and pair[1] and pair not in seen:
            seen.add(pair)
            pairs.append(pair)
    if not pairs:
        raise SystemExit(f"{zip_path} holds no 'English<TAB>other' lines: is it a manythings.org/anki zip?")
    return pairs[:max_pairs] if max_pairs else pairs


def read_lines(folder: str, stem: str) -> list[str]:
    for name in (stem, stem + ".gz"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            opener = gzip.open if name.endswith(".gz") else open
            try:
                with opener(path, "rb") as f:
                    return [clean(line) for line in io.TextIOWrapper(f, encoding="utf-8")]
            except UnicodeDecodeError as e:
                raise SystemExit(f"{path} is not UTF-8 text (byte {e.start} of a line).") from None
            except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError; cut off: EOFError; damaged: zlib
                raise SystemExit(f"{path} cannot be read ({e}): download it again.") from None
    raise SystemExit(f"{folder} has no {stem} or {stem}.gz: download Multi30k's raw task-1 files first.")


def multi30k_splits(folder: str, src: str, tgt: str) -> dict[str, list[tuple[str, str]]]:
    """Multi30k's files are line-aligned: line i of train.en translates line i of train.de.
    Its validation split is called 'val'; test is 'test_2016_flickr'."""
    if not os.path.exists(folder):
        raise SystemExit(f"{folder}: no such folder (put Multi30k's six raw task-1 files in one folder).")
    if not os.path.isdir(folder):
        raise SystemExit(f"{folder} is a file: multi30k takes the folder that holds train.{src}, train.{tgt}, ...")
    splits = {}
    for split, stem in (("train", "train"), ("val", "val"), ("test", "test_2016_flickr")):
        source, target = read_lines(folder, f"{stem}.{src}"), read_lines(folder, f"{stem}.{tgt}")
        if len(source) != len(target):
            raise SystemExit(f"{stem}.{src} has {len(source)} lines but {stem}.{tgt} has {len(target)}.")
        splits[split] = [(s, t) for s, t in zip(source, target) if s and t]
        if not splits[split]:
            raise SystemExit(f"{stem}.{src} and {stem}.{tgt} in {folder} hold no pair of non-empty lines.")
    return splits


def write_tsv(path: str, pairs: list[tuple[str, str]]) -> None:
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.writelines(f"{s}\t{t}\n" for s, t in pairs)
        os.replace(path + ".tmp", path)
    except OSError as e:
        raise SystemExit(f"cannot write {path} ({e.strerror or type(e).__name__}).") from None
    print(f"wrote {path}: {len(pairs):,} pairs, {os.path.getsize(path):,} bytes")


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
    if args.max_pairs < 0:
        raise SystemExit(f"--max-pairs {args.max_pairs}: give 0 (all pairs) or a positive number.")
    # the other kind's flags would be ignored unseen: refused
    others, fix = {"anki": (["src", "tgt"], "anki's pairs are English first; --reverse swaps them"),
                   "multi30k": (["reverse", "max_pairs"], "multi30k keeps all of its official splits")}[args.kind]
    given = [n for n in others if getattr(args, n) != parser.get_default(n)]
    if given:
        raise SystemExit(f"--{given[0].replace('_', '-')} does nothing for {args.kind} ({fix}): drop it.")
    if args.src == args.tgt:
        raise SystemExit(f"--src and --tgt are both {args.src}: that is a copy task; give two different languages.")
    if args.kind == "anki" and os.path.isdir(args.out):
        raise SystemExit(f"--out {args.out} is a folder: anki writes one .tsv file.")
    if args.kind == "multi30k" and os.path.exists(args.out) and not os.path.isdir(args.out):
        raise SystemExit(f"--out {args.out} is a file: multi30k writes a folder of train/val/test .tsv files.")
    if args.kind == "anki":
        write_tsv(args.out, anki_pairs(args.input, args.reverse, args.max_pairs))
    else:
        for split, pairs in multi30k_splits(args.input, args.src, args.tgt).items():
            write_tsv(os.path.join(args.out, f"{split}.tsv"), pairs)


if __name__ == "__main__":
    main()
