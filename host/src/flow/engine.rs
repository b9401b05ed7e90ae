//! Running one flow: its coordinator thread (`flow-<name>`) and one
//! short-lived thread per running activation (`step-<name>`).
//!
//! The coordinator owns every piece of state of the run (which events were
//! raised for which sequence, each step's tasks, the queue of activations
//! waiting for a slot, the running counts, the pools, the delays) and the
//! store connection; activation threads only call the plugin and report
//! back on a channel. The coordinator handles the messages waiting on its
//! channel (steps' ends, raised events) in one store transaction (a group
//! commit), with what they raise and activate, the delays that came due
//! and the activations that can now start, committed before any step it
//! starts is called: after a kill, the store says exactly which steps
//! succeeded, failed, were running or were waiting. A chain costs one
//! commit (one fsync) per step.
//!
//! Rules, per sequence: raising an event already raised is a journaled
//! duplicate; activating a step already activated is one too (so a step
//! runs at most once per run, step, sequence and attempt). An expression
//! event is raised once, when its expression becomes true. A step starts
//! when it is under its `max_concurrent` and every pool it uses has a free
//! unit; its units are given back when it ends, whichever way (success,
//! error, panic, watchdog). A failure with `on_failure` is handled; an
//! unhandled one fails the flow and, under `stop_on_error`, starts no new
//! step (running ones finish). A step call that overruns its `watchdog` is
//! declared hung by the host's watchdog: its thread is abandoned, its
//! handle fenced, and the activation is a failure. The run ends when
//! nothing runs, nothing waits for a slot and no delay is pending (or, once
//! stopping, when nothing runs); expression events still false for a
//! sequence where some operand was raised are then reported.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use abi_stable::std_types::{RResult, RString};
use otools_abi::{CallErrorKind, StepActivation};
use parking_lot::Mutex;

use super::status::{FlowStatus, PoolStatus, StepStatus};
use super::store::{Status, Store, StoreError, now_ms};
use super::{EventId, FlowPlan, StepId};
use crate::event::{Activation, Event, Events, FlowEvent, FlowRun};
use crate::instance::InstanceHost;
use crate::manifest::flow::{Recovery, RunMode};
use crate::messaging::{Failure, FlowInbox, MessageError};
use crate::supervision::watchdog::{Entry, Watchdog, limit_ms};
use crate::threads::Spawner;

/// Why a flow cannot start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The store cannot be opened or read.
    #[error("flow `{flow}`: {source}")]
    Store {
        /// The flow.
        flow: String,
        /// What went wrong.
        source: StoreError,
    },
    /// `recover` or `continue` found nothing to take up.
    #[error("flow `{flow}`: nothing to {mode} in run store {store}: {reason}")]
    Nothing {
        /// The flow.
        flow: String,
        /// `recover` or `continue`.
        mode: &'static str,
        /// The store file.
        store: String,
        /// Why.
        reason: String,
    },
}

/// How a run of a flow ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything ran; every failure was handled.
    Success,
    /// A failure was not handled.
    Failure,
    /// Stopped (a signal, a fatal log) with work left pending.
    Stopped,
    /// Stopped, and steps still running after `shutdown_timeout` were
    /// abandoned (their tasks stay `active`: `recover` reruns them).
    Abandoned,
}

impl Outcome {
    fn name(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Stopped | Outcome::Abandoned => "stopped",
        }
    }
}

enum Msg {
    Done {
        step: StepId,
        sequence: String,
        attempt: u32,
        result: Result<(), String>,
    },
    /// An event raised from outside the flow (a plugin, `otools raise`),
    /// answered once it is committed.
    Raise {
        event: EventId,
        sequence: String,
        from: String,
        reply: mpsc::SyncSender<Result<(), Failure>>,
    },
    Stop,
}

/// The most messages one transaction takes (a group commit).
const MAX_BATCH: usize = 1024;

/// How long a raise from outside waits for the coordinator's answer (it
/// never waits for a step, only for a store transaction).
const RAISE_TIMEOUT: Duration = Duration::from_secs(30);

/// Something waiting for its due time.
struct Delay {
    id: i64,
    sequence: String,
    target: Target,
    due_ms: u64,
}

#[derive(Clone, Copy)]
enum Target {
    Step(StepId),
    Event(EventId),
}

/// A flow whose store is open and whose run is set up, ready to start.
pub struct Opened {
    engine: Engine,
    rx: Receiver<Msg>,
    /// Tells the coordinator to stop starting steps.
    pub handle: FlowHandle,
}

/// A running flow as the host sees it: it stops it (running steps finish,
/// no new one starts), raises its events from outside (a
/// [`FlowInbox`]), and reads its status.
#[derive(Clone)]
pub struct FlowHandle {
    tx: Sender<Msg>,
    shared: Arc<crate::instance::ContextShared>,
    /// Its plain events (those that may be raised from outside), and all
    /// its events (plain, then expression events) for their ids.
    raisable: Arc<Vec<String>>,
    status: Arc<Mutex<FlowStatus>>,
}

