//! `rekindle-train`: fine-tune a ResNet (`run`), or the embedded transfer-learning demo (`demo`).
//! `cargo xtask train` builds it with the backend asked for and runs it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use rekindle_model::{Arch, Backend, Stage};
use rekindle_train::catalog::optim::OptimizerKind;
use rekindle_train::catalog::prune::{self, PruneScope};
use rekindle_train::catalog::schedule::ScheduleKind;
use rekindle_train::catalog::scheduler::RunShape;
use rekindle_train::config::{DataKind, ModelSource, Strategy};
use rekindle_train::data::dataset::Dataset;
use rekindle_train::demo::Demo;
use rekindle_train::eval::tta::Tta;
use rekindle_train::eval::{EvalOptions, report};
use rekindle_train::report::plot;
use rekindle_train::run::dir::RunDir;
use rekindle_train::run::lr_find::LrFind;
use rekindle_train::run::plan::{Plan, run_shape};
use rekindle_train::run::summary;
use rekindle_train::{TrainConfig, train};

/// Keeps freed pages for reuse (see `rekindle_kernels::allocator`).
#[global_allocator]
static ALLOCATOR: rekindle_kernels::allocator::Allocator = rekindle_kernels::allocator::Allocator;

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
    /// Print and plot a config's learning rate per optimiser step and parameter group,
    /// without training.
    Schedule(ScheduleArgs),
    /// Learning-rate range test (fastai's lr_find): a short exponential sweep, a PNG and a
    /// suggested rate, to centre a search range or set train.lr.
    LrFind(LrFindArgs),
    /// Magnitude-prune a saved model to a target sparsity (one-shot), with a report per layer.
    Prune(PruneArgs),
    /// Evaluation report of a model file on labelled images: top-1/top-5, per-class
    /// precision, recall and F1, confusion matrix, calibration, the most confident mistakes.
    Eval(EvalArgs),
}

#[derive(Args)]
struct EvalArgs {
    /// A rekindle model file (model.bpk).
    #[arg(long)]
    model: PathBuf,
    /// Labelled images: DATA/<class>/*.png|jpg, folders named as the model's classes, or a
    /// .csv/.jsonl manifest (path, label, optional split; every row is evaluated, whatever its
    /// split; paths relative to the manifest's folder).
    #[arg(long)]
    data: PathBuf,
    /// Print the report as one JSON object on the last line of stdout.
    #[arg(long)]
    json: bool,
    /// Test-time augmentation: none, flip (and its mirror image) or five-crop.
    #[arg(long, value_enum, default_value = "none")]
    tta: Tta,
    /// Where the report's files go (default: eval/ beside the model file).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, help = rekindle_model::backend::HELP, value_parser = parse_name::<Backend>, default_value_t = Backend::default_compiled())]
    backend: Backend,
}

