//! A worker: claims trials from the store one after another (a stale one first, else a new
//! point) and runs each in a child process, beating the trial's heart while it trains. Several
//! workers, in one process or on many machines, share a study through its store alone.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rekindle_model::Backend;

use crate::error::TuneError;
use crate::sampler::{budget, propose};
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
    /// The study's SQLite file.
    pub db: PathBuf,
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
        let mut store = Store::open(&self.db)?;
        let beat = self.study.section.heartbeat as i64;
        let budget = budget(self.study);
        while !self.stop.load(Ordering::SeqCst) {
            if let Some(trial) = store.take_over(name, now(), beat * STALE_BEATS as i64)? {
                eprintln!(
                    "[{name}] taking over trial {} (its worker stopped)",
                    trial.id
                );
                self.run(&store, &trial)?;
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
                self.run(&store, &trial)?;
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
    fn run(&self, store: &Store, trial: &Trial) -> Result<(), TuneError> {
        let dir = trial_dir(&self.dir, trial.id);
        let mut cfg = match trial_config(&self.study.base, &trial.point) {
            Ok(cfg) => cfg,
            Err(invalid) => {
                eprintln!("trial {}: invalid: {invalid}", trial.id);
                return store.finish(trial.id, TrialState::Invalid, None, Some(&invalid.0));
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
        let mut child = Command::new(&self.program)
            .arg("trial")
            .arg(&self.study_file)
            .arg("--db")
            .arg(&self.db)
            .arg("--trial")
            .arg(trial.id.to_string())
            .arg("--config")
            .arg(&config)
            .env("RAYON_NUM_THREADS", self.threads.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(io(&self.program))?;
        let beat = Duration::from_secs(self.study.section.heartbeat);
        let mut last_beat = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().map_err(io(&self.program))? {
                break status;
            }
            if last_beat.elapsed() >= beat {
                store.heartbeat(trial.id, now())?;
                last_beat = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        if self.stop.load(Ordering::SeqCst) && status.code() == Some(INTERRUPTED) {
            eprintln!(
                "trial {}: interrupted; the next `tune` resumes it",
                trial.id
            );
            return store.release(trial.id);
        }
        self.settle(store, trial.id, status, &log_path)?;
        if !self.study.section.keep_checkpoints {
            let _ = std::fs::remove_dir_all(dir.join("checkpoint"));
        }
        Ok(())
    }

    /// Records a trial whose process ended without recording it (it crashed or was killed)
    /// as failed, with the last line of its log; says how every trial ended.
    fn settle(
        &self,
        store: &Store,
        id: i64,
        status: ExitStatus,
        log: &Path,
    ) -> Result<(), TuneError> {
        let stored = store.trials()?.into_iter().find(|t| t.id == id);
        let Some(t) = stored else {
            return Ok(());
        };
        if t.state != TrialState::Running {
            let value = t.value.map_or("-".to_string(), |v| format!("{v:.4}"));
            let why = t.reason.as_deref().unwrap_or("");
            eprintln!("trial {id}: {} (value {value}) {why}", t.state.name());
            return Ok(());
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
        store.finish(id, TrialState::Failed, None, Some(&reason))
    }
}
