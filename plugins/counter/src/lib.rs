//! OTools' counter trigger example as a plugin: `Increment` adds to a
//! dataframe key on every main-loop iteration and `AtLeast` becomes true once
//! that key reaches a minimum. `LoopIncrement` increments a key a fixed number
//! of times from its own loop thread, atomically or (for benchmarks) with a
//! racy read-then-write, and then deactivates itself.

use std::sync::atomic::{AtomicU64, Ordering};

use otools_api::{Condition, Context, Error, Result, Service};
use serde::Deserialize;

fn default_dataframe() -> String {
    String::from("counter")
}

fn default_key() -> String {
    String::from("count")
}

fn default_step() -> i64 {
    1
}

fn default_batch() -> u64 {
    100
}

fn default_true() -> bool {
    true
}

/// Atomically adds `step` to a dataframe key on every `main` call.
pub struct Increment {
    config: IncrementConfig,
}

/// Configuration of [`Increment`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncrementConfig {
    /// The dataframe holding the counter.
    #[serde(default = "default_dataframe")]
    pub dataframe: String,
    /// The key of the counter.
    #[serde(default = "default_key")]
    pub key: String,
    /// What to add on each call; must not be 0.
    #[serde(default = "default_step")]
    pub step: i64,
}

impl Service for Increment {
    type Config = IncrementConfig;

    fn new(config: IncrementConfig) -> Result<Self> {
        if config.step == 0 {
            otools_api::bail!("`step` must not be 0");
        }
        Ok(Increment { config })
    }

    fn main(&self, ctx: &Context<'_>) -> Result<()> {
        let c = &self.config;
        let now = ctx.dataframe(&c.dataframe)?.increment(&c.key, c.step)?;
        ctx.debug(format_args!("{}.{} = {now}", c.dataframe, c.key));
        Ok(())
    }
}

/// Increments a key `times` times from its loop, `batch` per call, then
/// deactivates itself. Has no `main`.
pub struct LoopIncrement {
    config: LoopIncrementConfig,
    done: AtomicU64,
}

/// Configuration of [`LoopIncrement`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoopIncrementConfig {
    /// The dataframe holding the counter.
    #[serde(default = "default_dataframe")]
    pub dataframe: String,
    /// The key to increment.
    pub key: String,
    /// How many increments to do in total (at least 1).
    pub times: u64,
    /// How many increments to do per loop call (at least 1).
    #[serde(default = "default_batch")]
    pub batch: u64,
    /// Use the dataframe's atomic increment (`true`), or read then write,
    /// which loses updates when others write the key too (`false`).
    #[serde(default = "default_true")]
    pub atomic: bool,
}

impl LoopIncrement {
    fn increment_once(&self, df: &otools_api::Dataframe<'_>) -> Result<()> {
        let key = &self.config.key;
        if self.config.atomic {
            df.increment(key, 1)?;
        } else {
            let old = df.get_as::<i64>(key)?.unwrap_or(0);
            let new = old
                .checked_add(1)
                .ok_or_else(|| Error::msg(format!("`{key}` overflowed")))?;
            df.set(key, new)?;
        }
        Ok(())
    }
}

impl Service for LoopIncrement {
    type Config = LoopIncrementConfig;

    fn new(config: LoopIncrementConfig) -> Result<Self> {
        if config.times == 0 {
            otools_api::bail!("`times` must be at least 1");
        }
        if config.batch == 0 {
            otools_api::bail!("`batch` must be at least 1");
        }
        Ok(LoopIncrement {
            config,
            done: AtomicU64::new(0),
        })
    }

    fn run_loop(&self, ctx: &Context<'_>) -> Result<()> {
        let c = &self.config;
        let done = self.done.load(Ordering::Relaxed);
        let todo = c.batch.min(c.times - done);
        if todo == 0 {
            return Ok(());
        }
        let df = ctx.dataframe(&c.dataframe)?;
        for _ in 0..todo {
            self.increment_once(&df)?;
            self.done.fetch_add(1, Ordering::Relaxed);
        }
        if done + todo == c.times {
            ctx.info(format_args!("done: {} increments of {}", c.times, c.key));
            ctx.deactivate();
        }
        Ok(())
    }
}

/// True when a key holds an integer of at least `min`; false while the key
/// is absent; an error if it holds anything but an integer.
pub struct AtLeast {
    config: AtLeastConfig,
}

/// Configuration of [`AtLeast`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AtLeastConfig {
    /// The dataframe holding the key.
    #[serde(default = "default_dataframe")]
    pub dataframe: String,
    /// The key to watch.
    pub key: String,
    /// The smallest value for which the condition is true.
    pub min: i64,
}

impl Condition for AtLeast {
    type Config = AtLeastConfig;

    fn new(config: AtLeastConfig) -> Result<Self> {
        Ok(AtLeast { config })
    }

    fn check(&self, ctx: &Context<'_>) -> Result<bool> {
        let c = &self.config;
        let value = ctx.dataframe(&c.dataframe)?.get_as::<i64>(&c.key)?;
        Ok(value.is_some_and(|n| n >= c.min))
    }
}

otools_api::export_plugin! {
    services: [Increment, LoopIncrement],
    conditions: [AtLeast],
}
