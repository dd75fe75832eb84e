//! Learning-rate schedules with `torch.optim.lr_scheduler`'s meaning: the `[schedule]` table
//! and the rate as a function of the step (Burn's side is in `scheduler.rs`).
//!
//! Burn has constant, step, exponential, cosine and linear schedulers, but no multistep,
//! inverse-time, polynomial, warm restarts, one-cycle or plateau, and its cosine and step count
//! from a different first step than PyTorch's. So every schedule here is one closed-form
//! function of the step (PyTorch's `_get_closed_form_lr` where it has one), which also makes a
//! schedule printable without training (`cargo xtask schedule`) and resumable from one
//! number: the optimiser steps taken.

use serde::{Deserialize, Serialize};

use crate::config::check::{End, in_range, non_negative, positive};

/// The shape of the learning rate over the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleKind {
    /// `lr` throughout.
    Constant,
    /// `lr * gamma^(t / step_size)` (StepLR).
    Step,
    /// `lr * gamma^(milestones passed)` (MultiStepLR).
    Multistep,
    /// `lr * gamma^t` (ExponentialLR).
    Exponential,
    /// `lr / (1 + decay_rate * t / decay_steps)` (Keras InverseTimeDecay).
    InverseTime,
    /// `(lr - min_lr) * (1 - t / total)^power + min_lr` (PolynomialLR).
    Polynomial,
    /// Half a cosine from `lr` to `min_lr` over `total` (CosineAnnealingLR).
    Cosine,
    /// Cosine annealing restarted every `period`, the period times `period_mult` each time
    /// (CosineAnnealingWarmRestarts).
    CosineRestarts,
    /// Up from `lr / div_factor` to `lr`, then down to `lr / (div_factor * final_div_factor)`
    /// (OneCycleLR, without momentum cycling).
    OneCycle,
    /// `lr` times `factor` whenever the validation metric stops improving for `patience`
    /// epochs (ReduceLROnPlateau).
    Plateau,
}

impl ScheduleKind {
    /// Every name a config may use.
    pub const NAMES: &str = "constant, step, multistep, exponential, inverse-time, polynomial, \
                             cosine, cosine-restarts, one-cycle, plateau";
}

/// What one schedule step is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Per {
    /// Every optimiser step (Burn's, timm's `step_update`).
    Iteration,
    /// Once an epoch, as `scheduler.step()` after each epoch in PyTorch.
    Epoch,
}

/// One-cycle's annealing curve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Anneal {
    /// Cosine.
    Cos,
    /// Straight line.
    Linear,
}

/// The warmup's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum WarmupKind {
    /// From `lr * warmup_factor` up to `lr` (LinearLR).
    Linear,
    /// `lr * warmup_factor` throughout the warmup (ConstantLR).
    Constant,
}

/// The validation metric a plateau schedule watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PlateauMetric {
    /// Validation loss; lower is better.
    ValidLoss,
    /// Validation accuracy; higher is better.
    ValidAccuracy,
}

/// How a plateau decides that a metric improved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ThresholdMode {
    /// Better by more than `threshold` times the best so far.
    Rel,
    /// Better by more than `threshold`.
    Abs,
}

/// `[schedule]`: the learning rate per step; every field has PyTorch's default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleSection {
    /// The schedule.
    pub name: ScheduleKind,
    /// Whether `t` counts optimiser steps or epochs.
    pub per: Per,
    /// step: period of a decay, in `per` units.
    pub step_size: usize,
    /// step, multistep, exponential: the decay factor.
    pub gamma: f64,
    /// multistep: where the rate drops, in `per` units, increasing.
    pub milestones: Vec<usize>,
    /// inverse-time: `k` in `lr / (1 + k t / decay_steps)`.
    pub decay_rate: f64,
    /// inverse-time: the unit of `t`.
    pub decay_steps: usize,
    /// inverse-time: decay in whole `decay_steps` only.
    pub staircase: bool,
    /// polynomial: the exponent.
    pub power: f64,
    /// polynomial, cosine, one-cycle: length in `per` units (default: the run after warmup).
    pub total: Option<usize>,
    /// cosine, cosine-restarts, polynomial, plateau: the floor.
    pub min_lr: f64,
    /// cosine-restarts: the first period, in `per` units (default: the run after warmup).
    pub period: usize,
    /// cosine-restarts: each period is this many times the previous one.
    pub period_mult: usize,
    /// one-cycle: fraction of the cycle spent rising.
    pub pct_start: f64,
    /// one-cycle: curve of each phase.
    pub anneal: Anneal,
    /// one-cycle: starting rate is `lr / div_factor`.
    pub div_factor: f64,
    /// one-cycle: final rate is the starting rate / `final_div_factor`.
    pub final_div_factor: f64,
    /// one-cycle: rise, fall back to the start, then anneal to the final rate (fastai's shape).
    pub three_phase: bool,
    /// plateau: what to watch.
    pub metric: PlateauMetric,
    /// plateau: epochs without improvement before the rate drops.
    pub patience: usize,
    /// plateau: the drop.
    pub factor: f64,
    /// plateau: the smallest change that counts as an improvement.
    pub threshold: f64,
    /// plateau: `threshold` relative or absolute.
    pub threshold_mode: ThresholdMode,
    /// plateau: epochs after a drop before counting again.
    pub cooldown: usize,
    /// Warmup length in `per` units before the schedule starts (0: none).
    pub warmup: usize,
    /// Warmup shape.
    pub warmup_kind: WarmupKind,
    /// Warmup starts at `lr * warmup_factor` (PyTorch's LinearLR/ConstantLR default: 1/3).
    pub warmup_factor: f64,
}

