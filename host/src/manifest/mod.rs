//! The deployment manifest: plain serde data describing dataframes,
//! contexts, services and triggers, exactly as the TOML file says.
//!
//! [`load()`] reads and parses a file into a [`Manifest`], collecting every
//! error it can (one per malformed item, not only the first), each with the
//! file, line, column and key. [`validate`] then cross-checks names and
//! references. Turning a manifest into running instances (loading plugins,
//! handing them their config) is the job of [`crate::plan`].

pub mod config;
pub mod flow;
pub mod load;
pub mod policy;
pub mod validate;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use otools_abi::LogLevel;

use policy::{GiveUp, Policy, Restart, Strategy};
use serde::Deserialize;
use toml::Spanned;

pub use load::load;

/// The manifest format version this host reads.
pub const MANIFEST_VERSION: i64 = 1;

/// A parsed deployment manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The file it was read from.
    pub path: PathBuf,
    /// The file's text, kept to turn byte offsets into lines and columns.
    pub source: String,
    /// Byte offset of the start of every line of `source`, to turn an offset
    /// into a line in O(log n) (not by scanning from the start per error).
    line_starts: Vec<usize>,
    /// The spans inside every `config` table, by the table's byte offset.
    configs: std::collections::BTreeMap<usize, config::SpanTree>,
    /// `[host]`.
    pub host: HostSection,
    /// `[[dataframe]]`, in file order.
    pub dataframes: Vec<DataframeDecl>,
    /// `[[context]]`, in file order.
    pub contexts: Vec<ContextDecl>,
    /// `[[pipeline]]`, in file order.
    pub pipelines: Vec<pipeline::PipelineDecl>,
    /// `[[flow]]`, in file order.
    pub flows: Vec<flow::FlowDecl>,
}

/// The default of `[host] max_abandoned_threads`.
pub const DEFAULT_MAX_ABANDONED_THREADS: usize = 256;

/// `[host]`: settings of the whole process.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSection {
    /// Log level of the host and default of every context.
    pub log_level: Option<Spanned<Level>>,
    /// Where `plugin = "name"` finds `lib<name>.so`; relative to the manifest's folder.
    pub plugin_dir: Option<Spanned<String>>,
    /// The default `shutdown_timeout` of every service: how long its loop call
    /// and its `finalize` may take when it stops before it is abandoned (default 5s).
    pub shutdown_timeout: Option<Spanned<HumanDuration>>,
    /// Reload plugins whose file changes (default true; `--no-watch` turns it off).
    pub watch: Option<bool>,
    /// Quiet time after a file's last change before it is reloaded (default 200ms).
    pub reload_debounce: Option<Spanned<HumanDuration>>,
    /// Reload attempts allowed per file within `reload_window` (default 10).
    pub reload_limit: Option<usize>,
    /// The window of `reload_limit` (default 60s).
    pub reload_window: Option<Spanned<HumanDuration>>,
    /// Exit with code 76 once this many library versions are loaded (default: no ceiling).
    pub max_loaded_libraries: Option<usize>,
    /// Warn once loaded library versions add up to more than this many MiB (default 256).
    pub library_budget_mib: Option<u64>,
    /// Stop everything and exit with code 76 once this many threads are left
    /// in hung plugin calls at the same time (default 256).
    pub max_abandoned_threads: Option<usize>,
    /// When the run ends besides every context ending (default `contexts_ended`).
    pub exit_when: Option<Spanned<ExitWhen>>,
}

/// `[host] exit_when`: what ends the run, besides a signal or `otools stop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ExitWhen {
    /// When every context has ended on its own.
    #[default]
    ContextsEnded,
    /// When every `main_once` service has finished (its `main` returned, or
    /// it stopped for good): every context then stops and finalizes.
    MainOnceDone,
    /// When every pipeline has finished: every context then stops and finalizes.
    PipelinesFinished,
    /// When every flow has finished: every context then stops and finalizes.
    FlowsFinished,
}

