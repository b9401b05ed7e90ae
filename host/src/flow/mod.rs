//! Durable event flows: steps activated by events, per sequence, with
//! AND/OR expression events, delays, concurrency limits and resource pools,
//! recorded in an embedded SQLite run store so that a failed or killed run
//! can be recovered or continued.
//!
//! - [`FlowPlan`] is a `[[flow]]` resolved by `plan::build`: events,
//!   expressions and steps as indices, every step instance already built
//!   from its config.
//! - [`store`] is the run store (one SQLite file per `store` path).
//! - [`engine`] runs one flow: [`engine::open`] opens its store and sets up
//!   its run for the run mode (and refuses a `recover` with nothing to
//!   recover before anything starts), [`engine::Opened::start`] starts its
//!   coordinator thread, which activates steps, runs each activation on a
//!   thread of its own under the host's watchdog, and records every
//!   transition in the store.
//!
//! - [`status`] is what `otools status` shows of a running flow.
//!
//! Events are raised at start (`start`), by associations and step
//! outcomes, and from outside the flow: by a plugin (`ctx.raise_event`, a
//! step's `ctx.raise`) or `otools raise`, through the host's
//! [`crate::messaging::FlowDirectory`], where each flow's
//! [`engine::FlowHandle`] is registered. Such a raise is answered once the
//! store has committed it; a `keep_open` flow waits for them when idle.
//!
//! A flow's steps log under the flow's name (as a context would) and the
//! step's name; the journal records `flow_started`, `event_raised`,
//! `step_started`, `step_finished`, `duplicate`, `delay_scheduled`,
//! `and_unsatisfied` and `flow_finished`.

pub mod engine;
pub mod status;
pub mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use otools_abi::FfiStepBox;

use crate::instance::ContextShared;
use crate::manifest::flow::{Recovery, RunMode};
use crate::plugin::Library;

/// An event of a flow, by index into [`FlowPlan::events`].
pub type EventId = usize;
/// A step of a flow, by index into [`FlowPlan::steps`].
pub type StepId = usize;

/// An expression over events, compiled to event ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// True once the event was raised for the sequence.
    Event(EventId),
    /// True once every operand is.
    And(Vec<Expr>),
    /// True once any operand is.
    Or(Vec<Expr>),
}

impl Expr {
    /// Is the expression true, given which events were raised?
    pub fn holds(&self, raised: &dyn Fn(EventId) -> bool) -> bool {
        match self {
            Expr::Event(e) => raised(*e),
            Expr::And(v) => v.iter().all(|x| x.holds(raised)),
            Expr::Or(v) => v.iter().any(|x| x.holds(raised)),
        }
    }

    /// Does the expression mention `event`?
    pub fn mentions(&self, event: EventId) -> bool {
        match self {
            Expr::Event(e) => *e == event,
            Expr::And(v) | Expr::Or(v) => v.iter().any(|x| x.mentions(event)),
        }
    }

    /// The events it mentions that were not raised (for reports).
    pub fn missing(&self, raised: &dyn Fn(EventId) -> bool, out: &mut Vec<EventId>) {
        match self {
            Expr::Event(e) => {
                if !raised(*e) && !out.contains(e) {
                    out.push(*e);
                }
            }
            Expr::And(v) | Expr::Or(v) => v.iter().for_each(|x| x.missing(raised, out)),
        }
    }
}

/// One association: when `event` is raised, activate `steps` and raise
/// `events`, at once or after `delay`.
#[derive(Debug, Clone)]
pub struct Association {
    /// The activating event.
    pub event: EventId,
    /// Steps activated.
    pub steps: Vec<StepId>,
    /// Events raised.
    pub events: Vec<EventId>,
    /// The delay, if any.
    pub delay: Option<Duration>,
}

/// One step of a flow.
pub struct FlowStep {
    /// Its name in the flow.
    pub name: String,
    /// The library it comes from.
    pub library: Arc<Library>,
    /// Its export name.
    pub export: String,
    /// The step instance (built once; `run` is called per activation).
    pub object: Arc<FfiStepBox>,
    /// The longest one run may take.
    pub watchdog: Option<Duration>,
    /// More attempts after a failure (0 under `restart = "never"`).
    pub retries: u32,
    /// Only failures within this window count against `retries` (`None`: all).
    pub restart_window: Option<Duration>,
    /// Delay before the first retry, doubled for each next one.
    pub restart_delay: Duration,
    /// Cap of the doubling retry delay.
    pub max_restart_delay: Duration,
    /// At most this many activations at once.
    pub max_concurrent: Option<u32>,
    /// Pools it holds a unit of while it runs.
    pub pools: Vec<usize>,
    /// Raised on success.
    pub on_success: Option<EventId>,
    /// Raised on failure (which is then handled).
    pub on_failure: Option<EventId>,
    /// Raised when it ends either way.
    pub on_complete: Option<EventId>,
    /// Overrides the flow's `stop_on_error`.
    pub stop_on_error: Option<bool>,
    /// What `recover` does with it.
    pub recovery: Recovery,
    /// False: `recover` fails an interrupted activation instead of rerunning it.
    pub idempotent: bool,
}

/// The cap of a step's doubling retry delay without `max_restart_delay`.
pub const DEFAULT_MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// A resource pool.
#[derive(Debug, Clone)]
pub struct Pool {
    /// Its name.
    pub name: String,
    /// How many units.
    pub limit: u32,
}

/// A `[[flow]]`, resolved and with its step instances built.
pub struct FlowPlan {
    /// The flow's name.
    pub name: String,
    /// The run store file (`None`: an in-memory store).
    pub store: Option<PathBuf>,
    /// How the run starts (the manifest's, or `--mode`).
    pub mode: RunMode,
    /// Which run `recover` and `continue` take up (`--run`; default: the latest).
    pub run_id: Option<String>,
    /// After an unhandled failure, start no new step.
    pub stop_on_error: bool,
    /// The run does not end when idle: it waits for raised events until stopped.
    pub keep_open: bool,
    /// Once asked to stop, how long running steps may take before they
    /// are abandoned (`[host] shutdown_timeout`).
    pub shutdown_timeout: Duration,
    /// What its steps' host handles share: the flow's name, log level and dataframes.
    pub shared: Arc<ContextShared>,
    /// Every event name (plain events, then expression events).
    pub events: Vec<String>,
    /// The expression events: (the event, its expression).
    pub expressions: Vec<(EventId, Expr)>,
    /// The associations, in manifest order.
    pub associations: Vec<Association>,
    /// The steps, in manifest order.
    pub steps: Vec<FlowStep>,
    /// The pools.
    pub pools: Vec<Pool>,
    /// Raised when a new run starts: (event, sequence).
    pub start: Vec<(EventId, String)>,
}

impl FlowPlan {
    /// The shortest step `watchdog` (for the host's watchdog tick).
    pub fn shortest_watchdog(&self) -> Option<Duration> {
        self.steps.iter().filter_map(|s| s.watchdog).min()
    }
}
