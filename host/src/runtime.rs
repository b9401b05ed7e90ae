//! Running one context under supervision: OTools' `Context`, with its known
//! bugs fixed, plus the watchdog's in-place replacement of failed or hung
//! instances.
//!
//! A context is a [`Core`] shared by the threads that work on it:
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
//! `Core::exit` applies the restart policy and strategy: the instance is
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

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use abi_stable::std_types::{RResult, RStr};
use arc_swap::{ArcSwap, ArcSwapOption};
use otools_abi::{
    CallError, CallErrorKind, CallResult, ExportKind, FfiConditionBox, FfiServiceBox,
};
use parking_lot::{Condvar, Mutex};

use crate::event::{self, Event};
use crate::instance::{ContextShared, InstanceHost};
use crate::manifest::Mode;
use crate::plugin::Library;
use crate::supervision::policy::{Decision, GiveUp, Policy, Restart, Strategy, Tracker};
use crate::supervision::watchdog::{self, Entry, Hung, Slot, Watched, limit_ms};
use crate::threads;

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
}

/// Holds every context's main loop until all contexts have run `setup`.
pub struct StartGate {
    arrived: Mutex<Vec<bool>>,
    cond: Condvar,
    open: AtomicBool,
}

impl StartGate {
    /// A gate for `total` contexts.
    pub fn new(total: usize) -> StartGate {
        StartGate {
            arrived: Mutex::new(vec![false; total]),
            cond: Condvar::new(),
            open: AtomicBool::new(total == 0),
        }
    }

    /// Opens the gate without waiting for the others (shutdown during startup).
    pub fn abort(&self) {
        let _guard = self.arrived.lock();
        self.open.store(true, Ordering::SeqCst);
        self.cond.notify_all();
    }

    /// Context `index` has set up; true for the last to arrive.
    fn arrive(&self, index: usize) -> bool {
        let mut arrived = self.arrived.lock();
        if arrived.get(index).copied().unwrap_or(true) {
            return false;
        }
        arrived[index] = true;
        if arrived.iter().all(|a| *a) && !self.open.swap(true, Ordering::SeqCst) {
            self.cond.notify_all();
            return true;
        }
        false
    }

    /// Waits until the gate is open.
    fn wait_open(&self) {
        let mut arrived = self.arrived.lock();
        while !self.open.load(Ordering::SeqCst) {
            self.cond.wait(&mut arrived);
        }
    }
}

/// The plugin object of an instance.
pub enum Obj {
    /// A service.
    Service(FfiServiceBox),
    /// A condition.
    Condition(FfiConditionBox),
}

/// Builds an instance of `export` from `lib` with its JSON config (no `setup`).
pub fn construct(
    lib: &Library,
    kind: ExportKind,
    export: &str,
    config_json: &str,
) -> Result<Obj, CallError> {
    let (export, json) = (RStr::from_str(export), RStr::from_str(config_json));
    match kind {
        ExportKind::Service => match (lib.root.new_service())(export, json) {
            RResult::ROk(o) => Ok(Obj::Service(o)),
            RResult::RErr(e) => Err(e),
        },
        ExportKind::Condition => match (lib.root.new_condition())(export, json) {
            RResult::ROk(o) => Ok(Obj::Condition(o)),
            RResult::RErr(e) => Err(e),
        },
    }
}

/// One service or condition of a context, as planned from the manifest.
pub struct UnitPlan {
    /// Name in logs (a stack entry's is `<trigger>/<export>` unless named).
    pub name: String,
    /// Service or condition.
    pub kind: ExportKind,
    /// A service of the context itself (not a trigger's stack): it gets a loop thread.
    pub top_level: bool,
    /// Its library.
    pub library: Arc<Library>,
    /// Its export.
    pub export: String,
    /// Its config, as handed to the plugin.
    pub config_json: String,
    /// How it is supervised.
    pub policy: Policy,
    /// The first instance, built by `deploy` (setup not run).
    pub initial: Obj,
}

/// One step of a main-loop iteration.
pub enum StepPlan {
    /// Call this unit's `main`.
    Service(usize),
    /// Evaluate a trigger.
    Trigger {
        /// Its name.
        name: String,
        /// How its conditions combine.
        mode: Mode,
        /// Condition units.
        conditions: Vec<usize>,
        /// Stack service units, called in order when it fires.
        stack: Vec<usize>,
    },
}

/// A context, ready to run.
pub struct ContextPlan {
    /// State shared with its instances.
    pub shared: Arc<ContextShared>,
    /// Minimum time between main-loop starts.
    pub period: Duration,
    /// Which units restart with a failed one.
    pub strategy: Strategy,
    /// Every service and condition, in manifest order.
    pub units: Vec<UnitPlan>,
    /// The main loop's steps, in manifest order.
    pub steps: Vec<StepPlan>,
}

/// One running instance: its plugin object and its host handle.
pub struct Live {
    /// The handle its calls receive.
    pub host: Arc<InstanceHost>,
    object: Obj,
    loop_done: AtomicBool,
    /// Its loop thread's fate: [`LOOP_RUNNING`], [`LOOP_LEFT`] or [`LOOP_ABANDONED`].
    loop_fate: AtomicU8,
    /// Declared after `object`, so dropped right after it, on the same thread.
    _drop_report: DropReport,
}

/// Reports a panic in the destructor of a plugin object. The plugin's
/// adapter catches it (abi_stable would abort the process) and keeps the
/// message, which this collects right after the object was dropped.
struct DropReport(Arc<InstanceHost>);

impl Drop for DropReport {
    fn drop(&mut self) {
        let host = &self.0;
        let message = host
            .library
            .root
            .take_drop_panic()
            .and_then(|take| take().into_option());
        if let Some(message) = message {
            host.report_drop_panic(message.as_str());
        }
    }
}

/// A loop thread is running (or none was started yet).
const LOOP_RUNNING: u8 = 0;
/// The loop thread left.
const LOOP_LEFT: u8 = 1;
/// Stopping the instance gave up waiting for its unwatched loop call: the
/// thread is abandoned and counted (see `watchdog::thread_abandoned`).
const LOOP_ABANDONED: u8 = 2;

impl Live {
    fn new(host: Arc<InstanceHost>, object: Obj) -> Live {
        Live {
            _drop_report: DropReport(Arc::clone(&host)),
            host,
            object,
            loop_done: AtomicBool::new(false),
            loop_fate: AtomicU8::new(LOOP_RUNNING),
        }
    }

    fn main(&self) -> CallResult {
        match &self.object {
            Obj::Service(o) => self.host.with_handle(|h| o.main(h)),
            Obj::Condition(_) => unimplemented_call(),
        }
    }

    fn run_loop(&self) -> CallResult {
        match &self.object {
            Obj::Service(o) => self.host.with_handle(|h| o.run_loop(h)),
            Obj::Condition(_) => unimplemented_call(),
        }
    }

    fn check(&self) -> CallResult<bool> {
        match &self.object {
            Obj::Condition(o) => self.host.with_handle(|h| o.check(h)),
            Obj::Service(_) => RResult::ROk(false),
        }
    }

    fn setup(&mut self) -> CallResult {
        let host = Arc::clone(&self.host);
        match &mut self.object {
            Obj::Service(o) => host.with_handle(|h| o.setup(h)),
            Obj::Condition(o) => host.with_handle(|h| o.setup(h)),
        }
    }

