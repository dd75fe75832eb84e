//! rekindle-tune's pruners (median, ASHA, Hyperband) stop exactly the trials Optuna's stop, at the same steps: scripted
//! learning curves (NaN included) replayed through both (`optuna.json` in
//! `$REKINDLE_FIXTURES`, written by `scripts/optuna_reference.py` in `cargo xtask test`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use rekindle_tune::{History, PrunerSection, Reports};

#[derive(serde::Deserialize)]
struct Reference {
    optuna: String,
    scenarios: Vec<Scenario>,
}

#[derive(serde::Deserialize)]
struct Scenario {
    study: String,
    pruner: String,
    settings: PrunerSection,
    direction: String,
    trials: Vec<Vec<Option<f64>>>,
    pruned_at: Vec<Option<usize>>,
}

fn reference() -> Reference {
    let dir = std::env::var_os("REKINDLE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures"));
    let path = dir.join("optuna.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run `cargo xtask test` (or `cargo xtask fixtures`) first",
            path.display()
        )
    });
    serde_json::from_str(&text).expect("optuna.json")
}

/// Replays `s` one trial after another, as a single worker runs a study: the step each trial
/// was pruned at, or `None` when it completed.
fn replay(s: &Scenario) -> Vec<Option<usize>> {
    let pruner = match s.pruner.as_str() {
        "median" => rekindle_tune::Pruner::Percentile(s.settings.percentile()),
        "asha" => rekindle_tune::Pruner::Asha(s.settings.asha()),
        "hyperband" => rekindle_tune::Pruner::Hyperband(s.settings.hyperband(&s.study)),
        other => panic!("unknown pruner {other}"),
    };
    let maximize = s.direction == "maximize";
    let mut reports: BTreeMap<i64, Reports> = BTreeMap::new();
    let mut rungs: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    let mut complete: Vec<i64> = Vec::new();
    let mut pruned_at = Vec::new();
    for (id, curve) in s.trials.iter().enumerate() {
        let id = id as i64;
        let mut stopped = None;
        for (i, value) in curve.iter().enumerate() {
            let step = i + 1;
            let own = reports.entry(id).or_default();
            own.insert(step, value.unwrap_or(f64::NAN));
            let history = History {
                reports: &reports,
                complete: &complete,
                rungs: &mut rungs,
            };
            if pruner.decide(maximize, id, history) && step < curve.len() {
                stopped = Some(step);
                break;
            }
        }
        if stopped.is_none() {
            complete.push(id);
        }
        pruned_at.push(stopped);
    }
    pruned_at
}

#[test]
fn median_asha_and_hyperband_prune_exactly_as_optunas_pruners() {
    let r = reference();
    assert!(r.scenarios.len() >= 10, "optuna {}", r.optuna);
    let mut pruned = 0;
    for (i, s) in r.scenarios.iter().enumerate() {
        let ours = replay(s);
        assert_eq!(
            ours, s.pruned_at,
            "scenario {i} ({} {:?} {}), Optuna {}",
            s.pruner, s.settings, s.direction, r.optuna
        );
        pruned += ours.iter().flatten().count();
    }
    assert!(
        pruned > 40,
        "the scenarios prune often enough to tell pruners apart"
    );
}
