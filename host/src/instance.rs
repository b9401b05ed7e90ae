//! One plugin instance as the host sees it: the object built by the plugin,
//! and the host handle ([`InstanceHost`]) it receives on every call.
//!
//! `InstanceHost` implements the FFI host trait: logging under the
//! instance's context and name, its names, terminating its context,
//! deactivating itself, and the dataframe operations, restricted to the
//! dataframes its context lists. Every callback that does more than read a
//! field (logging, every dataframe operation) runs inside `catch_unwind`: a
//! bug in the host must not unwind into a plugin (abi_stable would end the
//! process). No callback runs plugin code, so no plugin code ever runs under
//! a host lock.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_trait::TD_CanDowncast;
use abi_stable::std_types::{ROption, RResult, RSlice, RStr, RString, RVec};
use otools_abi::{
    CallError, CallErrorKind, CasOutcome, FfiHost, FfiHost_TO, FlowHost, FlowHost_Ref, HostRef,
    LockMode, MessageError, MessageFailure, MsgHost, MsgHost_Ref, NO_TIMEOUT,
};
use otools_abi::{HostError, LogLevel, Value};
use parking_lot::{Condvar, Mutex};

use crate::dataframe::{Caller, Dataframe, Deadline, OwnerId};
use crate::event::{self, Event, Events};
use crate::logging;
use crate::messaging::{self, Cancel, Failure, Outgoing, Router, ShortStr, correlation};
use crate::plugin::Library;

/// The next lease owner id. Process-wide on purpose: it only hands out ids
/// and holds no host state. An id is compared only within one dataframe's
/// lease table, and a dataframe belongs to one host, so two hosts drawing
/// from it never see each other; ids unique in the process are simply
/// unique in each host too.
static NEXT_OWNER: AtomicU64 = AtomicU64::new(1);

/// Wakes a context thread that waits for its next period or for a change.
#[derive(Default)]
pub struct Wake {
    epoch: Mutex<u64>,
    cond: Condvar,
}

impl Wake {
    /// Wakes every waiter.
    pub fn notify(&self) {
        *self.epoch.lock() += 1;
        self.cond.notify_all();
    }

    /// The current epoch; pass it to [`Wake::wait_until`].
    pub fn epoch(&self) -> u64 {
        *self.epoch.lock()
    }

    /// The one way to wait for a condition that a notify announces: until
    /// `done()` is true (then true) or `deadline` has passed (then false),
    /// looking again at each notify. The epoch is taken before each look,
    /// so a notify between a look and the wait is never missed.
    pub fn wait_for(&self, deadline: Instant, done: impl Fn() -> bool) -> bool {
        loop {
            let seen = self.epoch();
            if done() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            self.wait_until(seen, Some(deadline));
        }
    }

    /// Waits until `deadline` (or forever) unless notified since `seen`.
    pub fn wait_until(&self, seen: u64, deadline: Option<Instant>) {
        let mut epoch = self.epoch.lock();
        while *epoch == seen {
            match deadline {
                None => self.cond.wait(&mut epoch),
                Some(d) => {
                    if self.cond.wait_until(&mut epoch, d).timed_out() {
                        return;
                    }
                }
            }
        }
    }
}

/// What every instance of one context shares.
pub struct ContextShared {
    /// The context's name.
    pub name: String,
    /// Messages below this level are dropped (a `LogLevel` as u8).
    pub level: AtomicU8,
    /// Set to end the context (shared with its mailboxes' liveness).
    pub stop: Arc<AtomicBool>,
    /// Set when a service logged at `fatal`.
    pub fatal: AtomicBool,
    /// Wakes the context thread.
    pub wake: Wake,
    /// The dataframes the context lists; a plugin's handle is an index here.
    pub dataframes: Vec<Arc<Dataframe>>,
    /// Names of all dataframes of the manifest, to tell "unknown" from "not listed".
    pub all_dataframes: Arc<Vec<String>>,
    /// Where the context's lifecycle events go (the host's hub).
    pub events: Arc<Events>,
    /// The routing layer its services send, request and publish through.
    pub router: Arc<dyn Router>,
    /// Releases its services' requests in flight when it stops.
    pub cancel: Cancel,
    /// The host's running flows, which its services (or steps) may raise
    /// events in.
    pub flows: Arc<crate::messaging::FlowDirectory>,
}

