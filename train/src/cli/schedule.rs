//! `rekindle-train schedule`: a config's learning rate per optimiser step and parameter group,
//! printed and plotted without training.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::TrainConfig;
use crate::catalog::scheduler::RunShape;
use crate::data::dataset::Dataset;
use crate::run::plan::{Plan, run_shape};

/// `schedule`'s options.
#[derive(Args)]
pub struct ScheduleArgs {
    /// TOML config (default: the built-in recipe).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Optimiser steps in the run (default: counted from the config's dataset).
    #[arg(long)]
    steps: Option<usize>,
    /// One JSON object per step instead of a table.
    #[arg(long)]
    json: bool,
    /// Also plot it, to this PNG (`--plot` alone: schedule.png).
    #[arg(long, num_args = 0..=1, default_missing_value = "schedule.png")]
    plot: Option<PathBuf>,
}

/// A config's plan with `steps` optimiser steps in all, or as many as its dataset gives.
fn schedule_plan(cfg: &TrainConfig, steps: Option<usize>) -> Result<Plan> {
    let t = &cfg.train;
    let shape = match steps {
        Some(n) => RunShape::new(&vec![n.div_ceil(t.epochs).max(1); t.epochs]),
        None => run_shape(cfg, Dataset::load(&cfg.data, t.seed)?.train.len()),
    };
    Ok(Plan::with_shape(cfg, shape.into())?)
}

/// Prints (and plots, if asked) the schedule of `a`'s config.
pub fn schedule(a: ScheduleArgs) -> Result<()> {
    let cfg = match &a.config {
        Some(p) => TrainConfig::from_file(p)?,
        None => TrainConfig::default(),
    };
    cfg.validate()?;
    let plan = schedule_plan(&cfg, a.steps)?;
    let mults: Vec<f64> = plan.groups.iter().map(|g| g.mult).collect();
    let table = crate::catalog::scheduler::table(&cfg.schedule, &plan.shape, plan.lr, &mults);
    let head = if plan.groups.is_empty() {
        "all"
    } else {
        "head"
    };
    let names: Vec<String> = std::iter::once(head.to_string())
        .chain(plan.groups.iter().map(|g| g.name.clone()))
        .collect();
    if a.json {
        print_schedule_json(&plan.shape, &names, &table);
    } else {
        println!(
            "{:?} schedule, per {:?}, {} epochs, {} optimiser steps",
            cfg.schedule.name,
            cfg.schedule.per,
            cfg.train.epochs,
            plan.shape.total_steps()
        );
        print_schedule_table(&plan.shape, &names, &table);
    }
    if let Some(path) = &a.plot {
        let series: Vec<(String, Vec<f64>)> = names.into_iter().zip(table).collect();
        crate::report::plot::plot_schedule(path, "Learning rate", &series)
            .map_err(anyhow::Error::msg)?;
        eprintln!("plot: {}", path.display());
    }
    Ok(())
}

/// One JSON object per optimiser step: step, epoch and each group's rate.
fn print_schedule_json(shape: &RunShape, names: &[String], table: &[Vec<f64>]) {
    for step in 0..shape.total_steps() {
        let lrs: serde_json::Map<String, serde_json::Value> = names
            .iter()
            .zip(table)
            .map(|(n, col)| (n.clone(), serde_json::json!(col[step])))
            .collect();
        println!(
            "{}",
            serde_json::json!({"step": step, "epoch": shape.epoch_of(step) + 1, "lr": lrs})
        );
    }
}

/// About 40 rows of the schedule, the last step included.
fn print_schedule_table(shape: &RunShape, names: &[String], table: &[Vec<f64>]) {
    let total = shape.total_steps();
    print!("{:>6} {:>5}", "step", "epoch");
    for n in names {
        print!(" {n:>11}");
    }
    println!();
    let every = total.div_ceil(40).max(1);
    for step in (0..total).filter(|s| s % every == 0 || *s + 1 == total) {
        print!("{step:>6} {:>5}", shape.epoch_of(step) + 1);
        for col in table {
            print!(" {:>11.4e}", col[step]);
        }
        println!();
    }
}
