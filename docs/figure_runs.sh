#!/bin/sh
# The runs behind the README's figures other than the RL learning curves (those come from the RL
# benchmarks): seed 1 of each, two single-threaded jobs side by side, run folders in bench/runs/.
# Needs data/shakespeare_char prepared and tinyshakespeare.txt in $ALGOS_DATA_DIR (default ../shared/data).
#     sh docs/figure_runs.sh && python docs/make_figures.py --runs bench/runs --out docs/figures
set -e
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA=${ALGOS_DATA_DIR:-$ROOT/../shared/data}
mkdir -p "$ROOT/bench" && cd "$ROOT/bench"
export OMP_NUM_THREADS=1
(
  for pos in rope learned sinusoidal; do
    python "$ROOT/algos/gpt.py" --data-dir "$ROOT/data/shakespeare_char" --pos-encoding $pos
  done
  python "$ROOT/algos/dyna_q.py"
  python "$ROOT/algos/dyna_q.py" --env-id BlockingMaze-v0
  python "$ROOT/algos/dyna_q.py" --env-id ShortcutMaze-v0
  python "$ROOT/algos/seq2seq_attention.py"
  python "$ROOT/algos/bpe.py" --input "$DATA/tinyshakespeare.txt" --vocab-size 1024
  python "$ROOT/algos/bpe.py" --input "$DATA/tinyshakespeare.txt" --vocab-size 1024 --trainer naive
) > figure_runs_1.log 2>&1 &
(
  python "$ROOT/algos/levin_ts.py" --train-minutes 2
  python "$ROOT/algos/levin_ts.py" --train-minutes 2 --search phs
) > figure_runs_2.log 2>&1 &
wait
echo "done: run folders in $ROOT/bench/runs, logs in $ROOT/bench/figure_runs_*.log"
