#!/usr/bin/env python3
"""PyTorch's answers for rekindle's tuning catalog (optimisers and learning-rate schedules).

Writes OUT_DIR/tuning.json (default OUT_DIR: ./fixtures) with:
  problem     a fixed small regression problem: inputs x [8, 5], targets y [8, 3], starting
              weight [5, 3] and bias [3], loss = mean((tanh(x @ weight + bias) - y)^2), in
              float64 on both sides so that the comparison measures the optimisers' arithmetic,
              not float32 rounding in a different order (Adam's normalisation amplifies that
              to ~1e-6 on its own)
  optimizers  per case: rekindle's `[optim]` settings (the TOML keys, as JSON), the learning
              rate, and `weight`/`bias` after STEPS steps of the matching torch.optim optimiser
  schedules   per case: rekindle's `[schedule]` settings, the run length, steps per epoch,
              the validation metric per epoch (plateau only) and torch.optim.lr_scheduler's
              learning rate for every optimiser step

Each case's `[optim]`/`[schedule]` table is what a user would write in rekindle's config to ask
for the same thing as the PyTorch code beside it; the Rust tests build rekindle's optimiser or
schedule from that table and compare. Deterministic: no randomness at all.
"""
import json
import math
import os
import struct
import sys

import torch

STEPS = 20


def problem():
    def grid(rows, cols, f):
        return torch.tensor([[f(i, j) for j in range(cols)] for i in range(rows)], dtype=torch.float64)

    x = grid(8, 5, lambda i, j: math.sin(1.0 + 5 * i + j))
    y = grid(8, 3, lambda i, j: 0.5 * math.cos(0.7 * i - 1.3 * j))
    weight = grid(5, 3, lambda i, j: 0.3 * math.sin(2.0 + 3 * i + 7 * j))
    bias = torch.tensor([0.1, -0.2, 0.05], dtype=torch.float64)
    return x, y, weight, bias


def loss_fn(x, y, weight, bias):
    return ((torch.tanh(x @ weight + bias) - y) ** 2).mean()


def f32(x):
    """x rounded to float32."""
    return struct.unpack("f", struct.pack("f", x))[0]


# Burn's SGD, RMSprop and Adagrad keep these hyperparameters as float32 (momentum 0.9 becomes
# 0.899999976...): PyTorch gets the same rounded values, defaults included, so that the
# comparison measures the algorithms. The learning rate, SGD's dampening, Adagrad's lr_decay
# and everything of rekindle's own Adam/AdamW (optim.rs) are float64 and stay exact.
F32_DEFAULTS = {
    "SGD": {"momentum": 0.0, "weight_decay": 0.0},
    "Adam": {},
    "AdamW": {},
    "RMSprop": {"alpha": 0.99, "eps": 1e-8, "momentum": 0.0, "weight_decay": 0.0},
    "Adagrad": {"eps": 1e-10, "weight_decay": 0.0},
}


def rounded(cls, kw):
    out = dict(kw)
    for key, default in F32_DEFAULTS[cls.__name__].items():
        v = out.get(key, default)
        out[key] = tuple(f32(x) for x in v) if isinstance(v, tuple) else f32(v)
    return out


