#!/usr/bin/env python3
"""`runner bench` figures as ratios to PyTorch's (eager and compiled), measured on the same machine.

usage: bench-ratios.py PYTORCH_TXT BENCH_JSONL...

PYTORCH_TXT is what scripts/bench-pytorch.py printed (one or more runs, one model each);
BENCH_JSONL are `runner bench --json` outputs. Each runner row (all replicas of a stack
together) is divided by PyTorch's images per second for the same model, batch, memory
format and precision, eager and (where measured, `--mode compiled`) torch.compile, and by
eager fp32; rows without such a PyTorch figure show "-". scripts/gpu-check.sh writes both.
"""

import json
import re
import sys

# bench-pytorch.py's result lines:
# "resnet20     batch  128 contiguous     fp32  eager       18800 img/s (...)"
# (older ones have no mode: eager)
RESULT_LINE = re.compile(
    r"^(resnet\d+)\s+batch\s+(\d+)\s+(\S+)\s+(fp32|bf16|fp16)\s+(?:(eager|compiled)\s+)?([\d.]+) img/s"
)


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    pytorch = {}  # (model, batch, memory format, precision, mode) -> img/s
    with open(sys.argv[1]) as f:
        for line in f:
            if m := RESULT_LINE.match(line):
                key = (m[1], int(m[2]), m[3].replace("-", "_"), m[4], m[5] or "eager")
                pytorch[key] = float(m[6])
    print(
        f"{'model':<10} {'precision':<9} {'replicas':>8} {'sgd':<10} {'memory format':<13} "
        f"{'img/s':>8} {'/ eager same':>12} {'/ compiled same':>15} {'/ eager fp32':>12}"
    )

    def ratio(r, precision, mode):
        key = (r["model"], r["batch_per_model"], r["memory_format"], precision, mode)
        return f"{r['images_per_s'] / pytorch[key]:.2f}" if key in pytorch else "-"

    for path in sys.argv[2:]:
        with open(path) as f:
            for r in map(json.loads, f):
                print(
                    f"{r['model']:<10} {r['precision']:<9} {r['replicas']:>8} {r['layout']:<10} "
                    f"{r['memory_format']:<13} {r['images_per_s']:>8.0f} "
                    f"{ratio(r, r['precision'], 'eager'):>12} "
                    f"{ratio(r, r['precision'], 'compiled'):>15} {ratio(r, 'fp32', 'eager'):>12}"
                )


if __name__ == "__main__":
    main()