    fn finalize(&mut self) -> CallResult {
        let host = Arc::clone(&self.host);
        match &mut self.object {
            Obj::Service(o) => host.with_handle(|h| o.finalize(h)),
            Obj::Condition(o) => host.with_handle(|h| o.finalize(h)),
        }
    }

    fn export_state(&self) -> CallResult<Option<(u32, Vec<u8>)>> {
        match &self.object {
            Obj::Service(o) => match self.host.with_handle(|h| o.export_state(h)) {
                RResult::ROk(v) => RResult::ROk(v.into_option().map(|t| (t.0, t.1.into_vec()))),
                RResult::RErr(e) => RResult::RErr(e),
            },
            Obj::Condition(_) => RResult::ROk(None),
        }
    }

    fn import_state(&mut self, version: u32, bytes: &[u8]) -> CallResult {
        let host = Arc::clone(&self.host);
        match &mut self.object {
            Obj::Service(o) => host.with_handle(|h| o.import_state(h, version, bytes.into())),
            Obj::Condition(_) => RResult::ROk(()),
        }
    }
}

fn unimplemented_call() -> CallResult {
    RResult::RErr(CallError {
        kind: CallErrorKind::Unimplemented,
        message: "not implemented".into(),
    })
}

/// The life-cycle state of a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum State {
    /// Built; `setup` not run or not finished.
    Pending = 0,
    /// Set up and serving.
    Ready = 1,
    /// Exited; being stopped and finalized by a worker.
    Stopping = 2,
    /// Stopped; a restart is scheduled.
    Down = 3,
    /// Gave up, or failed with no restart: stays down.
    Failed = 4,
    /// Ended normally (deactivated, or finalized at the end).
    Ended = 5,
}

impl State {
    fn from_u8(v: u8) -> State {
        match v {
            0 => State::Pending,
            1 => State::Ready,
            2 => State::Stopping,
            3 => State::Down,
            4 => State::Failed,
            _ => State::Ended,
        }
    }

    fn terminal(self) -> bool {
        matches!(self, State::Failed | State::Ended)
    }
}

/// Why an instance stopped serving.
#[derive(Debug, Clone)]
enum Exit {
    /// An entry point returned an error or panicked.
    Failed { entry: Entry, reason: String },
    /// An entry point overran its deadline.
    Hung { entry: Entry, limit: Duration },
    /// The instance deactivated itself (a normal exit).
    Deactivated,
}

struct Control {
    generation: u64,
    tracker: Tracker,
    running_since: Instant,
    /// The current generation's host, also while its `setup` runs.
    host: Option<Arc<InstanceHost>>,
    /// The loop thread of a generation (the generation, its handle).
    loop_thread: Option<(u64, JoinHandle<()>)>,
}

/// One service or condition: the slot its generations succeed each other in.
pub struct Unit {
    /// Name in logs and the journal.
    pub name: String,
    kind: ExportKind,
    top_level: bool,
    /// Its library: replaced by a hot reload.
    library: ArcSwap<Library>,
    export: String,
    config_json: String,
    policy: Policy,
    live: ArcSwapOption<Live>,
    state: AtomicU8,
    has_main: AtomicBool,
    loop_running: AtomicBool,
    control: Mutex<Control>,
    stash: Arc<Mutex<Option<Vec<u8>>>>,
}

impl Unit {
    fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    fn set_state(&self, s: State) {
        self.state.store(s as u8, Ordering::Release);
    }
}

/// Where a (replacement) driver starts.
#[derive(Debug, Clone, Copy)]
enum Resume {
    /// Set up units from this index on.
    Setup(usize),
    /// Run the main loop from this step of the current iteration.
    Run(usize),
    /// Finalize the units before this index, last first.
    Shutdown(usize),
}

const PHASE_SETUP: u64 = 0;
const PHASE_RUN: u64 = 1;
const PHASE_SHUTDOWN: u64 = 2;

fn position(phase: u64, index: usize) -> u64 {
    (phase << 30) | (index as u64 & 0x3fff_ffff)
}

/// The calling thread left because the watchdog abandoned its call.
#[derive(Debug)]
pub struct Abandoned;

/// A restart or stop job run by a worker thread.
#[derive(Debug, Clone)]
enum Op {
    /// Retire, wait for the loop, finalize (unless hung) and fence the current instance.
    Stop(usize),
    /// Wait until then (or until the context stops).
    Delay(Instant),
    /// Build, set up and install a new generation.
    Start(usize),
    /// Leave the unit in this final state.
    Settle(usize, State),
}

/// A running context; see the module docs.
pub struct Core {
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
}

