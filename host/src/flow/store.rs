//! The run store: an embedded SQLite database (rusqlite, with SQLite built
//! in) that records every run of a flow, the events raised (triggers), each
//! activation of a step (tasks, with their status and error text) and the
//! delays waiting to fire, so that a run killed at any moment can be
//! recovered or continued.
//!
//! One file per `store` path (flows that name the same path share it; each
//! row names its run, each run its flow). The journal is in WAL mode with
//! `synchronous = FULL`: a committed transition survives a kill of the host
//! and a power cut. The schema is versioned with SQLite's `user_version`
//! ([`SCHEMA_VERSION`]); a file from a newer host is refused, not changed.
//! The folder of a store is created when missing. A flow without `store`
//! keeps its store in memory: nothing survives the host.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};

/// The schema version this host writes and reads.
pub const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    flow TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    finished_ms INTEGER,
    result TEXT,
    recovery INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS triggers (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    event TEXT NOT NULL,
    sequence TEXT NOT NULL,
    raised_ms INTEGER NOT NULL,
    PRIMARY KEY (run_id, event, sequence)
);
CREATE TABLE IF NOT EXISTS tasks (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    step TEXT NOT NULL,
    sequence TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    started_ms INTEGER,
    finished_ms INTEGER,
    PRIMARY KEY (run_id, step, sequence, attempt)
);
CREATE TABLE IF NOT EXISTS delays (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    sequence TEXT NOT NULL,
    target_kind TEXT NOT NULL,
    target TEXT NOT NULL,
    due_ms INTEGER NOT NULL,
    fired INTEGER NOT NULL DEFAULT 0
);
";

/// Why a run store cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store's folder could not be created.
    #[error("run store {path}: cannot create its folder: {source}")]
    CreateDir {
        /// The store file.
        path: PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
    /// SQLite refused to open or set up the file.
    #[error("run store {path}: {source}")]
    Sqlite {
        /// The store file (`:memory:` for an in-memory store).
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The file was written by a newer host.
    #[error(
        "run store {path}: schema version {found} is newer than this host's ({SCHEMA_VERSION}); use a newer otools"
    )]
    NewerSchema {
        /// The store file.
        path: PathBuf,
        /// The file's schema version.
        found: i64,
    },
}

/// The status of a task (one activation of a step at one attempt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Activated, not started yet.
    Pending,
    /// Running (or running when the host died).
    Active,
    /// Succeeded.
    Success,
    /// Failed.
    Failure,
}

impl Status {
    /// The status as stored.
    pub fn name(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Active => "active",
            Status::Success => "success",
            Status::Failure => "failure",
        }
    }

    fn parse(s: &str) -> Status {
        match s {
            "pending" => Status::Pending,
            "active" => Status::Active,
            "success" => Status::Success,
            _ => Status::Failure,
        }
    }
}

/// A stored run.
#[derive(Debug, Clone)]
pub struct Run {
    /// Its id.
    pub id: String,
    /// How many times it was taken up again.
    pub recovery: u32,
    /// `success`, `failure` or `stopped` once it finished.
    pub result: Option<String>,
}

/// The latest attempt of one step for one sequence.
#[derive(Debug, Clone)]
pub struct Task {
    /// The step's name.
    pub step: String,
    /// The sequence.
    pub sequence: String,
    /// The attempt.
    pub attempt: u32,
    /// Its status.
    pub status: Status,
}

