//! The learning-rate range test (Smith 2017) as fastai's `lr_find` runs it: from the run's
//! starting model, one optimiser step per batch at a rate growing exponentially from `start` to
//! `end`, the loss smoothed by an exponential moving average (bias-corrected, 0.98), stopped
//! once the smoothed loss passes 4x its minimum; then fastai's suggestions: the valley
//! (default), the steepest descent and the minimum / 10. Nothing is saved: the weights it
//! leaves are not a model.
//!
//! It drives Burn's `Learner` step by step instead of `SupervisedTraining`, which runs whole
//! epochs and validation that the test does not need.

use std::sync::Arc;

use burn::data::dataloader::DataLoader;
use burn::train::Learner;

use crate::catalog::schedule::{Per, ScheduleKind, ScheduleSection};
use crate::catalog::scheduler::{RunShape, module_scheduler};
use crate::config::TrainConfig;
use crate::data::loader::{EpochLoader, Training};
use crate::error::TrainError;
use crate::run::phase::trainee;
use crate::run::plan::Plan;
use crate::run::strategy::{self, Phase};
use crate::run::trainee::Trainee;
use crate::run::{devices, load_data, start};

/// The sweep.
#[derive(Clone, Debug, PartialEq)]
pub struct LrFind {
    /// The first step's rate (fastai: 1e-7).
    pub start: f64,
    /// The rate the last step would reach (fastai: 10).
    pub end: f64,
    /// Optimiser steps (fastai: 100).
    pub steps: usize,
}

impl Default for LrFind {
    fn default() -> Self {
        Self {
            start: 1e-7,
            end: 10.0,
            steps: 100,
        }
    }
}

/// One step of the sweep.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// The head's learning rate at this step (groups scale it by their multipliers).
    pub lr: f64,
    /// The batch's loss.
    pub loss: f64,
    /// The bias-corrected moving average of the losses so far.
    pub smoothed: f64,
}

/// What the sweep measured and suggests.
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    /// Every step taken.
    pub points: Vec<Point>,
    /// fastai's `valley`: 2/3 of the way down the longest descent of the smoothed loss.
    pub valley: f64,
    /// fastai's `steep`: where the smoothed loss falls fastest per unit of log rate.
    pub steep: f64,
    /// fastai's `minimum`: the rate of the lowest smoothed loss, divided by 10.
    pub minimum: f64,
    /// Why the sweep stopped before its last step, if it did.
    pub stopped: Option<String>,
}

/// Runs the range test `f` on `cfg`'s model, data, strategy and optimiser.
pub fn lr_find(cfg: &TrainConfig, f: &LrFind) -> Result<Found, TrainError> {
    check(cfg, f)?;
    let device = devices(cfg)?.remove(0);
    let data = Arc::new(load_data(cfg)?);
    let plan = Plan::new(cfg, data.train.len())?;
    let phase = one_phase(&plan)?;
    let (net, preprocess) = start::open(cfg, data.class_names.len(), &device.clone().autodiff())?;
    let loss = cfg
        .loss
        .build(&data.class_counts())
        .map_err(TrainError::Config)?;
    let model = trainee(cfg, &plan, &Trainee::new(net), phase, (loss, None));
    let groups = strategy::param_groups(&plan.groups, &model.net);
    let shape = Arc::new(RunShape::new(&[f.steps]));
    let scheduler = module_scheduler(&sweep_schedule(f), shape, f.start, &groups, &[]);
    let mut learner = Learner::new(model, cfg.optim.optimizer(), scheduler);
    let training = Training::of(cfg, preprocess.crop, data.class_names.len(), 1);
    let loader = EpochLoader::train(
        data.clone(),
        data.train.clone(),
        phase.batch_size,
        preprocess,
        training,
        cfg.data.workers,
        device,
    );
    let mut curve = Curve::default();
    'sweep: loop {
        for batch in loader.iter() {
            let batch = batch.map_err(|e| TrainError::Stopped(e.to_string()))?;
            learner.lr_step();
            // The rate the optimiser is given, as the scheduler computed it.
            let lr = learner.lr_current().base();
            let out = learner.train_step(batch);
            let loss = f64::from(out.item.loss.clone().into_scalar::<f32>());
            learner.optimizer_step(out.grads);
            if curve.add(lr, loss) || curve.points.len() == f.steps {
                break 'sweep;
            }
        }
    }
    let (valley, steep, minimum) = suggest(&curve.points, f.steps);
    Ok(Found {
        points: curve.points,
        valley,
        steep,
        minimum,
        stopped: curve.stopped,
    })
}

/// Refuses a config that cannot run, or a sweep that is not one.
fn check(cfg: &TrainConfig, f: &LrFind) -> Result<(), TrainError> {
    cfg.validate()?;
    if !(f.start > 0.0 && f.start < f.end && f.end.is_finite()) || f.steps < 20 {
        return Err(TrainError::Config(format!(
            "lr-find: needs 0 < --start < --end and --steps >= 20, not {} .. {} in {} steps",
            f.start, f.end, f.steps
        )));
    }
    Ok(())
}

/// The run's only phase: the sweep has one set of frozen stages and one batch size.
fn one_phase(plan: &Plan) -> Result<Phase, TrainError> {
    if plan.phases.len() > 1 {
        return Err(TrainError::Config(
            "lr-find: the config changes the frozen stages or the batch size during the run \
             (train.strategy = \"gradual\" or train.batch_schedule); find the rate for one \
             phase with train.strategy = \"full\", \"partial\" or \"feature-extraction\""
                .into(),
        ));
    }
    Ok(plan.phases[0])
}

