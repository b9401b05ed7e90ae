//! Pipeline stages for the examples and the tests: `Numbers` (a source
//! counting from `from` to `to`, or for ever, partitioned over its
//! workers), `Double` (a transform multiplying by `factor`, making `copies`
//! items of each), `Collect` (a sink appending each item to a file) and
//! `Sum` (a sink logging the sum of what it received). `Double`, `Collect` and `Sum` fail (an error) or
//! panic on the items their `fail_on` and `panic_on` lists name, and can
//! sleep `delay_ms` per item (a slow stage).

use std::fs::File;
use std::io::Write;
use std::time::Duration;

use otools_api::{Context, Error, Output, Result, Sink, Source, Transform, Value, Worker};
use serde::Deserialize;

/// An item as an integer, or an error naming what it was.
fn int(item: &Value) -> Result<i64> {
    item.as_i64().ok_or_else(|| {
        Error::msg(format!(
            "expected an integer item, got a {}",
            item.type_name()
        ))
    })
}

/// The faults and pace shared by `Double`, `Collect` and `Sum`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Items (as received) whose call returns an error.
    #[serde(default)]
    pub fail_on: Vec<i64>,
    /// Items (as received) whose call panics.
    #[serde(default)]
    pub panic_on: Vec<i64>,
    /// Sleep this long per item (a slow stage).
    #[serde(default)]
    pub delay_ms: u64,
    /// Items (as received) whose call sleeps `hang_ms` (a hung call).
    #[serde(default)]
    pub hang_on: Vec<i64>,
    /// How long a hung call sleeps (default 1000).
    #[serde(default = "second")]
    pub hang_ms: u64,
}

fn second() -> u64 {
    1000
}

impl Faults {
    fn apply(&self, n: i64) -> Result<()> {
        if self.delay_ms > 0 {
            std::thread::sleep(Duration::from_millis(self.delay_ms));
        }
        if self.hang_on.contains(&n) {
            std::thread::sleep(Duration::from_millis(self.hang_ms));
        }
        if self.panic_on.contains(&n) {
            panic!("injected panic on item {n}");
        }
        if self.fail_on.contains(&n) {
            otools_api::bail!("injected error on item {n}");
        }
        Ok(())
    }
}

/// Counts from `from` to `to` (for ever without `to`). Worker `i` of `n`
/// yields the numbers `k` with `(k - from) % n == i`, so several workers
/// yield each number once.
pub struct Numbers {
    config: NumbersConfig,
    next: i64,
    step: i64,
}

/// `Numbers`' config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumbersConfig {
    /// The first number (default 1).
    #[serde(default = "one")]
    pub from: i64,
    /// The last number (default: none, count for ever).
    pub to: Option<i64>,
    /// Sleep this long before each number.
    #[serde(default)]
    pub every_ms: u64,
}

fn one() -> i64 {
    1
}

impl Source for Numbers {
    type Config = NumbersConfig;

    fn new(config: NumbersConfig) -> Result<Self> {
        if config.to.is_some_and(|to| to < config.from) {
            otools_api::bail!("`to` must not be less than `from`");
        }
        Ok(Numbers {
            next: config.from,
            step: 1,
            config,
        })
    }

    fn setup(&mut self, ctx: &Context<'_>, worker: Worker) -> Result<()> {
        let (index, count) = (
            i64::try_from(worker.index).map_err(Error::msg)?,
            i64::try_from(worker.count).map_err(Error::msg)?,
        );
        self.next = self.config.from + index;
        self.step = count;
        ctx.info(format_args!(
            "setup worker {} of {}",
            worker.index, worker.count
        ));
        Ok(())
    }

    fn next(&mut self, _: &Context<'_>) -> Result<Option<Value>> {
        if self.config.to.is_some_and(|to| self.next > to) {
            return Ok(None);
        }
        if self.config.every_ms > 0 {
            std::thread::sleep(Duration::from_millis(self.config.every_ms));
        }
        let n = self.next;
        self.next += self.step;
        Ok(Some(Value::Int(n)))
    }
}

