//! The study's trials, in SQLite (one file in the study directory, shared by local workers) or
//! PostgreSQL (workers on many machines).
//!
//! Each claim is one transaction holding the trials' write lock from its start (SQLite's
//! `BEGIN IMMEDIATE`, PostgreSQL's `LOCK TABLE ... IN EXCLUSIVE MODE`), so workers anywhere
//! see a trial either wholly claimed or not at all; a running trial's heartbeat tells a live
//! worker from a killed one, whose trial another worker then takes over.

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::error::TuneError;
use crate::prune::Reports;
use crate::space::Assignment;
use crate::sql::{Conn, Kind, Sql, Storage, Val};

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
    /// Its last report: the step and the value (NaN for a diverged one).
    pub last: Option<(usize, f64)>,
}

/// A study's trials, in its [`Storage`].
pub struct Store {
    // A RefCell: PostgreSQL's client needs `&mut` for every statement, and the store is
    // shared by reference within one worker (never across threads).
    conn: RefCell<Conn>,
    storage: Storage,
}

const TRIAL_COLUMNS: [Kind; 8] = [
    Kind::Int,
    Kind::Text,
    Kind::Text,
    Kind::Real,
    Kind::Text,
    Kind::Text,
    Kind::Int,
    Kind::Real,
];
/// Every trial with its last report's step (-1: none) and value.
const SELECT_TRIALS: &str = "SELECT t.id, t.state, t.point, t.value, t.reason, t.worker,
        COALESCE((SELECT MAX(r.step) FROM reports r WHERE r.trial = t.id), -1),
        (SELECT r.value FROM reports r WHERE r.trial = t.id ORDER BY r.step DESC LIMIT 1)
    FROM trials t ORDER BY t.id";

impl Store {
    /// Opens (or creates) the store.
    pub fn open(storage: &Storage) -> Result<Self, TuneError> {
        let conn = Conn::open(storage).map_err(|e| db_error(storage, e))?;
        Ok(Self {
            conn: RefCell::new(conn),
            storage: storage.clone(),
        })
    }

    /// Opens an existing store to read it only (see [`Conn::open_read_only`]).
    pub fn open_read_only(storage: &Storage) -> Result<Self, TuneError> {
        let conn = Conn::open_read_only(storage).map_err(|e| db_error(storage, e))?;
        Ok(Self {
            conn: RefCell::new(conn),
            storage: storage.clone(),
        })
    }

    /// Where the trials are.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Ties the store to the study with this `fingerprint` (see [`crate::Study::fingerprint`]):
    /// the first worker records it, later ones must match, so that trials of one search space
    /// are never mixed with another's.
    pub fn bind(&mut self, fingerprint: &str) -> Result<(), TuneError> {
        let stored = self.exclusive(|sql| {
            let rows = sql.rows(
                "SELECT value FROM meta WHERE key = 'study'",
                &[],
                &[Kind::Text],
            )?;
            if rows.is_empty() {
                let fp = Val::Text(Some(fingerprint.to_string()));
                sql.exec("INSERT INTO meta (key, value) VALUES ('study', ?1)", &[fp])?;
            }
            Ok(rows.first().and_then(|r| r[0].text()))
        })?;
        match stored {
            Some(s) if s != fingerprint => Err(TuneError::Study {
                path: self.storage.label(),
                message: "holds another study (its base config, space, sampler, objective or \
                          seed differ); use another --dir or --storage, or the original study \
                          file (only trials, timeout and heartbeat may change)"
                    .into(),
            }),
            _ => Ok(()),
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
        let storage = self.storage.clone();
        self.exclusive(|sql| {
            let trials = read_trials(sql, &storage).map_err(|e| e.to_string())?;
            if trials.len() >= budget {
                return Ok(None);
            }
            let id = trials.len() as i64;
            let point = propose(&trials).map_err(|m| format!("trial {id}: {m}"))?;
            let text = toml::to_string(&point).map_err(|e| format!("trial {id}: {e}"))?;
            sql.exec(
                "INSERT INTO trials (id, state, point, worker, heartbeat) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                &[
                    Val::Int(id),
                    Val::Text(Some(TrialState::Running.name().into())),
                    Val::Text(Some(text)),
                    Val::Text(Some(worker.into())),
                    Val::Int(now),
                ],
            )?;
            Ok(Some(Trial {
                id,
                state: TrialState::Running,
                point,
                value: None,
                reason: None,
                worker: worker.to_string(),
                last: None,
            }))
        })
    }