impl FlowInbox for FlowHandle {
    fn name(&self) -> &str {
        &self.shared.name
    }

    fn events(&self) -> &[String] {
        &self.raisable
    }

    fn raise(&self, event: &str, sequence: &str, from: &str) -> Result<(), Failure> {
        let gone = || {
            Failure::new(
                MessageError::PeerGone,
                format!("the run of flow `{}` has finished", self.shared.name),
            )
        };
        // Plain events come first in the flow's event ids.
        let Some(event) = self.raisable.iter().position(|e| e == event) else {
            return Err(Failure::new(
                MessageError::UnknownMessage,
                format!("flow `{}` has no event `{event}`", self.shared.name),
            ));
        };
        let (reply, answer) = mpsc::sync_channel(1);
        self.tx
            .send(Msg::Raise {
                event,
                sequence: sequence.to_owned(),
                from: from.to_owned(),
                reply,
            })
            .map_err(|_| gone())?;
        match answer.recv_timeout(RAISE_TIMEOUT) {
            Ok(r) => r,
            Err(RecvTimeoutError::Disconnected) => Err(gone()),
            Err(RecvTimeoutError::Timeout) => Err(Failure::new(
                MessageError::Timeout,
                format!(
                    "flow `{}` did not take the event within {}",
                    self.shared.name,
                    humantime::format_duration(RAISE_TIMEOUT)
                ),
            )),
        }
    }
}

impl FlowHandle {
    /// The flow's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Did one of its steps log at `fatal` (which also stops the flow)?
    pub fn fatal(&self) -> bool {
        self.shared.fatal.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stops the flow (see [`FlowHandle`]).
    pub fn stop(&self) {
        self.shared.request_stop();
        let _ = self.tx.send(Msg::Stop);
    }

    /// The flow's latest status (see [`super::status`]).
    pub fn status(&self) -> FlowStatus {
        self.status.lock().clone()
    }
}

struct Engine {
    plan: Arc<FlowPlan>,
    store: Store,
    run: FlowRun,
    events: Arc<Events>,
    tx: Sender<Msg>,
    raised: HashSet<(EventId, String)>,
    /// Every (step, sequence) activated in this run.
    tasks: HashSet<(StepId, String)>,
    queue: VecDeque<(StepId, String, u32)>,
    running: Vec<u32>,
    pool_used: Vec<u32>,
    active: usize,
    delays: Vec<Delay>,
    stopping: bool,
    /// When running steps are abandoned, once stopping (see `Outcome::Abandoned`).
    stop_deadline: Option<std::time::Instant>,
    failed: bool,
    /// Recovered interrupted activations of non-idempotent steps, failed at start.
    interrupted: Vec<(StepId, String, u32)>,
    /// `recover`: the steps it does not run again, journaled at start.
    skipped: Vec<FlowEvent>,
    /// What `otools status` shows, published after every message handled.
    status: Arc<Mutex<FlowStatus>>,
    /// Activations ended in this process, per step: (succeeded, failed).
    ended: Vec<(u64, u64)>,
    /// When each activation failed in this process (for `retries` within
    /// `restart_window`).
    failures: HashMap<(StepId, String), Vec<std::time::Instant>>,
    /// Retries waiting for their `restart_delay`: (due, step, sequence,
    /// attempt); their tasks are `pending` in the store.
    backoff: Vec<(u64, StepId, String, u32)>,
}

fn store_err(flow: &str) -> impl Fn(StoreError) -> OpenError + '_ {
    move |source| OpenError::Store {
        flow: flow.to_owned(),
        source,
    }
}

