#!/usr/bin/env bash
# The harness against a real Slurm, on the one-node cluster of this folder:
#  1. a smoke sweep submitted as an array (`runner plan --emit slurm`, then `sbatch`) gives the
#     same numbers as a local `runner train` of the same sweep;
#  2. a task sent SIGTERM mid-run checkpoints, exits 75, is requeued, resumes and finishes with
#     the numbers of an uninterrupted run.
# Starts the cluster (installing slurm-wlm and munge if missing; needs root) and stops it.
#   usage: cluster/test.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
passed=0
failed=0
pass() { echo "cluster-test: PASS: $*"; passed=$((passed + 1)); }
fail() { echo "cluster-test: FAIL: $*" >&2; failed=$((failed + 1)); }

tmp=$(mktemp -d /tmp/cluster-test.XXXXXX)
cleanup() { bash "$root/cluster/stop.sh" >/dev/null 2>&1 || true; rm -rf "$tmp"; }
trap cleanup EXIT

cargo build --quiet -p runner
runner=$root/target/debug/runner
eval "$(bash cluster/start.sh)"
# Identical thread counts everywhere, so that CPU results can be compared exactly.
export OMP_NUM_THREADS=1

data=${CIFAR10_DIR:-$root/data/cifar-10-batches-bin}
if [ ! -f "$data/test_batch.bin" ]; then
  data=$tmp/synthetic
  "$runner" data synthetic --data-dir "$data"
fi
export CIFAR10_DIR=$data

# The numbers of every run under a results folder (timing columns left out).
numbers() { # results-dir
  (cd "$1" && find . -name epochs.csv | sort | while read -r f; do
    echo "== $f"; cut -d, -f1-7 "$f"
  done)
}

# Waits for every job of this cluster to leave the queue (at most $1 seconds).
wait_queue() {
  local limit=$1 start=$SECONDS
  while [ -n "$(squeue -h -o %i)" ]; do
    if [ $((SECONDS - start)) -gt "$limit" ]; then
      squeue >&2
      return 1
    fi
    sleep 2
  done
}

# ---- 1. an array sweep equals a local sweep -------------------------------------------------
exp=$root/experiments/shortcuts.toml
select=(--profile smoke --variant original --variant scaling-0.5-0.5)
"$runner" plan "$exp" "${select[@]}" --replicas 1 --emit slurm --gpus-per-task 0 \
  --cpus-per-task 1 --device cpu --results "$tmp/slurm" >"$tmp/plan.txt"
script=$tmp/slurm/shortcuts/smoke/slurm/array.sbatch
sbatch --parsable "$script" >"$tmp/job"
if wait_queue 600; then
  "$runner" train "$exp" "${select[@]}" --device cpu --quiet --results "$tmp/local" 2>/dev/null
  finished=$(find "$tmp/slurm" -name final.json | wc -l)
  if [ "$finished" -eq 2 ] && diff <(numbers "$tmp/slurm/shortcuts") <(numbers "$tmp/local/shortcuts") >"$tmp/diff1"; then
    pass "array of 2 tasks: the same numbers as a local sweep"
  else
    fail "array sweep: $finished of 2 runs finished, or numbers differ: $(head -5 "$tmp/diff1")"
    tail -20 "$tmp"/slurm/shortcuts/smoke/slurm/logs/* >&2 || true
  fi
  # Submitting the same array again is safe: every task finds its run finished.
  sbatch --parsable "$script" >/dev/null
  wait_queue 300
  skipped=$(cat "$tmp"/slurm/shortcuts/smoke/slurm/logs/* | grep -c 'finished (.*), skipped' || true)
  if [ "$skipped" -eq 2 ] && diff <(numbers "$tmp/slurm/shortcuts") <(numbers "$tmp/local/shortcuts") >/dev/null; then
    pass "resubmitted array: 2 finished runs skipped, nothing changed"
  else
    fail "resubmitted array skipped $skipped of 2 runs"
  fi
else
  fail "the array did not finish within 10 minutes"
fi

# ---- 2. SIGTERM mid-run: checkpoint, exit 75, requeue, resume, same numbers -----------------
cat >"$tmp/long.toml" <<'EOF'
title = "cluster test"
source = "test"
[model]
depth = 8
[[variants]]
name = "original"
[profiles.long]
seeds = [0]
protocol = { batch_size = 32, iterations = 320, lr = 0.05, lr_drops = [240], train_subset = 1024, test_subset = 500 }
EOF
"$runner" plan "$tmp/long.toml" --profile long --emit slurm --gpus-per-task 0 --cpus-per-task 1 \
  --device cpu --results "$tmp/term" >/dev/null
job=$(sbatch --parsable "$tmp/term/long/long/slurm/array.sbatch")
run=$tmp/term/long/long/original/seed-0
start=$SECONDS
until [ -f "$run/epochs.csv" ] && [ "$(wc -l <"$run/epochs.csv")" -ge 3 ]; do
  [ $((SECONDS - start)) -lt 300 ] || break
  sleep 1
done
scancel -f -s TERM "${job}_0"
wait_queue 600 || true
restarts=$(scontrol show job "${job}_0" 2>/dev/null | grep -o 'Restarts=[0-9]*' | head -1 || true)
"$runner" train "$tmp/long.toml" --profile long --device cpu --quiet --results "$tmp/whole" 2>/dev/null
log=$(cat "$tmp"/term/long/long/slurm/logs/*)
if [ -f "$run/final.json" ] && grep -q "stopped on request" <<<"$log" && [ "$restarts" != "Restarts=0" ] &&
  diff <(numbers "$tmp/term/long") <(numbers "$tmp/whole/long") >"$tmp/diff2"; then
  pass "SIGTERM: checkpointed, requeued ($restarts), resumed to the numbers of an uninterrupted run"
else
  fail "SIGTERM test: final=$([ -f "$run/final.json" ] && echo yes || echo no) $restarts; $(head -5 "$tmp/diff2" 2>/dev/null)"
  echo "$log" | tail -20 >&2
fi

echo "cluster-test: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
