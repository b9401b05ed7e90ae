//! What `otools flow show` reads from a run store: every run, and for one
//! run every task (each attempt, with its error text) and the delays not
//! fired yet. The file is opened read-only, so it can be read while a host
//! is running on it (the store is in WAL mode: a reader sees the last
//! committed transaction and never blocks the writer).

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::Serialize;

use super::store::SCHEMA_VERSION;

/// Why a run store cannot be shown.
#[derive(Debug, thiserror::Error)]
pub enum ShowError {
    /// No file at that path.
    #[error("run store {path}: the file does not exist")]
    Missing {
        /// The store file.
        path: PathBuf,
    },
    /// The file is not a run store (not SQLite, or without its tables).
    #[error("run store {path}: not an otools run store: {reason}")]
    NotAStore {
        /// The store file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The store was written by a newer otools.
    #[error(
        "run store {path}: schema version {found} is newer than this otools' ({SCHEMA_VERSION}); use a newer otools"
    )]
    NewerSchema {
        /// The store file.
        path: PathBuf,
        /// The file's schema version.
        found: i64,
    },
    /// `--run` names no run of the store.
    #[error("run store {path}: it holds no run `{run}`")]
    UnknownRun {
        /// The store file.
        path: PathBuf,
        /// The run asked for.
        run: String,
    },
}

/// A run store's runs, and one run in detail.
#[derive(Debug, Clone, Serialize)]
pub struct StoreReport {
    /// The store file.
    pub store: String,
    /// Every run, oldest first.
    pub runs: Vec<RunRow>,
    /// The run shown in detail (`--run`, else the newest); `None` without runs.
    pub shown: Option<RunDetail>,
}

/// One run.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    /// Its id.
    pub id: String,
    /// Its flow.
    pub flow: String,
    /// When it started (ms since the Unix epoch).
    pub started_ms: u64,
    /// How many times `recover` or `continue` took it up (0: a new run).
    pub recovery: u32,
    /// `finished`, or `unfinished` (running now, or its host died).
    pub state: String,
    /// `success`, `failure`, `stopped` once finished.
    pub result: Option<String>,
}

/// One run in detail.
#[derive(Debug, Clone, Serialize)]
pub struct RunDetail {
    /// The run's id.
    pub run: String,
    /// Every task (each attempt of each activation), in the order recorded.
    pub tasks: Vec<TaskRow>,
    /// The delays not fired yet.
    pub pending_delays: Vec<DelayRow>,
}

/// One attempt of one activation of a step.
#[derive(Debug, Clone, Serialize)]
pub struct TaskRow {
    /// The step.
    pub step: String,
    /// The sequence.
    pub sequence: String,
    /// The attempt, from 1.
    pub attempt: u32,
    /// `pending`, `active`, `success` or `failure`.
    pub status: String,
    /// Why it failed.
    pub error: Option<String>,
}

/// A delay not fired yet.
#[derive(Debug, Clone, Serialize)]
pub struct DelayRow {
    /// `step` or `event`.
    pub kind: String,
    /// The step or event.
    pub target: String,
    /// The sequence.
    pub sequence: String,
    /// When it is due (ms since the Unix epoch).
    pub due_ms: u64,
    /// The same, as RFC 3339 UTC.
    pub due: String,
}

/// `ms` since the Unix epoch as RFC 3339 UTC, to the millisecond.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Reads the store at `path` (read-only) with `run` (default: the newest) in detail.
pub fn read(path: &Path, run: Option<&str>) -> Result<StoreReport, ShowError> {
    let shown = path.to_path_buf();
    if !path.is_file() {
        return Err(ShowError::Missing { path: shown });
    }
    let not = |e: rusqlite::Error| ShowError::NotAStore {
        path: shown.clone(),
        reason: e.to_string(),
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(not)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(not)?;
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(not)?;
    if found > SCHEMA_VERSION {
        return Err(ShowError::NewerSchema { path: shown, found });
    }
    let tables: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN ('runs', 'tasks', 'delays')",
            [],
            |r| r.get(0),
        )
        .map_err(not)?;
    if found == 0 || tables != 3 {
        return Err(ShowError::NotAStore {
            path: shown,
            reason: String::from("it lacks the runs, tasks and delays tables"),
        });
    }
    let mut q = conn
        .prepare("SELECT run_id, flow, started_ms, recovery, finished_ms, result FROM runs ORDER BY rowid")
        .map_err(not)?;
    let runs: Vec<RunRow> = q
        .query_map([], |r| {
            Ok(RunRow {
                id: r.get(0)?,
                flow: r.get(1)?,
                started_ms: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                recovery: r.get(3)?,
                state: String::from(if r.get::<_, Option<i64>>(4)?.is_some() {
                    "finished"
                } else {
                    "unfinished"
                }),
                result: r.get(5)?,
            })
        })
        .and_then(Iterator::collect)
        .map_err(not)?;
    let chosen = match run {
        Some(id) => Some(
            conn.query_row(
                "SELECT run_id FROM runs WHERE run_id = ?1",
                params![id],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map_err(not)?
            .ok_or_else(|| ShowError::UnknownRun {
                path: shown.clone(),
                run: id.to_owned(),
            })?,
        ),
        None => runs.last().map(|r| r.id.clone()),
    };
    let shown_run = match chosen {
        None => None,
        Some(id) => {
            let mut q = conn
                .prepare("SELECT step, sequence, attempt, status, error FROM tasks WHERE run_id = ?1 ORDER BY rowid")
                .map_err(not)?;
            let tasks = q
                .query_map(params![id], |r| {
                    Ok(TaskRow {
                        step: r.get(0)?,
                        sequence: r.get(1)?,
                        attempt: r.get(2)?,
                        status: r.get(3)?,
                        error: r.get(4)?,
                    })
                })
                .and_then(Iterator::collect)
                .map_err(not)?;
            let mut q = conn
                .prepare("SELECT target_kind, target, sequence, due_ms FROM delays WHERE run_id = ?1 AND fired = 0 ORDER BY id")
                .map_err(not)?;
            let pending_delays = q
                .query_map(params![id], |r| {
                    let due_ms = u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0);
                    Ok(DelayRow {
                        kind: r.get(0)?,
                        target: r.get(1)?,
                        sequence: r.get(2)?,
                        due_ms,
                        due: rfc3339(due_ms),
                    })
                })
                .and_then(Iterator::collect)
                .map_err(not)?;
            Some(RunDetail {
                run: id,
                tasks,
                pending_delays,
            })
        }
    };
    Ok(StoreReport {
        store: path.display().to_string(),
        runs,
        shown: shown_run,
    })
}
