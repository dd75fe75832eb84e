//! `rekindle-train`: fine-tune a ResNet (`run`), or the embedded transfer-learning demo (`demo`).
//! `cargo xtask train` builds it with the backend asked for and runs it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use rekindle_train::config::{DataKind, Strategy};
use rekindle_train::demo::Demo;
use rekindle_train::run::{CONFIG_FILE, summary};
use rekindle_train::{TrainConfig, train};

#[derive(Parser)]
#[command(
    name = "rekindle-train",
    about = "Fine-tune a pretrained ResNet on Burn"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// One training run from a config file and overrides.
    Run(Box<RunArgs>),
    /// Transfer learning on Fashion-MNIST: pretrained vs from scratch, same budget.
    Demo(DemoArgs),
}

#[derive(Args)]
struct RunArgs {
    /// TOML config; every field has a default (`--print-config` shows them).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Continue the run in this directory from its last complete checkpoint.
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "config")]
    resume: Option<PathBuf>,
    /// Print the effective config and exit.
    #[arg(long)]
    print_config: bool,
    /// Backend: flex, ndarray, wgpu, tch, cuda (run.backend).
    #[arg(long)]
    backend: Option<String>,
    /// Device indices, comma-separated; more than one trains data-parallel (run.devices).
    #[arg(long, value_delimiter = ',')]
    devices: Option<Vec<usize>>,
    /// Run directory (run.dir).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Starting weights: `random`, a rekindle model file or a .pth/.safetensors (model.source).
    #[arg(long)]
    model: Option<String>,
    /// Architecture for random init, or to check a file against (model.arch).
    #[arg(long)]
    arch: Option<String>,
    /// Dataset directory (data.root).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Dataset layout: folder or fashion-mnist (data.kind).
    #[arg(long, value_parser = parse_kind)]
    data_kind: Option<DataKind>,
    /// Epochs (train.epochs).
    #[arg(long)]
    epochs: Option<usize>,
    /// Images per step (train.batch_size).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Learning rate (train.lr).
    #[arg(long)]
    lr: Option<f64>,
    /// full, feature-extraction, partial or gradual (train.strategy).
    #[arg(long, value_parser = parse_strategy)]
    strategy: Option<Strategy>,
    /// Last frozen stage for `partial`: stem, layer1..layer4 (train.freeze_to).
    #[arg(long)]
    freeze_to: Option<String>,
    /// Seed of every random choice (train.seed).
    #[arg(long)]
    seed: Option<u64>,
}

#[derive(Args)]
struct DemoArgs {
    /// Backend: flex, ndarray, wgpu, tch, cuda.
    #[arg(long, default_value = "flex")]
    backend: String,
    /// Where the fine-tuning runs go.
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    /// Where the pretrained model is cached (default: ~/.cache/rekindle/demo).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Labelled training images per class when fine-tuning.
    #[arg(long, default_value_t = 10)]
    labels_per_class: usize,
}

fn parse_kind(s: &str) -> Result<DataKind, String> {
    TrainConfig::from_toml(&format!("[data]\nkind = \"{s}\""))
        .map(|c| c.data.kind)
        .map_err(|_| format!("unknown data kind `{s}`; valid ones: folder, fashion-mnist"))
}

fn parse_strategy(s: &str) -> Result<Strategy, String> {
    TrainConfig::from_toml(&format!("[train]\nstrategy = \"{s}\""))
        .map(|c| c.train.strategy)
        .map_err(|_| {
            format!(
                "unknown strategy `{s}`; valid ones: full, feature-extraction, partial, gradual"
            )
        })
}

fn effective_config(a: &RunArgs) -> Result<TrainConfig> {
    let mut c = match (&a.config, &a.resume) {
        (Some(path), _) => TrainConfig::from_file(path)?,
        (None, Some(dir)) => TrainConfig::from_file(&dir.join(CONFIG_FILE))
            .with_context(|| format!("{} is not a run directory", dir.display()))?,
        (None, None) => TrainConfig::default(),
    };
    if let Some(dir) = &a.resume {
        c.run.dir = dir.clone();
    }
    if let Some(v) = &a.backend {
        c.run.backend = v.clone();
    }
    if let Some(v) = &a.devices {
        c.run.devices = v.clone();
    }
    if let Some(v) = &a.run_dir {
        c.run.dir = v.clone();
    }
    if let Some(v) = &a.model {
        c.model.source = v.clone();
    }
    if let Some(v) = &a.arch {
        c.model.arch = v.clone();
    }
    if let Some(v) = &a.data {
        c.data.root = v.clone();
    }
    if let Some(v) = a.data_kind {
        c.data.kind = v;
    }
    if let Some(v) = a.epochs {
        c.train.epochs = v;
    }
    if let Some(v) = a.batch_size {
        c.train.batch_size = v;
    }
    if let Some(v) = a.lr {
        c.train.lr = v;
    }
    if let Some(v) = a.strategy {
        c.train.strategy = v;
    }
    if let Some(v) = &a.freeze_to {
        c.train.freeze_to = v.clone();
    }
    if let Some(v) = a.seed {
        c.train.seed = v;
    }
    c.validate()?;
    Ok(c)
}

fn run(a: RunArgs) -> Result<()> {
    let cfg = effective_config(&a)?;
    if a.print_config {
        print!("{}", cfg.to_toml());
        return Ok(());
    }
    let out = train(&cfg, a.resume.is_some())?;
    println!("\n{}", summary(&out));
    println!(
        "run directory {}: config.toml, checkpoint/, metrics-steps.csv, metrics-epochs.csv, {} plot(s), model.bpk ({:.0} s)",
        out.dir.display(),
        out.plots.len(),
        out.seconds
    );
    Ok(())
}

fn demo(a: DemoArgs) -> Result<()> {
    let cache = a.cache.unwrap_or_else(|| {
        std::env::var_os("REKINDLE_CACHE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/rekindle")))
            .unwrap_or_else(|| PathBuf::from(".cache/rekindle"))
            .join("demo")
    });
    let d = Demo {
        out: a.out,
        cache,
        backend: a.backend,
        labels_per_class: a.labels_per_class,
    };
    let started = std::time::Instant::now();
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

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Cmd::Run(a) => run(*a),
        Cmd::Demo(a) => demo(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
