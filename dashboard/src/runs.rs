//! A run directory as the dashboard shows it: one row of the runs table, and its curves,
//! config, checkpoints and evaluation report, read with train's own readers. A run may be
//! writing while this reads: a log's last line counts only once its newline is there.

use std::path::Path;

use serde::Serialize;

use rekindle_train::TrainConfig;
use rekindle_train::durable::dir::RunDir;
use rekindle_train::durable::{ending, lock};
use rekindle_train::report::log::{EpochRow, parse_epochs, parse_steps};
use rekindle_train::run::strategy;

use crate::lttb::lttb;

/// One row of the runs table.
#[derive(Clone, Debug, Serialize)]
pub struct RunRow {
    /// The run's id (its path under the roots).
    pub id: String,
    /// running, finished, interrupted, halted or failed.
    pub state: &'static str,
    /// Why it stopped, when it failed or was halted.
    pub message: String,
    /// The architecture (or `?` when the config does not read).
    pub arch: String,
    /// full, partial, gradual or feature-extraction.
    pub strategy: String,
    /// The optimiser's name.
    pub optimiser: String,
    /// The backend it trains on.
    pub backend: String,
    /// Best validation top-1 accuracy so far, in percent.
    pub best: Option<f64>,
    /// The epoch that reached it.
    pub best_epoch: Option<usize>,
    /// Epochs with a validation result.
    pub epochs: usize,
    /// Epochs the config asks for.
    pub epochs_planned: Option<usize>,
    /// Seconds spent training and validating (the epoch log's sum).
    pub seconds: f64,
    /// Steps logged.
    pub steps: usize,
}

/// The config a run directory keeps, or why it does not read.
pub fn config(dir: &Path) -> Result<TrainConfig, String> {
    let path = RunDir::new(dir).config();
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    TrainConfig::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The whole lines of a log being appended to (empty if it is not there yet).
pub fn whole_lines(path: &Path) -> String {
    let mut text = std::fs::read_to_string(path).unwrap_or_default();
    text.truncate(text.rfind('\n').map_or(0, |i| i + 1));
    text
}

/// The run's epoch rows.
pub fn epochs(dir: &Path) -> Vec<EpochRow> {
    parse_epochs(&whole_lines(&RunDir::new(dir).epochs_csv()))
}

/// The run's step rows: (global step, epoch, loss, accuracy, lr).
pub fn steps(dir: &Path) -> Vec<[f64; 5]> {
    parse_steps(&whole_lines(&RunDir::new(dir).steps_csv()))
}

/// Where the run stands: running while a process holds its lock, else how its last process
/// ended; a run killed outright left no record and no model: interrupted.
pub fn state(dir: &Path) -> (&'static str, String) {
    state_in(dir, lock::HeldLocks::read().as_ref())
}

/// [`state`], asking `locks` (one snapshot for many runs) whether the run's lock is held.
pub fn state_in(dir: &Path, locks: Option<&lock::HeldLocks>) -> (&'static str, String) {
    let run = RunDir::new(dir);
    if locks.is_some_and(|l| l.holds(&run)) {
        return ("running", String::new());
    }
    match ending::read(&run) {
        Some(e) => {
            let name = match e.ending {
                ending::Ending::Finished => "finished",
                ending::Ending::Interrupted => "interrupted",
                ending::Ending::Halted => "halted",
                ending::Ending::Failed => "failed",
            };
            (name, e.message)
        }
        None if run.model().is_file() => ("finished", String::new()),
        None => ("interrupted", String::new()),
    }
}

/// A config's value as it is written in TOML (`"sgd"`, not `Sgd`).
fn named<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".into(),
    }
}

/// The row of the run at `dir` (`locks`: see [`state_in`]).
pub fn row(id: &str, dir: &Path, locks: Option<&lock::HeldLocks>) -> RunRow {
    let (state, message) = state_in(dir, locks);
    let epochs = epochs(dir);
    let best = epochs
        .iter()
        .filter(|r| r.split == "valid" && r.accuracy.is_finite())
        .max_by(|a, b| a.accuracy.total_cmp(&b.accuracy));
    let cfg = config(dir).ok();
    let text = |f: &dyn Fn(&TrainConfig) -> String| cfg.as_ref().map_or("?".into(), f);
    RunRow {
        id: id.to_string(),
        state,
        message,
        arch: text(&|c| match c.model.arch {
            Some(a) => a.to_string(),
            None => named(&c.model.source),
        }),
        strategy: text(&|c| named(&c.train.strategy)),
        optimiser: text(&|c| named(&c.optim.name)),
        backend: text(&|c| c.run.backend.to_string()),
        best: best.map(|r| r.accuracy),
        best_epoch: best.map(|r| r.epoch),
        epochs: epochs.iter().filter(|r| r.split == "valid").count(),
        epochs_planned: cfg.as_ref().map(|c| c.train.epochs),
        seconds: epochs
            .iter()
            .map(|r| r.seconds)
            .filter(|s| s.is_finite())
            .sum(),
        steps: steps(dir).len(),
    }
}