/// Multiplies each integer item by `factor`; logs its worker at setup and
/// how many items it processed at finalize.
pub struct Double {
    config: DoubleConfig,
    worker: usize,
    items: u64,
}

/// `Double`'s config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoubleConfig {
    /// The multiplier (default 2).
    #[serde(default = "two")]
    pub factor: i64,
    /// How many items each item becomes (default 1; 0 drops it).
    #[serde(default = "one_copy")]
    pub copies: usize,
    /// Faults and pace.
    #[serde(flatten)]
    pub faults: Faults,
}

fn two() -> i64 {
    2
}

fn one_copy() -> usize {
    1
}

impl Transform for Double {
    type Config = DoubleConfig;

    fn new(config: DoubleConfig) -> Result<Self> {
        Ok(Double {
            config,
            worker: 0,
            items: 0,
        })
    }

    fn setup(&mut self, ctx: &Context<'_>, worker: Worker) -> Result<()> {
        self.worker = worker.index;
        ctx.info(format_args!(
            "setup worker {} of {}",
            worker.index, worker.count
        ));
        Ok(())
    }

    fn process(&mut self, _: &Context<'_>, item: Value, out: &mut Output<'_>) -> Result<()> {
        let n = int(&item)?;
        self.items += 1;
        self.config.faults.apply(n)?;
        for _ in 0..self.config.copies {
            out.push(n * self.config.factor);
        }
        Ok(())
    }

    fn finalize(&mut self, ctx: &Context<'_>) -> Result<()> {
        ctx.info(format_args!(
            "finalize worker {} after {} items",
            self.worker, self.items
        ));
        Ok(())
    }
}

/// Appends each item to `file`, one line per item.
pub struct Collect {
    config: CollectConfig,
    out: Option<File>,
}

/// `Collect`'s config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectConfig {
    /// The file the items are appended to (created if missing).
    pub file: String,
    /// Faults and pace.
    #[serde(flatten)]
    pub faults: Faults,
}

impl Sink for Collect {
    type Config = CollectConfig;

    fn new(config: CollectConfig) -> Result<Self> {
        Ok(Collect { config, out: None })
    }

    fn setup(&mut self, _: &Context<'_>, _: Worker) -> Result<()> {
        let file = File::options()
            .create(true)
            .append(true)
            .open(&self.config.file)
            .map_err(|e| Error::msg(format!("cannot open {}: {e}", self.config.file)))?;
        self.out = Some(file);
        Ok(())
    }

    fn consume(&mut self, _: &Context<'_>, item: Value) -> Result<()> {
        let n = int(&item)?;
        self.config.faults.apply(n)?;
        let Some(out) = self.out.as_mut() else {
            otools_api::bail!("not set up");
        };
        writeln!(out, "{n}").map_err(Error::msg)
    }
}

/// Adds up the integer items it receives and logs the sum at finalize.
pub struct Sum {
    faults: Faults,
    items: u64,
    sum: i64,
}

impl Sink for Sum {
    type Config = Faults;

    fn new(faults: Faults) -> Result<Self> {
        Ok(Sum {
            faults,
            items: 0,
            sum: 0,
        })
    }

    fn consume(&mut self, _: &Context<'_>, item: Value) -> Result<()> {
        let n = int(&item)?;
        self.faults.apply(n)?;
        self.items += 1;
        self.sum = self.sum.wrapping_add(n);
        Ok(())
    }

    fn finalize(&mut self, ctx: &Context<'_>) -> Result<()> {
        ctx.info(format_args!("sum of {} items: {}", self.items, self.sum));
        Ok(())
    }
}

otools_api::export_plugin! {
    sources: [Numbers],
    transforms: [Double],
    sinks: [Collect, Sum],
}
