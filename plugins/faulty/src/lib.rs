//! Fault-injection fixture: the `Faulty` service and the `FaultyCondition`
//! condition panic, return an error, hang, or deactivate themselves in the
//! entry points their config lists. The integration tests use them to check
//! that a failing plugin is isolated, reported and replaced.
//!
//! Each entry point counts its own calls per instance. A listed entry point
//! succeeds `after` times, then faults on every later call, or, with
//! `probability`, faults at random from a seeded generator. `once = true`
//! injects only the first fault of the whole process for a given `tag`
//! (later instances run clean), which is how tests make exactly one
//! generation fail. Failures read `"{message} in {entry}"`.
//!
//! A hang sleeps `hang_ms` (0 = for ever) and then, if `write_after_hang`
//! names a dataframe key, writes `true` to it: a stale instance waking up.
//!
//! `drop` is listed like an entry point but may only be in `panic_in`: the
//! instance's destructor panics (when the host drops it, after `finalize`
//! or when it replaces the instance).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use otools_api::{Condition, Context, Error, Result, Service};
use serde::Deserialize;

/// The entry points of [`Faulty`] that the lists may name (`drop` is its destructor).
pub const SERVICE_ENTRY_POINTS: &[&str] = &["setup", "main", "loop", "finalize", "drop"];

/// The entry points of [`FaultyCondition`] that the lists may name (`drop` is its destructor).
pub const CONDITION_ENTRY_POINTS: &[&str] = &["setup", "check", "finalize", "drop"];

/// Tags whose `once` fault has fired in this process.
fn fired() -> &'static Mutex<HashSet<String>> {
    static FIRED: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    FIRED.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A dataframe key, as written in the manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRef {
    /// The dataframe.
    pub dataframe: String,
    /// The key.
    pub key: String,
}

/// The fault keys shared by the service and the condition.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultConfig {
    /// Entry points that panic.
    #[serde(default)]
    pub panic_in: Vec<String>,
    /// Entry points that return an error.
    #[serde(default)]
    pub error_in: Vec<String>,
    /// Entry points that hang (see `hang_ms`).
    #[serde(default)]
    pub hang_in: Vec<String>,
    /// Entry points that deactivate the instance (a normal exit).
    #[serde(default)]
    pub deactivate_in: Vec<String>,
    /// Successful calls of a listed entry point before it faults.
    #[serde(default)]
    pub after: u64,
    /// Fault with this probability instead of always (0 < p <= 1), after `after` calls.
    #[serde(default)]
    pub probability: Option<f64>,
    /// Seed of the random generator used with `probability`.
    #[serde(default)]
    pub seed: u64,
    /// Inject only the first fault of the process for `tag`.
    #[serde(default)]
    pub once: bool,
    /// Groups `once` faults.
    #[serde(default)]
    pub tag: String,
    /// How long a hang lasts, in ms; 0 = for ever.
    #[serde(default)]
    pub hang_ms: u64,
    /// Written `true` when a finite hang ends.
    #[serde(default)]
    pub write_after_hang: Option<KeyRef>,
    /// The panic or error message, followed by `" in {entry}"`.
    #[serde(default = "default_message")]
    pub message: String,
}

fn default_message() -> String {
    String::from("injected fault")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Panic,
    Error,
    Hang,
    Deactivate,
}

