//! The study's trials in SQLite: one file in the study directory, shared by every local worker.
//!
//! Each change is one `BEGIN IMMEDIATE` transaction, so workers in other processes see a trial
//! either wholly claimed or not at all; a running trial's heartbeat tells a live worker from a
//! killed one, whose trial another worker then takes over.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::error::TuneError;
use crate::prune::Reports;
use crate::space::Assignment;

/// Where a trial stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrialState {
    /// Claimed by a worker, which beats its heart while it trains.
    Running,
    /// Trained to the end; its value counts.
    Complete,
    /// Stopped early by the pruner.
    Pruned,
    /// Its config could not run; nothing was trained.
    Invalid,
    /// The run failed.
    Failed,
}

impl TrialState {
    /// Its name, as stored and printed.
    pub fn name(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Complete => "complete",
            Self::Pruned => "pruned",
            Self::Invalid => "invalid",
            Self::Failed => "failed",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        [
            Self::Running,
            Self::Complete,
            Self::Pruned,
            Self::Invalid,
            Self::Failed,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }
}

/// One trial as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Trial {
    /// Its number in the study, from 0.
    pub id: i64,
    /// Where it stands.
    pub state: TrialState,
    /// The sampled point.
    pub point: Assignment,
    /// The objective at its best epoch, once complete or pruned.
    pub value: Option<f64>,
    /// Why it is invalid or failed.
    pub reason: Option<String>,
    /// The worker that runs (or last ran) it.
    pub worker: String,
}

