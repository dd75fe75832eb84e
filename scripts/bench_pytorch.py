#!/usr/bin/env python3
"""PyTorch's side of `cargo xtask bench --vs-pytorch`: one measurement, one JSON line.

Mirrors model/examples/bench.rs step for step: torchvision ResNet, fp32, 2 threads; inference
under inference_mode in eval(); a train step is forward, cross-entropy, backward and an SGD
step with momentum 0.9. The steps cycle through the batches rekindle's side wrote
(--pool-file PREFIX: PREFIX.images float32, PREFIX.labels int64), a new batch each step; warm-up
steps first, then timed steps until --min-time seconds have passed and --min-steps ran. With
--flush-denormal, torch.set_flush_denormal(True), as rekindle sets FTZ/DAZ on its side; with
--channels-last, the model and inputs in the NHWC memory layout.
"""
import argparse
import json
import resource
import time

import numpy as np
import torch
import torchvision


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--mode", choices=["inference", "train"], required=True)
    p.add_argument("--res", type=int, required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--min-time", type=float, default=3.0)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--min-steps", type=int, default=5)
    p.add_argument("--pool-file", required=True)
    p.add_argument("--flush-denormal", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    if a.flush_denormal and not torch.set_flush_denormal(True):
        raise SystemExit("--flush-denormal: this CPU has no FTZ/DAZ")
    torch.manual_seed(0)
    model = getattr(torchvision.models, a.arch)(weights=None)
    images = np.fromfile(a.pool_file + ".images", dtype="<f4").reshape(-1, 3, a.res, a.res)
    labels = np.fromfile(a.pool_file + ".labels", dtype="<i8")
    xs = torch.from_numpy(images.copy()).split(a.batch)
    ys = torch.from_numpy(labels.copy()).split(a.batch)
    if a.channels_last:
        # What a performance-minded PyTorch user sets: NHWC weights and activations.
        model = model.to(memory_format=torch.channels_last)
        xs = [x.contiguous(memory_format=torch.channels_last) for x in xs]

    if a.mode == "inference":
        model.eval()

        def step(i: int) -> None:
            with torch.inference_mode():
                model(xs[i % len(xs)])
    else:
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        loss_fn = torch.nn.CrossEntropyLoss()

        def step(i: int) -> None:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xs[i % len(xs)]), ys[i % len(ys)])
            loss.backward()
            opt.step()
            loss.item()

    for i in range(a.warmup):
        step(i)
    start = time.perf_counter()
    step_ms = []
    while len(step_ms) < max(a.min_steps, 1) or time.perf_counter() - start < a.min_time:
        t = time.perf_counter()
        step(a.warmup + len(step_ms))
        step_ms.append((time.perf_counter() - t) * 1e3)
    elapsed = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(
        json.dumps(
            {
                "images_per_s": len(step_ms) * a.batch / elapsed,
                "peak_rss_mb": peak_mb,
                "iters": len(step_ms),
                "step_ms": step_ms,
            }
        )
    )


if __name__ == "__main__":
    main()