/// The fault rule of one instance.
#[derive(Debug)]
struct Faults {
    config: FaultConfig,
    entries: Vec<(&'static str, Option<Fault>, AtomicU64)>,
    rng: AtomicU64,
}

impl Faults {
    fn new(names: &[&'static str], config: FaultConfig) -> Result<Faults> {
        let lists = [
            (&config.panic_in, Fault::Panic),
            (&config.error_in, Fault::Error),
            (&config.hang_in, Fault::Hang),
            (&config.deactivate_in, Fault::Deactivate),
        ];
        let mut entries: Vec<(&'static str, Option<Fault>, AtomicU64)> = names
            .iter()
            .map(|n| (*n, None, AtomicU64::new(0)))
            .collect();
        for (list, fault) in lists {
            for name in list {
                let Some(entry) = entries.iter_mut().find(|e| e.0 == name.as_str()) else {
                    otools_api::bail!(
                        "unknown entry point `{name}` (expected one of: {})",
                        names.join(", ")
                    );
                };
                if entry.1.is_some() {
                    otools_api::bail!("`{name}` is listed for two faults");
                }
                if entry.0 == "drop" && fault != Fault::Panic {
                    otools_api::bail!("`drop` can only be listed in `panic_in`");
                }
                entry.1 = Some(fault);
            }
        }
        if let Some(p) = config.probability
            && !(p > 0.0 && p <= 1.0)
        {
            otools_api::bail!("`probability` must be in (0, 1], got {p}");
        }
        let rng = AtomicU64::new(config.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        Ok(Faults {
            config,
            entries,
            rng,
        })
    }

    fn listed(&self, entry: &str) -> bool {
        self.entries.iter().any(|e| e.0 == entry && e.1.is_some())
    }

    /// xorshift64*: a deterministic sequence per instance.
    fn roll(&self) -> f64 {
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.store(x, Ordering::Relaxed);
        #[expect(
            clippy::cast_precision_loss,
            reason = "a uniform draw needs only 53 bits"
        )]
        let r = (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
        r
    }

    /// The fault one call of `entry` injects now, if any, with its message.
    fn due(&self, entry: &str) -> Option<(Fault, String)> {
        let (_, Some(fault), calls) = self.entries.iter().find(|e| e.0 == entry)? else {
            return None;
        };
        let n = calls.fetch_add(1, Ordering::Relaxed);
        if n < self.config.after {
            return None;
        }
        if let Some(p) = self.config.probability
            && self.roll() >= p
        {
            return None;
        }
        if self.config.once
            && !fired()
                .lock()
                .map(|mut f| f.insert(self.config.tag.clone()))
                .unwrap_or(false)
        {
            return None;
        }
        Some((*fault, format!("{} in {entry}", self.config.message)))
    }

    /// Panics if the destructor is listed (and due).
    fn drop_fault(&self) {
        if let Some((Fault::Panic, text)) = self.due("drop") {
            panic!("{text}");
        }
    }

    /// Applies the rule to one call of `entry`.
    fn apply(&self, entry: &str, ctx: &Context<'_>) -> Result<()> {
        let Some((fault, text)) = self.due(entry) else {
            return Ok(());
        };
        match fault {
            Fault::Panic => panic!("{text}"),
            Fault::Error => Err(Error::msg(text)),
            Fault::Deactivate => {
                ctx.info(format_args!("deactivating in {entry}"));
                ctx.deactivate();
                Ok(())
            }
            Fault::Hang => {
                if self.config.hang_ms == 0 {
                    loop {
                        std::thread::sleep(Duration::from_secs(3600));
                    }
                }
                std::thread::sleep(Duration::from_millis(self.config.hang_ms));
                if let Some(k) = &self.config.write_after_hang {
                    // After a replacement the host refuses this write.
                    let written = ctx
                        .dataframe(&k.dataframe)
                        .and_then(|d| d.set(&k.key, true));
                    if let Err(e) = written {
                        return Err(Error::msg(format!("woke from a hang; write refused: {e}")));
                    }
                }
                Ok(())
            }
        }
    }
}

/// A service that faults on request; otherwise does nothing.
pub struct Faulty {
    faults: Faults,
    has_loop: bool,
}

/// Configuration of [`Faulty`]: the fault keys, plus `has_loop`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultyConfig {
    /// Give the service a loop (each call sleeps 5 ms); without it `loop` may not be listed.
    #[serde(default)]
    pub has_loop: bool,
    /// The faults.
    #[serde(flatten)]
    pub faults: FaultConfig,
}

impl Service for Faulty {
    type Config = serde_json::Value;