impl ExitWhen {
    /// The value as written in a manifest.
    pub fn name(self) -> &'static str {
        match self {
            ExitWhen::ContextsEnded => "contexts_ended",
            ExitWhen::MainOnceDone => "main_once_done",
            ExitWhen::PipelinesFinished => "pipelines_finished",
            ExitWhen::FlowsFinished => "flows_finished",
        }
    }
}

/// `[[dataframe]]`: a shared key/value store owned by the host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataframeDecl {
    /// Unique name.
    pub name: Spanned<String>,
    /// Initial keys and values.
    #[serde(default)]
    pub init: toml::Table,
}

/// The duration keys of a service's supervision, for validation.
#[derive(Debug, Clone, Copy)]
pub struct SupervisionKeys<'a> {
    /// `watchdog`.
    pub watchdog: Option<&'a Spanned<HumanDuration>>,
    /// `startup_timeout`.
    pub startup_timeout: Option<&'a Spanned<HumanDuration>>,
    /// `shutdown_timeout`.
    pub shutdown_timeout: Option<&'a Spanned<HumanDuration>>,
    /// `restart_window`.
    pub restart_window: Option<&'a Spanned<HumanDuration>>,
    /// `restart_delay`.
    pub restart_delay: Option<&'a Spanned<HumanDuration>>,
    /// `max_restart_delay`.
    pub max_restart_delay: Option<&'a Spanned<HumanDuration>>,
}

macro_rules! keys_of {
    ($d:expr) => {
        SupervisionKeys {
            watchdog: $d.watchdog.as_ref(),
            startup_timeout: $d.startup_timeout.as_ref(),
            shutdown_timeout: $d.shutdown_timeout.as_ref(),
            restart_window: $d.restart_window.as_ref(),
            restart_delay: $d.restart_delay.as_ref(),
            max_restart_delay: $d.max_restart_delay.as_ref(),
        }
    };
}

