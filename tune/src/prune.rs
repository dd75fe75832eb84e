//! Pruners: whether a running trial, from the values it has reported per epoch so far, is
//! worth finishing. Each follows Optuna's rules for the pruner of the same name, so a study
//! ported from Optuna stops the same trials.

use std::collections::BTreeMap;

/// A trial's reported values: step -> objective, as its run reported them.
pub type Reports = BTreeMap<usize, f64>;

/// Optuna's `PercentilePruner` (and, at 50, its `MedianPruner`): prune a trial whose best value
/// so far is worse than the given percentile of the complete trials' values at its last step.
#[derive(Clone, Debug, PartialEq)]
pub struct Percentile {
    /// Which percentile of the complete trials a trial must reach (0-100; 50 is the median).
    pub percentile: f64,
    /// No pruning until this many trials are complete.
    pub startup_trials: usize,
    /// No pruning before this step.
    pub warmup_steps: usize,
    /// Judge every this many steps after the warm-up (a check with no report is postponed to
    /// the next report).
    pub interval_steps: usize,
    /// No pruning at a step where fewer complete trials reported.
    pub min_trials: usize,
}

impl Percentile {
    /// Optuna's `MedianPruner()` defaults.
    pub fn median() -> Self {
        Self {
            percentile: 50.0,
            startup_trials: 5,
            warmup_steps: 0,
            interval_steps: 1,
            min_trials: 1,
        }
    }

    /// Whether `trial` should stop now, judged against the `complete` trials' reports.
    pub fn prune(&self, maximize: bool, trial: &Reports, complete: &[&Reports]) -> bool {
        if complete.is_empty() || complete.len() < self.startup_trials {
            return false;
        }
        let Some((&step, _)) = trial.last_key_value() else {
            return false;
        };
        if step < self.warmup_steps || !self.judged_at(step, trial) {
            return false;
        }
        let finite = trial.values().copied().filter(|v| !v.is_nan());
        let best = if maximize {
            finite.reduce(f64::max)
        } else {
            finite.reduce(f64::min)
        };
        // Only NaN reported: the run diverged.
        let Some(best) = best else {
            return true;
        };
        let at_step: Vec<f64> = complete
            .iter()
            .filter_map(|r| r.get(&step).copied())
            .collect();
        if at_step.len() < self.min_trials {
            return false;
        }
        // The worse side of the distribution: for a maximised value, the upper percentile.
        let q = if maximize {
            100.0 - self.percentile
        } else {
            self.percentile
        };
        match nan_percentile(&at_step, q) {
            Some(p) if maximize => best < p,
            Some(p) => best > p,
            None => false,
        }
    }

    /// Whether `step` is the first report at or after the latest check point: checks fall at
    /// `warmup + k * interval`, and one without a report moves to the next report.
    fn judged_at(&self, step: usize, trial: &Reports) -> bool {
        let interval = self.interval_steps.max(1);
        let check = (step - self.warmup_steps) / interval * interval + self.warmup_steps;
        let before = trial.range(..step).next_back().map(|(&s, _)| s);
        before.is_none_or(|s| s < check)
    }
}

/// Optuna's `SuccessiveHalvingPruner` (asynchronous successive halving): at each rung's step
/// a trial goes on only if its value is in the top `1 / reduction_factor` of all values
/// recorded at that rung so far, its own included.
#[derive(Clone, Debug, PartialEq)]
pub struct Asha {
    /// Steps before the first rung; `None` is Optuna's "auto": the longest complete trial's
    /// last step / 100 (at least 1), and no pruning before a trial completes.
    pub min_resource: Option<usize>,
    /// Rung `k` ends at `min_resource * reduction_factor^(min_early_stopping_rate + k)`.
    pub reduction_factor: usize,
    /// Rungs skipped at the start.
    pub min_early_stopping_rate: u32,
    /// A rung promotes nobody until more than this many trials recorded a value there.
    pub bootstrap_count: usize,
}

