//! `rekindle-tune`: hyper-parameter search over training runs. `cargo xtask tune` builds it with
//! the backend asked for and runs it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use rekindle_model::Backend;
use rekindle_tune::worker::{INTERRUPTED, Workers};
use rekindle_tune::{Store, Study, TrialState, run_trial, summary};

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
    /// DIR/study.db).
    #[arg(long)]
    storage: Option<String>,
    /// Backend of every trial (overrides the base config's run.backend).
    #[arg(long, value_parser = parse_backend)]
    backend: Option<Backend>,
    /// The study directory (default: runs/ and the study file's name).
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Args)]
struct TrialArgs {
    study: PathBuf,
    #[arg(long)]
    db: PathBuf,
    #[arg(long)]
    trial: i64,
    #[arg(long)]
    config: PathBuf,
}

fn parse_backend(s: &str) -> Result<Backend, String> {
    s.parse()
        .map_err(|e: <Backend as std::str::FromStr>::Err| e.to_string())
}

/// The SQLite file `--storage` names.
fn storage(arg: Option<&str>, dir: &Path) -> Result<PathBuf> {
    let Some(url) = arg else {
        return Ok(dir.join("study.db"));
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        bail!("--storage {url}: PostgreSQL storage is not built yet; use a SQLite file");
    }
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    if path.is_empty() {
        bail!("--storage {url}: no file named");
    }
    Ok(PathBuf::from(path))
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
    if a.workers == 0 {
        bail!("--workers must be at least 1");
    }
    let dir = a.dir.clone().unwrap_or_else(|| {
        let stem = a.study.file_stem().unwrap_or_default();
        PathBuf::from("runs").join(stem)
    });
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let db = storage(a.storage.as_deref(), &dir)?;
    // Opened here so that an unreachable or foreign database stops us before any trial.
    Store::open(&db)?.bind(&study.fingerprint())?;
    static STOP: AtomicBool = AtomicBool::new(false);
    ctrlc::set_handler(|| {
        eprintln!("\nstopping: running trials stop after their step and can be resumed");
        STOP.store(true, Ordering::SeqCst);
    })
    .context("installing the Ctrl-C handler")?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = Workers {
        study: &study,
        study_file: std::path::absolute(&a.study)?,
        dir: dir.clone(),
        db: db.clone(),
        backend: a.backend,
        program: std::env::current_exe().context("locating rekindle-tune")?,
        threads: (cores / a.workers).max(1),
        deadline: study
            .section
            .timeout
            .map(|t| Instant::now() + Duration::from_secs_f64(t)),
        stop: &STOP,
    };
    let host = host();
    let pid = std::process::id();
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..a.workers)
            .map(|i| {
                let (workers, name) = (&workers, format!("{host}:{pid}:{i}"));
                s.spawn(move || workers.work(&name).map_err(anyhow::Error::from))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a worker thread panicked")))
            })
            .collect()
    });
    for r in results {
        r?;
    }
    let store = Store::open(&db)?;
    let s = summary(&store, &dir, study.section.objective)?;
    eprintln!("{}", s.table());
    println!("{}", s.json());
    if STOP.load(Ordering::SeqCst) {
        std::process::exit(INTERRUPTED);
    }
    Ok(())
}

/// A trial process: dies with its worker, so that a killed worker's trial is not trained twice.
fn trial(a: TrialArgs) -> Result<ExitCode> {
    let parent = std::os::unix::process::parent_id();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_millis(50));
            if std::os::unix::process::parent_id() != parent {
                std::process::exit(INTERRUPTED);
            }
        }
    });
    let study = Study::load(&a.study)?;
    let store = Store::open(&a.db)?;
    Ok(match run_trial(&study, store, a.trial, &a.config)? {
        TrialState::Running => ExitCode::from(INTERRUPTED as u8),
        _ => ExitCode::SUCCESS,
    })
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Cmd::Run(a) => run(a).map(|()| ExitCode::SUCCESS),
        Cmd::Trial(a) => trial(a),
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::FAILURE
    })
}
