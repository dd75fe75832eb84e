//! `rekindle-fuzz` (`cargo xtask fuzz`): fuzz the targets, replay saved inputs, list targets.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use rekindle_fuzz::driver::{Limits, Plan, Report, fuzz_target};
use rekindle_fuzz::targets::{TARGETS, Target, find};
use rekindle_fuzz::worker::{WorkDir, catch_panics, fuzz, replay};

/// Refuses allocations past the worker's memory limit (see `rekindle_fuzz::memory`).
#[global_allocator]
static ALLOCATOR: rekindle_fuzz::memory::LimitedAlloc = rekindle_fuzz::memory::LimitedAlloc;

/// Inputs that once crashed a target, one folder per target, replayed by `cargo xtask test`.
const REGRESSIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/regressions");

#[derive(Parser)]
#[command(
    name = "rekindle-fuzz",
    about = "Fuzz what rekindle reads from strangers"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Fuzz targets (all when none is named) for a time each; exits 1 when anything crashed.
    Run(RunArgs),
    /// Run saved inputs once each (default: every file under fuzz/regressions/TARGET/).
    Replay(ReplayArgs),
    /// The targets and what each runs.
    List,
    /// One worker process (the driver starts these).
    #[command(hide = true)]
    Worker(WorkerArgs),
}

#[derive(Args)]
struct LimitArgs {
    /// Longest run of one input, in seconds: past it is a hang.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Most memory a worker may use, in MiB: past it is a crash.
    #[arg(long, default_value_t = 2048)]
    max_mb: usize,
}

impl LimitArgs {
    fn limits(&self) -> Result<Limits> {
        if !(self.timeout > 0.0 && self.timeout.is_finite()) {
            bail!(
                "--timeout must be a positive number of seconds, got {}",
                self.timeout
            );
        }
        Ok(Limits {
            timeout: Duration::from_secs_f64(self.timeout),
            max_mb: self.max_mb,
        })
    }
}

#[derive(Args)]
struct RunArgs {
    /// Targets to fuzz (`list` shows them); all when none is named.
    targets: Vec<String>,
    /// Seconds per target.
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// Most inputs per target, seeds included (as libFuzzer's -runs): the target ends at this
    /// count or at --seconds, whichever comes first. A run bounded by --runs alone does the same
    /// work on every machine.
    #[arg(long)]
    runs: Option<u64>,
    /// Seed of the first worker (each restart takes the next).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where workers keep their files and crashes are saved (default: TARGET_DIR/fuzz).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also write the reports as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also start from the files in this folder each target reads (e.g. $REKINDLE_FIXTURES:
    /// whole ResNets in every format).
    #[arg(long)]
    seeds: Option<PathBuf>,
    #[command(flatten)]
    limits: LimitArgs,
}

#[derive(Args)]
struct ReplayArgs {
    /// Files or folders named after their target (`regressions/onnx/x.bin`).
    paths: Vec<PathBuf>,
    /// Run every file through this target instead of the one its folder names.
    #[arg(long)]
    target: Option<String>,
    #[command(flatten)]
    limits: LimitArgs,
}

#[derive(Args)]
struct WorkerArgs {
    target: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    #[arg(long, default_value_t = u64::MAX)]
    runs: u64,
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, default_value_t = 2048)]
    max_mb: usize,
    #[arg(long)]
    seeds: Option<PathBuf>,
    /// Run these files once each instead of fuzzing.
    #[arg(long, num_args = 1..)]
    replay: Vec<PathBuf>,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Cmd::List => {
            for t in TARGETS.iter().filter(|t| !t.canary) {
                println!("{:<12} {}", t.name, t.about);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run(a) => run_targets(a),
        Cmd::Replay(a) => replay_files(a),
        Cmd::Worker(a) => worker(a),
    }
}

fn targets(names: &[String]) -> Result<Vec<&'static Target>> {
    if names.is_empty() {
        return Ok(TARGETS.iter().filter(|t| !t.canary).collect());
    }
    names
        .iter()
        .map(|n| find(n).map_err(anyhow::Error::msg))
        .collect()
}

fn out_dir(out: Option<PathBuf>) -> PathBuf {
    out.unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR").unwrap_or_else(|| "target".into());
        PathBuf::from(target).join("fuzz")
    })
}

