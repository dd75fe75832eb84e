//! A fuzzing worker: one process running one target's inputs in a loop, under the driver's
//! eye. Panics are caught here (on any thread, through the panic hook); aborts, hangs and
//! memory blow-ups end the process, and the driver reads the input that did it from `current`.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::mutate::Mutator;
use crate::targets::{Runner, Target};

/// The first panic message since the last [`take_panic`], from any thread.
static PANIC: Mutex<Option<String>> = Mutex::new(None);

/// The most inputs kept for mutation: seeds, then inputs that behaved in a new way.
const MAX_CORPUS: usize = 512;

/// What a worker has done so far, written to `stats.json` for the driver.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Stats {
    /// Inputs run.
    pub execs: u64,
    /// Inputs that panicked.
    pub panics: u64,
    /// Inputs kept for mutation.
    pub corpus: usize,
    /// Distinct outcomes seen (accepted, or each refusal with its numbers masked).
    pub behaviours: usize,
    /// Seed inputs, run first; the rest were mutated.
    pub seeds: usize,
}

/// The files of a worker's folder.
pub struct WorkDir(pub PathBuf);

impl WorkDir {
    /// The input being run: written before each run, so it survives an abort.
    pub fn current(&self) -> PathBuf {
        self.0.join("current")
    }
    /// Makes `input` the current one whole: written beside and renamed, so the driver never
    /// reads half of it, and its time says when its run began.
    pub fn set_current(&self, input: &[u8]) -> Result<(), String> {
        let next = self.0.join("current.next");
        std::fs::write(&next, input)
            .and_then(|()| std::fs::rename(&next, self.current()))
            .map_err(|e| format!("{}: {e}", next.display()))
    }

    /// The worker's counts.
    pub fn stats(&self) -> PathBuf {
        self.0.join("stats.json")
    }
    /// Where crashing inputs go, with a `.txt` beside each saying what happened.
    pub fn crashes(&self) -> PathBuf {
        self.0.join("crashes")
    }
}

/// Records panics (with their place) instead of printing each one.
pub fn catch_panics() {
    std::panic::set_hook(Box::new(|info| {
        let message = match info.payload().downcast_ref::<&str>() {
            Some(s) => s.to_string(),
            None => info
                .payload()
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "a panic without a message".into()),
        };
        let place = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        if let Ok(mut slot) = PANIC.lock() {
            slot.get_or_insert(format!("panicked at {place}: {message}"));
        }
    }));
}

fn take_panic() -> Option<String> {
    PANIC.lock().ok().and_then(|mut slot| slot.take())
}

/// Runs `input`: the target's own result, or `Err` with the message of a panic.
pub fn run_one(runner: &Runner, input: &[u8]) -> Result<Result<(), String>, String> {
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| runner.run(input)));
    // A panic on another thread (a decoder's pool, the service's tasks) reaches only the hook.
    match (take_panic(), outcome) {
        (Some(message), _) => Err(message),
        (None, Ok(result)) => Ok(result),
        (None, Err(_)) => Err("panicked (no message)".into()),
    }
}

/// An outcome with its numbers masked: a new one means the input reached a new check.
fn behaviour(result: &Result<(), String>) -> String {
    match result {
        Ok(()) => "ok".into(),
        Err(e) => e
            .chars()
            .map(|c| if c.is_ascii_digit() { '#' } else { c })
            .take(120)
            .collect(),
    }
}

/// Fuzzes `target` for `seconds` or `runs` inputs, whichever ends first, from `seed`, in
/// `dir`, starting from its seeds and any in `extra_seeds`.
pub fn fuzz(
    target: &'static Target,
    seed: u64,
    (seconds, runs): (f64, u64),
    dir: &WorkDir,
    extra_seeds: Option<&Path>,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    std::fs::create_dir_all(dir.crashes()).map_err(|e| e.to_string())?;
    let runner = Runner::with_seeds(target, extra_seeds)?;
    let mut corpus = runner.seeds();
    let seeds = corpus.len();
    let mut mutator = Mutator::new(seed, target.structure);
    mutator.max_len = corpus.iter().map(Vec::len).max().unwrap_or(0).max(4096) * 2;
    let mut seen = HashSet::new();
    let mut stats = Stats {
        seeds,
        ..Stats::default()
    };
    let mut last_write = Instant::now();
    while Instant::now() < deadline && stats.execs < runs {
        let i = stats.execs as usize;
        let input = if i < seeds {
            corpus[i].clone()
        } else {
            let a = mutator.rng().random_range(0..corpus.len());
            let b = mutator.rng().random_range(0..corpus.len());
            mutator.mutate(&corpus[a], &corpus[b])
        };
        dir.set_current(&input)?;
        match run_one(&runner, &input) {
            Err(message) => {
                stats.panics += 1;
                save_crash(dir, "panic", &message, &input)?;
            }
            Ok(result) => {
                if seen.insert(behaviour(&result)) && corpus.len() < MAX_CORPUS && i >= seeds {
                    corpus.push(input);
                }
            }
        }
        stats.execs += 1;
        if last_write.elapsed() > Duration::from_millis(500) {
            stats.corpus = corpus.len();
            stats.behaviours = seen.len();
            write_stats(dir, &stats)?;
            last_write = Instant::now();
        }
    }
    stats.corpus = corpus.len();
    stats.behaviours = seen.len();
    write_stats(dir, &stats)
}

fn write_stats(dir: &WorkDir, stats: &Stats) -> Result<(), String> {
    let json = serde_json::to_string(stats).map_err(|e| e.to_string())?;
    std::fs::write(dir.stats(), json).map_err(|e| e.to_string())
}

/// Saves a crashing input under a name made from what happened, so one bug is one file.
pub fn save_crash(dir: &WorkDir, kind: &str, message: &str, input: &[u8]) -> Result<(), String> {
    let key: String = message
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_ascii_digit())
        .collect();
    let name = format!("{kind}-{:08x}", crc32fast::hash(key.as_bytes()));
    let path = dir.crashes().join(&name);
    if !path.with_extension("bin").exists() {
        std::fs::write(path.with_extension("bin"), input).map_err(|e| e.to_string())?;
        std::fs::write(path.with_extension("txt"), format!("{kind}: {message}\n"))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Runs each file once through `target` and prints one JSON line per file: `ok`, `error`
/// (with the message) or `panic`. Returns how many panicked.
pub fn replay(target: &'static Target, files: &[PathBuf], dir: &Path) -> Result<usize, String> {
    let runner = Runner::new(target)?;
    let current = WorkDir(dir.to_path_buf()).current();
    let mut panics = 0;
    for file in files {
        let input = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
        std::fs::write(&current, &input).map_err(|e| e.to_string())?;
        let (outcome, message) = match run_one(&runner, &input) {
            Ok(Ok(())) => ("ok", String::new()),
            Ok(Err(e)) => ("error", e),
            Err(p) => {
                panics += 1;
                ("panic", p)
            }
        };
        let line = serde_json::json!({
            "target": target.name, "file": file.display().to_string(),
            "outcome": outcome, "message": message,
        });
        println!("{line}");
    }
    Ok(panics)
}