impl Default for Asha {
    /// Optuna's `SuccessiveHalvingPruner()` defaults.
    fn default() -> Self {
        Self {
            min_resource: None,
            reduction_factor: 4,
            min_early_stopping_rate: 0,
            bootstrap_count: 0,
        }
    }
}

impl Asha {
    /// Whether `trial` should stop at its last report. Each rung it completes now appends its
    /// value to `rungs` (the caller stores them: other trials compete against them);
    /// `others` are every other trial's rung values, `longest_complete` the last step of the
    /// longest complete trial.
    pub fn prune(
        &self,
        maximize: bool,
        trial: &Reports,
        rungs: &mut Vec<f64>,
        others: &[&[f64]],
        longest_complete: Option<usize>,
    ) -> bool {
        let Some((&step, &value)) = trial.last_key_value() else {
            return false;
        };
        let min_resource = match (self.min_resource, longest_complete) {
            (Some(r), _) => r,
            (None, Some(last)) => (last / 100).max(1),
            (None, None) => return false,
        };
        loop {
            let rung = rungs.len();
            let exponent = self.min_early_stopping_rate + rung as u32;
            let end = self.reduction_factor.checked_pow(exponent);
            if end
                .and_then(|e| e.checked_mul(min_resource))
                .is_none_or(|end| step < end)
            {
                return false;
            }
            if value.is_nan() {
                return true;
            }
            let mut competing: Vec<f64> =
                others.iter().filter_map(|r| r.get(rung)).copied().collect();
            competing.push(value);
            rungs.push(value);
            if competing.len() <= self.bootstrap_count
                || !self.promotable(maximize, value, competing)
            {
                return true;
            }
        }
    }

    /// Whether `value` is among the best `1 / reduction_factor` of `competing` (the best one
    /// while fewer than `reduction_factor` compete).
    fn promotable(&self, maximize: bool, value: f64, mut competing: Vec<f64>) -> bool {
        let k = (competing.len() / self.reduction_factor).max(1);
        competing.sort_by(f64::total_cmp);
        if maximize {
            value >= competing[competing.len() - k]
        } else {
            value <= competing[k - 1]
        }
    }
}

/// Optuna's `HyperbandPruner`: successive halving in several brackets, bracket `b` starting
/// its rungs `b` steps of the reduction factor later; each trial is hashed into a bracket
/// (CRC-32 of `"{study}_{trial}"`, by the brackets' budgets) and competes with its own
/// bracket's trials only.
#[derive(Clone, Debug, PartialEq)]
pub struct Hyperband {
    /// Steps before the first rung of bracket 0.
    pub min_resource: usize,
    /// The longest a trial runs; `None` is Optuna's "auto": the longest complete trial's last
    /// step + 1, and no pruning before a trial completes.
    pub max_resource: Option<usize>,
    /// Rungs grow by this factor and keep this fraction.
    pub reduction_factor: usize,
    /// A rung promotes nobody until more than this many trials recorded a value there.
    pub bootstrap_count: usize,
    /// The study's name, hashed with the trial number to pick its bracket.
    pub study: String,
}

impl Hyperband {
    /// Optuna's `HyperbandPruner()` defaults, for the study named `study`.
    pub fn new(study: &str) -> Self {
        Self {
            min_resource: 1,
            max_resource: None,
            reduction_factor: 3,
            bootstrap_count: 0,
            study: study.to_string(),
        }
    }

    /// Each bracket's share of the trials (Optuna's trial allocation budgets), or nothing
    /// while the longest trial is unknown.
    fn budgets(&self, longest_complete: Option<usize>) -> Vec<u64> {
        let Some(max) = self.max_resource.or(longest_complete.map(|l| l + 1)) else {
            return Vec::new();
        };
        let rf = self.reduction_factor as f64;
        let ratio = max as f64 / self.min_resource as f64;
        let n = (ratio.ln() / rf.ln()).floor() + 1.0;
        if n.is_nan() || n < 1.0 {
            return Vec::new();
        }
        let n = n as u32;
        (0..n)
            .map(|b| {
                let s = n - 1 - b;
                let share = f64::from(n) * rf.powi(s as i32) / f64::from(s + 1);
                share.ceil() as u64
            })
            .collect()
    }