/// A delay not fired yet.
#[derive(Debug, Clone)]
pub struct Delay {
    /// Its row id.
    pub id: i64,
    /// The sequence.
    pub sequence: String,
    /// True for a step, false for an event.
    pub step: bool,
    /// The step's or event's name.
    pub target: String,
    /// When it is due (milliseconds since the Unix epoch).
    pub due_ms: u64,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn as_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// One open run store.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (creating it and its folder when missing) the store at `path`,
    /// or an in-memory store for `None`.
    pub fn open(path: Option<&Path>) -> Result<Store, StoreError> {
        let shown = path.map_or_else(|| PathBuf::from(":memory:"), Path::to_path_buf);
        let sql = |source| StoreError::Sqlite {
            path: shown.clone(),
            source,
        };
        let conn = match path {
            None => Connection::open_in_memory().map_err(sql)?,
            Some(p) => {
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                        path: shown.clone(),
                        source,
                    })?;
                }
                Connection::open(p).map_err(sql)?
            }
        };
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sql)?;
        let found: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sql)?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema { path: shown, found });
        }
        conn.execute_batch(SCHEMA).map_err(sql)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(sql)?;
        Ok(Store { conn, path: shown })
    }

    /// The store's file (`:memory:` in memory).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Starts a transaction: every write until [`Store::commit`] lands together.
    pub fn begin(&self) -> Result<(), StoreError> {
        self.conn.execute_batch("BEGIN").map_err(|e| self.err(e))
    }

    /// Commits the transaction [`Store::begin`] started.
    pub fn commit(&self) -> Result<(), StoreError> {
        self.conn.execute_batch("COMMIT").map_err(|e| self.err(e))
    }

    /// Abandons the open transaction, if any (after a failed write; the
    /// run is being stopped, so a failure here changes nothing).
    pub fn rollback(&self) {
        let _ = self.conn.execute_batch("ROLLBACK");
    }

    /// Records a new run of `flow` under an id no other run can have: the
    /// flow, the time, the process id and random bits, inserted under a
    /// primary key (drawn again on the impossible clash).
    pub fn new_run(&self, flow: &str) -> Result<String, StoreError> {
        loop {
            let id = format!(
                "{flow}-{}-{:x}-{:08x}",
                now_ms(),
                std::process::id(),
                random_u32()
            );
            let inserted = self
                .conn
                .execute(
                    "INSERT OR IGNORE INTO runs (run_id, flow, started_ms) VALUES (?1, ?2, ?3)",
                    params![id, flow, as_i64(now_ms())],
                )
                .map_err(|e| self.err(e))?;
            if inserted == 1 {
                return Ok(id);
            }
        }
    }

    /// The run `id` of `flow`, or its latest run.
    pub fn find_run(&self, flow: &str, id: Option<&str>) -> Result<Option<Run>, StoreError> {
        let row = |r: &rusqlite::Row<'_>| {
            Ok(Run {
                id: r.get(0)?,
                recovery: r.get(1)?,
                result: r.get(2)?,
            })
        };
        let found = match id {
            Some(id) => self.conn.query_row(
                "SELECT run_id, recovery, result FROM runs WHERE flow = ?1 AND run_id = ?2",
                params![flow, id],
                row,
            ),
            None => self.conn.query_row(
                "SELECT run_id, recovery, result FROM runs WHERE flow = ?1 ORDER BY rowid DESC LIMIT 1",
                params![flow],
                row,
            ),
        };
        found.optional().map_err(|e| self.err(e))
    }

    /// Takes a run up again: counts the recovery and clears its result.
    pub fn reopen_run(&self, run: &str) -> Result<u32, StoreError> {
        self.conn
            .execute(
                "UPDATE runs SET recovery = recovery + 1, result = NULL, finished_ms = NULL WHERE run_id = ?1",
                params![run],
            )
            .map_err(|e| self.err(e))?;
        self.conn
            .query_row(
                "SELECT recovery FROM runs WHERE run_id = ?1",
                params![run],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// Records the end of a run.
    pub fn finish_run(&self, run: &str, result: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE runs SET result = ?2, finished_ms = ?3 WHERE run_id = ?1",
                params![run, result, as_i64(now_ms())],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Records an event raised for a sequence.
    pub fn raise(&self, run: &str, event: &str, sequence: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO triggers (run_id, event, sequence, raised_ms) VALUES (?1, ?2, ?3, ?4)",
                params![run, event, sequence, as_i64(now_ms())],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// The rows of `sql` (one `?1` parameter: the run), each through `row`.
    fn rows<T>(
        &self,
        sql: &str,
        run: &str,
        row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        let mut q = self.conn.prepare_cached(sql).map_err(|e| self.err(e))?;
        q.query_map(params![run], row)
            .and_then(Iterator::collect)
            .map_err(|e| self.err(e))
    }

    /// The events raised in a run, as (event, sequence).
    pub fn triggers(&self, run: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.rows(
            "SELECT event, sequence FROM triggers WHERE run_id = ?1 ORDER BY rowid",
            run,
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    /// Records a task's status (and its error text for a failure).
    pub fn task(
        &self,
        run: &str,
        step: &str,
        sequence: &str,
        attempt: u32,
        status: Status,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let now = as_i64(now_ms());
        let sql = match status {
            Status::Pending => {
                "INSERT INTO tasks (run_id, step, sequence, attempt, status, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT DO UPDATE SET status = excluded.status, error = NULL, started_ms = NULL, finished_ms = NULL"
            }
            Status::Active => {
                "INSERT INTO tasks (run_id, step, sequence, attempt, status, error, started_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT DO UPDATE SET status = excluded.status, started_ms = excluded.started_ms"
            }
            Status::Success | Status::Failure => {
                "INSERT INTO tasks (run_id, step, sequence, attempt, status, error, finished_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT DO UPDATE SET status = excluded.status, error = excluded.error, finished_ms = excluded.finished_ms"
            }
        };
        let mut q = self.conn.prepare_cached(sql).map_err(|e| self.err(e))?;
        let r = if status == Status::Pending {
            q.execute(params![run, step, sequence, attempt, status.name(), error])
        } else {
            q.execute(params![
                run,
                step,
                sequence,
                attempt,
                status.name(),
                error,
                now
            ])
        };
        r.map(drop).map_err(|e| self.err(e))
    }

    /// The latest attempt of every (step, sequence) of a run.
    pub fn tasks(&self, run: &str) -> Result<Vec<Task>, StoreError> {
        self.rows(
            "SELECT step, sequence, attempt, status FROM tasks t WHERE run_id = ?1 AND attempt =
             (SELECT MAX(attempt) FROM tasks u WHERE u.run_id = t.run_id AND u.step = t.step AND u.sequence = t.sequence)
             ORDER BY rowid",
            run,
            |r| {
                Ok(Task {
                    step: r.get(0)?,
                    sequence: r.get(1)?,
                    attempt: r.get(2)?,
                    status: Status::parse(&r.get::<_, String>(3)?),
                })
            },
        )
    }

    /// Records a delay; returns its id.
    pub fn add_delay(
        &self,
        run: &str,
        sequence: &str,
        step: bool,
        target: &str,
        due_ms: u64,
    ) -> Result<i64, StoreError> {
        self.conn
            .execute(
                "INSERT INTO delays (run_id, sequence, target_kind, target, due_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![run, sequence, if step { "step" } else { "event" }, target, as_i64(due_ms)],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Marks a delay fired.
    pub fn fire_delay(&self, id: i64) -> Result<(), StoreError> {
        self.conn
            .execute("UPDATE delays SET fired = 1 WHERE id = ?1", params![id])
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// The delays of a run not fired yet.
    pub fn pending_delays(&self, run: &str) -> Result<Vec<Delay>, StoreError> {
        self.rows(
            "SELECT id, sequence, target_kind, target, due_ms FROM delays WHERE run_id = ?1 AND fired = 0 ORDER BY id",
            run,
            |r| {
                Ok(Delay {
                    id: r.get(0)?,
                    sequence: r.get(1)?,
                    step: r.get::<_, String>(2)? == "step",
                    target: r.get(3)?,
                    due_ms: u64::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
                })
            },
        )
    }
}

/// 32 random bits from the standard library's randomly seeded hasher.
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_ms());
    u32::try_from(h.finish() & 0xffff_ffff).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_keeps_runs_tasks_triggers_and_delays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/folder/runs.db");
        let s = Store::open(Some(&path)).unwrap();
        let a = s.new_run("f").unwrap();
        let b = s.new_run("f").unwrap();
        assert_ne!(a, b);
        s.raise(&b, "go", "1").unwrap();
        s.raise(&b, "go", "1").unwrap();
        s.task(&b, "s1", "1", 1, Status::Pending, None).unwrap();
        s.task(&b, "s1", "1", 1, Status::Active, None).unwrap();
        s.task(&b, "s1", "1", 1, Status::Failure, Some("boom"))
            .unwrap();
        s.task(&b, "s1", "1", 2, Status::Success, None).unwrap();
        let d = s.add_delay(&b, "1", true, "s2", 42).unwrap();
        drop(s);
        let s = Store::open(Some(&path)).unwrap();
        assert_eq!(s.find_run("f", None).unwrap().unwrap().id, b);
        assert!(s.find_run("f", Some("nope")).unwrap().is_none());
        assert_eq!(s.triggers(&b).unwrap(), vec![("go".into(), "1".into())]);
        let t = s.tasks(&b).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!((t[0].attempt, t[0].status), (2, Status::Success));
        assert_eq!(s.pending_delays(&b).unwrap()[0].due_ms, 42);
        s.fire_delay(d).unwrap();
        assert!(s.pending_delays(&b).unwrap().is_empty());
        assert_eq!(s.reopen_run(&b).unwrap(), 1);
    }

    #[test]
    fn an_unusable_path_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        std::fs::write(&file, "x").unwrap();
        let e = Store::open(Some(&file.join("runs.db"))).err().unwrap();
        assert!(e.to_string().contains("cannot create its folder"), "{e}");
        let e = Store::open(Some(dir.path())).err().unwrap();
        assert!(e.to_string().starts_with("run store "), "{e}");
    }
}