/// A run's curves for the charts: per step (downsampled to `keep` points a series) and per
/// epoch and split, as columns (uPlot's data layout).
#[derive(Clone, Debug, Serialize)]
pub struct Curves {
    /// Steps logged in all (before downsampling).
    pub steps: usize,
    /// `[x, loss]`, `[x, accuracy]`, `[x, lr]`: each its own x, downsampled on its own.
    pub step_loss: [Vec<f64>; 2],
    /// Training accuracy per step.
    pub step_accuracy: [Vec<f64>; 2],
    /// Learning rate per step.
    pub step_lr: [Vec<f64>; 2],
    /// Epoch numbers with a validation result.
    pub epoch: Vec<f64>,
    /// Per epoch: train loss, valid loss, train accuracy, valid accuracy, valid top-5.
    pub train_loss: Vec<Option<f64>>,
    /// Validation loss per epoch.
    pub valid_loss: Vec<Option<f64>>,
    /// Training accuracy per epoch.
    pub train_accuracy: Vec<Option<f64>>,
    /// Validation accuracy per epoch.
    pub valid_accuracy: Vec<Option<f64>>,
    /// Validation top-5 per epoch.
    pub valid_top5: Vec<Option<f64>>,
}

/// The curves of the run at `dir`, each step series at most `keep` points.
pub fn curves(dir: &Path, keep: usize) -> Curves {
    curves_of(&steps(dir), &epochs(dir), keep)
}

/// The curves of step and epoch rows already read.
pub fn curves_of(steps: &[[f64; 5]], rows: &[EpochRow], keep: usize) -> Curves {
    let series = |col: usize| {
        let points: Vec<(f64, f64)> = steps.iter().map(|r| (r[0], r[col])).collect();
        let kept = lttb(&points, keep);
        [
            kept.iter().map(|p| p.0).collect(),
            kept.iter().map(|p| p.1).collect(),
        ]
    };
    let mut epoch: Vec<usize> = rows.iter().map(|r| r.epoch).collect();
    epoch.sort_unstable();
    epoch.dedup();
    let pick = |split: &str, f: fn(&EpochRow) -> f64| -> Vec<Option<f64>> {
        epoch
            .iter()
            .map(|e| {
                rows.iter()
                    .rev()
                    .find(|r| r.epoch == *e && r.split == split)
                    .map(f)
                    .filter(|v| v.is_finite())
            })
            .collect()
    };
    Curves {
        steps: steps.len(),
        step_loss: series(2),
        step_accuracy: series(3),
        step_lr: series(4),
        train_loss: pick("train", |r| r.loss),
        valid_loss: pick("valid", |r| r.loss),
        train_accuracy: pick("train", |r| r.accuracy),
        valid_accuracy: pick("valid", |r| r.accuracy),
        valid_top5: pick("valid", |r| r.top5),
        epoch: epoch.iter().map(|e| *e as f64).collect(),
    }
}

/// One phase of a run's plan, as the run page lists it.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseRow {
    /// First epoch, 1-based.
    pub first: usize,
    /// Last epoch, inclusive.
    pub last: usize,
    /// What trains (train's own wording: "full fine-tuning", "stem+layer1 frozen, ...").
    pub trains: String,
    /// Images per batch.
    pub batch_size: usize,
}

/// The phases the config plans (frozen stages and batch size), epochs with the same ones merged.
pub fn phases(cfg: &TrainConfig) -> Vec<PhaseRow> {
    let mut out: Vec<PhaseRow> = Vec::new();
    for p in strategy::phases(&cfg.train, false) {
        let trains = strategy::describe(p.depth);
        match out.last_mut() {
            Some(last) if last.trains == trains && last.batch_size == p.batch_size => {
                last.last = p.last
            }
            _ => out.push(PhaseRow {
                first: p.first,
                last: p.last,
                trains,
                batch_size: p.batch_size,
            }),
        }
    }
    out
}

/// The checkpoints on disk: (epoch, whole), whole when all three files of the epoch are.
pub fn checkpoints(dir: &Path) -> Vec<(usize, bool)> {
    let run = RunDir::new(dir);
    let mut epochs: Vec<usize> = std::fs::read_dir(run.checkpoints())
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            name.strip_prefix("model-")?
                .strip_suffix(".bpk")?
                .parse()
                .ok()
        })
        .collect();
    epochs.sort_unstable();
    epochs
        .into_iter()
        .map(|e| {
            use rekindle_train::durable::dir::Checkpoint;
            let whole = Checkpoint::ALL
                .iter()
                .all(|k| run.checkpoint(*k, e).is_file());
            (e, whole)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradual_unfreezing_lists_a_phase_per_stage_thawed() {
        let cfg = TrainConfig::from_toml(
            "[train]\nepochs = 5\nstrategy = \"gradual\"\nunfreeze_every = 2\n",
        )
        .unwrap();
        let phases = phases(&cfg);
        assert_eq!(
            phases.iter().map(|p| (p.first, p.last)).collect::<Vec<_>>(),
            [(1, 2), (3, 4), (5, 5)]
        );
        assert_eq!(phases[0].trains, strategy::describe(usize::MAX));
        let full = TrainConfig::from_toml("[train]\nepochs = 3\n").unwrap();
        assert_eq!(phases_of(&full), [(1, 3, "full fine-tuning".to_string())]);
    }

    fn phases_of(cfg: &TrainConfig) -> Vec<(usize, usize, String)> {
        phases(cfg)
            .into_iter()
            .map(|p| (p.first, p.last, p.trains))
            .collect()
    }
}