/// A study's trials, in `study.db`.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, TuneError> {
        let s = Self {
            conn: Connection::open(path).map_err(|e| db_error(path, e))?,
            path: path.to_path_buf(),
        };
        s.conn
            .busy_timeout(std::time::Duration::from_secs(60))
            .and_then(|_| s.conn.pragma_update(None, "journal_mode", "WAL"))
            .and_then(|_| {
                s.conn.execute_batch(
                    "CREATE TABLE IF NOT EXISTS trials (
                        id INTEGER PRIMARY KEY, state TEXT NOT NULL, point TEXT NOT NULL,
                        value REAL, reason TEXT, worker TEXT NOT NULL, heartbeat INTEGER NOT NULL
                    );
                    CREATE TABLE IF NOT EXISTS reports (
                        trial INTEGER NOT NULL, step INTEGER NOT NULL, value REAL,
                        PRIMARY KEY (trial, step)
                    );
                    CREATE TABLE IF NOT EXISTS meta (
                        key TEXT PRIMARY KEY, value TEXT NOT NULL
                    );
                    CREATE TABLE IF NOT EXISTS rungs (
                        trial INTEGER NOT NULL, rung INTEGER NOT NULL, value REAL NOT NULL,
                        PRIMARY KEY (trial, rung)
                    )",
                )
            })
            .map_err(|e| s.error(e))?;
        Ok(s)
    }

    /// Ties the store to the study with this `fingerprint` (see [`crate::Study::fingerprint`]):
    /// the first worker records it, later ones must match, so that trials of one search space
    /// are never mixed with another's.
    pub fn bind(&mut self, fingerprint: &str) -> Result<(), TuneError> {
        let path = self.path.clone();
        let tx = immediate(&mut self.conn, &path)?;
        let stored: Option<String> = tx
            .query_row("SELECT value FROM meta WHERE key = 'study'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| db_error(&path, e))?;
        match stored {
            Some(s) if s != fingerprint => Err(TuneError::Study {
                path,
                message: "holds another study (its base config, space, sampler, objective or \
                          seed differ); use another --dir or --storage, or the original study \
                          file (only trials, timeout and heartbeat may change)"
                    .into(),
            }),
            Some(_) => Ok(()),
            None => tx
                .execute(
                    "INSERT INTO meta (key, value) VALUES ('study', ?1)",
                    params![fingerprint],
                )
                .and_then(|_| tx.commit())
                .map_err(|e| db_error(&path, e)),
        }
    }

    /// Claims the next trial for `worker` at time `now` (seconds), its point made by `propose`
    /// from the trials so far; `None` once the study holds `budget` trials.
    pub fn start(
        &mut self,
        budget: usize,
        worker: &str,
        now: i64,
        propose: impl FnOnce(&[Trial]) -> Result<Assignment, String>,
    ) -> Result<Option<Trial>, TuneError> {
        let path = self.path.clone();
        let tx = immediate(&mut self.conn, &path)?;
        let trials = read_trials(&tx, &path)?;
        if trials.len() >= budget {
            return Ok(None);
        }
        let id = trials.len() as i64;
        let point = propose(&trials).map_err(|message| TuneError::Study {
            path: path.clone(),
            message: format!("trial {id}: {message}"),
        })?;
        let trial = Trial {
            id,
            state: TrialState::Running,
            point,
            value: None,
            reason: None,
            worker: worker.to_string(),
        };
        let point = toml::to_string(&trial.point).map_err(|e| TuneError::Study {
            path: path.clone(),
            message: format!("trial {}: {e}", trial.id),
        })?;
        tx.execute(
            "INSERT INTO trials (id, state, point, worker, heartbeat) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![trial.id, trial.state.name(), point, worker, now],
        )
        .and_then(|_| tx.commit())
        .map_err(|e| db_error(&path, e))?;
        Ok(Some(trial))
    }

    /// Takes over, for `worker`, the oldest running trial whose heartbeat is older than
    /// `now - stale_after`: its worker was killed, and the trial resumes from its checkpoint.
    pub fn take_over(
        &mut self,
        worker: &str,
        now: i64,
        stale_after: i64,
    ) -> Result<Option<Trial>, TuneError> {
        let path = self.path.clone();
        let tx = immediate(&mut self.conn, &path)?;
        let stale: Option<i64> = tx
            .query_row(
                "SELECT id FROM trials WHERE state = 'running' AND heartbeat < ?1
                 ORDER BY id LIMIT 1",
                params![now - stale_after],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| db_error(&path, e))?;
        let Some(id) = stale else {
            return Ok(None);
        };
        tx.execute(
            "UPDATE trials SET worker = ?1, heartbeat = ?2 WHERE id = ?3",
            params![worker, now, id],
        )
        .map_err(|e| db_error(&path, e))?;
        let trial = read_trials(&tx, &path)?.into_iter().find(|t| t.id == id);
        tx.commit().map_err(|e| db_error(&path, e))?;
        Ok(trial)
    }

    /// Gives trial `id` back unfinished (its worker is stopping): any worker may take it over
    /// at once and resume it from its checkpoint.
    pub fn release(&self, id: i64) -> Result<(), TuneError> {
        self.heartbeat(id, i64::MIN / 2)
    }

    /// Marks trial `id` alive at `now`.
    pub fn heartbeat(&self, id: i64, now: i64) -> Result<(), TuneError> {
        self.conn
            .execute(
                "UPDATE trials SET heartbeat = ?1 WHERE id = ?2",
                params![now, id],
            )
            .map(drop)
            .map_err(|e| self.error(e))
    }

    /// Ends trial `id` in `state`, with its value or the reason it did not run.
    pub fn finish(
        &self,
        id: i64,
        state: TrialState,
        value: Option<f64>,
        reason: Option<&str>,
    ) -> Result<(), TuneError> {
        self.conn
            .execute(
                "UPDATE trials SET state = ?1, value = ?2, reason = ?3 WHERE id = ?4",
                params![state.name(), value, reason, id],
            )
            .map(drop)
            .map_err(|e| self.error(e))
    }

    /// Records trial `id`'s objective at `step`; a resumed trial reporting a step again
    /// replaces it. NaN is kept (SQLite would store NULL; it reads back as NaN).
    pub fn report(&self, id: i64, step: usize, value: f64) -> Result<(), TuneError> {
        let value = (!value.is_nan()).then_some(value);
        self.conn
            .execute(
                "INSERT OR REPLACE INTO reports (trial, step, value) VALUES (?1, ?2, ?3)",
                params![id, step as i64, value],
            )
            .map(drop)
            .map_err(|e| self.error(e))
    }

    /// Every trial's reports, by trial id.
    pub fn reports(&self) -> Result<BTreeMap<i64, Reports>, TuneError> {
        let rows: Vec<(i64, i64, Option<f64>)> =
            self.rows("SELECT trial, step, value FROM reports")?;
        let mut all: BTreeMap<i64, Reports> = BTreeMap::new();
        for (trial, step, value) in rows {
            let step = usize::try_from(step).map_err(|_| self.corrupt(trial, "step"))?;
            all.entry(trial)
                .or_default()
                .insert(step, value.unwrap_or(f64::NAN));
        }
        Ok(all)
    }

    /// Stores the values trial `id` recorded at ASHA's rungs (see [`crate::Asha::prune`]).
    pub fn record_rungs(&self, id: i64, rungs: &[f64]) -> Result<(), TuneError> {
        for (rung, value) in rungs.iter().enumerate() {
            self.conn
                .execute(
                    "INSERT OR REPLACE INTO rungs (trial, rung, value) VALUES (?1, ?2, ?3)",
                    params![id, rung as i64, value],
                )
                .map_err(|e| self.error(e))?;
        }
        Ok(())
    }

    /// Every trial's rung values, by trial id, rung 0 first.
    pub fn rungs(&self) -> Result<BTreeMap<i64, Vec<f64>>, TuneError> {
        let rows: Vec<(i64, i64, Option<f64>)> =
            self.rows("SELECT trial, rung, value FROM rungs ORDER BY trial, rung")?;
        let mut all: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
        for (trial, rung, value) in rows {
            let values = all.entry(trial).or_default();
            if rung != values.len() as i64 {
                return Err(self.corrupt(trial, "rungs"));
            }
            values.push(value.unwrap_or(f64::NAN));
        }
        Ok(all)
    }

    /// The rows of a three-column query.
    fn rows(&self, sql: &str) -> Result<Vec<(i64, i64, Option<f64>)>, TuneError> {
        let mut stmt = self.conn.prepare(sql).map_err(|e| self.error(e))?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.error(e))
    }

    fn corrupt(&self, id: i64, what: &str) -> TuneError {
        corrupt(&self.path, id, what)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every trial, by id.
    pub fn trials(&self) -> Result<Vec<Trial>, TuneError> {
        read_trials(&self.conn, &self.path)
    }

    fn error(&self, e: rusqlite::Error) -> TuneError {
        db_error(&self.path, e)
    }
}