impl ContextShared {
    /// Asks the context to end after the current call.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake.notify();
        // A service blocked in a request must not hold up the stop until
        // the request's timeout.
        self.cancel.fire(&format!(
            "the requester's context {} is stopping",
            self.name
        ));
    }

    /// Has the context been asked to end?
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// The host side of one instance: what its handle refers to.
///
/// It belongs to one *generation* of a service: when the service is
/// replaced (a restart after a failure or a hang), the old handle is *fenced* and every
/// callback through it is refused and counted, so a stale instance that
/// wakes up can change nothing.
pub struct InstanceHost {
    owner: OwnerId,
    /// The instance's context.
    pub context: Arc<ContextShared>,
    /// The service, trigger or condition name used in logs.
    pub name: String,
    /// `Context/name`: who its messages are from.
    address: ShortStr,
    /// The library it came from.
    pub library: Arc<Library>,
    /// Its export name.
    pub export: String,
    /// Which generation of the service this is (1 = the first instance).
    pub generation: u64,
    /// Set by the plugin through `deactivate`.
    pub deactivate: AtomicBool,
    /// Set when the instance must stop: its loop thread leaves after the current call.
    pub retired: AtomicBool,
    fenced: AtomicBool,
    fenced_calls: AtomicU64,
    leases: Mutex<Vec<u32>>,
    stash: Arc<Mutex<Option<Vec<u8>>>>,
}

impl InstanceHost {
    /// A handle for a new instance of generation `generation`, sharing the service's `stash`.
    pub fn new(
        context: Arc<ContextShared>,
        name: String,
        library: Arc<Library>,
        export: String,
        generation: u64,
        stash: Arc<Mutex<Option<Vec<u8>>>>,
    ) -> InstanceHost {
        if let Some(messaging) = &library.messaging {
            // Idempotent: the library keeps the first table it is given.
            (messaging.set_host())(msg_host_table());
        }
        if let Some(flow_events) = &library.flow_events {
            (flow_events.set_host())(flow_host_table());
        }
        InstanceHost {
            owner: NEXT_OWNER.fetch_add(1, Ordering::Relaxed),
            address: ShortStr::new(&format!("{}/{name}", context.name)),
            context,
            name,
            library,
            export,
            generation,
            deactivate: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            fenced: AtomicBool::new(false),
            fenced_calls: AtomicU64::new(0),
            leases: Mutex::new(Vec::new()),
            stash,
        }
    }

    /// Has the instance asked to be deactivated?
    pub fn deactivated(&self) -> bool {
        self.deactivate.load(Ordering::Relaxed)
    }

