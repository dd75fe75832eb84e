//! The driver: runs each target's worker as a child process and watches it. A worker that
//! aborts (a failed allocation past the memory limit, a stack overflow), runs one input past
//! the time limit, or grows past the memory limit is a crash: the driver saves the input it was
//! running and starts a fresh worker with the next seed, until the target's time or number of
//! runs is up.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::targets::Target;
use crate::worker::{Stats, WorkDir, save_crash};

/// The limits every input runs under.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest run of one input.
    pub timeout: Duration,
    /// Most memory a worker may hold (allocations past it are refused; resident memory past
    /// it ends the worker).
    pub max_mb: usize,
}

/// Where a run starts and keeps its files.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Seconds per target.
    pub seconds: f64,
    /// Most inputs per target, seeds included (`--runs`): a run that depends on the input
    /// count alone, not on the machine's speed.
    pub runs: Option<u64>,
    /// The first worker's seed; each restart takes the next.
    pub seed: u64,
    /// Worker folders and saved crashes go under `out/TARGET/`.
    pub out: PathBuf,
    /// More seed files (`--seeds DIR`).
    pub seeds: Option<PathBuf>,
}

/// What one target's fuzzing found.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The target.
    pub target: &'static str,
    /// Inputs run.
    pub execs: u64,
    /// Seconds spent.
    pub seconds: f64,
    /// Inputs kept for mutation (the last worker's).
    pub corpus: usize,
    /// Distinct outcomes seen (the last worker's).
    pub behaviours: usize,
    /// Seed inputs among the execs (the last worker's); past them, inputs were mutated.
    pub seeds: usize,
    /// Each distinct crash: its kind, message and input, under `out/TARGET/crashes/`.
    pub crashes: Vec<Crash>,
}

/// One crash found.
#[derive(Clone, Debug, Serialize)]
pub struct Crash {
    /// `panic`, `abort`, `hang` or `memory`.
    pub kind: String,
    /// What happened (the panic message, or the end of the worker's error output).
    pub message: String,
    /// The input, saved.
    pub input: PathBuf,
}

/// Fuzzes `target` as `plan` says, with workers of `exe`.
pub fn fuzz_target(
    exe: &Path,
    target: &'static Target,
    plan: &Plan,
    limits: Limits,
) -> Result<Report, String> {
    let (seconds, out) = (plan.seconds, &plan.out);
    let dir = WorkDir(out.join(target.name));
    // A report covers this run only.
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(dir.crashes()).map_err(|e| format!("{}: {e}", out.display()))?;
    let started = Instant::now();
    let mut execs = 0;
    let mut last = Stats::default();
    let mut restart = 0;
    let runs = plan.runs.unwrap_or(u64::MAX);
    while started.elapsed().as_secs_f64() < seconds && execs < runs {
        let left = seconds - started.elapsed().as_secs_f64();
        let _ = std::fs::remove_file(dir.current());
        let _ = std::fs::remove_file(dir.stats());
        let mut command = Command::new(exe);
        command.args(["worker", target.name]);
        if let Some(seeds) = &plan.seeds {
            command.arg("--seeds").arg(seeds);
        }
        let child = command
            .arg("--seed")
            .arg((plan.seed + restart).to_string())
            .arg("--seconds")
            .arg(format!("{left:.3}"))
            .arg("--runs")
            .arg((runs - execs).to_string())
            .arg("--dir")
            .arg(&dir.0)
            .arg("--max-mb")
            .arg(limits.max_mb.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        let ended = watch(child, &dir, left, limits)?;
        if let Ok(text) = std::fs::read_to_string(dir.stats()) {
            last = serde_json::from_str(&text).unwrap_or_default();
            execs += last.execs;
        }
        if let Some((kind, message)) = ended {
            let input = std::fs::read(dir.current()).unwrap_or_default();
            save_crash(&dir, &kind, &message, &input)?;
            execs += 1; // the input that ended it
        }
        restart += 1;
    }
    Ok(Report {
        target: target.name,
        execs,
        seconds: started.elapsed().as_secs_f64(),
        corpus: last.corpus,
        behaviours: last.behaviours,
        seeds: last.seeds,
        crashes: crashes(&dir)?,
    })
}

/// Waits for a worker; `Some((kind, message))` when it crashed rather than finished.
fn watch(
    mut child: Child,
    dir: &WorkDir,
    left: f64,
    limits: Limits,
) -> Result<Option<(String, String)>, String> {
    let pid = child.id();
    let stderr = child.stderr.take();
    // Drained on a thread so a chatty worker never blocks on a full pipe.
    let tail = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut s) = stderr {
            let _ = std::io::Read::read_to_string(&mut s, &mut text);
        }
        text
    });
    // Setting up (a model to build, a service to start) gets a minute on top of its time.
    let hard_stop = Instant::now() + Duration::from_secs_f64(left + 60.0) + limits.timeout;
    let crashed = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            let text = tail.join().unwrap_or_default();
            if status.success() {
                break None;
            }
            break Some(summarise(&text, status));
        }
        let started = || {
            std::fs::metadata(dir.current())
                .and_then(|m| m.modified())
                .ok()
        };
        let began = started();
        let stuck = began
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age > limits.timeout);
        // Stopped first, then checked again: an input that ended just now was slow, not stuck.
        if stuck {
            stop(pid, true);
            if started() != began {
                stop(pid, false);
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        }
        let rss_mb = resident_mb(pid);
        let problem = if stuck {
            Some(("hang", format!("one input ran past {:?}", limits.timeout)))
        } else if rss_mb > limits.max_mb {
            Some((
                "memory",
                format!("resident memory {rss_mb} MiB, over {} MiB", limits.max_mb),
            ))
        } else if Instant::now() > hard_stop {
            Some(("hang", "the worker did not finish in its time".into()))
        } else {
            None
        };
        if let Some((kind, message)) = problem {
            let _ = child.kill();
            let _ = child.wait();
            break Some((kind.to_string(), message));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok(crashed)
}

/// The kind and message of a worker that ended badly, read from its whole stderr: an allocation
/// refused by the limit aborts with std's "memory allocation of N bytes failed", which a
/// backtrace (`RUST_BACKTRACE=1`) or other late output can push far from the last lines.
fn summarise(text: &str, status: std::process::ExitStatus) -> (String, String) {
    let status = status.to_string();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !is_backtrace_line(l))
        .collect();
    if let Some(alloc) = lines.iter().find(|l| l.contains("memory allocation of")) {
        return (
            "memory".into(),
            format!("worker ended with {status}: {}", alloc.trim()),
        );
    }
    let tail = lines[lines.len().saturating_sub(3)..].join(" | ");
    (
        "abort".into(),
        format!("worker ended with {status}: {tail}"),
    )
}

