//! A worker: claims trials from the store one after another (a stale one first, else a new
//! point) and runs each in a child process, beating the trial's heart while it trains. Several
//! workers, in one process or on many machines, share a study through its store alone.

use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rekindle_model::Backend;

use crate::error::TuneError;
use crate::sampler::{budget, propose};
use crate::sql::Storage;
use crate::store::{Store, Trial, TrialState};
use crate::study::Study;
use crate::trial::trial_config;

/// The exit code of a trial process stopped by Ctrl-C, its trial left to resume.
pub const INTERRUPTED: i32 = 130;

/// Missed heartbeats after which a running trial counts as abandoned.
const STALE_BEATS: u64 = 3;

/// What every worker of one `tune` invocation shares.
pub struct Workers<'a> {
    /// The study, read and checked.
    pub study: &'a Study,
    /// Its file, which the trial processes read again.
    pub study_file: PathBuf,
    /// The study directory, holding `trials/`.
    pub dir: PathBuf,
    /// Where the study's trials are stored.
    pub storage: Storage,
    /// Overrides the trials' `run.backend`.
    pub backend: Option<Backend>,
    /// The program whose `trial` subcommand runs one trial (this one).
    pub program: PathBuf,
    /// Rayon threads per trial process.
    pub threads: usize,
    /// No new trial after this moment.
    pub deadline: Option<Instant>,
    /// Set on Ctrl-C: finish nothing new, give running trials back.
    pub stop: &'a AtomicBool,
}

/// Trial `id`'s run directory in study directory `dir`.
pub fn trial_dir(dir: &Path, id: i64) -> PathBuf {
    dir.join("trials").join(format!("{id:04}"))
}

