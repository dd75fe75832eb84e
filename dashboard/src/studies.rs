//! A study as the dashboard shows it: its trials with their parameters, values and runs, the
//! optimisation history, every trial's intermediate values and a parameter importance, read
//! through tune's own store, opened read-only.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use rekindle_tune::{RESOLVED, Store, Study, Trial, worker::trial_dir};

use crate::scan::FoundStudy;

/// One trial row.
#[derive(Clone, Debug, Serialize)]
pub struct TrialRow {
    /// Its number.
    pub id: i64,
    /// running, complete, pruned, invalid or failed.
    pub state: &'static str,
    /// The objective at its best epoch.
    pub value: Option<f64>,
    /// Its last reported epoch.
    pub last_step: Option<usize>,
    /// The sampled point, by dotted key.
    pub params: BTreeMap<String, serde_json::Value>,
    /// Why it is invalid or failed.
    pub reason: String,
    /// Its run's id on the dashboard, if its directory is under the roots.
    pub run: Option<String>,
}

/// One trial's intermediate values: (trial, state, epochs, values).
pub type Intermediate = (i64, &'static str, Vec<usize>, Vec<Option<f64>>);

/// A study, read.
#[derive(Clone, Debug, Serialize)]
pub struct StudyView {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// What the trials are ranked by.
    pub objective: String,
    /// Whether larger is better.
    pub maximize: bool,
    /// Every trial, by number.
    pub trials: Vec<TrialRow>,
    /// The searched keys.
    pub params: Vec<String>,
    /// Each key's importance (normalised to sum to 1), most important first.
    pub importance: Vec<(String, f64)>,
    /// Every trial's intermediate values.
    pub intermediate: Vec<Intermediate>,
    /// Why something could not be read (the page says so instead of failing).
    pub error: Option<String>,
}

impl StudyView {
    /// The best complete value so far after each trial, by trial number.
    pub fn best_so_far(&self) -> Vec<Option<f64>> {
        let mut best: Option<f64> = None;
        self.trials
            .iter()
            .map(|t| {
                if let (Some(v), "complete") = (t.value.filter(|v| v.is_finite()), t.state) {
                    let better = best.is_none_or(|b| if self.maximize { v > b } else { v < b });
                    if better {
                        best = Some(v);
                    }
                }
                best
            })
            .collect()
    }
}

/// Reads the study `id` found at `found`; `run_id` names a trial's run directory on the
/// dashboard, if it has one.
pub fn read(id: &str, found: &FoundStudy, run_id: &dyn Fn(&Path) -> Option<String>) -> StudyView {
    let study = Study::load(&found.dir.join(RESOLVED));
    let (name, objective, maximize) = match &study {
        Ok(s) => (
            s.name.clone(),
            serde_json::to_value(s.section.objective)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
            s.section.objective.maximize(),
        ),
        Err(_) => (crate::scan::study_name(&found.dir), "?".into(), true),
    };
    let mut view = StudyView {
        id: id.to_string(),
        name,
        objective,
        maximize,
        trials: Vec::new(),
        params: Vec::new(),
        importance: Vec::new(),
        intermediate: Vec::new(),
        error: study.as_ref().err().map(|e| e.to_string()),
    };
    let Some(storage) = &found.storage else {
        view.error = Some(format!(
            "{}: no study.db here; pass the PostgreSQL URL its workers used",
            found.dir.display()
        ));
        return view;
    };
    let read = Store::open_read_only(storage).and_then(|s| Ok((s.trials()?, s.reports()?)));
    let (trials, reports) = match read {
        Ok(r) => r,
        Err(e) => {
            view.error = Some(e.to_string());
            return view;
        }
    };
    view.trials = trials.iter().map(|t| row(t, &found.dir, run_id)).collect();
    let mut keys: Vec<String> = trials
        .iter()
        .flat_map(|t| t.point.keys().cloned())
        .collect();
    keys.sort();
    keys.dedup();
    view.importance = importance(&view.trials, &keys);
    view.params = keys;
    view.intermediate = trials
        .iter()
        .filter_map(|t| {
            let r = reports.get(&t.id)?;
            let values = r.values().map(|v| Some(*v).filter(|v| v.is_finite()));
            Some((
                t.id,
                t.state.name(),
                r.keys().copied().collect(),
                values.collect(),
            ))
        })
        .collect();
    view
}

fn row(t: &Trial, dir: &Path, run_id: &dyn Fn(&Path) -> Option<String>) -> TrialRow {
    TrialRow {
        id: t.id,
        state: t.state.name(),
        value: t.value,
        last_step: t.last.map(|(s, _)| s),
        params: t
            .point
            .iter()
            .map(|(k, v)| (k.clone(), toml_to_json(v)))
            .collect(),
        reason: t.reason.clone().unwrap_or_default(),
        run: run_id(&trial_dir(dir, t.id)),
    }
}

fn toml_to_json(v: &toml::Value) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// Each parameter's importance over the complete trials: Spearman's |rho| between its values
/// and the objective (for a categorical one, the correlation ratio eta of the objective's ranks
/// across its categories), normalised to sum to 1. Not Optuna's fANOVA or PED-ANOVA: a rank
/// measure needs no forest and no seed, and a log-scaled parameter needs no special case.
pub fn importance(trials: &[TrialRow], keys: &[String]) -> Vec<(String, f64)> {
    let done: Vec<&TrialRow> = trials
        .iter()
        .filter(|t| t.state == "complete" && t.value.is_some_and(f64::is_finite))
        .collect();
    let objective: Vec<f64> = done.iter().filter_map(|t| t.value).collect();
    let ranked = ranks(&objective);
    let mut out: Vec<(String, f64)> = keys
        .iter()
        .map(|k| {
            let values: Vec<Option<&serde_json::Value>> =
                done.iter().map(|t| t.params.get(k)).collect();
            let numbers: Option<Vec<f64>> =
                values.iter().map(|v| v.and_then(|v| v.as_f64())).collect();
            let score = match numbers {
                Some(x) => pearson(&ranks(&x), &ranked).abs(),
                None => eta(&values, &ranked),
            };
            (k.clone(), if score.is_finite() { score } else { 0.0 })
        })
        .collect();
    let total: f64 = out.iter().map(|(_, s)| s).sum();
    if total > 0.0 {
        out.iter_mut().for_each(|(_, s)| *s /= total);
    }
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

/// Ranks from 1, ties sharing their mean rank (as `scipy.stats.rankdata`).
pub fn ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut out = vec![0.0; x.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && x[order[j + 1]] == x[order[i]] {
            j += 1;
        }
        let mean = (i + j) as f64 / 2.0 + 1.0;
        order[i..=j].iter().for_each(|&k| out[k] = mean);
        i = j + 1;
    }
    out
}

/// Pearson's correlation; NaN when either side is constant or shorter than 2.
pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

/// The correlation ratio eta of `y` across the categories in `x`.
fn eta(x: &[Option<&serde_json::Value>], y: &[f64]) -> f64 {
    let mut groups: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (c, v) in x.iter().zip(y) {
        let key = c.map_or_else(|| "null".into(), |c| c.to_string());
        groups.entry(key).or_default().push(*v);
    }
    let n = y.len() as f64;
    let mean = y.iter().sum::<f64>() / n;
    let total: f64 = y.iter().map(|v| (v - mean).powi(2)).sum();
    let between: f64 = groups
        .values()
        .map(|g| {
            let m = g.iter().sum::<f64>() / g.len() as f64;
            g.len() as f64 * (m - mean).powi(2)
        })
        .sum();
    (between / total).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(id: i64, value: f64, lr: f64, opt: &str) -> TrialRow {
        TrialRow {
            id,
            state: "complete",
            value: Some(value),
            last_step: Some(3),
            params: [
                ("train.lr".to_string(), serde_json::json!(lr)),
                ("optim.name".to_string(), serde_json::json!(opt)),
            ]
            .into(),
            reason: String::new(),
            run: None,
        }
    }

    #[test]
    fn ranks_share_ties_as_scipy_does() {
        // scipy.stats.rankdata([3, 1, 4, 1, 5]) == [3, 1.5, 4, 1.5, 5]
        assert_eq!(ranks(&[3.0, 1.0, 4.0, 1.0, 5.0]), [3.0, 1.5, 4.0, 1.5, 5.0]);
    }

    #[test]
    fn spearman_matches_scipy_on_a_fixed_sample() {
        // scipy.stats.spearmanr([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]).statistic == 0.8207826816681233
        let rho = pearson(
            &ranks(&[1.0, 2.0, 3.0, 4.0, 5.0]),
            &ranks(&[5.0, 6.0, 7.0, 8.0, 7.0]),
        );
        assert!((rho - 0.820_782_681_668_123_3).abs() < 1e-12, "{rho}");
    }

    #[test]
    fn the_parameter_that_orders_the_objective_ranks_first() {
        // The value rises with the learning rate; the optimiser alternates regardless.
        let trials: Vec<TrialRow> = (0..8)
            .map(|i| {
                let opt = if i % 2 == 0 { "sgd" } else { "adamw" };
                trial(i, 50.0 + i as f64, 1e-4 * 2f64.powi(i as i32), opt)
            })
            .collect();
        let keys = ["optim.name".to_string(), "train.lr".to_string()];
        let imp = importance(&trials, &keys);
        assert_eq!(imp[0].0, "train.lr");
        assert!(imp[0].1 > 0.8, "{imp:?}");
        assert!((imp.iter().map(|p| p.1).sum::<f64>() - 1.0).abs() < 1e-12);
    }
}
