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
# Every file is fetched as <name>.tmp and checked first; only when all are there do they replace the old ones,
# so a failure never leaves a mix of two sources.
fail() { rm -f "$out"/train/*.txt.tmp "$out"/test/*.txt.tmp; echo "$1" >&2; exit 1; }
staged=""
for f in train/000 train/001 train/002 train/003 train/004 train/005 train/006 train/007 train/008 train/009 test/000; do
    if [ -n "$from" ]; then
        if [ "$f" = test/000 ] && [ ! -e "$from/$f.txt" ]; then
            echo "(no test/000.txt in $from: copied the training levels only; without --test-levels-path levin_ts.py holds out the last training levels)"
            continue
        fi
        [ -s "$from/$f.txt" ] || fail "--from-dir $from has no $f.txt (or it is empty)."
        cp "$from/$f.txt" "$out/$f.txt.tmp" || fail "cannot copy $from/$f.txt into $out."
    elif ! curl -fsSL -o "$out/$f.txt.tmp" "$base/$f.txt" 2>/dev/null; then
        fail "could not download $base/$f.txt: without network, copy a local copy with --from-dir DIR (or let levin_ts.py generate levels: no --levels-path)."
    fi
    grep -q '^;' "$out/$f.txt.tmp" || fail "$f.txt holds no level (no '; <number>' line): it is not a Boxoban level file."
    staged="$staged $f"
done
for f in $staged; do
    mv "$out/$f.txt.tmp" "$out/$f.txt"
done
echo "wrote $out/train/000.txt-009.txt ($(cat "$out"/train/*.txt | grep -c '^;') levels, $(cat "$out"/train/*.txt | wc -c) bytes)"
case "$staged" in
    *test/000*) echo "wrote $out/test/000.txt ($(grep -c '^;' "$out/test/000.txt") levels, $(wc -c < "$out/test/000.txt") bytes)" ;;
    *) if [ -e "$out/test/000.txt" ]; then echo "(kept $out/test/000.txt from before: it is not from $from)"; fi ;;
esac