/// Seconds since the epoch: heartbeats compare across machines.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Workers<'_> {
    /// Runs worker `name` until the study holds its budget of trials and none is running.
    pub fn work(&self, name: &str) -> Result<(), TuneError> {
        let mut store = Store::open(&self.storage)?;
        let beat = self.study.section.heartbeat as i64;
        let budget = budget(self.study);
        while !self.stop.load(Ordering::SeqCst) {
            if let Some(trial) = store.take_over(name, now(), beat * STALE_BEATS as i64)? {
                eprintln!(
                    "[{name}] taking over trial {} (its worker stopped)",
                    trial.id
                );
                self.run(&store, &trial, name)?;
                continue;
            }
            let open = self.deadline.is_none_or(|d| Instant::now() < d);
            let fresh = if open {
                store.start(budget, name, now(), |trials| {
                    propose(self.study, trials, trials.len())
                })?
            } else {
                None
            };
            if let Some(trial) = fresh {
                self.run(&store, &trial, name)?;
                continue;
            }
            let trials = store.trials()?;
            if !trials.iter().any(|t| t.state == TrialState::Running) {
                break;
            }
            // Others still train: wait, in case one of them is abandoned.
            std::thread::sleep(Duration::from_secs(self.study.section.heartbeat));
        }
        Ok(())
    }

    /// Runs `trial`: an invalid config is recorded as such; a valid one trains in a child
    /// process (resuming its checkpoint when there is one) while this thread beats its heart.
    fn run(&self, store: &Store, trial: &Trial, name: &str) -> Result<(), TuneError> {
        let id = trial.id;
        if self.stop.load(Ordering::SeqCst) {
            // Claimed as Ctrl-C came: the next `tune` runs it.
            return store.release(id, name).map(drop);
        }
        let dir = trial_dir(&self.dir, id);
        let mut cfg = match trial_config(&self.study.base, &trial.point) {
            Ok(cfg) => cfg,
            Err(invalid) => {
                eprintln!("trial {id}: invalid: {invalid}");
                let reason = Some(invalid.0.as_str());
                return store
                    .finish(id, name, TrialState::Invalid, None, reason)
                    .map(drop);
            }
        };
        cfg.run.dir = dir.clone();
        if let Some(b) = self.backend {
            cfg.run.backend = b;
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TuneError::Io { path, source }
        };
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let config = dir.join("trial.toml");
        std::fs::write(&config, cfg.to_toml()).map_err(io(&config))?;
        let log_path = dir.join("trial.log");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io(&log_path))?;
        let child = Command::new(&self.program)
            .arg("trial")
            .arg(&self.study_file)
            .arg("--storage")
            .arg(self.storage.arg())
            .arg("--trial")
            .arg(id.to_string())
            .arg("--worker")
            .arg(name)
            .arg("--config")
            .arg(&config)
            .env("RAYON_NUM_THREADS", self.threads.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(io(&self.program))?;
        // Killed with this thread's stack on any error: a trial never trains unwatched.
        let mut child = Watched(child);
        let beat = Duration::from_secs(self.study.section.heartbeat);
        let (mut last_beat, mut interrupted, mut recorded) = (Instant::now(), false, false);
        let status = loop {
            if let Some(status) = child.0.try_wait().map_err(io(&self.program))? {
                break status;
            }
            if self.stop.load(Ordering::SeqCst) && !interrupted {
                // Ctrl-C reaches a terminal's whole process group; `kill -INT` on `tune`
                // alone does not: pass it on, so the trial stops after its step.
                interrupt(&child.0);
                interrupted = true;
            }
            if !recorded && last_beat.elapsed() >= beat {
                if !store.heartbeat(id, name, now())? {
                    let held = store.trials()?.into_iter().find(|t| t.id == id);
                    if held.is_some_and(|t| t.state == TrialState::Running) {
                        eprintln!("trial {id}: taken over by another worker; stopping this copy");
                        return Ok(());
                    }
                    // The trial process recorded its end and is exiting: wait for it.
                    recorded = true;
                }
                last_beat = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let ended = self.settle(store, id, name, status, &log_path)?;
        let over = matches!(ended, Some(TrialState::Complete | TrialState::Pruned));
        if over && !self.study.section.keep_checkpoints {
            let _ = std::fs::remove_dir_all(dir.join("checkpoint"));
        }
        Ok(())
    }

    /// How trial `id` ended, said on stderr. One whose process ended without recording it is
    /// given back when it was stopped (Ctrl-C, SIGINT or SIGTERM: the next `tune` resumes it)
    /// and recorded as failed otherwise, with the last line of its log.
    fn settle(
        &self,
        store: &Store,
        id: i64,
        name: &str,
        status: ExitStatus,
        log: &Path,
    ) -> Result<Option<TrialState>, TuneError> {
        let stored = store.trials()?.into_iter().find(|t| t.id == id);
        let Some(t) = stored else {
            return Ok(None);
        };
        if t.state != TrialState::Running {
            let value = t.value.map_or("-".to_string(), |v| format!("{v:.4}"));
            let why = t.reason.as_deref().unwrap_or("");
            eprintln!("trial {id}: {} (value {value}) {why}", t.state.name());
            return Ok(Some(t.state));
        }
        let stopped = self.stop.load(Ordering::SeqCst)
            || status.code() == Some(INTERRUPTED)
            || matches!(status.signal(), Some(libc::SIGINT | libc::SIGTERM));
        if stopped {
            eprintln!("trial {id}: interrupted; the next `tune` resumes it");
            store.release(id, name)?;
            return Ok(None);
        }
        let last = std::fs::read_to_string(log)
            .ok()
            .and_then(|s| {
                s.lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let reason = format!("trial process {status}: {last} (log: {})", log.display());
        eprintln!("trial {id}: failed: {reason}");
        store.finish(id, name, TrialState::Failed, None, Some(&reason))?;
        Ok(Some(TrialState::Failed))
    }
}

/// A trial process, killed (and reaped) when dropped before it ended.
struct Watched(Child);

impl Drop for Watched {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Sends SIGINT to `child`: it stops after its step, resumable.
fn interrupt(child: &Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) on the pid of a child this process has not yet reaped, so the pid
        // cannot have been reused by another process.
        unsafe {
            libc::kill(pid, libc::SIGINT);
        }
    }
}
