//! `rekindle-train run`: one training run from a config file and command-line overrides.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use rekindle_model::{Arch, Backend, Stage};

use super::parse::{parse_kind, parse_name, parse_optimizer, parse_schedule, parse_strategy};
use crate::catalog::optim::OptimizerKind;
use crate::catalog::prune;
use crate::catalog::schedule::ScheduleKind;
use crate::config::{DataKind, ModelSource, Strategy};
use crate::durable::dir::RunDir;
use crate::run::summary;
use crate::{TrainConfig, train};

/// `run`'s options: a config, or a run to resume, and overrides of its keys.
#[derive(Args)]
pub struct RunArgs {
    /// TOML config; every field has a default (`--print-config` shows them).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Continue the run in this directory from its last complete checkpoint.
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "config")]
    resume: Option<PathBuf>,
    /// Print the effective config and exit.
    #[arg(long)]
    print_config: bool,
    /// Overrides run.backend.
    #[arg(long, long_help = rekindle_model::backend::HELP, value_parser = parse_name::<Backend>)]
    backend: Option<Backend>,
    /// Device indices, comma-separated; more than one trains data-parallel (run.devices).
    #[arg(long, value_delimiter = ',')]
    devices: Option<Vec<usize>>,
    /// Run directory (run.dir).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Starting weights: `random`, a rekindle model file or a .pth/.safetensors/.onnx
    /// (model.source).
    #[arg(long)]
    model: Option<String>,
    /// Architecture for random init, or to check a file against (model.arch).
    #[arg(long, value_parser = parse_name::<Arch>)]
    arch: Option<Arch>,
    /// Dataset folder or manifest file (data.root; replaces data.roots).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Dataset layout: folder, manifest (a .csv or .jsonl listing) or fashion-mnist (data.kind).
    #[arg(long, value_parser = parse_kind)]
    data_kind: Option<DataKind>,
    /// Epochs (train.epochs).
    #[arg(long)]
    epochs: Option<usize>,
    /// Images per step (train.batch_size).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Learning rate (train.lr).
    #[arg(long)]
    lr: Option<f64>,
    /// full, feature-extraction, partial or gradual (train.strategy).
    #[arg(long, value_parser = parse_strategy)]
    strategy: Option<Strategy>,
    /// Last frozen stage for `partial`: stem, layer1..layer4 (train.freeze_to).
    #[arg(long, value_parser = parse_name::<Stage>)]
    freeze_to: Option<Stage>,
    /// Seed of every random choice (train.seed).
    #[arg(long)]
    seed: Option<u64>,
    /// sgd, adam, adamw, rmsprop, adagrad, with PyTorch's defaults for its options unless the
    /// config's [optim] names the same one (optim.name).
    #[arg(long, value_parser = parse_optimizer)]
    optimizer: Option<OptimizerKind>,
    /// Learning-rate schedule (schedule.name): constant, step, multistep, exponential,
    /// inverse-time, polynomial, cosine, cosine-restarts, one-cycle, plateau.
    #[arg(long, value_parser = parse_schedule)]
    schedule: Option<ScheduleKind>,
    /// Warmup length in the schedule's unit (schedule.warmup).
    #[arg(long)]
    warmup: Option<usize>,
}

/// The config `a` asks for: its file (or the resumed run's, or the defaults) with the
/// command line's overrides, validated.
fn effective_config(a: &RunArgs) -> Result<TrainConfig> {
    let mut c = match (&a.config, &a.resume) {
        (Some(path), _) => TrainConfig::from_file(path)?,
        (None, Some(dir)) => TrainConfig::from_file(&RunDir::new(dir).config())
            .with_context(|| format!("{} is not a run directory", dir.display()))?,
        (None, None) => TrainConfig::default(),
    };
    if let Some(dir) = &a.resume {
        c.run.dir = dir.clone();
    }
    if let Some(v) = a.backend {
        c.run.backend = v;
    }
    if let Some(v) = &a.devices {
        c.run.devices = v.clone();
    }
    if let Some(v) = &a.run_dir {
        c.run.dir = v.clone();
    }
    if let Some(v) = &a.model {
        c.model.source = ModelSource::from(v.clone());
    }
    if let Some(v) = a.arch {
        c.model.arch = Some(v);
    }
    if let Some(v) = &a.data {
        // The command line names the whole dataset: the config's extra roots go with its root.
        c.data.root = v.clone();
        c.data.roots.clear();
    }
    if let Some(v) = a.data_kind {
        c.data.kind = v;
    }
    if let Some(v) = a.epochs {
        c.train.epochs = v;
    }
    if let Some(v) = a.batch_size {
        c.train.batch_size = v;
    }
    if let Some(v) = a.lr {
        c.train.lr = v;
    }
    if let Some(v) = a.strategy {
        c.train.strategy = v;
    }
    if let Some(v) = a.freeze_to {
        c.train.freeze_to = v;
    }
    if let Some(v) = a.seed {
        c.train.seed = v;
    }
    if let Some(v) = a.optimizer {
        c.optim = c.optim.switched_to(v);
    }
    if let Some(v) = a.schedule {
        c.schedule.name = v;
    }
    if let Some(v) = a.warmup {
        c.schedule.warmup = v;
    }
    c.validate()?;
    Ok(c)
}

/// Trains (or resumes) the run and prints its summary.
pub fn run(a: RunArgs) -> Result<()> {
    let cfg = effective_config(&a)?;
    if a.print_config {
        print!("{}", cfg.to_toml());
        return Ok(());
    }
    let out = train(&cfg, a.resume.is_some())?;
    println!("\n{}", summary(&out));
    if let Some(layers) = &out.sparsity {
        println!("sparsity of the exported model:\n{}", prune::report(layers));
    }
    println!(
        "run directory {}: {} ({:.0} s)",
        out.dir.display(),
        RunDir::CONTENTS,
        out.seconds
    );
    Ok(())
}
