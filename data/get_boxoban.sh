#!/bin/sh
# Boxoban levels (google-deepmind/boxoban-levels, Apache-2.0) for algos/levin_ts.py:
# the first 10,000 unfiltered training levels and the 1,000 unfiltered test levels of
# Orseau et al. 2018, into data/boxoban/unfiltered/{train,test}/ (git ignores the .txt files).
# Usage: sh data/get_boxoban.sh                 downloads them (curl), or, offline,
#        sh data/get_boxoban.sh --from-dir DIR  copies DIR/train/000-009.txt and, if there,
#                                               DIR/test/000.txt (DIR: the unfiltered/ folder of a
#                                               local copy, e.g. ../shared/data/boxoban/unfiltered)
#   then python algos/levin_ts.py --levels-path data/boxoban/unfiltered/train \
#       --test-levels-path data/boxoban/unfiltered/test --test-levels 1000
# A failed download or a missing file ends with one sentence on stderr and exit code 1.
base=https://raw.githubusercontent.com/google-deepmind/boxoban-levels/master/unfiltered
out="$(dirname "$0")/boxoban/unfiltered"
from=""
if [ "$1" = "--from-dir" ]; then
    from="$2"
    if [ -z "$from" ] || [ ! -d "$from" ]; then
        echo "--from-dir ${from:-(nothing)}: no such folder (give the unfiltered/ folder of a Boxoban copy)." >&2
        exit 1
    fi
elif [ -n "$1" ]; then
    echo "unknown argument $1: run with no argument to download, or --from-dir DIR to copy a local copy." >&2
    exit 1
fi
mkdir -p "$out/train" "$out/test" || { echo "cannot create $out." >&2; exit 1; }
for f in train/000 train/001 train/002 train/003 train/004 train/005 train/006 train/007 train/008 train/009 test/000; do
    if [ -n "$from" ]; then
        if [ "$f" = test/000 ] && [ ! -e "$from/$f.txt" ]; then
            echo "(no test/000.txt in $from: copied the training levels only; without --test-levels-path levin_ts.py holds out the last training levels)"
            continue
        fi
        if [ ! -s "$from/$f.txt" ]; then
            echo "--from-dir $from has no $f.txt (or it is empty)." >&2
            exit 1
        fi
        cp "$from/$f.txt" "$out/$f.txt.tmp" && mv "$out/$f.txt.tmp" "$out/$f.txt" || exit 1
    elif ! curl -fsSL -o "$out/$f.txt.tmp" "$base/$f.txt" 2>/dev/null; then
        rm -f "$out/$f.txt.tmp"
        echo "could not download $base/$f.txt: without network, copy a local copy with --from-dir DIR (or let levin_ts.py generate levels: no --levels-path)." >&2
        exit 1
    else
        mv "$out/$f.txt.tmp" "$out/$f.txt"
    fi
done
echo "wrote $out/train/000.txt-009.txt ($(cat "$out"/train/*.txt | grep -c '^;') levels, $(cat "$out"/train/*.txt | wc -c) bytes)"
if [ -s "$out/test/000.txt" ]; then
    echo "wrote $out/test/000.txt ($(grep -c '^;' "$out/test/000.txt") levels, $(wc -c < "$out/test/000.txt") bytes)"
fi
