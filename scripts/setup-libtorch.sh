#!/usr/bin/env bash
# Provisions libtorch 2.11.0 (the version tch 0.24.0 links) into .libtorch/ from PyPI wheels.
#
# The libtorch archives of the PyTorch download site are not always reachable; the PyPI wheel of
# torch 2.11.0 carries the same libraries. From it we keep the headers, the CMake files and the
# CPU libraries; libtorch_cpu.so also needs libcudart.so.13 and libcupti.so.13, taken from their
# own NVIDIA wheels. The CUDA kernels (libtorch_cuda.so) are not kept: `just setup-cuda` puts
# them beside, in .libtorch/cuda/, or the runner loads them at run time from an installed
# PyTorch 2.11 (see README, "Running on a GPU").
#
# Idempotent: a complete .libtorch/ of the right version is left alone. A user's own LIBTORCH
# is respected and only checked. Nothing is moved into place until everything is extracted.
set -euo pipefail

CUDA_RUNTIME_VERSION=13.0.96
CUPTI_VERSION=13.0.85

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest="$root/.libtorch"
name=setup
# shellcheck source=scripts/pypi.sh
. "$root/scripts/pypi.sh"

if [ -n "${LIBTORCH:-}" ]; then
  [ -f "$LIBTORCH/lib/libtorch_cpu.so" ] ||
    die "LIBTORCH=$LIBTORCH has no lib/libtorch_cpu.so; unset LIBTORCH to let setup provision .libtorch/"
  found=$(version_of "$LIBTORCH")
  case "$found" in
    "$TORCH_VERSION" | "$TORCH_VERSION"+*) say "using your LIBTORCH=$LIBTORCH (libtorch $found)" ;;
    "") say "using your LIBTORCH=$LIBTORCH (no build-version file; tch 0.24 needs libtorch $TORCH_VERSION)" ;;
    *) die "LIBTORCH=$LIBTORCH is libtorch $found, but tch 0.24 needs $TORCH_VERSION; unset LIBTORCH to let setup provision .libtorch/" ;;
  esac
  exit 0
fi

if [ -f "$dest/.complete" ]; then
  found=$(version_of "$dest")
  if is_torch_version "$found"; then
    say "libtorch $found already in $dest"
    exit 0
  fi
  say "$dest holds libtorch '${found:-unknown}', not $TORCH_VERSION: replacing it"
fi

require_pip

work=$(mktemp -d "$root/.libtorch.partial.XXXXXX")
trap 'rm -rf "$work"' EXIT

say "downloading torch==$TORCH_VERSION, nvidia-cuda-runtime==$CUDA_RUNTIME_VERSION, nvidia-cuda-cupti==$CUPTI_VERSION from PyPI (about 545 MB)"
pypi_download "$work/wheels" \
  "torch==$TORCH_VERSION" \
  "nvidia-cuda-runtime==$CUDA_RUNTIME_VERSION" \
  "nvidia-cuda-cupti==$CUPTI_VERSION"

say "extracting headers and CPU libraries"
python3 "$root/scripts/extract_libtorch.py" "$work/wheels" "$work/libtorch"

rm -rf "$dest"
mv "$work/libtorch" "$dest"
touch "$dest/.complete"
say "libtorch $(version_of "$dest") ready in $dest ($(size_of "$dest"))"