    /// The bracket of trial `id` among `budgets`.
    fn bracket(&self, budgets: &[u64], id: i64) -> usize {
        let total: u64 = budgets.iter().sum();
        let hash = crc32fast::hash(format!("{}_{id}", self.study).as_bytes());
        let mut n = u64::from(hash) % total.max(1);
        for (b, &budget) in budgets.iter().enumerate() {
            if n < budget {
                return b;
            }
            n -= budget;
        }
        budgets.len() - 1
    }

    /// Whether trial `id` should stop at its last report; its rung values are appended to
    /// `rungs`. `others` are the other trials' rung values by id.
    pub fn prune(
        &self,
        maximize: bool,
        id: i64,
        trial: &Reports,
        rungs: &mut Vec<f64>,
        others: &BTreeMap<i64, Vec<f64>>,
        longest_complete: Option<usize>,
    ) -> bool {
        let budgets = self.budgets(longest_complete);
        if budgets.is_empty() {
            return false;
        }
        let bracket = self.bracket(&budgets, id);
        let same: Vec<&[f64]> = others
            .iter()
            .filter(|(other, _)| **other != id && self.bracket(&budgets, **other) == bracket)
            .map(|(_, r)| r.as_slice())
            .collect();
        let halving = Asha {
            min_resource: Some(self.min_resource),
            reduction_factor: self.reduction_factor,
            min_early_stopping_rate: bracket as u32,
            bootstrap_count: self.bootstrap_count,
        };
        halving.prune(maximize, trial, rungs, &same, None)
    }
}

/// The study's pruner, deciding from every trial's reports and ASHA rungs: the one decision
/// both the trial processes (through the store) and the Optuna parity test make.
#[derive(Clone, Debug, PartialEq)]
pub enum Pruner {
    /// Never prunes (a NaN loss still stops a run, in the run itself).
    None,
    /// Median or another percentile.
    Percentile(Percentile),
    /// Asynchronous successive halving.
    Asha(Asha),
    /// Successive halving in brackets.
    Hyperband(Hyperband),
}

/// What the pruner sees of a study when a trial reports a step.
pub struct History<'a> {
    /// Every trial's reports so far, by trial id.
    pub reports: &'a BTreeMap<i64, Reports>,
    /// The ids of the complete trials.
    pub complete: &'a [i64],
    /// Every trial's ASHA rung values, by trial id; the deciding trial's grow in place.
    pub rungs: &'a mut BTreeMap<i64, Vec<f64>>,
}

impl Pruner {
    /// Whether trial `id` stops after its latest report (the objective is maximised when
    /// `maximize`). ASHA's rungs for it are updated in `history.rungs` even when the answer
    /// is ignored (a trial's last epoch is never pruned, but others compete with its rungs).
    pub fn decide(&self, maximize: bool, id: i64, history: History<'_>) -> bool {
        let empty = Reports::new();
        let own = history.reports.get(&id).unwrap_or(&empty);
        let complete: Vec<&Reports> = history
            .complete
            .iter()
            .filter_map(|t| history.reports.get(t))
            .collect();
        let longest = complete
            .iter()
            .filter_map(|r| r.last_key_value().map(|(s, _)| *s))
            .max();
        match self {
            Self::None => false,
            Self::Percentile(p) => p.prune(maximize, own, &complete),
            Self::Hyperband(h) => {
                let mut rungs = history.rungs.remove(&id).unwrap_or_default();
                let prune = h.prune(maximize, id, own, &mut rungs, history.rungs, longest);
                history.rungs.insert(id, rungs);
                prune
            }
            Self::Asha(a) => {
                let mut rungs = history.rungs.remove(&id).unwrap_or_default();
                let others: Vec<&[f64]> = history.rungs.values().map(Vec::as_slice).collect();
                let prune = a.prune(maximize, own, &mut rungs, &others, longest);
                history.rungs.insert(id, rungs);
                prune
            }
        }
    }
}