    /// Must the instance stop (retired or fenced)?
    pub fn retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed) || self.fenced.load(Ordering::Relaxed)
    }

    /// Refuses every later callback of this instance and releases its leases.
    pub fn fence(&self) {
        self.retired.store(true, Ordering::SeqCst);
        if !self.fenced.swap(true, Ordering::SeqCst) {
            self.release_leases();
        }
    }

    /// Is this instance fenced?
    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Relaxed)
    }

    /// Who events about this instance are about.
    fn unit_id(&self) -> event::Unit {
        event::Unit::new(&self.context.name, &self.name, self.generation)
    }

    /// Counts and records a refused callback. The first ten of an instance
    /// are journaled one by one, then every thousandth, so a spinning stale
    /// thread cannot flood the journal.
    #[cold]
    fn refuse(&self, call: &str) {
        let n = self.fenced_calls.fetch_add(1, Ordering::Relaxed) + 1;
        if n <= 10 || n % 1000 == 0 {
            self.context.events.emit(&Event::FencedCall {
                unit: self.unit_id(),
                call: call.into(),
                fenced_calls: n,
            });
        }
    }

    /// Who the instance is to a dataframe: its lease owner id, and its fence,
    /// which the dataframe checks again under its lock right before a write.
    fn writer(&self) -> Caller<'_> {
        Caller::fenced_by(self.owner, &self.fenced)
    }

    /// Counts and records a write refused by the dataframe because the
    /// instance was fenced while it waited (for a lease or the map lock).
    fn refused_late<T>(&self, call: &str, r: Result<T, HostError>) -> Result<T, HostError> {
        if matches!(r, Err(HostError::Fenced)) {
            self.refuse(call);
        }
        r
    }

    /// True (and counted) if the instance is fenced.
    fn fenced_check(&self, call: &str) -> bool {
        if self.fenced.load(Ordering::Relaxed) {
            self.refuse(call);
            true
        } else {
            false
        }
    }

    /// Runs `f` with a borrowed FFI handle to this host. The handle can
    /// be downcast back to this `InstanceHost`, which is how a messaging
    /// callback knows who calls.
    pub fn with_handle<R>(&self, f: impl FnOnce(HostRef<'_>) -> R) -> R {
        f(FfiHost_TO::from_ptr(self, TD_CanDowncast))
    }

    /// Releases every dataframe lock the instance still holds. Called when the
    /// instance ends (finalized or deactivated): a guard the plugin leaked
    /// (e.g. with `mem::forget`) must not lock others out for ever.
    pub fn release_leases(&self) {
        let held = std::mem::take(&mut *self.leases.lock());
        for df in held {
            if let Some(d) = self.context.dataframes.get(df as usize) {
                d.release_all(self.owner);
                tracing::warn!(
                    context = %self.context.name,
                    service = %self.name,
                    "lock on dataframe `{}` was still held when the instance ended; released",
                    d.name()
                );
            }
        }
    }

    fn df(&self, index: u32) -> Result<&Dataframe, HostError> {
        self.context
            .dataframes
            .get(index as usize)
            .map(|d| &**d)
            .ok_or(HostError::UnknownDataframe)
    }

    /// Logs and journals a panic in the destructor of the instance's plugin
    /// object (caught inside the plugin; the object is gone either way).
    pub fn report_drop_panic(&self, message: &str) {
        tracing::error!(
            context = %self.context.name,
            service = %self.name,
            library = %self.library.path.display(),
            export = %self.export,
            entry = "drop",
            "drop panicked: {message}"
        );
        self.context.events.emit(&Event::DropPanicked {
            unit: self.unit_id(),
            reason: message.into(),
        });
    }

    /// Collects the panic (if any) of the plugin object of this instance
    /// that was just dropped on this thread, and reports it.
    pub fn collect_drop_panic(&self) {
        let message = self
            .library
            .root
            .take_drop_panic()
            .and_then(|take| take().into_option());
        if let Some(message) = message {
            self.report_drop_panic(message.as_str());
        }
    }

    /// Logs a failed call with everything needed to find the culprit (and,
    /// in a message handler, the correlation id of its message).
    pub fn report_failure(&self, entry: &str, e: &CallError) {
        let what = match e.kind {
            CallErrorKind::Panicked => "panicked",
            _ => "failed",
        };
        correlation::with_current(|correlation| {
            tracing::error!(
                context = %self.context.name,
                service = %self.name,
                library = %self.library.path.display(),
                export = %self.export,
                entry,
                correlation,
                "{entry} {what}: {}",
                e.message
            );
        });
    }
}

/// A messaging deadline: `timeout_ns` from now ([`NO_TIMEOUT`]: a far future).
fn message_deadline(timeout_ns: u64) -> Instant {
    messaging::deadline_after(Duration::from_nanos(timeout_ns))
}

fn ffi_failure(f: Failure) -> MessageFailure {
    MessageFailure::new(f.kind, f.message)
}

fn fenced_failure() -> MessageFailure {
    MessageFailure::new(MessageError::Fenced, MessageError::Fenced.describe())
}

fn internal_failure() -> MessageFailure {
    MessageFailure::new(
        MessageError::PeerFailed,
        "internal host error; the message is in the host log",
    )
}

impl InstanceHost {
    /// A message from this instance: its correlation id is the next child
    /// of the message being handled on this thread, or a new root id.
    fn outgoing<'a>(&self, name: &'a str, payload: Value) -> Outgoing<'a> {
        Outgoing {
            from: self.address.clone(),
            name,
            payload,
            correlation: correlation::next_child()
                .unwrap_or_else(|| self.context.router.new_correlation()),
            cancel: None,
        }
    }
}

fn deadline(timeout_ns: u64) -> Deadline {
    if timeout_ns == NO_TIMEOUT {
        None
    } else {
        Some(Instant::now() + Duration::from_nanos(timeout_ns))
    }
}