#[derive(Args)]
struct ScheduleArgs {
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

#[derive(Args)]
struct LrFindArgs {
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

#[derive(Args)]
struct PruneArgs {
    /// A rekindle model file (model.bpk).
    model: PathBuf,
    /// Fraction of convolution and linear weights set to zero, in [0, 1).
    #[arg(long)]
    sparsity: f64,
    /// global (smallest weights network-wide) or layer (the same fraction of every layer).
    #[arg(long, default_value = "global", value_parser = parse_scope)]
    scope: PruneScope,
    /// The pruned model file.
    #[arg(short, long)]
    output: PathBuf,
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
    /// Overrides run.backend.
    #[arg(long, long_help = rekindle_model::backend::HELP, value_parser = parse_name::<Backend>)]
    backend: Option<Backend>,
    /// Device indices, comma-separated; more than one trains data-parallel (run.devices).
    #[arg(long, value_delimiter = ',')]
    devices: Option<Vec<usize>>,
    /// Run directory (run.dir).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Starting weights: `random`, a rekindle model file or a .pth/.safetensors/.onnx
    /// (model.source).
    #[arg(long)]
    model: Option<String>,
    /// Architecture for random init, or to check a file against (model.arch).
    #[arg(long, value_parser = parse_name::<Arch>)]
    arch: Option<Arch>,
    /// Dataset folder or manifest file (data.root; replaces data.roots).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Dataset layout: folder, manifest (a .csv or .jsonl listing) or fashion-mnist (data.kind).
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
    #[arg(long, value_parser = parse_name::<Stage>)]
    freeze_to: Option<Stage>,
    /// Seed of every random choice (train.seed).
    #[arg(long)]
    seed: Option<u64>,
    /// sgd, adam, adamw, rmsprop, adagrad, with PyTorch's defaults for its options unless the
    /// config's [optim] names the same one (optim.name).
    #[arg(long, value_parser = parse_optimizer)]
    optimizer: Option<OptimizerKind>,
    /// Learning-rate schedule (schedule.name): constant, step, multistep, exponential,
    /// inverse-time, polynomial, cosine, cosine-restarts, one-cycle, plateau.
    #[arg(long, value_parser = parse_schedule)]
    schedule: Option<ScheduleKind>,
    /// Warmup length in the schedule's unit (schedule.warmup).
    #[arg(long)]
    warmup: Option<usize>,
}

#[derive(Args)]
struct DemoArgs {
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

/// A closed set's name read by its own `FromStr` (aliases and the list of valid names).
fn parse_name<T: std::str::FromStr<Err: std::fmt::Display>>(s: &str) -> Result<T, String> {
    s.parse().map_err(|e: T::Err| e.to_string())
}

fn parse_kind(s: &str) -> Result<DataKind, String> {
    TrainConfig::from_toml(&format!("[data]\nkind = \"{s}\""))
        .map(|c| c.data.kind)
        .map_err(|_| {
            format!("unknown data kind `{s}`; valid ones: folder, manifest, fashion-mnist")
        })
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

/// A command-line name read as the config reads `[table] key = "name"`, so both accept the
/// same spellings; anything else is an error naming `what` and listing `names`.
fn parse_as_config<T>(
    s: &str,
    what: &str,
    table: &str,
    key: &str,
    names: &str,
    pick: fn(TrainConfig) -> T,
) -> Result<T, String> {
    TrainConfig::from_toml(&format!("[{table}]\n{key} = \"{s}\""))
        .map(pick)
        .map_err(|_| format!("unknown {what} `{s}`; valid ones: {names}"))
}

fn parse_optimizer(s: &str) -> Result<OptimizerKind, String> {
    parse_as_config(s, "optimizer", "optim", "name", OptimizerKind::NAMES, |c| {
        c.optim.name
    })
}

fn parse_schedule(s: &str) -> Result<ScheduleKind, String> {
    parse_as_config(
        s,
        "schedule",
        "schedule",
        "name",
        ScheduleKind::NAMES,
        |c| c.schedule.name,
    )
}

fn parse_scope(s: &str) -> Result<PruneScope, String> {
    parse_as_config(s, "pruning scope", "prune", "scope", "global, layer", |c| {
        c.prune.scope
    })
}

fn effective_config(a: &RunArgs) -> Result<TrainConfig> {
    let mut c = match (&a.config, &a.resume) {
        (Some(path), _) => TrainConfig::from_file(path)?,
        (None, Some(dir)) => TrainConfig::from_file(&RunDir::new(dir).config())
            .with_context(|| format!("{} is not a run directory", dir.display()))?,
        (None, None) => TrainConfig::default(),
    };
    if let Some(dir) = &a.resume {
        c.run.dir = dir.clone();
    }
    if let Some(v) = a.backend {
        c.run.backend = v;
    }
    if let Some(v) = &a.devices {
        c.run.devices = v.clone();
    }
    if let Some(v) = &a.run_dir {
        c.run.dir = v.clone();
    }
    if let Some(v) = &a.model {
        c.model.source = ModelSource::from(v.clone());
    }
    if let Some(v) = a.arch {
        c.model.arch = Some(v);
    }
    if let Some(v) = &a.data {
        // The command line names the whole dataset: the config's extra roots go with its root.
        c.data.root = v.clone();
        c.data.roots.clear();
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
    if let Some(v) = a.freeze_to {
        c.train.freeze_to = v;
    }
    if let Some(v) = a.seed {
        c.train.seed = v;
    }
    if let Some(v) = a.optimizer {
        c.optim = c.optim.switched_to(v);
    }
    if let Some(v) = a.schedule {
        c.schedule.name = v;
    }
    if let Some(v) = a.warmup {
        c.schedule.warmup = v;
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
    if let Some(layers) = &out.sparsity {
        println!("sparsity of the exported model:\n{}", prune::report(layers));
    }
    println!(
        "run directory {}: {} ({:.0} s)",
        out.dir.display(),
        RunDir::CONTENTS,
        out.seconds
    );
    Ok(())
}

fn lr_find(a: LrFindArgs) -> Result<()> {
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
    let found = rekindle_train::run::lr_find::lr_find(&cfg, &sweep)?;
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

fn demo(a: DemoArgs) -> Result<()> {
    let cache = a.cache.unwrap_or_else(rekindle_train::demo::default_cache);
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

/// A config's plan with `steps` optimiser steps in all, or as many as its dataset gives.
fn schedule_plan(cfg: &TrainConfig, steps: Option<usize>) -> Result<Plan> {
    let t = &cfg.train;
    let shape = match steps {
        Some(n) => RunShape::new(&vec![n.div_ceil(t.epochs).max(1); t.epochs]),
        None => run_shape(cfg, Dataset::load(&cfg.data, t.seed)?.train.len()),
    };
    Ok(Plan::with_shape(cfg, shape.into())?)
}

fn schedule(a: ScheduleArgs) -> Result<()> {
    let cfg = match &a.config {
        Some(p) => TrainConfig::from_file(p)?,
        None => TrainConfig::default(),
    };
    cfg.validate()?;
    let plan = schedule_plan(&cfg, a.steps)?;
    let mults: Vec<f64> = plan.groups.iter().map(|g| g.mult).collect();
    let table =
        rekindle_train::catalog::scheduler::table(&cfg.schedule, &plan.shape, plan.lr, &mults);
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
        rekindle_train::report::plot::plot_schedule(path, "Learning rate", &series)
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

fn prune_model(a: PruneArgs) -> Result<()> {
    if !(0.0..1.0).contains(&a.sparsity) {
        anyhow::bail!("--sparsity must be in [0, 1), got {}", a.sparsity);
    }
    let device = rekindle_model::Backend::default_compiled().device_at(0)?;
    let (net, meta) = rekindle_model::load_model(&a.model, &device)?;
    let net = prune::prune(net, a.sparsity, a.scope);
    rekindle_model::save_model(&a.output, &net, &meta)?;
    print!("{}", prune::report(&prune::sparsity(&net)));
    println!("pruned model: {}", a.output.display());
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

fn eval(a: EvalArgs) -> Result<()> {
    let out = a.out.clone().unwrap_or_else(|| {
        let dir = a.model.parent().unwrap_or(std::path::Path::new("."));
        dir.join("eval")
    });
    let opts = EvalOptions {
        model: a.model,
        data: a.data,
        out,
        tta: a.tta,
        backend: a.backend,
    };
    let done = rekindle_train::eval::evaluate(&opts)?;
    let m = &done.metrics;
    eprintln!(
        "{} images: top-1 {:.2}%, top-5 {:.2}%, ECE {:.2}% (tta {:?})",
        m.images,
        100.0 * m.top1,
        100.0 * m.top5,
        100.0 * m.ece,
        opts.tta
    );
    for f in &done.files {
        eprintln!("  {}", f.display());
    }
    if a.json {
        println!("{}", report::to_json(m, opts.tta));
    }
    Ok(())
}

fn main() -> ExitCode {
    rekindle_kernels::allocator::keep_freed_pages();
    let result = match Cli::parse().command {
        Cmd::Run(a) => run(*a),
        Cmd::Demo(a) => demo(a),
        Cmd::Schedule(a) => schedule(a),
        Cmd::Prune(a) => prune_model(a),
        Cmd::LrFind(a) => lr_find(a),
        Cmd::Eval(a) => eval(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