/// Every trial in `conn`, by id.
fn read_trials(conn: &Connection, path: &Path) -> Result<Vec<Trial>, TuneError> {
    let mut stmt = conn
        .prepare("SELECT id, state, point, value, reason, worker FROM trials ORDER BY id")
        .map_err(|e| db_error(path, e))?;
    let rows = stmt
        .query_map([], |r| {
            let row: (i64, String, String, Option<f64>, Option<String>, String) = (
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            );
            Ok(row)
        })
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(|e| db_error(path, e))?;
    rows.into_iter()
        .map(|(id, state, point, value, reason, worker)| {
            Ok(Trial {
                id,
                state: TrialState::parse(&state).ok_or_else(|| corrupt(path, id, "state"))?,
                point: toml::from_str(&point).map_err(|_| corrupt(path, id, "point"))?,
                value,
                reason,
                worker,
            })
        })
        .collect()
}

/// A transaction that holds the write lock from its start, so that what it reads stays true
/// until it commits, whatever other workers do.
fn immediate<'c>(conn: &'c mut Connection, path: &Path) -> Result<Transaction<'c>, TuneError> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| db_error(path, e))
}

/// A row this code could not have written: the file was changed by something else.
fn corrupt(path: &Path, id: i64, what: &str) -> TuneError {
    TuneError::Study {
        path: path.to_path_buf(),
        message: format!("trial {id}: unreadable {what}"),
    }
}