/// Runs a host callback, turning a panic into an error instead of unwinding into the plugin.
fn shield<T>(name: &str, fallback: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(_) => {
            tracing::error!(
                "host callback `{name}` panicked (a host bug); the plugin gets an error"
            );
            fallback
        }
    }
}

impl FfiHost for InstanceHost {
    fn log_enabled(&self, level: LogLevel) -> bool {
        level as u8 >= self.context.level.load(Ordering::Relaxed)
    }

    fn log(&self, level: LogLevel, message: RStr<'_>) {
        if self.fenced_check("log") {
            return;
        }
        shield("log", (), || {
            if self.log_enabled(level) {
                correlation::with_current(|c| {
                    logging::plugin_event_correlated(
                        level,
                        &self.context.name,
                        &self.name,
                        message.as_str(),
                        c,
                    );
                });
            }
            if level == LogLevel::Fatal {
                self.context.fatal.store(true, Ordering::SeqCst);
                self.context.request_stop();
            }
        });
    }

    fn context_name(&self) -> RStr<'_> {
        RStr::from_str(&self.context.name)
    }

    fn service_name(&self) -> RStr<'_> {
        RStr::from_str(&self.name)
    }

    fn terminate_context(&self) {
        if self.fenced_check("terminate_context") {
            return;
        }
        self.context.request_stop();
    }

    fn deactivate(&self) {
        if self.fenced_check("deactivate") {
            return;
        }
        self.deactivate.store(true, Ordering::SeqCst);
        self.context.wake.notify();
    }

    fn dataframe(&self, name: RStr<'_>) -> RResult<u32, HostError> {
        if self.fenced_check("dataframe") {
            return RResult::RErr(HostError::Fenced);
        }
        let name = name.as_str();
        match self
            .context
            .dataframes
            .iter()
            .position(|d| d.name() == name)
        {
            Some(i) => RResult::ROk(u32::try_from(i).unwrap_or(u32::MAX)),
            None if self.context.all_dataframes.iter().any(|n| n == name) => {
                RResult::RErr(HostError::NotPermitted)
            }
            None => RResult::RErr(HostError::UnknownDataframe),
        }
    }

    fn df_get(
        &self,
        df: u32,
        key: RStr<'_>,
        timeout_ns: u64,
    ) -> RResult<ROption<Value>, HostError> {
        if self.fenced_check("get") {
            return RResult::RErr(HostError::Fenced);
        }
        shield("get", RResult::RErr(HostError::Internal), || {
            self.df(df)
                .and_then(|d| d.get(self.owner, key.as_str(), deadline(timeout_ns)))
                .map(ROption::from)
                .into()
        })
    }

    fn df_set(
        &self,
        df: u32,
        key: RStr<'_>,
        value: Value,
        timeout_ns: u64,
    ) -> RResult<(), HostError> {
        if self.fenced_check("set") {
            return RResult::RErr(HostError::Fenced);
        }
        shield("set", RResult::RErr(HostError::Internal), || {
            let r = self
                .df(df)
                .and_then(|d| d.set(self.writer(), key.as_str(), value, deadline(timeout_ns)));
            self.refused_late("set", r).into()
        })
    }

    fn df_remove(
        &self,
        df: u32,
        key: RStr<'_>,
        timeout_ns: u64,
    ) -> RResult<ROption<Value>, HostError> {
        if self.fenced_check("remove") {
            return RResult::RErr(HostError::Fenced);
        }
        shield("remove", RResult::RErr(HostError::Internal), || {
            let r = self
                .df(df)
                .and_then(|d| d.remove(self.writer(), key.as_str(), deadline(timeout_ns)));
            self.refused_late("remove", r).map(ROption::from).into()
        })
    }

    fn df_add(
        &self,
        df: u32,
        key: RStr<'_>,
        by: Value,
        timeout_ns: u64,
    ) -> RResult<Value, HostError> {
        if self.fenced_check("add") {
            return RResult::RErr(HostError::Fenced);
        }
        shield("add", RResult::RErr(HostError::Internal), || {
            let r = self
                .df(df)
                .and_then(|d| d.add(self.writer(), key.as_str(), &by, deadline(timeout_ns)));
            self.refused_late("add", r).into()
        })
    }

    fn df_compare_and_swap(
        &self,
        df: u32,
        key: RStr<'_>,
        expected: ROption<Value>,
        new: Value,
        timeout_ns: u64,
    ) -> RResult<CasOutcome, HostError> {
        if self.fenced_check("compare_and_swap") {
            return RResult::RErr(HostError::Fenced);
        }
        shield(
            "compare_and_swap",
            RResult::RErr(HostError::Internal),
            || {
                let r = self.df(df).and_then(|d| {
                    d.compare_and_swap(
                        self.writer(),
                        key.as_str(),
                        expected.as_ref().into_option(),
                        new,
                        deadline(timeout_ns),
                    )
                });
                self.refused_late("compare_and_swap", r)
                    .map(|outcome| match outcome {
                        Ok(()) => CasOutcome {
                            swapped: true,
                            actual: ROption::RNone,
                        },
                        Err(actual) => CasOutcome {
                            swapped: false,
                            actual: actual.into(),
                        },
                    })
                    .into()
            },
        )
    }

    fn df_keys(&self, df: u32, timeout_ns: u64) -> RResult<RVec<RString>, HostError> {
        if self.fenced_check("keys") {
            return RResult::RErr(HostError::Fenced);
        }
        shield("keys", RResult::RErr(HostError::Internal), || {
            self.df(df)
                .and_then(|d| d.keys(self.owner, deadline(timeout_ns)))
                .map(|keys| keys.into_iter().map(RString::from).collect())
                .into()
        })
    }

    fn df_lock(&self, df: u32, mode: LockMode, timeout_ns: u64) -> RResult<(), HostError> {
        if self.fenced_check("lock") {
            return RResult::RErr(HostError::Fenced);
        }
        shield("lock", RResult::RErr(HostError::Internal), || {
            let r = self
                .df(df)
                .and_then(|d| d.acquire(self.owner, mode, deadline(timeout_ns)));
            if let Ok(()) = r {
                // Recorded under the list's lock, and refused if the instance
                // was fenced while it waited: a dead instance never holds a lock.
                let mut held = self.leases.lock();
                if self.fenced.load(Ordering::SeqCst) {
                    drop(held);
                    if let Ok(d) = self.df(df) {
                        let _ = d.release(self.owner, mode);
                    }
                    return RResult::RErr(HostError::Fenced);
                }
                held.push(df);
            }
            r.into()
        })
    }

    fn df_unlock(&self, df: u32, mode: LockMode) -> RResult<(), HostError> {
        if self.fenced_check("unlock") {
            return RResult::RErr(HostError::Fenced);
        }
        shield("unlock", RResult::RErr(HostError::Internal), || {
            let r = self.df(df).and_then(|d| d.release(self.owner, mode));
            if r.is_ok() {
                let mut held = self.leases.lock();
                if let Some(i) = held.iter().position(|h| *h == df) {
                    held.swap_remove(i);
                }
            }
            r.into()
        })
    }

    fn stash_get(&self) -> ROption<RVec<u8>> {
        if self.fenced_check("stash_get") {
            return ROption::RNone;
        }
        shield("stash_get", ROption::RNone, || {
            self.stash
                .lock()
                .as_ref()
                .map(|b| RVec::from(b.clone()))
                .into()
        })
    }

    fn stash_set(&self, bytes: RSlice<'_, u8>) -> RResult<(), HostError> {
        if self.fenced_check("stash_set") {
            return RResult::RErr(HostError::Fenced);
        }
        shield("stash_set", RResult::RErr(HostError::Internal), || {
            *self.stash.lock() = Some(bytes.to_vec());
            RResult::ROk(())
        })
    }
}