fn run_targets(a: RunArgs) -> Result<ExitCode> {
    let limits = a.limits.limits()?;
    if !(a.seconds > 0.0 && a.seconds.is_finite()) {
        bail!("--seconds must be a positive number, got {}", a.seconds);
    }
    if a.runs == Some(0) {
        bail!("--runs must be at least 1, got 0");
    }
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    if let Some(dir) = &a.seeds
        && !dir.is_dir()
    {
        bail!("--seeds {}: not a folder", dir.display());
    }
    let plan = Plan {
        seconds: a.seconds,
        runs: a.runs,
        seed: a.seed,
        out: out_dir(a.out),
        seeds: a.seeds,
    };
    let mut reports = Vec::new();
    println!(
        "{:<12} {:>9} {:>8} {:>7} {:>10} {:>7}",
        "target", "execs", "exec/s", "corpus", "behaviours", "crashes"
    );
    for target in targets(&a.targets)? {
        let r = fuzz_target(&exe, target, &plan, limits).map_err(anyhow::Error::msg)?;
        println!(
            "{:<12} {:>9} {:>8.0} {:>7} {:>10} {:>7}",
            r.target,
            r.execs,
            r.execs as f64 / r.seconds.max(1e-9),
            r.corpus,
            r.behaviours,
            r.crashes.len()
        );
        for c in &r.crashes {
            println!("  {} {}: {}", c.kind, c.input.display(), c.message);
        }
        reports.push(r);
    }
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&reports)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let crashed = reports.iter().any(|r: &Report| !r.crashes.is_empty());
    Ok(if crashed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Every file under `paths` (default: the regressions), with the target its folder names.
fn inputs(a: &ReplayArgs) -> Result<Vec<(&'static Target, PathBuf)>> {
    let roots = if a.paths.is_empty() {
        vec![PathBuf::from(REGRESSIONS)]
    } else {
        a.paths.clone()
    };
    let mut files = Vec::new();
    for root in roots {
        collect(&root, &mut files)?;
    }
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let name = match &a.target {
                Some(t) => t.clone(),
                None => f
                    .parent()
                    .and_then(Path::file_name)
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            };
            let target = find(&name)
                .map_err(|e| anyhow::anyhow!("{}: {e} (name it with --target)", f.display()))?;
            Ok((target, f))
        })
        .collect()
}

fn collect(path: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).with_context(|| format!("{}", path.display()))? {
            collect(&entry?.path(), files)?;
        }
    } else if path.extension().is_none_or(|e| e != "txt" && e != "md") {
        files.push(path.to_path_buf());
    }
    Ok(())
}

/// Replays each file in its own worker, so an abort or a hang names its file.
fn replay_files(a: ReplayArgs) -> Result<ExitCode> {
    let limits = a.limits.limits()?;
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let dir = tempfile::tempdir()?;
    let mut failed = 0;
    let files = inputs(&a)?;
    for (target, file) in &files {
        let mut child = std::process::Command::new(&exe)
            .args(["worker", target.name, "--dir"])
            .arg(dir.path())
            .arg("--max-mb")
            .arg(limits.max_mb.to_string())
            .arg("--replay")
            .arg(file)
            .spawn()?;
        let status = wait_timeout(&mut child, limits.timeout + Duration::from_secs(60))?;
        match status {
            // 3: a panic, already reported on the worker's line.
            Some(s) if s.success() => {}
            Some(s) if s.code() == Some(3) => failed += 1,
            Some(s) => {
                failed += 1;
                println!(
                    "{{\"target\":\"{}\",\"file\":{:?},\"outcome\":\"crash\",\"message\":\"{s}\"}}",
                    target.name,
                    file.display().to_string()
                );
            }
            None => {
                failed += 1;
                println!(
                    "{{\"target\":\"{}\",\"file\":{:?},\"outcome\":\"hang\"}}",
                    target.name,
                    file.display().to_string()
                );
            }
        }
    }
    eprintln!("{} inputs replayed, {failed} crashed", files.len());
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn wait_timeout(
    child: &mut std::process::Child,
    limit: Duration,
) -> Result<Option<std::process::ExitStatus>> {
    let start = std::time::Instant::now();
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(Some(s));
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn worker(a: WorkerArgs) -> Result<ExitCode> {
    rekindle_fuzz::memory::set_limit(a.max_mb << 20);
    catch_panics();
    let target = find(&a.target).map_err(anyhow::Error::msg)?;
    if !a.replay.is_empty() {
        let panics = replay(target, &a.replay, &a.dir).map_err(anyhow::Error::msg)?;
        return Ok(if panics == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(3)
        });
    }
    fuzz(
        target,
        a.seed,
        (a.seconds, a.runs),
        &WorkDir(a.dir),
        a.seeds.as_deref(),
    )
    .map_err(anyhow::Error::msg)?;
    Ok(ExitCode::SUCCESS)
}
