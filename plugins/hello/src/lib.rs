//! OTools' SimpleExample as a plugin: `Greeter` logs from its `main` (info)
//! and from its own loop (warning); `StopAfter` terminates the context on
//! its n-th `main` call.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use otools_api::{Context, Result, Service};
use serde::Deserialize;

/// Logs a greeting at `info` from `main` and at `warning` from its loop.
pub struct Greeter {
    config: GreeterConfig,
    mains: AtomicU64,
    loops: AtomicU64,
}

/// Configuration of [`Greeter`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GreeterConfig {
    /// Who to greet.
    #[serde(default = "default_name")]
    pub name: String,
    /// Pause of the loop between two greetings, in milliseconds.
    #[serde(default = "default_interval")]
    pub loop_interval_ms: u64,
}

fn default_name() -> String {
    String::from("world")
}

fn default_interval() -> u64 {
    100
}

impl Service for Greeter {
    type Config = GreeterConfig;

    fn new(config: GreeterConfig) -> Result<Self> {
        Ok(Greeter {
            config,
            mains: AtomicU64::new(0),
            loops: AtomicU64::new(0),
        })
    }

    fn main(&self, ctx: &Context<'_>) -> Result<()> {
        let n = self.mains.fetch_add(1, Ordering::Relaxed) + 1;
        ctx.info(format_args!(
            "hello, {}, from main (call {n})",
            self.config.name
        ));
        Ok(())
    }

    fn run_loop(&self, ctx: &Context<'_>) -> Result<()> {
        let n = self.loops.fetch_add(1, Ordering::Relaxed) + 1;
        ctx.warning(format_args!(
            "hello, {}, from the loop (call {n})",
            self.config.name
        ));
        std::thread::sleep(Duration::from_millis(self.config.loop_interval_ms));
        Ok(())
    }
}

/// Terminates its context on its `count`-th `main` call.
pub struct StopAfter {
    count: u64,
    calls: AtomicU64,
}

/// Configuration of [`StopAfter`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopAfterConfig {
    /// On which `main` call to terminate the context (1 = the first).
    pub count: u64,
}

impl Service for StopAfter {
    type Config = StopAfterConfig;

    fn new(config: StopAfterConfig) -> Result<Self> {
        if config.count == 0 {
            otools_api::bail!("`count` must be at least 1");
        }
        Ok(StopAfter {
            count: config.count,
            calls: AtomicU64::new(0),
        })
    }

    fn main(&self, ctx: &Context<'_>) -> Result<()> {
        let n = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        if n == self.count {
            ctx.info(format_args!(
                "main call {n}: terminating context {}",
                ctx.context_name()
            ));
            ctx.terminate_context();
        }
        Ok(())
    }
}

otools_api::export_plugin! {
    services: [Greeter, StopAfter],
}
