#!/usr/bin/env python3
"""Optuna's TPE sampler (pinned in requirements.lock) on fixed histories and on seeded studies,
for rekindle-tune's TPE.

Writes OUT_DIR/tpe.json (default OUT_DIR: ./fixtures) with
  optuna     Optuna's version
  histories  fixed histories, each with
               space      the search space as rekindle's `[space]` TOML
               direction  "minimize" or "maximize"
               trials     id, state (complete | pruned | running), point, value, last [step,
                          value] (null for NaN)
               below      ids of the trials TPE counts as good (Optuna's `_split_trials`)
               above      ids of the others
               groups     per group of keys drawn together (the intersection search space
                          first, then each key drawn alone): keys, points (as Optuna's Parzen
                          estimator samples them: a float, an integer as a float, a choice's
                          index) and the log densities of the good (l) and other (g) trials'
                          estimators at those points
  studies    per test function (Branin on [-5, 10] x [0, 15]; Hartmann-6 on [0, 1]^6, both
             minimised, both given as the value above their global minimum): the best value
             found in `trials` trials by `TPESampler(seed=s)`, Optuna's defaults, for seeds
             0..199, one trial after another

The Rust tests check the split and every density against these to 1e-9 and, over the studies,
that rekindle's TPE does not find worse values than Optuna's (a one-sided Mann-Whitney U test).
Deterministic: fixed seeds throughout.
"""
import json
import math
import os
import sys

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers._tpe.sampler import _split_trials, default_gamma
from optuna.trial import TrialState, create_trial

optuna.logging.set_verbosity(optuna.logging.ERROR)

STUDIES = 200
TRIALS = 30


def branin(x):
    x1, x2 = x
    b = 5.1 / (4 * math.pi**2)
    c = 5 / math.pi
    t = 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10 - 0.397887


