# Shared by setup-libtorch.sh and setup-cuda.sh (sourced, not run): the libtorch version tch
# 0.24 links, messages, and downloading exact wheels from PyPI for Linux x86-64 without
# installing anything into a Python environment.
#
# Before sourcing, set `name` to the prefix of the script's messages.

# The libtorch version tch 0.24.0 is written against; its PyPI torch wheel is the +cu130 build.
TORCH_VERSION=2.11.0

say() { printf '%s: %s\n' "$name" "$*" >&2; }
die() { printf '%s: error: %s\n' "$name" "$*" >&2; exit 1; }

version_of() { # prints the version recorded in a libtorch folder, or nothing
  [ -f "$1/build-version" ] && tr -d '[:space:]' <"$1/build-version" || true
}

is_torch_version() { # true when $1 is TORCH_VERSION, with or without a local part (+cu130)
  case "$1" in "$TORCH_VERSION" | "$TORCH_VERSION"+*) return 0 ;; *) return 1 ;; esac
}

require_pip() {
  command -v python3 >/dev/null || die "python3 with pip is needed to download wheels from PyPI"
  python3 -m pip --version >/dev/null 2>&1 || die "python3 has no pip (try: python3 -m ensurepip)"
}

# pypi_download DEST SPEC...: the wheels named by SPEC (exact versions), for CPython 3.11 on
# Linux x86-64 whatever this machine runs, without their dependencies, into DEST. NVIDIA's
# wheels carry manylinux tags from 2_5 to 2_28; pip takes --platform literally, so every tag
# is listed.
pypi_download() {
  local dest=$1 m
  shift
  local platforms=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
  for m in $(seq 28 -1 5); do platforms+=(--platform "manylinux_2_${m}_x86_64"); done
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
    "${platforms[@]}" -d "$dest" "$@" ||
    die "pip download failed (is PyPI reachable?)"
}

# size_of FILE...: their total size in MB or GB (10^6, 10^9 bytes; links not followed).
size_of() {
  du -scb "$@" | tail -n 1 | awk '{ if ($1 < 1e9) printf "%d MB", $1 / 1e6; else printf "%.1f GB", $1 / 1e9 }'
}
