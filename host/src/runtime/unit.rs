//! A unit (one service or condition: the slot its generations succeed each
//! other in), its life-cycle [`State`], its restart bookkeeping ([`Control`])
//! and the running instance in it ([`Instance`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use abi_stable::std_types::{RResult, RStr};
use arc_swap::{ArcSwap, ArcSwapOption};
use otools_abi::{CallError, CallErrorKind, CallResult, ExportKind, Value};
use parking_lot::Mutex;

use crate::instance::InstanceHost;
use crate::messaging::Mailbox;
use crate::plugin::Library;
use crate::plugin::PluginObject;
use crate::supervision::policy::{Policy, Tracker};
use crate::supervision::watchdog::{Entry, Hung};

/// One running instance: its plugin object and its host handle.
pub struct Instance {
    /// The handle its calls receive.
    pub host: Arc<InstanceHost>,
    pub(super) object: PluginObject,
    pub(super) loop_done: AtomicBool,
    /// Its loop thread's fate: [`LOOP_RUNNING`], [`LOOP_LEFT`] or [`LOOP_ABANDONED`].
    pub(super) loop_fate: AtomicU8,
    /// Declared after `object`, so dropped right after it, on the same thread.
    _drop_report: DropReport,
}

/// Reports a panic in the destructor of a plugin object. The plugin's
/// adapter catches it (abi_stable would abort the process) and keeps the
/// message, which this collects right after the object was dropped.
struct DropReport(Arc<InstanceHost>);

impl Drop for DropReport {
    fn drop(&mut self) {
        self.0.collect_drop_panic();
    }
}

/// A loop thread is running (or none was started yet).
pub(super) const LOOP_RUNNING: u8 = 0;
/// The loop thread left.
pub(super) const LOOP_LEFT: u8 = 1;
/// Stopping the instance gave up waiting for its unwatched loop call: the
/// thread is abandoned and counted (see `Watchdog::thread_abandoned`).
pub(super) const LOOP_ABANDONED: u8 = 2;

impl Instance {
    pub(super) fn new(host: Arc<InstanceHost>, object: PluginObject) -> Instance {
        Instance {
            _drop_report: DropReport(Arc::clone(&host)),
            host,
            object,
            loop_done: AtomicBool::new(false),
            loop_fate: AtomicU8::new(LOOP_RUNNING),
        }
    }

    pub(super) fn main(&self) -> CallResult {
        match &self.object {
            PluginObject::Service(o) => self.host.with_handle(|h| o.main(h)),
            PluginObject::Condition(_) => unimplemented_call(),
        }
    }

    pub(super) fn run_loop(&self) -> CallResult {
        match &self.object {
            PluginObject::Service(o) => self.host.with_handle(|h| o.run_loop(h)),
            PluginObject::Condition(_) => unimplemented_call(),
        }
    }

    pub(super) fn handle_message(&self, name: &str, payload: Value) -> CallResult<Value> {
        match (&self.object, &self.host.library.messaging) {
            (PluginObject::Service(o), Some(m)) => self
                .host
                .with_handle(|h| (m.handle_message())(o, h, RStr::from_str(name), payload)),
            _ => RResult::RErr(CallError {
                kind: CallErrorKind::Unimplemented,
                message: "not implemented".into(),
            }),
        }
    }

    pub(super) fn check(&self) -> CallResult<bool> {
        match &self.object {
            PluginObject::Condition(o) => self.host.with_handle(|h| o.check(h)),
            PluginObject::Service(_) => RResult::ROk(false),
        }
    }

    pub(super) fn setup(&mut self) -> CallResult {
        let host = Arc::clone(&self.host);
        match &mut self.object {
            PluginObject::Service(o) => host.with_handle(|h| o.setup(h)),
            PluginObject::Condition(o) => host.with_handle(|h| o.setup(h)),
        }
    }

    pub(super) fn finalize(&mut self) -> CallResult {
        let host = Arc::clone(&self.host);
        match &mut self.object {
            PluginObject::Service(o) => host.with_handle(|h| o.finalize(h)),
            PluginObject::Condition(o) => host.with_handle(|h| o.finalize(h)),
        }
    }

    pub(super) fn export_state(&self) -> CallResult<Option<(u32, Vec<u8>)>> {
        match &self.object {
            PluginObject::Service(o) => match self.host.with_handle(|h| o.export_state(h)) {
                RResult::ROk(v) => RResult::ROk(v.into_option().map(|t| (t.0, t.1.into_vec()))),
                RResult::RErr(e) => RResult::RErr(e),
            },
            PluginObject::Condition(_) => RResult::ROk(None),
        }
    }