/// Messaging callbacks: plugins reach them through the [`MsgHost`] table
/// the host hands each library at load ([`msg_host_table`]), with the host
/// handle of the call they are in, which leads back to the instance.
impl InstanceHost {
    /// Sends `name` with `payload` from this instance through `go` on the
    /// context's router: refused when fenced, shielded, and with the
    /// message's correlation id (see [`InstanceHost::outgoing`]).
    fn route<T>(
        &self,
        call: &str,
        name: &str,
        payload: Value,
        go: impl FnOnce(&dyn Router, Outgoing<'_>) -> Result<T, Failure>,
    ) -> RResult<T, MessageFailure> {
        if self.fenced_check(call) {
            return RResult::RErr(fenced_failure());
        }
        shield(call, RResult::RErr(internal_failure()), || {
            let msg = self.outgoing(name, payload);
            go(&*self.context.router, msg).map_err(ffi_failure).into()
        })
    }
}

/// Runs `f` on the instance a plugin's host handle belongs to (every
/// handle the host lends is downcastable: [`InstanceHost::with_handle`]).
fn with_caller<T>(
    caller: &HostRef<'_>,
    f: impl FnOnce(&InstanceHost) -> RResult<T, MessageFailure>,
) -> RResult<T, MessageFailure> {
    match caller.obj.downcast_as::<InstanceHost>() {
        Ok(h) => f(h),
        Err(_) => RResult::RErr(MessageFailure::new(
            MessageError::Fenced,
            "the host handle given is not one this host lent",
        )),
    }
}

#[allow(
    improper_ctypes_definitions,
    reason = "Value is a #[repr(u8)] StableAbi enum whose layout abi_stable checks; #[non_exhaustive] only binds Rust code"
)]
extern "C" fn host_send(
    caller: HostRef<'_>,
    to: RStr<'_>,
    name: RStr<'_>,
    payload: Value,
    timeout_ns: u64,
) -> RResult<(), MessageFailure> {
    with_caller(&caller, |h| {
        h.route("send", name.as_str(), payload, |r, msg| {
            r.send(to.as_str(), msg, Duration::from_nanos(timeout_ns))
        })
    })
}