/// Declares a manifest item with the ten supervision keys a service has
/// after its own fields (services, stack entries and pipeline stages share
/// them), then the fields of an optional `after { ... }`, and its `keys()`
/// for validation.
macro_rules! with_supervision_keys {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $($(#[$fmeta:meta])* pub $field:ident: $ty:ty,)*
        }
        $(after {
            $($(#[$ameta:meta])* pub $afield:ident: $aty:ty,)*
        })?
    ) => {
        $(#[$meta])*
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
            /// Longest a single `main`, loop or `check` call may take before the
            /// instance is declared hung and replaced (default: not watched).
            pub watchdog: Option<Spanned<HumanDuration>>,
            /// Longest `setup` may take; overrunning is a startup failure (default 30s).
            pub startup_timeout: Option<Spanned<HumanDuration>>,
            /// Longest `finalize` may take (default: `[host] shutdown_timeout`).
            pub shutdown_timeout: Option<Spanned<HumanDuration>>,
            /// `always`, `on-failure` (default) or `never`.
            pub restart: Option<Spanned<Restart>>,
            /// Restarts allowed within `restart_window` before giving up (default 5).
            pub max_restarts: Option<Spanned<u32>>,
            /// The window `max_restarts` counts in (default 10s).
            pub restart_window: Option<Spanned<HumanDuration>>,
            /// Delay before the first restart; doubles for each consecutive one (default 100ms).
            pub restart_delay: Option<Spanned<HumanDuration>>,
            /// Cap of the doubling restart delay (default 30s).
            pub max_restart_delay: Option<Spanned<HumanDuration>>,
            /// Healthy running time after which the delay starts over (default 60s).
            pub backoff_reset_after: Option<Spanned<HumanDuration>>,
            /// `stop_service`, `stop_context` or `exit_host` (default: the context's).
            pub on_give_up: Option<Spanned<GiveUp>>,
            $($($(#[$ameta])* pub $afield: $aty,)*)?
        }

        impl $name {
            /// Its supervision durations, for validation.
            pub fn keys(&self) -> SupervisionKeys<'_> {
                keys_of!(self)
            }
        }
    };
}

/// `[[context]]`: one main loop on its own thread.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextDecl {
    /// Unique name.
    pub name: Spanned<String>,
    /// Log level of this context's services (default: the host's).
    pub log_level: Option<Spanned<Level>>,
    /// Minimum time between the starts of two main-loop iterations (default 0).
    pub period: Option<Spanned<HumanDuration>>,
    /// The only dataframes this context's services may use.
    #[serde(default)]
    pub dataframes: Vec<Spanned<String>>,
    /// Which services restart with a failed one (default `one_for_one`).
    pub strategy: Option<Spanned<Strategy>>,
    /// The default give-up action of this context's services (default `stop_service`).
    pub on_give_up: Option<Spanned<GiveUp>>,
    /// `[[context.service]]`.
    #[serde(default, rename = "service")]
    pub services: Vec<ServiceDecl>,
    /// `[[context.trigger]]`.
    #[serde(default, rename = "trigger")]
    pub triggers: Vec<TriggerDecl>,
}

with_supervision_keys! {
/// `[[context.service]]`: one service instance run by the context.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceDecl {
    /// Unique within the context (services and triggers share one namespace).
    pub name: Spanned<String>,
    /// A library name looked up in `plugin_dir`, or a path to a library.
    pub plugin: Spanned<String>,
    /// Which of the library's services.
    pub export: Spanned<String>,
    /// Handed to the plugin, which deserializes it into its config type.
    pub config: Option<Spanned<toml::Table>>,
}
after {
    /// Topics whose publications this service receives as messages.
    #[serde(default)]
    pub subscribe: Vec<Spanned<String>>,
    /// How many messages its mailbox holds before senders wait (default 1000).
    pub mailbox_size: Option<Spanned<u32>>,
    /// The targets this service sends to, checked by `check` and `run`
    /// (each must name exactly one service that accepts messages).
    #[serde(default)]
    pub sends_to: Vec<Spanned<String>>,
    /// Call `main` once (after the start gate) instead of on every iteration (default false).
    pub main_once: Option<Spanned<bool>>,
}
}

/// `[[context.trigger]]`: conditions that run a stack of services when they fire.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerDecl {
    /// Unique within the context.
    pub name: Spanned<String>,
    /// How the conditions combine (default `or`).
    pub mode: Option<Spanned<Mode>>,
    /// The conditions, all evaluated on every iteration.
    #[serde(default)]
    pub condition: Vec<Spanned<StackEntry>>,
    /// The services whose `main` runs, in order, when the trigger fires.
    #[serde(default)]
    pub service: Vec<Spanned<StackEntry>>,
}

with_supervision_keys! {
/// One condition or stack service of a trigger.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackEntry {
    /// Optional name for logs (default: `<trigger>/<export>`).
    pub name: Option<Spanned<String>>,
    /// A library name looked up in `plugin_dir`, or a path to a library.
    pub plugin: Spanned<String>,
    /// Which of the library's conditions or services.
    pub export: Spanned<String>,
    /// Handed to the plugin.
    pub config: Option<Spanned<toml::Table>>,
}
}

/// How a trigger combines its conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// All conditions true.
    And,
    /// At least one condition true.
    Or,
    /// An odd number of conditions true.
    Xor,
}

impl Mode {
    /// Does a trigger with these condition results fire?
    pub fn fires(self, results: impl IntoIterator<Item = bool>) -> bool {
        let mut trues = 0usize;
        let mut all = true;
        for r in results {
            trues += usize::from(r);
            all &= r;
        }
        match self {
            Mode::And => all,
            Mode::Or => trues > 0,
            Mode::Xor => trues % 2 == 1,
        }
    }
}

/// A log level name in a manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level(pub LogLevel);

impl<'de> Deserialize<'de> for Level {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Level, D::Error> {
        let s = String::deserialize(d)?;
        LogLevel::parse(&s).map(Level).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown log level `{s}`, expected one of: verbose, debug, info, warning, error, fatal"
            ))
        })
    }
}

/// A duration written as a human string (`"250ms"`, `"5s"`, `"1m 30s"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<HumanDuration, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"250ms\" or \"5s\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<HumanDuration, E> {
                const LONGEST: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
                if let Ok(d) = humantime::parse_duration(s)
                    && d > LONGEST
                {
                    return Err(E::custom(format!(
                        "duration `{s}` is too long (at most 10 years)"
                    )));
                }
                humantime::parse_duration(s).map(HumanDuration).map_err(|e| {
                    E::custom(format!(
                        "invalid duration `{s}`: {e}; write a number and a unit, e.g. \"250ms\" or \"5s\""
                    ))
                })
            }
        }
        d.deserialize_str(V)
    }
}

