//! `[train]`: the training loop: epochs, batches, the learning rate and what trains.

use rekindle_model::Stage;
use serde::{Deserialize, Serialize};

use crate::config::check::{
    End::{Closed, Open},
    in_range, positive,
};

/// How much of the pretrained network trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Every layer trains.
    Full,
    /// Only the new head trains; the backbone, BatchNorm statistics included, stays as loaded.
    FeatureExtraction,
    /// The stem and stages up to `freeze_to` stay frozen; the rest trains.
    Partial,
    /// Starts as feature extraction, then every `unfreeze_every` epochs one more stage trains,
    /// from the top down (layer4, layer3, .., stem), as in ULMFiT.
    Gradual,
}

/// How the learning rate follows the effective batch size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LrScaling {
    /// `lr` as written.
    None,
    /// `lr * effective_batch / base_batch_size` (Goyal et al. 2017).
    Linear,
    /// `lr * sqrt(effective_batch / base_batch_size)` (for adaptive optimisers).
    Sqrt,
}

/// `[train]`: optimisation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TrainSection {
    /// Passes over the training set.
    pub epochs: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Seed of every random choice (init, split, shuffle, augmentation, dropout).
    pub seed: u64,
    /// Learning rate of the head (and of the backbone, times `backbone_lr_mult`).
    pub lr: f64,
    /// Backbone learning rate as a fraction of `lr` (1: one rate for all).
    pub backbone_lr_mult: f64,
    /// Layer-wise learning-rate decay: layer4 trains at lr * d, layer3 at lr * d^2, .., the
    /// stem at lr * d^5 (1: off).
    pub layer_decay: f64,
    /// Scale `lr` with the effective batch (batch_size x grad_accumulation x devices).
    pub lr_scaling: LrScaling,
    /// The batch size `lr` was tuned for, for `lr_scaling`.
    pub base_batch_size: usize,
    /// `[[epoch, batch_size], ..]`: from that epoch on, batches of that size (grow the batch
    /// instead of decaying the rate, Smith et al. 2018).
    pub batch_schedule: Vec<[usize; 2]>,
    /// Which layers train.
    pub strategy: Strategy,
    /// Last frozen stage for `partial`: `stem`, `layer1` .. `layer4`.
    #[schemars(with = "String")]
    pub freeze_to: Stage,
    /// Epochs between two unfreezings for `gradual`.
    pub unfreeze_every: usize,
    /// Backward passes summed before each optimiser step.
    pub grad_accumulation: usize,
    /// Stop after this many epochs without a better validation accuracy; 0: never.
    pub early_stopping_patience: usize,
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            epochs: 5,
            batch_size: 32,
            seed: 42,
            lr: 0.01,
            backbone_lr_mult: 1.0,
            layer_decay: 1.0,
            lr_scaling: LrScaling::None,
            base_batch_size: 256,
            batch_schedule: Vec::new(),
            strategy: Strategy::Full,
            freeze_to: Stage::Layer2,
            unfreeze_every: 1,
            grad_accumulation: 1,
            early_stopping_patience: 0,
        }
    }
}

impl TrainSection {
    /// Checks `[train]` on its own: counts at least 1, rates in range, a batch schedule whose
    /// epochs increase within the run.
    pub fn validate(&self) -> Result<(), String> {
        for (key, n) in [
            ("train.epochs", self.epochs),
            ("train.batch_size", self.batch_size),
            ("train.base_batch_size", self.base_batch_size),
            ("train.unfreeze_every", self.unfreeze_every),
            ("train.grad_accumulation", self.grad_accumulation),
        ] {
            if n == 0 {
                return Err(format!("{key} must be at least 1"));
            }
        }
        in_range("train.lr", self.lr, Open(0.0), Closed(1.0))?;
        positive("train.backbone_lr_mult", self.backbone_lr_mult)?;
        in_range(
            "train.layer_decay",
            self.layer_decay,
            Open(0.0),
            Closed(1.0),
        )?;
        let mut last = 1;
        for &[epoch, size] in &self.batch_schedule {
            if epoch <= last || epoch > self.epochs || size == 0 {
                return Err(format!(
                    "train.batch_schedule entry [{epoch}, {size}]: epochs must increase from \
                     2 to train.epochs ({}) and sizes be at least 1",
                    self.epochs
                ));
            }
            last = epoch;
        }
        Ok(())
    }
}