/// Opens the flow's store and sets up its run for its mode: a new run for
/// `restart`; for `recover` and `continue`, the run named by `run_id` (or
/// the latest), with what is left to do, or an error when there is none.
pub fn open(plan: FlowPlan, events: Arc<Events>) -> Result<Opened, OpenError> {
    let flow = plan.name.clone();
    let shown = plan
        .store
        .as_ref()
        .map_or_else(|| String::from(":memory:"), |p| p.display().to_string());
    let mode = plan.mode.name();
    let nothing = |reason: String| OpenError::Nothing {
        flow: flow.clone(),
        mode,
        store: shown.clone(),
        reason,
    };
    if plan.mode != RunMode::Restart {
        match &plan.store {
            None => {
                return Err(nothing(String::from(
                    "the flow has no `store`, so no run outlives the host",
                )));
            }
            Some(p) if !p.exists() => {
                return Err(nothing(String::from("the store file does not exist")));
            }
            Some(_) => {}
        }
    }
    let store = Store::open(plan.store.as_deref()).map_err(store_err(&flow))?;
    let (tx, rx) = mpsc::channel();
    let steps = plan.steps.len();
    let pools = plan.pools.len();
    let (run_id, recovery) = if plan.mode == RunMode::Restart {
        (store.new_run(&flow).map_err(store_err(&flow))?, 0)
    } else {
        let Some(found) = store
            .find_run(&flow, plan.run_id.as_deref())
            .map_err(store_err(&flow))?
        else {
            return Err(nothing(match &plan.run_id {
                Some(id) => format!("it holds no run `{id}` of this flow"),
                None => String::from("it holds no run of this flow"),
            }));
        };
        (found.id, found.recovery)
    };
    let status = Arc::new(Mutex::new(FlowStatus {
        name: flow.clone(),
        run: run_id.clone(),
        mode: mode.into(),
        state: String::from("running"),
        result: None,
        steps: plan
            .steps
            .iter()
            .map(|s| StepStatus {
                name: s.name.clone(),
                waiting: 0,
                running: 0,
                succeeded: 0,
                failed: 0,
            })
            .collect(),
        pending_delays: 0,
        pools: plan
            .pools
            .iter()
            .map(|p| PoolStatus {
                name: p.name.clone(),
                in_use: 0,
                limit: p.limit,
            })
            .collect(),
    }));
    let plain = plan.events.len() - plan.expressions.len();
    let handle = FlowHandle {
        tx: tx.clone(),
        shared: Arc::clone(&plan.shared),
        raisable: Arc::new(plan.events[..plain].to_vec()),
        status: Arc::clone(&status),
    };
    let mut engine = Engine {
        run: FlowRun {
            flow: flow.clone(),
            run: run_id,
        },
        plan: Arc::new(plan),
        store,
        events,
        tx,
        raised: HashSet::new(),
        tasks: HashSet::new(),
        queue: VecDeque::new(),
        running: vec![0; steps],
        pool_used: vec![0; pools],
        active: 0,
        delays: Vec::new(),
        stopping: false,
        stop_deadline: None,
        failed: false,
        interrupted: Vec::new(),
        skipped: Vec::new(),
        status,
        ended: vec![(0, 0); steps],
        failures: HashMap::new(),
        backoff: Vec::new(),
    };
    let recovery = if engine.plan.mode == RunMode::Restart {
        recovery
    } else {
        let work = engine.restore().map_err(store_err(&flow))?;
        if work == 0 {
            return Err(nothing(format!(
                "run `{}` has no failed, interrupted or pending step and no pending delay",
                engine.run.run
            )));
        }
        engine
            .store
            .reopen_run(&engine.run.run)
            .map_err(store_err(&flow))?
    };
    engine.emit(FlowEvent::Started {
        run: engine.run.clone(),
        mode: engine.plan.mode.name().into(),
        recovery,
    });
    for e in std::mem::take(&mut engine.skipped) {
        engine.emit(e);
    }
    tracing::info!(
        flow = %flow,
        run = %engine.run.run,
        store = %shown,
        "flow {} run {} ({})",
        flow,
        engine.run.run,
        engine.plan.mode.name()
    );
    Ok(Opened { engine, rx, handle })
}

impl Opened {
    /// Starts the coordinator thread; `done` gets the outcome when the run ends.
    pub fn start(
        self,
        watchdog: Arc<Watchdog>,
        threads: Arc<Spawner>,
        done: impl FnOnce(Outcome) + Send + 'static,
    ) -> std::io::Result<()> {
        let Opened { mut engine, rx, .. } = self;
        let name = format!("flow-{}", engine.plan.name);
        let t = Arc::clone(&threads);
        threads
            .spawn(
                &format!("the coordinator of flow {}", engine.plan.name),
                &name,
                move || {
                    let outcome = engine.coordinate(&rx, &watchdog, &t);
                    // A raise still queued is answered "finished" at once.
                    drop(rx);
                    done(outcome);
                },
            )
            .map(drop)
    }
}

impl Engine {
    fn emit(&self, e: FlowEvent) {
        self.events.emit(&Event::Flow(e));
    }

    fn activation(&self, step: StepId, sequence: &str, attempt: u32) -> Activation {
        Activation {
            step: self.plan.steps[step].name.clone(),
            sequence: sequence.to_owned(),
            attempt,
        }
    }

    /// A store write failed: the run cannot be kept durable; stop it.
    fn store_failed(&mut self, e: &StoreError) {
        tracing::error!(flow = %self.plan.name, "{e}; no new step starts");
        self.failed = true;
        self.stopping = true;
    }

    fn step_id(&self, name: &str) -> Option<StepId> {
        self.plan.steps.iter().position(|s| s.name == name)
    }

    fn event_id(&self, name: &str) -> Option<EventId> {
        self.plan.events.iter().position(|e| e == name)
    }

