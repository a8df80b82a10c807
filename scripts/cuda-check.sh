#!/usr/bin/env bash
# Checks the CUDA half that `just setup-cuda` provisions in .libtorch/cuda/; a GPU is not needed
# (about a minute on a 2-core CPU). Run it from the checkout's root, after `just setup-cuda`.
#
#   1. Every library of .libtorch/cuda/torch/lib finds what it links with LD_LIBRARY_PATH unset
#      (ldd), but for the NVIDIA driver's libcuda.so.1 on a machine without one.
#   2. `runner doctor` (--device auto) names .libtorch/cuda/torch/lib/libtorch_cuda.so as the
#      file it loaded, and exits 0; on a machine without a GPU it says "no CUDA device".
#   3. `runner doctor --device cuda` exits non-zero there (0 where a GPU is usable).
#   4. `runner bench` trains on the CPU alone (--device cpu) and with the CUDA half loaded
#      (--device auto, which on a machine without a GPU falls back to the CPU and says why).
set -euo pipefail
unset LD_LIBRARY_PATH
cd "$(dirname "$0")/.."
cuda_lib=$PWD/.libtorch/cuda/torch/lib
[ -f .libtorch/cuda/.complete ] || { echo "cuda-check: no .libtorch/cuda/; run \`just setup-cuda\`" >&2; exit 1; }
fail() { echo "cuda-check: FAIL: $*" >&2; exit 1; }
step() { printf '\n== %s\n' "$*"; }

step "ldd: every library resolves from .libtorch/ alone"
for lib in "$cuda_lib"/*.so; do
  [ -L "$lib" ] && continue # the CPU half's libraries, linked in
  deps=$(ldd "$lib")
  missing=$(awk '/not found/ { print $1 }' <<<"$deps" | grep -vx 'libcuda.so.1' || true)
  [ -z "$missing" ] || fail "$(basename "$lib") finds no $missing"
  note=""
  grep -q 'libcuda.so.1 => not found' <<<"$deps" && note="; libcuda.so.1 (the NVIDIA driver) is not installed here"
  echo "$(basename "$lib"): $(grep -c '=> /' <<<"$deps") libraries found$note"
done

cargo build --release --quiet -p runner
runner=target/release/runner

step "runner doctor"
report=$("$runner" doctor) || fail "doctor --device auto exited $?"
echo "$report"
grep -qxF "libtorch_cuda $cuda_lib/libtorch_cuda.so" <<<"$report" || fail "doctor did not load $cuda_lib/libtorch_cuda.so"
gpu=no
grep -q '^cuda          yes' <<<"$report" && gpu=yes
[ $gpu = yes ] || grep -q '^cuda          no CUDA device' <<<"$report" || fail "doctor says neither yes nor 'no CUDA device'"

step "runner doctor --device cuda (expected to fail without a GPU)"
status=0
"$runner" doctor --device cuda >/dev/null 2>&1 || status=$?
echo "exit status $status"
if [ $gpu = yes ]; then [ $status -eq 0 ] || fail "doctor --device cuda exited $status on a GPU machine"; else [ $status -ne 0 ] || fail "doctor --device cuda exited 0 without a GPU"; fi

step "bench --device cpu"
"$runner" bench --device cpu --batch 32 --steps 3 --rounds 1
step "bench --device auto"
log=$("$runner" bench --batch 32 --steps 3 --rounds 1 2>&1) || fail "bench --device auto: $log"
echo "$log"
[ $gpu = yes ] || grep -q '^device: CUDA is not usable: .*; using the CPU' <<<"$log" || fail "bench --device auto gave no reason for using the CPU"
step "cuda-check: all good"