fn db_error(path: &Path, e: rusqlite::Error) -> TuneError {
    TuneError::Study {
        path: path.to_path_buf(),
        message: format!("study database: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(i: usize) -> Assignment {
        let mut p = Assignment::new();
        p.insert(
            "train.lr".into(),
            toml::Value::Float(0.001 * (i + 1) as f64),
        );
        p.insert("optim.name".into(), toml::Value::String("sgd".into()));
        p
    }

    #[test]
    fn three_workers_on_one_file_fill_the_budget_with_no_lost_or_duplicated_trial() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("study.db");
        Store::open(&path).expect("create");
        let budget = 30;
        let ran: Vec<Vec<i64>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..3)
                .map(|w| {
                    let path = &path;
                    s.spawn(move || {
                        let mut store = Store::open(path).expect("open");
                        let mut ran = Vec::new();
                        let name = format!("w{w}");
                        while let Some(t) = store
                            .start(budget, &name, 0, |done| Ok(point(done.len())))
                            .expect("start")
                        {
                            store
                                .finish(t.id, TrialState::Complete, Some(t.id as f64), None)
                                .expect("finish");
                            ran.push(t.id);
                        }
                        ran
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("worker"))
                .collect()
        });
        let mut all: Vec<i64> = ran.concat();
        all.sort();
        assert_eq!(all, (0..budget as i64).collect::<Vec<_>>());
        let trials = Store::open(&path)
            .expect("reopen")
            .trials()
            .expect("trials");
        assert_eq!(trials.len(), budget);
        for t in &trials {
            assert_eq!(t.state, TrialState::Complete);
            assert_eq!(t.value, Some(t.id as f64));
            assert_eq!(
                t.point,
                point(t.id as usize),
                "the point stored is the point proposed"
            );
        }
    }

    #[test]
    fn reports_and_rungs_read_back_as_written_nan_included() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("study.db")).expect("open");
        store.report(0, 1, 0.5).expect("report");
        store.report(0, 2, f64::NAN).expect("report");
        store.report(1, 1, 0.25).expect("report");
        store
            .report(1, 1, 0.75)
            .expect("a resumed trial reports step 1 again");
        store.record_rungs(0, &[0.5]).expect("rungs");
        store.record_rungs(0, &[0.5, 0.6]).expect("rungs");
        let reports = store.reports().expect("reports");
        assert_eq!(reports[&0][&1], 0.5);
        assert!(reports[&0][&2].is_nan());
        assert_eq!(reports[&1].iter().collect::<Vec<_>>(), [(&1, &0.75)]);
        assert_eq!(store.rungs().expect("rungs")[&0], [0.5, 0.6]);
    }

    #[test]
    fn a_trial_whose_heart_stopped_is_taken_over_once_with_its_point() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("study.db");
        let mut a = Store::open(&path).expect("a");
        let mut b = Store::open(&path).expect("b");
        let t = a
            .start(5, "a", 0, |_| Ok(point(0)))
            .expect("start")
            .expect("trial");
        a.heartbeat(t.id, 50).expect("beat");
        assert_eq!(
            b.take_over("b", 100, 60).expect("fresh"),
            None,
            "a is alive"
        );
        let taken = b.take_over("b", 200, 60).expect("stale").expect("taken");
        assert_eq!(
            (taken.id, &taken.point, taken.worker.as_str()),
            (t.id, &t.point, "b")
        );
        assert_eq!(
            a.take_over("a", 210, 60).expect("again"),
            None,
            "b's heart beats now"
        );
        b.finish(t.id, TrialState::Invalid, None, Some("train.lr: too high"))
            .expect("finish");
        let stored = &a.trials().expect("trials")[0];
        assert_eq!(stored.reason.as_deref(), Some("train.lr: too high"));
        assert_eq!(b.take_over("b", 10_000, 60).expect("ended"), None);
    }
}
