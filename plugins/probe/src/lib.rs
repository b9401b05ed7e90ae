//! Small services and conditions the integration tests use to observe the
//! host: a constant condition, services that record or report dataframe
//! keys, log their lifecycle, check that `setup` ran before `main`, and a
//! pair (`HoldLock`, `TryLocked`) that exercises dataframe locks and lock
//! timeouts across two contexts, and a `LeaseWriter` that a replacement
//! overtakes while it waits for `HoldLock`'s lease.
//!
//! Where a service waits for another, it polls a dataframe every few
//! milliseconds and gives up with an error after [`DEADLINE`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use otools_api::{Condition, Context, Dataframe, Result, Service, Value};
use serde::Deserialize;

/// How long a service waits for a signal before giving up with an error.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The pause between two polls of a signal.
const POLL: Duration = Duration::from_millis(5);

fn default_fired() -> String {
    String::from("fired")
}

/// Polls `df` (named `name`) until `key` holds `true`, for at most [`DEADLINE`].
fn wait_until_true(df: &Dataframe<'_>, name: &str, key: &str) -> Result<()> {
    let deadline = Instant::now() + DEADLINE;
    while !matches!(df.get(key)?, Some(Value::Bool(true))) {
        if Instant::now() >= deadline {
            otools_api::bail!(
                "`{name}.{key}` did not become true within {}s",
                DEADLINE.as_secs()
            );
        }
        std::thread::sleep(POLL);
    }
    Ok(())
}

/// Rejects a configuration whose signal dataframe is the locked one: the
/// signal must stay readable while the lock is held.
fn check_distinct(dataframe: &str, signal: &str) -> Result<()> {
    if dataframe == signal {
        otools_api::bail!("`signal` must name another dataframe than `dataframe`");
    }
    Ok(())
}

/// A condition that is always `value`.
pub struct Constant {
    value: bool,
}

/// Configuration of [`Constant`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConstantConfig {
    /// What every check returns.
    pub value: bool,
}

impl Condition for Constant {
    type Config = ConstantConfig;

    fn new(config: ConstantConfig) -> Result<Self> {
        Ok(Constant {
            value: config.value,
        })
    }

    fn check(&self, _: &Context<'_>) -> Result<bool> {
        Ok(self.value)
    }
}

/// Increments a dataframe key by 1 on every `main` call, so a test can count
/// how often it ran (e.g. how often a trigger fired).
pub struct Record {
    config: RecordConfig,
}

/// Configuration of [`Record`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordConfig {
    /// The dataframe holding the key.
    pub dataframe: String,
    /// The key to increment.
    #[serde(default = "default_fired")]
    pub key: String,
}

impl Service for Record {
    type Config = RecordConfig;

    fn new(config: RecordConfig) -> Result<Self> {
        Ok(Record { config })
    }

    fn main(&self, ctx: &Context<'_>) -> Result<()> {
        let c = &self.config;
        ctx.dataframe(&c.dataframe)?.increment(&c.key, 1)?;
        Ok(())
    }
}

/// Logs the final values of some dataframe keys when it is finalized.
pub struct Report {
    config: ReportConfig,
}

/// Configuration of [`Report`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportConfig {
    /// The dataframe holding the keys.
    pub dataframe: String,
    /// The keys to report, in this order.
    pub keys: Vec<String>,
}

impl Service for Report {
    type Config = ReportConfig;

    fn new(config: ReportConfig) -> Result<Self> {
        Ok(Report { config })
    }

    /// Report has no main: it only speaks when finalized, and must not keep
    /// its context alive on its own.
    fn main(&self, _: &Context<'_>) -> Result<()> {
        Err(otools_api::Error::unimplemented())
    }

    fn finalize(&mut self, ctx: &Context<'_>) -> Result<()> {
        let c = &self.config;
        let df = ctx.dataframe(&c.dataframe)?;
        for key in &c.keys {
            let value = match df.get(key)? {
                Some(v) => v.to_string(),
                None => String::from("absent"),
            };
            ctx.info(format_args!("report {}.{key} = {value}", c.dataframe));
        }
        Ok(())
    }
}

