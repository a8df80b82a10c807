#!/usr/bin/env bash
# Re-renders every committed table and figure from the committed runs alone (a clean export
# of HEAD, so that runs in progress in the working tree do not count) and compares them byte
# for byte with the committed files. Prints the paths that differ and exits 1 when any does.
# Usage: scripts/rerender-check.sh [REPORT_BINARY]   (default: target/release/report)
set -euo pipefail
cd "$(dirname "$0")/.."
report=$(realpath "${1:-target/release/report}")
[ -x "$report" ] || { echo "no $report: cargo build --release -p report" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/committed" "$tmp/rendered"
git archive HEAD results plots experiments | tar -x -C "$tmp/committed"
cp -r "$tmp/committed/results" "$tmp/rendered/results"
cd "$tmp/rendered"   # tables name the results folder as given: render from `results`
# the rendered files of each profile (tables beside the run folders) are made anew
find results -mindepth 3 -maxdepth 3 -type f -delete
for dir in results/*/*/; do
  profile=$(basename "$dir"); experiment=$(basename "$(dirname "$dir")")
  "$report" "$tmp/committed/experiments/$experiment.toml" --profile "$profile" \
    --results results --plots plots >/dev/null 2>&1 \
    || { echo "report failed on $experiment $profile" >&2; exit 1; }
done
status=0
for tree in results plots; do
  diff -rq -x README.md "$tmp/committed/$tree" "$tmp/rendered/$tree" \
    | sed "s|$tmp/||g" || status=1
done
[ $status -eq 0 ] && echo "every committed table and figure re-renders byte for byte"
exit $status
