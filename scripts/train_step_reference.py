#!/usr/bin/env python3
"""PyTorch's answers for training steps taken through rekindle's own training path
(`train/tests/it/step_parity.rs`): ResNet-50 at 64 x 64 px, batch 4, 10 classes, float32.

Writes into OUT_DIR (default ./fixtures):
  step_initial.safetensors  the starting state_dict (torchvision names and layout): torchvision's
                            initialisation, BatchNorm with random affine parameters and running
                            statistics, the BatchNorm biases nudged as described below
  step_inputs.safetensors   `images` [20, 4, 3, 64, 64] and `labels` [20, 4] (int64): one batch
                            per step of the trajectories; the one-step cases use batch 0
  step_grads.safetensors    the gradient of every parameter in the first step (batch 0, train
                            mode, cross-entropy with label smoothing 0.1)
  step_sgd.safetensors      the state_dict after one torch.optim.SGD step (momentum, weight
                            decay, two learning rates): weights and BatchNorm running statistics
  step_adamw.safetensors    the same after one torch.optim.AdamW step (bias and BatchNorm
                            parameters without decay)
  step_parity.json          per case: rekindle's config (TOML, what a user writes to ask for
                            what the PyTorch code beside it does), the head's and the backbone's
                            learning rate and the loss of every step, and how far the losses
                            part from the same run in float64 (float64_loss_spread); per class
                            of parameter, how far the first step's float32 gradients are from
                            float64 (float64_grad_spread); the decision margin (below), versions

Cases (every optimiser hyper-parameter written out as torch.optim means it):
  sgd           one step: SGD momentum 0.9, dampening 0, weight decay 1e-4, head at lr 0.1,
                backbone at 0.01 (`backbone_lr_mult = 0.1`), constant schedule
  adamw         one step: AdamW betas (0.9, 0.999), eps 1e-8, weight decay 0.05 except on biases
                and BatchNorm (`no_decay_bias_norm`), head at 1e-3, backbone at 1e-4
  sgd_cosine    20 steps: SGD as above at lr 1e-5 (backbone 1e-6), 5 steps of linear warmup
                from 0.1 x lr (LinearLR) then cosine to 0 (CosineAnnealingLR, T_max 15) through
                SequentialLR, stepped after every optimiser step
  adamw_cosine  20 steps: AdamW as above at lr 3e-5 (backbone 3e-6), the same schedule
All use `torch.nn.functional.cross_entropy(..., label_smoothing=0.1)` and BatchNorm in training
mode (batch statistics; running statistics moved with momentum 0.1 and the unbiased variance).
The images are noise plus a fixed pattern per class.

The trajectories' rates are small because this network is chaotic at larger ones: a random
ResNet-50 with BatchNorm normalising 16 values per channel in layer4 (2 x 2 maps, batch 4)
amplifies any difference from step to step, and PyTorch's own float32 losses part from its
float64 ones (measured, same script) by 2.5e-4 within 20 SGD steps at lr 1e-4 and 2e-3 at 3e-4,
by 4e-5 with AdamW at 1e-4 and 5e-3 at 1e-3; at the rates above they stay within 4e-6. A
loss within 1e-4 of PyTorch's is only a fair bar where float32 itself moves it much less: the
script measures that spread for every case (float64_loss_spread) and requires it below 2e-5.

Decision margin. ResNet-50's forward pass at this size has 3.1 million ReLU inputs; on any batch
about half a dozen lie within float32 rounding of zero (float32 against float64, measured), and
two libraries summing in different orders put such an input on different sides of zero: the
gradient of that element is passed by one and dropped by the other, and through the channel's
BatchNorm and every convolution below it the gradients of all earlier layers move by up to a few
percent, an error of neither side. So before anything is written, the BatchNorm bias feeding each
ReLU input that lies within MARGIN float32 errors of zero in the first step's forward pass is
nudged (by at most a tenth of its channel's spread) into the widest gap among its channel's
values, site by site in forward order (~350 nudges among 22,720 channels). The stem's max-pool
must likewise keep each window's maximum POOL_MARGIN errors clear of the runner-up, else the
next batch is drawn (a tie resolved differently would move the stem's gradients only). Before
nudging, PyTorch's own float32 gradients were up to 7e-2 (median 6e-3) of a tensor's largest
gradient from float64; after it, 2.3e-5 at most, which is what lets the Rust test hold
rekindle's to 1e-4 of that scale. Later steps of the trajectories are not nudged: what flips
there do is part of the float32 spread measured for them.

The script also checks that the trajectories' losses can tell a wrong recipe: without warmup,
without label smoothing, or with the backbone at the head's rate, some step's loss differs by
more than 10x the Rust test's tolerance (1e-4 relative).

Deterministic: seeded, deterministic algorithms, 2 threads; the same torch writes the same bytes.
"""
import copy
import json
import math
import os
import sys