/// Logs its `setup`, `finalize` and (optionally) first `main` call.
pub struct Lifecycle {
    log_main: bool,
    main_logged: AtomicBool,
}

/// Configuration of [`Lifecycle`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleConfig {
    /// Log the first `main` call too.
    #[serde(default)]
    pub log_main: bool,
}

impl Service for Lifecycle {
    type Config = LifecycleConfig;

    fn new(config: LifecycleConfig) -> Result<Self> {
        Ok(Lifecycle {
            log_main: config.log_main,
            main_logged: AtomicBool::new(false),
        })
    }

    fn setup(&mut self, ctx: &Context<'_>) -> Result<()> {
        ctx.info(format_args!("setup {}", ctx.service_name()));
        Ok(())
    }

    fn main(&self, ctx: &Context<'_>) -> Result<()> {
        if self.log_main && !self.main_logged.swap(true, Ordering::Relaxed) {
            ctx.info(format_args!("main {}", ctx.service_name()));
        }
        Ok(())
    }

    fn finalize(&mut self, ctx: &Context<'_>) -> Result<()> {
        ctx.info(format_args!("finalize {}", ctx.service_name()));
        Ok(())
    }
}

/// Sets `setup_done = true` in `setup`; each `main` fails unless it finds it,
/// then increments `mains`.
pub struct SetupGate {
    dataframe: String,
}

/// Configuration of [`SetupGate`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetupGateConfig {
    /// The dataframe holding `setup_done` and `mains`.
    pub dataframe: String,
}

impl Service for SetupGate {
    type Config = SetupGateConfig;

    fn new(config: SetupGateConfig) -> Result<Self> {
        Ok(SetupGate {
            dataframe: config.dataframe,
        })
    }

    fn setup(&mut self, ctx: &Context<'_>) -> Result<()> {
        ctx.dataframe(&self.dataframe)?.set("setup_done", true)
    }

    fn main(&self, ctx: &Context<'_>) -> Result<()> {
        let df = ctx.dataframe(&self.dataframe)?;
        if !matches!(df.get("setup_done")?, Some(Value::Bool(true))) {
            otools_api::bail!("main ran before setup");
        }
        df.increment("mains", 1)?;
        Ok(())
    }
}

/// On its first `main` call: write-locks `dataframe`, sets `held = true` in
/// `signal`, waits until `signal` has `release_on = true` (`saw_timeout` by
/// default), releases the lock and terminates its context. Pairs with
/// [`TryLocked`] and [`LeaseWriter`].
pub struct HoldLock {
    config: HoldLockConfig,
    started: AtomicBool,
}

/// Configuration of [`HoldLock`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldLockConfig {
    /// The dataframe to lock.
    pub dataframe: String,
    /// Another dataframe, used to signal between the two services.
    pub signal: String,
    /// The key of `signal` that releases the lock.
    #[serde(default = "default_release_on")]
    pub release_on: String,
}

fn default_release_on() -> String {
    String::from("saw_timeout")
}

impl Service for HoldLock {
    type Config = HoldLockConfig;

    fn new(config: HoldLockConfig) -> Result<Self> {
        check_distinct(&config.dataframe, &config.signal)?;
        Ok(HoldLock {
            config,
            started: AtomicBool::new(false),
        })
    }

    fn main(&self, ctx: &Context<'_>) -> Result<()> {
        if self.started.swap(true, Ordering::Relaxed) {
            return Ok(());
        }
        let c = &self.config;
        let df = ctx.dataframe(&c.dataframe)?;
        let signal = ctx.dataframe(&c.signal)?;
        let guard = df.lock_write()?;
        signal.set("held", true)?;
        wait_until_true(&signal, &c.signal, &c.release_on)?;
        drop(guard);
        ctx.info(format_args!("released lock on {}", c.dataframe));
        ctx.terminate_context();
        Ok(())
    }
}

fn default_timeout_ms() -> u64 {
    50
}

