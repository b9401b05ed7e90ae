//! Fault-injection fixture: the `Faulty` service and the `FaultyCondition`
//! condition panic or return an error from the entry points their config
//! lists, once each such entry point has succeeded `after` times. The
//! integration tests use them to check that a failing plugin is isolated and
//! reported, never taking the host down.
//!
//! Each entry point counts its own successful calls. With `after = 0` the
//! very first call of a listed entry point fails; with `after = 2` the third
//! and every later call fail. Failures read `"{message} in {entry}"`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use otools_api::{Condition, Context, Error, Result, Service};
use serde::Deserialize;

/// The entry points of [`Faulty`] that `panic_in` and `error_in` may list.
pub const SERVICE_ENTRY_POINTS: &[&str] = &["setup", "main", "loop", "finalize"];

/// The entry points of [`FaultyCondition`] that `panic_in` and `error_in` may list.
pub const CONDITION_ENTRY_POINTS: &[&str] = &["setup", "check", "finalize"];

fn default_message() -> String {
    String::from("injected fault")
}

fn default_true() -> bool {
    true
}

/// What a listed entry point does once it has used up its successful calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Panic,
    Error,
}

/// One entry point: the fault it injects, if any, and its successful calls.
#[derive(Debug)]
struct EntryPoint {
    name: &'static str,
    fault: Option<Fault>,
    successes: AtomicU64,
}

/// The fault rule of one instance, shared by the service and the condition.
#[derive(Debug)]
struct Faults {
    after: u64,
    message: String,
    entries: Vec<EntryPoint>,
}

impl Faults {
    /// Builds the rule, rejecting names outside `names` and names listed twice.
    fn new(
        names: &[&'static str],
        panic_in: &[String],
        error_in: &[String],
        after: u64,
        message: String,
    ) -> Result<Faults> {
        for name in panic_in.iter().chain(error_in) {
            if !names.contains(&name.as_str()) {
                otools_api::bail!(
                    "unknown entry point `{name}` (expected one of: {})",
                    names.join(", ")
                );
            }
            if panic_in.contains(name) && error_in.contains(name) {
                otools_api::bail!("`{name}` is listed in both `panic_in` and `error_in`");
            }
        }
        let listed = |list: &[String], name: &str| list.iter().any(|n| n == name);
        let entries = names
            .iter()
            .map(|&name| EntryPoint {
                name,
                fault: if listed(panic_in, name) {
                    Some(Fault::Panic)
                } else if listed(error_in, name) {
                    Some(Fault::Error)
                } else {
                    None
                },
                successes: AtomicU64::new(0),
            })
            .collect();
        Ok(Faults {
            after,
            message,
            entries,
        })
    }

    /// Is `entry` listed in `panic_in` or `error_in`?
    fn is_listed(&self, entry: &str) -> bool {
        self.entries
            .iter()
            .any(|e| e.name == entry && e.fault.is_some())
    }

    /// Applies the rule to one call of `entry`: `Ok` while the call may
    /// succeed, otherwise a panic or an error.
    fn apply(&self, entry: &str) -> Result<()> {
        let Some(point) = self.entries.iter().find(|e| e.name == entry) else {
            return Ok(());
        };
        let Some(fault) = point.fault else {
            return Ok(());
        };
        let spared = point
            .successes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.after).then_some(n + 1)
            })
            .is_ok();
        match (spared, fault) {
            (true, _) => Ok(()),
            (false, Fault::Panic) => panic!("{} in {entry}", self.message),
            (false, Fault::Error) => Err(Error::msg(format!("{} in {entry}", self.message))),
        }
    }
}

/// A service that panics or fails on request; otherwise does nothing.
pub struct Faulty {
    faults: Faults,
    has_loop: bool,
}

/// Configuration of [`Faulty`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultyConfig {
    /// Entry points that panic (among `setup`, `main`, `loop`, `finalize`).
    #[serde(default)]
    pub panic_in: Vec<String>,
    /// Entry points that return an error (same names as `panic_in`).
    #[serde(default)]
    pub error_in: Vec<String>,
    /// How many calls of a listed entry point succeed before it fails.
    #[serde(default)]
    pub after: u64,
    /// The panic or error message, followed by `" in {entry}"`.
    #[serde(default = "default_message")]
    pub message: String,
    /// Give the service a loop (each call sleeps 5 ms); without it `run_loop`
    /// reports "no loop" and `loop` may not be listed.
    #[serde(default)]
    pub has_loop: bool,
}

