//! Running one context under supervision: OTools' `Context`, with its known
//! bugs fixed, plus the watchdog's in-place replacement of failed or hung
//! instances.
//!
//! A context is a [`RunningContext`] shared by the threads that work on it:
//! - one *driver* thread at a time: `setup` of every instance in manifest
//!   order, the [`StartGate`] (no `main` anywhere before every `setup`
//!   returned), the main loop (each service's `main`, each trigger's
//!   conditions and, when it fires, its stack services' `main`, paced by
//!   `period`), and at the end `finalize` of every instance in reverse
//!   manifest order;
//! - one *loop* thread per top-level service that has a loop;
//! - short-lived *worker* threads that stop, finalize and restart instances
//!   after a failure, a hang or a deactivation, so the driver never waits for
//!   a restart.
//!
//! Each service or condition is a [`Unit`]: a slot holding its current
//! instance (a *generation*), its state and its restart history. When an
//! instance exits (error, panic, hang, failed setup, deactivation),
//! `RunningContext::instance_ended` applies the restart policy and strategy: the instance is
//! retired, its loop thread stopped, it is finalized (unless it hung) and
//! *fenced* (its host handle refuses every later call), then after the
//! back-off delay a fresh instance is built from the same library and config,
//! set up, and put in the same slot under the same name.
//!
//! A call that overruns its deadline is declared hung by the watchdog
//! ([`crate::supervision::watchdog`]). Its thread cannot be stopped, so it is
//! abandoned: if it was the driver, a new driver thread takes over at the
//! next step, so the rest of the context keeps its pace after at most the
//! watchdog deadline plus two ticks.
//!
//! One file per concept, each adding its part of `impl RunningContext`: `plan` (what a
//! context is built from), `gate` ([`StartGate`]), `unit` ([`Unit`], its
//! state and its [`Instance`] instance), `driver` (the driver thread),
//! `restart` (`RunningContext::instance_ended` and the worker threads), `lifecycle` (starting
//! and stopping one instance), `loop_thread`, and `swap` (the primitives
//! of a hot reload's swap).

mod driver;
mod gate;
mod lifecycle;
mod loop_thread;
mod mailbox;
mod restart;
mod swap;
mod unit;

use crate::plan::{ContextPlan, StepPlan};
pub use gate::StartGate;
pub use swap::{ExportedState, Paused, Prepared};
pub use unit::{Instance, Unit};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use otools_abi::ExportKind;
use parking_lot::{Condvar, Mutex};

use self::driver::Resume;
use self::unit::{Control, State};
use crate::event::{self, Event};
use crate::instance::{ContextShared, InstanceHost};
use crate::supervision::policy::{Strategy, Tracker};
use crate::supervision::watchdog::Watchdog;
use crate::threads::Spawner;

/// What context threads tell the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextEvent {
    /// Every context has set up (sent once, by the last to arrive).
    AllReady,
    /// The context with this index stopped iterating and is finalizing.
    Stopping(usize),
    /// The context with this index has finalized everything and ended.
    Ended(usize),
    /// A service of this context gave up with `on_give_up = "exit_host"`.
    ExitHost(usize),
    /// A `main_once` service of this context finished: its `main` returned,
    /// or it stopped for good before it did.
    OnceDone(usize),
}

/// The calling thread left because the watchdog abandoned its call.
#[derive(Debug)]
pub struct Abandoned;

/// A running context; see the module docs.
pub struct RunningContext {
    /// Its index in the manifest.
    pub index: usize,
    /// State shared with its instances.
    pub shared: Arc<ContextShared>,
    /// Its services and conditions, in manifest order.
    pub units: Vec<Unit>,
    steps: Vec<StepPlan>,
    period: Duration,
    strategy: Strategy,
    gate: Arc<StartGate>,
    events: Sender<ContextEvent>,
    driver_epoch: AtomicU64,
    workers: Mutex<usize>,
    workers_done: Condvar,
    /// Bumped by the driver every iteration (for systemd's watchdog).
    pub heartbeat: AtomicU64,
    /// True while the driver waits with nothing to do.
    pub idle: AtomicBool,
    /// True once the driver finished.
    pub ended: AtomicBool,
    /// Something was abandoned while stopping (a loop or a finalize overran).
    pub abandoned: AtomicBool,
    /// A unit ended in failure: it gave up, or failed with no restart.
    pub failed: AtomicBool,
    /// The host's watchdog: every thread working on the context registers
    /// its slot there.
    pub watchdog: Arc<Watchdog>,
    /// The host's thread starter: where a thread that cannot be created is
    /// reported.
    pub threads: Arc<Spawner>,
}

