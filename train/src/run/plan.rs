//! The plan of a run: everything decided from the config and the training set's size alone,
//! before any network exists. Training follows it; `cargo xtask schedule` prints it.

use std::sync::Arc;

use crate::catalog::schedule::{Per, ScheduleKind};
use crate::catalog::scheduler::RunShape;
use crate::config::{LrScaling, TrainConfig};
use crate::error::TrainError;
use crate::run::strategy::{self, LrGroup, Phase};

/// What a run will do, epoch by epoch and step by step.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The launches of Burn's learner: epochs with the same frozen depth and batch size.
    pub phases: Vec<Phase>,
    /// Optimiser steps per epoch.
    pub shape: Arc<RunShape>,
    /// `train.lr` after `train.lr_scaling`.
    pub lr: f64,
    /// Learning-rate groups besides the head's.
    pub groups: Vec<LrGroup>,
    /// Optimiser step (over the whole run) -> sparsity to prune to before it.
    pub prune_at: Vec<(usize, f64)>,
    /// First epoch at the final sparsity, when the run prunes: only those may be exported.
    pub prune_final: Option<usize>,
    /// The schedule learns its rate from each epoch's validation (one launch per epoch).
    pub plateau: bool,
}

impl Plan {
    /// The plan of `cfg` over `n_train` training images; an impossible schedule is an error.
    pub fn new(cfg: &TrainConfig, n_train: usize) -> Result<Self, TrainError> {
        let shape = Arc::new(run_shape(cfg, n_train));
        Self::with_shape(cfg, shape)
    }

    /// The plan of `cfg` with a given number of optimiser steps per epoch.
    pub fn with_shape(cfg: &TrainConfig, shape: Arc<RunShape>) -> Result<Self, TrainError> {
        let t = &cfg.train;
        let run_units = match cfg.schedule.per {
            Per::Iteration => shape.total_steps(),
            Per::Epoch => t.epochs,
        };
        cfg.schedule
            .validate(run_units)
            .map_err(TrainError::Config)?;
        let plateau = cfg.schedule.name == ScheduleKind::Plateau;
        let prune_at = cfg
            .prune
            .plan(t.epochs)
            .iter()
            .map(|&(epoch, s)| (shape.steps_before(epoch - 1), s))
            .collect();
        Ok(Self {
            phases: strategy::phases(t, plateau),
            lr: scaled_lr(cfg),
            groups: strategy::lr_groups(t),
            prune_at,
            prune_final: cfg.prune.final_epoch(t.epochs),
            plateau,
            shape,
        })
    }

    /// The phases still to train after `done` epochs, each starting where the run resumes.
    pub fn remaining(&self, done: usize) -> impl Iterator<Item = Phase> + '_ {
        self.phases
            .iter()
            .filter(move |p| p.last > done)
            .map(move |p| Phase {
                first: p.first.max(done + 1),
                ..*p
            })
    }
}

/// Optimiser steps per epoch over the run (batch-size schedule, devices and accumulation
/// included).
pub fn run_shape(cfg: &TrainConfig, n_train: usize) -> RunShape {
    let t = &cfg.train;
    let share = largest_share(n_train, cfg.run.devices.len());
    let steps: Vec<usize> = (1..=t.epochs)
        .map(|e| {
            share
                .div_ceil(strategy::batch_size(t, e))
                .div_ceil(t.grad_accumulation)
        })
        .collect();
    RunShape::new(&steps)
}

/// The most images one device trains on per epoch. Burn's multi-device strategy gives each of
/// `devices` an equal slice (`split_dataloader`: `n / devices`, the last one the rest) and makes
/// one optimiser step of a batch from every device still holding some, so the largest slice
/// sets the steps.
fn largest_share(n: usize, devices: usize) -> usize {
    let d = devices.max(1);
    n - (d - 1) * (n / d)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Strategy;

    #[test]
    fn a_resumed_gradual_run_starts_mid_phase() {
        let mut cfg = TrainConfig::default();
        cfg.train.epochs = 6;
        cfg.train.strategy = Strategy::Gradual;
        cfg.train.unfreeze_every = 2;
        let plan = Plan::new(&cfg, 100).unwrap();
        let spans: Vec<_> = plan.remaining(3).map(|p| (p.first, p.last)).collect();
        assert_eq!(spans, [(4, 4), (5, 6)]);
        assert_eq!(plan.remaining(6).count(), 0);
        // 100 images at batch 32: 4 steps an epoch.
        assert_eq!(plan.shape.total_steps(), 24);
    }

    #[test]
    fn devices_share_the_epoch_as_burn_splits_it() {
        let mut cfg = TrainConfig::default();
        cfg.train.epochs = 1;
        cfg.train.batch_size = 10;
        let steps = |cfg: &TrainConfig, devices: usize, n: usize| {
            let mut c = cfg.clone();
            c.run.devices = vec![0; devices];
            run_shape(&c, n).total_steps()
        };
        assert_eq!(steps(&cfg, 1, 120), 12);
        assert_eq!(steps(&cfg, 2, 120), 6);
        // 125 over 3 devices: 41, 41 and 43 images, the last in 5 batches.
        assert_eq!(steps(&cfg, 3, 125), 5);
        cfg.train.grad_accumulation = 2;
        assert_eq!(steps(&cfg, 2, 120), 3);
    }

    #[test]
    fn lr_scales_with_the_effective_batch() {
        let mut cfg = TrainConfig::default();
        cfg.train.lr = 0.1;
        cfg.train.batch_size = 64;
        cfg.train.grad_accumulation = 2;
        cfg.train.base_batch_size = 256;
        cfg.train.lr_scaling = LrScaling::Linear;
        assert!((scaled_lr(&cfg) - 0.05).abs() < 1e-15);
        cfg.train.lr_scaling = LrScaling::Sqrt;
        assert!((scaled_lr(&cfg) - 0.1 * 0.5f64.sqrt()).abs() < 1e-15);
    }

    #[test]
    fn layer_decay_groups_need_no_network() {
        let mut cfg = TrainConfig::default();
        cfg.train.layer_decay = 0.5;
        let plan = Plan::new(&cfg, 10).unwrap();
        let named: Vec<_> = plan
            .groups
            .iter()
            .map(|g| (g.name.as_str(), g.mult))
            .collect();
        assert_eq!(
            named,
            [
                ("layer4", 0.5),
                ("layer3", 0.25),
                ("layer2", 0.125),
                ("layer1", 0.0625),
                ("stem", 0.03125)
            ]
        );
    }
}
