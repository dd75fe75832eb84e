//! Where a study's trials live, and the few SQL operations the store needs, on SQLite (one
//! file, local workers) or PostgreSQL (workers on many machines). The statements are written
//! once, in the SQL both understand (`?N` parameters become `$N` for PostgreSQL); only the
//! exclusive transaction differs.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where the trials are stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Storage {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database; each study gets its own schema, named after it.
    Postgres {
        /// `postgres://user[:password]@host[:port]/database[?options]`.
        url: String,
        /// The study's schema (`rekindle_` and the study name, made an identifier).
        schema: String,
    },
}

impl Storage {
    /// The SQLite file at `path`.
    pub fn sqlite(path: impl Into<PathBuf>) -> Self {
        Self::Sqlite(path.into())
    }

    /// What `--storage` names for study `name`: a `postgres://` (or `postgresql://`) URL, a
    /// `sqlite:` path or a plain path; nothing: `dir/study.db`.
    pub fn parse(arg: Option<&str>, dir: &Path, name: &str) -> Result<Self, String> {
        let Some(arg) = arg else {
            return Ok(Self::Sqlite(dir.join("study.db")));
        };
        if arg.starts_with("postgres://") || arg.starts_with("postgresql://") {
            arg.parse::<postgres::Config>()
                .map_err(|e| format!("--storage {}: {e}", masked(arg)))?;
            let id: String = name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_lowercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            return Ok(Self::Postgres {
                url: arg.to_string(),
                schema: format!("rekindle_{id}"),
            });
        }
        let path = arg
            .strip_prefix("sqlite://")
            .or_else(|| arg.strip_prefix("sqlite:"))
            .unwrap_or(arg);
        if path.is_empty() {
            return Err(format!("--storage {arg}: no file named"));
        }
        Ok(Self::Sqlite(PathBuf::from(path)))
    }

    /// The string [`Storage::parse`] reads back (for the trial processes).
    pub fn arg(&self) -> String {
        match self {
            Self::Sqlite(p) => p.display().to_string(),
            Self::Postgres { url, .. } => url.clone(),
        }
    }

    /// How errors name it: the file, or the URL without its password and the schema.
    pub fn label(&self) -> PathBuf {
        PathBuf::from(self.to_string())
    }
}

impl fmt::Display for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(p) => write!(f, "{}", p.display()),
            Self::Postgres { url, schema } => write!(f, "{} (schema {schema})", masked(url)),
        }
    }
}

/// A URL with its password replaced by `***`.
fn masked(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((user, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match user.split_once(':') {
        Some((name, _)) => format!("{scheme}://{name}:***@{host}"),
        None => url.to_string(),
    }
}

/// A value going into or coming out of a statement.
#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    /// `BIGINT`.
    Int(i64),
    /// `DOUBLE PRECISION`, nullable.
    Real(Option<f64>),
    /// `TEXT`, nullable.
    Text(Option<String>),
}

/// What a column holds, to read it back.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// [`Val::Int`].
    Int,
    /// [`Val::Real`].
    Real,
    /// [`Val::Text`].
    Text,
}

impl Val {
    /// The integer, or 0.
    pub fn int(&self) -> i64 {
        match self {
            Self::Int(i) => *i,
            _ => 0,
        }
    }

    /// The number, if any.
    pub fn real(&self) -> Option<f64> {
        match self {
            Self::Real(r) => *r,
            _ => None,
        }
    }

    /// The text, if any.
    pub fn text(&self) -> Option<String> {
        match self {
            Self::Text(t) => t.clone(),
            _ => None,
        }
    }
}

