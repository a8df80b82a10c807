# Recipes for the residual-network ablation harness. `just` alone lists them.

set shell := ["bash", "-euo", "pipefail", "-c"]

# The runner, built with optimisations (training speed depends on it).
runner := "cargo run --release --quiet -p runner --"

# List the recipes.
default:
    @just --list

# Provision libtorch 2.11.0 into .libtorch/ from PyPI (a fast no-op once done; respects $LIBTORCH).
setup:
    @bash scripts/setup-libtorch.sh

# Provision libtorch's CUDA half into .libtorch/cuda/ from PyPI (about 2.5 GB once; a no-op once done).
setup-cuda: setup
    @bash scripts/setup-cuda.sh

# The CUDA half loads without LD_LIBRARY_PATH, doctor names it, the CPU still trains (no GPU needed).
cuda-check: setup-cuda
    bash scripts/cuda-check.sh

# Formatting, lints, every test, and one smoke ablation end to end: what CI runs.
test: setup
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo test --workspace
    bash scripts/e2e-smoke.sh shortcuts
    if [ -n "${CI:-}" ]; then just cluster-test; fi

# What this machine offers: libtorch, CPU threads, CUDA, cuDNN, the CIFAR-10 folder.
doctor *ARGS: setup
    {{runner}} doctor {{ARGS}}

# Train what is missing of an ablation (experiments/EXP.toml), then render its tables and plots.
ablate EXP PROFILE="paper": setup
    {{runner}} train experiments/{{EXP}}.toml --profile {{PROFILE}}
    just report {{EXP}} {{PROFILE}}

# Render results/EXP/PROFILE into tables and plots.
report EXP PROFILE="paper":
    cargo run --release --quiet -p report -- {{EXP}} --profile {{PROFILE}}

# Training throughput with synthetic data: the standard set of models and stack sizes.
bench *ARGS: setup
    {{runner}} bench {{ARGS}}

# Start a one-node Slurm cluster here (root; installs slurm-wlm, munge); then source /tmp/slurm-harness/env
cluster-start:
    bash cluster/start.sh

# Stop the one-node Slurm cluster and any jobs it still runs.
cluster-stop:
    bash cluster/stop.sh

# Slurm array sweep equals a local one; a SIGTERM'd task requeues and resumes exactly (root)
cluster-test: setup
    bash cluster/test.sh
