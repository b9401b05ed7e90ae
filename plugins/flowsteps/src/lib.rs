//! Flow steps for durable event flows (`[[flow.step]]`): `Work`, a step
//! that logs which activation it runs (flow, step, sequence, attempt, all
//! read from its step context), can take a while, and can fail, panic or
//! overrun its watchdog on the sequences and attempts its config names, and
//! can raise events of its flow through its context; and `Raiser`, a
//! service that raises flow events from a context once and deactivates.
//! The flow tests and `manifests/flow.toml` use them.

use std::time::Duration;

use otools_api::{Context, Result, Service, Step, StepContext};

/// Logs `ran <flow>/<step> sequence=<s> attempt=<n>`, after `sleep_ms`,
/// unless a fault applies to the activation.
pub struct Work {
    config: WorkConfig,
}

/// The config of [`Work`].
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkConfig {
    /// How long each run takes (default 0).
    #[serde(default)]
    pub sleep_ms: u64,
    /// Sequences on which the step fails with an error (`"*"`: every one).
    #[serde(default)]
    pub fail: Vec<String>,
    /// Sequences on which the step panics (`"*"`: every one).
    #[serde(default)]
    pub panic: Vec<String>,
    /// The sleep and the faults apply only to attempts up to this one
    /// (default: every attempt).
    pub until_attempt: Option<u32>,
    /// Events of its flow it raises before it returns: `"event"` for its
    /// own sequence, `"event/sequence"` for another one.
    #[serde(default)]
    pub raise: Vec<String>,
}

/// Splits `event/sequence` (the sequence defaults to `own`).
fn target<'a>(spec: &'a str, own: &'a str) -> (&'a str, &'a str) {
    spec.split_once('/').unwrap_or((spec, own))
}

fn matches(list: &[String], sequence: &str) -> bool {
    list.iter().any(|s| s == "*" || s == sequence)
}

impl Step for Work {
    type Config = WorkConfig;

    fn new(config: WorkConfig) -> Result<Self> {
        Ok(Work { config })
    }

    fn run(&self, ctx: &StepContext<'_>) -> Result<()> {
        let c = &self.config;
        let applies = c.until_attempt.is_none_or(|n| ctx.attempt() <= n);
        let what = format!(
            "{}/{} sequence={} attempt={}",
            ctx.flow(),
            ctx.step(),
            ctx.sequence(),
            ctx.attempt()
        );
        ctx.info(format_args!("running {what}"));
        if applies && c.sleep_ms > 0 {
            std::thread::sleep(Duration::from_millis(c.sleep_ms));
        }
        if applies && matches(&c.panic, ctx.sequence()) {
            panic!("injected panic in {what}");
        }
        if applies && matches(&c.fail, ctx.sequence()) {
            otools_api::bail!("injected failure in {what}");
        }
        for spec in &c.raise {
            let (event, sequence) = target(spec, ctx.sequence());
            ctx.raise(event, sequence)?;
            ctx.info(format_args!("raised {event}/{sequence}"));
        }
        ctx.info(format_args!("ran {what}"));
        Ok(())
    }
}

/// A service that raises its `raise` events (`"event/sequence"`) in
/// `flow` (none: the flow that declares the event) in its first `main`,
/// logs `raised <spec>` or `refused <spec>: <kind>: <message>` for each,
/// and deactivates.
pub struct Raiser {
    config: RaiserConfig,
}

/// The config of [`Raiser`].
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaiserConfig {
    /// The flow (default: the one that declares each event).
    pub flow: Option<String>,
    /// `"event/sequence"` (sequence `0` without a `/`).
    pub raise: Vec<String>,
}

impl Service for Raiser {
    type Config = RaiserConfig;

    fn new(config: RaiserConfig) -> Result<Self> {
        Ok(Raiser { config })
    }

    fn main(&self, ctx: &Context<'_>) -> Result<()> {
        for spec in &self.config.raise {
            let (event, sequence) = target(spec, "0");
            match ctx.raise_event(self.config.flow.as_deref(), event, sequence) {
                Ok(()) => ctx.info(format_args!("raised {spec}")),
                Err(e) => ctx.warning(format_args!(
                    "refused {spec}: {:?}: {}",
                    e.message_error(),
                    e.message()
                )),
            }
        }
        ctx.deactivate();
        Ok(())
    }
}

otools_api::export_plugin! {
    services: [Raiser],
    steps: [Work],
}