/// A problem in a manifest, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The manifest file.
    pub file: PathBuf,
    /// 1-based line and column (in characters); `None` when the problem
    /// concerns the whole file (it cannot be read).
    pub position: Option<(usize, usize)>,
    /// The key or item concerned, e.g. `context "Main" > service "tick" > export`
    /// (empty when the problem concerns the whole file).
    pub key: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", Escaped(&self.file.display().to_string()))?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", Escaped(&self.key))?;
        }
        write!(f, ": {}", Escaped(&self.message))
    }
}

/// Text from a manifest (a name, a value, a path) shown with its control
/// characters escaped (`\0`, `\u{1b}`), so that it can neither break a line
/// nor drive a terminal. Line breaks and tabs of multi-line messages stay.
struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some((i, c)) = rest
            .char_indices()
            .find(|&(_, c)| c.is_control() && c != '\n' && c != '\t')
        {
            f.write_str(rest.get(..i).unwrap_or_default())?;
            write!(f, "{}", c.escape_debug())?;
            rest = rest.get(i + c.len_utf8()..).unwrap_or_default();
        }
        f.write_str(rest)
    }
}

/// A name as it appears in a key or message: with anything that is not
/// printable escaped the way Rust writes it in a string literal.
pub fn shown(name: &str) -> String {
    name.escape_debug().to_string()
}

/// Whether `c` may appear in a name (of a context, service, trigger, stack
/// entry or dataframe): a letter, mark or digit of any script or `_` (Unicode's
/// identifier characters, UAX #31 `XID_Continue`, as in Rust or Python
/// identifiers), `-` or `.`. Names appear in log lines (`context/service:`),
/// `key=value` fields, journal lines and thread names, so spaces, `/`, `:`,
/// `=`, quotes and control characters are kept out of them.
pub fn is_name_char(c: char) -> bool {
    unicode_ident::is_xid_continue(c) || c == '-' || c == '.'
}

/// Why `name` is not a valid name, if it is not.
pub fn name_error(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some(String::from("a name must not be empty"));
    }
    let (i, bad) = name.chars().enumerate().find(|(_, c)| !is_name_char(*c))?;
    Some(format!(
        "invalid name `{}`: character {} `{}` (U+{:04X}) is not allowed; a name is made of letters, digits, `_`, `-` and `.`",
        shown(name),
        i + 1,
        bad.escape_debug(),
        u32::from(bad)
    ))
}

/// Every problem found in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "error: {d}")?;
        }
        Ok(())
    }
}

impl Manifest {
    /// A diagnostic at byte offset `at` of the file.
    pub fn diagnostic(
        &self,
        at: usize,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic {
            file: self.path.clone(),
            position: Some(self.line_column(at)),
            key: key.into(),
            message: message.into(),
        }
    }

    /// 1-based line and column of byte offset `at` of the file.
    pub fn line_column(&self, at: usize) -> (usize, usize) {
        let at = at.min(self.source.len());
        // The last line starting at or before `at`.
        let index = self.line_starts.partition_point(|&s| s <= at).max(1) - 1;
        let start = self.line_starts.get(index).copied().unwrap_or(0);
        let column = self
            .source
            .get(start..at)
            .map_or(1, |s| s.chars().count() + 1);
        (index + 1, column)
    }

    /// The spans inside the `config` table at byte offset `at`.
    pub fn config_spans(&self, at: usize) -> Option<&config::SpanTree> {
        self.configs.get(&at)
    }

