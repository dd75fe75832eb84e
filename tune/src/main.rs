//! `rekindle-tune`: hyper-parameter search over training runs. `cargo xtask tune` builds it with
//! the backend asked for and runs it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use rekindle_model::Backend;
use rekindle_train::durable::dir::RunDir;
use rekindle_tune::demo::TuneDemo;
use rekindle_tune::report::ReportOptions;
use rekindle_tune::worker::INTERRUPTED;
use rekindle_tune::{Launch, Storage, Store, Study, TrialState, run_trial};

/// Keeps freed pages for reuse (see `rekindle_kernels::allocator`): trials train in this binary.
#[global_allocator]
static ALLOCATOR: rekindle_kernels::allocator::Allocator = rekindle_kernels::allocator::Allocator;

#[derive(Parser)]
#[command(
    name = "rekindle-tune",
    about = "Hyper-parameter search over rekindle training runs"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run (or resume, or join) a study; the last stdout line is a JSON summary.
    Run(RunArgs),
    /// A search over the training demo's fine-tune, its winner checked on a held-out test split.
    Demo(DemoArgs),
    /// A study's report: best configs, plots, and the top configs re-run with several seeds.
    Report(ReportArgs),
    /// One training run from a config (what a report's re-run is, in a child process).
    #[command(hide = true)]
    Retrain(RetrainArgs),
    /// One trial (what a worker runs in a child process).
    #[command(hide = true)]
    Trial(TrialArgs),
}

#[derive(Args)]
struct RunArgs {
    /// The study file (TOML).
    study: PathBuf,
    /// Trials side by side on this machine, splitting its cores.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Where the trials are stored: a SQLite file (`sqlite:PATH` or a path; default
    /// DIR/study.db) or a PostgreSQL database (`postgres://user:password@host/db`), which
    /// workers on other machines join with the same study file and URL.
    #[arg(long)]
    storage: Option<String>,
    /// Backend of every trial (overrides the base config's run.backend).
    #[arg(long, long_help = rekindle_model::backend::HELP, value_parser = parse_backend)]
    backend: Option<Backend>,
    /// The study directory (default: runs/ and the study file's name).
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Args)]
struct DemoArgs {
    /// Trials side by side.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Trials in the study.
    #[arg(long, default_value_t = 30)]
    trials: usize,
    /// Backend of every run.
    #[arg(long, default_value_t = Backend::default_compiled(), value_parser = parse_backend)]
    backend: Backend,
    /// Where the study, the default run and the base config go (an existing study there is
    /// resumed).
    #[arg(long, default_value = "runs/tune-demo")]
    out: PathBuf,
    /// Where the training demo caches its pretrained model (default: ~/.cache/rekindle/demo).
    #[arg(long)]
    cache: Option<PathBuf>,
}

#[derive(Args)]
struct ReportArgs {
    /// The study directory (what `tune` printed as "study").
    dir: PathBuf,
    /// Best complete trials written out as ready-to-run configs.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// How many of the best are trained again with other seeds (0: none). Each is `--seeds`
    /// whole training runs: the defaults train 9.
    #[arg(long, default_value_t = 3)]
    rerun: usize,
    /// Seeds per re-run config.
    #[arg(long, default_value_t = 3)]
    seeds: usize,
    /// Re-runs side by side.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Backend of the re-runs (overrides their run.backend).
    #[arg(long, long_help = rekindle_model::backend::HELP, value_parser = parse_backend)]
    backend: Option<Backend>,
    /// Where the trials are stored, as given to `tune` (default: DIR/study.db).
    #[arg(long)]
    storage: Option<String>,
}

#[derive(Args)]
struct RetrainArgs {
    #[arg(long)]
    config: PathBuf,
}

#[derive(Args)]
struct TrialArgs {
    study: PathBuf,
    #[arg(long)]
    storage: String,
    #[arg(long)]
    trial: i64,
    #[arg(long)]
    worker: String,
    #[arg(long)]
    config: PathBuf,
}

fn parse_backend(s: &str) -> Result<Backend, String> {
    s.parse()
        .map_err(|e: <Backend as std::str::FromStr>::Err| e.to_string())
}

/// This machine's name, for worker names.
fn host() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "local".into())
}

fn run(a: RunArgs) -> Result<()> {
    let study = Study::load(&a.study)?;
    let dir = a.dir.clone().unwrap_or_else(|| {
        let stem = a.study.file_stem().unwrap_or_default();
        PathBuf::from("runs").join(stem)
    });
    let launch = Launch {
        storage: Storage::parse(a.storage.as_deref(), &dir, &study.name)
            .map_err(anyhow::Error::msg)?,
        study_file: a.study.clone(),
        dir,
        workers: a.workers,
        backend: a.backend,
        program: std::env::current_exe().context("locating rekindle-tune")?,
        name: format!("{}:{}", host(), std::process::id()),
    };
    let summary = launch.run(&study, stop_on_ctrl_c()?)?;
    eprintln!("{}", summary.table());
    println!("{}", summary.json());
    if stop_on_ctrl_c()?.load(Ordering::SeqCst) {
        std::process::exit(INTERRUPTED);
    }
    Ok(())
}

