//! A training run as a pipeline of named steps, data flowing one way:
//! config -> [`plan::Plan`] (pure) -> [`start::open`] (the starting network) -> one
//! [`phase::Launcher::launch`] per phase -> [`export::export`] (the best epoch as a model
//! file). Everything it writes is named by [`RunDir`]; a run resumes from its directory.
//! What keeps that directory whole through a crash (the lock, atomic writes, checksums, the
//! resume) is [`crate::durable`]'s; the model file is published last, so `model.bpk` means the
//! run finished.

pub mod ema;
pub mod export;
pub mod lr_find;
pub mod phase;
pub mod plan;
pub mod start;
pub mod strategy;
pub mod trainee;
pub mod watch;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use burn::tensor::Device;
use rekindle_model::{Preprocess, load_model};

use crate::catalog::loss::Loss;
use crate::catalog::prune::LayerSparsity;
use crate::config::{Strategy, TrainConfig};
use crate::data::dataset::{Dataset, skip_warning};
use crate::durable::dir::RunDir;
use crate::durable::lock::RunLock;
use crate::durable::{atomic, ending, fault, resume};
use crate::error::TrainError;
use crate::eval::tta::Tta;
use crate::eval::{self, Evaluation};
use crate::report::log::{EpochRow, read_epochs};
use crate::report::progress::Shared;
use crate::run::ema::EmaWatch;
use crate::run::phase::{Launcher, PhaseEnd};
use crate::run::plan::{Plan, effective_batch};
use crate::run::trainee::Trainee;
use crate::run::watch::Watch;

/// What a finished run produced.
#[derive(Debug)]
pub struct Outcome {
    /// The run directory.
    pub dir: PathBuf,
    /// The best model, as a rekindle model file.
    pub model: PathBuf,
    /// Epoch of the best validation accuracy.
    pub best_epoch: usize,
    /// That accuracy, in percent.
    pub best_accuracy: f64,
    /// Whether the exported weights are the weight average (it beat the raw weights).
    pub averaged: bool,
    /// Every epoch's train and validation row.
    pub epochs: Vec<EpochRow>,
    /// Wall time of this process's part of the run.
    pub seconds: f64,
    /// Training images seen per epoch, and validation images.
    pub sizes: (usize, usize),
    /// Plots written.
    pub plots: Vec<PathBuf>,
    /// Zeros per layer of the exported model, when the run pruned.
    pub sparsity: Option<Vec<LayerSparsity>>,
    /// The exported model's evaluation on the validation split (files in `RUN/eval`).
    pub report: Evaluation,
}

/// Runs (or, with `resume`, continues) the training `cfg` describes.
pub fn train(cfg: &TrainConfig, resume: bool) -> Result<Outcome, TrainError> {
    train_watched(cfg, resume, None)
}

/// [`train`], with `watch` told of every epoch's validation result; it may halt the run.
pub fn train_watched(
    cfg: &TrainConfig,
    resume: bool,
    watch: Option<Box<dyn Watch>>,
) -> Result<Outcome, TrainError> {
    cfg.validate()?;
    let dir = RunDir::new(&cfg.run.dir);
    let _lock = RunLock::acquire(&dir)?;
    ending::clear(&dir);
    let result = train_locked(cfg, resume, watch, &dir);
    ending::record(&dir, &result);
    result
}

/// [`train_watched`] once the run directory's lock is held.
fn train_locked(
    cfg: &TrainConfig,
    resume: bool,
    watch: Option<Box<dyn Watch>>,
    dir: &RunDir,
) -> Result<Outcome, TrainError> {
    let started = Instant::now();
    let run = Started::open(cfg, dir, resume)?;
    run.train_phases(cfg, dir, watch)?;
    run.publish(dir, started)
}

/// A run ready to train: everything its phases need, and what it publishes at the end.
struct Started {
    /// Epochs already trained (when resuming).
    done: usize,
    devices: Vec<Device>,
    data: Arc<Dataset>,
    plan: Plan,
    loss: Loss,
    model: Trainee,
    preprocess: Preprocess,
}

