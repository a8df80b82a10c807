#!/usr/bin/env bash
# Provisions libtorch 2.11.0 (the version tch 0.24.0 links) into .libtorch/ from PyPI wheels.
#
# The libtorch archives of the PyTorch download site are not always reachable; the PyPI wheel of
# torch 2.11.0 carries the same libraries. From it we keep the headers, the CMake files and the
# CPU libraries; libtorch_cpu.so also needs libcudart.so.13 and libcupti.so.13, taken from their
# own NVIDIA wheels. The CUDA kernels (libtorch_cuda.so) are not kept: on a GPU machine the
# runner loads them at run time from an installed PyTorch 2.11 (see README, "Running on a GPU").
#
# Idempotent: a complete .libtorch/ of the right version is left alone. A user's own LIBTORCH
# is respected and only checked. Nothing is moved into place until everything is extracted.
set -euo pipefail

TORCH_VERSION=2.11.0
CUDA_RUNTIME_VERSION=13.0.96
CUPTI_VERSION=13.0.85

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest="$root/.libtorch"

say() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

version_of() { # prints the version recorded in a libtorch folder, or nothing
  [ -f "$1/build-version" ] && tr -d '[:space:]' <"$1/build-version" || true
}

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
  case "$found" in
    "$TORCH_VERSION" | "$TORCH_VERSION"+*)
      say "libtorch $found already in $dest"
      exit 0 ;;
  esac
  say "$dest holds libtorch '${found:-unknown}', not $TORCH_VERSION: replacing it"
fi

command -v python3 >/dev/null || die "python3 with pip is needed to download libtorch from PyPI"
python3 -m pip --version >/dev/null 2>&1 || die "python3 has no pip (try: python3 -m ensurepip)"

work=$(mktemp -d "$root/.libtorch.partial.XXXXXX")
trap 'rm -rf "$work"' EXIT

say "downloading torch==$TORCH_VERSION, nvidia-cuda-runtime==$CUDA_RUNTIME_VERSION, nvidia-cuda-cupti==$CUPTI_VERSION from PyPI (about 545 MB)"
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  --python-version 3.11 --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_25_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$work/wheels" \
  "torch==$TORCH_VERSION" \
  "nvidia-cuda-runtime==$CUDA_RUNTIME_VERSION" \
  "nvidia-cuda-cupti==$CUPTI_VERSION" ||
  die "pip download failed (is PyPI reachable?)"

say "extracting headers and CPU libraries"
python3 "$root/scripts/extract_libtorch.py" "$work/wheels" "$work/libtorch"

rm -rf "$dest"
mv "$work/libtorch" "$dest"
touch "$dest/.complete"
say "libtorch $(version_of "$dest") ready in $dest ($(du -sh "$dest" | cut -f1))"
