//! The end of a run: the best epoch's checkpoint exported as a rekindle model file, and plots.

use std::collections::HashSet;
use std::path::PathBuf;

use burn::module::Module;
use burn::store::ModuleRecord;
use rekindle_model::{ModelMetadata, Preprocess};

use crate::catalog::prune::{self, LayerSparsity};
use crate::durable::dir::{Checkpoint, RunDir};
use crate::durable::{checksum, resume};
use crate::error::TrainError;
use crate::report::log::EpochRow;
use crate::report::plot;
use crate::run::ema;
use crate::run::trainee::Trainee;

/// What the export wrote.
#[derive(Debug)]
pub struct Exported {
    /// The epoch exported.
    pub epoch: usize,
    /// Its validation accuracy, in percent.
    pub accuracy: f64,
    /// Whether the weight average was exported (it beat the raw weights).
    pub averaged: bool,
    /// Zeros per layer of the exported model, when the run pruned.
    pub sparsity: Option<Vec<LayerSparsity>>,
    /// Plots written.
    pub plots: Vec<PathBuf>,
}

/// The epoch with the highest validation accuracy among those whose checkpoint is on disk and
/// verifies (and, when the run prunes, that are at the final sparsity from `prune_final` on),
/// and whether it is the weight average's (only when strictly better than the raw weights').
pub fn best_epoch(
    dir: &RunDir,
    epochs: &[EpochRow],
    prune_final: Option<usize>,
) -> Result<(usize, f64, bool), TrainError> {
    let checksummed = checksum::any(dir);
    let usable: HashSet<usize> = resume::on_disk(dir)
        .into_iter()
        .filter(|&e| resume::usable(dir, e, checksummed).is_ok())
        .collect();
    let best = |split: &str| {
        epochs
            .iter()
            .filter(|r| r.split == split)
            .filter(|r| prune_final.is_none_or(|f| r.epoch >= f))
            .filter(|r| usable.contains(&r.epoch))
            .fold((0, f64::MIN), |best, r| {
                if r.accuracy > best.1 {
                    (r.epoch, r.accuracy)
                } else {
                    best
                }
            })
    };
    let (raw, ema) = (best("valid"), best(ema::SPLIT));
    let (epoch, accuracy, averaged) = if ema.0 > 0 && ema.1 > raw.1 {
        (ema.0, ema.1, true)
    } else {
        (raw.0, raw.1, false)
    };
    if epoch == 0 {
        return Err(TrainError::Stopped(
            "no validation result with a checkpoint to export".into(),
        ));
    }
    Ok((epoch, accuracy, averaged))
}

/// Writes the best epoch of `epochs` as the run's model file (to [`RunDir::model_staging`]:
/// the run publishes it once its report is done), with `classes` and `preprocess` as its
/// metadata, then the plots. `model` gives the module structure the checkpoint fills.
pub fn export(
    dir: &RunDir,
    model: Trainee,
    epochs: &[EpochRow],
    prune_final: Option<usize>,
    classes: Vec<String>,
    preprocess: Preprocess,
) -> Result<Exported, TrainError> {
    let (epoch, accuracy, averaged) = best_epoch(dir, epochs, prune_final)?;
    let ckpt = dir.checkpoint(Checkpoint::Model, epoch);
    let record = ModuleRecord::load(&ckpt)
        .map_err(|e| TrainError::Stopped(format!("{}: {e}", ckpt.display())))?;
    let trained = model
        .try_load_record(record)
        .map_err(|e| TrainError::Stopped(format!("{}: {e}", ckpt.display())))?;
    let best = match (averaged, trained.ema) {
        (true, Some(ema)) => ema,
        _ => trained.net,
    };
    let sparsity = prune_final.map(|_| prune::sparsity(&best));
    let metadata = ModelMetadata::new(best.config(), classes, preprocess);
    rekindle_model::save_model(&dir.model_staging(), &best, &metadata)?;
    let plots = plot::plot_run(dir).unwrap_or_else(|e| {
        eprintln!("warning: no plots: {e}");
        Vec::new()
    });
    Ok(Exported {
        epoch,
        accuracy,
        averaged,
        sparsity,
        plots,
    })
}
