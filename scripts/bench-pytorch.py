#!/usr/bin/env python3
"""The PyTorch baseline for `runner bench`: the same training step in PyTorch, eager or compiled.

A CIFAR ResNet (He et al. 2015 sec. 4.2: 3x3 stem, 3 stages of 2n basic units, option-A
zero-padding shortcuts, global average pool, fc), He init, SGD with momentum 0.9 and weight
decay 1e-4 (torch.optim.SGD with its default multi-tensor update), cross-entropy, batch 128
of synthetic data on the device; fp32, or under torch.autocast in bf16 (CPU or CUDA) or fp16
(CUDA, with a GradScaler), as `runner bench --precision`. `--mode compiled` wraps the model
in `torch.compile` (inductor; the loss, backward and optimizer step stay as they are), as a
user chasing speed would; its compilation happens in the untimed steps. Timed like `runner bench`: 5 untimed steps per case,
then rounds in which every case runs the same number of steps in turn; the median round is
printed. Run both on the same machine, one after the other:

    python3 scripts/bench-pytorch.py --device cpu --memory-format contiguous,channels-last
    just bench --device cpu --memory-format contiguous,channels-last
    python3 scripts/bench-pytorch.py --device cpu --memory-format channels-last --precision fp32,bf16
    python3 scripts/bench-pytorch.py --device cpu --mode eager,compiled --precision bf16

Needs PyTorch (`pip install torch`); nothing else of this project uses it.
"""

import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Unit(nn.Module):
    """Post-activation basic unit: conv-BN-ReLU-conv-BN, add the shortcut, ReLU."""

    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.stride, self.extra = stride, c_out - c_in

    def forward(self, x):
        f = F.relu(self.bn1(self.conv1(x)))
        f = self.bn2(self.conv2(f))
        h = x
        if self.stride > 1 or self.extra:
            # option A: subsample, zero channels after the input's
            h = F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, 0, self.extra))
        return F.relu(h + f)


class CifarResNet(nn.Module):
    def __init__(self, depth, classes=10):
        super().__init__()
        n = (depth - 2) // 6
        self.conv = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        units, c_in = [], 16
        for stage, c in enumerate([16, 32, 64]):
            for u in range(n):
                units.append(Unit(c_in, c, 2 if stage > 0 and u == 0 else 1))
                c_in = c
        self.units = nn.Sequential(*units)
        self.fc = nn.Linear(64, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.units(F.relu(self.bn(self.conv(x))))
        return self.fc(x.mean((2, 3)))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet20", help="resnetN, N = 6n+2")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--memory-format", default="contiguous", help="contiguous,channels-last")
    p.add_argument(
        "--precision", default="fp32", help="fp32,bf16,fp16 (bf16/fp16: torch.autocast; fp16 CUDA only)"
    )
    p.add_argument(
        "--mode", default="eager", help="eager,compiled (compiled: torch.compile of the model)"
    )
    p.add_argument("--steps", type=int, default=10, help="timed steps per case and round")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    device = torch.device(args.device)
    depth = int(args.model.removeprefix("resnet"))
    formats = {
        "contiguous": torch.contiguous_format,
        "channels-last": torch.channels_last,
    }
    kinds = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    cases = []
    for name, precision, mode in (
        (n, p, m)
        for n in args.memory_format.split(",")
        for p in args.precision.split(",")
        for m in args.mode.split(",")
    ):
        fmt, kind = formats[name], kinds[precision]
        if mode not in ("eager", "compiled"):
            raise SystemExit(f"--mode {mode}: expected eager or compiled")
        if precision == "fp16" and device.type != "cuda":
            raise SystemExit("--precision fp16 is CUDA autocast; it needs --device cuda")
        torch.manual_seed(0)
        net = CifarResNet(depth).to(device, memory_format=fmt).train()
        model = torch.compile(net) if mode == "compiled" else net
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        xs = torch.randn(args.batch, 3, 32, 32, device=device).contiguous(memory_format=fmt)
        ys = torch.randint(10, (args.batch,), device=device)
        scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None

        def step(model=model, opt=opt, xs=xs, ys=ys, kind=kind, scaler=scaler):
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=kind, enabled=kind is not None):
                loss = F.cross_entropy(model(xs), ys)
            if scaler is None:
                loss.backward()
                opt.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()

        cases.append((f"{name} {precision} {mode}", step))

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _, step in cases:
        for _ in range(5):
            step()
    rates = {name: [] for name, _ in cases}
    for _ in range(args.rounds):
        for name, step in cases:
            sync()
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            sync()
            rates[name].append(args.batch * args.steps / (time.perf_counter() - start))
    print(
        f"pytorch {torch.__version__} on {device} ({torch.get_num_threads()} threads), "
        "synthetic data"
    )
    for name, r in rates.items():
        fmt, precision, mode = name.split()
        print(
            f"{args.model:<12} batch {args.batch:>4} {fmt:<14} {precision:<5} {mode:<8} "
            f"{statistics.median(r):>8.0f} img/s "
            f"(median of {len(r)} rounds of {args.steps} steps; {min(r):.0f}–{max(r):.0f})"
        )


if __name__ == "__main__":
    main()
