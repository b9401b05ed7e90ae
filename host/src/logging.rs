//! The only place a `tracing` subscriber is installed, and the format of
//! every log line.
//!
//! Lines carry one of OTools' six level names (VERBOSE, DEBUG, INFO,
//! WARNING, ERROR, FATAL) and, for anything a service says, its context and
//! service names. Two formats: `text` (colours only when stderr is a
//! terminal) and `json` (one object per line with `timestamp`, `level`,
//! `context`, `service`, `message` and any other fields). Plugin messages are
//! events with target `plugin`; host messages have the host's module paths as
//! targets, so a `RUST_LOG`-style filter can tell them apart.

use std::fmt::{self, Write as _};
use std::io::IsTerminal;
use std::time::SystemTime;

use otools_abi::LogLevel;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The `tracing` level a level name maps to (`fatal` is an error with `fatal = true`).
pub fn tracing_level(level: LogLevel) -> Level {
    match level {
        LogLevel::Verbose => Level::TRACE,
        LogLevel::Debug => Level::DEBUG,
        LogLevel::Info => Level::INFO,
        LogLevel::Warning => Level::WARN,
        LogLevel::Error | LogLevel::Fatal => Level::ERROR,
    }
}

/// The filter directive for a level, e.g. `warn`.
pub fn directive(level: LogLevel) -> &'static str {
    match tracing_level(level) {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        _ => "error",
    }
}

/// Installs the global subscriber. Call once, before anything logs.
pub fn init(format: LogFormat, filter: EnvFilter) {
    let ansi = format == LogFormat::Text && std::io::stderr().is_terminal();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .event_format(LineFormat {
            json: format == LogFormat::Json,
            ansi,
        })
        .try_init();
}

/// Emits one message of a service at its level.
pub fn plugin_event(level: LogLevel, context: &str, service: &str, message: &str) {
    plugin_event_correlated(level, context, service, message, None);
}

/// Emits one message at `level` with the given fields (`fatal = true` added at fatal).
macro_rules! emit_at {
    ($level:expr, $($field:ident),*; $message:expr) => {
        match $level {
            LogLevel::Verbose => tracing::trace!(target: "plugin", $($field,)* "{}", $message),
            LogLevel::Debug => tracing::debug!(target: "plugin", $($field,)* "{}", $message),
            LogLevel::Info => tracing::info!(target: "plugin", $($field,)* "{}", $message),
            LogLevel::Warning => tracing::warn!(target: "plugin", $($field,)* "{}", $message),
            LogLevel::Error => tracing::error!(target: "plugin", $($field,)* "{}", $message),
            LogLevel::Fatal => {
                tracing::error!(target: "plugin", $($field,)* fatal = true, "{}", $message)
            }
        }
    };
}

/// Emits one message of a service at its level, with the correlation id of
/// the message it is handling, if any (the `correlation` field).
pub fn plugin_event_correlated(
    level: LogLevel,
    context: &str,
    service: &str,
    message: &str,
    correlation: Option<&str>,
) {
    match correlation {
        None => emit_at!(level, context, service; message),
        Some(correlation) => emit_at!(level, context, service, correlation; message),
    }
}

struct LineFormat {
    json: bool,
    ansi: bool,
}

#[derive(Default)]
struct Fields {
    message: String,
    context: Option<String>,
    service: Option<String>,
    fatal: bool,
    other: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_owned(),
            "context" => self.context = Some(value.to_owned()),
            "service" => self.service = Some(value.to_owned()),
            name => self.other.push((name, value.to_owned())),
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == "fatal" {
            self.fatal = value;
        } else {
            self.other.push((field.name(), value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        self.record_str(field, &text);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_str(field, &value.to_string());
    }
}

fn level_name(level: Level, fatal: bool) -> &'static str {
    if fatal {
        return "FATAL";
    }
    match level {
        Level::TRACE => "VERBOSE",
        Level::DEBUG => "DEBUG",
        Level::INFO => "INFO",
        Level::WARN => "WARNING",
        _ => "ERROR",
    }
}

fn colour(name: &str) -> &'static str {
    match name {
        "VERBOSE" => "\x1b[2m",
        "DEBUG" => "\x1b[34m",
        "INFO" => "\x1b[32m",
        "WARNING" => "\x1b[33m",
        "ERROR" => "\x1b[31m",
        _ => "\x1b[1;31m",
    }
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut f = Fields::default();
        event.record(&mut f);
        let level = level_name(*event.metadata().level(), f.fatal);
        let timestamp = humantime::format_rfc3339_millis(SystemTime::now());
        if self.json {
            let mut obj = serde_json::Map::new();
            obj.insert("timestamp".into(), timestamp.to_string().into());
            obj.insert("level".into(), level.into());
            obj.insert(
                "context".into(),
                f.context.map_or(serde_json::Value::Null, Into::into),
            );
            obj.insert(
                "service".into(),
                f.service.map_or(serde_json::Value::Null, Into::into),
            );
            obj.insert("message".into(), f.message.into());
            obj.insert("target".into(), event.metadata().target().into());
            for (k, v) in f.other {
                obj.insert(k.into(), v.into());
            }
            return writeln!(w, "{}", serde_json::Value::Object(obj));
        }
        write!(w, "{timestamp} ")?;
        if self.ansi {
            write!(w, "{}{level:<7}\x1b[0m ", colour(level))?;
        } else {
            write!(w, "{level:<7} ")?;
        }
        match (&f.context, &f.service) {
            (Some(c), Some(s)) => write!(w, "{c}/{s}: ")?,
            (Some(c), None) => write!(w, "{c}: ")?,
            _ => write!(w, "otools: ")?,
        }
        w.write_str(&f.message)?;
        for (k, v) in &f.other {
            write!(w, " {k}={v}")?;
        }
        writeln!(w)
    }
}
