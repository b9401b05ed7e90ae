//! The event journal: `otools run --events FILE` appends one JSON object
//! per line for every lifecycle [`Event`] (started, ready, failed, hung,
//! abandoned, restarting, gave_up, fenced_call, deactivated, finalized, ...)
//! with the context, service, generation and reason. Tests and operators
//! read it instead of log text. Each line is flushed as it is written.
//! Every event has `ts` (wall clock, milliseconds) and `mono_us`
//! (monotonic microseconds since the journal opened, for latencies).
//! [`Journal`] is one [`Sink`] of the host's [`crate::event::Events`].
//!
//! A failed write (a full disk, `/dev/full`, a closed pipe) loses that
//! event and nothing else: the host goes on. The first failure is logged as
//! an error; later ones are only counted, and [`Journal::finish`] logs the
//! count when the host ends.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use parking_lot::Mutex;
use serde_json::{Map, Value};

use crate::event::{Event, Sink};

/// The `--events` file, a sink writing each event as one JSON line.
pub struct Journal {
    /// Each event is written with one `write_all` of a whole line: nothing
    /// is buffered, so a failed write leaves nothing behind to come out later.
    file: Mutex<File>,
    /// When the journal was opened: `mono_us` counts from here.
    start: Instant,
    /// Events lost to write errors.
    write_failures: AtomicU64,
}

impl Journal {
    /// Opens (appending) the journal file.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self {
            file: Mutex::new(file),
            start: Instant::now(),
            write_failures: AtomicU64::new(0),
        })
    }

    /// Counts a lost event; logs the first one.
    #[cold]
    fn write_failed(&self, e: &io::Error) {
        if self.write_failures.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::error!(
                "cannot write to the event journal: {e}; events are being lost (later failures are only counted, and the total is logged at exit)"
            );
        }
    }

    /// How many events were lost to write errors so far.
    pub fn write_failures(&self) -> u64 {
        self.write_failures.load(Ordering::Relaxed)
    }

    /// Logs, when the host ends, how many events the journal lost, if any.
    pub fn finish(&self) {
        let lost = self.write_failures();
        if lost > 0 {
            tracing::error!("the event journal lost {lost} event(s) to write errors");
        }
    }
}

impl Sink for Journal {
    fn event(&self, e: &Event) {
        // Microseconds since the journal was opened, from the monotonic
        // clock: the field to compute latencies from (`ts` is for people).
        let mono_us = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        let mut line = json(e, mono_us).to_string();
        line.push('\n');
        let written = self.file.lock().write_all(line.as_bytes());
        if let Err(err) = written {
            self.write_failed(&err);
        }
    }
}

/// The JSON object of one event: `ts`, `mono_us`, `event`, then `context`
/// (left out for a host-wide event, such as a reload), `service` and
/// `generation` when the event is about a unit, then its own keys.
fn json(e: &Event, mono_us: u64) -> Value {
    let mut obj = Map::new();
    obj.insert(
        "ts".into(),
        humantime::format_rfc3339_millis(SystemTime::now())
            .to_string()
            .into(),
    );
    obj.insert("mono_us".into(), mono_us.into());
    obj.insert("event".into(), e.name().into());
    if let Some(c) = e.context() {
        obj.insert("context".into(), c.into());
    }
    if let Some(u) = e.unit() {
        obj.insert("service".into(), u.service.as_str().into());
        obj.insert("generation".into(), u.generation.into());
    }
    for (k, v) in e.fields() {
        obj.insert(k.into(), v);
    }
    Value::Object(obj)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::event::{Ceiling, Unit};

    /// The line the journal wrote before events were typed (its
    /// `record(event, context, service, generation, fields)`), without
    /// `ts` and `mono_us`: what the typed events must still produce.
    fn old_record(
        event: &str,
        context: &str,
        service: Option<&str>,
        generation: Option<u64>,
        fields: &[(&str, Value)],
    ) -> Value {
        let mut obj = Map::new();
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
        Value::Object(obj)
    }

    /// The new line, without `ts` and `mono_us` (checked to be there).
    fn new_line(e: &Event) -> Value {
        let mut v = json(e, 7);
        let obj = v.as_object_mut().expect("an object");
        assert!(obj.remove("ts").is_some_and(|t| t.is_string()));
        assert_eq!(obj.remove("mono_us"), Some(json!(7)));
        v
    }

    #[test]
    fn typed_events_write_the_json_the_journal_wrote_before() {
        let u = |g| Unit::new("c", "s", g);
        let cases = [
            (
                Event::Hung {
                    unit: u(2),
                    entry: "main".into(),
                    limit_ms: Some(250),
                },
                old_record(
                    "hung",
                    "c",
                    Some("s"),
                    Some(2),
                    &[("entry", "main".into()), ("limit_ms", 250u64.into())],
                ),
            ),
            (
                Event::Restarting {
                    unit: u(1),
                    delay_ms: 100,
                    attempt: 2,
                    restarts_in_window: 2,
                    group: vec!["s".into(), "t".into()],
                },
                old_record(
                    "restarting",
                    "c",
                    Some("s"),
                    Some(1),
                    &[
                        ("delay_ms", 100u64.into()),
                        ("attempt", 2u32.into()),
                        ("restarts_in_window", 2usize.into()),
                        ("group", json!(["s", "t"])),
                    ],
                ),
            ),
            (
                Event::Finalized { unit: u(3) },
                old_record("finalized", "c", Some("s"), Some(3), &[]),
            ),
            (
                Event::ContextAbandoned {
                    context: "c".into(),
                },
                old_record("abandoned", "c", None, None, &[("entry", "context".into())]),
            ),
            (
                Event::ContextReady {
                    context: "c".into(),
                },
                old_record("ready", "c", None, None, &[]),
            ),
            (
                Event::LeakCeiling(Ceiling::AbandonedThreads {
                    abandoned_threads: 4,
                    max: 4,
                }),
                old_record(
                    "leak_ceiling",
                    "",
                    None,
                    None,
                    &[
                        ("kind", "abandoned_threads".into()),
                        ("abandoned_threads", 4u64.into()),
                        ("max", 4usize.into()),
                    ],
                ),
            ),
            (
                Event::ReloadOk {
                    file: "/p/lib.so".into(),
                    hash: "00ff".into(),
                    instances: 2,
                    revived: 0,
                    loaded_versions: 3,
                    loaded_bytes: 4096,
                },
                old_record(
                    "reload_ok",
                    "",
                    None,
                    None,
                    &[
                        ("file", "/p/lib.so".into()),
                        ("hash", "00ff".into()),
                        ("instances", 2usize.into()),
                        ("revived", 0usize.into()),
                        ("loaded_versions", 3usize.into()),
                        ("loaded_bytes", 4096u64.into()),
                    ],
                ),
            ),
        ];
        for (event, old) in cases {
            // Compared as text too: same keys, same value types, same bytes.
            assert_eq!(new_line(&event).to_string(), old.to_string(), "{event:?}");
        }
    }
}
