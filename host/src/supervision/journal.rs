//! The event journal: `otools run --events FILE` appends one JSON object
//! per line for every lifecycle event (started, ready, failed, hung,
//! abandoned, restarting, gave_up, fenced_call, deactivated, finalized, ...)
//! with the context, service, generation and reason. Tests and operators
//! read it instead of log text. Each line is flushed as it is written.
//! Every event has `ts` (wall clock, milliseconds) and `mono_us`
//! (monotonic microseconds since the journal opened, for latencies).

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Instant, SystemTime};

use parking_lot::Mutex;
use serde_json::{Map, Value};

static JOURNAL: OnceLock<Mutex<BufWriter<File>>> = OnceLock::new();
static START: OnceLock<Instant> = OnceLock::new();

/// Microseconds since the journal was opened, from the monotonic clock:
/// the field to compute latencies from (`ts` is wall-clock, for people).
fn monotonic_us() -> u64 {
    u64::try_from(START.get_or_init(Instant::now).elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Opens (appending) the journal file. Without it, events are not recorded.
pub fn open(path: &Path) -> io::Result<()> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    START.get_or_init(Instant::now);
    let _ = JOURNAL.set(Mutex::new(BufWriter::new(file)));
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
    let mut out = out.lock();
    let _ = writeln!(out, "{}", Value::Object(obj));
    let _ = out.flush();
}
