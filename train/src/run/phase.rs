//! One phase of a run: one launch of Burn's `SupervisedTraining` over consecutive epochs with
//! the same frozen stages and batch size, resuming from the checkpoint before its first epoch.
//! Burn's learner freezes a module for a whole launch, so a gradual run is several phases, each
//! continuing exactly as `--resume` does.

use std::sync::{Arc, Mutex, OnceLock};

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
use rekindle_model::Preprocess;

use burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;

use crate::catalog::loss::Loss;
use crate::catalog::schedule::PlateauMetric;
use crate::catalog::scheduler;
use crate::config::TrainConfig;
use crate::data::dataset::Dataset;
use crate::data::loader::{EpochLoader, Training};
use crate::durable::checkpointer::checkpointers;
use crate::durable::dir::RunDir;
use crate::error::TrainError;
use crate::report::log::read_epochs;
use crate::report::progress::{Renderer, Shared};
use crate::run::ema::{BestEma, EmaWatch};
use crate::run::plan::Plan;
use crate::run::strategy::{self, Phase};
use crate::run::trainee::{StepRules, Trainee};

/// How a phase ended, when it did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PhaseEnd {
    /// Every epoch of the phase trained.
    Completed,
    /// Early stopping ended it before its last epoch: the run is over.
    EarlyStopped,
}

/// What every phase of a run shares.
pub struct Launcher<'a> {
    /// The run's config.
    pub cfg: &'a TrainConfig,
    /// Its plan.
    pub plan: &'a Plan,
    /// Where it writes.
    pub dir: &'a RunDir,
    /// Its devices; the first holds the model.
    pub devices: &'a [Device],
    /// Its images.
    pub data: Arc<Dataset>,
    /// The input transform of the starting model at the run's size.
    pub preprocess: &'a Preprocess,
    /// What the renderer tells the run (a non-finite loss).
    pub shared: Arc<Mutex<Shared>>,
    /// The training loss.
    pub loss: Loss,
    /// The weight average's watch, when the run keeps one.
    pub ema: Option<Arc<EmaWatch>>,
}

