//! `rekindle-train lr-find`: fastai's learning-rate range test.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use rekindle_model::Backend;

use super::parse::parse_name;
use crate::TrainConfig;
use crate::report::plot;
use crate::run::lr_find::LrFind;

/// `lr-find`'s options.
#[derive(Args)]
pub struct LrFindArgs {
    /// TOML config whose model, data, strategy and optimiser are swept (default: the
    /// built-in recipe).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The first step's learning rate.
    #[arg(long, default_value_t = 1e-7)]
    start: f64,
    /// The rate the last step reaches.
    #[arg(long, default_value_t = 10.0)]
    end: f64,
    /// Optimiser steps (one batch each).
    #[arg(long, default_value_t = 100)]
    steps: usize,
    /// Where lr-find.csv and lr-find.png go.
    #[arg(long, default_value = "runs/lr-find")]
    out: PathBuf,
    /// Overrides run.backend.
    #[arg(long, long_help = rekindle_model::backend::HELP, value_parser = parse_name::<Backend>)]
    backend: Option<Backend>,
}

/// Sweeps, writes lr-find.csv and lr-find.png, and prints the suggested rates (and JSON).
pub fn lr_find(a: LrFindArgs) -> Result<()> {
    let mut cfg = match &a.config {
        Some(p) => TrainConfig::from_file(p)?,
        None => TrainConfig::default(),
    };
    if let Some(b) = a.backend {
        cfg.run.backend = b;
    }
    let sweep = LrFind {
        start: a.start,
        end: a.end,
        steps: a.steps,
    };
    let found = crate::run::lr_find::lr_find(&cfg, &sweep)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let csv = a.out.join("lr-find.csv");
    let mut text = String::from("step,lr,loss,smoothed\n");
    for (i, p) in found.points.iter().enumerate() {
        text += &format!("{},{},{},{}\n", i + 1, p.lr, p.loss, p.smoothed);
    }
    std::fs::write(&csv, text).with_context(|| format!("writing {}", csv.display()))?;
    let png = a.out.join("lr-find.png");
    let marks = [
        ("valley", found.valley),
        ("steep", found.steep),
        ("minimum/10", found.minimum),
    ];
    plot::plot_lr_find(&png, &found.points, &marks).map_err(anyhow::Error::msg)?;
    if let Some(why) = &found.stopped {
        eprintln!("stopped after {} steps: {why}", found.points.len());
    }
    println!(
        "suggested learning rate (valley): {:.3e}\n  steepest descent: {:.3e}\n  \
         minimum / 10: {:.3e}\n{} steps; {} and {}",
        found.valley,
        found.steep,
        found.minimum,
        found.points.len(),
        csv.display(),
        png.display()
    );
    let json = serde_json::json!({
        "valley": found.valley,
        "steep": found.steep,
        "minimum": found.minimum,
        "steps": found.points.len(),
        "stopped": found.stopped,
        "csv": csv.display().to_string(),
        "plot": png.display().to_string(),
    });
    println!("{json}");
    Ok(())
}