    /// Loads the run's triggers, tasks and delays for `recover` or
    /// `continue`; returns how much there is to do.
    fn restore(&mut self) -> Result<usize, StoreError> {
        let run = self.run.run.clone();
        for (event, sequence) in self.store.triggers(&run)? {
            if let Some(e) = self.event_id(&event) {
                self.raised.insert((e, sequence));
            }
        }
        let recover = self.plan.mode == RunMode::Recover;
        let mut work = 0;
        for t in self.store.tasks(&run)? {
            let Some(s) = self.step_id(&t.step) else {
                tracing::warn!(flow = %self.plan.name, "the store names step `{}`, which the manifest no longer has: ignored", t.step);
                continue;
            };
            self.tasks.insert((s, t.sequence.clone()));
            let step = &self.plan.steps[s];
            let rerun = match t.status {
                Status::Pending => {
                    self.queue.push_back((s, t.sequence.clone(), t.attempt));
                    work += 1;
                    continue;
                }
                _ if !recover => false,
                Status::Success => step.recovery == Recovery::Rerun,
                Status::Active if !step.idempotent => {
                    self.interrupted.push((s, t.sequence.clone(), t.attempt));
                    work += 1;
                    continue;
                }
                Status::Active | Status::Failure => step.recovery != Recovery::Skip,
            };
            if rerun {
                let attempt = t.attempt + 1;
                self.store.task(
                    &run,
                    &step.name,
                    &t.sequence,
                    attempt,
                    Status::Pending,
                    None,
                )?;
                self.queue.push_back((s, t.sequence, attempt));
                work += 1;
            } else if recover {
                // Journaled once the run is known to start (see `open`).
                self.skipped.push(FlowEvent::StepSkipped {
                    run: self.run.clone(),
                    activation: self.activation(s, &t.sequence, t.attempt),
                    status: t.status.name().into(),
                });
            }
        }
        for d in self.store.pending_delays(&run)? {
            let target = if d.step {
                self.step_id(&d.target).map(Target::Step)
            } else {
                self.event_id(&d.target).map(Target::Event)
            };
            if let Some(target) = target {
                self.delays.push(Delay {
                    id: d.id,
                    sequence: d.sequence,
                    target,
                    due_ms: d.due_ms,
                });
                work += 1;
            }
        }
        Ok(work)
    }

