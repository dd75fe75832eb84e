//! A training run end to end: config -> data -> model -> Burn's `SupervisedTraining` ->
//! best model file, logs, plots and a summary. Resumable from its directory.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::Device;
use burn::train::checkpoint::{
    ComposedCheckpointingStrategy, KeepLastNCheckpoints, MetricCheckpointingStrategy,
};
use burn::train::metric::store::{Aggregate, Direction, Split};
use burn::train::metric::{AccuracyMetric, LearningRateMetric, LossMetric, TopKAccuracyMetric};
use burn::train::{
    ExecutionStrategy, Interrupter, Learner, MetricEarlyStoppingStrategy, MultiDeviceOptim,
    StoppingCondition, SupervisedTraining,
};
use rekindle_model::{Arch, Backend, HeadConfig, ModelMetadata, Preprocess, ResNet, ResNetConfig};

use crate::augment::Augment;
use crate::config::{LrScaling, Strategy, TrainConfig};
use crate::dataset::Dataset;
use crate::error::TrainError;
use crate::loader::EpochLoader;
use crate::progress::{EpochRow, Renderer, Shared, read_epochs};
use crate::schedule::{Per, PlateauMetric, RunShape, ScheduleKind};
use crate::trainee::{StepRules, Trainee};
use crate::{init, plot, prune, schedule, strategy};

/// The config copy in a run directory; `--resume` reads it back.
pub const CONFIG_FILE: &str = "config.toml";
/// The exported best model in a run directory.
pub const MODEL_FILE: &str = "model.bpk";

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
    /// Every epoch's train and validation row.
    pub epochs: Vec<EpochRow>,
    /// Wall time of this process's part of the run.
    pub seconds: f64,
    /// Training images seen per epoch, and validation images.
    pub sizes: (usize, usize),
    /// Plots written.
    pub plots: Vec<PathBuf>,
    /// Zeros per layer of the exported model, when the run pruned.
    pub sparsity: Option<Vec<prune::LayerSparsity>>,
}

/// The interrupter of the run in progress, for the Ctrl-C handler (one per process).
fn current_run() -> &'static Mutex<Option<Interrupter>> {
    static CURRENT: OnceLock<Mutex<Option<Interrupter>>> = OnceLock::new();
    CURRENT.get_or_init(|| {
        let _ = ctrlc::set_handler(|| {
            if let Some(i) = current_run().lock().ok().and_then(|g| g.clone()) {
                eprintln!(
                    "\nstopping after this step (Ctrl-C); the run can be resumed with --resume"
                );
                i.stop(Some("interrupted by Ctrl-C"));
            } else {
                std::process::exit(130);
            }
        });
        Mutex::new(None)
    })
}

/// The last epoch whose model, optimiser and scheduler checkpoints are all on disk.
pub fn last_checkpoint(dir: &Path) -> Option<usize> {
    let ckpt = dir.join("checkpoint");
    let epochs = std::fs::read_dir(&ckpt).ok()?.filter_map(|e| {
        let name = e.ok()?.file_name().to_string_lossy().into_owned();
        name.strip_prefix("model-")?
            .strip_suffix(".bpk")?
            .parse::<usize>()
            .ok()
    });
    epochs
        .filter(|e| {
            ["optim", "scheduler"]
                .iter()
                .all(|k| ckpt.join(format!("{k}-{e}.bpk")).exists())
        })
        .max()
}

