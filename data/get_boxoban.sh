#!/bin/sh
# Boxoban levels (google-deepmind/boxoban-levels, Apache-2.0) for algos/levin_ts.py:
# the first 10,000 unfiltered training levels and the 1,000 unfiltered test levels of
# Orseau et al. 2018, into data/boxoban/unfiltered/{train,test}/ (git ignores the .txt files).
# Usage: sh data/get_boxoban.sh   then
#   python algos/levin_ts.py --levels-path data/boxoban/unfiltered/train \
#       --test-levels-path data/boxoban/unfiltered/test --test-levels 1000
set -e
base=https://raw.githubusercontent.com/google-deepmind/boxoban-levels/master/unfiltered
out="$(dirname "$0")/boxoban/unfiltered"
mkdir -p "$out/train" "$out/test"
for i in 000 001 002 003 004 005 006 007 008 009; do
    curl -fsSL -o "$out/train/$i.txt" "$base/train/$i.txt"
done
curl -fsSL -o "$out/test/000.txt" "$base/test/000.txt"
echo "levels in $out: $(cat "$out"/train/*.txt | grep -c '^;') training, $(grep -c '^;' "$out/test/000.txt") test"
