//! The event journal: `otools run --events FILE` appends one JSON object
//! per line for every lifecycle event (started, ready, failed, hung,
//! abandoned, restarting, gave_up, fenced_call, deactivated, finalized, ...)
//! with the context, service, generation and reason. Tests and operators
//! read it instead of log text. Each line is flushed as it is written.
//! Every event has `ts` (wall clock, milliseconds) and `mono_us`
//! (monotonic microseconds since the journal opened, for latencies).
//!
//! A failed write (a full disk, `/dev/full`, a closed pipe) loses that
//! event and nothing else: the host goes on. The first failure is logged as
//! an error; later ones are only counted, and [`finish`] logs the count
//! when the host ends.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use parking_lot::Mutex;
use serde_json::{Map, Value};

/// The journal file. Each event is written with one `write_all` of a whole
/// line: nothing is buffered, so a failed write leaves nothing behind to
/// come out later.
static JOURNAL: OnceLock<Mutex<File>> = OnceLock::new();
static START: OnceLock<Instant> = OnceLock::new();
/// Events lost to write errors.
static WRITE_FAILURES: AtomicU64 = AtomicU64::new(0);

/// Microseconds since the journal was opened, from the monotonic clock:
/// the field to compute latencies from (`ts` is wall-clock, for people).
fn monotonic_us() -> u64 {
    u64::try_from(START.get_or_init(Instant::now).elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Opens (appending) the journal file. Without it, events are not recorded.
pub fn open(path: &Path) -> io::Result<()> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    START.get_or_init(Instant::now);
    let _ = JOURNAL.set(Mutex::new(file));
    Ok(())
}

/// Records one event. `fields` adds event-specific keys; an empty
/// `context` (a host-wide event, such as a reload) is left out.
pub fn record(
    event: &str,
    context: &str,
    service: Option<&str>,
    generation: Option<u64>,
    fields: &[(&str, Value)],
) {
    let Some(out) = JOURNAL.get() else { return };
    let mut obj = Map::new();
    obj.insert(
        "ts".into(),
        humantime::format_rfc3339_millis(SystemTime::now())
            .to_string()
            .into(),
    );
    obj.insert("mono_us".into(), monotonic_us().into());
    obj.insert("event".into(), event.into());
    if !context.is_empty() {
        obj.insert("context".into(), context.into());
    }
    if let Some(s) = service {
        obj.insert("service".into(), s.into());
    }
    if let Some(g) = generation {
        obj.insert("generation".into(), g.into());
    }
    for (k, v) in fields {
        obj.insert((*k).into(), v.clone());
    }
    let mut line = Value::Object(obj).to_string();
    line.push('\n');
    let written = out.lock().write_all(line.as_bytes());
    if let Err(e) = written {
        write_failed(&e);
    }
}

/// Counts a lost event; logs the first one.
#[cold]
fn write_failed(e: &io::Error) {
    if WRITE_FAILURES.fetch_add(1, Ordering::Relaxed) == 0 {
        tracing::error!(
            "cannot write to the event journal: {e}; events are being lost (later failures are only counted, and the total is logged at exit)"
        );
    }
}

/// How many events were lost to write errors so far.
pub fn write_failures() -> u64 {
    WRITE_FAILURES.load(Ordering::Relaxed)
}

/// Logs, when the host ends, how many events the journal lost, if any.
pub fn finish() {
    let lost = write_failures();
    if lost > 0 {
        tracing::error!("the event journal lost {lost} event(s) to write errors");
    }
}
