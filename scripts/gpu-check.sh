#!/usr/bin/env bash
# The runner's checks on a GPU machine, in one go (a few minutes on an H100).
#
#   bash scripts/gpu-check.sh RUNNER OUT_DIR
#
# RUNNER is a release build of the runner (`cargo build --release -p runner`, copied over if
# the GPU machine has no Rust). It needs libtorch's CUDA half: `.libtorch/cuda/` beside the
# libtorch it was linked against (`just setup-cuda`), or, for a binary whose libtorch folder is
# not on this machine, the libraries of an installed PyTorch 2.11 with CUDA, which this script
# puts on LD_LIBRARY_PATH (see README, Running on a GPU). CIFAR-10 must be where the runner
# looks for it (`$CIFAR10_DIR`, or `data/cifar-10-batches-bin`). Run it from the checkout's root.
# Everything printed also lands in OUT_DIR/gpu-check.log, the bench figures in OUT_DIR/*.jsonl
# and OUT_DIR/pytorch-fp32.txt.
#
#   1. doctor --device cuda: libtorch_cuda loads, the GPU and cuDNN are seen.
#   2. bench: PyTorch eager first (scripts/bench-pytorch.py, ResNet-20 and ResNet-110, fp32
#      and autocast fp16 and bf16), where python3 has PyTorch with CUDA, else it says it was
#      skipped; then the runner, fp32: ResNet-20 and ResNet-110, 1/8/16 stacked, libtorch's
#      SGD against the flat buffer, side by side; then fp16 and bf16; then every runner figure
#      as a ratio to PyTorch eager's (same precision, and fp32) on the same GPU in the same call.
#   3. train: ResNet-20 for 3 epochs (experiments/depth.toml, profile quick), seeds 0,1
#      stacked, then seed 1 alone: the test errors and the stacked-equals-lone agreement.
set -euo pipefail
bin=${1:?usage: gpu-check.sh RUNNER OUT_DIR}
out=${2:?usage: gpu-check.sh RUNNER OUT_DIR}
mkdir -p "$out"
exec > >(tee "$out/gpu-check.log") 2>&1
if ldd "$bin" | grep -q 'libtorch_cpu.so => not found'; then
  torch_lib=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))') ||
    { echo "gpu-check: $bin does not find its libtorch, and python3 has no torch to lend one"; exit 2; }
  export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "gpu-check: libtorch from $torch_lib (LD_LIBRARY_PATH)"
fi
runner() { "$bin" "$@"; }
step() { printf '\n== %s (%s)\n' "$1" "$(date -u +%T)"; }

step "doctor"
runner doctor --device cuda
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

step "bench: PyTorch eager, fp32, fp16, bf16"
if why=$(python3 -c 'import torch; assert torch.cuda.is_available(), f"torch {torch.__version__} sees no CUDA device"' 2>&1); then
  for model in resnet20 resnet110; do
    python3 scripts/bench-pytorch.py --device cuda --model "$model" --precision fp32,fp16,bf16
  done | tee "$out/pytorch-fp32.txt"
else
  echo "gpu-check: PyTorch eager skipped (python3 has no PyTorch with CUDA: ${why##*$'\n'})"
fi
step "bench fp32"
runner bench --device cuda --sgd-layout per-tensor,flat --json | tee "$out/bench-fp32.jsonl"
step "bench fp16"
runner bench --device cuda --precision fp16,bf16 --replicas 1,8,16 --json | tee "$out/bench-fp16.jsonl"
if [ -s "$out/pytorch-fp32.txt" ]; then
  step "bench: runner / PyTorch eager (one model, contiguous, torch.optim.SGD)"
  python3 scripts/bench-ratios.py "$out/pytorch-fp32.txt" "$out"/bench-fp32.jsonl "$out"/bench-fp16.jsonl |
    tee "$out/bench-ratios.txt"
fi

step "train: 3 epochs, seeds 0,1 stacked, then seed 1 alone"
results=$(mktemp -d)
runner train experiments/depth.toml --profile quick --variant resnet-20 --seeds 0,1 \
  --device cuda --results "$results/stacked" --quiet
runner train experiments/depth.toml --profile quick --variant resnet-20 --seeds 1 \
  --device cuda --replicas 1 --results "$results/lone" --quiet
for f in "$results"/*/depth/quick/resnet-20/seed-*/final.json; do
  echo "$f"
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print({k: d.get(k) for k in ("status","final_test_error","final_train_error","iterations","wall_s","stacked_with","device")})' "$f"
done
cp "$results/stacked/depth/quick/resnet-20/seed-1/epochs.csv" "$out/stacked-seed1-epochs.csv"
cp "$results/lone/depth/quick/resnet-20/seed-1/epochs.csv" "$out/lone-seed1-epochs.csv"
step "done"