#[allow(
    improper_ctypes_definitions,
    reason = "Value is a #[repr(u8)] StableAbi enum whose layout abi_stable checks; #[non_exhaustive] only binds Rust code"
)]
extern "C" fn host_request(
    caller: HostRef<'_>,
    to: RStr<'_>,
    name: RStr<'_>,
    payload: Value,
    timeout_ns: u64,
) -> RResult<Value, MessageFailure> {
    with_caller(&caller, |h| {
        h.route("request", name.as_str(), payload, |r, mut msg| {
            // Released when the context stops (one-way sends never wait
            // for an answer).
            msg.cancel = Some(h.context.cancel.clone());
            r.request(to.as_str(), msg, message_deadline(timeout_ns))
        })
    })
}

#[allow(
    improper_ctypes_definitions,
    reason = "Value is a #[repr(u8)] StableAbi enum whose layout abi_stable checks; #[non_exhaustive] only binds Rust code"
)]
extern "C" fn host_publish(
    caller: HostRef<'_>,
    topic: RStr<'_>,
    payload: Value,
    timeout_ns: u64,
) -> RResult<u32, MessageFailure> {
    with_caller(&caller, |h| {
        h.route("publish", topic.as_str(), payload, |r, msg| {
            r.publish(topic.as_str(), msg, message_deadline(timeout_ns))
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
        })
    })
}

extern "C" fn host_correlation_id() -> ROption<RString> {
    correlation::with_current(|c| c.map(RString::from).into())
}

/// The host's messaging callbacks, handed to every library that has a
/// messaging root (a constant table of functions, built once).
pub fn msg_host_table() -> MsgHost_Ref {
    static TABLE: OnceLock<MsgHost_Ref> = OnceLock::new();
    *TABLE.get_or_init(|| {
        MsgHost {
            send: host_send,
            request: host_request,
            publish: host_publish,
            correlation_id: host_correlation_id,
        }
        .leak_into_prefix()
    })
}

extern "C" fn host_raise(
    caller: HostRef<'_>,
    flow: RStr<'_>,
    event: RStr<'_>,
    sequence: RStr<'_>,
) -> RResult<(), MessageFailure> {
    with_caller(&caller, |h| {
        if h.fenced_check("raise") {
            return RResult::RErr(fenced_failure());
        }
        shield("raise", RResult::RErr(internal_failure()), || {
            let from = format!("{}/{}", h.context.name, h.name);
            let flow = Some(flow.as_str()).filter(|f| !f.is_empty());
            h.context
                .flows
                .raise(flow, event.as_str(), sequence.as_str(), &from)
                .map(drop)
                .map_err(ffi_failure)
                .into()
        })
    })
}

/// The host's flow-event callbacks, handed to every library that has a
/// flow-event root (a constant table of functions, built once).
pub fn flow_host_table() -> FlowHost_Ref {
    static TABLE: OnceLock<FlowHost_Ref> = OnceLock::new();
    *TABLE.get_or_init(|| FlowHost { raise: host_raise }.leak_into_prefix())
}