    /// Takes over, for `worker`, the oldest running trial whose heartbeat is older than
    /// `now - stale_after`: its worker was killed, and the trial resumes from its checkpoint.
    pub fn take_over(
        &mut self,
        worker: &str,
        now: i64,
        stale_after: i64,
    ) -> Result<Option<Trial>, TuneError> {
        let storage = self.storage.clone();
        self.exclusive(|sql| {
            let stale = sql.rows(
                "SELECT id FROM trials WHERE state = 'running' AND heartbeat < ?1 \
                 ORDER BY id LIMIT 1",
                &[Val::Int(now - stale_after)],
                &[Kind::Int],
            )?;
            let Some(id) = stale.first().map(|r| r[0].int()) else {
                return Ok(None);
            };
            sql.exec(
                "UPDATE trials SET worker = ?1, heartbeat = ?2 WHERE id = ?3",
                &[Val::Text(Some(worker.into())), Val::Int(now), Val::Int(id)],
            )?;
            let trials = read_trials(sql, &storage).map_err(|e| e.to_string())?;
            Ok(trials.into_iter().find(|t| t.id == id))
        })
    }

    /// Gives running trial `id` of `worker` back unfinished (its worker is stopping): any
    /// worker may take it over at once and resume it from its checkpoint.
    pub fn release(&self, id: i64, worker: &str) -> Result<bool, TuneError> {
        self.heartbeat(id, worker, i64::MIN / 2)
    }

    /// Marks running trial `id` alive at `now`, if `worker` still holds it; `false` when
    /// another worker took it over (this one was stalled past the stale limit) or it ended.
    pub fn heartbeat(&self, id: i64, worker: &str, now: i64) -> Result<bool, TuneError> {
        let changed = self.exec(
            "UPDATE trials SET heartbeat = ?1 WHERE id = ?2 AND worker = ?3 AND state = 'running'",
            &[Val::Int(now), Val::Int(id), Val::Text(Some(worker.into()))],
        )?;
        Ok(changed == 1)
    }

    /// Ends running trial `id` of `worker` in `state`, with its value or the reason it did not
    /// run; `false` (and nothing changed) when the trial is no longer that worker's.
    pub fn finish(
        &self,
        id: i64,
        worker: &str,
        state: TrialState,
        value: Option<f64>,
        reason: Option<&str>,
    ) -> Result<bool, TuneError> {
        let changed = self.exec(
            "UPDATE trials SET state = ?1, value = ?2, reason = ?3 \
             WHERE id = ?4 AND worker = ?5 AND state = 'running'",
            &[
                Val::Text(Some(state.name().into())),
                Val::Real(value.filter(|v| !v.is_nan())),
                Val::Text(reason.map(str::to_string)),
                Val::Int(id),
                Val::Text(Some(worker.into())),
            ],
        )?;
        Ok(changed == 1)
    }

    /// Whether `worker` still holds running trial `id`.
    pub fn holds(&self, id: i64, worker: &str) -> Result<bool, TuneError> {
        let rows = self
            .conn
            .borrow_mut()
            .sql()
            .rows(
                "SELECT id FROM trials WHERE id = ?1 AND worker = ?2 AND state = 'running'",
                &[Val::Int(id), Val::Text(Some(worker.into()))],
                &[Kind::Int],
            )
            .map_err(|e| db_error(&self.storage, e))?;
        Ok(!rows.is_empty())
    }

    /// Records trial `id`'s objective at `step`; a resumed trial reporting a step again
    /// replaces it. NaN is kept (stored as NULL; it reads back as NaN).
    pub fn report(&self, id: i64, step: usize, value: f64) -> Result<(), TuneError> {
        self.exec(
            "INSERT INTO reports (trial, step, value) VALUES (?1, ?2, ?3) \
             ON CONFLICT (trial, step) DO UPDATE SET value = excluded.value",
            &[
                Val::Int(id),
                Val::Int(step as i64),
                Val::Real((!value.is_nan()).then_some(value)),
            ],
        )
        .map(drop)
    }