impl Started {
    /// Clears a dead process's temporary files, finds where a resumed run stands, writes the
    /// effective config and opens the data and the starting network.
    fn open(cfg: &TrainConfig, dir: &RunDir, resume: bool) -> Result<Self, TrainError> {
        // Held lock: any temporary file here is a dead process's.
        atomic::remove_leftovers(dir.path());
        atomic::remove_leftovers(&dir.checkpoints());
        let done = epochs_done(dir, cfg.train.epochs, resume)?;
        let devices = devices(cfg)?;
        atomic::write(&dir.config(), cfg.to_toml().as_bytes())
            .map_err(|e| TrainError::io(&dir.config(), e))?;
        let data = load_data(cfg)?;
        let plan = Plan::new(cfg, data.train.len())?;
        let loss = cfg
            .loss
            .build(&data.class_counts())
            .map_err(TrainError::Config)?;
        // Parameters must be created on the autodiff device to be tracked by the learner.
        let classes = data.class_names.len();
        let (net, preprocess) = start::open(cfg, classes, &devices[0].clone().autodiff())?;
        let model = Trainee::with_average(net, cfg.ema.active());
        announce(cfg, &plan, &model, &data, &preprocess);
        Ok(Self {
            done,
            devices,
            data: Arc::new(data),
            plan,
            loss,
            model,
            preprocess,
        })
    }

    /// Trains the phases left, each from the checkpoint the one before it wrote.
    fn train_phases(
        &self,
        cfg: &TrainConfig,
        dir: &RunDir,
        watch: Option<Box<dyn Watch>>,
    ) -> Result<(), TrainError> {
        let logged = if self.done > 0 {
            read_epochs(dir).map_err(|e| TrainError::io(dir.path(), e))?
        } else {
            Vec::new()
        };
        let ema = cfg
            .ema
            .active()
            .then(|| EmaWatch::new(cfg.ema.clone(), &logged));
        let launcher = Launcher {
            cfg,
            plan: &self.plan,
            dir,
            devices: &self.devices,
            data: self.data.clone(),
            preprocess: &self.preprocess,
            shared: Arc::new(Mutex::new(Shared {
                watch,
                ema: ema.clone(),
                ..Default::default()
            })),
            loss: self.loss.clone(),
            ema,
        };
        for phase in self.plan.remaining(self.done) {
            if self.plan.phases.len() > 1 {
                let what = strategy::describe(phase.depth);
                eprintln!("epochs {}-{}: {what}", phase.first, phase.last);
            }
            if launcher.launch(&self.model, phase)? == PhaseEnd::EarlyStopped {
                break;
            }
        }
        Ok(())
    }

    /// Exports the best epoch, evaluates it, and publishes the model file: the run is done.
    fn publish(self, dir: &RunDir, started: Instant) -> Result<Outcome, TrainError> {
        let epochs = read_epochs(dir).map_err(|e| TrainError::io(dir.path(), e))?;
        let classes = self.data.class_names.clone();
        let (prune_final, data) = (self.plan.prune_final, &self.data);
        let out = export::export(
            dir,
            self.model,
            &epochs,
            prune_final,
            classes,
            self.preprocess,
        )?;
        fault::point("export", None);
        let report = final_report(dir, &self.devices[0], data)?;
        // Warned about one by one as they failed; counted once more where the run ends.
        let failed: Vec<_> = (data.load_failures.list().into_iter())
            .map(|(path, _)| (path, "failed to decode (warned above)".to_string()))
            .collect();
        if let Some(w) = skip_warning("left out while loading", &failed) {
            eprintln!("{w}");
        }
        atomic::commit(&dir.model_staging(), &dir.model())
            .map_err(|e| TrainError::io(&dir.model(), e))?;
        Ok(Outcome {
            model: dir.model(),
            dir: dir.path().to_path_buf(),
            best_epoch: out.epoch,
            best_accuracy: out.accuracy,
            averaged: out.averaged,
            epochs,
            seconds: started.elapsed().as_secs_f64(),
            sizes: (data.train.len(), data.val.len()),
            plots: out.plots,
            sparsity: out.sparsity,
            report,
        })
    }
}

/// The evaluation report of the exported model (not yet published) on the validation split,
/// in `RUN/eval`.
fn final_report(dir: &RunDir, device: &Device, data: &Dataset) -> Result<Evaluation, TrainError> {
    let (net, meta) = load_model(&dir.model_staging(), device)?;
    eval::report_on(&net, &meta, data, &data.val, Tta::None, &dir.eval())
}

/// Epochs already trained: when resuming, the newest checkpoint that verifies (0 if none; it
/// must leave something to do unless the run stopped before publishing its model), else 0
/// (and the directory must hold no run).
fn epochs_done(dir: &RunDir, epochs: usize, resume: bool) -> Result<usize, TrainError> {
    if !resume {
        if dir.last_checkpoint().is_some() {
            return Err(TrainError::Config(format!(
                "{} already holds a run's checkpoints; continue it with --resume {0} or choose \
                 another run.dir",
                dir.path().display()
            )));
        }
        return Ok(0);
    }
    let Some(e) = resume::pick(dir) else {
        // Killed before its first checkpoint was whole: nothing is lost by starting over.
        eprintln!(
            "warning: {} holds no usable checkpoint (checkpoint/model-N.bpk, optim-N.bpk, \
             scheduler-N.bpk matching checksums-N.txt); training from the start",
            dir.path().display()
        );
        return Ok(0);
    };
    if e >= epochs {
        if dir.model().exists() {
            return Err(TrainError::Resume {
                path: dir.path().to_path_buf(),
                message: format!("already finished all {epochs} epochs"),
            });
        }
        eprintln!(
            "{}: all {epochs} epochs trained, the model not yet exported; exporting",
            dir.path().display()
        );
        return Ok(e);
    }
    eprintln!("resuming {} after epoch {e}", dir.path().display());
    Ok(e)
}

