//! Running one context: OTools' `Context`, with its known bugs fixed.
//!
//! Each context runs on its own thread ([`run_context`]):
//! 1. `setup` of every service and condition, in manifest order;
//! 2. wait at the [`StartGate`] until every context has set up, so no `main`
//!    anywhere runs before every `setup` returned;
//! 3. one thread per service that has a loop, calling it while the service
//!    is active;
//! 4. the main loop: each iteration calls, in manifest order, each
//!    service's `main` and each trigger (all its conditions evaluated, then
//!    its stack services' `main` if it fires), paced by `period`;
//! 5. on termination (a service asked, a signal, or nothing left to run):
//!    stop the loop threads, wait for them, and `finalize` every instance
//!    exactly once, in reverse manifest order.
//!
//! A failed or panicking call is logged with its library, export, context,
//! service and entry point; the context goes on. Deactivated services are
//! finalized as soon as their loop thread has returned.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::deploy::{ContextPlan, PlanEntry};
use crate::instance::{
    ConditionInstance, ContextShared, InstanceHost, Outcome, ServiceInstance, outcome,
};
use crate::manifest::Mode;

/// Pause of a loop thread after its loop call failed, so a loop that fails
/// at once does not spin a core writing errors.
const LOOP_FAILURE_PAUSE: Duration = Duration::from_millis(10);

/// What context threads tell the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextEvent {
    /// Every context has set up (sent once, by the last to arrive).
    AllReady,
    /// The context with this index stopped iterating and is finalizing.
    Stopping(usize),
    /// The context with this index has finalized everything and ended.
    Ended(usize),
}

/// Holds every context's main loop until all contexts have run `setup`.
pub struct StartGate {
    arrived: Mutex<usize>,
    total: usize,
    cond: Condvar,
    open: AtomicBool,
}

impl StartGate {
    /// A gate for `total` contexts.
    pub fn new(total: usize) -> StartGate {
        StartGate {
            arrived: Mutex::new(0),
            total,
            cond: Condvar::new(),
            open: AtomicBool::new(false),
        }
    }

    /// Opens the gate without waiting for the others (shutdown during startup).
    pub fn abort(&self) {
        let _guard = self.arrived.lock();
        self.open.store(true, Ordering::SeqCst);
        self.cond.notify_all();
    }

    /// Arrives and waits for the others; true for the last to arrive.
    fn arrive_and_wait(&self) -> bool {
        let mut arrived = self.arrived.lock();
        *arrived += 1;
        if *arrived >= self.total {
            self.open.store(true, Ordering::SeqCst);
            self.cond.notify_all();
            return true;
        }
        while !self.open.load(Ordering::SeqCst) {
            self.cond.wait(&mut arrived);
        }
        false
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Built, `setup` not run (or the context stopped before it).
    Pending,
    /// Set up and running.
    Ready,
    /// Asked to deactivate; finalized once its loop thread returned.
    Deactivating,
    /// `finalize` ran.
    Finalized,
    /// `setup` failed; never called again, never finalized.
    Failed,
}

struct ServiceUnit {
    inst: ServiceInstance,
    state: State,
    has_main: bool,
    /// Top-level services get a loop thread; stack services never do.
    top_level: bool,
    loop_thread: Option<LoopThread>,
}

/// A service's loop thread. `done` is set by the thread just before it
/// wakes the context thread for the last time; `JoinHandle::is_finished`
/// only turns true a little later, so waiting on it could miss the wake-up.
struct LoopThread {
    handle: JoinHandle<()>,
    done: Arc<AtomicBool>,
}

impl LoopThread {
    fn running(&self) -> bool {
        !self.done.load(Ordering::SeqCst)
    }
}

struct ConditionUnit {
    inst: ConditionInstance,
    state: State,
}

enum Unit {
    Service(ServiceUnit),
    Condition(ConditionUnit),
}

impl Unit {
    fn host(&self) -> &Arc<InstanceHost> {
        match self {
            Unit::Service(s) => &s.inst.host,
            Unit::Condition(c) => &c.inst.host,
        }
    }