    fn new(config: serde_json::Value) -> Result<Self> {
        let has_loop = config
            .get("has_loop")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        let mut fields = config;
        if let Some(map) = fields.as_object_mut() {
            map.remove("has_loop");
        }
        let faults: FaultConfig = serde_json::from_value(fields).map_err(Error::msg)?;
        let faults = Faults::new(SERVICE_ENTRY_POINTS, faults)?;
        if faults.listed("loop") && !has_loop {
            otools_api::bail!("`loop` is listed but `has_loop` is false");
        }
        Ok(Faulty { faults, has_loop })
    }

    fn setup(&mut self, ctx: &Context<'_>) -> Result<()> {
        self.faults.apply("setup", ctx)
    }

    fn main(&self, ctx: &Context<'_>) -> Result<()> {
        self.faults.apply("main", ctx)
    }

    fn run_loop(&self, ctx: &Context<'_>) -> Result<()> {
        if !self.has_loop {
            return Err(Error::unimplemented());
        }
        // Paced so that a failing loop never spins.
        std::thread::sleep(Duration::from_millis(5));
        self.faults.apply("loop", ctx)
    }

    fn finalize(&mut self, ctx: &Context<'_>) -> Result<()> {
        self.faults.apply("finalize", ctx)
    }
}

impl Drop for Faulty {
    fn drop(&mut self) {
        self.faults.drop_fault();
    }
}

/// A condition that faults on request; otherwise returns `value`.
pub struct FaultyCondition {
    faults: Faults,
    value: bool,
}

impl Condition for FaultyCondition {
    type Config = serde_json::Value;

    fn new(config: serde_json::Value) -> Result<Self> {
        let value = config
            .get("value")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(true);
        let mut fields = config;
        if let Some(map) = fields.as_object_mut() {
            map.remove("value");
        }
        let faults: FaultConfig = serde_json::from_value(fields).map_err(Error::msg)?;
        Ok(FaultyCondition {
            faults: Faults::new(CONDITION_ENTRY_POINTS, faults)?,
            value,
        })
    }

    fn setup(&mut self, ctx: &Context<'_>) -> Result<()> {
        self.faults.apply("setup", ctx)
    }

    fn check(&self, ctx: &Context<'_>) -> Result<bool> {
        self.faults.apply("check", ctx)?;
        Ok(self.value)
    }

    fn finalize(&mut self, ctx: &Context<'_>) -> Result<()> {
        self.faults.apply("finalize", ctx)
    }
}

impl Drop for FaultyCondition {
    fn drop(&mut self) {
        self.faults.drop_fault();
    }
}

otools_api::export_plugin! {
    services: [Faulty],
    conditions: [FaultyCondition],
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> FaultConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn unknown_or_doubly_listed_entry_points_are_rejected() {
        assert!(Faults::new(SERVICE_ENTRY_POINTS, config(r#"{"panic_in":["nope"]}"#)).is_err());
        assert!(
            Faults::new(
                SERVICE_ENTRY_POINTS,
                config(r#"{"panic_in":["main"],"hang_in":["main"]}"#)
            )
            .is_err()
        );
        assert!(Faults::new(SERVICE_ENTRY_POINTS, config(r#"{"probability":1.5}"#)).is_err());
        assert!(Faults::new(SERVICE_ENTRY_POINTS, config(r#"{"error_in":["main"]}"#)).is_ok());
        assert!(Faults::new(SERVICE_ENTRY_POINTS, config(r#"{"hang_in":["drop"]}"#)).is_err());
        assert!(Faults::new(SERVICE_ENTRY_POINTS, config(r#"{"panic_in":["drop"]}"#)).is_ok());
    }

    #[test]
    fn the_random_draws_are_seeded_and_uniform_enough() {
        let f = Faults::new(SERVICE_ENTRY_POINTS, config(r#"{"seed":7}"#)).unwrap();
        let g = Faults::new(SERVICE_ENTRY_POINTS, config(r#"{"seed":7}"#)).unwrap();
        let a: Vec<f64> = (0..100).map(|_| f.roll()).collect();
        let b: Vec<f64> = (0..100).map(|_| g.roll()).collect();
        assert_eq!(a, b);
        let below = a.iter().filter(|x| **x < 0.5).count();
        assert!((30..70).contains(&below), "{below}");
    }
}