HARTMANN_A = [
    [10, 3, 17, 3.5, 1.7, 8],
    [0.05, 10, 17, 0.1, 8, 14],
    [3, 3.5, 1.7, 10, 17, 8],
    [17, 8, 0.05, 10, 0.1, 14],
]
HARTMANN_P = [
    [0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
    [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
    [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
    [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381],
]
HARTMANN_ALPHA = [1.0, 1.2, 3.0, 3.2]


def hartmann6(x):
    total = 0.0
    for a, p, alpha in zip(HARTMANN_A, HARTMANN_P, HARTMANN_ALPHA):
        total += alpha * math.exp(-sum(ai * (xi - pi) ** 2 for ai, xi, pi in zip(a, x, p)))
    return -total + 3.32237


FUNCTIONS = [
    ("branin", {"x1": (-5.0, 10.0), "x2": (0.0, 15.0)}, branin),
    ("hartmann6", {f"x{i}": (0.0, 1.0) for i in range(1, 7)}, hartmann6),
]


def study_best(name, bounds, f, seed):
    sampler = optuna.samplers.TPESampler(seed=seed)
    study = optuna.create_study(sampler=sampler, direction="minimize")
    keys = sorted(bounds)

    def objective(trial):
        return f([trial.suggest_float(k, *bounds[k]) for k in keys])

    study.optimize(objective, n_trials=TRIALS)
    return study.best_value


# The spaces of the fixed histories: rekindle's TOML and Optuna's distributions alike.
MIXED = {
    "toml": 'lr = { log-uniform = [1e-5, 1.0] }\n'
    'depth = { int = [1, 100000] }\n'
    'opt = { choice = ["sgd", "adam", "rmsprop"] }\n',
    "dists": {
        "lr": FloatDistribution(1e-5, 1.0, log=True),
        "depth": IntDistribution(1, 100000),
        "opt": CategoricalDistribution(["sgd", "adam", "rmsprop"]),
    },
}
CONDITIONAL = {
    "toml": MIXED["toml"] + 'momentum = { uniform = [0.0, 1.0], when = { opt = "sgd" } }\n',
    "dists": dict(MIXED["dists"], momentum=FloatDistribution(0.0, 1.0)),
}
PLANE = {
    "toml": "x1 = { uniform = [-5.0, 10.0] }\nx2 = { uniform = [0.0, 15.0] }\n",
    "dists": {"x1": FloatDistribution(-5.0, 10.0), "x2": FloatDistribution(0.0, 15.0)},
}


def draw_point(space, rng):
    point = {}
    for k in ["depth", "lr", "opt", "x1", "x2"]:
        d = space["dists"].get(k)
        if isinstance(d, FloatDistribution) and d.log:
            point[k] = float(math.exp(rng.uniform(math.log(d.low), math.log(d.high))))
        elif isinstance(d, FloatDistribution):
            point[k] = float(rng.uniform(d.low, d.high))
        elif isinstance(d, IntDistribution):
            point[k] = int(rng.integers(d.low, d.high + 1))
        elif isinstance(d, CategoricalDistribution):
            point[k] = d.choices[int(rng.integers(len(d.choices)))]
    if "momentum" in space["dists"] and point["opt"] == "sgd":
        point["momentum"] = float(rng.uniform(0.0, 1.0))
    return point


def objective_of(point):
    if "x1" in point:
        return branin([point["x1"], point["x2"]])
    v = (math.log10(point["lr"]) + 2.5) ** 2 + (point["depth"] / 1e4 - 7) ** 2 / 10
    return v + {"sgd": (point.get("momentum", 0.9) - 0.9) ** 2 * 4, "adam": 0.5}.get(
        point["opt"], 1.0
    )


def history(space, n, seed, pruned=(), running=(), nan_pruned=(), silent_pruned=()):
    """`n` trials at random points; those in `pruned` stopped at a step that depends on the id."""
    rng = np.random.default_rng(seed)
    trials = []
    for i in range(n):
        point = draw_point(space, rng)
        value = round(objective_of(point), 9)
        if i in running:
            trials.append({"id": i, "state": "running", "point": point, "value": None, "last": None})
        elif i in silent_pruned:
            trials.append({"id": i, "state": "pruned", "point": point, "value": None, "last": None})
        elif i in pruned or i in nan_pruned:
            step = 1 + i % 3
            # NaN (a diverged report) as null: JSON has no NaN.
            last = None if i in nan_pruned else value + 1.0
            trials.append(
                {"id": i, "state": "pruned", "point": point, "value": None, "last": [step, last]}
            )
        else:
            trials.append({"id": i, "state": "complete", "point": point, "value": value, "last": None})
    return trials


def optuna_trial(t, dists):
    state = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "running": TrialState.RUNNING}
    inter = {}
    if t["last"] is not None:
        step, v = t["last"]
        v = float("nan") if v is None else v
        inter = {s: v + 0.5 * (step - s) for s in range(1, step)}
        inter[step] = v
    return create_trial(
        state=state[t["state"]],
        params=t["point"],
        distributions={k: dists[k] for k in t["point"]},
        value=t["value"],
        intermediate_values=inter,
    )


def no_ties(space, trials):
    """Optuna gives tied observations their bandwidths in the order numpy's argsort leaves them,
    which is not stable (on x86 a SIMD sort that differs by CPU); rekindle's sort is stable. The
    histories must not depend on it: a wide integer range keeps every value apart."""
    for k, d in space.items():
        if isinstance(d, CategoricalDistribution):
            continue
        values = [t.params[k] for t in trials if k in t.params]
        assert len(values) == len(set(values)), f"tied values of {k}: {sorted(values)}"


def densities(sampler, study, space, below, above, seed):
    no_ties(space, below)
    no_ties(space, above)
    mpe_l = sampler._build_parzen_estimator(study, space, below, handle_below=True)
    mpe_g = sampler._build_parzen_estimator(study, space, above, handle_below=False)
    points = mpe_l.sample(np.random.RandomState(seed), 16)
    # Points the good trials' estimator rarely draws: corners and the middle of the space.
    extra = {k: [] for k in space}
    for u in (0.0, 0.5, 1.0):
        for k, d in space.items():
            if isinstance(d, CategoricalDistribution):
                extra[k].append(float(min(int(u * len(d.choices)), len(d.choices) - 1)))
            elif d.log:
                extra[k].append(math.exp(math.log(d.low) + u * (math.log(d.high) - math.log(d.low))))
            elif isinstance(d, IntDistribution):
                extra[k].append(float(round(d.low + u * (d.high - d.low))))
            else:
                extra[k].append(d.low + u * (d.high - d.low))
    points = {k: np.concatenate([points[k], np.asarray(extra[k], dtype=float)]) for k in space}
    n = len(next(iter(points.values())))
    return {
        "keys": list(space),
        "points": [[float(points[k][i]) for k in space] for i in range(n)],
        "l": [float(v) for v in mpe_l.log_pdf(points)],
        "g": [float(v) for v in mpe_g.log_pdf(points)],
    }


def fixed(name, space, direction, trials, seed):
    sampler = optuna.samplers.TPESampler(seed=seed)
    study = optuna.create_study(sampler=sampler, direction=direction, study_name=name)
    for t in trials:
        study.add_trial(optuna_trial(t, space["dists"]))
    current = study.ask()
    relative = sampler.infer_relative_search_space(study, current)
    pool = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        and t.number != current.number
    ]
    n = sum(t.state != TrialState.RUNNING for t in pool)
    below, above = _split_trials(study, pool, default_gamma(n))
    groups = [densities(sampler, study, relative, below, above, seed)]
    for k in sorted(set(space["dists"]) - set(relative)):
        groups.append(densities(sampler, study, {k: space["dists"][k]}, below, above, seed + 1))
    return {
        "name": name,
        "space": space["toml"],
        "direction": direction,
        "trials": trials,
        "below": [t.number for t in below],
        "above": [t.number for t in above],
        "groups": groups,
    }


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "fixtures"
    os.makedirs(out_dir, exist_ok=True)
    histories = [
        fixed("plane", PLANE, "minimize", history(PLANE, 14, 1), 3),
        fixed(
            "mixed",
            MIXED,
            "maximize",
            history(MIXED, 40, 2, pruned=(5, 9, 17), running=(38, 39), nan_pruned=(21,),
                    silent_pruned=(30,)),
            4,
        ),
        fixed("conditional", CONDITIONAL, "minimize", history(CONDITIONAL, 31, 3, pruned=(2,)), 5),
    ]
    studies = {
        name: [study_best(name, bounds, f, seed) for seed in range(STUDIES)]
        for name, bounds, f in FUNCTIONS
    }
    path = os.path.join(out_dir, "tpe.json")
    with open(path, "w") as f:
        json.dump(
            {"optuna": optuna.__version__, "histories": histories, "trials": TRIALS, "studies": studies},
            f,
            indent=1,
        )
    medians = {k: float(np.median(v)) for k, v in studies.items()}
    print(f"wrote {path}: {len(histories)} histories, {STUDIES} studies a function, medians {medians}")


if __name__ == "__main__":
    main()