/// Set by Ctrl-C: no new trial starts, and running ones stop after their step, resumable.
fn stop_on_ctrl_c() -> Result<&'static AtomicBool> {
    static STOP: AtomicBool = AtomicBool::new(false);
    static INSTALLED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            match ctrlc::set_handler(|| {
                eprintln!("\nstopping: running trials stop after their step and can be resumed");
                STOP.store(true, Ordering::SeqCst);
            }) {
                // The demo's in-process pretraining installed the training's handler, which
                // ends this process on Ctrl-C between runs: the trial processes die with it
                // and the next `tune` resumes them.
                Ok(()) | Err(ctrlc::Error::MultipleHandlers) => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        })
        .clone()
        .map_err(|e| anyhow::anyhow!("installing the Ctrl-C handler: {e}"))?;
    Ok(&STOP)
}

fn demo(a: DemoArgs) -> Result<()> {
    let cache = a.cache.unwrap_or_else(rekindle_train::demo::default_cache);
    let demo = TuneDemo {
        out: a.out,
        cache,
        backend: a.backend,
        workers: a.workers,
        trials: a.trials,
    };
    let program = std::env::current_exe().context("locating rekindle-tune")?;
    let name = format!("{}:{}", host(), std::process::id());
    // Pretraining first: until our handler is installed, Ctrl-C stops it as any run.
    let pretrained = demo.pretrained()?;
    let r = demo.run(&pretrained, &program, &name, stop_on_ctrl_c()?)?;
    eprintln!("{}", r.summary.table());
    println!("{}\n", r.table());
    let json = serde_json::json!({
        "study": r.summary.dir.display().to_string(),
        "trials": r.summary.trials.len(),
        "default": {"valid": r.valid.0, "test": r.test.0},
        "best": {
            "trial": r.summary.best.as_ref().map(|(t, _)| t.id),
            "valid": r.valid.1,
            "test": r.test.1,
            "config": r.summary.best.as_ref().map(|(_, c)| c.display().to_string()),
        },
        "test_images": r.test_images,
        "search_seconds": r.seconds.0,
        "seconds": r.seconds.1,
    });
    println!("{json}");
    Ok(())
}

fn report(a: ReportArgs) -> Result<()> {
    if !a.dir.join(rekindle_tune::RESOLVED).exists() {
        bail!(
            "{}: not a study directory (no {})",
            a.dir.display(),
            rekindle_tune::RESOLVED
        );
    }
    let opts = ReportOptions {
        top: a.top.max(a.rerun),
        rerun: a.rerun,
        seeds: a.seeds.max(1),
        workers: a.workers.max(1),
        backend: a.backend,
        program: std::env::current_exe().context("locating rekindle-tune")?,
        storage: a.storage.clone(),
    };
    // Re-runs are whole trainings: say how many before the first starts.
    if opts.rerun > 0 {
        eprintln!(
            "report: training the {} best configs again with {} seeds each: {} runs, {} at a \
             time (finished ones are kept and not run again); --rerun 0 writes the report alone",
            opts.rerun,
            opts.seeds,
            opts.rerun * opts.seeds,
            opts.workers
        );
    }
    let r = rekindle_tune::report::report(&a.dir, &opts)?;
    let study = Study::load(&a.dir.join(rekindle_tune::RESOLVED))?;
    eprintln!("{}", r.markdown(&study));
    println!("{}", r.json());
    Ok(())
}

/// A re-run: an ordinary training run, resumed when its directory holds a checkpoint, skipped
/// when it already exported its model.
fn retrain(a: RetrainArgs) -> Result<()> {
    die_with_parent();
    let cfg = rekindle_tune::TrainConfig::from_file(&a.config)?;
    let dir = RunDir::new(&cfg.run.dir);
    if dir.model().exists() {
        // Done by an earlier report.
        return Ok(());
    }
    let resume = dir.last_checkpoint().is_some();
    rekindle_train::train(&cfg, resume)?;
    Ok(())
}

/// Exits when the parent process is gone (it was killed): a child never trains unwatched.
fn die_with_parent() {
    let parent = std::os::unix::process::parent_id();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_millis(50));
            if std::os::unix::process::parent_id() != parent {
                std::process::exit(INTERRUPTED);
            }
        }
    });
}

/// A trial process: dies with its worker, so that a killed worker's trial is not trained twice.
fn trial(a: TrialArgs) -> Result<ExitCode> {
    die_with_parent();
    let study = Study::load(&a.study)?;
    let dir = a.study.parent().unwrap_or(Path::new("."));
    let storage = Storage::parse(Some(&a.storage), dir, &study.name).map_err(anyhow::Error::msg)?;
    let store = Store::open(&storage)?;
    Ok(
        match run_trial(&study, store, a.trial, &a.worker, &a.config)? {
            TrialState::Running => ExitCode::from(INTERRUPTED as u8),
            _ => ExitCode::SUCCESS,
        },
    )
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Cmd::Run(a) => run(a).map(|()| ExitCode::SUCCESS),
        Cmd::Demo(a) => demo(a).map(|()| ExitCode::SUCCESS),
        Cmd::Report(a) => report(a).map(|()| ExitCode::SUCCESS),
        Cmd::Retrain(a) => retrain(a).map(|()| ExitCode::SUCCESS),
        Cmd::Trial(a) => trial(a),
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::FAILURE
    })
}
