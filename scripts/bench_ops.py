#!/usr/bin/env python3
"""PyTorch's side of `cargo xtask bench --ops`: seconds per call for each operation.

Reads the operations as JSON on stdin (model/examples/ops.rs writes them: kind, x, w, stride,
padding) and prints a JSON list of seconds per call, in order. Each op runs once to warm up,
then at least 3 times and --min-time seconds, with 2 threads, fp32, through the same aten
kernels autograd calls in a training step.
"""
import argparse
import json
import sys
import time

import torch


def timed(fn, min_time: float) -> float:
    fn()
    calls, start = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < min_time:
        fn()
        calls += 1
    return (time.perf_counter() - start) / calls


def runner(op: dict):
    x = torch.rand(op["x"])
    kind = op["kind"]
    if kind.startswith("bn"):
        c = op["x"][1]
        gamma, beta = torch.ones(c), torch.zeros(c)
        rm, rv = torch.zeros(c), torch.ones(c)
        out, mean, invstd = torch.ops.aten.native_batch_norm(x, gamma, beta, rm, rv, True, 0.1, 1e-5)
        dy = torch.rand_like(out)
        if kind == "bn_forward":
            return lambda: torch.ops.aten.native_batch_norm(x, gamma, beta, rm, rv, True, 0.1, 1e-5)
        return lambda: torch.ops.aten.native_batch_norm_backward(
            dy, x, gamma, rm, rv, mean, invstd, True, 1e-5, [True, True, True]
        )
    w = torch.rand(op["w"])
    s, p = [op["stride"]] * 2, [op["padding"]] * 2
    y = torch.nn.functional.conv2d(x, w, None, s, p)
    dy = torch.rand_like(y)
    if kind == "conv_forward":
        return lambda: torch.nn.functional.conv2d(x, w, None, s, p)
    mask = [True, False, False] if kind == "conv_x_grad" else [False, True, False]
    return lambda: torch.ops.aten.convolution_backward(
        dy, x, w, None, s, p, [1, 1], False, [0, 0], 1, mask
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--min-time", type=float, default=0.3)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    ops = json.load(sys.stdin)
    with torch.no_grad():
        print(json.dumps([timed(runner(op), a.min_time) for op in ops]))


if __name__ == "__main__":
    main()
