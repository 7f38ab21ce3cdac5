#!/usr/bin/env bash
# Issue 15's accuracy grid as one detached, resumable background job.
#
#   benchmarks/run_issue15_grid.sh DATA LOG [extra bench_accuracy.py options]
#
# Runs benchmarks/bench_accuracy.py over its PLAN (69 px 10k image seed 0; 1k and
# 3k, both input sets; 10k image+dl; 10k image seed 1; 30k image; 128 px 10k image),
# re-rendering reports/benchmark.md after every finished cell. Killing the job loses
# at most the epoch in progress: running the same command again skips finished
# cells and resumes the interrupted CNN from its per-epoch backup
# (DATA/bench-cache/<cell>/cnn-backup). The job survives the shell that started it.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
data="${1:?usage: $0 DATA LOG [options]}"
log="${2:?usage: $0 DATA LOG [options]}"
shift 2
python="${PYTHON:-python}"
cd "$here"
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" nohup setsid "$python" benchmarks/bench_accuracy.py \
    --data "$data" -j 2 "$@" >>"$log" 2>&1 </dev/null &
echo "started bench_accuracy.py as process $! (log: $log)"
