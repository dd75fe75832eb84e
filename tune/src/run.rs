//! One trial, in its own process: an ordinary training run in the trial's directory, resumed
//! from its checkpoint when it has one, reporting each epoch to the store and asking the
//! pruner whether to go on.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rekindle_train::durable::dir::RunDir;
use rekindle_train::report::log::{EpochRow, read_epochs};
use rekindle_train::{TrainConfig, TrainError, Watch, train_watched};

use crate::error::TuneError;
use crate::prune::History;
use crate::store::{Store, TrialState};
use crate::study::{PrunerName, Study};

/// Runs trial `id` of `study` for `worker` from the config it wrote to `config`, and records
/// how it ended in `store`; Ctrl-C leaves it running (unrecorded), for its worker to give back.
/// If another worker took the trial over meanwhile, this copy stops and records nothing.
pub fn run_trial(
    study: &Study,
    store: Store,
    id: i64,
    worker: &str,
    config: &Path,
) -> Result<TrialState, TuneError> {
    let cfg = TrainConfig::from_file(config).map_err(|e| TuneError::Study {
        path: config.to_path_buf(),
        message: e.to_string(),
    })?;
    let dir = RunDir::new(&cfg.run.dir);
    let last = dir.last_checkpoint();
    let finish_from_log = |store: &Store, state: TrialState, reason: Option<&str>| {
        let rows = read_epochs(&dir).unwrap_or_default();
        let value = best(study, &rows);
        store.finish(id, worker, state, value, reason)
    };
    if last.is_some_and(|e| e >= cfg.train.epochs) {
        // Killed after its last checkpoint, before it was recorded: every epoch trained.
        finish_from_log(&store, TrialState::Complete, None)?;
        return Ok(TrialState::Complete);
    }
    let storage = store.storage().clone();
    let failed = Arc::new(Mutex::new(None));
    let watch = Pruning {
        study: study.clone(),
        store,
        id,
        worker: worker.to_string(),
        epochs: cfg.train.epochs,
        failed: failed.clone(),
    };
    let result = train_watched(&cfg, last.is_some(), Some(Box::new(watch)));
    let store = Store::open(&storage)?;
    let failed = failed.lock().unwrap_or_else(|e| e.into_inner()).take();
    let (state, reason) = match result {
        Ok(_) => (TrialState::Complete, None),
        Err(TrainError::Halted(_)) if failed.is_some() => (TrialState::Failed, failed),
        Err(TrainError::Halted(reason)) => (TrialState::Pruned, Some(reason)),
        Err(TrainError::Diverged(reason)) => {
            // A NaN loss prunes at once: the epoch it happened in reports NaN.
            let rows = read_epochs(&dir).unwrap_or_default();
            let epoch = rows.iter().map(|r| r.epoch).max().unwrap_or(0) + 1;
            store.report(id, epoch, f64::NAN)?;
            (TrialState::Pruned, Some(reason))
        }
        Err(TrainError::Interrupted(_)) => return Ok(TrialState::Running),
        Err(e) => (TrialState::Failed, Some(e.to_string())),
    };
    finish_from_log(&store, state, reason.as_deref())?;
    Ok(state)
}

/// The trial's value: its best epoch's objective, NaN epochs aside.
pub fn best(study: &Study, rows: &[EpochRow]) -> Option<f64> {
    let objective = study.section.objective;
    let values = rows
        .iter()
        .filter(|r| r.split == "valid")
        .map(|r| objective.of(r))
        .filter(|v| !v.is_nan());
    if objective.maximize() {
        values.reduce(f64::max)
    } else {
        values.reduce(f64::min)
    }
}

/// The trial's [`Watch`]: reports each epoch and asks the study's pruner.
struct Pruning {
    study: Study,
    store: Store,
    id: i64,
    worker: String,
    epochs: usize,
    /// Why the trial could not be recorded, when the store failed.
    failed: Arc<Mutex<Option<String>>>,
}

impl Watch for Pruning {
    fn epoch(&mut self, row: &EpochRow) -> Option<String> {
        match self.decide(row) {
            Ok(prune) => prune.then(|| {
                format!(
                    "pruned after epoch {} ({} pruner)",
                    row.epoch,
                    match self.study.section.pruner {
                        PrunerName::Median => "median",
                        PrunerName::Asha => "asha",
                        PrunerName::Hyperband => "hyperband",
                        _ => "the",
                    }
                )
            }),
            Err(e) => {
                // The store is unreachable: stop rather than train on unrecorded.
                let message = e.to_string();
                *self.failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(message.clone());
                Some(message)
            }
        }
    }
}

impl Pruning {
    /// Reports `row` and whether the pruner stops the trial there. The last epoch is never
    /// pruned (the trial is complete), but ASHA still records its rungs for the others.
    fn decide(&mut self, row: &EpochRow) -> Result<bool, TuneError> {
        let (study, store, id) = (&self.study, &self.store, self.id);
        if !store.holds(id, &self.worker)? {
            return Err(TuneError::Study {
                path: store.storage().label(),
                message: format!("trial {id} was taken over by another worker"),
            });
        }
        let objective = study.section.objective;
        store.report(id, row.epoch, objective.of(row))?;
        let complete: Vec<i64> = store
            .trials()?
            .iter()
            .filter(|t| t.state == TrialState::Complete)
            .map(|t| t.id)
            .collect();
        let reports = store.reports()?;
        let mut rungs = store.rungs()?;
        let history = History {
            reports: &reports,
            complete: &complete,
            rungs: &mut rungs,
        };
        let prune = study
            .build_pruner()
            .decide(objective.maximize(), id, history);
        if let Some(own) = rungs.get(&id) {
            store.record_rungs(id, own)?;
        }
        Ok(prune && row.epoch < self.epochs)
    }
}
