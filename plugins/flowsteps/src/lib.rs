//! Flow steps for durable event flows (`[[flow.step]]`): `Work`, a step
//! that logs which activation it runs (flow, step, sequence, attempt, all
//! read from its step context), can take a while, and can fail, panic or
//! overrun its watchdog on the sequences and attempts its config names.
//! The flow tests and `manifests/flow.toml` use it.

use std::time::Duration;

use otools_api::{Result, Step, StepContext};

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
        ctx.info(format_args!("ran {what}"));
        Ok(())
    }
}

otools_api::export_plugin! {
    steps: [Work],
}
