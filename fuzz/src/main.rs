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

/// Replays the files in workers, one per run of files for the same target (a worker's start
/// costs more than most inputs: ~0.9 s with LibTorch linked in, on a 2-core EPYC). A worker
/// that aborts or hangs names the file it was on, and a fresh one takes the files after it.
fn replay_files(a: ReplayArgs) -> Result<ExitCode> {
    let limits = a.limits.limits()?;
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let dir = tempfile::tempdir()?;
    let files = inputs(&a)?;
    let (mut next, mut failed) = (0, 0);
    while next < files.len() {
        let target = files[next].0;
        let batch: Vec<&PathBuf> = files[next..]
            .iter()
            .take_while(|(t, _)| t.name == target.name)
            .map(|(_, f)| f)
            .collect();
        let (done, ended) = replay_batch(&exe, target, &batch, dir.path(), limits)?;
        failed += done.panics;
        next += done.files;
        if let Some(outcome) = ended {
            let file = batch[done.files].display().to_string();
            println!(
                "{}",
                serde_json::json!({"target": target.name, "file": file, "outcome": outcome.0, "message": outcome.1})
            );
            failed += 1;
            next += 1;
        }
    }
    eprintln!("{} inputs replayed, {failed} crashed", files.len());
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What a replay worker got through: files finished (their lines printed) and panics among them.
#[derive(Default)]
struct Replayed {
    files: usize,
    panics: usize,
}

/// Replays `files` in one worker, passing its lines on; `Some((outcome, message))` when it
/// crashed or hung on the file after those it finished.
fn replay_batch(
    exe: &Path,
    target: &Target,
    files: &[&PathBuf],
    dir: &Path,
    limits: Limits,
) -> Result<(Replayed, Option<(&'static str, String)>)> {
    let mut child = std::process::Command::new(exe)
        .args(["worker", target.name, "--dir"])
        .arg(dir)
        .arg("--max-mb")
        .arg(limits.max_mb.to_string())
        .arg("--replay")
        .args(files)
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().context("the worker's output")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            // Unreadable output, or the replay gave up on this worker.
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut done = Replayed::default();
    // Each file gets the time one file had in a worker of its own.
    let per_file = limits.timeout + Duration::from_secs(60);
    loop {
        match rx.recv_timeout(per_file) {
            Ok(line) => {
                // A file's line names its outcome; anything else a target prints passes through.
                let outcome = serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| v["outcome"].as_str().map(|o| o == "panic"));
                if let Some(panicked) = outcome {
                    done.panics += usize::from(panicked);
                    done.files += 1;
                }
                println!("{line}");
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                let message = format!("no outcome within {} s", per_file.as_secs());
                return Ok((done, Some(("hang", message))));
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait()?;
                // 3: panics, each already on its file's line.
                let clean = status.success() || status.code() == Some(3);
                if done.files == files.len() && !clean {
                    // Died on its way out: the last file is named a second time, as the crash.
                    done.files -= 1;
                    return Ok((
                        done,
                        Some(("crash", format!("after its outcome: {status}"))),
                    ));
                }
                let ended = (done.files < files.len()).then(|| ("crash", status.to_string()));
                return Ok((done, ended));
            }
        }
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
