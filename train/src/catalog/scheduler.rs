//! The schedules of `schedule.rs` as Burn `LrScheduler`s: one per parameter group, stepped once
//! per optimiser step, checkpointed as the step count alone; and the table of every step's
//! rate that `cargo xtask schedule` prints.

use std::sync::Arc;

use burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
use burn::lr_scheduler::{LrScheduler, LrSchedulerRecord};
use burn::module::ParamGroup;

use crate::catalog::schedule::{Per, ScheduleSection};

/// The run's shape as a schedule sees it: how many optimiser steps each epoch has.
#[derive(Clone, Debug, PartialEq)]
pub struct RunShape {
    /// Optimiser steps before each epoch starts, plus the total at the end.
    starts: Vec<usize>,
}

impl RunShape {
    /// A run whose epoch `e` (from 0) has `steps[e]` optimiser steps.
    pub fn new(steps: &[usize]) -> Self {
        let mut starts = vec![0];
        for s in steps {
            starts.push(starts.last().copied().unwrap_or(0) + s);
        }
        Self { starts }
    }

    /// Optimiser steps in the whole run.
    pub fn total_steps(&self) -> usize {
        self.starts.last().copied().unwrap_or(0)
    }

    /// Epochs in the run.
    pub fn epochs(&self) -> usize {
        self.starts.len() - 1
    }

    /// Optimiser steps in the first `epochs` epochs.
    pub fn steps_before(&self, epochs: usize) -> usize {
        self.starts[epochs.min(self.epochs())]
    }

    /// The epoch (from 0) that optimiser step `step` belongs to.
    pub fn epoch_of(&self, step: usize) -> usize {
        self.starts
            .partition_point(|&s| s <= step)
            .saturating_sub(1)
    }
}

/// One parameter group's schedule as Burn's learner steps it: once per optimiser step.
#[derive(Clone)]
pub struct Scheduler {
    schedule: Arc<ScheduleSection>,
    shape: Arc<RunShape>,
    base: f64,
    plateau_lr: f64,
    step: usize,
}

impl Scheduler {
    /// The schedule `s` peaking at `base`; `plateau_lr` is the rate a plateau schedule has
    /// reached (ignored by the others).
    pub fn new(s: Arc<ScheduleSection>, shape: Arc<RunShape>, base: f64, plateau_lr: f64) -> Self {
        Self {
            schedule: s,
            shape,
            base,
            plateau_lr,
            step: 0,
        }
    }

    /// The rate of optimiser step `step` (from 0).
    pub fn lr(&self, step: usize) -> f64 {
        let (t, run) = match self.schedule.per {
            Per::Iteration => (step, self.shape.total_steps()),
            Per::Epoch => (self.shape.epoch_of(step), self.shape.epochs()),
        };
        self.schedule.lr_at(self.base, t, run, self.plateau_lr)
    }
}

impl LrScheduler for Scheduler {
    fn step(&mut self) -> f64 {
        let lr = self.lr(self.step);
        self.step += 1;
        lr
    }

    fn to_record(&self) -> LrSchedulerRecord {
        LrSchedulerRecord::new().with_scalar("step", self.step as u64)
    }

    fn load_record(&mut self, record: LrSchedulerRecord) {
        if let Some(step) = record.scalar::<u64>("step") {
            self.step = step as usize;
        }
    }
}

/// The run's learning rates: one [`Scheduler`] for all parameters at `base`, and one per
/// group at `base * mult` (Burn's parameter groups; a later group wins). `metrics` is the
/// validation metric of every finished epoch, for a plateau schedule.
pub fn module_scheduler(
    s: &ScheduleSection,
    shape: Arc<RunShape>,
    base: f64,
    groups: &[(String, ParamGroup, f64)],
    metrics: &[f64],
) -> ModuleLrScheduler {
    let sched = Arc::new(s.clone());
    // Warmup epochs do not count towards a plateau.
    let watched = &metrics[s.warmup.min(metrics.len())..];
    let make = |mult: f64| {
        let b = base * mult;
        Scheduler::new(sched.clone(), shape.clone(), b, s.plateau_lr(b, watched))
    };
    let mut m = ModuleLrScheduler::new(make(1.0));
    for (_, group, mult) in groups {
        m = m.with_group(group.clone(), make(*mult));
    }
    m
}

/// The learning rate of every optimiser step for the head (`base`) and each group, without a
/// validation metric (a plateau schedule stays at its starting rate).
pub fn table(s: &ScheduleSection, shape: &RunShape, base: f64, mults: &[f64]) -> Vec<Vec<f64>> {
    let sched = Arc::new(s.clone());
    let shape = Arc::new(shape.clone());
    std::iter::once(1.0)
        .chain(mults.iter().copied())
        .map(|mult| {
            let sch = Scheduler::new(sched.clone(), shape.clone(), base * mult, base * mult);
            (0..shape.total_steps()).map(|i| sch.lr(i)).collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::schedule::ScheduleKind;

    #[test]
    fn epoch_of_step_follows_uneven_epochs() {
        let shape = RunShape::new(&[3, 2, 4]);
        let epochs: Vec<_> = (0..9).map(|i| shape.epoch_of(i)).collect();
        assert_eq!(epochs, [0, 0, 0, 1, 1, 2, 2, 2, 2]);
        assert_eq!((shape.total_steps(), shape.epochs()), (9, 3));
    }

    #[test]
    fn scheduler_resumes_from_its_step_count() {
        let sched = Arc::new(ScheduleSection {
            name: ScheduleKind::Cosine,
            warmup: 5,
            ..Default::default()
        });
        let shape = Arc::new(RunShape::new(&[10, 10, 10]));
        let mut a = Scheduler::new(sched.clone(), shape.clone(), 0.1, 0.1);
        let first: Vec<f64> = (0..12).map(|_| a.step()).collect();
        let mut b = Scheduler::new(sched, shape, 0.1, 0.1);
        b.load_record(a.to_record());
        let mut a2 = a.clone();
        for _ in 0..18 {
            assert_eq!(a2.step(), b.step());
        }
        assert!(first[0] < first[5] && first[5] == 0.1);
    }
}