import torch
import torchvision
from safetensors.torch import save_file

SEED = 20261207
CLASSES = 10
BATCH = 4
SIDE = 64
STEPS = 20
SMOOTHING = 0.1
MARGIN = 100.0  # ReLU inputs: nudging makes room cheaply
POOL_MARGIN = 30.0  # the stem max-pool's gaps, which only another batch can widen
LOSS_TOL = 1e-4  # the Rust test's bar for each trajectory loss, relative

SGD = dict(momentum=0.9, dampening=0.0, nesterov=False, weight_decay=1e-4)
ADAMW = dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05)
WARMUP, WARMUP_FACTOR = 5, 0.1

# rekindle's side of each case: the config a user would write.
COMMON = f"""
[train]
epochs = 1
batch_size = {BATCH}
backbone_lr_mult = 0.1
strategy = "full"

[loss]
label_smoothing = {SMOOTHING}
"""
SGD_TOML = """
[optim]
name = "sgd"
momentum = 0.9
weight_decay = 1e-4
"""
ADAMW_TOML = """
[optim]
name = "adamw"
weight_decay = 0.05
no_decay_bias_norm = true
"""
CONSTANT_TOML = """
[schedule]
name = "constant"
"""
COSINE_TOML = f"""
[schedule]
name = "cosine"
warmup = {WARMUP}
warmup_kind = "linear"
warmup_factor = {WARMUP_FACTOR}
"""

CASES = {
    "sgd": dict(optim="sgd", lr=0.1, steps=1, toml=SGD_TOML + CONSTANT_TOML),
    "adamw": dict(optim="adamw", lr=1e-3, steps=1, toml=ADAMW_TOML + CONSTANT_TOML),
    "sgd_cosine": dict(optim="sgd", lr=1e-5, steps=STEPS, toml=SGD_TOML + COSINE_TOML),
    "adamw_cosine": dict(optim="adamw", lr=3e-5, steps=STEPS, toml=ADAMW_TOML + COSINE_TOML),
}


def case_toml(case):
    return COMMON.replace("[train]", f"[train]\nlr = {case['lr']}") + case["toml"]