    /// Every trial's reports, by trial id.
    pub fn reports(&self) -> Result<BTreeMap<i64, Reports>, TuneError> {
        let rows = self.rows("SELECT trial, step, value FROM reports")?;
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
            self.exec(
                "INSERT INTO rungs (trial, rung, value) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (trial, rung) DO UPDATE SET value = excluded.value",
                &[Val::Int(id), Val::Int(rung as i64), Val::Real(Some(*value))],
            )?;
        }
        Ok(())
    }

    /// Every trial's rung values, by trial id, rung 0 first.
    pub fn rungs(&self) -> Result<BTreeMap<i64, Vec<f64>>, TuneError> {
        let rows = self.rows("SELECT trial, rung, value FROM rungs ORDER BY trial, rung")?;
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

    /// Every trial, by id.
    pub fn trials(&self) -> Result<Vec<Trial>, TuneError> {
        let mut conn = self.conn.borrow_mut();
        read_trials(conn.sql().as_mut(), &self.storage)
    }

    /// The rows of a three-column (integer, integer, number) query.
    fn rows(&self, sql: &str) -> Result<Vec<(i64, i64, Option<f64>)>, TuneError> {
        let kinds = [Kind::Int, Kind::Int, Kind::Real];
        let rows = self
            .conn
            .borrow_mut()
            .sql()
            .rows(sql, &[], &kinds)
            .map_err(|e| db_error(&self.storage, e))?;
        Ok(rows
            .iter()
            .map(|r| (r[0].int(), r[1].int(), r[2].real()))
            .collect())
    }

    fn exec(&self, sql: &str, params: &[Val]) -> Result<u64, TuneError> {
        self.conn
            .borrow_mut()
            .sql()
            .exec(sql, params)
            .map_err(|e| db_error(&self.storage, e))
    }

    fn exclusive<T>(
        &mut self,
        f: impl FnOnce(&mut dyn Sql) -> Result<T, String>,
    ) -> Result<T, TuneError> {
        self.conn
            .get_mut()
            .exclusive(f)
            .map_err(|e| db_error(&self.storage, e))
    }

    fn corrupt(&self, id: i64, what: &str) -> TuneError {
        corrupt(&self.storage, id, what)
    }
}

/// Every trial, by id.
fn read_trials(sql: &mut dyn Sql, storage: &Storage) -> Result<Vec<Trial>, TuneError> {
    let rows = sql
        .rows(SELECT_TRIALS, &[], &TRIAL_COLUMNS)
        .map_err(|e| db_error(storage, e))?;
    rows.into_iter()
        .map(|r| {
            let id = r[0].int();
            let state = r[1].text().unwrap_or_default();
            let point = r[2].text().unwrap_or_default();
            Ok(Trial {
                id,
                state: TrialState::parse(&state).ok_or_else(|| corrupt(storage, id, "state"))?,
                point: toml::from_str(&point).map_err(|_| corrupt(storage, id, "point"))?,
                value: r[3].real(),
                reason: r[4].text(),
                worker: r[5].text().unwrap_or_default(),
                last: usize::try_from(r[6].int())
                    .ok()
                    .map(|step| (step, r[7].real().unwrap_or(f64::NAN))),
            })
        })
        .collect()
}

/// A row this code could not have written: the store was changed by something else.
fn corrupt(storage: &Storage, id: i64, what: &str) -> TuneError {
    TuneError::Study {
        path: storage.label(),
        message: format!("trial {id}: unreadable {what}"),
    }
}

fn db_error(storage: &Storage, message: String) -> TuneError {
    TuneError::Study {
        path: storage.label(),
        message: format!("study database: {message}"),
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
        Store::open(&Storage::sqlite(&path)).expect("create");
        let budget = 30;
        let ran: Vec<Vec<i64>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..3)
                .map(|w| {
                    let path = &path;
                    s.spawn(move || {
                        let mut store = Store::open(&Storage::sqlite(path)).expect("open");
                        let mut ran = Vec::new();
                        let name = format!("w{w}");
                        while let Some(t) = store
                            .start(budget, &name, 0, |done| Ok(point(done.len())))
                            .expect("start")
                        {
                            store
                                .finish(t.id, &name, TrialState::Complete, Some(t.id as f64), None)
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
        let trials = Store::open(&Storage::sqlite(&path))
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
        let store = Store::open(&Storage::sqlite(dir.path().join("study.db"))).expect("open");
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
        let mut a = Store::open(&Storage::sqlite(&path)).expect("a");
        let mut b = Store::open(&Storage::sqlite(&path)).expect("b");
        let t = a
            .start(5, "a", 0, |_| Ok(point(0)))
            .expect("start")
            .expect("trial");
        assert!(a.heartbeat(t.id, "a", 50).expect("beat"));
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
        assert!(
            !a.heartbeat(t.id, "a", 220).expect("beat"),
            "a lost the trial to b: its heartbeat changes nothing"
        );
        assert!(
            !a.finish(t.id, "a", TrialState::Complete, Some(1.0), None)
                .expect("finish"),
            "nor does its result"
        );
        assert!(
            b.finish(
                t.id,
                "b",
                TrialState::Invalid,
                None,
                Some("train.lr: too high")
            )
            .expect("finish")
        );
        let stored = &a.trials().expect("trials")[0];
        assert_eq!(stored.reason.as_deref(), Some("train.lr: too high"));
        assert_eq!(b.take_over("b", 10_000, 60).expect("ended"), None);
    }
}
