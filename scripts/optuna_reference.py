#!/usr/bin/env python3
"""Optuna's pruning decisions on scripted metric sequences, for rekindle-tune's pruners.

Writes OUT_DIR/optuna.json (default OUT_DIR: ./fixtures): a list of scenarios, each with
  study      the study's name (Hyperband hashes it into each trial's bracket)
  pruner     rekindle's `[study] pruner` name and `[pruner]` settings (the TOML keys, as JSON)
  direction  "maximize" or "minimize"
  trials     per trial, the value it reports at steps 1, 2, ... (NaN as null)
  pruned_at  per trial, the step at which Optuna's pruner stopped it, or null if it completed

Trials run one after another, as one worker would run them: each reports its steps in order,
asks `should_prune()` after every report (also after its last one, where the answer is ignored
but successive halving still records the trial's rung values) and is told PRUNED at the first
yes, COMPLETE otherwise. The Rust test replays the same sequences through rekindle's pruners
and must stop the same trials at the same steps. Deterministic: no randomness at all.
"""
import json
import math
import os
import sys

import optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)

# Hyperband hashes the study name with each trial's number to choose its bracket.
STUDY_NAME = "rekindle"


def sequences(n_trials, n_steps, seed, nan_trials=()):
    """Learning curves: each trial approaches its own level, with a wiggle and crossings."""
    out = []
    for t in range(n_trials):
        level = 0.5 + 0.4 * math.sin(1.7 * t + seed)
        speed = 0.3 + 0.25 * (1 + math.cos(2.3 * t + 0.5 * seed))
        curve = []
        for s in range(1, n_steps + 1):
            v = level * (1 - math.exp(-speed * s)) + 0.03 * math.sin(3.1 * s + t + seed)
            curve.append(round(v, 6))
        out.append(curve)
    for t, s in nan_trials:
        out[t][s - 1] = float("nan")
    return out


def pruner(name, settings):
    if name == "median":
        return optuna.pruners.PercentilePruner(
            percentile=settings.get("percentile", 50.0),
            n_startup_trials=settings.get("startup_trials", 5),
            n_warmup_steps=settings.get("warmup_steps", 0),
            interval_steps=settings.get("interval_steps", 1),
        )
    if name == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=settings.get("min_resource", "auto"),
            reduction_factor=settings.get("reduction_factor", 4),
            min_early_stopping_rate=settings.get("min_early_stopping_rate", 0),
            bootstrap_count=settings.get("bootstrap_count", 0),
        )
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=settings.get("min_resource", 1),
            max_resource=settings.get("max_resource", "auto"),
            reduction_factor=settings.get("reduction_factor", 3),
            bootstrap_count=settings.get("bootstrap_count", 0),
        )
    raise ValueError(name)


def run(name, settings, direction, trials):
    study = optuna.create_study(
        study_name=STUDY_NAME,
        direction=direction,
        pruner=pruner(name, settings),
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    pruned_at = []
    for curve in trials:
        trial = study.ask()
        stopped = None
        for step, value in enumerate(curve, 1):
            trial.report(value, step)
            if trial.should_prune() and step < len(curve):
                stopped = step
                break
        if stopped is None:
            study.tell(trial, 0.0)
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        pruned_at.append(stopped)
    nulls = [[None if math.isnan(v) else v for v in curve] for curve in trials]
    return {
        "study": STUDY_NAME,
        "pruner": name,
        "settings": settings,
        "direction": direction,
        "trials": nulls,
        "pruned_at": pruned_at,
    }


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "fixtures"
    os.makedirs(out_dir, exist_ok=True)
    nan = [(4, 3), (9, 1), (9, 2), (9, 3), (9, 4), (9, 5), (9, 6), (9, 7), (9, 8)]
    cases = [
        ("median", {}, "maximize", sequences(14, 8, 0, nan)),
        ("median", {}, "minimize", sequences(14, 8, 1, nan)),
        (
            "median",
            {"startup_trials": 2, "warmup_steps": 2, "interval_steps": 3, "percentile": 25.0},
            "maximize",
            sequences(12, 10, 2),
        ),
        ("asha", {}, "maximize", sequences(20, 20, 3, [(6, 4)])),
        ("asha", {}, "minimize", sequences(20, 20, 4)),
        (
            "asha",
            {"min_resource": 1, "reduction_factor": 2, "bootstrap_count": 2},
            "maximize",
            sequences(16, 9, 5, [(7, 2)]),
        ),
        (
            "asha",
            {"min_resource": 2, "reduction_factor": 3, "min_early_stopping_rate": 1},
            "minimize",
            sequences(16, 20, 6),
        ),
        ("hyperband", {}, "maximize", sequences(30, 27, 7, [(12, 5)])),
        ("hyperband", {"min_resource": 2, "reduction_factor": 2}, "minimize", sequences(30, 16, 8)),
        (
            "hyperband",
            {"max_resource": 9, "bootstrap_count": 1},
            "maximize",
            sequences(24, 9, 9),
        ),
    ]
    scenarios = [run(*case) for case in cases]
    path = os.path.join(out_dir, "optuna.json")
    with open(path, "w") as f:
        json.dump({"optuna": optuna.__version__, "scenarios": scenarios}, f, indent=1)
    pruned = sum(p is not None for s in scenarios for p in s["pruned_at"])
    total = sum(len(s["pruned_at"]) for s in scenarios)
    print(f"wrote {path}: {len(scenarios)} scenarios, {pruned} of {total} trials pruned")


if __name__ == "__main__":
    main()
