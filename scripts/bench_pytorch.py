#!/usr/bin/env python3
"""PyTorch's side of `cargo xtask bench --vs-pytorch`: one measurement, one JSON line.

Mirrors model/examples/bench.rs step for step: torchvision ResNet, fp32, 2 threads; inference
under inference_mode in eval(); a train step is forward, cross-entropy, backward and an SGD
step with momentum 0.9. One warm-up step, then steps until --min-time seconds have passed.
"""
import argparse
import json
import resource
import time

import torch
import torchvision


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--mode", choices=["inference", "train"], required=True)
    p.add_argument("--res", type=int, required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--min-time", type=float, default=3.0)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = getattr(torchvision.models, a.arch)(weights=None)
    x = torch.rand(a.batch, 3, a.res, a.res)

    if a.mode == "inference":
        model.eval()

        def step() -> None:
            with torch.inference_mode():
                model(x)
    else:
        model.train()
        y = torch.randint(0, 1000, (a.batch,))
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        loss_fn = torch.nn.CrossEntropyLoss()

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            loss.item()

    step()
    start = time.perf_counter()
    iters = 0
    while iters == 0 or time.perf_counter() - start < a.min_time:
        step()
        iters += 1
    elapsed = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"images_per_s": iters * a.batch / elapsed, "peak_rss_mb": peak_mb, "iters": iters}))


if __name__ == "__main__":
    main()
