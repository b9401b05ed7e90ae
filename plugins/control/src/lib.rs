//! Host-control services: `Shutdown` terminates its context, `Deactivate`
//! stops itself on its n-th `main` call, and `Fatal` logs a fatal error (which
//! terminates the context) on its n-th `main` call. Put `Shutdown` in a
//! trigger's stack to end a context when a condition holds.

use std::sync::atomic::{AtomicU64, Ordering};

use otools_api::{Context, NoConfig, Result, Service};
use serde::Deserialize;

fn one() -> u64 {
    1
}

fn default_message() -> String {
    String::from("fatal error requested")
}

/// Counts `main` calls; true on exactly the `after`-th.
fn nth_call(calls: &AtomicU64, after: u64) -> bool {
    calls.fetch_add(1, Ordering::Relaxed) + 1 == after
}

/// Terminates its context on every `main` call.
pub struct Shutdown;

impl Service for Shutdown {
    type Config = NoConfig;

    fn new(_: NoConfig) -> Result<Self> {
        Ok(Shutdown)
    }

    fn main(&self, ctx: &Context<'_>) -> Result<()> {
        ctx.info(format_args!("terminating context {}", ctx.context_name()));
        ctx.terminate_context();
        Ok(())
    }
}

/// Deactivates itself (stops and finalizes this service only) on its
/// `after`-th `main` call.
pub struct Deactivate {
    after: u64,
    calls: AtomicU64,
}

/// Configuration of [`Deactivate`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeactivateConfig {
    /// On which `main` call to deactivate (1 = the first).
    #[serde(default = "one")]
    pub after: u64,
}

impl Service for Deactivate {
    type Config = DeactivateConfig;

    fn new(config: DeactivateConfig) -> Result<Self> {
        if config.after == 0 {
            otools_api::bail!("`after` must be at least 1");
        }
        Ok(Deactivate {
            after: config.after,
            calls: AtomicU64::new(0),
        })
    }

    fn main(&self, ctx: &Context<'_>) -> Result<()> {
        ctx.debug(format_args!(
            "main call {}",
            self.calls.load(Ordering::Relaxed) + 1
        ));
        if nth_call(&self.calls, self.after) {
            ctx.info(format_args!("deactivating {}", ctx.service_name()));
            ctx.deactivate();
        }
        Ok(())
    }
}

/// Logs `message` at `fatal` level, which terminates the context, on its
/// `after`-th `main` call.
pub struct Fatal {
    config: FatalConfig,
    calls: AtomicU64,
}

/// Configuration of [`Fatal`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FatalConfig {
    /// On which `main` call to log the fatal error (1 = the first).
    #[serde(default = "one")]
    pub after: u64,
    /// The message logged at `fatal` level.
    #[serde(default = "default_message")]
    pub message: String,
}

impl Service for Fatal {
    type Config = FatalConfig;

    fn new(config: FatalConfig) -> Result<Self> {
        if config.after == 0 {
            otools_api::bail!("`after` must be at least 1");
        }
        Ok(Fatal {
            config,
            calls: AtomicU64::new(0),
        })
    }

    fn main(&self, ctx: &Context<'_>) -> Result<()> {
        if nth_call(&self.calls, self.config.after) {
            ctx.fatal(&self.config.message);
        }
        Ok(())
    }
}

otools_api::export_plugin! {
    services: [Shutdown, Deactivate, Fatal],
}