impl Default for ScheduleSection {
    fn default() -> Self {
        Self {
            name: ScheduleKind::Constant,
            per: Per::Iteration,
            step_size: 1,
            gamma: 0.1,
            milestones: Vec::new(),
            decay_rate: 1.0,
            decay_steps: 1,
            staircase: false,
            power: 1.0,
            total: None,
            min_lr: 0.0,
            period: 0,
            period_mult: 1,
            pct_start: 0.3,
            anneal: Anneal::Cos,
            div_factor: 25.0,
            final_div_factor: 1e4,
            three_phase: false,
            metric: PlateauMetric::ValidLoss,
            patience: 10,
            factor: 0.1,
            threshold: 1e-4,
            threshold_mode: ThresholdMode::Rel,
            cooldown: 0,
            warmup: 0,
            warmup_kind: WarmupKind::Linear,
            warmup_factor: 1.0 / 3.0,
        }
    }
}

/// PyTorch ReduceLROnPlateau's `eps`: smaller drops are ignored.
const PLATEAU_EPS: f64 = 1e-8;

impl ScheduleSection {
    /// Rejects impossible settings for a run of `run` units (steps or epochs, per `per`).
    pub fn validate(&self, run: usize) -> Result<(), String> {
        let s = self;
        if s.warmup >= run {
            return Err(format!(
                "schedule.warmup ({} {unit}s) is not shorter than the run ({run} {unit}s)",
                s.warmup,
                unit = self.unit(),
            ));
        }
        in_range(
            "schedule.warmup_factor",
            s.warmup_factor,
            End::Open(0.0),
            End::Closed(1.0),
        )?;
        non_negative("schedule.min_lr", s.min_lr)?;
        match s.name {
            ScheduleKind::Constant => {}
            ScheduleKind::Step | ScheduleKind::Multistep | ScheduleKind::Exponential => {
                self.validate_decay()?
            }
            ScheduleKind::InverseTime => {
                non_negative("schedule.decay_rate", s.decay_rate)?;
                if s.decay_steps == 0 {
                    return Err("schedule.decay_steps must be at least 1".into());
                }
            }
            ScheduleKind::Polynomial => positive("schedule.power", s.power)?,
            ScheduleKind::Cosine | ScheduleKind::CosineRestarts => {
                if s.period_mult == 0 {
                    return Err("schedule.period_mult must be at least 1".into());
                }
            }
            ScheduleKind::OneCycle => self.validate_one_cycle(run)?,
            ScheduleKind::Plateau => self.validate_plateau()?,
        }
        if s.total == Some(0) {
            return Err("schedule.total must be at least 1".into());
        }
        Ok(())
    }

    /// step, multistep, exponential: the factor, the period, the milestones.
    fn validate_decay(&self) -> Result<(), String> {
        let s = self;
        in_range("schedule.gamma", s.gamma, End::Open(0.0), End::Closed(1.0))?;
        if s.name == ScheduleKind::Step && s.step_size == 0 {
            return Err("schedule.step_size must be at least 1".into());
        }
        if s.name == ScheduleKind::Multistep {
            if s.milestones.is_empty() {
                return Err("schedule.milestones is empty; multistep needs at least one".into());
            }
            if s.milestones.windows(2).any(|w| w[0] >= w[1]) {
                return Err(format!(
                    "schedule.milestones must increase, got {:?}",
                    s.milestones
                ));
            }
        }
        Ok(())
    }