/// The `q`-th percentile (0-100) of the non-NaN values, interpolated linearly between the two
/// nearest ranks (numpy's default); `None` when every value is NaN.
fn nan_percentile(values: &[f64], q: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let pos = q / 100.0 * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    Some(v[lo] + (v[hi] - v[lo]) * (pos - lo as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reports(values: &[(usize, f64)]) -> Reports {
        values.iter().copied().collect()
    }

    /// Five complete trials with values 1..=5 at epochs 0..=9.
    fn five() -> Vec<Reports> {
        (1..=5)
            .map(|v| (0..10).map(|s| (s, v as f64)).collect())
            .collect()
    }

    #[test]
    fn the_median_pruner_stops_a_trial_below_the_median_and_keeps_one_at_it() {
        let done = five();
        let complete: Vec<&Reports> = done.iter().collect();
        let m = Percentile::median();
        assert!(m.prune(true, &reports(&[(0, 2.5)]), &complete));
        assert!(!m.prune(true, &reports(&[(0, 3.0)]), &complete));
        // Its best value so far counts, not its last.
        assert!(!m.prune(true, &reports(&[(0, 4.0), (1, 1.0)]), &complete));
        // Minimised: above the median is worse.
        assert!(m.prune(false, &reports(&[(0, 3.5)]), &complete));
        assert!(!m.prune(false, &reports(&[(0, 3.0)]), &complete));
        // Before five trials are complete, nothing is pruned.
        assert!(!m.prune(true, &reports(&[(0, -100.0)]), &complete[..4]));
    }

    #[test]
    fn a_diverged_trial_is_pruned_and_a_nan_among_values_is_ignored() {
        let done = five();
        let complete: Vec<&Reports> = done.iter().collect();
        let m = Percentile::median();
        assert!(m.prune(true, &reports(&[(0, f64::NAN), (1, f64::NAN)]), &complete));
        assert!(!m.prune(true, &reports(&[(0, 4.0), (1, f64::NAN)]), &complete));
    }

    #[test]
    fn percentiles_interpolate_between_ranks_and_mirror_for_a_maximised_value() {
        assert_eq!(nan_percentile(&[4.0, 1.0, 3.0, 2.0], 50.0), Some(2.5));
        assert_eq!(nan_percentile(&[4.0, 1.0, 3.0, 2.0], 75.0), Some(3.25));
        assert_eq!(nan_percentile(&[f64::NAN, 2.0], 50.0), Some(2.0));
        assert_eq!(nan_percentile(&[f64::NAN], 50.0), None);
        let done: Vec<Reports> = (1..=4).map(|v| reports(&[(0, v as f64)])).collect();
        let complete: Vec<&Reports> = done.iter().collect();
        // Keep the top 25% of a maximised value: the bar is the 75th percentile, 3.25.
        let top = Percentile {
            percentile: 25.0,
            startup_trials: 0,
            ..Percentile::median()
        };
        assert!(top.prune(true, &reports(&[(0, 3.2)]), &complete));
        assert!(!top.prune(true, &reports(&[(0, 3.3)]), &complete));
    }

    #[test]
    fn checks_fall_after_the_warmup_every_interval_and_wait_for_a_report() {
        let done = five();
        let complete: Vec<&Reports> = done.iter().collect();
        let p = Percentile {
            warmup_steps: 2,
            interval_steps: 3,
            ..Percentile::median()
        };
        let judged = |steps: &[usize]| {
            let trial: Reports = steps.iter().map(|&s| (s, 0.0)).collect();
            p.prune(true, &trial, &complete)
        };
        let every: Vec<usize> = (0..10).collect();
        let checked: Vec<usize> = (0..10).filter(|&k| judged(&every[..=k])).collect();
        assert_eq!(checked, [2, 5, 8]);
        // Nothing reported at epochs 2-5: the check due at 5 happens at 6, the next report.
        assert!(judged(&[0, 1, 6]));
        assert!(!judged(&[0, 1, 6, 7]));
    }

    /// A trial that reports `steps` with `value` at the last.
    fn at(step: usize, value: f64) -> Reports {
        (1..step).map(|s| (s, 0.0)).chain([(step, value)]).collect()
    }

    #[test]
    fn asha_promotes_the_best_fraction_of_each_rung_and_prunes_the_rest() {
        let asha = Asha {
            min_resource: Some(1),
            reduction_factor: 2,
            ..Asha::default()
        };
        // Alone at rung 0 (step 1): the best of one; rung 1 ends at step 2, not reached yet.
        let mut a = Vec::new();
        assert!(!asha.prune(true, &at(1, 0.5), &mut a, &[], None));
        assert_eq!(a, [0.5]);
        // Two at rung 0: only the better half goes on.
        let (mut b, mut c) = (Vec::new(), Vec::new());
        assert!(asha.prune(true, &at(1, 0.4), &mut b, &[&a], None));
        assert!(!asha.prune(true, &at(1, 0.6), &mut c, &[&a, &b], None));
        // Minimised, the lower half goes on: with [0.5, 0.4, 0.6] and itself, the best two.
        let mut d = Vec::new();
        assert!(asha.prune(false, &at(1, 0.55), &mut d, &[&a, &b, &c], None));
        assert!(!asha.prune(false, &at(1, 0.3), &mut Vec::new(), &[&a, &b, &c], None));
        // A trial first reporting at step 4 completes rungs 0, 1 and 2 at once.
        let mut e = Vec::new();
        assert!(!asha.prune(true, &at(4, 0.9), &mut e, &[&a, &b, &c], None));
        assert_eq!(e, [0.9, 0.9, 0.9]);
    }

    #[test]
    fn asha_waits_for_auto_resource_bootstrap_and_prunes_nan_at_a_rung() {
        let auto = Asha {
            reduction_factor: 2,
            ..Asha::default()
        };
        // "auto" before any trial is complete: nothing is pruned, nothing recorded.
        let mut r = Vec::new();
        assert!(!auto.prune(true, &at(3, f64::NAN), &mut r, &[], None));
        assert!(r.is_empty());
        // The longest complete trial ran 250 steps: the first rung ends at step 2.
        assert!(!auto.prune(true, &at(1, f64::NAN), &mut r, &[], Some(250)));
        assert!(auto.prune(true, &at(2, f64::NAN), &mut r, &[], Some(250)));
        let boot = Asha {
            min_resource: Some(1),
            reduction_factor: 2,
            bootstrap_count: 2,
            ..Asha::default()
        };
        // Until more than two trials recorded a value at a rung, reaching it stops a trial.
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        assert!(boot.prune(true, &at(1, 0.9), &mut a, &[], None));
        assert!(boot.prune(true, &at(1, 0.8), &mut b, &[&a], None));
        assert!(!boot.prune(true, &at(1, 0.95), &mut c, &[&a, &b], None));
    }

    #[test]
    fn too_few_complete_reports_at_the_epoch_decide_nothing() {
        let done = five();
        let complete: Vec<&Reports> = done.iter().collect();
        let p = Percentile {
            min_trials: 6,
            ..Percentile::median()
        };
        assert!(!p.prune(true, &reports(&[(0, -1.0)]), &complete));
        // No complete trial reported at epoch 12.
        let m = Percentile::median();
        assert!(!m.prune(true, &reports(&[(12, -1.0)]), &complete));
    }
}