impl Launcher<'_> {
    /// Trains `phase`, starting from `model` (the checkpoint before the phase replaces its
    /// weights when there is one).
    pub fn launch(&self, model: &Trainee, phase: Phase) -> Result<PhaseEnd, TrainError> {
        let model = self.trainee(model, phase);
        let groups = strategy::param_groups(&self.plan.groups, &model.net);
        let scheduler = self.scheduler(&groups, phase.first)?;
        let interrupter = Interrupter::new();
        let training = self.training(phase, &interrupter)?;
        *current_run().lock().unwrap_or_else(|e| e.into_inner()) = Some(interrupter);
        let result = training.launch(Learner::new(model, self.cfg.optim.optimizer(), scheduler));
        *current_run().lock().unwrap_or_else(|e| e.into_inner()) = None;

        let (diverged, halted) = {
            let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
            (shared.stop_reason.clone(), shared.halted.clone())
        };
        if let Some(reason) = diverged {
            return Err(TrainError::Diverged(reason));
        }
        if let Some(reason) = halted {
            return Err(TrainError::Halted(reason));
        }
        if let Some(err) = result.error {
            return Err(TrainError::Stopped(format!(
                "{err}; the last complete checkpoint in {} is kept (resume with --resume)",
                self.dir.checkpoints().display()
            )));
        }
        if let Some(i) = result.interrupted {
            return Err(TrainError::Interrupted(format!(
                "{}; resume with --resume {}",
                i.reason.unwrap_or_else(|| "interrupted".into()),
                self.dir.path().display()
            )));
        }
        Ok(match self.dir.last_checkpoint() {
            Some(e) if e == phase.last => PhaseEnd::Completed,
            _ => PhaseEnd::EarlyStopped,
        })
    }

    /// The network with the phase's stages frozen and the train step's rules.
    fn trainee(&self, model: &Trainee, phase: Phase) -> Trainee {
        let rules = (self.loss.clone(), self.ema.clone());
        trainee(self.cfg, self.plan, model, phase, rules)
    }

    /// The learning-rate scheduler, positioned at the phase's first epoch.
    fn scheduler(
        &self,
        groups: &[(String, burn::module::ParamGroup, f64)],
        first: usize,
    ) -> Result<ModuleLrScheduler, TrainError> {
        let metrics = if self.plan.plateau {
            plateau_metrics(self.dir, first - 1, self.cfg.schedule.metric)?
        } else {
            Vec::new()
        };
        Ok(scheduler::module_scheduler(
            &self.cfg.schedule,
            self.plan.shape.clone(),
            self.plan.lr,
            groups,
            &metrics,
        ))
    }

    /// The training and validation loaders of the phase.
    fn loaders(&self, phase: Phase) -> (EpochLoader, EpochLoader) {
        let (d, data) = (&self.cfg.data, &self.data);
        let classes = data.class_names.len();
        let training = Training::of(self.cfg, self.preprocess.crop, classes, phase.first);
        let device = self.devices[0].clone();
        let train = EpochLoader::train(
            data.clone(),
            data.train.clone(),
            phase.batch_size,
            self.preprocess.clone(),
            training,
            d.workers,
            device.clone(),
        );
        let valid = EpochLoader::eval(
            data.clone(),
            data.val.clone(),
            phase.batch_size,
            self.preprocess.clone(),
            d.workers,
            device,
        );
        (train, valid)
    }

    /// Burn's `SupervisedTraining` for the phase: metrics, checkpoints (the last two, and the
    /// best by validation accuracy; written atomically with checksums), our renderer, early
    /// stopping, devices and the resume point.
    fn training(
        &self,
        phase: Phase,
        interrupter: &Interrupter,
    ) -> Result<SupervisedTraining<Trainee>, TrainError> {
        let (train, valid) = self.loaders(phase);
        let renderer = Renderer::new(
            self.dir,
            phase.first - 1,
            self.cfg.run.tensorboard,
            interrupter.clone(),
            self.shared.clone(),
        )
        .map_err(|e| TrainError::io(self.dir.path(), e))?;
        let top_k = self.data.class_names.len().min(5);
        let [model_ckpt, optim_ckpt, scheduler_ckpt] = checkpointers(self.dir);
        let training = SupervisedTraining::new(self.dir.path(), Arc::new(train), Arc::new(valid))
            .metrics((
                LossMetric::new(),
                AccuracyMetric::new(),
                TopKAccuracyMetric::new(top_k),
            ))
            .metric_train_numeric(LearningRateMetric::new())
            .with_custom_checkpointers(model_ckpt, optim_ckpt, scheduler_ckpt)
            .with_checkpointing_strategy(self.checkpoints_kept())
            .renderer(Box::new(renderer))
            .with_interrupter(interrupter.clone())
            .num_epochs(phase.last);
        Ok(self.stopping_and_devices(training, phase))
    }

    /// Which checkpoints stay: the last two and the best by validation accuracy (and by the
    /// average's, with EMA on).
    fn checkpoints_kept(&self) -> ComposedCheckpointingStrategy {
        // The last two: while epoch N is being written (or if it turns out corrupted), epoch
        // N-1 is whole on disk. With one, Burn deletes N-1 as soon as model-N is written,
        // while optim-N may still be in progress.
        let mut keep = ComposedCheckpointingStrategy::builder()
            .add(KeepLastNCheckpoints::new(2))
            .add(MetricCheckpointingStrategy::new(
                &AccuracyMetric::new(),
                Aggregate::Mean,
                Direction::Highest,
                Split::Valid,
            ));
        if let Some(watch) = &self.ema {
            keep = keep.add(BestEma {
                current: watch.best(),
                watch: watch.clone(),
            });
        }
        keep.build()
    }

    /// `training` with the config's gradient accumulation, early stopping, devices, and the
    /// epoch it resumes from.
    fn stopping_and_devices(
        &self,
        mut training: SupervisedTraining<Trainee>,
        phase: Phase,
    ) -> SupervisedTraining<Trainee> {
        let t = &self.cfg.train;
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
        if self.devices.len() > 1 {
            training = training.with_training_strategy(
                ExecutionStrategy::multi(self.devices.to_vec(), MultiDeviceOptim::OptimMainDevice)
                    .into(),
            );
        }
        if phase.first > 1 {
            training = training.checkpoint(phase.first - 1);
        }
        training
    }
}

/// `model` with `phase`'s stages frozen and the train step's rules of `cfg` and `plan`,
/// minimising `loss`, its weight average (if any) reporting to `ema`.
pub fn trainee(
    cfg: &TrainConfig,
    plan: &Plan,
    model: &Trainee,
    phase: Phase,
    (loss, ema): (Loss, Option<Arc<EmaWatch>>),
) -> Trainee {
    let rules = StepRules {
        accumulation: cfg.train.grad_accumulation,
        clip_grad_norm: cfg.optim.clip_grad_norm,
        weight_clip: cfg.optim.weight_clip.map(|[lo, hi]| (lo, hi)),
        prune_at: plan.prune_at.iter().copied().collect(),
        prune_scope: cfg.prune.active().then_some(cfg.prune.scope),
        step: plan.shape.steps_before(phase.first - 1).into(),
        masks: Default::default(),
        loss,
        ema: ema.filter(|_| model.ema.is_some()),
    };
    Trainee {
        net: model.net.clone().freeze_stages(phase.depth),
        ema: model.ema.clone(),
        rules: Arc::new(rules),
    }
}

/// The interrupter of the phase in progress, for the Ctrl-C handler (one per process).
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

/// The plateau metric of epochs 1..=`upto`, from the run's epoch log.
fn plateau_metrics(
    dir: &RunDir,
    upto: usize,
    metric: PlateauMetric,
) -> Result<Vec<f64>, TrainError> {
    if upto == 0 {
        return Ok(Vec::new());
    }
    let rows = read_epochs(dir).map_err(|e| TrainError::io(dir.path(), e))?;
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
                    path: dir.epochs_csv(),
                    message: format!(
                        "no validation result for epoch {e}, which the plateau schedule needs"
                    ),
                })
        })
        .collect()
}