    /// one-cycle: its factors, and a cycle long enough for its phases.
    fn validate_one_cycle(&self, run: usize) -> Result<(), String> {
        let s = self;
        in_range(
            "schedule.pct_start",
            s.pct_start,
            End::Open(0.0),
            End::Open(1.0),
        )?;
        positive("schedule.div_factor", s.div_factor)?;
        positive("schedule.final_div_factor", s.final_div_factor)?;
        let total = self.main_len(run);
        let phases = if s.three_phase { 3.0 } else { 2.0 };
        if (s.pct_start * total as f64) < phases - 0.5 {
            return Err(format!(
                "schedule: one-cycle over {total} {}s is too short for pct_start {}",
                self.unit(),
                s.pct_start
            ));
        }
        Ok(())
    }

    /// plateau: per epoch (it watches a validation metric), its factor and threshold.
    fn validate_plateau(&self) -> Result<(), String> {
        if self.per != Per::Epoch {
            return Err(
                "schedule: plateau watches a validation metric, which exists once an \
                        epoch: set per = \"epoch\""
                    .into(),
            );
        }
        in_range(
            "schedule.factor",
            self.factor,
            End::Open(0.0),
            End::Open(1.0),
        )?;
        non_negative("schedule.threshold", self.threshold)
    }

    fn unit(&self) -> &'static str {
        match self.per {
            Per::Iteration => "step",
            Per::Epoch => "epoch",
        }
    }

    /// Length of the schedule proper: `total`, else the run after warmup.
    fn main_len(&self, run: usize) -> usize {
        self.total.unwrap_or(run.saturating_sub(self.warmup)).max(1)
    }

    /// The rate at `t` (in `per` units, from 0) of a run `run` units long peaking at `base`;
    /// `plateau_lr` is a plateau schedule's current rate (see [`plateau_lr`]).
    pub fn lr_at(&self, base: f64, t: usize, run: usize, plateau_lr: f64) -> f64 {
        let s = self;
        if t < s.warmup {
            let f = match s.warmup_kind {
                WarmupKind::Linear => {
                    s.warmup_factor + (1.0 - s.warmup_factor) * t as f64 / s.warmup as f64
                }
                WarmupKind::Constant => s.warmup_factor,
            };
            return base * f;
        }
        let t = t - s.warmup;
        let total = self.main_len(run);
        let tf = t as f64;
        match s.name {
            ScheduleKind::Constant => base,
            ScheduleKind::Step => base * s.gamma.powi((t / s.step_size) as i32),
            ScheduleKind::Multistep => {
                base * s
                    .gamma
                    .powi(s.milestones.partition_point(|&m| m <= t) as i32)
            }
            ScheduleKind::Exponential => base * s.gamma.powi(t as i32),
            ScheduleKind::InverseTime => {
                let p = if s.staircase {
                    (t / s.decay_steps) as f64
                } else {
                    tf / s.decay_steps as f64
                };
                base / (1.0 + s.decay_rate * p)
            }
            ScheduleKind::Polynomial => {
                let left = 1.0 - (t.min(total) as f64) / total as f64;
                (base - s.min_lr) * left.powf(s.power) + s.min_lr
            }
            ScheduleKind::Cosine => {
                s.min_lr
                    + (base - s.min_lr) * (1.0 + (std::f64::consts::PI * tf / total as f64).cos())
                        / 2.0
            }
            ScheduleKind::CosineRestarts => {
                let mut period = if s.period == 0 { total } else { s.period };
                let mut start = 0;
                while t >= start + period {
                    start += period;
                    period *= s.period_mult;
                }
                let cur = (t - start) as f64;
                s.min_lr
                    + (base - s.min_lr) * (1.0 + (std::f64::consts::PI * cur / period as f64).cos())
                        / 2.0
            }
            ScheduleKind::OneCycle => self.one_cycle(base, tf, total),
            ScheduleKind::Plateau => plateau_lr,
        }
    }

    /// PyTorch's OneCycleLR `get_lr` at step `t` of `total`.
    fn one_cycle(&self, max_lr: f64, t: f64, total: usize) -> f64 {
        let initial = max_lr / self.div_factor;
        let min_lr = initial / self.final_div_factor;
        let n = total as f64;
        let rise_end = self.pct_start * n - 1.0;
        let phases: Vec<(f64, f64, f64)> = if self.three_phase {
            vec![
                (rise_end, initial, max_lr),
                (2.0 * self.pct_start * n - 2.0, max_lr, initial),
                (n - 1.0, initial, min_lr),
            ]
        } else {
            vec![(rise_end, initial, max_lr), (n - 1.0, max_lr, min_lr)]
        };
        let mut start = 0.0;
        for (i, &(end, from, to)) in phases.iter().enumerate() {
            if t <= end || i == phases.len() - 1 {
                let pct = (t - start) / (end - start);
                return match self.anneal {
                    Anneal::Cos => {
                        to + (from - to) / 2.0 * ((std::f64::consts::PI * pct).cos() + 1.0)
                    }
                    Anneal::Linear => (to - from) * pct + from,
                };
            }
            start = end;
        }
        min_lr
    }

    /// A plateau schedule's rate after seeing `metrics` (one per epoch, oldest first), exactly
    /// as ReduceLROnPlateau(mode, factor, patience, threshold, threshold_mode, cooldown,
    /// min_lr) stepped once per epoch would leave it.
    pub fn plateau_lr(&self, base: f64, metrics: &[f64]) -> f64 {
        let max = self.metric == PlateauMetric::ValidAccuracy;
        let mut best = if max {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        };
        let (mut bad, mut cooldown, mut lr) = (0usize, 0usize, base);
        for &m in metrics {
            let better = match (max, self.threshold_mode) {
                (false, ThresholdMode::Rel) => m < best * (1.0 - self.threshold),
                (false, ThresholdMode::Abs) => m < best - self.threshold,
                (true, ThresholdMode::Rel) => m > best * (1.0 + self.threshold),
                (true, ThresholdMode::Abs) => m > best + self.threshold,
            };
            if better {
                best = m;
                bad = 0;
            } else {
                bad += 1;
            }
            if cooldown > 0 {
                cooldown -= 1;
                bad = 0;
            }
            if bad > self.patience {
                let new = (lr * self.factor).max(self.min_lr);
                if lr - new > PLATEAU_EPS {
                    lr = new;
                }
                cooldown = self.cooldown;
                bad = 0;
            }
        }
        lr
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(name: ScheduleKind) -> ScheduleSection {
        ScheduleSection {
            name,
            ..Default::default()
        }
    }

    #[test]
    fn warmup_longer_than_the_run_is_refused() {
        let mut c = s(ScheduleKind::Cosine);
        c.warmup = 100;
        let e = c.validate(100).unwrap_err();
        assert!(e.contains("warmup") && e.contains("100"), "{e}");
        let mut p = s(ScheduleKind::Plateau);
        assert!(p.validate(10).unwrap_err().contains("per = \"epoch\""));
        p.per = Per::Epoch;
        p.validate(10).unwrap();
        let mut m = s(ScheduleKind::Multistep);
        m.milestones = vec![5, 3];
        assert!(m.validate(10).unwrap_err().contains("increase"));
    }

    proptest! {
        /// Every decaying schedule starts at the peak, never rises (restarts and one-cycle
        /// aside) and never leaves [min_lr, lr].
        #[test]
        fn decays_stay_between_floor_and_peak(
            kind in prop::sample::select(vec![
                ScheduleKind::Step, ScheduleKind::Multistep, ScheduleKind::Exponential,
                ScheduleKind::InverseTime, ScheduleKind::Polynomial, ScheduleKind::Cosine,
            ]),
            run in 2usize..400,
            base in 1e-5f64..1.0,
            floor_frac in 0.0f64..0.5,
        ) {
            let mut c = s(kind);
            c.milestones = vec![run / 3 + 1, run / 2 + 2];
            c.step_size = run / 4 + 1;
            c.min_lr = base * floor_frac;
            if !matches!(kind, ScheduleKind::Polynomial | ScheduleKind::Cosine) {
                c.min_lr = 0.0;
            }
            let lrs: Vec<f64> = (0..run).map(|t| c.lr_at(base, t, run, base)).collect();
            prop_assert!((lrs[0] - base).abs() <= 1e-12 * base);
            for w in lrs.windows(2) {
                prop_assert!(w[1] <= w[0] + 1e-15);
            }
            for &lr in &lrs {
                prop_assert!(lr >= c.min_lr - 1e-15 && lr <= base + 1e-15);
            }
        }

        /// One-cycle peaks at `lr` at the end of its rise and ends at the final rate.
        #[test]
        fn one_cycle_peaks_where_pct_start_says(run in 10usize..500, pct in 0.1f64..0.9) {
            let mut c = s(ScheduleKind::OneCycle);
            c.pct_start = pct;
            let lrs: Vec<f64> = (0..run).map(|t| c.lr_at(1.0, t, run, 1.0)).collect();
            let peak = lrs.iter().cloned().fold(f64::MIN, f64::max);
            prop_assert!(peak <= 1.0 + 1e-12);
            prop_assert!((lrs[0] - 1.0 / 25.0).abs() < 1e-12);
            prop_assert!((lrs[run - 1] - 1.0 / 25.0 / 1e4).abs() < 1e-12);
        }
    }
}
