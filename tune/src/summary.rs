//! What a study has done so far: counts per state and the best trial, as the JSON line
//! `tune` ends with and a table for a person.

use std::path::{Path, PathBuf};

use crate::error::TuneError;
use crate::store::{Store, Trial, TrialState};
use crate::study::Objective;
use crate::worker::trial_dir;

/// A study's trials, counted, and its best complete trial.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// The study directory.
    pub dir: PathBuf,
    /// Every trial, by id.
    pub trials: Vec<Trial>,
    /// The best complete trial and its effective train config.
    pub best: Option<(Trial, PathBuf)>,
}

/// The summary of the study in `dir` whose trials `store` holds.
pub fn summary(store: &Store, dir: &Path, objective: Objective) -> Result<Summary, TuneError> {
    let trials = store.trials()?;
    let better = |a: f64, b: f64| if objective.maximize() { a > b } else { a < b };
    let mut best: Option<&Trial> = None;
    for t in trials.iter().filter(|t| t.state == TrialState::Complete) {
        let Some(v) = t.value.filter(|v| !v.is_nan()) else {
            continue;
        };
        if best.and_then(|b| b.value).is_none_or(|b| better(v, b)) {
            best = Some(t);
        }
    }
    let best = best.map(|t| (t.clone(), trial_dir(dir, t.id).join("config.toml")));
    Ok(Summary {
        dir: dir.to_path_buf(),
        trials,
        best,
    })
}

impl Summary {
    /// How many trials are in `state`.
    pub fn count(&self, state: TrialState) -> usize {
        self.trials.iter().filter(|t| t.state == state).count()
    }

    /// One JSON object: `{"study", "trials", "complete", "pruned", "invalid", "failed",
    /// "best": {"trial", "value", "config"} or null}`.
    pub fn json(&self) -> String {
        let best = self.best.as_ref().map(|(t, config)| {
            serde_json::json!({
                "trial": t.id,
                "value": t.value,
                "config": config.display().to_string(),
            })
        });
        serde_json::json!({
            "study": self.dir.display().to_string(),
            "trials": self.trials.len(),
            "complete": self.count(TrialState::Complete),
            "pruned": self.count(TrialState::Pruned),
            "invalid": self.count(TrialState::Invalid),
            "failed": self.count(TrialState::Failed),
            "best": best,
        })
        .to_string()
    }

    /// One line per trial: id, state, value and point (or why it did not run).
    pub fn table(&self) -> String {
        let mut s = String::from("trial | state    |    value | point\n");
        for t in &self.trials {
            let value = t.value.map_or("-".into(), |v| format!("{v:.4}"));
            let point: Vec<String> = t.point.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let mut line = format!(
                "{:>5} | {:<8} | {value:>8} | {}",
                t.id,
                t.state.name(),
                point.join(" ")
            );
            if matches!(t.state, TrialState::Invalid | TrialState::Failed) {
                line += &format!("  ({})", t.reason.as_deref().unwrap_or(""));
            }
            s += &line;
            s.push('\n');
        }
        if let Some((t, config)) = &self.best {
            let v = t.value.unwrap_or(f64::NAN);
            s += &format!("best: trial {} with {v:.4} -> {}\n", t.id, config.display());
        }
        s
    }
}