/// Whether a stderr line belongs to a backtrace (`stack backtrace:`, numbered frames, their
/// `at file:line` lines, and std's notes about them) rather than to what went wrong.
fn is_backtrace_line(line: &str) -> bool {
    let t = line.trim_start();
    let numbered_frame = t
        .split_once(':')
        .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
    t.starts_with("stack backtrace:")
        || t.starts_with("at ")
        || t.starts_with("note: Some details are omitted")
        || t.starts_with("note: run with `RUST_BACKTRACE")
        || numbered_frame
}

/// Pauses (SIGSTOP) or resumes (SIGCONT) a worker.
fn stop(pid: u32, pause: bool) {
    let signal = if pause { libc::SIGSTOP } else { libc::SIGCONT };
    // SAFETY: kill(2) with a child's pid and a signal number has no memory effects.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// A process's resident memory in MiB (0 when unknown).
fn resident_mb(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<usize>().ok()
        })
        .map_or(0, |kb| kb / 1024)
}

/// The crashes saved under `dir`, sorted by file name.
fn crashes(dir: &WorkDir) -> Result<Vec<Crash>, String> {
    let mut found = Vec::new();
    let entries = std::fs::read_dir(dir.crashes()).map_err(|e| e.to_string())?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "txt") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let (kind, message) = text.trim().split_once(": ").unwrap_or(("crash", &text));
            found.push(Crash {
                kind: kind.to_string(),
                message: message.to_string(),
                input: path.with_extension("bin"),
            });
        }
    }
    found.sort_by(|a, b| a.input.cmp(&b.input));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn a_refused_allocation_is_memory_whatever_follows_it() {
        let aborted = std::process::ExitStatus::from_raw(6);
        let mut text =
            String::from("worker starting\nmemory allocation of 8589934592 bytes failed\n");
        text += "stack backtrace:\n";
        for i in 0..40 {
            text += &format!(
                "  {i}: std::alloc::rust_oom\n             at /rustc/library/std/src/alloc.rs:{i}:5\n"
            );
        }
        text += "note: Some details are omitted, run with `RUST_BACKTRACE=full` for a verbose backtrace.\n";
        let (kind, message) = summarise(&text, aborted);
        assert_eq!(kind, "memory");
        assert!(
            message.contains("memory allocation of 8589934592 bytes failed"),
            "{message}"
        );
        let (kind, message) = summarise("one\ntwo\nthree\nfour\n", aborted);
        assert_eq!(kind, "abort");
        assert!(message.ends_with("two | three | four"), "{message}");
    }
}