    pub(super) fn import_state(&mut self, version: u32, bytes: &[u8]) -> CallResult {
        let host = Arc::clone(&self.host);
        match &mut self.object {
            PluginObject::Service(o) => {
                host.with_handle(|h| o.import_state(h, version, bytes.into()))
            }
            PluginObject::Condition(_) => RResult::ROk(()),
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
pub(super) enum State {
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
    pub(super) fn from_u8(v: u8) -> State {
        match v {
            0 => State::Pending,
            1 => State::Ready,
            2 => State::Stopping,
            3 => State::Down,
            4 => State::Failed,
            _ => State::Ended,
        }
    }

    pub(super) fn terminal(self) -> bool {
        matches!(self, State::Failed | State::Ended)
    }
}

/// Why an instance stopped serving.
#[derive(Debug, Clone)]
pub(super) enum Exit {
    /// An entry point returned an error or panicked.
    Failed { entry: Entry, reason: String },
    /// An entry point overran its deadline.
    Hung { entry: Entry, limit: Duration },
    /// The instance deactivated itself (a normal exit).
    Deactivated,
    /// The reserved `SHUTDOWN` message stopped it: a normal exit that is
    /// never restarted, whatever the policy.
    Shutdown,
}

impl Exit {
    /// The call the watchdog declared hung.
    pub(super) fn hung(h: &Hung) -> Exit {
        Exit::Hung {
            entry: h.entry,
            limit: h.limit,
        }
    }

    /// A `setup` (or the construction before it) that failed for `reason`.
    pub(super) fn setup_failed(reason: String) -> Exit {
        Exit::Failed {
            entry: Entry::Setup,
            reason,
        }
    }
}

pub(super) struct Control {
    pub(super) generation: u64,
    pub(super) tracker: Tracker,
    pub(super) running_since: Instant,
    /// The current generation's host, also while its `setup` runs.
    pub(super) host: Option<Arc<InstanceHost>>,
    /// The loop thread of a generation (the generation, its handle).
    pub(super) loop_thread: Option<(u64, JoinHandle<()>)>,
}

/// One service or condition: the slot its generations succeed each other in.
pub struct Unit {
    /// Name in logs and the journal.
    pub name: String,
    pub(super) kind: ExportKind,
    pub(super) top_level: bool,
    /// Its library: replaced by a hot reload.
    pub(super) library: ArcSwap<Library>,
    pub(super) export: String,
    pub(super) config_json: String,
    pub(super) policy: Policy,
    pub(super) live: ArcSwapOption<Instance>,
    /// A `State` as u8 (shared with its mailbox's liveness).
    pub(super) state: Arc<AtomicU8>,
    pub(super) has_main: AtomicBool,
    /// `main_once = true`: `main` is called until it returns once.
    pub(super) main_once: bool,
    /// A `main_once` unit's `main` returned (or is not implemented): it is
    /// not called again, in this generation or any later one.
    pub(super) main_done: AtomicBool,
    pub(super) loop_running: AtomicBool,
    pub(super) control: Mutex<Control>,
    pub(super) stash: Arc<Mutex<Option<Vec<u8>>>>,
    /// Its mailbox, if it accepts messages: it outlives every generation.
    pub mailbox: Option<Arc<Mailbox>>,
}

impl Unit {
    pub(super) fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    pub(super) fn set_state(&self, s: State) {
        self.state.store(s as u8, Ordering::Release);
        self.stopped_for_good(s);
    }

    /// Once the unit has stopped for good (it may still be revived by a
    /// reload), nothing takes messages out of its mailbox: the requests
    /// queued there are answered `PeerGone` now, not left to time out.
    fn stopped_for_good(&self, s: State) {
        if s.terminal()
            && let Some(mb) = &self.mailbox
        {
            mb.drain("has ended or gave up");
        }
    }

    /// Is its `main` still to be called: it has one, and it is not a
    /// `main_once` unit whose `main` already returned?
    pub(super) fn wants_main(&self) -> bool {
        self.has_main.load(Ordering::Relaxed) && !self.main_done.load(Ordering::Acquire)
    }

    /// Service or condition.
    pub fn kind(&self) -> ExportKind {
        self.kind
    }

    /// Moves the unit from `from` to `to` if it is in `from`, atomically:
    /// of two threads claiming the same unit, one wins. True if this one did.
    pub(super) fn transition(&self, from: State, to: State) -> bool {
        let done = self
            .state
            .compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if done {
            self.stopped_for_good(to);
        }
        done
    }
}