/// The starting network and its preprocessing, from `cfg.model`.
fn starting_model(
    cfg: &TrainConfig,
    classes: usize,
    device: &Device,
) -> Result<(ResNet, Preprocess), TrainError> {
    let m = &cfg.model;
    let arch = (!m.arch.is_empty())
        .then(|| Arch::from_str(&m.arch))
        .transpose()?;
    let head = HeadConfig {
        num_classes: classes,
        hidden: m.head_hidden,
        dropout: m.head_dropout,
    };
    device.seed(cfg.train.seed);
    let (net, mut pre) = if m.source == "random" {
        let arch = arch.unwrap_or(Arch::Resnet18);
        let config = ResNetConfig {
            arch,
            head: head.clone(),
        };
        config.validate()?;
        (config.init(device), Preprocess::imagenet())
    } else {
        let path = Path::new(&m.source);
        let is_model_file = std::fs::read(path)
            .map(|b| b.starts_with(b"BURN") || path.extension().is_some_and(|e| e == "bpk"))
            .unwrap_or(false);
        let (net, meta) = if is_model_file || path.extension().is_some_and(|e| e == "bpk") {
            rekindle_model::load_model(path, device)?
        } else {
            let options = rekindle_import::ImportOptions {
                arch,
                ..Default::default()
            };
            let imported = rekindle_import::import(path, &options, device)?;
            (imported.model, imported.metadata)
        };
        if let Some(a) = arch
            && a != net.arch()
        {
            return Err(TrainError::Config(format!(
                "model.arch is {a} but {} holds a {}",
                path.display(),
                net.arch()
            )));
        }
        (net, meta.preprocess)
    };
    // Loaded weights arrive untracked; every parameter trains until the strategy freezes some.
    // Fine-tuning replaces the classifier: a fresh head, sized for this dataset, seeded.
    let net = net.unfreeze().with_head(&head, device);
    let net = if cfg.init.is_fresh_head_default() {
        // The fresh head already has PyTorch's default initialisation.
        net
    } else {
        let (net, n) = init::apply(net, &cfg.init, cfg.train.seed).map_err(TrainError::Config)?;
        eprintln!(
            "initialised {n} parameter tensor(s) ({:?} scope) with {:?}",
            cfg.init.scope, cfg.init.scheme
        );
        net
    };
    if let Some(r) = cfg.data.resize {
        pre.resize = r;
    }
    if let Some(c) = cfg.data.crop {
        pre.crop = c;
        if cfg.data.resize.is_none() {
            // Keep the model's resize/crop ratio (256/224) at the new size.
            pre.resize = (c * pre.resize).div_ceil(pre.crop.max(1)).max(c);
        }
    }
    pre.validate()?;
    Ok((net, pre))
}

