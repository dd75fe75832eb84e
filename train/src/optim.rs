//! The optimiser and the learning-rate schedule of a run, on Burn's, with PyTorch's meaning
//! (no SGD dampening, eps 1e-8). Issue 4 extends the catalog; these are the working defaults.

use burn::lr_scheduler::LrSchedulerConfig;
use burn::lr_scheduler::cosine::CosineAnnealingLrSchedulerConfig;
use burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
use burn::module::ParamGroup;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamWConfig, ModuleOptimizer, SgdConfig};

use crate::config::{OptimizerKind, ScheduleKind, TrainSection};
use crate::error::TrainError;

/// The optimiser `t` asks for.
pub fn optimizer(t: &TrainSection) -> ModuleOptimizer {
    match t.optimizer {
        OptimizerKind::Sgd => SgdConfig::new()
            .with_momentum((t.momentum > 0.0).then_some(MomentumConfig {
                momentum: t.momentum,
                dampening: 0.0,
                nesterov: false,
            }))
            .with_weight_decay((t.weight_decay > 0.0).then_some(WeightDecayConfig {
                penalty: t.weight_decay as f32,
            }))
            .init(),
        OptimizerKind::Adamw => AdamWConfig::new()
            .with_epsilon(1e-8)
            .with_weight_decay(t.weight_decay as f32)
            .init(),
    }
}

/// The schedule of one parameter group peaking at `lr` over `steps` optimiser steps.
fn schedule(kind: ScheduleKind, lr: f64, steps: usize) -> LrSchedulerConfig {
    match kind {
        ScheduleKind::Constant => LrSchedulerConfig::Constant(lr),
        ScheduleKind::Cosine => {
            LrSchedulerConfig::Cosine(CosineAnnealingLrSchedulerConfig::new(lr, steps.max(1)))
        }
    }
}

/// The learning rate per step: `t.lr` for the head, `t.lr * t.backbone_lr_mult` for
/// `backbone` when the two differ (Burn's parameter groups).
pub fn scheduler(
    t: &TrainSection,
    steps: usize,
    backbone: ParamGroup,
) -> Result<ModuleLrScheduler, TrainError> {
    let mut config = burn::lr_scheduler::module_lr_scheduler::ModuleLrSchedulerConfig::new(
        schedule(t.schedule, t.lr, steps),
    );
    if t.backbone_lr_mult != 1.0 {
        config = config.with_group(
            backbone,
            schedule(t.schedule, t.lr * t.backbone_lr_mult, steps),
        );
    }
    config
        .init()
        .map_err(|e| TrainError::Config(format!("learning-rate schedule: {e}")))
}