    fn state(&self) -> State {
        match self {
            Unit::Service(s) => s.state,
            Unit::Condition(c) => c.state,
        }
    }

    fn set_state(&mut self, state: State) {
        if state == State::Deactivating && self.state() != State::Deactivating {
            let host = self.host();
            tracing::debug!(context = %host.context.name, service = %host.name, "deactivated");
        }
        match self {
            Unit::Service(s) => s.state = state,
            Unit::Condition(c) => c.state = state,
        }
    }
}

enum Step {
    Service(usize),
    Trigger {
        name: String,
        mode: Mode,
        conditions: Vec<usize>,
        stack: Vec<usize>,
    },
}

struct Runner {
    shared: Arc<ContextShared>,
    period: Duration,
    /// Every instance, in manifest order (a trigger's conditions, then its stack).
    units: Vec<Unit>,
    steps: Vec<Step>,
}

/// Runs a context to its end on the calling thread; see the module docs.
pub fn run_context(
    index: usize,
    plan: ContextPlan,
    gate: &StartGate,
    events: &Sender<ContextEvent>,
) {
    let mut runner = Runner::new(plan);
    let name = runner.shared.name.clone();
    tracing::debug!(context = %name, "setting up");
    runner.setup_all();
    if gate.arrive_and_wait() {
        let _ = events.send(ContextEvent::AllReady);
    }
    if !runner.shared.stopping() {
        tracing::debug!(context = %name, "running");
        runner.start_loops();
        runner.main_loop();
    }
    let _ = events.send(ContextEvent::Stopping(index));
    runner.shutdown();
    tracing::debug!(context = %name, "ended");
    let _ = events.send(ContextEvent::Ended(index));
}

impl Runner {
    fn new(plan: ContextPlan) -> Runner {
        let mut units = Vec::new();
        let mut steps = Vec::new();
        let service = |inst: ServiceInstance, top_level: bool| {
            Unit::Service(ServiceUnit {
                inst,
                state: State::Pending,
                has_main: true,
                top_level,
                loop_thread: None,
            })
        };
        for entry in plan.entries {
            match entry {
                PlanEntry::Service(s) => {
                    steps.push(Step::Service(units.len()));
                    units.push(service(s, true));
                }
                PlanEntry::Trigger(t) => {
                    let mut conditions = Vec::new();
                    for c in t.conditions {
                        conditions.push(units.len());
                        units.push(Unit::Condition(ConditionUnit {
                            inst: c,
                            state: State::Pending,
                        }));
                    }
                    let mut stack = Vec::new();
                    for s in t.stack {
                        stack.push(units.len());
                        units.push(service(s, false));
                    }
                    steps.push(Step::Trigger {
                        name: t.name,
                        mode: t.mode,
                        conditions,
                        stack,
                    });
                }
            }
        }
        Runner {
            shared: plan.shared,
            period: plan.period,
            units,
            steps,
        }
    }

    fn setup_all(&mut self) {
        for unit in &mut self.units {
            if self.shared.stopping() {
                break;
            }
            let host = Arc::clone(unit.host());
            let result = match unit {
                Unit::Service(s) => match Arc::get_mut(&mut s.inst.object) {
                    Some(obj) => host.with_handle(|h| obj.setup(h)),
                    None => unreachable_shared(&host),
                },
                Unit::Condition(c) => match Arc::get_mut(&mut c.inst.object) {
                    Some(obj) => host.with_handle(|h| obj.setup(h)),
                    None => unreachable_shared(&host),
                },
            };
            match outcome(&host, "setup", result).0 {
                Outcome::Ok | Outcome::Unimplemented => unit.set_state(State::Ready),
                Outcome::Failed => {
                    self.shared.setup_failed.store(true, Ordering::SeqCst);
                    tracing::error!(
                        context = %self.shared.name,
                        service = %host.name,
                        "setup failed: this instance will not run"
                    );
                    host.release_leases();
                    unit.set_state(State::Failed);
                }
            }
        }
    }