    /// The coordinator's loop (see the module docs).
    fn coordinate(
        &mut self,
        rx: &Receiver<Msg>,
        watchdog: &Arc<Watchdog>,
        threads: &Spawner,
    ) -> Outcome {
        // The start events and the recovered failures open the first
        // transaction; the top of the loop commits it with the first starts.
        let mut failed_tx = None;
        let first = self.store.begin().and_then(|()| {
            if self.plan.mode == RunMode::Restart {
                for (e, sequence) in self.plan.start.clone() {
                    self.raise(e, &sequence)?;
                }
            }
            for (s, sequence, attempt) in std::mem::take(&mut self.interrupted) {
                let reason = String::from(
                    "interrupted when the host died, and the step is not idempotent (idempotent = false)",
                );
                self.store.task(&self.run.run, &self.plan.steps[s].name, &sequence, attempt, Status::Failure, Some(&reason))?;
                self.failure(s, &sequence, attempt, reason)?;
            }
            Ok(())
        });
        let mut open = first.is_ok();
        if let Err(e) = first {
            failed_tx = Some(e);
        }
        // Raises from outside, answered once their transaction is committed.
        let mut replies: Vec<mpsc::SyncSender<Result<(), Failure>>> = Vec::new();
        loop {
            if self.plan.shared.stopping() {
                self.stopping = true;
            }
            let committed = self.commit_and_start(open, failed_tx.take(), watchdog, threads);
            open = false;
            for reply in replies.drain(..) {
                let _ = reply.send(committed.clone());
            }
            self.publish();
            let idle = self.queue.is_empty()
                && self.delays.is_empty()
                && self.backoff.is_empty()
                && !self.plan.keep_open;
            if self.active == 0 && (self.stopping || idle) {
                break;
            }
            if self.stopping && self.stop_deadline.is_none() {
                self.stop_deadline = Some(std::time::Instant::now() + self.plan.shutdown_timeout);
            }
            let wait = if let Some(deadline) = self.stop_deadline {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    tracing::error!(
                        flow = %self.plan.name,
                        "{} running step(s) did not finish within shutdown_timeout ({}): abandoned (their tasks stay active; `--mode recover` runs them again)",
                        self.active,
                        humantime::format_duration(self.plan.shutdown_timeout)
                    );
                    return self.finish(true);
                }
                Some(left)
            } else {
                self.delays
                    .iter()
                    .map(|d| d.due_ms)
                    .chain(self.backoff.iter().map(|b| b.0))
                    .min()
                    .map(|due| Duration::from_millis(due.saturating_sub(now_ms()).max(1)))
            };
            let msg = match wait {
                None => rx.recv().ok(),
                Some(w) => match rx.recv_timeout(w) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => None,
                },
            };
            let Some(msg) = msg else { break };
            // This message and those already queued behind it make one
            // transaction (a group commit), committed at the top of the loop
            // with the starts they allow.
            let begun = self.store.begin();
            open = begun.is_ok();
            let mut result = begun;
            let mut next = Some(msg);
            let mut handled = 0;
            while let Some(m) = next.take() {
                let r = self.handle(m, &mut replies);
                if result.is_ok() {
                    result = r;
                }
                handled += 1;
                if handled < MAX_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            if let Err(e) = result {
                failed_tx = Some(e);
            }
        }
        self.finish(false)
    }

    /// Ends the open transaction (begins one when `open` is false) after
    /// firing the due delays and recording the activations that can start,
    /// then starts them: what the store says was started is committed
    /// before the plugin is called. A transaction that failed (`failed`)
    /// is rolled back instead. Returns what a raise from outside in it is
    /// answered.
    fn commit_and_start(
        &mut self,
        open: bool,
        failed: Option<StoreError>,
        watchdog: &Arc<Watchdog>,
        threads: &Spawner,
    ) -> Result<(), Failure> {
        let mut started = Vec::new();
        let r = match failed {
            Some(e) => Err(e),
            None => (if open { Ok(()) } else { self.store.begin() })
                .and_then(|()| self.fire_due())
                .and_then(|()| self.pick(&mut started))
                .and_then(|()| self.store.commit()),
        };
        match r {
            Ok(()) => {
                for (step, sequence, attempt) in started {
                    self.emit(FlowEvent::StepStarted {
                        run: self.run.clone(),
                        activation: self.activation(step, &sequence, attempt),
                    });
                    self.spawn(step, sequence, attempt, watchdog, threads);
                }
                Ok(())
            }
            Err(e) => {
                self.store.rollback();
                self.store_failed(&e);
                // What `pick` took does not start: back to the queue.
                for (step, sequence, attempt) in started.into_iter().rev() {
                    self.release(step);
                    self.queue.push_front((step, sequence, attempt));
                }
                Err(Failure::new(
                    MessageError::PeerFailed,
                    format!("flow `{}` could not store the event: {e}", self.plan.name),
                ))
            }
        }
    }

    /// One message, inside the open transaction.
    fn handle(
        &mut self,
        msg: Msg,
        replies: &mut Vec<mpsc::SyncSender<Result<(), Failure>>>,
    ) -> Result<(), StoreError> {
        match msg {
            Msg::Stop => {
                self.stopping = true;
                Ok(())
            }
            Msg::Done {
                step,
                sequence,
                attempt,
                result,
            } => self.done(step, &sequence, attempt, result),
            Msg::Raise {
                event,
                sequence,
                from,
                reply,
            } => {
                tracing::info!(
                    flow = %self.plan.name,
                    sequence = %sequence,
                    "event `{}` raised for sequence {sequence} by {from}",
                    self.plan.events[event]
                );
                replies.push(reply);
                self.raise(event, &sequence)
            }
        }
    }

    /// Publishes the run's state for `otools status` (names were set at
    /// open; only the counts change).
    fn publish(&self) {
        let mut s = self.status.lock();
        s.state = String::from(if self.stopping { "stopping" } else { "running" });
        for (i, step) in s.steps.iter_mut().enumerate() {
            step.waiting = 0;
            step.running = self.running[i];
            (step.succeeded, step.failed) = self.ended[i];
        }
        for step in self
            .queue
            .iter()
            .map(|q| q.0)
            .chain(self.backoff.iter().map(|b| b.1))
        {
            s.steps[step].waiting += 1;
        }
        s.pending_delays = self.delays.len();
        for (pool, used) in s.pools.iter_mut().zip(&self.pool_used) {
            pool.in_use = *used;
        }
    }

    /// Raises `event` for `sequence` (see the module docs).
    fn raise(&mut self, event: EventId, sequence: &str) -> Result<(), StoreError> {
        let name = self.plan.events[event].clone();
        if !self.raised.insert((event, sequence.to_owned())) {
            self.emit(FlowEvent::Duplicate {
                run: self.run.clone(),
                kind: "event".into(),
                name,
                sequence: sequence.into(),
            });
            return Ok(());
        }
        self.store.raise(&self.run.run, &name, sequence)?;
        self.emit(FlowEvent::Raised {
            run: self.run.clone(),
            name,
            sequence: sequence.into(),
        });
        let plan = Arc::clone(&self.plan);
        for a in plan.associations.iter().filter(|a| a.event == event) {
            match a.delay {
                Some(delay) => {
                    let due_ms = now_ms().saturating_add(limit_ms(delay));
                    let targets = a
                        .steps
                        .iter()
                        .map(|s| Target::Step(*s))
                        .chain(a.events.iter().map(|e| Target::Event(*e)));
                    for target in targets {
                        let (step, name) = match target {
                            Target::Step(s) => (true, &plan.steps[s].name),
                            Target::Event(e) => (false, &plan.events[e]),
                        };
                        let id =
                            self.store
                                .add_delay(&self.run.run, sequence, step, name, due_ms)?;
                        self.emit(FlowEvent::DelayScheduled {
                            run: self.run.clone(),
                            target: name.clone(),
                            sequence: sequence.into(),
                            due_ms,
                        });
                        self.delays.push(Delay {
                            id,
                            sequence: sequence.into(),
                            target,
                            due_ms,
                        });
                    }
                }
                None => {
                    for s in &a.steps {
                        self.activate(*s, sequence)?;
                    }
                    for e in &a.events {
                        self.raise(*e, sequence)?;
                    }
                }
            }
        }
        for (x, expr) in plan.expressions.iter().filter(|(_, x)| x.mentions(event)) {
            let raised = |e: EventId| self.raised.contains(&(e, sequence.to_owned()));
            if !raised(*x) && expr.holds(&raised) {
                self.raise(*x, sequence)?;
            }
        }
        Ok(())
    }

    /// Activates `step` for `sequence` (attempt 1) unless it already was.
    fn activate(&mut self, step: StepId, sequence: &str) -> Result<(), StoreError> {
        let key = (step, sequence.to_owned());
        if self.tasks.contains(&key) {
            self.emit(FlowEvent::Duplicate {
                run: self.run.clone(),
                kind: "step".into(),
                name: self.plan.steps[step].name.clone(),
                sequence: sequence.into(),
            });
            return Ok(());
        }
        self.store.task(
            &self.run.run,
            &self.plan.steps[step].name,
            sequence,
            1,
            Status::Pending,
            None,
        )?;
        self.tasks.insert(key);
        self.queue.push_back((step, sequence.to_owned(), 1));
        Ok(())
    }

    /// Fires every delay that is due (never before its time).
    fn fire_due(&mut self) -> Result<(), StoreError> {
        if self.stopping {
            return Ok(());
        }
        let now = now_ms();
        let (retry, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.backoff)
            .into_iter()
            .partition(|b| b.0 <= now);
        self.backoff = wait;
        self.queue
            .extend(retry.into_iter().map(|(_, s, q, a)| (s, q, a)));
        let (due, later): (Vec<Delay>, Vec<Delay>) = std::mem::take(&mut self.delays)
            .into_iter()
            .partition(|d| d.due_ms <= now);
        self.delays = later;
        for d in due {
            self.store.fire_delay(d.id)?;
            match d.target {
                Target::Step(s) => self.activate(s, &d.sequence)?,
                Target::Event(e) => self.raise(e, &d.sequence)?,
            }
        }
        Ok(())
    }

    fn can_start(&self, step: StepId) -> bool {
        let s = &self.plan.steps[step];
        s.max_concurrent.is_none_or(|m| self.running[step] < m)
            && s.pools
                .iter()
                .all(|p| self.pool_used[*p] < self.plan.pools[*p].limit)
    }

    /// Takes every queued activation that has a slot, in queue order, and
    /// records it `active` (in the open transaction); the caller starts them
    /// once that is committed.
    fn pick(&mut self, started: &mut Vec<(StepId, String, u32)>) -> Result<(), StoreError> {
        if self.stopping {
            return Ok(());
        }
        let mut i = 0;
        while i < self.queue.len() {
            let step = self.queue[i].0;
            if self.can_start(step) {
                if let Some(a) = self.queue.remove(i) {
                    self.running[step] += 1;
                    for p in &self.plan.steps[step].pools {
                        self.pool_used[*p] += 1;
                    }
                    self.active += 1;
                    started.push(a);
                }
            } else {
                i += 1;
            }
        }
        for (step, sequence, attempt) in started.iter() {
            self.store.task(
                &self.run.run,
                &self.plan.steps[*step].name,
                sequence,
                *attempt,
                Status::Active,
                None,
            )?;
        }
        Ok(())
    }

    /// Gives back the slot and pool units of an activation of `step`.
    fn release(&mut self, step: StepId) {
        self.running[step] = self.running[step].saturating_sub(1);
        for p in &self.plan.steps[step].pools {
            self.pool_used[*p] = self.pool_used[*p].saturating_sub(1);
        }
        self.active = self.active.saturating_sub(1);
    }

    /// Runs one activation on a thread of its own, watched when the step
    /// has a `watchdog`; the end (or the hang) comes back as `Msg::Done`.
    fn spawn(
        &self,
        step: StepId,
        sequence: String,
        attempt: u32,
        watchdog: &Arc<Watchdog>,
        threads: &Spawner,
    ) {
        let plan = Arc::clone(&self.plan);
        let s = &plan.steps[step];
        let host = Arc::new(InstanceHost::new(
            Arc::clone(&plan.shared),
            s.name.clone(),
            Arc::clone(&s.library),
            s.export.clone(),
            u64::from(attempt),
            Arc::new(Mutex::new(None)),
        ));
        let activation = StepActivation {
            flow: RString::from(plan.name.as_str()),
            step: RString::from(s.name.as_str()),
            run: RString::from(self.run.run.as_str()),
            sequence: RString::from(sequence.as_str()),
            attempt,
        };
        let tx = self.tx.clone();
        let watched = s.watchdog.map(|limit| {
            let (tx, host, sequence) = (tx.clone(), Arc::clone(&host), sequence.clone());
            let watched = watchdog.register(move |hung| {
                host.fence();
                tracing::error!(
                    context = %host.context.name,
                    service = %host.name,
                    library = %host.library.path.display(),
                    export = %host.export,
                    entry = "run",
                    sequence = %sequence,
                    attempt,
                    "run hung: it overran its watchdog ({}); its thread is abandoned",
                    humantime::format_duration(hung.limit)
                );
                let _ = tx.send(Msg::Done {
                    step,
                    sequence: sequence.clone(),
                    attempt,
                    result: Err(format!(
                        "hung: overran its watchdog ({})",
                        humantime::format_duration(hung.limit)
                    )),
                });
            });
            (watched, limit_ms(limit))
        });
        let object = Arc::clone(&s.object);
        let what = format!("a step of flow {}", plan.name);
        let name = format!("step-{}", s.name);
        let seq = sequence.clone();
        let body = move || {
            let call = watched
                .as_ref()
                .map(|(w, limit)| w.begin_ms(step, u64::from(attempt), Entry::Main, *limit, 0));
            let r = host.with_handle(|h| object.run(h, &activation));
            if let (Some((w, _)), Some(call)) = (&watched, call)
                && !w.end(call)
            {
                // Declared hung: the watchdog reported it; leave quietly.
                return;
            }
            let result = match r {
                RResult::ROk(()) => Ok(()),
                RResult::RErr(e) => {
                    host.report_failure("run", &e);
                    let what = match e.kind {
                        CallErrorKind::Panicked => "panicked",
                        _ => "failed",
                    };
                    Err(format!("{what}: {}", e.message))
                }
            };
            // The activation is over: a stray callback (from a thread the
            // step left behind) is refused from now on.
            host.fence();
            let _ = tx.send(Msg::Done {
                step,
                sequence: seq,
                attempt,
                result,
            });
        };
        if threads.spawn(&what, &name, body).is_err() {
            let _ = self.tx.send(Msg::Done {
                step,
                sequence,
                attempt,
                result: Err(String::from("failed: the host could not create its thread")),
            });
        }
    }

    /// An activation ended: give its slot and pools back, record it, route it.
    fn done(
        &mut self,
        step: StepId,
        sequence: &str,
        attempt: u32,
        result: Result<(), String>,
    ) -> Result<(), StoreError> {
        self.release(step);
        let plan = Arc::clone(&self.plan);
        let s = &plan.steps[step];
        let status = if result.is_ok() {
            self.ended[step].0 += 1;
            Status::Success
        } else {
            self.ended[step].1 += 1;
            Status::Failure
        };
        self.store.task(
            &self.run.run,
            &s.name,
            sequence,
            attempt,
            status,
            result.as_ref().err().map(String::as_str),
        )?;
        self.emit(FlowEvent::StepFinished {
            run: self.run.clone(),
            activation: self.activation(step, sequence, attempt),
            status: status.name().into(),
            reason: result.as_ref().err().cloned(),
        });
        match result {
            Ok(()) => {
                if let Some(e) = s.on_success {
                    self.raise(e, sequence)?;
                }
                if let Some(e) = s.on_complete {
                    self.raise(e, sequence)?;
                }
                Ok(())
            }
            Err(reason) => self.failure(step, sequence, attempt, reason),
        }
    }

    /// Routes a failed activation: a retry, `on_failure`, or an unhandled
    /// failure (the flow fails; under `stop_on_error` no new step starts).
    fn failure(
        &mut self,
        step: StepId,
        sequence: &str,
        attempt: u32,
        reason: String,
    ) -> Result<(), StoreError> {
        let plan = Arc::clone(&self.plan);
        let s = &plan.steps[step];
        // Retries count the failures of this process's run of the
        // activation (within `restart_window`, when it has one).
        let now = std::time::Instant::now();
        let failed = self
            .failures
            .entry((step, sequence.to_owned()))
            .or_default();
        failed.push(now);
        if let Some(window) = s.restart_window {
            failed.retain(|t| now.duration_since(*t) <= window);
        }
        let counted = u32::try_from(failed.len()).unwrap_or(u32::MAX);
        if counted <= s.retries && !self.stopping {
            let next = attempt + 1;
            let delay = retry_delay(s.restart_delay, s.max_restart_delay, counted);
            tracing::warn!(
                flow = %plan.name,
                step = %s.name,
                sequence,
                attempt,
                "failed ({reason}); retrying as attempt {next}{}",
                if delay.is_zero() {
                    String::new()
                } else {
                    format!(" in {}", humantime::format_duration(delay))
                }
            );
            self.store.task(
                &self.run.run,
                &s.name,
                sequence,
                next,
                Status::Pending,
                None,
            )?;
            if delay.is_zero() {
                self.queue.push_back((step, sequence.to_owned(), next));
            } else {
                let due = now_ms().saturating_add(limit_ms(delay));
                self.backoff.push((due, step, sequence.to_owned(), next));
            }
            return Ok(());
        }
        if let Some(e) = s.on_failure {
            tracing::warn!(flow = %plan.name, step = %s.name, sequence, attempt, "failed ({reason}); handled by on_failure");
            self.raise(e, sequence)?;
        } else {
            self.failed = true;
            let stop = s.stop_on_error.unwrap_or(plan.stop_on_error);
            tracing::error!(
                flow = %plan.name,
                step = %s.name,
                sequence,
                attempt,
                "failed ({reason}), and no on_failure handles it: the flow fails{}",
                if stop { "; stop_on_error: running steps finish, no new step starts" } else { "" }
            );
            if stop {
                self.stopping = true;
            }
        }
        if let Some(e) = s.on_complete {
            self.raise(e, sequence)?;
        }
        Ok(())
    }

    /// Reports expression events left unsatisfied, records the result.
    fn finish(&mut self, abandoned: bool) -> Outcome {
        let plan = Arc::clone(&self.plan);
        let mut sequences: Vec<&String> = self.raised.iter().map(|(_, s)| s).collect();
        sequences.sort_unstable();
        sequences.dedup();
        for (x, expr) in &plan.expressions {
            for sequence in &sequences {
                let raised = |e: EventId| self.raised.contains(&(e, (*sequence).clone()));
                if raised(*x)
                    || !plan
                        .events
                        .iter()
                        .enumerate()
                        .any(|(e, _)| expr.mentions(e) && raised(e))
                {
                    continue;
                }
                let mut missing = Vec::new();
                expr.missing(&raised, &mut missing);
                let missing: Vec<String> =
                    missing.iter().map(|e| plan.events[*e].clone()).collect();
                tracing::warn!(
                    flow = %plan.name,
                    sequence = %sequence,
                    "expression event `{}` was never raised for sequence {sequence}: still waiting for {}",
                    plan.events[*x],
                    missing.join(", ")
                );
                self.emit(FlowEvent::Unsatisfied {
                    run: self.run.clone(),
                    name: plan.events[*x].clone(),
                    sequence: (*sequence).clone(),
                    missing,
                });
            }
        }
        let pending = !self.queue.is_empty() || !self.delays.is_empty() || !self.backoff.is_empty();
        let outcome = if abandoned {
            Outcome::Abandoned
        } else if self.failed {
            Outcome::Failure
        } else if pending {
            Outcome::Stopped
        } else {
            Outcome::Success
        };
        self.publish();
        {
            let mut s = self.status.lock();
            s.state = String::from("finished");
            s.result = Some(outcome.name().into());
        }
        if let Err(e) = self.store.finish_run(&self.run.run, outcome.name()) {
            tracing::error!(flow = %plan.name, "{e}");
        }
        self.emit(FlowEvent::Finished {
            run: self.run.clone(),
            result: outcome.name().into(),
        });
        let line = format!(
            "flow {} run {} finished: {}",
            plan.name,
            self.run.run,
            outcome.name()
        );
        match outcome {
            Outcome::Success => tracing::info!(flow = %plan.name, "{line}"),
            Outcome::Stopped | Outcome::Abandoned => {
                tracing::warn!(flow = %plan.name, "{line} (work left pending: `otools run --mode continue` takes it up)")
            }
            Outcome::Failure => tracing::error!(flow = %plan.name, "{line}"),
        }
        outcome
    }
}

/// The delay before retry number `n` (from 1): `first`, doubled for each
/// retry after the first, at most `cap`.
fn retry_delay(first: Duration, cap: Duration, n: u32) -> Duration {
    let doubled = first.saturating_mul(1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX));
    doubled.min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_delay_doubles_from_the_first_up_to_its_cap() {
        let ms = Duration::from_millis;
        let delays: Vec<_> = (1..=6).map(|n| retry_delay(ms(100), ms(1000), n)).collect();
        assert_eq!(
            delays,
            [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
        assert_eq!(retry_delay(Duration::ZERO, ms(1000), 3), Duration::ZERO);
        assert_eq!(retry_delay(ms(1), ms(5000), 40), ms(5000));
    }
}