/// The run's devices on its backend; more than one trains data-parallel.
pub(crate) fn devices(cfg: &TrainConfig) -> Result<Vec<Device>, TrainError> {
    let backend = cfg.run.backend;
    let devices = cfg.run.devices.iter().map(|&i| backend.device_at(i));
    Ok(devices.collect::<Result<Vec<_>, _>>()?)
}

/// The dataset, with a warning counting the images it had to skip and naming the first few.
pub(crate) fn load_data(cfg: &TrainConfig) -> Result<Dataset, TrainError> {
    let data = Dataset::load(&cfg.data, cfg.train.seed)?;
    if let Some(w) = skip_warning("skipped", &data.skipped) {
        eprintln!("{w}");
    }
    Ok(data)
}

/// Tells a person what is about to train, on what, and how.
fn announce(cfg: &TrainConfig, plan: &Plan, model: &Trainee, data: &Dataset, pre: &Preprocess) {
    let t = &cfg.train;
    if plan.lr != t.lr {
        eprintln!(
            "learning rate {:.4e}: {:.4e} scaled {:?} from batch {} to the effective batch {}",
            plan.lr,
            t.lr,
            t.lr_scaling,
            t.base_batch_size,
            effective_batch(cfg)
        );
    }
    let how = match t.strategy {
        Strategy::Gradual => format!(
            "gradual unfreezing (one more stage every {} epoch(s), {} phases)",
            t.unfreeze_every,
            plan.phases.len()
        ),
        _ => strategy::describe(plan.phases[0].depth),
    };
    eprintln!(
        "{}: {} training and {} validation images of {} classes, {}x{} input, {how} on {}",
        model.describe(),
        data.train.len(),
        data.val.len(),
        data.class_names.len(),
        pre.crop,
        pre.crop,
        cfg.run.backend.name()
    );
}

/// The end-of-run table: one line per epoch, the best marked.
pub fn summary(outcome: &Outcome) -> String {
    let averaging = outcome.epochs.iter().any(|r| r.split == ema::SPLIT);
    let mut s = String::from(
        "epoch | train loss | train acc | valid loss | valid acc | top-5 |      lr | img/s",
    );
    s += if averaging { " | EMA acc\n" } else { "\n" };
    s += "------+------------+-----------+------------+-----------+-------+---------+------";
    s += if averaging { "-+--------\n" } else { "\n" };
    let max_epoch = outcome.epochs.iter().map(|r| r.epoch).max().unwrap_or(0);
    for e in 1..=max_epoch {
        let row = |split: &str| {
            outcome
                .epochs
                .iter()
                .rev()
                .find(|r| r.epoch == e && r.split == split)
        };
        let (Some(tr), Some(va)) = (row("train"), row("valid")) else {
            continue;
        };
        s += &format!(
            "{:>5} | {:>10.4} | {:>8.2}% | {:>10.4} | {:>8.2}% | {:>4.1}% | {:>7.1e} | {:>5.0}{}{}\n",
            e,
            tr.loss,
            tr.accuracy,
            va.loss,
            va.accuracy,
            va.top5,
            tr.lr,
            tr.images_per_sec,
            match row(ema::SPLIT) {
                Some(a) => format!(" | {:>6.2}%", a.accuracy),
                None => String::new(),
            },
            match (e == outcome.best_epoch, outcome.averaged) {
                (true, true) => "  <- best (EMA)",
                (true, false) => "  <- best",
                _ => "",
            }
        );
    }
    let m = &outcome.report.metrics;
    s += &format!(
        "report on the validation split: top-1 {:.2}%, top-5 {:.2}%, ECE {:.2}%, worst class \
         F1 {:.3} -> {}\n",
        100.0 * m.top1,
        100.0 * m.top5,
        100.0 * m.ece,
        m.per_class.iter().map(|c| c.f1).fold(1.0, f64::min),
        outcome.dir.join("eval").display()
    );
    s += &format!(
        "best: epoch {}{} with {:.2}% validation accuracy -> {}\n",
        outcome.best_epoch,
        if outcome.averaged {
            " (weight average)"
        } else {
            ""
        },
        outcome.best_accuracy,
        outcome.model.display()
    );
    s
}