/// Runs (or, with `resume`, continues) the training `cfg` describes.
pub fn train(cfg: &TrainConfig, resume: bool) -> Result<Outcome, TrainError> {
    cfg.validate()?;
    let started = Instant::now();
    let backend = Backend::from_str(&cfg.run.backend)?;
    let devices = cfg
        .run
        .devices
        .iter()
        .map(|&i| backend.device_at(i))
        .collect::<Result<Vec<_>, _>>()?;
    let device = devices[0].clone();
    let dir = cfg.run.dir.clone();

    let start_epoch = if resume {
        let e = last_checkpoint(&dir).ok_or_else(|| TrainError::Resume {
            path: dir.clone(),
            message: "no complete checkpoint (checkpoint/model-N.bpk, optim-N.bpk, \
                      scheduler-N.bpk) to resume from"
                .into(),
        })?;
        if e >= cfg.train.epochs {
            return Err(TrainError::Resume {
                path: dir.clone(),
                message: format!("already finished all {} epochs", cfg.train.epochs),
            });
        }
        eprintln!("resuming {} after epoch {e}", dir.display());
        e
    } else {
        if last_checkpoint(&dir).is_some() {
            return Err(TrainError::Config(format!(
                "{} already holds a run's checkpoints; continue it with --resume {0} or choose \
                 another run.dir",
                dir.display()
            )));
        }
        0
    };
    std::fs::create_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
    let config_path = dir.join(CONFIG_FILE);
    std::fs::write(&config_path, cfg.to_toml()).map_err(|e| TrainError::io(&config_path, e))?;

    let data = Dataset::load(&cfg.data, cfg.train.seed)?;
    if !data.skipped.is_empty() {
        eprintln!(
            "warning: skipped {} unreadable image(s), e.g. {}: {}",
            data.skipped.len(),
            data.skipped[0].0.display(),
            data.skipped[0].1
        );
    }
    let classes = data.class_names.clone();
    // Parameters must be created on the autodiff device to be tracked by the learner.
    let (net, preprocess) = starting_model(cfg, classes.len(), &device.clone().autodiff())?;
    let model = Trainee::new(net);
    let (n_train, n_val) = (data.train.len(), data.val.len());
    let t = &cfg.train;
    let plateau = cfg.schedule.name == ScheduleKind::Plateau;
    let phases = strategy::phases(t, plateau);
    let shape = Arc::new(run_shape(cfg, n_train));
    let run_units = match cfg.schedule.per {
        Per::Iteration => shape.total_steps(),
        Per::Epoch => t.epochs,
    };
    cfg.schedule
        .validate(run_units)
        .map_err(TrainError::Config)?;
    let lr = scaled_lr(cfg);
    if lr != t.lr {
        eprintln!(
            "learning rate {lr:.4e}: {:.4e} scaled {:?} from batch {} to the effective batch {}",
            t.lr,
            t.lr_scaling,
            t.base_batch_size,
            effective_batch(cfg)
        );
    }
    let prune_plan = cfg.prune.plan(t.epochs);
    let prune_final = cfg.prune.final_epoch(t.epochs);
    eprintln!(
        "{}: {n_train} training and {n_val} validation images of {} classes, \
         {}x{} input, {} on {}",
        model.describe(),
        classes.len(),
        preprocess.crop,
        preprocess.crop,
        match t.strategy {
            Strategy::Gradual => format!(
                "gradual unfreezing (one more stage every {} epoch(s), {} phases)",
                t.unfreeze_every,
                phases.len()
            ),
            _ => strategy::describe(phases[0].depth),
        },
        backend.name()
    );

    let data = Arc::new(data);
    let augment = cfg.data.augment.then_some(Augment {
        size: preprocess.crop as u32,
        scale_min: cfg.data.crop_scale_min,
        hflip: cfg.data.hflip,
    });
    let shared = Arc::new(Mutex::new(Shared::default()));

    // Burn's learner freezes a module for a whole launch, so each phase of constant frozen
    // depth is one launch that resumes from the previous phase's checkpoint: the same path as
    // `--resume`, so an interrupted gradual run continues exactly too.
    for phase in phases.iter().filter(|p| p.last > start_epoch) {
        let first = phase.first.max(start_epoch + 1);
        if phases.len() > 1 {
            eprintln!(
                "epochs {first}-{}: {}",
                phase.last,
                strategy::describe(phase.depth)
            );
        }
        let rules = StepRules {
            accumulation: t.grad_accumulation,
            clip_grad_norm: cfg.optim.clip_grad_norm,
            weight_clip: cfg.optim.weight_clip.map(|[lo, hi]| (lo, hi)),
            prune_at: prune_plan
                .iter()
                .map(|&(epoch, s)| (shape.steps_before(epoch - 1), s))
                .collect(),
            prune_scope: cfg.prune.active().then_some(cfg.prune.scope),
            step: shape.steps_before(first - 1).into(),
            masks: Default::default(),
        };
        let model = Trainee {
            net: strategy::apply(model.net.clone(), phase.depth),
            rules: Arc::new(rules),
        };
        let optimizer = cfg.optim.optimizer();
        let metrics = if plateau {
            plateau_metrics(&dir, first - 1, cfg.schedule.metric)?
        } else {
            Vec::new()
        };
        let groups = strategy::lr_groups(t, &model);
        let scheduler =
            schedule::module_scheduler(&cfg.schedule, shape.clone(), lr, &groups, &metrics);
        let train_loader = EpochLoader::train(
            data.clone(),
            data.train.clone(),
            phase.batch_size,
            preprocess.clone(),
            augment,
            t.seed,
            first,
            cfg.data.workers,
            device.clone(),
        );
        let valid_loader = EpochLoader::eval(
            data.clone(),
            data.val.clone(),
            phase.batch_size,
            preprocess.clone(),
            cfg.data.workers,
            device.clone(),
        );

        let interrupter = Interrupter::new();
        *current_run().lock().unwrap_or_else(|e| e.into_inner()) = Some(interrupter.clone());
        let renderer = Renderer::new(&dir, first - 1, interrupter.clone(), shared.clone())
            .map_err(|e| TrainError::io(&dir, e))?;
        let top_k = classes.len().min(5);
        let mut training =
            SupervisedTraining::new(&dir, Arc::new(train_loader), Arc::new(valid_loader))
                .metrics((
                    LossMetric::new(),
                    AccuracyMetric::new(),
                    TopKAccuracyMetric::new(top_k),
                ))
                .metric_train_numeric(LearningRateMetric::new())
                .with_default_checkpointers()
                .with_checkpointing_strategy(
                    ComposedCheckpointingStrategy::builder()
                        .add(KeepLastNCheckpoints::new(1))
                        .add(MetricCheckpointingStrategy::new(
                            &AccuracyMetric::new(),
                            Aggregate::Mean,
                            Direction::Highest,
                            Split::Valid,
                        ))
                        .build(),
                )
                .renderer(Box::new(renderer))
                .with_interrupter(interrupter.clone())
                .num_epochs(phase.last);
        if t.grad_accumulation > 1 {
            training = training.grads_accumulation(t.grad_accumulation);
        }
        if t.early_stopping_patience > 0 {
            training = training.early_stopping(MetricEarlyStoppingStrategy::new(
                &AccuracyMetric::new(),
                Aggregate::Mean,
                Direction::Highest,
                Split::Valid,
                StoppingCondition::NoImprovementSince {
                    n_epochs: t.early_stopping_patience,
                },
            ));
        }
        if devices.len() > 1 {
            training = training.with_training_strategy(
                ExecutionStrategy::multi(devices.clone(), MultiDeviceOptim::OptimMainDevice).into(),
            );
        }
        if first > 1 {
            training = training.checkpoint(first - 1);
        }

        let result = training.launch(Learner::new(model, optimizer, scheduler));
        *current_run().lock().unwrap_or_else(|e| e.into_inner()) = None;

        let stop_reason = shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stop_reason
            .clone();
        if let Some(reason) = stop_reason {
            return Err(TrainError::Stopped(reason));
        }
        if let Some(err) = result.error {
            return Err(TrainError::Stopped(format!(
                "{err}; the last complete checkpoint in {} is kept (resume with --resume)",
                dir.join("checkpoint").display()
            )));
        }
        if let Some(i) = result.interrupted {
            return Err(TrainError::Stopped(format!(
                "{}; resume with --resume {}",
                i.reason.unwrap_or_else(|| "interrupted".into()),
                dir.display()
            )));
        }
        if last_checkpoint(&dir) != Some(phase.last) {
            // Early stopping ended the phase before its last epoch: the run is over.
            break;
        }
    }

    // Best epoch by exact validation accuracy among the checkpoints kept on disk; when the
    // run prunes, among the epochs at the final sparsity.
    let epochs = read_epochs(&dir).map_err(|e| TrainError::io(&dir, e))?;
    let (best_epoch, best_accuracy) = epochs
        .iter()
        .filter(|r| r.split == "valid")
        .filter(|r| prune_final.is_none_or(|f| r.epoch >= f))
        .filter(|r| {
            dir.join(format!("checkpoint/model-{}.bpk", r.epoch))
                .exists()
        })
        .fold((0, f64::MIN), |best, r| {
            if r.accuracy > best.1 {
                (r.epoch, r.accuracy)
            } else {
                best
            }
        });
    if best_epoch == 0 {
        return Err(TrainError::Stopped(
            "no validation result with a checkpoint to export".into(),
        ));
    }
    let ckpt = dir.join(format!("checkpoint/model-{best_epoch}.bpk"));
    let record = ModuleRecord::load(&ckpt)
        .map_err(|e| TrainError::Stopped(format!("{}: {e}", ckpt.display())))?;
    let best = model.load_record(record).net;
    let sparsity = cfg.prune.active().then(|| prune::sparsity(&best));
    let metadata = ModelMetadata::new(best.config(), classes, preprocess);
    let model_path = dir.join(MODEL_FILE);
    rekindle_model::save_model(&model_path, &best, &metadata)?;
    let plots = match plot::plot_run(&dir) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("warning: no plots: {e}");
            Vec::new()
        }
    };
    Ok(Outcome {
        dir,
        model: model_path,
        best_epoch,
        best_accuracy,
        epochs,
        seconds: started.elapsed().as_secs_f64(),
        sizes: (n_train, n_val),
        plots,
        sparsity,
    })
}