impl RunningContext {
    /// Builds a context from its plan, watched by its host's `watchdog`
    /// and starting its threads through its host's `threads`;
    /// [`RunningContext::start`] runs it.
    pub fn new(
        index: usize,
        plan: ContextPlan,
        gate: Arc<StartGate>,
        events: Sender<ContextEvent>,
        watchdog: Arc<Watchdog>,
        threads: Arc<Spawner>,
    ) -> Arc<RunningContext> {
        let now = Instant::now();
        let units = plan
            .units
            .into_iter()
            .map(|u| {
                let stash = Arc::new(Mutex::new(None));
                let host = Arc::new(InstanceHost::new(
                    Arc::clone(&plan.shared),
                    u.name.clone(),
                    Arc::clone(&u.library),
                    u.export.clone(),
                    1,
                    Arc::clone(&stash),
                ));
                let live = Instance::new(Arc::clone(&host), u.initial);
                Unit {
                    name: u.name,
                    kind: u.kind,
                    top_level: u.top_level,
                    library: ArcSwap::new(u.library),
                    export: u.export,
                    config_json: u.config_json,
                    policy: u.policy,
                    live: ArcSwapOption::from_pointee(live),
                    state: Arc::new(AtomicU8::new(State::Pending as u8)),
                    has_main: AtomicBool::new(u.kind == ExportKind::Service),
                    main_once: u.main_once,
                    main_done: AtomicBool::new(false),
                    loop_running: AtomicBool::new(false),
                    control: Mutex::new(Control {
                        generation: 1,
                        tracker: Tracker::default(),
                        running_since: now,
                        host: Some(host),
                        loop_thread: None,
                    }),
                    stash,
                    mailbox: u.mailbox,
                }
            })
            .collect();
        Arc::new(RunningContext {
            index,
            shared: plan.shared,
            units,
            steps: plan.steps,
            period: plan.period,
            strategy: plan.strategy,
            gate,
            events,
            driver_epoch: AtomicU64::new(0),
            workers: Mutex::new(0),
            workers_done: Condvar::new(),
            heartbeat: AtomicU64::new(0),
            idle: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            watchdog,
            threads,
        })
    }

    /// Starts the context's driver thread.
    pub fn start(self: &Arc<Self>) -> std::io::Result<()> {
        self.watch_mailboxes();
        self.spawn_driver(Resume::Setup(0), 0)
    }

    /// How long stopping this context may take at most, as a backstop.
    pub fn shutdown_budget(&self) -> Duration {
        self.units
            .iter()
            .map(|u| u.policy.shutdown_timeout.saturating_mul(2))
            .fold(Duration::from_secs(1), Duration::saturating_add)
    }

    /// Delivers `e` to the host's event sinks.
    pub fn emit(&self, e: Event) {
        self.shared.events.emit(&e);
    }

    /// Who an event about generation `generation` of unit `u` is about.
    pub fn unit_id(&self, u: usize, generation: u64) -> event::Unit {
        event::Unit::new(&self.shared.name, &self.units[u].name, generation)
    }

    /// Does a `main_once` service of this context still have to finish
    /// (its `main` has not returned, and it has not stopped for good)?
    pub fn main_once_pending(&self) -> bool {
        !self.ended.load(Ordering::SeqCst)
            && self.units.iter().any(|u| {
                u.main_once && !u.main_done.load(Ordering::Acquire) && !u.state().terminal()
            })
    }

    /// The `main` of `main_once` unit `u` returned (or is not implemented):
    /// it is not called again; journaled, and the supervisor is told.
    fn main_once_done(&self, u: usize) {
        let unit = &self.units[u];
        if unit.main_done.swap(true, Ordering::AcqRel) {
            return;
        }
        let generation = unit.control.lock().generation;
        tracing::info!(
            context = %self.shared.name,
            service = %unit.name,
            "main returned (main_once): it is not called again"
        );
        self.emit(Event::MainOnceDone {
            unit: self.unit_id(u, generation),
        });
        let _ = self.events.send(ContextEvent::OnceDone(self.index));
    }

    /// Unit `u` was left in a final state by a worker: a `main_once` unit
    /// that stopped for good before its `main` returned has finished too.
    fn settled(&self, u: usize) {
        let unit = &self.units[u];
        if unit.main_once && !unit.main_done.load(Ordering::Acquire) {
            let _ = self.events.send(ContextEvent::OnceDone(self.index));
        }
    }

    /// Is anything left that can run?
    fn alive(&self) -> bool {
        let unit_alive = |u: usize| {
            let unit = &self.units[u];
            match unit.state() {
                State::Ready => {
                    unit.wants_main()
                        || unit.loop_running.load(Ordering::Relaxed)
                        || unit.mailbox.is_some()
                }
                State::Pending | State::Stopping | State::Down => true,
                State::Failed | State::Ended => false,
            }
        };
        self.steps.iter().any(|s| match s {
            StepPlan::Service(u) => unit_alive(*u),
            StepPlan::Trigger { conditions, .. } => conditions
                .iter()
                .any(|c| !self.units[*c].state().terminal()),
        })
    }
}
