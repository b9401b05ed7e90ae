//! Messaging between services, as examples and test fixtures.
//!
//! - `Agent` is a pyros-style agent: it counts `PING`s and reports the
//!   count on `DUMP`; the reserved `SHUTDOWN` stops it (it does not list
//!   it, so the host stops it without calling it). Its `setup` can wait for
//!   a dataframe key, so that a test sends to it while it sets up.
//! - `Echo` replies with what it gets (`ECHO`), and panics (`PANIC`) or
//!   hangs (`HANG`) on command, to show what a requester then gets.
//! - `Script` sends, requests or publishes a list of messages in order,
//!   from its first `main` (or from `setup`), and logs each outcome.
//! - `Ticker` publishes `start`, `start + 1`, ... on a topic, one per `main`.
//! - `Listener` logs what it receives on the topics `px` and `ticks`.
//! - `Relay` passes a `HOP` on to the next relay and replies with its
//!   reply: a request across several hops, with its correlation id.
//! - `Sink` and `Stopwatch` are for `make bench`: `Sink` counts `ONE`s
//!   silently; `Stopwatch` times requests to it (round trips) or a burst of
//!   one-way sends, and logs the figures.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use otools_api::{Accept, Context, NoConfig, Payload, Result, Service, Value};
use serde::Deserialize;

/// A mailbox agent: `PING` adds one to its count and replies with it,
/// `DUMP` logs the count and replies with it.
pub struct Agent {
    config: AgentConfig,
    pings: AtomicU64,
}

/// Configuration of [`Agent`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// When set, `setup` waits (up to 10 s) until this key of this
    /// dataframe exists, as `[dataframe, key]`.
    #[serde(default)]
    pub setup_waits_for: Option<(String, String)>,
}

impl Service for Agent {
    type Config = AgentConfig;

    const MESSAGES: &'static [Accept] = &[Accept::any("PING"), Accept::new("DUMP", Payload::Null)];

    fn new(config: AgentConfig) -> Result<Self> {
        Ok(Agent {
            config,
            pings: AtomicU64::new(0),
        })
    }

    fn setup(&mut self, ctx: &Context<'_>) -> Result<()> {
        if let Some((dataframe, key)) = &self.config.setup_waits_for {
            let df = ctx.dataframe(dataframe)?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while df.get(key)?.is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        ctx.info("setup done");
        Ok(())
    }

    fn handle_message(&self, ctx: &Context<'_>, name: &str, _payload: Value) -> Result<Value> {
        match name {
            "PING" => {
                let n = self.pings.fetch_add(1, Ordering::Relaxed) + 1;
                ctx.info(format_args!("pong {n}"));
                Ok(Value::from(n as i64))
            }
            _ => {
                let n = self.pings.load(Ordering::Relaxed);
                ctx.info(format_args!("dump: {n} pings"));
                Ok(Value::from(n as i64))
            }
        }
    }
}

/// Replies to `ECHO` with its payload; `PANIC` panics, `HANG` sleeps for
/// its payload in milliseconds. Each generation numbers itself from the
/// stash (1, 2, ...) and adds it to its replies as `"<payload> from <n>"`.
pub struct Echo {
    generation: AtomicU64,
}

impl Service for Echo {
    type Config = NoConfig;

    const MESSAGES: &'static [Accept] = &[
        Accept::new("ECHO", Payload::Str),
        Accept::any("PANIC"),
        Accept::new("HANG", Payload::Int),
    ];

    fn new(_: NoConfig) -> Result<Self> {
        Ok(Echo {
            generation: AtomicU64::new(0),
        })
    }

