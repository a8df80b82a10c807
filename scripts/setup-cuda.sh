#!/usr/bin/env bash
# Provisions the CUDA half of libtorch 2.11.0 into .libtorch/cuda/, beside the CPU half that
# setup-libtorch.sh puts in .libtorch/, from PyPI wheels, so that a GPU machine needs no PyTorch.
#
# From the torch 2.11.0 wheel (the +cu130 build) it takes libtorch_cuda.so and torch's other
# CUDA libraries; from NVIDIA's wheels the libraries they link, at the versions torch 2.11.0's
# METADATA pins for Linux. The layout is that of a Python environment's site-packages
# (.libtorch/cuda/torch/lib/, .libtorch/cuda/nvidia/<package>/lib/), which the RPATHs in torch's
# libraries expect: the dynamic loader finds everything without LD_LIBRARY_PATH. Nothing is
# installed into any Python environment (pip download, then unzip). The runner loads
# .libtorch/cuda/torch/lib/libtorch_cuda.so first (see README, "Running on a GPU").
#
# Idempotent: a complete .libtorch/cuda/ of the CPU half's version is left alone. Nothing is
# moved into place until everything is extracted. 2.5 GB of download, 3.3 GB unpacked (about
# 6 GB of free disk while it runs; the wheels are deleted at the end).
set -euo pipefail

# torch 2.11.0 requires cuda-toolkit[cublas,cudart,cufft,cufile,cupti,curand,cusolver,cusparse,
# nvjitlink,nvrtc,nvtx]==13.0.2, whose extras pin the first nine wheels below (as 13.1.0.3.*
# and so on; these are the releases that match; cudart and cupti are in the CPU half already),
# and the last four directly. Its other requirements (triton, cuda-bindings, ...) are Python
# packages.
NVIDIA_WHEELS=(
  nvidia-cublas==13.1.0.3
  nvidia-cufft==12.0.0.61
  nvidia-cufile==1.15.1.6
  nvidia-curand==10.4.0.35
  nvidia-cusolver==12.0.4.66
  nvidia-cusparse==12.6.3.3
  nvidia-nvjitlink==13.0.88
  nvidia-cuda-nvrtc==13.0.88
  nvidia-nvtx==13.0.85
  nvidia-cudnn-cu13==9.19.0.56
  nvidia-cusparselt-cu13==0.8.0
  nvidia-nccl-cu13==2.28.9
  nvidia-nvshmem-cu13==3.4.5
)

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cpu="$root/.libtorch"
dest="$cpu/cuda"
name=setup-cuda
# shellcheck source=scripts/pypi.sh
. "$root/scripts/pypi.sh"

if [ -n "${LIBTORCH:-}" ] && [ "$(realpath -m "$LIBTORCH")" != "$cpu" ]; then
  # The runner looks for CUDA beside the libtorch it loaded, so .libtorch/cuda/ would go unused.
  [ -f "$LIBTORCH/lib/libtorch_cuda.so" ] ||
    die "LIBTORCH=$LIBTORCH has no lib/libtorch_cuda.so; this script provisions only .libtorch/cuda/ (unset LIBTORCH), or set LIBTORCH_CUDA_DIR to a folder holding libtorch_cuda.so"
  say "using your LIBTORCH=$LIBTORCH, which has its own lib/libtorch_cuda.so"
  exit 0
fi

cpu_version=$(version_of "$cpu")
[ -f "$cpu/.complete" ] && is_torch_version "$cpu_version" ||
  die "no libtorch $TORCH_VERSION in $cpu: run \`just setup\` first"

if [ -f "$dest/.complete" ] && [ "$(version_of "$dest")" = "$cpu_version" ]; then
  say "the CUDA half of libtorch $cpu_version is already in $dest ($(size_of "$dest"))"
  exit 0
fi

require_pip
work=$(mktemp -d "$root/.libtorch.partial.XXXXXX")
trap 'rm -rf "$work"' EXIT

say "downloading torch==$TORCH_VERSION and ${#NVIDIA_WHEELS[@]} NVIDIA wheels from PyPI (about 2.5 GB)"
pypi_download "$work/wheels" "torch==$TORCH_VERSION" "${NVIDIA_WHEELS[@]}"
wheels=("$work"/wheels/*.whl)
say "downloaded ${#wheels[@]} wheels, $(size_of "${wheels[@]}"); extracting the CUDA libraries"
python3 "$root/scripts/extract_libtorch.py" --cuda "$work/wheels" "$work/cuda"
rm -rf "$work/wheels"

found=$(version_of "$work/cuda")
[ "$found" = "$cpu_version" ] ||
  die "the torch wheel is $found but $cpu holds $cpu_version; run \`just setup\` again"
rm -rf "$dest"
mv "$work/cuda" "$dest"
touch "$dest/.complete"
say "the CUDA half of libtorch $found is ready in $dest ($(size_of "$dest")); \`runner doctor\` says whether it loads"
