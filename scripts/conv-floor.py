#!/usr/bin/env python3
"""What the convolutions of a training step cost alone: a floor under any CPU step time.

Every convolution of a CIFAR ResNet (the model of bench-pytorch.py), with its own input shape
at batch 128, channels-last, run as in a training step: forward, input gradient (not for the
stem, whose input needs none) and weight gradient, through libtorch's oneDNN convolutions
(the ones the runner and PyTorch both call). A round runs all of them once; the median of the
timed rounds is printed with the throughput a step would have if nothing but its
convolutions took time. Compare with `runner bench` and `bench-pytorch.py --mode compiled`
on the same machine, one after the other, on a quiet CPU:

    python3 scripts/conv-floor.py --model resnet20,resnet56 --precision fp32,bf16

Needs PyTorch (`pip install torch`).
"""

import argparse
import importlib.util
import pathlib
import statistics
import time

import torch
import torch.nn.functional as F

spec = importlib.util.spec_from_file_location(
    "bench_pytorch", pathlib.Path(__file__).with_name("bench-pytorch.py")
)
bench_pytorch = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_pytorch)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def convolutions(depth, batch):
    """(conv module, its input shape) for every convolution of a forward pass, in order."""
    net = bench_pytorch.CifarResNet(depth).to(memory_format=torch.channels_last)
    seen = []
    hooks = [
        m.register_forward_hook(lambda mod, inp, out: seen.append((mod, inp[0].shape)))
        for m in net.modules()
        if isinstance(m, torch.nn.Conv2d)
    ]
    with torch.no_grad():
        net(torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last))
    for h in hooks:
        h.remove()
    return seen


def round_of(convs, dtype):
    """A closure running every convolution's forward and backward once."""
    cases = []
    for i, (conv, shape) in enumerate(convs):
        x = torch.randn(shape, dtype=dtype).contiguous(memory_format=torch.channels_last)
        w = conv.weight.detach().to(dtype).contiguous(memory_format=torch.channels_last)
        y = F.conv2d(x, w, None, conv.stride, conv.padding)
        cases.append((x, w, torch.randn_like(y), list(conv.stride), list(conv.padding), i > 0))

    def run():
        for x, w, gy, stride, padding, input_grad in cases:
            F.conv2d(x, w, None, stride, padding)
            torch.ops.aten.convolution_backward(
                gy, x, w, None, stride, padding, [1, 1], False, [0, 0], 1,
                [input_grad, True, False],
            )

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20", help="e.g. resnet20,resnet56")
    parser.add_argument("--precision", default="fp32,bf16", help="fp32, bf16")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None, help="default: PyTorch's")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{torch.get_num_threads()} threads, PyTorch {torch.__version__}, batch {args.batch}")
    for model in args.model.split(","):
        depth = int(model.removeprefix("resnet"))
        convs = convolutions(depth, args.batch)
        for precision in args.precision.split(","):
            run = round_of(convs, DTYPES[precision])
            for _ in range(3):
                run()
            times = []
            for _ in range(args.rounds):
                start = time.perf_counter()
                run()
                times.append(time.perf_counter() - start)
            t = statistics.median(times)
            print(
                f"{model:9s} {precision}: {len(convs)} convolutions, {t * 1e3:6.1f} ms a step "
                f"(median of {args.rounds}; {min(times) * 1e3:.1f}-{max(times) * 1e3:.1f}) "
                f"-> at most {args.batch / t:5.0f} img/s"
            )


if __name__ == "__main__":
    main()