/// On its first `main` call: waits until `signal` has `held = true`, then
/// reads `dataframe` with a timeout, expecting the read to time out; on
/// timeout it logs a warning, sets `saw_timeout = true` in `signal` and
/// terminates its context. Pairs with [`HoldLock`].
pub struct TryLocked {
    config: TryLockedConfig,
    started: AtomicBool,
}

/// Configuration of [`TryLocked`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TryLockedConfig {
    /// The dataframe [`HoldLock`] locks.
    pub dataframe: String,
    /// The dataframe used to signal between the two services.
    pub signal: String,
    /// How long the read waits for the lock, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

impl Service for TryLocked {
    type Config = TryLockedConfig;

    fn new(config: TryLockedConfig) -> Result<Self> {
        check_distinct(&config.dataframe, &config.signal)?;
        Ok(TryLocked {
            config,
            started: AtomicBool::new(false),
        })
    }

    fn main(&self, ctx: &Context<'_>) -> Result<()> {
        if self.started.swap(true, Ordering::Relaxed) {
            return Ok(());
        }
        let c = &self.config;
        let signal = ctx.dataframe(&c.signal)?;
        wait_until_true(&signal, &c.signal, "held")?;
        let df = ctx
            .dataframe(&c.dataframe)?
            .with_timeout(Duration::from_millis(c.timeout_ms));
        match df.get("anything") {
            Ok(_) => otools_api::bail!("read succeeded while the dataframe was locked"),
            Err(e) if e.is_timeout() => {
                ctx.warning(format_args!("lock timeout: {e}"));
                signal.set("saw_timeout", true)?;
                ctx.terminate_context();
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// A writer that its replacement overtakes while it waits for a lease.
/// Pairs with [`HoldLock`] (`release_on = "served"`). Each `main` call does
/// nothing until `signal` has `held = true`; then the first instance of
/// the process to get there (it claims `signal.writer`) writes `"stale"` to
/// `key` of `dataframe`, which waits for the lock without a timeout, and
/// then logs what the write returned. Every later instance (a replacement)
/// sets `signal.served = true` instead, so the holder releases the lock
/// only after a replacement has served.
pub struct LeaseWriter {
    config: LeaseWriterConfig,
    announced: AtomicBool,
}

/// Configuration of [`LeaseWriter`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseWriterConfig {
    /// The dataframe [`HoldLock`] locks.
    pub dataframe: String,
    /// The key written.
    pub key: String,
    /// The dataframe used to signal between the services.
    pub signal: String,
}

impl Service for LeaseWriter {
    type Config = LeaseWriterConfig;

    fn new(config: LeaseWriterConfig) -> Result<Self> {
        check_distinct(&config.dataframe, &config.signal)?;
        Ok(LeaseWriter {
            config,
            announced: AtomicBool::new(false),
        })
    }

    fn main(&self, ctx: &Context<'_>) -> Result<()> {
        let c = &self.config;
        let signal = ctx.dataframe(&c.signal)?;
        if !matches!(signal.get("held")?, Some(Value::Bool(true))) {
            return Ok(());
        }
        if signal.compare_and_swap("writer", None, true)?.is_ok() {
            let written = ctx.dataframe(&c.dataframe)?.set(&c.key, "stale");
            ctx.info(format_args!("stale write returned {written:?}"));
            return written;
        }
        signal.set("served", true)?;
        if !self.announced.swap(true, Ordering::Relaxed) {
            ctx.info("replacement served");
        }
        Ok(())
    }
}

/// A loop that counts its calls in a dataframe (`loops`), then sleeps: a
/// call the host cannot interrupt, for shutdown tests. No `main`.
pub struct Sleeper {
    config: SleeperConfig,
}

/// Configuration of [`Sleeper`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SleeperConfig {
    /// Where to count the loop calls (key `loops`).
    pub dataframe: String,
    /// How long each loop call sleeps, in milliseconds.
    pub sleep_ms: u64,
}

impl Service for Sleeper {
    type Config = SleeperConfig;

    fn new(config: SleeperConfig) -> Result<Self> {
        Ok(Sleeper { config })
    }

    fn run_loop(&self, ctx: &Context<'_>) -> Result<()> {
        ctx.dataframe(&self.config.dataframe)?
            .increment("loops", 1)?;
        std::thread::sleep(Duration::from_millis(self.config.sleep_ms));
        Ok(())
    }
}

/// Counts its `main` calls in its host-held stash and in a dataframe key
/// (`count`), and fails every `fail_every`-th call, so that it is restarted:
/// each new generation logs `"restored {n}"` from the stash in `setup`.
pub struct StashCounter {
    config: StashCounterConfig,
    count: AtomicU64,
}

/// Configuration of [`StashCounter`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StashCounterConfig {
    /// Where to count (key `count`).
    pub dataframe: String,
    /// Fail every this many calls (counted across generations).
    pub fail_every: u64,
}

impl Service for StashCounter {
    type Config = StashCounterConfig;