    /// The folder the manifest lives in (relative paths start there).
    pub fn dir(&self) -> PathBuf {
        self.path.parent().map_or_else(
            || PathBuf::from("."),
            |p| {
                if p.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    p.to_path_buf()
                }
            },
        )
    }

    /// The host log level (default `info`).
    pub fn host_level(&self) -> LogLevel {
        self.host
            .log_level
            .as_ref()
            .map_or(LogLevel::Info, |l| l.get_ref().0)
    }

    /// How plugin files are watched and reloaded.
    pub fn reload_settings(&self, verbose: bool) -> ReloadSettings {
        let h = &self.host;
        ReloadSettings {
            watch: h.watch.unwrap_or(true),
            debounce: h
                .reload_debounce
                .as_ref()
                .map_or(Duration::from_millis(200), |d| d.get_ref().0),
            limit: h.reload_limit.unwrap_or(10).max(1),
            window: h
                .reload_window
                .as_ref()
                .map_or(Duration::from_secs(60), |d| d.get_ref().0)
                .max(Duration::from_millis(10)),
            max_loaded: h.max_loaded_libraries,
            budget_bytes: h.library_budget_mib.unwrap_or(256) << 20,
            verbose,
        }
    }

    /// How many threads may be left in hung plugin calls at once before the
    /// host stops with code 76 (default 256, at least 1).
    pub fn max_abandoned_threads(&self) -> usize {
        self.host
            .max_abandoned_threads
            .unwrap_or(DEFAULT_MAX_ABANDONED_THREADS)
            .max(1)
    }

    /// What ends the run besides every context ending (default `contexts_ended`).
    pub fn exit_when(&self) -> ExitWhen {
        self.host
            .exit_when
            .as_ref()
            .map_or(ExitWhen::default(), |e| *e.get_ref())
    }

    /// The shutdown timeout (default 5 s).
    pub fn shutdown_timeout(&self) -> Duration {
        self.host
            .shutdown_timeout
            .as_ref()
            .map_or(Duration::from_secs(5), |d| d.get_ref().0)
    }
}

impl ContextDecl {
    /// Services and triggers in the order they appear in the file.
    pub fn entries(&self) -> Vec<EntryDecl<'_>> {
        let mut all: Vec<EntryDecl<'_>> = self
            .services
            .iter()
            .map(EntryDecl::Service)
            .chain(self.triggers.iter().map(EntryDecl::Trigger))
            .collect();
        all.sort_by_key(|e| e.name().span().start);
        all
    }
}

/// Resolves a service's supervision keys against the context's and host's defaults.
macro_rules! policy_of {
    ($decl:expr, $context:expr, $host_shutdown:expr) => {{
        let d = $decl;
        let dur = |v: &Option<Spanned<HumanDuration>>, default: Duration| {
            v.as_ref().map_or(default, |x| x.get_ref().0)
        };
        let base = Policy::default();
        Policy {
            watchdog: d.watchdog.as_ref().map(|x| x.get_ref().0),
            startup_timeout: dur(&d.startup_timeout, base.startup_timeout),
            shutdown_timeout: dur(&d.shutdown_timeout, $host_shutdown),
            restart: d.restart.as_ref().map_or(base.restart, |x| *x.get_ref()),
            max_restarts: d
                .max_restarts
                .as_ref()
                .map_or(base.max_restarts, |x| *x.get_ref()),
            restart_window: dur(&d.restart_window, base.restart_window),
            restart_delay: dur(&d.restart_delay, base.restart_delay),
            max_restart_delay: dur(&d.max_restart_delay, base.max_restart_delay),
            backoff_reset_after: dur(&d.backoff_reset_after, base.backoff_reset_after),
            on_give_up: d
                .on_give_up
                .as_ref()
                .map(|x| *x.get_ref())
                .or_else(|| $context.on_give_up.as_ref().map(|x| *x.get_ref()))
                .unwrap_or(base.on_give_up),
        }
    }};
}

impl ServiceDecl {
    /// Is `main` called only once (`main_once = true`)?
    pub fn main_once(&self) -> bool {
        self.main_once.as_ref().is_some_and(|m| *m.get_ref())
    }

    /// This service's supervision policy.
    pub fn policy(&self, context: &ContextDecl, host_shutdown: Duration) -> Policy {
        policy_of!(self, context, host_shutdown)
    }
}

impl StackEntry {
    /// This condition's or stack service's supervision policy.
    pub fn policy(&self, context: &ContextDecl, host_shutdown: Duration) -> Policy {
        policy_of!(self, context, host_shutdown)
    }
}

