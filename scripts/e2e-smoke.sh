#!/usr/bin/env bash
# End to end: train the `smoke` profile of an experiment and render its report, into a
# temporary folder, then check what landed. Uses CIFAR-10 from $CIFAR10_DIR or
# data/cifar-10-batches-bin when present, synthetic data otherwise.
#   usage: scripts/e2e-smoke.sh [EXPERIMENT]        (default: shortcuts)
set -euo pipefail
exp=${1:-shortcuts}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { printf 'e2e: FAILED: %s\n' "$*" >&2; echo "e2e: 0 passed, 1 failed"; exit 1; }

runner() { cargo run --quiet -p runner -- "$@"; }
data=${CIFAR10_DIR:-data/cifar-10-batches-bin}
if [ ! -f "$data/test_batch.bin" ]; then
  echo "e2e: no CIFAR-10 in $data; using synthetic data" >&2
  data=$tmp/synthetic
  runner data synthetic --data-dir "$data"
fi

start=$SECONDS
runner train "experiments/$exp.toml" --profile smoke --device cpu --quiet \
  --results "$tmp/results" --data-dir "$data" 2>"$tmp/train.log" || { cat "$tmp/train.log" >&2; fail "training"; }
cargo run --quiet -p report -- "$exp" --profile smoke --results "$tmp/results" --plots "$tmp/plots" >/dev/null ||
  fail "report"

variants=$(grep -c '^\[\[variants\]\]' "experiments/$exp.toml")
finished=$(find "$tmp/results/$exp/smoke" -name final.json | wc -l)
[ "$finished" -eq "$variants" ] || fail "$finished of $variants variants finished"
# the variants' table: from its header to the first blank line (sections follow it)
rows=$(awk '/^\| variant \|/ { t = 1 } t && /^$/ { exit } t && /^\| / { n++ } END { print n + 0 }' \
  "$tmp/results/$exp/smoke/table.md")
[ "$rows" -eq $((variants + 1)) ] || fail "table.md has $rows table rows, expected a header and $variants variants"
[ -s "$tmp/results/$exp/smoke/table.csv" ] || fail "no table.csv"
for file in comparisons.csv comparisons.md; do
  [ -s "$tmp/results/$exp/smoke/$file" ] || fail "no $file"
done
grep -q '^## Comparisons' "$tmp/results/$exp/smoke/table.md" || fail "table.md has no Comparisons section"
# gated variants log their gates, and the table shows them
if grep -q 'gating' "experiments/$exp.toml"; then
  grep -q '^## Gates' "$tmp/results/$exp/smoke/table.md" || fail "table.md has no Gates section"
fi
for figure in curves final; do
  for ext in svg png; do
    [ -s "$tmp/plots/$exp/smoke/$figure.$ext" ] || fail "no $figure.$ext"
  done
done
grep -q "fingerprint" "$tmp/results/$exp/smoke/table.md" || fail "table.md does not name the data"
# Records and rendered files are committed and compared across machines: none names a path
# of this one (the checkout, where .libtorch lies, or the results folder).
leaked=$(grep -rlF -e "$PWD" -e "$tmp" "$tmp/results" "$tmp/plots" || true)
[ -z "$leaked" ] || fail "a machine's path in: $leaked"

# A second sweep trains nothing: every run is finished.
runner train "experiments/$exp.toml" --profile smoke --device cpu --quiet \
  --results "$tmp/results" --data-dir "$data" 2>"$tmp/again.log"
skipped=$(grep -c 'skipped' "$tmp/again.log" || true)
[ "$skipped" -eq "$variants" ] || fail "second sweep skipped $skipped of $variants runs"

# A broken experiment file: train and report refuse it with the same file:line message.
{ echo 'colour = 1'; cat "experiments/$exp.toml"; } >"$tmp/broken.toml"
runner train "$tmp/broken.toml" --profile smoke --device cpu --data-dir "$data" 2>"$tmp/broken-train.log" &&
  fail "runner train accepted a broken experiment file"
cargo run --quiet -p report -- "$tmp/broken.toml" --profile smoke 2>"$tmp/broken-report.log" >/dev/null &&
  fail "report accepted a broken experiment file"
said() { grep -m1 -o 'broken.toml:[0-9]*: .*' "$1" || true; }
[ -n "$(said "$tmp/broken-train.log")" ] || fail "runner train did not name broken.toml:LINE: $(cat "$tmp/broken-train.log")"
[ "$(said "$tmp/broken-train.log")" = "$(said "$tmp/broken-report.log")" ] ||
  fail "train and report disagree on a broken file: '$(said "$tmp/broken-train.log")' vs '$(said "$tmp/broken-report.log")'"

echo "e2e: $exp smoke: $variants variants trained and reported in $((SECONDS - start)) s ($(grep -m1 '^- \*\*Data' "$tmp/results/$exp/smoke/table.md" | cut -c1-80))"
echo "e2e: 1 passed, 0 failed"