    fn new(config: StashCounterConfig) -> Result<Self> {
        if config.fail_every == 0 {
            otools_api::bail!("`fail_every` must be at least 1");
        }
        Ok(StashCounter {
            config,
            count: AtomicU64::new(0),
        })
    }

    fn setup(&mut self, ctx: &Context<'_>) -> Result<()> {
        if let Some(bytes) = ctx.stash() {
            let n = u64::from_le_bytes(bytes.try_into().unwrap_or([0; 8]));
            self.count.store(n, Ordering::Relaxed);
            ctx.info(format_args!("restored {n}"));
        }
        Ok(())
    }

    fn main(&self, ctx: &Context<'_>) -> Result<()> {
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        ctx.set_stash(&n.to_le_bytes())?;
        ctx.dataframe(&self.config.dataframe)?
            .increment("count", 1)?;
        if n % self.config.fail_every == 0 {
            otools_api::bail!("failing on call {n}, as configured");
        }
        Ok(())
    }
}

/// Does nothing in `main`: the cheapest possible service, for measuring the
/// host's own cost per call.
pub struct Nop;

impl Service for Nop {
    type Config = otools_api::NoConfig;

    fn new(_: otools_api::NoConfig) -> Result<Self> {
        Ok(Nop)
    }

    fn main(&self, _: &Context<'_>) -> Result<()> {
        Ok(())
    }
}

/// Does `pairs` dataframe get+set pairs on key `k` per `main` call: the
/// dataframe round-trip cost through the plugin boundary, for benchmarks.
pub struct DfPairs {
    config: DfPairsConfig,
}

/// Configuration of [`DfPairs`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DfPairsConfig {
    /// The dataframe.
    pub dataframe: String,
    /// Pairs per `main` call.
    pub pairs: u64,
}

impl Service for DfPairs {
    type Config = DfPairsConfig;

    fn new(config: DfPairsConfig) -> Result<Self> {
        Ok(DfPairs { config })
    }

    fn main(&self, ctx: &Context<'_>) -> Result<()> {
        let df = ctx.dataframe(&self.config.dataframe)?;
        for _ in 0..self.config.pairs {
            let n = df.get("k")?.and_then(|v| v.as_i64()).unwrap_or(0);
            df.set("k", n + 1)?;
        }
        Ok(())
    }
}

/// Fails its `main` call once a file appears (and removes the file): a
/// failure a test triggers at the moment it chooses, from outside the host.
pub struct FailOnFile {
    config: FailOnFileConfig,
}

/// Configuration of [`FailOnFile`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailOnFileConfig {
    /// The file whose appearance makes the next `main` call fail.
    pub path: String,
}

impl Service for FailOnFile {
    type Config = FailOnFileConfig;

    fn new(config: FailOnFileConfig) -> Result<Self> {
        Ok(FailOnFile { config })
    }

    fn main(&self, _: &Context<'_>) -> Result<()> {
        if std::fs::remove_file(&self.config.path).is_ok() {
            otools_api::bail!("asked to fail by {}", self.config.path);
        }
        Ok(())
    }
}

otools_api::export_plugin! {
    services: [Record, Report, Lifecycle, SetupGate, HoldLock, TryLocked, LeaseWriter, Sleeper, StashCounter, Nop, DfPairs, FailOnFile],
    conditions: [Constant],
}