    fn setup(&mut self, ctx: &Context<'_>) -> Result<()> {
        let before = ctx
            .stash()
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_le_bytes);
        self.generation.store(before + 1, Ordering::Relaxed);
        ctx.set_stash(&(before + 1).to_le_bytes())
    }

    fn handle_message(&self, ctx: &Context<'_>, name: &str, payload: Value) -> Result<Value> {
        match name {
            "PANIC" => panic!("asked to panic"),
            "HANG" => {
                let ms = payload.as_i64().unwrap_or(0).max(0).unsigned_abs();
                std::thread::sleep(Duration::from_millis(ms));
                Ok(Value::Null)
            }
            _ => {
                let text = payload.as_str().unwrap_or_default();
                let n = self.generation.load(Ordering::Relaxed);
                ctx.info(format_args!("echo {text}"));
                Ok(Value::from(format!("{text} from {n}")))
            }
        }
    }
}

/// One message of a [`Script`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// `send`, `request` or `publish`.
    pub kind: StepKind,
    /// The target (`Context/service` or a unique service name); the topic
    /// for `publish` is `name`.
    #[serde(default)]
    pub to: String,
    /// The message name, or the topic.
    pub name: String,
    /// The payload (JSON/TOML: numbers, strings, booleans, lists, tables).
    #[serde(default)]
    pub payload: serde_json::Value,
    /// A request's timeout in milliseconds (default: the API's, 5 s).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// What a [`Step`] does.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    /// `ctx.send`.
    Send,
    /// `ctx.request`.
    Request,
    /// `ctx.publish`.
    Publish,
}

/// Runs its steps in order and logs each outcome: `reply to NAME: VALUE`,
/// `sent NAME`, `published NAME to N`, or `NAME failed: KIND: message`.
/// Then it deactivates (or ends its context with `terminate = true`).
pub struct Script {
    config: ScriptConfig,
    done: AtomicBool,
}

/// Configuration of [`Script`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptConfig {
    /// The messages, in order.
    pub steps: Vec<Step>,
    /// Run them in `setup` instead of the first `main` (sends only: a
    /// request from `setup` waits for a target that may wait for the gate).
    #[serde(default)]
    pub in_setup: bool,
    /// After the steps (run in `setup`), set this dataframe key, as
    /// `[dataframe, key]`.
    #[serde(default)]
    pub then_set: Option<(String, String)>,
    /// End the context when done, instead of deactivating.
    #[serde(default)]
    pub terminate: bool,
}

fn to_value(j: &serde_json::Value) -> Value {
    match j {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::from(i),
            None => Value::from(n.as_f64().unwrap_or(0.0)),
        },
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(a) => Value::List(a.iter().map(to_value).collect()),
        serde_json::Value::Object(o) => Value::map(o.iter().map(|(k, v)| (k.clone(), to_value(v)))),
    }
}

/// How a value reads in a log line: `7`, `"text"`, `null`.
fn shown(v: &Value) -> String {
    match v {
        Value::Null => String::from("null"),
        Value::Int(i) => i.to_string(),
        Value::Str(s) => format!("{:?}", s.as_str()),
        other => format!("{other:?}"),
    }
}

impl Script {
    fn run(&self, ctx: &Context<'_>) {
        for step in &self.config.steps {
            let payload = to_value(&step.payload);
            let name = step.name.as_str();
            let outcome = match step.kind {
                StepKind::Send => ctx
                    .send(&step.to, name, payload)
                    .map(|()| format!("sent {name}")),
                StepKind::Request => {
                    let timeout = step.timeout_ms.map(Duration::from_millis);
                    ctx.request(&step.to, name, payload, timeout)
                        .map(|v| format!("reply to {name}: {}", shown(&v)))
                }
                StepKind::Publish => ctx
                    .publish(name, payload)
                    .map(|n| format!("published {name} to {n}")),
            };
            match outcome {
                Ok(line) => ctx.info(line),
                Err(e) => {
                    let kind = e
                        .message_error()
                        .map_or_else(|| String::from("Other"), |k| format!("{k:?}"));
                    ctx.info(format_args!("{name} failed: {kind}: {e}"));
                }
            }
        }
    }
}

impl Service for Script {
    type Config = ScriptConfig;

    fn new(config: ScriptConfig) -> Result<Self> {
        Ok(Script {
            config,
            done: AtomicBool::new(false),
        })
    }

