//! One `tune` invocation on one machine: the study checked against its store, then `workers`
//! worker threads, each running its trials in child processes, until the study is done.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use rekindle_model::Backend;

use crate::error::TuneError;
use crate::sql::Storage;
use crate::store::Store;
use crate::study::Study;
use crate::summary::{Summary, summary};
use crate::worker::Workers;

/// The study as last run, base config inline, in the study directory (a name no user study
/// file is likely to have, so that `--dir` next to one never overwrites it).
pub const RESOLVED: &str = "resolved-study.toml";

/// Where and how a study runs here.
pub struct Launch {
    /// The study file.
    pub study_file: PathBuf,
    /// The study directory (`trials/`).
    pub dir: PathBuf,
    /// Where the study's trials are stored.
    pub storage: Storage,
    /// Trials side by side on this machine; the cores are split between them.
    pub workers: usize,
    /// Overrides the trials' `run.backend`.
    pub backend: Option<Backend>,
    /// The `rekindle-tune` binary, whose `trial` subcommand runs one trial.
    pub program: PathBuf,
    /// Names the workers (`HOST:PID`), with their index appended.
    pub name: String,
}

impl Launch {
    /// Checks `study` against the store (an unreachable or foreign database stops here, before
    /// any trial), then works on it until it is done or `stop` is set; the summary after.
    pub fn run(&self, study: &Study, stop: &AtomicBool) -> Result<Summary, TuneError> {
        if self.workers == 0 {
            return Err(TuneError::Study {
                path: self.study_file.clone(),
                message: "--workers must be at least 1".into(),
            });
        }
        std::fs::create_dir_all(&self.dir).map_err(|source| TuneError::Io {
            path: self.dir.clone(),
            source,
        })?;
        Store::open(&self.storage)?.bind(&study.fingerprint())?;
        // The study as run, base inline, for `tune report`.
        let copy = self.dir.join(RESOLVED);
        std::fs::write(&copy, study.resolved()).map_err(|source| TuneError::Io {
            path: copy.clone(),
            source,
        })?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // The trial processes read the copy, not the user's file, which may change meanwhile.
        let study_file = std::path::absolute(&copy).map_err(|source| TuneError::Io {
            path: copy.clone(),
            source,
        })?;
        let workers = Workers {
            study,
            study_file,
            dir: self.dir.clone(),
            storage: self.storage.clone(),
            backend: self.backend,
            program: self.program.clone(),
            threads: (cores / self.workers).max(1),
            // A timeout too long to represent is no deadline.
            deadline: study.section.timeout.and_then(|t| {
                let d = Duration::try_from_secs_f64(t).ok()?;
                Instant::now().checked_add(d)
            }),
            stop,
        };
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..self.workers)
                .map(|i| {
                    let (workers, name) = (&workers, format!("{}:{i}", self.name));
                    s.spawn(move || workers.work(&name))
                })
                .collect();
            handles.into_iter().try_for_each(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(TuneError::Study {
                        path: self.storage.label(),
                        message: "a worker thread panicked".into(),
                    })
                })
            })
        })?;
        summary(
            &Store::open(&self.storage)?,
            &self.dir,
            study.section.objective,
        )
    }
}
