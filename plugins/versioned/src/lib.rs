//! Hot-reload fixture. `OTOOLS_VERSIONED` at build time picks the version:
//! `1` (the default) or `2` behave normally and differ in what they write;
//! `noexport` exports its service under another name; `setup_error`,
//! `setup_panic`, `setup_hang` fail in `setup`; `import_error`,
//! `import_panic`, `import_hang` fail when handed the old version's state.
//!
//! Config keys make one instance misbehave in one version only (their value
//! is a version tag; absent: never): `hang_in_export` hangs in
//! `export_state`, `hang_in_finalize` hangs in `finalize`, `fail_import`
//! refuses the state in `import_state`.
//!
//! The service `Counter` counts its `main` calls, adds one to the dataframe
//! key `count` and to `by_<version>` on each, and hands its call count to
//! its successor through `export_state` / `import_state` (schema 1). It
//! also accepts the message `ticks` (any payload) and logs
//! `version <version> got tick <payload>`, to show that messages queued
//! across a reload reach the new version in order.
//!
//! The transform `Tag` (a pipeline stage) maps the integer `n` to
//! `n * 10 + <version>` (`<version>` 0 for a tag that is not a number), so
//! a sink shows which version handled each item; its `setup` fails like
//! the service's in the `setup_*` versions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use otools_api::{Accept, Context, Output, Result, Service, Transform, Value, Worker};
use serde::Deserialize;

/// The build-time version tag.
pub const VERSION: &str = match option_env!("OTOOLS_VERSIONED") {
    Some(v) => v,
    None => "1",
};

/// Counts in a dataframe and carries its count across reloads.
pub struct Counter {
    dataframe: String,
    calls: AtomicU64,
    hang_in_export: Option<String>,
    hang_in_finalize: Option<String>,
    fail_import: Option<String>,
}

/// Is `tag` (a config value) this build's version?
fn is_this_version(tag: Option<&String>) -> bool {
    tag.is_some_and(|t| t == VERSION)
}

fn hang() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Configuration of [`Counter`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CounterConfig {
    /// Where to count.
    pub dataframe: String,
    /// Hang in `export_state` in this version.
    #[serde(default)]
    pub hang_in_export: Option<String>,
    /// Hang in `finalize` in this version.
    #[serde(default)]
    pub hang_in_finalize: Option<String>,
    /// Fail in `import_state` in this version.
    #[serde(default)]
    pub fail_import: Option<String>,
}

impl Service for Counter {
    type Config = CounterConfig;

    const MESSAGES: &'static [Accept] = &[Accept::any("ticks")];

    fn handle_message(&self, ctx: &Context<'_>, _name: &str, payload: Value) -> Result<Value> {
        let n = payload.as_i64().unwrap_or_default();
        ctx.info(format_args!("version {VERSION} got tick {n}"));
        Ok(Value::Null)
    }

    fn new(config: CounterConfig) -> Result<Self> {
        Ok(Counter {
            dataframe: config.dataframe,
            calls: AtomicU64::new(0),
            hang_in_export: config.hang_in_export,
            hang_in_finalize: config.hang_in_finalize,
            fail_import: config.fail_import,
        })
    }

    fn setup(&mut self, ctx: &Context<'_>) -> Result<()> {
        match VERSION {
            "setup_error" => otools_api::bail!("version {VERSION} refuses to set up"),
            "setup_panic" => panic!("version {VERSION} panics in setup"),
            "setup_hang" => loop {
                std::thread::sleep(Duration::from_secs(3600));
            },
            _ => {
                ctx.info(format_args!("version {VERSION} set up"));
                Ok(())
            }
        }
    }

    fn main(&self, ctx: &Context<'_>) -> Result<()> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let df = ctx.dataframe(&self.dataframe)?;
        df.increment("count", 1)?;
        df.increment(&format!("by_{VERSION}"), 1)?;
        Ok(())
    }

    fn finalize(&mut self, _: &Context<'_>) -> Result<()> {
        if is_this_version(self.hang_in_finalize.as_ref()) {
            hang();
        }
        Ok(())
    }

    fn export_state(&self, _: &Context<'_>) -> Result<Option<(u32, Vec<u8>)>> {
        if is_this_version(self.hang_in_export.as_ref()) {
            hang();
        }
        Ok(Some((
            1,
            self.calls.load(Ordering::Relaxed).to_le_bytes().to_vec(),
        )))
    }

    fn import_state(&mut self, ctx: &Context<'_>, version: u32, bytes: &[u8]) -> Result<()> {
        match VERSION {
            "import_error" => otools_api::bail!("version {VERSION} refuses the state"),
            "import_panic" => panic!("version {VERSION} panics on import"),
            "import_hang" => loop {
                std::thread::sleep(Duration::from_secs(3600));
            },
            _ => {}
        }
        if is_this_version(self.fail_import.as_ref()) {
            otools_api::bail!("version {VERSION} refuses the state of this instance");
        }
        if version != 1 {
            otools_api::bail!("unknown state schema {version}");
        }
        let calls = u64::from_le_bytes(
            bytes
                .try_into()
                .map_err(|_| otools_api::Error::msg("bad state length"))?,
        );
        self.calls.store(calls, Ordering::Relaxed);
        ctx.info(format_args!("version {VERSION} imported {calls} calls"));
        Ok(())
    }
}

/// Tags each integer item with the version that handled it.
pub struct Tag;

/// Configuration of [`Tag`] (none).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagConfig {}

impl Transform for Tag {
    type Config = TagConfig;

    fn new(_: TagConfig) -> Result<Self> {
        Ok(Tag)
    }

    fn setup(&mut self, ctx: &Context<'_>, worker: Worker) -> Result<()> {
        match VERSION {
            "setup_error" => otools_api::bail!("version {VERSION} refuses to set up"),
            "setup_panic" => panic!("version {VERSION} panics in setup"),
            "setup_hang" => hang(),
            _ => {
                ctx.info(format_args!(
                    "version {VERSION} tag worker {} set up",
                    worker.index
                ));
                Ok(())
            }
        }
    }

    fn process(&mut self, _: &Context<'_>, item: Value, out: &mut Output<'_>) -> Result<()> {
        let n = item
            .as_i64()
            .ok_or_else(|| otools_api::Error::msg("expected an integer item"))?;
        out.push(n * 10 + VERSION.parse::<i64>().unwrap_or(0));
        Ok(())
    }

    fn finalize(&mut self, ctx: &Context<'_>) -> Result<()> {
        ctx.info(format_args!("version {VERSION} tag finalized"));
        Ok(())
    }
}

/// The same service under another export name (the `noexport` version).
pub struct Renamed(Counter);

impl Service for Renamed {
    type Config = CounterConfig;

    fn new(config: CounterConfig) -> Result<Self> {
        Counter::new(config).map(Renamed)
    }

    fn main(&self, ctx: &Context<'_>) -> Result<()> {
        self.0.main(ctx)
    }
}

#[cfg(not(versioned_noexport))]
otools_api::export_plugin! {
    services: [Counter],
    transforms: [Tag],
}

#[cfg(versioned_noexport)]
otools_api::export_plugin! {
    services: [Renamed],
}
