//! `rekindle-train demo`: transfer learning on Fashion-MNIST, pretrained against from scratch on
//! the same budget, and the README's recipe and regularisation tables.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use rekindle_model::Backend;

use super::parse::parse_name;
use crate::demo::Demo;
use crate::run::summary;

/// `demo`'s options.
#[derive(Args)]
pub struct DemoArgs {
    #[arg(long, help = rekindle_model::backend::HELP, default_value_t = Backend::default_compiled(), value_parser = parse_name::<Backend>)]
    backend: Backend,
    /// Where the fine-tuning runs go.
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    /// Where the pretrained model is cached (default: ~/.cache/rekindle/demo).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Labelled training images per class when fine-tuning.
    #[arg(long, default_value_t = 10)]
    labels_per_class: usize,
    /// Fine-tune with each recipe of the experiment table instead, and print the table.
    #[arg(long)]
    recipes: bool,
    /// Fine-tune with each regularisation option on and off, 3 seeds each, and print the table.
    #[arg(long, conflicts_with = "recipes")]
    regularisers: bool,
}

/// Runs the demo (or one of its tables) and prints the outcome.
pub fn demo(a: DemoArgs) -> Result<()> {
    let cache = a.cache.unwrap_or_else(crate::demo::default_cache);
    let d = Demo {
        out: a.out,
        cache,
        backend: a.backend,
        labels_per_class: a.labels_per_class,
    };
    let started = std::time::Instant::now();
    if a.recipes {
        let results = d.recipes()?;
        println!("\n| recipe | validation accuracy | sparsity | time |\n|---|---|---|---|");
        for (recipe, out) in &results {
            let sparsity = out.sparsity.as_ref().map_or("-".to_string(), |layers| {
                let total: usize = layers.iter().map(|l| l.total).sum();
                let zeros: usize = layers.iter().map(|l| l.zeros).sum();
                format!("{:.1}%", 100.0 * zeros as f64 / total.max(1) as f64)
            });
            println!(
                "| `{}`: {} | {:.2}% (epoch {}) | {sparsity} | {:.0} s |",
                recipe.name, recipe.description, out.best_accuracy, out.best_epoch, out.seconds
            );
        }
        println!("total {:.0} s", started.elapsed().as_secs_f64());
        return Ok(());
    }
    if a.regularisers {
        return regularisers_table(&d, started);
    }
    let r = d.run()?;
    let (t, s) = (&r.transfer, &r.scratch);
    println!(
        "\n== transfer (pretrained on classes 0-4) ==\n{}",
        summary(t)
    );
    println!("== from scratch ==\n{}", summary(s));
    println!(
        "Fashion-MNIST classes 5-9, {} labelled images per class ({} training, {} validation):",
        d.labels_per_class, t.sizes.0, t.sizes.1
    );
    println!(
        "  transfer     {:6.2}% validation accuracy ({:.0} s)",
        t.best_accuracy, t.seconds
    );
    println!(
        "  from scratch {:6.2}% validation accuracy ({:.0} s)",
        s.best_accuracy, s.seconds
    );
    println!(
        "  transfer wins by {:+.2} points; total {:.0} s (pretraining {:.0} s{})",
        t.best_accuracy - s.best_accuracy,
        started.elapsed().as_secs_f64(),
        r.pretrain_seconds,
        if r.pretrain_seconds == 0.0 {
            ", cached"
        } else {
            ""
        }
    );
    println!("  fine-tuned model: {}", t.model.display());
    Ok(())
}

/// The README's regularisation table: validation accuracy and calibration of the demo's
/// fine-tune with each option, mean and spread over three seeds.
fn regularisers_table(d: &Demo, started: std::time::Instant) -> Result<()> {
    let results = d.regularisers(&[11, 12, 13])?;
    println!(
        "\n| option | validation accuracy (3 seeds) | ECE | time per run |\n|---|---|---|---|"
    );
    for (recipe, runs) in &results {
        let acc: Vec<f64> = runs.iter().map(|o| o.best_accuracy).collect();
        let ece: Vec<f64> = runs.iter().map(|o| 100.0 * o.report.metrics.ece).collect();
        let secs: Vec<f64> = runs.iter().map(|o| o.seconds).collect();
        let (a, sa) = mean_sd(&acc);
        println!(
            "| `{}`: {} | {a:.2}% ± {sa:.2} | {:.1}% | {:.0} s |",
            recipe.name,
            recipe.description,
            mean_sd(&ece).0,
            mean_sd(&secs).0
        );
    }
    println!("total {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Mean and sample standard deviation.
fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, var.sqrt())
}