/// The tables: the same DDL on both (SQLite reads the types as affinities).
const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS trials (
        id BIGINT PRIMARY KEY, state TEXT NOT NULL, point TEXT NOT NULL,
        value DOUBLE PRECISION, reason TEXT, worker TEXT NOT NULL, heartbeat BIGINT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS reports (
        trial BIGINT NOT NULL, step BIGINT NOT NULL, value DOUBLE PRECISION,
        PRIMARY KEY (trial, step)
    );
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS rungs (
        trial BIGINT NOT NULL, rung BIGINT NOT NULL, value DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (trial, rung)
    );";

/// How long a SQLite connection waits for another's lock.
const SQLITE_BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// `PRAGMA journal_mode = WAL`, tried again while another connection holds the database: SQLite
/// answers a journal-mode change it cannot make yet with "database is locked" at once, without
/// its busy handler, so workers opening a new study together failed now and then (13 of 150
/// tries of three processes at once, measured with the same SQLite).
fn wal(c: &rusqlite::Connection) -> rusqlite::Result<()> {
    let started = std::time::Instant::now();
    loop {
        match c.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && started.elapsed() < SQLITE_BUSY_TIMEOUT =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// An open connection.
pub enum Conn {
    /// SQLite, in WAL mode, waiting up to a minute for a lock.
    Sqlite(rusqlite::Connection),
    /// PostgreSQL, its search path set to the study's schema.
    Postgres(Box<postgres::Client>),
}

impl Conn {
    /// Connects and creates the tables (and the study's schema) if missing.
    pub fn open(storage: &Storage) -> Result<Self, String> {
        match storage {
            Storage::Sqlite(path) => {
                let c = rusqlite::Connection::open(path).map_err(|e| e.to_string())?;
                c.busy_timeout(SQLITE_BUSY_TIMEOUT)
                    .and_then(|_| wal(&c))
                    .and_then(|_| c.execute_batch(SCHEMA))
                    .map_err(|e| e.to_string())?;
                Ok(Self::Sqlite(c))
            }
            Storage::Postgres { url, schema } => {
                let mut c = postgres::Client::connect(url, postgres::NoTls)
                    .map_err(|e| format!("cannot connect: {e}"))?;
                // Workers starting together must not race creating the same tables.
                let mut t = c.transaction().map_err(|e| e.to_string())?;
                t.batch_execute(&format!(
                    "SELECT pg_advisory_xact_lock(7240119);
                     CREATE SCHEMA IF NOT EXISTS \"{schema}\";
                     SET LOCAL search_path TO \"{schema}\";
                     {SCHEMA}"
                ))
                .and_then(|_| t.commit())
                .map_err(|e| e.to_string())?;
                c.batch_execute(&format!("SET search_path TO \"{schema}\""))
                    .map_err(|e| e.to_string())?;
                Ok(Self::Postgres(Box::new(c)))
            }
        }
    }

    /// Connects to read only: nothing is created, changed or locked for writing, so a reader
    /// (the dashboard) can watch a study its workers are writing. SQLite in WAL mode gives it
    /// the last committed state without blocking them.
    pub fn open_read_only(storage: &Storage) -> Result<Self, String> {
        match storage {
            Storage::Sqlite(path) => {
                let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
                let c = rusqlite::Connection::open_with_flags(path, flags)
                    .map_err(|e| e.to_string())?;
                c.busy_timeout(SQLITE_BUSY_TIMEOUT)
                    .map_err(|e| e.to_string())?;
                Ok(Self::Sqlite(c))
            }
            Storage::Postgres { url, schema } => {
                let mut c = postgres::Client::connect(url, postgres::NoTls)
                    .map_err(|e| format!("cannot connect: {e}"))?;
                c.batch_execute(&format!(
                    "SET default_transaction_read_only = on; SET search_path TO \"{schema}\""
                ))
                .map_err(|e| e.to_string())?;
                Ok(Self::Postgres(Box::new(c)))
            }
        }
    }

    /// Runs `f` in a transaction that holds the trials' write lock from its start, so that
    /// what it reads stays true until it commits, whatever other workers do; rolled back if
    /// `f` fails.
    pub fn exclusive<T>(
        &mut self,
        f: impl FnOnce(&mut dyn Sql) -> Result<T, String>,
    ) -> Result<T, String> {
        match self {
            Self::Sqlite(c) => {
                let tx = c
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .map_err(|e| e.to_string())?;
                let mut inner: &rusqlite::Connection = &tx;
                let out = f(&mut inner)?;
                tx.commit().map_err(|e| e.to_string())?;
                Ok(out)
            }
            Self::Postgres(c) => {
                let mut tx = c.transaction().map_err(|e| e.to_string())?;
                tx.batch_execute("LOCK TABLE trials IN EXCLUSIVE MODE")
                    .map_err(|e| e.to_string())?;
                let out = f(&mut tx)?;
                tx.commit().map_err(|e| e.to_string())?;
                Ok(out)
            }
        }
    }

    /// The connection for a single statement.
    pub fn sql(&mut self) -> Box<dyn Sql + '_> {
        match self {
            Self::Sqlite(c) => Box::new(&*c),
            Self::Postgres(c) => Box::new(c.as_mut()),
        }
    }
}

/// The two operations every statement is: run it, or read its rows.
pub trait Sql {
    /// Runs `sql` with `params`; how many rows it changed.
    fn exec(&mut self, sql: &str, params: &[Val]) -> Result<u64, String>;
    /// The rows of `sql` with `params`, each column read as `kinds` says.
    fn rows(&mut self, sql: &str, params: &[Val], kinds: &[Kind]) -> Result<Vec<Vec<Val>>, String>;
}

impl rusqlite::ToSql for Val {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Self::Int(i) => i.to_sql(),
            Self::Real(r) => r.to_sql(),
            Self::Text(t) => t.to_sql(),
        }
    }
}

impl Sql for &rusqlite::Connection {
    fn exec(&mut self, sql: &str, params: &[Val]) -> Result<u64, String> {
        self.execute(sql, rusqlite::params_from_iter(params))
            .map(|n| n as u64)
            .map_err(|e| e.to_string())
    }

    fn rows(&mut self, sql: &str, params: &[Val], kinds: &[Kind]) -> Result<Vec<Vec<Val>>, String> {
        let mut stmt = self.prepare(sql).map_err(|e| e.to_string())?;
        stmt.query_map(rusqlite::params_from_iter(params), |row| {
            kinds
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    Ok(match k {
                        Kind::Int => Val::Int(row.get(i)?),
                        Kind::Real => Val::Real(row.get(i)?),
                        Kind::Text => Val::Text(row.get(i)?),
                    })
                })
                .collect()
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| e.to_string())
    }
}