    fn setup(&mut self, ctx: &Context<'_>) -> Result<()> {
        if self.config.in_setup {
            self.run(ctx);
            self.done.store(true, Ordering::Relaxed);
            if let Some((dataframe, key)) = &self.config.then_set {
                ctx.dataframe(dataframe)?.set(key, true)?;
            }
        }
        Ok(())
    }

    fn main(&self, ctx: &Context<'_>) -> Result<()> {
        if !self.done.swap(true, Ordering::Relaxed) {
            self.run(ctx);
        }
        if self.config.terminate {
            ctx.terminate_context();
        } else {
            ctx.deactivate();
        }
        Ok(())
    }
}

/// Publishes `start + n` on `topic` from its n-th `main` (from 0), `count`
/// times, then sends `SHUTDOWN` to each service in `stop` (after the
/// publications in their mailboxes) and deactivates.
pub struct Ticker {
    config: TickerConfig,
    sent: AtomicU64,
}

/// Configuration of [`Ticker`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TickerConfig {
    /// The topic.
    pub topic: String,
    /// The first value.
    #[serde(default)]
    pub start: i64,
    /// How many to publish.
    pub count: u64,
    /// Services to send `SHUTDOWN` to once done.
    #[serde(default)]
    pub stop: Vec<String>,
}

impl Service for Ticker {
    type Config = TickerConfig;

    fn new(config: TickerConfig) -> Result<Self> {
        Ok(Ticker {
            config,
            sent: AtomicU64::new(0),
        })
    }

    fn main(&self, ctx: &Context<'_>) -> Result<()> {
        let n = self.sent.fetch_add(1, Ordering::Relaxed);
        if n >= self.config.count {
            for target in &self.config.stop {
                ctx.send(target, otools_api::SHUTDOWN, ())?;
            }
            ctx.deactivate();
            return Ok(());
        }
        let value = self.config.start + n as i64;
        let to = ctx.publish(&self.config.topic, value)?;
        ctx.debug(format_args!("published {value} to {to}"));
        Ok(())
    }
}

/// Logs `got TOPIC VALUE` for each publication it receives on `px` or
/// `ticks` (it gets only the topics its manifest entry subscribes to).
pub struct Listener;

impl Service for Listener {
    type Config = NoConfig;

    const MESSAGES: &'static [Accept] = &[Accept::any("px"), Accept::any("ticks")];

    fn new(_: NoConfig) -> Result<Self> {
        Ok(Listener)
    }

    fn handle_message(&self, ctx: &Context<'_>, name: &str, payload: Value) -> Result<Value> {
        ctx.info(format_args!("got {name} {}", shown(&payload)));
        Ok(Value::Null)
    }
}

/// Handles `HOP` (an integer): logs it with its correlation id, asks
/// `next` (if any) with the integer plus one, and replies with the last
/// relay's integer.
pub struct Relay {
    config: RelayConfig,
}

/// Configuration of [`Relay`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// The next relay (none: this is the last hop).
    #[serde(default)]
    pub next: Option<String>,
}

impl Service for Relay {
    type Config = RelayConfig;

    const MESSAGES: &'static [Accept] = &[Accept::new("HOP", Payload::Int)];

    fn new(config: RelayConfig) -> Result<Self> {
        Ok(Relay { config })
    }

    fn handle_message(&self, ctx: &Context<'_>, _name: &str, payload: Value) -> Result<Value> {
        let n = payload.as_i64().unwrap_or_default();
        let id = ctx.correlation_id().unwrap_or_default();
        ctx.info(format_args!("hop {n} with correlation {id}"));
        match &self.config.next {
            Some(next) => ctx.request(next, "HOP", n + 1, None),
            None => Ok(Value::from(n)),
        }
    }
}

/// Counts `ONE` messages (any payload) without logging, and replies with
/// the count; `COUNT` replies with it too. A benchmark's receiver.
pub struct Sink {
    count: AtomicU64,
}

impl Service for Sink {
    type Config = NoConfig;

    const MESSAGES: &'static [Accept] = &[Accept::any("ONE"), Accept::new("COUNT", Payload::Null)];