    fn start_loops(&mut self) {
        for unit in &mut self.units {
            let Unit::Service(s) = unit else { continue };
            if !s.top_level || s.state != State::Ready {
                continue;
            }
            let object = Arc::clone(&s.inst.object);
            let host = Arc::clone(&s.inst.host);
            let done = Arc::new(AtomicBool::new(false));
            let done_flag = Arc::clone(&done);
            let spawned = std::thread::Builder::new()
                .name(format!("loop-{}", host.name))
                .spawn(move || loop_thread(&object, &host, &done_flag));
            match spawned {
                Ok(handle) => s.loop_thread = Some(LoopThread { handle, done }),
                Err(e) => tracing::error!(
                    context = %self.shared.name,
                    service = %s.inst.host.name,
                    "cannot start the loop thread: {e}"
                ),
            }
        }
    }

    /// Calls a service's `main` if it is ready and has one; true if called.
    fn call_main(&mut self, i: usize) -> bool {
        let Unit::Service(s) = &mut self.units[i] else {
            return false;
        };
        if s.state != State::Ready || !s.has_main {
            return false;
        }
        let host = &s.inst.host;
        let r = host.with_handle(|h| s.inst.object.main(h));
        if outcome(host, "main", r).0 == Outcome::Unimplemented {
            s.has_main = false;
        }
        let deactivated = host.deactivated();
        if deactivated {
            self.units[i].set_state(State::Deactivating);
        }
        true
    }

    fn check(&mut self, i: usize) -> bool {
        let Unit::Condition(c) = &mut self.units[i] else {
            return false;
        };
        if c.state != State::Ready {
            return false;
        }
        let host = &c.inst.host;
        let r = host.with_handle(|h| c.inst.object.check(h));
        let value = outcome(host, "check", r).1.unwrap_or(false);
        if host.deactivated() {
            self.units[i].set_state(State::Deactivating);
        }
        value
    }

    fn main_loop(&mut self) {
        let mut results = Vec::new();
        loop {
            let started = Instant::now();
            // Taken before anything is checked, so a change during the
            // iteration (a loop ending, a deactivation) is never missed.
            let seen = self.shared.wake.epoch();
            let mut worked = false;
            for step in 0..self.steps.len() {
                if self.shared.stopping() {
                    return;
                }
                match &self.steps[step] {
                    Step::Service(i) => {
                        let i = *i;
                        worked |= self.call_main(i);
                    }
                    Step::Trigger { conditions, .. } => {
                        let conditions = conditions.clone();
                        results.clear();
                        for c in conditions {
                            if self.shared.stopping() {
                                return;
                            }
                            let v = self.check(c);
                            results.push(v);
                            worked = true;
                        }
                        let Step::Trigger {
                            name, mode, stack, ..
                        } = &self.steps[step]
                        else {
                            continue;
                        };
                        if mode.fires(results.iter().copied()) {
                            tracing::trace!(context = %self.shared.name, trigger = %name, "fired");
                            for s in stack.clone() {
                                if self.shared.stopping() {
                                    return;
                                }
                                self.call_main(s);
                            }
                        }
                    }
                }
            }
            self.reap();
            if !self.alive() {
                tracing::debug!(context = %self.shared.name, "nothing left to run");
                return;
            }
            self.pace(started, seen, worked);
        }
    }

    /// Waits for the next iteration: the rest of the period, or, when the
    /// last iteration had nothing to call, until something changes.
    fn pace(&self, started: Instant, seen: u64, worked: bool) {
        let wake = &self.shared.wake;
        if !worked {
            if !self.shared.stopping() {
                wake.wait_until(seen, None);
            }
            return;
        }
        if self.period.is_zero() {
            return;
        }
        let next = started + self.period;
        while !self.shared.stopping() && Instant::now() < next {
            let seen = wake.epoch();
            wake.wait_until(seen, Some(next));
        }
    }