/// A service or a trigger of a context.
#[derive(Debug, Clone, Copy)]
pub enum EntryDecl<'a> {
    /// `[[context.service]]`.
    Service(&'a ServiceDecl),
    /// `[[context.trigger]]`.
    Trigger(&'a TriggerDecl),
}

impl<'a> EntryDecl<'a> {
    /// The entry's name.
    pub fn name(&self) -> &'a Spanned<String> {
        match self {
            EntryDecl::Service(s) => &s.name,
            EntryDecl::Trigger(t) => &t.name,
        }
    }
}

/// Byte offsets of the starts of the lines of `source`.
fn line_starts(source: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(source.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

/// 1-based line and column of byte offset `at` in `source` (scans from the
/// start: for one offset; [`Manifest::line_column`] is the fast way for many).
pub fn line_column(source: &str, at: usize) -> (usize, usize) {
    let at = at.min(source.len());
    let before = source.get(..at).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before
        .get(line_start..)
        .map_or(1, |s| s.chars().count() + 1);
    (line, column)
}

/// How reloads are watched and bounded (`[host]` keys and `--no-watch`).
#[derive(Debug, Clone)]
pub struct ReloadSettings {
    /// Watch plugin files at all.
    pub watch: bool,
    /// Quiet time after the last change before a file is looked at.
    pub debounce: Duration,
    /// Reload attempts allowed per `window` (per file).
    pub limit: usize,
    /// The rate-limit window.
    pub window: Duration,
    /// Exit (code 76) once this many library versions have been loaded.
    pub max_loaded: Option<usize>,
    /// Warn once the loaded versions' files add up to more than this many bytes.
    pub budget_bytes: u64,
    /// Keep abi_stable's full reports in errors.
    pub verbose: bool,
}

// Declared after the macros it uses (`with_supervision_keys!`, `policy_of!`):
// a `macro_rules!` is visible only in the text that follows it.
pub mod pipeline;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_truth_tables() {
        let cases: [&[bool]; 8] = [
            &[],
            &[true],
            &[false],
            &[true, true],
            &[true, false],
            &[false, false],
            &[true, true, true],
            &[true, false, true],
        ];
        let and = [true, true, false, true, false, false, true, false];
        let or = [false, true, false, true, true, false, true, true];
        let xor = [false, true, false, false, true, false, true, false];
        for (i, c) in cases.iter().enumerate() {
            assert_eq!(Mode::And.fires(c.iter().copied()), and[i], "and {c:?}");
            assert_eq!(Mode::Or.fires(c.iter().copied()), or[i], "or {c:?}");
            assert_eq!(Mode::Xor.fires(c.iter().copied()), xor[i], "xor {c:?}");
        }
    }

    #[test]
    fn offsets_become_lines_and_columns() {
        let s = "a = 1\nbé = 2\n";
        assert_eq!(line_column(s, 0), (1, 1));
        assert_eq!(line_column(s, 6), (2, 1));
        assert_eq!(line_column(s, 10), (2, 4));
        let m = load::parse(
            &PathBuf::from("m.toml"),
            String::from("version = 1\n# bé = 2\n\n"),
        )
        .unwrap();
        for at in 0..=m.source.len() + 2 {
            if m.source.is_char_boundary(at.min(m.source.len())) {
                assert_eq!(m.line_column(at), line_column(&m.source, at), "at {at}");
            }
        }
    }

    #[test]
    fn names_are_letters_digits_and_a_few_signs_of_any_script() {
        for ok in ["Main", "tick-2", "a.b_c", "état", "日本", "größe"] {
            assert_eq!(name_error(ok), None, "{ok}");
        }
        for bad in [
            "",
            "a b",
            " a",
            "a/b",
            "a:b",
            "a\0",
            "a\u{1b}[31m",
            "a\u{202e}",
            "\"q\"",
        ] {
            assert!(name_error(bad).is_some(), "{bad:?}");
        }
        let e = name_error("x\u{1b}").unwrap();
        assert!(e.contains("`\\u{1b}` (U+001B)"), "{e}");
        assert!(!e.contains('\u{1b}'), "{e}");
    }
}