/// Optimiser steps per epoch over the run (batch-size schedule and accumulation included).
pub fn run_shape(cfg: &TrainConfig, n_train: usize) -> RunShape {
    let t = &cfg.train;
    let steps: Vec<usize> = (1..=t.epochs)
        .map(|e| {
            n_train
                .div_ceil(strategy::batch_size(t, e))
                .div_ceil(t.grad_accumulation)
        })
        .collect();
    RunShape::new(&steps)
}

/// Images behind one optimiser step at the start of the run.
pub fn effective_batch(cfg: &TrainConfig) -> usize {
    cfg.train.batch_size * cfg.train.grad_accumulation * cfg.run.devices.len()
}

/// `train.lr` after `train.lr_scaling`.
pub fn scaled_lr(cfg: &TrainConfig) -> f64 {
    let t = &cfg.train;
    let ratio = effective_batch(cfg) as f64 / t.base_batch_size as f64;
    match t.lr_scaling {
        LrScaling::None => t.lr,
        LrScaling::Linear => t.lr * ratio,
        LrScaling::Sqrt => t.lr * ratio.sqrt(),
    }
}

/// The plateau metric of epochs 1..=`upto`, from the run's epoch log.
fn plateau_metrics(dir: &Path, upto: usize, metric: PlateauMetric) -> Result<Vec<f64>, TrainError> {
    if upto == 0 {
        return Ok(Vec::new());
    }
    let rows = read_epochs(dir).map_err(|e| TrainError::io(dir, e))?;
    (1..=upto)
        .map(|e| {
            rows.iter()
                .rev()
                .find(|r| r.epoch == e && r.split == "valid")
                .map(|r| match metric {
                    PlateauMetric::ValidLoss => r.loss,
                    PlateauMetric::ValidAccuracy => r.accuracy,
                })
                .ok_or_else(|| TrainError::Resume {
                    path: dir.join(crate::progress::EPOCHS_CSV),
                    message: format!(
                        "no validation result for epoch {e}, which the plateau schedule needs"
                    ),
                })
        })
        .collect()
}

/// The end-of-run table: one line per epoch, the best marked.
pub fn summary(outcome: &Outcome) -> String {
    let mut s = String::from(
        "epoch | train loss | train acc | valid loss | valid acc | top-5 |      lr | img/s\n\
         ------+------------+-----------+------------+-----------+-------+---------+------\n",
    );
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
            "{:>5} | {:>10.4} | {:>8.2}% | {:>10.4} | {:>8.2}% | {:>4.1}% | {:>7.1e} | {:>5.0}{}\n",
            e,
            tr.loss,
            tr.accuracy,
            va.loss,
            va.accuracy,
            va.top5,
            tr.lr,
            tr.images_per_sec,
            if e == outcome.best_epoch {
                "  <- best"
            } else {
                ""
            }
        );
    }
    s += &format!(
        "best: epoch {} with {:.2}% validation accuracy -> {}\n",
        outcome.best_epoch,
        outcome.best_accuracy,
        outcome.model.display()
    );
    s
}