    /// Is there anything left that can run: a service with a `main` or a
    /// running loop, a condition, or a deactivation still to finish?
    fn alive(&self) -> bool {
        self.steps.iter().any(|step| match step {
            Step::Service(i) => match &self.units[*i] {
                Unit::Service(s) => match s.state {
                    State::Ready => {
                        s.has_main || s.loop_thread.as_ref().is_some_and(LoopThread::running)
                    }
                    State::Deactivating => true,
                    _ => false,
                },
                Unit::Condition(_) => false,
            },
            Step::Trigger { conditions, .. } => conditions
                .iter()
                .any(|c| matches!(self.units[*c].state(), State::Ready)),
        })
    }

    /// Finalizes the deactivated instances whose loop thread has returned.
    fn reap(&mut self) {
        for i in 0..self.units.len() {
            let unit = &mut self.units[i];
            // A loop that asked to be deactivated is noticed here.
            if unit.state() == State::Ready && unit.host().deactivated() {
                unit.set_state(State::Deactivating);
            }
            if unit.state() != State::Deactivating {
                continue;
            }
            if let Unit::Service(s) = unit {
                if s.loop_thread.as_ref().is_some_and(LoopThread::running) {
                    continue;
                }
                if let Some(t) = s.loop_thread.take() {
                    let _ = t.handle.join();
                }
            }
            self.finalize(i);
        }
    }

    fn finalize(&mut self, i: usize) {
        let unit = &mut self.units[i];
        let host = Arc::clone(unit.host());
        let result =
            match unit {
                Unit::Service(s) => Arc::get_mut(&mut s.inst.object)
                    .map(|obj| host.with_handle(|h| obj.finalize(h))),
                Unit::Condition(c) => Arc::get_mut(&mut c.inst.object)
                    .map(|obj| host.with_handle(|h| obj.finalize(h))),
            };
        host.release_leases();
        match result {
            Some(r) => {
                outcome(&host, "finalize", r);
            }
            None => tracing::error!(
                context = %self.shared.name,
                service = %host.name,
                "not finalized: its loop call never returned (the thread is abandoned)"
            ),
        }
        unit.set_state(State::Finalized);
    }

    fn shutdown(&mut self) {
        // Loop threads watch this flag between calls.
        self.shared.stop.store(true, Ordering::SeqCst);
        for unit in &mut self.units {
            if let Unit::Service(s) = unit
                && let Some(t) = s.loop_thread.take()
            {
                let _ = t.handle.join();
            }
        }
        for i in (0..self.units.len()).rev() {
            if matches!(self.units[i].state(), State::Ready | State::Deactivating) {
                self.finalize(i);
            }
        }
    }
}

/// The body of a service's loop thread.
fn loop_thread(
    object: &Arc<otools_api::ffi::FfiServiceBox>,
    host: &Arc<InstanceHost>,
    done: &AtomicBool,
) {
    let ctx = &host.context;
    while !ctx.stopping() && !host.deactivated() {
        let r = host.with_handle(|h| object.run_loop(h));
        match outcome(host, "loop", r).0 {
            Outcome::Ok => {}
            Outcome::Unimplemented => break,
            Outcome::Failed => {
                let seen = ctx.wake.epoch();
                ctx.wake
                    .wait_until(seen, Some(Instant::now() + LOOP_FAILURE_PAUSE));
            }
        }
    }
    // The context thread may be waiting for this loop to end.
    done.store(true, Ordering::SeqCst);
    ctx.wake.notify();
}

fn unreachable_shared(host: &InstanceHost) -> otools_api::ffi::CallResult {
    tracing::error!(service = %host.name, "instance shared before setup (host bug)");
    abi_stable::std_types::RResult::ROk(())
}
