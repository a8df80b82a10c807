#!/usr/bin/env python3
"""`runner bench` figures as ratios to PyTorch eager's, measured on the same machine.

usage: bench-ratios.py PYTORCH_TXT BENCH_JSONL...

PYTORCH_TXT is what scripts/bench-pytorch.py printed (one or more runs, one model each);
BENCH_JSONL are `runner bench --json` outputs. Each runner row (all replicas of a stack
together) is divided by PyTorch's images per second for the same model, batch and memory
format; rows without such a PyTorch figure show "-". scripts/gpu-check.sh writes both.
"""

import json
import re
import sys

# bench-pytorch.py's result lines: "resnet20     batch  128 contiguous        18800 img/s (...)"
EAGER_LINE = re.compile(r"^(resnet\d+)\s+batch\s+(\d+)\s+(\S+)\s+([\d.]+) img/s")


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    eager = {}  # (model, batch, memory format) -> img/s
    with open(sys.argv[1]) as f:
        for line in f:
            if m := EAGER_LINE.match(line):
                eager[m[1], int(m[2]), m[3].replace("-", "_")] = float(m[4])
    print(
        f"{'model':<10} {'precision':<9} {'replicas':>8} {'sgd':<10} {'memory format':<13} "
        f"{'img/s':>8} {'/ PyTorch':>9}"
    )
    for path in sys.argv[2:]:
        with open(path) as f:
            for r in map(json.loads, f):
                base = eager.get((r["model"], r["batch_per_model"], r["memory_format"]))
                ratio = f"{r['images_per_s'] / base:.2f}" if base else "-"
                print(
                    f"{r['model']:<10} {r['precision']:<9} {r['replicas']:>8} {r['layout']:<10} "
                    f"{r['memory_format']:<13} {r['images_per_s']:>8.0f} {ratio:>9}"
                )


if __name__ == "__main__":
    main()