    fn new(_: NoConfig) -> Result<Self> {
        Ok(Sink {
            count: AtomicU64::new(0),
        })
    }

    fn handle_message(&self, _ctx: &Context<'_>, name: &str, _payload: Value) -> Result<Value> {
        let n = if name == "ONE" {
            self.count.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.count.load(Ordering::Relaxed)
        };
        Ok(Value::from(n as i64))
    }
}

/// What a [`Stopwatch`] times.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Timed {
    /// `count` requests `ONE`, one after the other, each timed.
    RoundTrip,
    /// `count` one-way sends of `ONE`, then one request `COUNT` (handled
    /// after them, in order): the whole burst is timed.
    OneWay,
}

/// Configuration of [`Stopwatch`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopwatchConfig {
    /// The [`Sink`] to message.
    pub to: String,
    /// What to time.
    pub timed: Timed,
    /// How many messages are timed.
    pub count: u64,
    /// How many untimed messages go first.
    #[serde(default)]
    pub warmup: u64,
}

/// From its first `main`: times messages to a [`Sink`] with [`Instant`],
/// logs one INFO line `bench round_trip n=N p50_ns=.. p99_ns=.. max_ns=..`
/// or `bench one_way n=N secs=.. rate=..` (or `bench failed: ..`), sends
/// `SHUTDOWN` to the sink and ends its context.
pub struct Stopwatch {
    config: StopwatchConfig,
}

impl Stopwatch {
    fn round_trip(&self, ctx: &Context<'_>) -> Result<String> {
        let to = self.config.to.as_str();
        for i in 0..self.config.warmup {
            ctx.request(to, "ONE", i as i64, None)?;
        }
        let mut ns = Vec::with_capacity(usize::try_from(self.config.count).unwrap_or(0));
        for i in 0..self.config.count {
            let t = Instant::now();
            ctx.request(to, "ONE", i as i64, None)?;
            ns.push(t.elapsed().as_nanos());
        }
        ns.sort_unstable();
        let at = |q: usize| {
            ns.get((ns.len().saturating_sub(1)) * q / 100)
                .copied()
                .unwrap_or(0)
        };
        Ok(format!(
            "bench round_trip n={} p50_ns={} p99_ns={} max_ns={}",
            ns.len(),
            at(50),
            at(99),
            at(100)
        ))
    }

    fn one_way(&self, ctx: &Context<'_>) -> Result<String> {
        let to = self.config.to.as_str();
        for i in 0..self.config.warmup {
            ctx.send(to, "ONE", i as i64)?;
        }
        ctx.request(to, "COUNT", (), None)?;
        let t = Instant::now();
        for i in 0..self.config.count {
            ctx.send(to, "ONE", i as i64)?;
        }
        let seen = ctx.request(to, "COUNT", (), None)?;
        let secs = t.elapsed().as_secs_f64();
        let want = (self.config.warmup + self.config.count) as i64;
        if seen.as_i64() != Some(want) {
            return Ok(format!(
                "bench failed: the sink counted {seen:?}, not {want}"
            ));
        }
        Ok(format!(
            "bench one_way n={} secs={secs:.6} rate={:.0}",
            self.config.count,
            self.config.count as f64 / secs
        ))
    }
}

impl Service for Stopwatch {
    type Config = StopwatchConfig;

    fn new(config: StopwatchConfig) -> Result<Self> {
        Ok(Stopwatch { config })
    }

    fn main(&self, ctx: &Context<'_>) -> Result<()> {
        let line = match self.config.timed {
            Timed::RoundTrip => self.round_trip(ctx),
            Timed::OneWay => self.one_way(ctx),
        };
        match line {
            Ok(line) => ctx.info(line),
            Err(e) => ctx.info(format_args!("bench failed: {e}")),
        }
        let _ = ctx.send(&self.config.to, otools_api::SHUTDOWN, ());
        ctx.terminate_context();
        Ok(())
    }
}

otools_api::export_plugin! {
    services: [Agent, Echo, Script, Ticker, Listener, Relay, Sink, Stopwatch],
}