impl Service for Faulty {
    type Config = FaultyConfig;

    fn new(config: FaultyConfig) -> Result<Self> {
        let faults = Faults::new(
            SERVICE_ENTRY_POINTS,
            &config.panic_in,
            &config.error_in,
            config.after,
            config.message,
        )?;
        if !config.has_loop && faults.is_listed("loop") {
            otools_api::bail!("`loop` is listed but `has_loop` is false");
        }
        Ok(Faulty {
            faults,
            has_loop: config.has_loop,
        })
    }

    fn setup(&mut self, _: &Context<'_>) -> Result<()> {
        self.faults.apply("setup")
    }

    fn main(&self, _: &Context<'_>) -> Result<()> {
        self.faults.apply("main")
    }

    fn run_loop(&self, _: &Context<'_>) -> Result<()> {
        if !self.has_loop {
            return Err(Error::unimplemented());
        }
        std::thread::sleep(Duration::from_millis(5));
        self.faults.apply("loop")
    }

    fn finalize(&mut self, _: &Context<'_>) -> Result<()> {
        self.faults.apply("finalize")
    }
}

/// A condition that panics or fails on request; otherwise its checks return `value`.
pub struct FaultyCondition {
    faults: Faults,
    value: bool,
}

/// Configuration of [`FaultyCondition`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultyConditionConfig {
    /// Entry points that panic (among `setup`, `check`, `finalize`).
    #[serde(default)]
    pub panic_in: Vec<String>,
    /// Entry points that return an error (same names as `panic_in`).
    #[serde(default)]
    pub error_in: Vec<String>,
    /// How many calls of a listed entry point succeed before it fails.
    #[serde(default)]
    pub after: u64,
    /// The panic or error message, followed by `" in {entry}"`.
    #[serde(default = "default_message")]
    pub message: String,
    /// What a check returns when no fault applies.
    #[serde(default = "default_true")]
    pub value: bool,
}

impl Condition for FaultyCondition {
    type Config = FaultyConditionConfig;

    fn new(config: FaultyConditionConfig) -> Result<Self> {
        let faults = Faults::new(
            CONDITION_ENTRY_POINTS,
            &config.panic_in,
            &config.error_in,
            config.after,
            config.message,
        )?;
        Ok(FaultyCondition {
            faults,
            value: config.value,
        })
    }

    fn setup(&mut self, _: &Context<'_>) -> Result<()> {
        self.faults.apply("setup")
    }

    fn check(&self, _: &Context<'_>) -> Result<bool> {
        self.faults.apply("check")?;
        Ok(self.value)
    }

    fn finalize(&mut self, _: &Context<'_>) -> Result<()> {
        self.faults.apply("finalize")
    }
}

otools_api::export_plugin! {
    services: [Faulty],
    conditions: [FaultyCondition],
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn faults(panic_in: &[&str], error_in: &[&str], after: u64) -> Result<Faults> {
        Faults::new(
            SERVICE_ENTRY_POINTS,
            &names(panic_in),
            &names(error_in),
            after,
            String::from("boom"),
        )
    }

    #[test]
    fn errors_after_the_allowed_successes() {
        let f = faults(&[], &["main"], 2).unwrap();
        assert!(f.apply("main").is_ok());
        assert!(f.apply("main").is_ok());
        assert_eq!(f.apply("main").unwrap_err().to_string(), "boom in main");
        assert_eq!(f.apply("main").unwrap_err().to_string(), "boom in main");
        // Other entry points are unaffected and counted separately.
        assert!(f.apply("finalize").is_ok());
    }

    #[test]
    #[should_panic(expected = "boom in loop")]
    fn panics_on_first_call_with_after_zero() {
        let _ = faults(&["loop"], &[], 0).unwrap().apply("loop");
    }

    #[test]
    fn rejects_unknown_and_doubly_listed_entry_points() {
        let unknown = faults(&["check"], &[], 0).unwrap_err().to_string();
        assert!(unknown.contains("unknown entry point `check`"), "{unknown}");
        let twice = faults(&["main"], &["main"], 0).unwrap_err().to_string();
        assert!(twice.contains("both"), "{twice}");
    }

    #[test]
    fn loop_faults_need_a_loop() {
        let config = FaultyConfig {
            panic_in: names(&["loop"]),
            error_in: Vec::new(),
            after: 0,
            message: default_message(),
            has_loop: false,
        };
        assert!(Faulty::new(config).is_err());
    }
}