/// `?N` placeholders as PostgreSQL's `$N`.
fn dollars(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

/// Statements on any PostgreSQL client or transaction.
fn pg_exec(c: &mut impl postgres::GenericClient, sql: &str, params: &[Val]) -> Result<u64, String> {
    let boxed: Vec<Box<dyn postgres::types::ToSql + Sync>> = params.iter().map(pg_param).collect();
    let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
        boxed.iter().map(|b| b.as_ref()).collect();
    c.execute(dollars(sql).as_str(), &refs)
        .map_err(|e| e.to_string())
}

fn pg_rows(
    c: &mut impl postgres::GenericClient,
    sql: &str,
    params: &[Val],
    kinds: &[Kind],
) -> Result<Vec<Vec<Val>>, String> {
    let boxed: Vec<Box<dyn postgres::types::ToSql + Sync>> = params.iter().map(pg_param).collect();
    let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
        boxed.iter().map(|b| b.as_ref()).collect();
    let rows = c
        .query(dollars(sql).as_str(), &refs)
        .map_err(|e| e.to_string())?;
    rows.iter()
        .map(|row| {
            kinds
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    Ok(match k {
                        Kind::Int => Val::Int(row.try_get(i).map_err(|e| e.to_string())?),
                        Kind::Real => Val::Real(row.try_get(i).map_err(|e| e.to_string())?),
                        Kind::Text => Val::Text(row.try_get(i).map_err(|e| e.to_string())?),
                    })
                })
                .collect()
        })
        .collect()
}

fn pg_param(v: &Val) -> Box<dyn postgres::types::ToSql + Sync> {
    match v {
        Val::Int(i) => Box::new(*i),
        Val::Real(r) => Box::new(*r),
        Val::Text(t) => Box::new(t.clone()),
    }
}

impl Sql for &mut postgres::Client {
    fn exec(&mut self, sql: &str, params: &[Val]) -> Result<u64, String> {
        pg_exec(*self, sql, params)
    }

    fn rows(&mut self, sql: &str, params: &[Val], kinds: &[Kind]) -> Result<Vec<Vec<Val>>, String> {
        pg_rows(*self, sql, params, kinds)
    }
}

impl Sql for postgres::Transaction<'_> {
    fn exec(&mut self, sql: &str, params: &[Val]) -> Result<u64, String> {
        pg_exec(self, sql, params)
    }

    fn rows(&mut self, sql: &str, params: &[Val], kinds: &[Kind]) -> Result<Vec<Vec<Val>>, String> {
        pg_rows(self, sql, params, kinds)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn switching_to_wal_waits_for_another_connection_instead_of_failing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let a = rusqlite::Connection::open(&path).unwrap();
        // A read transaction in the default journal mode: it holds the database until COMMIT.
        a.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1); BEGIN; SELECT * FROM t;")
            .unwrap();
        let b = rusqlite::Connection::open(&path).unwrap();
        b.busy_timeout(std::time::Duration::from_secs(1)).unwrap();
        // What SQLite does on its own: "database is locked", busy timeout or not.
        let bare = b.pragma_update(None, "journal_mode", "WAL");
        assert!(
            matches!(&bare, Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::DatabaseBusy),
            "{bare:?}"
        );
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            a.execute_batch("COMMIT").unwrap();
        });
        let started = std::time::Instant::now();
        wal(&b).unwrap();
        assert!(started.elapsed() >= std::time::Duration::from_millis(150));
        release.join().unwrap();
        let mode: String = b
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    use super::*;

    #[test]
    fn storage_arguments_name_a_file_or_a_database_and_errors_hide_the_password() {
        let dir = Path::new("runs/s");
        assert_eq!(
            Storage::parse(None, dir, "s"),
            Ok(Storage::sqlite("runs/s/study.db"))
        );
        assert_eq!(
            Storage::parse(Some("sqlite:/tmp/x.db"), dir, "s"),
            Ok(Storage::sqlite("/tmp/x.db"))
        );
        let pg =
            Storage::parse(Some("postgres://me:secret@db:5432/hpo"), dir, "My-Study").expect("url");
        assert_eq!(
            pg,
            Storage::Postgres {
                url: "postgres://me:secret@db:5432/hpo".into(),
                schema: "rekindle_my_study".into()
            }
        );
        assert!(!pg.to_string().contains("secret"), "{pg}");
        let bad = Storage::parse(Some("postgres://me:secret@db:notaport/x"), dir, "s")
            .expect_err("bad port");
        assert!(
            bad.contains("--storage") && !bad.contains("secret"),
            "{bad}"
        );
        assert_eq!(
            dollars("a = ?1 AND b = ?12 AND c = '?'"),
            "a = $1 AND b = $12 AND c = '?'"
        );
    }
}