/// Exponential growth per step from `start` to `end`: the catalog's exponential schedule with
/// gamma > 1, which a run's config refuses but the sweep is made of.
fn sweep_schedule(f: &LrFind) -> ScheduleSection {
    ScheduleSection {
        name: ScheduleKind::Exponential,
        per: Per::Iteration,
        gamma: (f.end / f.start).powf(1.0 / (f.steps - 1) as f64),
        ..Default::default()
    }
}

/// The sweep's losses as they come, smoothed as fastai smooths them.
#[derive(Default)]
struct Curve {
    points: Vec<Point>,
    /// The moving average before its bias correction.
    avg: f64,
    /// The lowest smoothed loss so far.
    best: f64,
    stopped: Option<String>,
}

impl Curve {
    /// Adds a step's rate and loss; `true` when the smoothed loss has blown up (past 4x its
    /// minimum, or not finite) and the sweep stops.
    fn add(&mut self, lr: f64, loss: f64) -> bool {
        let i = self.points.len();
        self.avg = 0.98 * self.avg + 0.02 * loss;
        let smoothed = self.avg / (1.0 - 0.98f64.powi(i as i32 + 1));
        self.points.push(Point { lr, loss, smoothed });
        self.best = if i == 0 {
            smoothed
        } else {
            self.best.min(smoothed)
        };
        if !smoothed.is_finite() || smoothed > 4.0 * self.best {
            self.stopped = Some(format!(
                "the smoothed loss passed 4x its minimum ({:.4}) at lr {lr:.3e}",
                self.best
            ));
            return true;
        }
        false
    }
}

/// fastai's three suggestions from the smoothed losses, skipping the first tenth of the
/// requested steps and the last five taken (the noisy start and the blow-up).
fn suggest(points: &[Point], steps: usize) -> (f64, f64, f64) {
    let end = points.len().saturating_sub(5);
    let window = &points[(steps / 10).min(end)..end];
    if window.len() < 2 {
        let lr = points.first().map_or(f64::NAN, |p| p.lr);
        return (lr, lr, lr / 10.0);
    }
    let losses: Vec<f64> = window.iter().map(|p| p.smoothed).collect();
    let lrs: Vec<f64> = window.iter().map(|p| p.lr).collect();
    let argmin = |v: &[f64]| {
        (0..v.len())
            .min_by(|&a, &b| v[a].total_cmp(&v[b]))
            .unwrap_or(0)
    };
    let minimum = lrs[argmin(&losses)] / 10.0;
    let grads: Vec<f64> = (1..losses.len())
        .map(|i| (losses[i] - losses[i - 1]) / (lrs[i].ln() - lrs[i - 1].ln()))
        .collect();
    let steep = lrs[argmin(&grads)];
    (lrs[valley(&losses)], steep, minimum)
}

/// fastai's `valley`: the longest run of decreasing values (as a longest decreasing
/// subsequence ending at each point), and the index 2/3 of the way along it.
fn valley(losses: &[f64]) -> usize {
    let n = losses.len();
    let mut lds = vec![1usize; n];
    let (mut start, mut end) = (0isize, 0usize);
    for i in 1..n {
        for j in 0..i {
            if losses[i] < losses[j] && lds[i] < lds[j] + 1 {
                lds[i] = lds[j] + 1;
            }
            if lds[end] < lds[i] {
                end = i;
                // -1 for a descent from the first point: fastai then indexes with Python's
                // negative wrap, which `rem_euclid` below reproduces.
                start = end as isize - lds[end] as isize;
            }
        }
    }
    let sections = (end as isize - start) as f64 / 3.0;
    let idx = start + sections as isize + (sections / 2.0) as isize;
    idx.rem_euclid(n.max(1) as isize) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_valley_is_two_thirds_down_the_longest_descent() {
        // 5, 5, then down from 4.0 to 1.3 over indices 2-11, then up: the longest descent
        // (5, 4.0, .., 1.3) has 11 points, so it starts at 11 - 11 = 0.
        let mut losses = vec![5.0, 5.0];
        losses.extend((0..10).map(|i| 4.0 - 0.3 * i as f64));
        losses.extend([2.0, 3.0, 6.0]);
        // sections = 11 / 3 = 3.67: index 0 + 3 + 1 = 4.
        assert_eq!(valley(&losses), 4);
    }

    #[test]
    fn a_descent_from_the_first_point_wraps_as_fastais_index_does() {
        // Strictly falling from the start: length 10 ending at 9, start -1; sections 10/3:
        // index -1 + 3 + 1 = 3.
        let losses: Vec<f64> = (0..10).map(|i| 10.0 - i as f64).collect();
        assert_eq!(valley(&losses), 3);
    }

    #[test]
    fn suggestions_fall_in_the_swept_range_below_the_blow_up() {
        // A loss that falls until lr 1e-2, then explodes.
        let steps = 100;
        let points: Vec<Point> = (0..steps)
            .map(|i| {
                let lr = 1e-7 * 10f64.powf(8.0 * i as f64 / 99.0);
                let x = lr.log10();
                let loss = if x < -2.0 {
                    2.0 - 0.2 * (x + 7.0)
                } else {
                    1.0 + (x + 2.0).powi(2)
                };
                Point {
                    lr,
                    loss,
                    smoothed: loss,
                }
            })
            .collect();
        let (valley, steep, minimum) = suggest(&points, steps);
        for lr in [valley, steep, minimum] {
            assert!((1e-7..1e-2).contains(&lr), "{valley} {steep} {minimum}");
        }
        assert!((minimum * 10.0 - 1e-2).abs() < 2e-3, "{minimum}");
    }
}