# (name, rekindle [optim] table, lr, builder(params as groups-or-list, lr) -> torch optimiser,
#  clipping applied before each step)
def optimizer_cases():
    def plain(cls, **kw):
        return lambda w, b, lr: cls([w, b], lr=lr, **rounded(cls, kw))

    def no_decay(cls, wd, **kw):
        kw = rounded(cls, dict(kw, weight_decay=wd))
        wd = kw.pop("weight_decay")
        return lambda w, b, lr: cls(
            [{"params": [w], "weight_decay": wd}, {"params": [b], "weight_decay": 0.0}], lr=lr, **kw
        )

    O = torch.optim
    return [
        ("sgd", {"name": "sgd"}, 0.5, plain(O.SGD), None),
        ("sgd_momentum", {"name": "sgd", "momentum": 0.9}, 0.2, plain(O.SGD, momentum=0.9), None),
        ("sgd_dampening", {"name": "sgd", "momentum": 0.8, "dampening": 0.5}, 0.2,
         plain(O.SGD, momentum=0.8, dampening=0.5), None),
        ("sgd_nesterov_l2", {"name": "sgd", "momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
         0.2, plain(O.SGD, momentum=0.9, nesterov=True, weight_decay=0.01), None),
        ("sgd_no_decay_bias", {"name": "sgd", "momentum": 0.9, "weight_decay": 0.05, "no_decay_bias_norm": True},
         0.2, no_decay(O.SGD, 0.05, momentum=0.9), None),
        ("adam", {"name": "adam"}, 0.02, plain(O.Adam), None),
        ("adam_l2_amsgrad", {"name": "adam", "weight_decay": 0.01, "amsgrad": True, "betas": [0.8, 0.99]},
         0.02, plain(O.Adam, weight_decay=0.01, amsgrad=True, betas=(0.8, 0.99)), None),
        ("adamw", {"name": "adamw"}, 0.02, plain(O.AdamW), None),
        ("adamw_decay", {"name": "adamw", "weight_decay": 0.1, "eps": 1e-6}, 0.02,
         plain(O.AdamW, weight_decay=0.1, eps=1e-6), None),
        ("adamw_no_decay_bias", {"name": "adamw", "weight_decay": 0.1, "no_decay_bias_norm": True}, 0.02,
         no_decay(O.AdamW, 0.1), None),
        ("rmsprop", {"name": "rmsprop"}, 0.01, plain(O.RMSprop), None),
        ("rmsprop_centered_momentum", {"name": "rmsprop", "alpha": 0.9, "momentum": 0.5, "centered": True,
                                       "weight_decay": 0.01}, 0.005,
         plain(O.RMSprop, alpha=0.9, momentum=0.5, centered=True, weight_decay=0.01), None),
        ("adagrad", {"name": "adagrad"}, 0.1, plain(O.Adagrad), None),
        ("adagrad_lr_decay", {"name": "adagrad", "lr_decay": 0.1, "weight_decay": 0.01}, 0.1,
         plain(O.Adagrad, lr_decay=0.1, weight_decay=0.01), None),
        ("sgd_clip_norm", {"name": "sgd", "momentum": 0.9, "clip_grad_norm": 0.05}, 0.5,
         plain(O.SGD, momentum=0.9), ("norm", 0.05)),
        ("adam_clip_value", {"name": "adam", "clip_grad_value": 0.01}, 0.02, plain(O.Adam), ("value", f32(0.01))),  # Burn clips at an f32 value
    ]


def run_optimizer(build, lr, clip):
    x, y, w0, b0 = problem()
    w = w0.clone().requires_grad_(True)
    b = b0.clone().requires_grad_(True)
    opt = build(w, b, lr)
    for _ in range(STEPS):
        opt.zero_grad()
        loss_fn(x, y, w, b).backward()
        if clip is not None:
            kind, v = clip
            if kind == "norm":
                torch.nn.utils.clip_grad_norm_([w, b], v)
            else:
                torch.nn.utils.clip_grad_value_([w, b], v)
        opt.step()
    return w.detach(), b.detach()


# A schedule case: the rekindle table, the run, and the torch scheduler over an SGD optimiser.
BASE_LR = 0.1
RUN = 300


def schedule_cases():
    S = torch.optim.lr_scheduler

    def seq(*parts, milestones):
        return lambda o: S.SequentialLR(o, [p(o) for p in parts], milestones=milestones)

    def lam(f):
        return lambda o: S.LambdaLR(o, f)

    def once(f):
        return f

    plateau_metric = [1.0, 0.9, 0.85, 0.86, 0.849, 0.86, 0.87, 0.8, 0.81, 0.82, 0.83, 0.84, 0.6, 0.61,
                      0.62, 0.62, 0.62, 0.62, 0.62, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    accuracy_metric = [50, 60, 65, 65.5, 65.2, 66, 66, 66, 66, 70, 70, 70, 70, 70.005, 70, 70, 71, 71, 71, 71]
    return [
        # name, [schedule] table, run steps, steps per epoch, torch builder, per-epoch metric
        ("constant", {"name": "constant"}, RUN, 1, lam(lambda t: 1.0), None),
        ("step", {"name": "step", "step_size": 30, "gamma": 0.1}, RUN, 1,
         once(lambda o: S.StepLR(o, step_size=30, gamma=0.1)), None),
        ("multistep", {"name": "multistep", "milestones": [50, 120, 200], "gamma": 0.5}, RUN, 1,
         once(lambda o: S.MultiStepLR(o, milestones=[50, 120, 200], gamma=0.5)), None),
        ("exponential", {"name": "exponential", "gamma": 0.99}, RUN, 1,
         once(lambda o: S.ExponentialLR(o, gamma=0.99)), None),
        # Keras's InverseTimeDecay, lr0 / (1 + rate * t / decay_steps); PyTorch has no class for it.
        ("inverse_time", {"name": "inverse-time", "decay_rate": 0.5, "decay_steps": 10}, RUN, 1,
         lam(lambda t: 1.0 / (1.0 + 0.5 * t / 10)), None),
        ("inverse_time_staircase", {"name": "inverse-time", "decay_rate": 0.5, "decay_steps": 10,
                                    "staircase": True}, RUN, 1,
         lam(lambda t: 1.0 / (1.0 + 0.5 * (t // 10))), None),
        ("polynomial", {"name": "polynomial", "power": 2.0}, RUN, 1,
         once(lambda o: S.PolynomialLR(o, total_iters=RUN, power=2.0)), None),
        ("polynomial_short", {"name": "polynomial", "power": 1.0, "total": 200}, RUN, 1,
         once(lambda o: S.PolynomialLR(o, total_iters=200, power=1.0)), None),
        ("cosine", {"name": "cosine", "min_lr": 0.001}, RUN, 1,
         once(lambda o: S.CosineAnnealingLR(o, T_max=RUN, eta_min=0.001)), None),
        ("cosine_restarts", {"name": "cosine-restarts", "period": 50, "period_mult": 2, "min_lr": 1e-4}, RUN, 1,
         once(lambda o: S.CosineAnnealingWarmRestarts(o, T_0=50, T_mult=2, eta_min=1e-4)), None),
        ("cosine_restarts_flat", {"name": "cosine-restarts", "period": 40}, RUN, 1,
         once(lambda o: S.CosineAnnealingWarmRestarts(o, T_0=40)), None),
        ("one_cycle", {"name": "one-cycle"}, RUN, 1,
         once(lambda o: S.OneCycleLR(o, max_lr=BASE_LR, total_steps=RUN, cycle_momentum=False)), None),
        ("one_cycle_linear_three_phase", {"name": "one-cycle", "anneal": "linear", "three_phase": True,
                                          "pct_start": 0.25, "div_factor": 10.0, "final_div_factor": 100.0},
         RUN, 1,
         once(lambda o: S.OneCycleLR(o, max_lr=BASE_LR, total_steps=RUN, anneal_strategy="linear",
                                      three_phase=True, pct_start=0.25, div_factor=10.0,
                                      final_div_factor=100.0, cycle_momentum=False)), None),
        ("warmup_linear_cosine", {"name": "cosine", "warmup": 20, "warmup_factor": 0.1}, RUN, 1,
         seq(lambda o: S.LinearLR(o, start_factor=0.1, total_iters=20),
             lambda o: S.CosineAnnealingLR(o, T_max=RUN - 20), milestones=[20]), None),
        ("warmup_constant_step", {"name": "step", "step_size": 40, "gamma": 0.5, "warmup": 10,
                                  "warmup_kind": "constant", "warmup_factor": 0.25}, RUN, 1,
         seq(lambda o: S.ConstantLR(o, factor=0.25, total_iters=10),
             lambda o: S.StepLR(o, step_size=40, gamma=0.5), milestones=[10]), None),
        ("warmup_linear_exponential", {"name": "exponential", "gamma": 0.98, "warmup": 15}, RUN, 1,
         seq(lambda o: S.LinearLR(o, total_iters=15),
             lambda o: S.ExponentialLR(o, gamma=0.98), milestones=[15]), None),
        # Per-epoch stepping: PyTorch steps once per epoch; each epoch's rate holds for its steps.
        ("step_per_epoch", {"name": "step", "per": "epoch", "step_size": 3, "gamma": 0.5}, 20 * 7, 7,
         once(lambda o: S.StepLR(o, step_size=3, gamma=0.5)), None),
        ("cosine_per_epoch_warmup", {"name": "cosine", "per": "epoch", "warmup": 2, "min_lr": 0.01},
         20 * 7, 7,
         seq(lambda o: S.LinearLR(o, total_iters=2),
             lambda o: S.CosineAnnealingLR(o, T_max=18, eta_min=0.01), milestones=[2]), None),
        ("plateau_loss", {"name": "plateau", "per": "epoch", "patience": 2, "factor": 0.5, "cooldown": 1,
                          "threshold": 0.01, "min_lr": 0.01}, len(plateau_metric) * 5, 5,
         once(lambda o: S.ReduceLROnPlateau(o, mode="min", patience=2, factor=0.5, cooldown=1,
                                             threshold=0.01, min_lr=0.01)), plateau_metric),
        ("plateau_accuracy_abs", {"name": "plateau", "per": "epoch", "metric": "valid-accuracy",
                                  "patience": 1, "factor": 0.3, "threshold": 0.5, "threshold_mode": "abs"},
         len(accuracy_metric) * 4, 4,
         once(lambda o: S.ReduceLROnPlateau(o, mode="max", patience=1, factor=0.3, threshold=0.5,
                                             threshold_mode="abs")), accuracy_metric),
    ]


def run_schedule(build, run, per_epoch, metric):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=BASE_LR)
    sched = build(opt)
    epochs = run // per_epoch
    lrs = []
    for e in range(epochs):
        for _ in range(per_epoch):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            if per_epoch == 1 and metric is None:
                sched.step()
        if metric is not None:
            sched.step(metric[e])
        elif per_epoch > 1:
            sched.step()
    return lrs


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "fixtures"
    os.makedirs(out, exist_ok=True)
    x, y, w, b = problem()
    doc = {
        "torch": torch.__version__,
        "steps": STEPS,
        "problem": {"x": x.tolist(), "y": y.tolist(), "weight": w.tolist(), "bias": b.tolist()},
        "optimizers": [],
        "schedules": [],
        "base_lr": BASE_LR,
    }
    for name, table, lr, build, clip in optimizer_cases():
        wf, bf = run_optimizer(build, lr, clip)
        doc["optimizers"].append(
            {"name": name, "optim": table, "lr": lr, "weight": wf.tolist(), "bias": bf.tolist()}
        )
    for name, table, run, per_epoch, build, metric in schedule_cases():
        lrs = run_schedule(build, run, per_epoch, metric)
        doc["schedules"].append(
            {"name": name, "schedule": table, "steps": run, "steps_per_epoch": per_epoch,
             "metric": metric, "lrs": lrs}
        )
    path = os.path.join(out, "tuning.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    print(f"wrote {path}: {len(doc['optimizers'])} optimiser and {len(doc['schedules'])} schedule cases")


if __name__ == "__main__":
    main()