def initial_model(gen):
    """torchvision's ResNet-50 with 10 classes and BatchNorm that is neither the identity nor
    the batch's: random gamma, beta and running statistics; the last BatchNorm of each residual
    branch small, as in trained networks."""
    model = torchvision.models.resnet50(num_classes=CLASSES)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.empty(c).uniform_(0.6, 1.4, generator=gen))
                m.bias.copy_(torch.randn(c, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
                m.running_var.copy_(torch.empty(c).uniform_(0.5, 1.5, generator=gen))
        for b in model.modules():
            if isinstance(b, torchvision.models.resnet.Bottleneck):
                b.bn3.weight.mul_(torch.empty(b.bn3.num_features).uniform_(0.2, 0.5, generator=gen))
    return model


def relu_sites(model):
    """The BatchNorm whose bias shifts each ReLU call's input, in forward order (a Bottleneck
    calls its one ReLU module three times: after bn1, after bn2, after bn3 + identity)."""
    sites = [model.bn1]
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        for b in layer:
            sites += [b.bn1, b.bn2, b.bn3]
    return sites


def forward_decisions(model, x, dtype):
    """ReLU inputs (per call, forward order) and stem max-pool inputs of a train-mode forward
    pass in `dtype`, the model's parameters and buffers untouched."""
    m = copy.deepcopy(model).to(dtype).train()
    relu, pool = [], []
    for module in m.modules():
        if isinstance(module, torch.nn.ReLU):
            module.register_forward_pre_hook(lambda _m, i: relu.append(i[0].detach().clone()))
        elif isinstance(module, torch.nn.MaxPool2d):
            module.register_forward_pre_hook(lambda _m, i: pool.append(i[0].detach().clone()))
    with torch.no_grad():
        m(x.to(dtype))
    return relu, pool


def ratios(exact, rounded):
    """|value| over its float32 error, per element (no error: infinitely far)."""
    err = (rounded.double() - exact).abs()
    return (exact.abs() / err).nan_to_num(nan=math.inf, posinf=math.inf)


def pool_margin(exact, rounded):
    """The smallest gap between a window's maximum and runner-up over the gap's float32 error,
    among windows whose maximum is positive (a zero maximum passes no gradient)."""

    def gaps(t):
        k, s, p = 3, 2, 1
        windows = torch.nn.functional.unfold(
            torch.nn.functional.pad(t, (p, p, p, p), value=-math.inf), k, stride=s
        ).view(t.shape[0], t.shape[1], k * k, -1)
        top = windows.topk(2, dim=2).values
        return top[:, :, 0], top[:, :, 0] - top[:, :, 1]

    top, gap64 = gaps(exact)
    _, gap32 = gaps(rounded.double())
    r = (gap64 / (gap32 - gap64).abs()).nan_to_num(nan=math.inf, posinf=math.inf)
    return torch.where(top > 0, r, math.inf).min().item()


def nudge(model, x):
    """Moves BatchNorm biases until every ReLU input of the train-mode forward pass on `x` is
    MARGIN float32 errors from zero; returns the margin reached, the stem pool's margin and how
    many nudges it took."""
    sites = relu_sites(model)
    moved = 0
    for _ in range(10 * len(sites)):
        r64, p64 = forward_decisions(model, x, torch.float64)
        r32, p32 = forward_decisions(model, x, torch.float32)
        assert len(r64) == len(sites), f"{len(r64)} ReLU calls for {len(sites)} sites"
        bad = None
        for i, (exact, rounded) in enumerate(zip(r64, r32)):
            per_channel = ratios(exact, rounded).transpose(0, 1).flatten(1).min(dim=1).values
            if per_channel.min().item() < MARGIN:
                bad = (i, exact, rounded, per_channel)
                break
        if bad is None:
            margin = min(ratios(e, r).min().item() for e, r in zip(r64, r32))
            return margin, pool_margin(p64[0], p32[0]), moved
        i, exact, rounded, per_channel = bad
        bn = sites[i]
        with torch.no_grad():
            for c in (per_channel < MARGIN).nonzero().flatten().tolist():
                values = exact[:, c].flatten()
                err = (rounded[:, c].double() - exact[:, c]).abs().max().item()
                reach = 0.1 * values.std().item()
                # Candidate shifts: the midpoints of the gaps between the values' negatives
                # within [-reach, reach], and both ends; keep the one farthest from every value.
                ends = torch.tensor([-reach, reach], dtype=torch.float64)
                points = torch.sort(torch.cat([-values, ends])).values
                points = points[(points >= -reach) & (points <= reach)]
                mids = (points[1:] + points[:-1]) / 2
                dist = (values.unsqueeze(0) + mids.unsqueeze(1)).abs().min(dim=1).values
                best = dist.argmax()
                assert dist[best].item() > MARGIN * err, f"site {i} channel {c}: no gap wide enough"
                bn.bias[c] += mids[best].item()
                moved += 1
        print(f"  ReLU site {i}: {int((per_channel < MARGIN).sum())} channel(s) nudged", flush=True)
    raise AssertionError("nudging did not converge")


def param_groups(model, case, mult):
    """torch.optim parameter groups as rekindle makes them: the head (`fc`) at lr, the backbone
    at lr * mult (0.1); for AdamW each split again into decayed weights and undecayed biases and
    BatchNorm parameters (every 1-d parameter of a ResNet)."""
    lr = case["lr"]
    groups = []
    for head in (False, True):
        params = [(n, p) for n, p in model.named_parameters() if n.startswith("fc.") == head]
        group_lr = lr if head else lr * mult
        if case["optim"] == "adamw":
            groups.append(dict(params=[p for n, p in params if p.ndim > 1], lr=group_lr))
            no_decay = [p for n, p in params if p.ndim == 1]
            groups.append(dict(params=no_decay, lr=group_lr, weight_decay=0.0))
        else:
            groups.append(dict(params=[p for _, p in params], lr=group_lr))
    return groups


def optimizer(model, case, warmup, mult):
    groups = param_groups(model, case, mult)
    if case["optim"] == "sgd":
        opt = torch.optim.SGD(groups, lr=case["lr"], **SGD)
    else:
        opt = torch.optim.AdamW(groups, lr=case["lr"], **ADAMW)
    if case["steps"] == 1:
        sched = torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)
    else:
        S = torch.optim.lr_scheduler
        cosine = S.CosineAnnealingLR(opt, T_max=case["steps"] - WARMUP)
        if warmup:
            linear = S.LinearLR(opt, start_factor=WARMUP_FACTOR, total_iters=WARMUP)
            sched = S.SequentialLR(opt, [linear, cosine], milestones=[WARMUP])
        else:
            sched = cosine
    return opt, sched


def train(initial, case, images, labels, smoothing=SMOOTHING, warmup=True, mult=0.1, apart=None):
    """Runs `case` from `initial`; returns the model, each step's loss and learning rates (head
    first), and the first step's gradients by name. With `apart` (losses), it stops at the
    first loss more than 10 x LOSS_TOL from its counterpart there."""
    model = copy.deepcopy(initial).train()
    opt, sched = optimizer(model, case, warmup, mult)
    losses, lrs, grads = [], [], None
    for step in range(case["steps"]):
        lrs.append(sorted({g["lr"] for g in opt.param_groups}, reverse=True))
        opt.zero_grad()
        logits = model(images[step])
        loss = torch.nn.functional.cross_entropy(logits, labels[step], label_smoothing=smoothing)
        loss.backward()
        if step == 0:
            grads = {n: p.grad.detach().clone().contiguous() for n, p in model.named_parameters()}
        opt.step()
        sched.step()
        losses.append(loss.item())
        if apart is not None and abs(losses[-1] - apart[step]) > 10 * LOSS_TOL * abs(apart[step]):
            break
    return model, losses, lrs, grads


def state(model):
    """The float tensors of the state_dict (BatchNorm's int64 step counters left out)."""
    return {k: v.detach().clone().contiguous()
            for k, v in model.state_dict().items() if v.is_floating_point()}


def class_of(name):
    """The classes of parameters the Rust test reports separately."""
    if name.startswith("fc."):
        return "fc"
    return "bn weight/bias" if "bn" in name or "downsample.1" in name else "conv weight"


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "fixtures"
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    initial = initial_model(gen)
    # Something to learn: each class adds its own fixed pattern to the noise.
    patterns = torch.randn(CLASSES, 3, SIDE, SIDE, generator=gen)
    # The stem's max-pool first: nudging cannot widen the gap between two positive values.
    for attempt in range(20):
        labels = torch.randint(0, CLASSES, (STEPS, BATCH), generator=gen)
        images = torch.randn(STEPS, BATCH, 3, SIDE, SIDE, generator=gen) + patterns[labels]
        _, p64 = forward_decisions(initial, images[0], torch.float64)
        _, p32 = forward_decisions(initial, images[0], torch.float32)
        pool = pool_margin(p64[0], p32[0])
        if pool >= POOL_MARGIN:
            break
        print(f"batch {attempt}: stem max-pool margin {pool:.3g} < {POOL_MARGIN}; next batch")
    else:
        raise AssertionError("no batch keeps the stem max-pool clear of ties")
    margin, pool, moved = nudge(initial, images[0])
    assert pool >= POOL_MARGIN, f"nudging brought the stem max-pool to {pool:.3g}"
    print(f"decision margin {margin:.3g} (ReLU), {pool:.3g} (max-pool) after nudging {moved} "
          f"BatchNorm biases")

    save_file({k: v.contiguous() for k, v in initial.state_dict().items()},
              os.path.join(out_dir, "step_initial.safetensors"))
    save_file({"images": images.contiguous(), "labels": labels.contiguous()},
              os.path.join(out_dir, "step_inputs.safetensors"))

    reference = {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "seed": SEED,
        "classes": CLASSES,
        "batch": BATCH,
        "side": SIDE,
        "relu_margin": margin,
        "pool_margin": pool,
        "nudged_channels": moved,
        "adamw_eps": ADAMW["eps"],
        "cases": {},
    }
    start = state(initial)
    initial64 = copy.deepcopy(initial).double()
    for name, case in CASES.items():
        model, losses, lrs, grads = train(initial, case, images, labels)
        # PyTorch's own float32 rounding, measured against the same run in float64.
        _, losses64, _, grads64 = train(initial64, case, images.double(), labels)
        spread = max(abs(a - b) / abs(b) for a, b in zip(losses, losses64))
        reference["cases"][name] = {
            "config": case_toml(case),
            "steps": case["steps"],
            "losses": losses,
            "lrs": lrs,
            "float64_loss_spread": spread,
        }
        if case["steps"] == 1:
            after = state(model)
            save_file(after, os.path.join(out_dir, f"step_{name}.safetensors"))
            # Every tensor must move by far more than the test's tolerance allows.
            least = min(((after[k] - v).abs().max().item(), k) for k, v in start.items())
            assert least[0] > 1e-6, f"{name}: `{least[1]}` moved only {least[0]:e}"
            print(f"{name}: loss {losses[0]:.6f}, least-moved tensor {least[1]} by {least[0]:.3g}")
        if name == "sgd":
            save_file(grads, os.path.join(out_dir, "step_grads.safetensors"))
            # The gradients' own float32 error, per class of tensor, for the test's report.
            worst = {}
            for k, g in grads.items():
                err = ((g.double() - grads64[k]).abs().max() / grads64[k].abs().max()).item()
                c = class_of(k)
                if err > worst.get(c, (0.0, ""))[0]:
                    worst[c] = (err, k)
            reference["float64_grad_spread"] = {c: [e, k] for c, (e, k) in worst.items()}
            print("float32 gradients against float64:", worst)
        if case["steps"] > 1:
            print(f"{name}: losses {' '.join(f'{v:.4f}' for v in losses)}; float32 against "
                  f"float64 {spread:.2e} at most")
            assert spread < LOSS_TOL / 5, f"{name}: float32 alone moves the losses by {spread:e}"
            # The losses must tell a wrong recipe from the right one.
            for what, kw in [
                ("no warmup", dict(warmup=False)),
                ("no label smoothing", dict(smoothing=0.0)),
                ("backbone at the head's rate", dict(mult=1.0)),
            ]:
                _, other, _, _ = train(initial, case, images, labels, apart=losses, **kw)
                off = max(abs(a - b) / abs(b) for a, b in zip(other, losses))
                print(f"  {what}: loss {len(other) - 1} off by {off:.2e}")
                assert off > 10 * LOSS_TOL, f"{name}: {what} changes the losses by only {off:e}"
    with open(os.path.join(out_dir, "step_parity.json"), "w") as f:
        json.dump(reference, f, indent=1)
    print(f"step fixtures written to {out_dir}")


if __name__ == "__main__":
    main()