impl Core {
    /// Builds a context from its plan; [`Core::start`] runs it.
    pub fn new(
        index: usize,
        plan: ContextPlan,
        gate: Arc<StartGate>,
        events: Sender<ContextEvent>,
    ) -> Arc<Core> {
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
                let live = Live::new(Arc::clone(&host), u.initial);
                Unit {
                    name: u.name,
                    kind: u.kind,
                    top_level: u.top_level,
                    library: ArcSwap::new(u.library),
                    export: u.export,
                    config_json: u.config_json,
                    policy: u.policy,
                    live: ArcSwapOption::from_pointee(live),
                    state: AtomicU8::new(State::Pending as u8),
                    has_main: AtomicBool::new(u.kind == ExportKind::Service),
                    loop_running: AtomicBool::new(false),
                    control: Mutex::new(Control {
                        generation: 1,
                        tracker: Tracker::default(),
                        running_since: now,
                        host: Some(host),
                        loop_thread: None,
                    }),
                    stash,
                }
            })
            .collect();
        Arc::new(Core {
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
        })
    }

    /// Starts the context's driver thread.
    pub fn start(self: &Arc<Self>) -> std::io::Result<()> {
        self.spawn_driver(Resume::Setup(0), 0)
    }

    /// How long stopping this context may take at most, as a backstop.
    pub fn shutdown_budget(&self) -> Duration {
        self.units
            .iter()
            .map(|u| u.policy.shutdown_timeout.saturating_mul(2))
            .fold(Duration::from_secs(1), Duration::saturating_add)
    }

    fn spawn_driver(self: &Arc<Self>, resume: Resume, epoch: u64) -> std::io::Result<()> {
        let core = Arc::clone(self);
        std::thread::Builder::new()
            .name(threads::thread_name("ctx-", &self.shared.name))
            .spawn(move || drive(&core, epoch, resume))
            .map(drop)
            .inspect_err(|e| {
                let what = format!("the driver of context {}", self.shared.name);
                threads::spawn_failed(&what, e);
            })
    }

    /// Delivers `e` to the host's event sinks.
    pub fn emit(&self, e: Event) {
        self.shared.events.emit(&e);
    }

    /// Who an event about generation `generation` of unit `u` is about.
    pub fn unit_id(&self, u: usize, generation: u64) -> event::Unit {
        event::Unit::new(&self.shared.name, &self.units[u].name, generation)
    }

    /// The units restarted along with `u` under the context's strategy, in manifest order.
    fn group(&self, u: usize) -> Vec<usize> {
        let include = |i: usize| {
            i == u
                || (self.units[i].state() == State::Ready
                    && self.units[i].policy.restart != Restart::Never)
        };
        match self.strategy {
            Strategy::OneForOne => vec![u],
            Strategy::OneForAll => (0..self.units.len()).filter(|i| include(*i)).collect(),
            Strategy::RestForOne => (u..self.units.len()).filter(|i| include(*i)).collect(),
        }
    }

    /// An instance of unit `u` stopped serving: apply the restart policy.
    /// Safe to call from any thread, and more than once: only the first
    /// report of a generation counts.
    fn exit(self: &Arc<Self>, u: usize, generation: u64, how: Exit) {
        let unit = &self.units[u];
        let mut c = unit.control.lock();
        let state = unit.state();
        if c.generation != generation || !matches!(state, State::Ready | State::Pending) {
            return;
        }
        let now = Instant::now();
        let failure = !matches!(how, Exit::Deactivated);
        match &how {
            Exit::Failed { entry, reason } => {
                self.emit(Event::Failed {
                    unit: self.unit_id(u, generation),
                    entry: entry.name().into(),
                    reason: reason.clone(),
                });
            }
            Exit::Hung { entry, limit } => {
                let limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
                self.emit(Event::Hung {
                    unit: self.unit_id(u, generation),
                    entry: entry.name().into(),
                    limit_ms: Some(limit_ms),
                });
                tracing::warn!(
                    context = %self.shared.name,
                    service = %unit.name,
                    "{} hung (no return within {}); abandoning generation {generation}",
                    entry.name(),
                    humantime::format_duration(*limit)
                );
                if let Some(h) = &c.host {
                    h.fence();
                }
                self.emit(Event::Abandoned {
                    unit: self.unit_id(u, generation),
                    entry: entry.name().into(),
                });
                unit.loop_running.store(false, Ordering::Relaxed);
            }
            Exit::Deactivated => {
                self.emit(Event::Deactivated {
                    unit: self.unit_id(u, generation),
                });
                tracing::debug!(context = %self.shared.name, service = %unit.name, "deactivated");
            }
        }
        unit.set_state(State::Stopping);
        if self.shared.stopping() {
            // The driver's shutdown stops and finalizes every Ready or
            // Stopping unit in reverse order; a worker would race it.
            if matches!(how, Exit::Hung { .. }) {
                self.abandoned.store(true, Ordering::SeqCst);
            }
            drop(c);
            self.shared.wake.notify();
            return;
        }
        let decision = {
            let since = c.running_since;
            c.tracker.on_exit(&unit.policy, failure, since, now)
        };
        let in_window = c.tracker.restarts_in_window();
        drop(c);
        let ops = match decision {
            Decision::Restart { delay, attempt } => {
                // Claim each sibling under its own lock, so that a sibling
                // reporting its own exit at the same time restarts only once.
                let group: Vec<usize> = self
                    .group(u)
                    .into_iter()
                    .filter(|&g| {
                        if g == u {
                            return true;
                        }
                        let _claim = self.units[g].control.lock();
                        self.units[g]
                            .state
                            .compare_exchange(
                                State::Ready as u8,
                                State::Stopping as u8,
                                Ordering::AcqRel,
                                Ordering::Acquire,
                            )
                            .is_ok()
                    })
                    .collect();
                for &g in &group {
                    if g != u {
                        let sibling_gen = self.units[g].control.lock().generation;
                        self.emit(Event::Stopping {
                            unit: self.unit_id(g, sibling_gen),
                            because: unit.name.clone(),
                        });
                    }
                }
                let names: Vec<String> =
                    group.iter().map(|g| self.units[*g].name.clone()).collect();
                let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                self.emit(Event::Restarting {
                    unit: self.unit_id(u, generation),
                    delay_ms,
                    attempt,
                    restarts_in_window: u64::try_from(in_window).unwrap_or(u64::MAX),
                    group: names,
                });
                tracing::info!(
                    context = %self.shared.name,
                    service = %unit.name,
                    "restarting in {} (restart {in_window} of at most {} within {})",
                    humantime::format_duration(delay),
                    unit.policy.max_restarts,
                    humantime::format_duration(unit.policy.restart_window)
                );
                let mut ops: Vec<Op> = group.iter().rev().map(|g| Op::Stop(*g)).collect();
                ops.push(Op::Delay(now + delay));
                ops.extend(group.iter().map(|g| Op::Start(*g)));
                ops
            }
            Decision::Stay => {
                let end = if failure && !self.shared.stopping() {
                    self.failed.store(true, Ordering::SeqCst);
                    self.emit(Event::Stopped {
                        unit: self.unit_id(u, generation),
                        reason: "restart policy".into(),
                    });
                    State::Failed
                } else {
                    State::Ended
                };
                vec![Op::Stop(u), Op::Settle(u, end)]
            }
            Decision::GiveUp => {
                self.failed.store(true, Ordering::SeqCst);
                let action = match unit.policy.on_give_up {
                    GiveUp::StopService => "stop_service",
                    GiveUp::StopContext => "stop_context",
                    GiveUp::ExitHost => "exit_host",
                };
                self.emit(Event::GaveUp {
                    unit: self.unit_id(u, generation),
                    action: action.into(),
                    restarts_in_window: u64::try_from(in_window).unwrap_or(u64::MAX),
                });
                tracing::error!(
                    context = %self.shared.name,
                    service = %unit.name,
                    "gave up after {in_window} restarts within {}; action: {action}",
                    humantime::format_duration(unit.policy.restart_window)
                );
                match unit.policy.on_give_up {
                    GiveUp::StopService => {}
                    GiveUp::StopContext => self.shared.request_stop(),
                    GiveUp::ExitHost => {
                        let _ = self.events.send(ContextEvent::ExitHost(self.index));
                    }
                }
                vec![Op::Stop(u), Op::Settle(u, State::Failed)]
            }
        };
        self.spawn_worker(ops, 0, true);
        self.shared.wake.notify();
    }

    fn spawn_worker(self: &Arc<Self>, ops: Vec<Op>, from: usize, counted: bool) {
        if counted {
            *self.workers.lock() += 1;
        }
        let core = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name(threads::thread_name("restart-", &self.shared.name))
            .spawn(move || work(&core, &ops, from));
        if let Err(e) = spawned {
            let what = format!("a restart worker of context {}", self.shared.name);
            threads::spawn_failed(&what, &e);
            self.worker_done();
        }
    }

    fn worker_done(&self) {
        let mut n = self.workers.lock();
        *n = n.saturating_sub(1);
        self.workers_done.notify_all();
    }

    /// Waits (at most until `deadline`) for the restart workers to finish.
    fn wait_workers(&self, deadline: Instant) {
        let mut n = self.workers.lock();
        while *n > 0 {
            if self.workers_done.wait_until(&mut n, deadline).timed_out() {
                return;
            }
        }
    }

    /// The watchdog found the driver's call hung: abandon it, hand over to a new driver.
    fn driver_hung(self: &Arc<Self>, epoch: u64, h: Hung) {
        if self
            .driver_epoch
            .compare_exchange(epoch, epoch + 1, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return;
        }
        let phase = h.position >> 30;
        let index = usize::try_from(h.position & 0x3fff_ffff).unwrap_or(0);
        let resume = match phase {
            PHASE_SETUP => {
                self.exit(
                    h.unit,
                    h.generation,
                    Exit::Hung {
                        entry: h.entry,
                        limit: h.limit,
                    },
                );
                Resume::Setup(index + 1)
            }
            PHASE_RUN => {
                self.exit(
                    h.unit,
                    h.generation,
                    Exit::Hung {
                        entry: h.entry,
                        limit: h.limit,
                    },
                );
                Resume::Run(index + 1)
            }
            _ => {
                self.finalize_hung(h, true);
                Resume::Shutdown(index)
            }
        };
        if self.spawn_driver(resume, epoch + 1).is_err() {
            // Journaled and logged, and the supervisor stops everything; no
            // thread is left to finalize this context's instances.
            tracing::error!(context = %self.shared.name, "no driver left: the context ends without finalizing");
            self.abandoned.store(true, Ordering::SeqCst);
            self.ended.store(true, Ordering::SeqCst);
            let _ = self.events.send(ContextEvent::Ended(self.index));
        }
    }

    /// A `finalize` overran `shutdown_timeout`: abandon that instance.
    fn finalize_hung(&self, h: Hung, stopping_context: bool) {
        let unit = &self.units[h.unit];
        if let Some(host) = &unit.control.lock().host {
            host.fence();
        }
        if self.shared.stopping() {
            self.abandoned.store(true, Ordering::SeqCst);
        }
        self.emit(Event::Hung {
            unit: self.unit_id(h.unit, h.generation),
            entry: "finalize".into(),
            limit_ms: None,
        });
        self.emit(Event::Abandoned {
            unit: self.unit_id(h.unit, h.generation),
            entry: "finalize".into(),
        });
        tracing::error!(
            context = %self.shared.name,
            service = %unit.name,
            "finalize did not return within {}: abandoned, not finalized",
            humantime::format_duration(h.limit)
        );
        if stopping_context {
            unit.set_state(State::Ended);
        }
    }

    /// Runs one call of unit `u`'s instance under the watchdog if `limit` is set.
    fn watched<T>(
        slot: &Slot,
        u: usize,
        generation: u64,
        entry: Entry,
        limit: Option<Duration>,
        pos: u64,
        call: impl FnOnce() -> CallResult<T>,
    ) -> Result<CallResult<T>, Abandoned> {
        match limit {
            None => Ok(call()),
            Some(limit) => {
                let c = slot.begin_ms(u, generation, entry, limit_ms(limit), pos);
                let r = call();
                if slot.end(c) { Ok(r) } else { Err(Abandoned) }
            }
        }
    }

    /// Retires the current instance of `u`, waits for its loop, finalizes it
    /// (unless it hung) and fences it.
    fn stop_instance(&self, u: usize, slot: &Slot, pos: u64) -> Result<(), Abandoned> {
        let unit = &self.units[u];
        let Some(mut live) = unit.live.swap(None) else {
            return Ok(());
        };
        live.host.retired.store(true, Ordering::SeqCst);
        self.shared.wake.notify();
        let generation = live.host.generation;
        let loop_thread = {
            let mut c = unit.control.lock();
            match &c.loop_thread {
                Some((g, _)) if *g == generation => c.loop_thread.take().map(|(_, t)| t),
                _ => None,
            }
        };
        if live.host.is_fenced() {
            // Hung: its threads are abandoned (the loop handle is dropped, detaching it).
            return Ok(());
        }
        let deadline = Instant::now() + unit.policy.shutdown_timeout;
        if let Some(t) = loop_thread {
            self.wait_loop_done(&live, deadline);
            if live.loop_done.load(Ordering::SeqCst) {
                let _ = t.join();
            } else {
                self.abandon_on_stop(u, &live, "loop");
                return Ok(());
            }
        }
        // Someone may still be in a call (the driver in `main`): let it return.
        while Arc::strong_count(&live) > 1 {
            if Instant::now() >= deadline {
                self.abandon_on_stop(u, &live, "main");
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let Some(obj) = Arc::get_mut(&mut live) else {
            self.abandon_on_stop(u, &live, "main");
            return Ok(());
        };
        let r = Core::watched(
            slot,
            u,
            generation,
            Entry::Finalize,
            Some(unit.policy.shutdown_timeout),
            pos,
            || obj.finalize(),
        )?;
        match classify(&live.host, "finalize", r) {
            Classified::Failed(reason) => {
                self.emit(Event::Failed {
                    unit: self.unit_id(u, generation),
                    entry: "finalize".into(),
                    reason,
                });
            }
            _ => self.emit(Event::Finalized {
                unit: self.unit_id(u, generation),
            }),
        }
        live.host.fence();
        Ok(())
    }

    /// Waits (at most until `deadline`) for a retired instance's loop thread
    /// to leave; true if it did. The loop thread wakes us when it ends.
    fn wait_loop_done(&self, live: &Live, deadline: Instant) -> bool {
        loop {
            let seen = self.shared.wake.epoch();
            if live.loop_done.load(Ordering::SeqCst) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            self.shared.wake.wait_until(seen, Some(deadline));
        }
    }

    fn abandon_on_stop(&self, u: usize, live: &Live, entry: &str) {
        let unit = &self.units[u];
        live.host.fence();
        // A watched loop call is counted by the watchdog when it declares it
        // hung; an unwatched one is counted here, once, unless it just left.
        if entry == "loop"
            && unit.policy.watchdog.is_none()
            && live
                .loop_fate
                .compare_exchange(
                    LOOP_RUNNING,
                    LOOP_ABANDONED,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                )
                .is_ok()
        {
            watchdog::thread_abandoned();
        }
        if self.shared.stopping() {
            self.abandoned.store(true, Ordering::SeqCst);
        }
        self.emit(Event::Abandoned {
            unit: self.unit_id(u, live.host.generation),
            entry: entry.into(),
        });
        tracing::error!(
            context = %self.shared.name,
            service = %unit.name,
            "its {entry} call did not return within {}: abandoned, not finalized",
            humantime::format_duration(unit.policy.shutdown_timeout)
        );
    }

    /// Builds, sets up and installs a new generation of `u`.
    fn start_instance(self: &Arc<Self>, u: usize, slot: &Slot, pos: u64) -> Result<(), Abandoned> {
        let unit = &self.units[u];
        let generation = {
            let mut c = unit.control.lock();
            c.generation += 1;
            c.host = None;
            c.generation
        };
        unit.set_state(State::Pending);
        let library = unit.library.load_full();
        let object = match construct(&library, unit.kind, &unit.export, &unit.config_json) {
            Ok(o) => o,
            Err(e) => {
                self.exit(
                    u,
                    generation,
                    Exit::Failed {
                        entry: Entry::Setup,
                        reason: format!(
                            "construction failed: {}",
                            crate::manifest::config::without_position(e.message.as_str())
                        ),
                    },
                );
                return Ok(());
            }
        };
        let host = self.new_host(u, library, generation);
        unit.control.lock().host = Some(Arc::clone(&host));
        let mut live = Live::new(host, object);
        let r = Core::watched(
            slot,
            u,
            generation,
            Entry::Setup,
            Some(unit.policy.startup_timeout),
            pos,
            || live.setup(),
        )?;
        if let Classified::Failed(reason) = classify(&live.host, "setup", r) {
            live.host.fence();
            self.exit(
                u,
                generation,
                Exit::Failed {
                    entry: Entry::Setup,
                    reason,
                },
            );
            return Ok(());
        }
        self.gate.wait_open();
        if self.shared.stopping() {
            // The context began stopping while this instance was set up: it
            // was set up, so it is finalized, now, instead of serving.
            let limit = Some(unit.policy.shutdown_timeout);
            let r = Core::watched(slot, u, generation, Entry::Finalize, limit, pos, || {
                live.finalize()
            })?;
            if let Classified::Failed(reason) = classify(&live.host, "finalize", r) {
                self.emit(Event::Failed {
                    unit: self.unit_id(u, generation),
                    entry: "finalize".into(),
                    reason,
                });
            } else {
                self.emit(Event::Finalized {
                    unit: self.unit_id(u, generation),
                });
            }
            live.host.fence();
            unit.set_state(State::Ended);
            return Ok(());
        }
        self.install(u, live);
        Ok(())
    }

    /// Puts a set-up instance in service.
    fn install(self: &Arc<Self>, u: usize, live: Live) {
        let unit = &self.units[u];
        let generation = live.host.generation;
        if unit.control.lock().generation != generation {
            // A newer generation was started meanwhile: this one never serves.
            live.host.fence();
            return;
        }
        let live = Arc::new(live);
        unit.live.store(Some(Arc::clone(&live)));
        unit.has_main
            .store(unit.kind == ExportKind::Service, Ordering::Relaxed);
        unit.control.lock().running_since = Instant::now();
        unit.set_state(State::Ready);
        self.emit(Event::Started {
            unit: self.unit_id(u, generation),
        });
        if generation > 1 {
            tracing::info!(context = %self.shared.name, service = %unit.name, "generation {generation} started");
        }
        if self.gate.open.load(Ordering::SeqCst) {
            self.start_loop(u, &live);
        }
        self.shared.wake.notify();
    }

    /// Starts the loop thread of a top-level service.
    fn start_loop(self: &Arc<Self>, u: usize, live: &Arc<Live>) {
        let unit = &self.units[u];
        if !unit.top_level || unit.kind != ExportKind::Service {
            return;
        }
        let mut c = unit.control.lock();
        let generation = live.host.generation;
        if c.generation != generation
            || c.loop_thread
                .as_ref()
                .is_some_and(|(g, _)| *g == generation)
        {
            return;
        }
        let core = Arc::clone(self);
        let l = Arc::clone(live);
        unit.loop_running.store(true, Ordering::SeqCst);
        live.loop_fate.store(LOOP_RUNNING, Ordering::SeqCst);
        match std::thread::Builder::new()
            .name(threads::thread_name("loop-", &unit.name))
            .spawn(move || loop_thread(&core, u, &l))
        {
            // A previous generation's handle, if any, belongs to an abandoned thread: detach it.
            Ok(t) => c.loop_thread = Some((generation, t)),
            Err(e) => {
                unit.loop_running.store(false, Ordering::SeqCst);
                let what = format!("the loop thread of {}/{}", self.shared.name, unit.name);
                threads::spawn_failed(&what, &e);
            }
        }
    }

    /// Is anything left that can run?
    fn alive(&self) -> bool {
        let unit_alive = |u: usize| {
            let unit = &self.units[u];
            match unit.state() {
                State::Ready => {
                    unit.has_main.load(Ordering::Relaxed)
                        || unit.loop_running.load(Ordering::Relaxed)
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

/// What an old instance hands its successor: a schema version and bytes, if any.
pub type ExportedState = Option<(u32, Vec<u8>)>;

/// A new instance built and set up for a hot reload, not yet serving.
pub struct Prepared {
    unit: usize,
    generation: u64,
    live: Live,
}

/// An old instance paused for a hot reload: its loop stopped, its `main`
/// no longer called, but still set up and able to resume.
pub struct Paused {
    unit: usize,
    generation: u64,
    live: Arc<Live>,
}

impl Prepared {
    /// Its unit.
    pub fn unit(&self) -> usize {
        self.unit
    }

    /// The generation it will serve as.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

impl Paused {
    /// Its unit.
    pub fn unit(&self) -> usize {
        self.unit
    }

    /// Its generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

impl Core {
    /// The units whose library was loaded from the file at `path`. Paths
    /// are compared as absolute paths with symlinks kept: a symlink swapped
    /// to a new target is still the path the units were loaded from (units
    /// sharing a file share its `Library`, so they name it the same way).
    pub fn units_of_file(&self, path: &std::path::Path) -> Vec<usize> {
        let absolute =
            |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let target = absolute(path);
        (0..self.units.len())
            .filter(|u| absolute(&self.units[*u].library.load().path) == target)
            .collect()
    }

    /// The host handle of a new generation of unit `u`, built from `library`.
    fn new_host(&self, u: usize, library: Arc<Library>, generation: u64) -> Arc<InstanceHost> {
        let unit = &self.units[u];
        Arc::new(InstanceHost::new(
            Arc::clone(&self.shared),
            unit.name.clone(),
            library,
            unit.export.clone(),
            generation,
            Arc::clone(&unit.stash),
        ))
    }

    /// Generation `generation` of unit `u`, paused for a reload, hung in a
    /// call (its `export_state`): it exits under its restart policy (fenced,
    /// abandoned, a fresh generation started from the unit's library). The
    /// `Paused` itself stays with the abandoned thread, which is still in
    /// the call.
    pub fn hung_while_paused(self: &Arc<Self>, u: usize, generation: u64, h: Hung) {
        self.units[u].set_state(State::Ready);
        self.exit(
            u,
            generation,
            Exit::Hung {
                entry: h.entry,
                limit: h.limit,
            },
        );
    }

    /// The unit's name and export, for messages.
    pub fn unit_label(&self, u: usize) -> (&str, &str) {
        (&self.units[u].name, &self.units[u].export)
    }

    /// Does `lib` export what unit `u` needs?
    pub fn lib_has_export(&self, u: usize, lib: &Library) -> bool {
        lib.exports(self.units[u].kind, &self.units[u].export)
    }

    /// Builds and sets up a new instance of unit `u` from `lib` (the old one
    /// keeps serving). `on_host` sees the new host handle as soon as it
    /// exists, so a caller can fence it if this call is abandoned.
    pub fn prepare(
        &self,
        u: usize,
        lib: &Arc<Library>,
        slot: &Slot,
        on_host: &dyn Fn(&Arc<InstanceHost>),
    ) -> Result<Result<Prepared, String>, Abandoned> {
        let unit = &self.units[u];
        let generation = unit.control.lock().generation + 1;
        let object = match construct(lib, unit.kind, &unit.export, &unit.config_json) {
            Ok(o) => o,
            Err(e) => {
                let message = crate::manifest::config::without_position(e.message.as_str());
                return Ok(Err(format!("its config was rejected: {message}")));
            }
        };
        let host = self.new_host(u, Arc::clone(lib), generation);
        on_host(&host);
        let mut live = Live::new(host, object);
        let r = Core::watched(
            slot,
            u,
            generation,
            Entry::Setup,
            Some(unit.policy.startup_timeout),
            0,
            || live.setup(),
        )?;
        match classify(&live.host, "setup", r) {
            Classified::Failed(reason) => {
                live.host.fence();
                Ok(Err(format!("setup {reason}")))
            }
            _ => Ok(Ok(Prepared {
                unit: u,
                generation,
                live,
            })),
        }
    }

    /// Pauses unit `u`'s serving instance: no more `main`, its loop stopped.
    pub fn pause(self: &Arc<Self>, u: usize) -> Result<Paused, String> {
        let unit = &self.units[u];
        let generation = {
            let c = unit.control.lock();
            if self.shared.stopping()
                || unit
                    .state
                    .compare_exchange(
                        State::Ready as u8,
                        State::Stopping as u8,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_err()
            {
                return Err(String::from(
                    "it is not serving (restarting, stopping or stopped)",
                ));
            }
            c.generation
        };
        // Taken out of service: no new `main` starts, and once the count
        // drops to one no call is in flight.
        let Some(live) = unit.live.swap(None) else {
            unit.set_state(State::Ready);
            return Err(String::from("it is not serving"));
        };
        live.host.retired.store(true, Ordering::SeqCst);
        self.shared.wake.notify();
        let loop_thread = {
            let mut c = unit.control.lock();
            match &c.loop_thread {
                Some((g, _)) if *g == generation => c.loop_thread.take().map(|(_, t)| t),
                _ => None,
            }
        };
        if let Some(t) = loop_thread {
            let deadline = Instant::now() + unit.policy.shutdown_timeout;
            self.wait_loop_done(&live, deadline);
            if !live.loop_done.load(Ordering::SeqCst) {
                // Put everything back: the loop is still in a call.
                unit.control.lock().loop_thread = Some((generation, t));
                live.host.retired.store(false, Ordering::SeqCst);
                unit.live.store(Some(live));
                unit.set_state(State::Ready);
                return Err(String::from(
                    "its loop call did not return within shutdown_timeout",
                ));
            }
            let _ = t.join();
        }
        let deadline = Instant::now() + unit.policy.shutdown_timeout;
        while Arc::strong_count(&live) > 1 {
            if Instant::now() >= deadline {
                live.host.retired.store(false, Ordering::SeqCst);
                live.loop_done.store(false, Ordering::SeqCst);
                unit.live.store(Some(Arc::clone(&live)));
                unit.set_state(State::Ready);
                self.start_loop(u, &live);
                return Err(String::from(
                    "its main call did not return within shutdown_timeout",
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(Paused {
            unit: u,
            generation,
            live,
        })
    }

    /// The paused instance's state for its successor (watched like `main`).
    pub fn export(
        &self,
        p: &Paused,
        slot: &Slot,
    ) -> Result<Result<ExportedState, String>, Abandoned> {
        let unit = &self.units[p.unit];
        let limit = Some(unit.policy.watchdog.unwrap_or(unit.policy.shutdown_timeout));
        let r = Core::watched(slot, p.unit, p.generation, Entry::Export, limit, 0, || {
            p.live.export_state()
        })?;
        Ok(match r {
            RResult::ROk(v) => Ok(v),
            RResult::RErr(e) => Err(format!("export_state failed: {}", e.message)),
        })
    }

    /// Hands the old state to a prepared instance.
    pub fn import(
        &self,
        new: &mut Prepared,
        state: Option<&(u32, Vec<u8>)>,
        slot: &Slot,
    ) -> Result<Result<(), String>, Abandoned> {
        let Some((version, bytes)) = state else {
            return Ok(Ok(()));
        };
        let unit = &self.units[new.unit];
        let limit = Some(unit.policy.startup_timeout);
        let r = Core::watched(
            slot,
            new.unit,
            new.generation,
            Entry::Import,
            limit,
            0,
            || new.live.import_state(*version, bytes),
        )?;
        Ok(match classify(&new.live.host, "import_state", r) {
            Classified::Failed(reason) => Err(format!("import_state {reason}")),
            _ => Ok(()),
        })
    }

    /// Rolls a paused instance back into service.
    pub fn resume(self: &Arc<Self>, p: Paused) {
        let unit = &self.units[p.unit];
        p.live.host.retired.store(false, Ordering::SeqCst);
        p.live.loop_done.store(false, Ordering::SeqCst);
        unit.live.store(Some(Arc::clone(&p.live)));
        unit.set_state(State::Ready);
        self.start_loop(p.unit, &p.live);
        self.shared.wake.notify();
    }

    /// Drops a prepared instance that will not serve: finalize it (it was set up) and fence it.
    pub fn discard(&self, mut new: Prepared, slot: &Slot) -> Result<(), Abandoned> {
        let unit = &self.units[new.unit];
        let limit = Some(unit.policy.shutdown_timeout);
        let r = Core::watched(
            slot,
            new.unit,
            new.generation,
            Entry::Finalize,
            limit,
            0,
            || new.live.finalize(),
        )?;
        classify(&new.live.host, "finalize", r);
        new.live.host.fence();
        Ok(())
    }

    /// Can the paused instance still be swapped: its context is not
    /// stopping and the unit was not restarted meanwhile?
    pub fn can_commit(&self, old: &Paused) -> bool {
        !self.shared.stopping() && self.units[old.unit].control.lock().generation == old.generation
    }

    /// The first half of committing a reload of one unit: the paused old
    /// instance is finalized (watched by `shutdown_timeout`) and fenced.
    /// [`Core::promote`] puts its successor in its place.
    pub fn retire(&self, old: Paused, slot: &Slot) -> Result<(), Abandoned> {
        let u = old.unit;
        let unit = &self.units[u];
        let mut previous = old.live;
        let deadline = Instant::now() + unit.policy.shutdown_timeout;
        while Arc::strong_count(&previous) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        match Arc::get_mut(&mut previous) {
            Some(obj) => {
                let limit = Some(unit.policy.shutdown_timeout);
                let r = Core::watched(slot, u, old.generation, Entry::Finalize, limit, 0, || {
                    obj.finalize()
                })?;
                if let Classified::Failed(reason) = classify(&previous.host, "finalize", r) {
                    self.emit(Event::Failed {
                        unit: self.unit_id(u, old.generation),
                        entry: "finalize".into(),
                        reason,
                    });
                } else {
                    self.emit(Event::Finalized {
                        unit: self.unit_id(u, old.generation),
                    });
                }
            }
            None => self.emit(Event::Abandoned {
                unit: self.unit_id(u, old.generation),
                entry: "main".into(),
            }),
        }
        previous.host.fence();
        Ok(())
    }

    /// The old instance's `finalize` in [`Core::retire`] hung: it is
    /// fenced and abandoned, not finalized (its successor still takes over).
    pub fn retire_hung(&self, h: Hung) {
        self.finalize_hung(h, false);
    }

    /// The second half of committing a reload of one unit: the new instance
    /// serves under the same name, from `lib`.
    pub fn promote(self: &Arc<Self>, new: Prepared, lib: &Arc<Library>) {
        let unit = &self.units[new.unit];
        {
            let mut c = unit.control.lock();
            c.generation = new.generation;
            c.host = Some(Arc::clone(&new.live.host));
        }
        unit.library.store(Arc::clone(lib));
        self.install(new.unit, new.live);
    }

    /// Is unit `u` over for good (ended or failed)? Such a unit just takes
    /// the new library for any later start; there is nothing to swap.
    pub fn is_over(&self, u: usize) -> bool {
        self.units[u].state().terminal()
    }

    /// Points an ended unit at a new library.
    pub fn adopt_library(&self, u: usize, lib: &Arc<Library>) {
        self.units[u].library.store(Arc::clone(lib));
    }

    /// Did unit `u` fail for good (it gave up, or failed with no restart)?
    pub fn has_failed(&self, u: usize) -> bool {
        self.units[u].state() == State::Failed
    }

    /// Revives unit `u`, which failed for good, with `lib` (a hot reload of
    /// its file): its restart history is cleared and a new generation
    /// starts, journaled as `revived`. False (the unit just takes the
    /// library for any later start) when its context is stopping or over.
    pub fn revive(self: &Arc<Self>, u: usize, lib: &Arc<Library>, file: &str) -> bool {
        let unit = &self.units[u];
        unit.library.store(Arc::clone(lib));
        let generation = {
            let mut c = unit.control.lock();
            if self.shared.stopping()
                || self.ended.load(Ordering::SeqCst)
                || unit
                    .state
                    .compare_exchange(
                        State::Failed as u8,
                        State::Down as u8,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_err()
            {
                drop(c);
                tracing::warn!(
                    context = %self.shared.name,
                    service = %unit.name,
                    "not revived by the reload of {file}: its context is stopping or has ended"
                );
                return false;
            }
            c.tracker = Tracker::default();
            c.generation
        };
        // It no longer counts as failed (the exit code); others still may.
        let others = self.units.iter().any(|x| x.state() == State::Failed);
        self.failed.store(others, Ordering::SeqCst);
        self.emit(Event::Revived {
            unit: self.unit_id(u, generation),
            file: file.into(),
        });
        tracing::info!(
            context = %self.shared.name,
            service = %unit.name,
            "revived by the reload of {file} (its restart history cleared)"
        );
        self.spawn_worker(vec![Op::Start(u)], 0, true);
        self.shared.wake.notify();
        true
    }
}

/// What a serving call came to.
enum Served<T> {
    /// The unit was not serving: nothing was called.
    NotServing,
    /// The call returned this.
    Returned(T),
    /// The call failed, or the entry point is not implemented.
    Failed,
}

enum Classified {
    Ok,
    Unimplemented,
    Failed(String),
}

/// Logs a failed call and says what it came to.
fn classify<T>(host: &InstanceHost, entry: &str, r: CallResult<T>) -> Classified {
    match r {
        RResult::ROk(_) => Classified::Ok,
        RResult::RErr(e) if e.kind == CallErrorKind::Unimplemented => Classified::Unimplemented,
        RResult::RErr(e) => {
            host.report_failure(entry, &e);
            let what = if e.kind == CallErrorKind::Panicked {
                "panicked"
            } else {
                "failed"
            };
            Classified::Failed(format!("{what}: {}", e.message))
        }
    }
}

struct Driver<'a> {
    core: &'a Arc<Core>,
    slot: &'a Watched,
    results: Vec<bool>,
}

fn drive(core: &Arc<Core>, epoch: u64, resume: Resume) {
    let weak: Weak<Core> = Arc::downgrade(core);
    let slot = Slot::register(move |h| {
        if let Some(c) = weak.upgrade() {
            c.driver_hung(epoch, h);
        }
    });
    let mut d = Driver {
        core,
        slot: &slot,
        results: Vec::new(),
    };
    if d.run(resume).is_ok() {
        core.ended.store(true, Ordering::SeqCst);
        core.emit(Event::ContextEnded {
            context: core.shared.name.clone(),
        });
        let _ = core.events.send(ContextEvent::Ended(core.index));
    }
}

impl Driver<'_> {
    fn run(&mut self, resume: Resume) -> Result<(), Abandoned> {
        let core = self.core;
        let mut shutdown_from = core.units.len();
        match resume {
            Resume::Setup(i) => {
                self.setup_from(i)?;
                core.emit(Event::ContextReady {
                    context: core.shared.name.clone(),
                });
                if core.gate.arrive(core.index) {
                    let _ = core.events.send(ContextEvent::AllReady);
                }
                core.gate.wait_open();
                if !core.shared.stopping() {
                    for u in 0..core.units.len() {
                        if core.units[u].state() == State::Ready
                            && let Some(live) = core.units[u].live.load_full()
                        {
                            core.start_loop(u, &live);
                        }
                    }
                    self.main_loop(0)?;
                }
            }
            Resume::Run(j) => self.main_loop(j)?,
            Resume::Shutdown(i) => shutdown_from = i,
        }
        if !matches!(resume, Resume::Shutdown(_)) {
            core.emit(Event::ContextStopping {
                context: core.shared.name.clone(),
            });
            let _ = core.events.send(ContextEvent::Stopping(core.index));
        }
        self.shutdown_from(shutdown_from)
    }

    fn setup_from(&mut self, first: usize) -> Result<(), Abandoned> {
        let core = self.core;
        for u in first..core.units.len() {
            if core.shared.stopping() {
                break;
            }
            let unit = &core.units[u];
            if unit.state() != State::Pending {
                continue;
            }
            let Some(mut live) = unit.live.swap(None) else {
                continue;
            };
            let generation = live.host.generation;
            let Some(obj) = Arc::get_mut(&mut live) else {
                continue;
            };
            let limit = Some(unit.policy.startup_timeout);
            let r = Core::watched(
                self.slot,
                u,
                generation,
                Entry::Setup,
                limit,
                position(PHASE_SETUP, u),
                || obj.setup(),
            )?;
            match classify(&live.host, "setup", r) {
                Classified::Failed(reason) => {
                    live.host.fence();
                    core.exit(
                        u,
                        generation,
                        Exit::Failed {
                            entry: Entry::Setup,
                            reason,
                        },
                    );
                }
                _ => {
                    unit.live.store(Some(Arc::clone(&live)));
                    unit.control.lock().running_since = Instant::now();
                    unit.set_state(State::Ready);
                    core.emit(Event::Started {
                        unit: core.unit_id(u, generation),
                    });
                }
            }
        }
        Ok(())
    }

    /// Calls one entry point (`main` or `check`) of unit `u` if it is
    /// serving, watched, and reports a failure or a deactivation.
    fn serve<T>(
        &mut self,
        u: usize,
        step: usize,
        entry: Entry,
        call: impl FnOnce(&Live) -> CallResult<T>,
    ) -> Result<Served<T>, Abandoned> {
        let core = self.core;
        let unit = &core.units[u];
        if unit.state() != State::Ready {
            return Ok(Served::NotServing);
        }
        let guard = unit.live.load();
        let Some(live) = guard.as_ref() else {
            return Ok(Served::NotServing);
        };
        let generation = live.host.generation;
        let limit = unit.policy.watchdog;
        let r = Core::watched(
            self.slot,
            u,
            generation,
            entry,
            limit,
            position(PHASE_RUN, step),
            || call(live),
        )?;
        let (served, failed) = match r {
            RResult::ROk(v) => (Served::Returned(v), None),
            RResult::RErr(e) => match classify(&live.host, entry.name(), RResult::<(), _>::RErr(e))
            {
                Classified::Failed(reason) => (Served::Failed, Some(reason)),
                _ => {
                    // Not implemented: a service without `main` is not asked again.
                    if entry == Entry::Main {
                        unit.has_main.store(false, Ordering::Relaxed);
                    }
                    (Served::Failed, None)
                }
            },
        };
        let deactivated = live.host.deactivated();
        drop(guard);
        if let Some(reason) = failed {
            core.exit(u, generation, Exit::Failed { entry, reason });
        } else if deactivated {
            core.exit(u, generation, Exit::Deactivated);
        }
        Ok(served)
    }

    /// Calls `main` of unit `u` if it is serving and has one; true if called.
    fn call_main(&mut self, u: usize, step: usize) -> Result<bool, Abandoned> {
        if !self.core.units[u].has_main.load(Ordering::Relaxed) {
            return Ok(false);
        }
        Ok(!matches!(
            self.serve(u, step, Entry::Main, Live::main)?,
            Served::NotServing
        ))
    }

    /// Evaluates condition `u`; false if it is not serving or failed.
    fn check(&mut self, u: usize, step: usize) -> Result<bool, Abandoned> {
        Ok(matches!(
            self.serve(u, step, Entry::Check, Live::check)?,
            Served::Returned(true)
        ))
    }

    fn main_loop(&mut self, mut start: usize) -> Result<(), Abandoned> {
        let core = self.core;
        let mut beats = core.heartbeat.load(Ordering::Relaxed);
        loop {
            let started = Instant::now();
            // Taken before anything is checked, so a change during the
            // iteration (a loop ending, a restart) is never missed.
            let seen = core.shared.wake.epoch();
            // A driver resuming mid-iteration skipped the first steps: what
            // it waits for may already have happened, so it must not sleep.
            let mut worked = start != 0;
            for step in start..core.steps.len() {
                if core.shared.stopping() {
                    return Ok(());
                }
                match &core.steps[step] {
                    StepPlan::Service(u) => worked |= self.call_main(*u, step)?,
                    StepPlan::Trigger {
                        name,
                        mode,
                        conditions,
                        stack,
                    } => {
                        self.results.clear();
                        for &c in conditions {
                            let v = self.check(c, step)?;
                            self.results.push(v);
                            worked = true;
                        }
                        if mode.fires(self.results.iter().copied()) {
                            tracing::trace!(context = %core.shared.name, trigger = %name, "fired");
                            for &s in stack {
                                if core.shared.stopping() {
                                    return Ok(());
                                }
                                self.call_main(s, step)?;
                            }
                        }
                    }
                }
            }
            start = 0;
            beats = beats.wrapping_add(1);
            core.heartbeat.store(beats, Ordering::Relaxed);
            if !core.alive() {
                tracing::debug!(context = %core.shared.name, "nothing left to run");
                return Ok(());
            }
            self.pace(started, seen, worked);
        }
    }

    /// Waits for the next iteration: the rest of the period, or, when the
    /// last iteration had nothing to call, until something changes.
    fn pace(&self, started: Instant, seen: u64, worked: bool) {
        let core = self.core;
        let wake = &core.shared.wake;
        if !worked {
            if !core.shared.stopping() {
                core.idle.store(true, Ordering::Relaxed);
                wake.wait_until(seen, None);
                core.idle.store(false, Ordering::Relaxed);
            }
            return;
        }
        if core.period.is_zero() {
            return;
        }
        let next = started + core.period;
        core.idle.store(true, Ordering::Relaxed);
        loop {
            let seen = wake.epoch();
            if core.shared.stopping() || Instant::now() >= next {
                break;
            }
            wake.wait_until(seen, Some(next));
        }
        core.idle.store(false, Ordering::Relaxed);
    }

    fn shutdown_from(&mut self, next: usize) -> Result<(), Abandoned> {
        let core = self.core;
        core.shared.stop.store(true, Ordering::SeqCst);
        core.shared.wake.notify();
        let longest = core
            .units
            .iter()
            // A worker may be in a `setup` or a `finalize`, each bounded.
            .map(|u| u.policy.shutdown_timeout.max(u.policy.startup_timeout))
            .max()
            .unwrap_or_default();
        core.wait_workers(Instant::now() + longest + Duration::from_millis(100));
        for u in (0..next).rev() {
            let unit = &core.units[u];
            if matches!(unit.state(), State::Ready | State::Stopping) {
                core.stop_instance(u, self.slot, position(PHASE_SHUTDOWN, u))?;
                unit.set_state(State::Ended);
            }
        }
        Ok(())
    }
}

/// The body of a worker thread: runs `ops` from `from` on.
fn work(core: &Arc<Core>, ops: &[Op], from: usize) {
    let weak = Arc::downgrade(core);
    let plan: Vec<Op> = ops.to_vec();
    let slot = Slot::register(move |h| {
        let Some(c) = weak.upgrade() else { return };
        let k = usize::try_from(h.position).unwrap_or(usize::MAX);
        match plan.get(k) {
            Some(Op::Stop(_)) => c.finalize_hung(h, false),
            Some(Op::Start(_)) => c.exit(
                h.unit,
                h.generation,
                Exit::Hung {
                    entry: h.entry,
                    limit: h.limit,
                },
            ),
            _ => {}
        }
        // Carry on with the rest of the job on a new worker (it inherits this
        // one's place in the count).
        c.spawn_worker(plan.clone(), k + 1, false);
    });
    for (k, op) in ops.iter().enumerate().skip(from) {
        let r = match op {
            Op::Stop(u) => core.stop_instance(*u, &slot, k as u64).map(|()| {
                if core.units[*u].state() == State::Stopping {
                    core.units[*u].set_state(State::Down);
                }
            }),
            Op::Delay(until) => {
                loop {
                    let seen = core.shared.wake.epoch();
                    if core.shared.stopping() || Instant::now() >= *until {
                        break;
                    }
                    core.shared.wake.wait_until(seen, Some(*until));
                }
                Ok(())
            }
            Op::Start(u) => {
                if core.shared.stopping() {
                    core.units[*u].set_state(State::Ended);
                    Ok(())
                } else {
                    core.start_instance(*u, &slot, k as u64)
                }
            }
            Op::Settle(u, s) => {
                core.units[*u].set_state(*s);
                Ok(())
            }
        };
        if r.is_err() {
            // Abandoned by the watchdog; a replacement worker goes on.
            return;
        }
    }
    core.shared.wake.notify();
    core.worker_done();
}

/// The body of a service's loop thread.
fn loop_thread(core: &Arc<Core>, u: usize, live: &Arc<Live>) {
    let unit = &core.units[u];
    let generation = live.host.generation;
    let weak = Arc::downgrade(core);
    let slot = Slot::register(move |h| {
        if let Some(c) = weak.upgrade() {
            c.exit(
                h.unit,
                h.generation,
                Exit::Hung {
                    entry: h.entry,
                    limit: h.limit,
                },
            );
        }
    });
    let mut failed = None;
    while !core.shared.stopping() && !live.host.retired() && !live.host.deactivated() {
        let Ok(r) = Core::watched(
            &slot,
            u,
            generation,
            Entry::Loop,
            unit.policy.watchdog,
            0,
            || live.run_loop(),
        ) else {
            // Abandoned: the watchdog replaced this instance; leave quietly.
            return;
        };
        match classify(&live.host, "loop", r) {
            Classified::Ok => {}
            Classified::Unimplemented => break,
            Classified::Failed(reason) => {
                failed = Some(reason);
                break;
            }
        }
    }
    if live
        .loop_fate
        .compare_exchange(LOOP_RUNNING, LOOP_LEFT, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        // Abandoned while stopping: it no longer holds a thread.
        watchdog::abandoned_thread_returned();
    }
    live.loop_done.store(true, Ordering::SeqCst);
    if unit.control.lock().generation == generation {
        unit.loop_running.store(false, Ordering::SeqCst);
    }
    if let Some(reason) = failed {
        core.exit(
            u,
            generation,
            Exit::Failed {
                entry: Entry::Loop,
                reason,
            },
        );
    } else if live.host.deactivated() && !live.host.retired() {
        core.exit(u, generation, Exit::Deactivated);
    }
    // The context thread may be waiting for this loop to end.
    core.shared.wake.notify();
}
