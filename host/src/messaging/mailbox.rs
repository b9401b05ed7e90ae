//! A unit's mailbox: a bounded queue of [`Envelope`]s, and the reply slot of
//! a request ([`reply_pair`]).
//!
//! The mailbox is shared by the senders (through a [`super::Router`]) and
//! the unit's mailbox thread, one per serving generation. A generation's
//! thread [`Mailbox::attach`]es and gets a token; attaching again (the next
//! generation) wakes the previous thread, which leaves, so only one thread
//! ever takes messages out, and they are handled in queue order. An idle
//! thread blocks on a condvar: nothing polls.
//!
//! No plugin code runs under the mailbox lock, and no [`Value`] is dropped
//! under it (a value a plugin built frees its memory through that plugin's
//! code): refused and drained envelopes are handed back and dropped after
//! the lock is released.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use otools_abi::{MessageError, Value};
use parking_lot::{Condvar, Mutex, MutexGuard, RwLock};

/// How long a mailbox thread or a requester spins before it parks.
const SPIN: Duration = Duration::from_micros(50);

use super::{EndpointSpec, Failure};

/// One queued message.
#[derive(Debug)]
pub struct Envelope {
    /// Who sent it.
    pub from: String,
    /// Its name.
    pub name: String,
    /// Its payload.
    pub payload: Value,
    /// Its correlation id.
    pub correlation: String,
    /// Where the reply goes, for a request.
    pub reply: Option<ReplyTo>,
}

struct ReplySlot {
    value: Mutex<Option<Result<Value, Failure>>>,
    ready: Condvar,
}

/// The replier's end of a request: answered at most once; dropped
/// unanswered, it answers [`MessageError::PeerGone`].
#[derive(Debug)]
pub struct ReplyTo(Option<Arc<ReplySlot>>);

/// The requester's end of a request.
pub struct Pending(Arc<ReplySlot>);

impl std::fmt::Debug for ReplySlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplySlot")
    }
}

/// A new request's two ends.
pub fn reply_pair() -> (ReplyTo, Pending) {
    let slot = Arc::new(ReplySlot {
        value: Mutex::new(None),
        ready: Condvar::new(),
    });
    (ReplyTo(Some(Arc::clone(&slot))), Pending(slot))
}

impl ReplySlot {
    /// Answers with `r` unless it was answered already (a refused answer is
    /// dropped outside the lock).
    fn settle(&self, r: Result<Value, Failure>) {
        let refused = {
            let mut v = self.value.lock();
            if v.is_none() {
                *v = Some(r);
                None
            } else {
                Some(r)
            }
        };
        self.ready.notify_all();
        drop(refused);
    }
}

impl ReplyTo {
    /// Answers the request (a requester that gave up ignores it).
    pub fn answer(mut self, r: Result<Value, Failure>) {
        if let Some(slot) = self.0.take() {
            let old = slot.value.lock().replace(r);
            slot.ready.notify_all();
            drop(old);
        }
    }
}

impl Drop for ReplyTo {
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            slot.settle(Err(Failure::new(
                MessageError::PeerGone,
                "the request was dropped without an answer",
            )));
        }
    }
}

/// Releases the requests a group of senders (one context) has in flight:
/// when it fires, each of them is answered [`MessageError::PeerGone`] with
/// the reason at once, instead of waiting for its reply or its timeout.
/// Requests made after it fired wait as usual (a `finalize` may still
/// request).
#[derive(Clone, Default)]
pub struct Cancel(Arc<Mutex<Vec<std::sync::Weak<ReplySlot>>>>);

impl std::fmt::Debug for Cancel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cancel")
    }
}

impl Cancel {
    /// Answers every request in flight `PeerGone` with `reason`.
    pub fn fire(&self, reason: &str) {
        let waiting = std::mem::take(&mut *self.0.lock());
        for slot in waiting.iter().filter_map(std::sync::Weak::upgrade) {
            slot.settle(Err(Failure::new(MessageError::PeerGone, reason)));
        }
    }

    /// Watches `pending` until it is answered (or dropped).
    pub fn watch(&self, pending: &Pending) {
        let mut v = self.0.lock();
        v.retain(|w| w.strong_count() > 0);
        v.push(Arc::downgrade(&pending.0));
    }
}

impl Pending {
    /// Waits until `deadline` for the answer; `Timeout` after it.
    pub fn wait(self, deadline: Instant, to: &str) -> Result<Value, Failure> {
        let mut v = self.0.value.lock();
        // A reply usually comes within microseconds: spin briefly before
        // parking (see `Mailbox::next`).
        let until = Instant::now() + SPIN;
        while v.is_none() && Instant::now() < until.min(deadline) {
            MutexGuard::unlocked(&mut v, std::hint::spin_loop);
        }
        loop {
            if let Some(r) = v.take() {
                return r;
            }
            if self.0.ready.wait_until(&mut v, deadline).timed_out() {
                if let Some(r) = v.take() {
                    return r;
                }
                return Err(Failure::new(
                    MessageError::Timeout,
                    format!("no reply from {to} within the request's timeout"),
                ));
            }
        }
    }
}

/// What [`Mailbox::next`] hands the mailbox thread.
#[derive(Debug)]
pub enum Next {
    /// The next message.
    Message(Envelope),
    /// Leave: another generation attached, or `leave` said so.
    Leave,
}

struct Inner {
    queue: VecDeque<Envelope>,
    token: u64,
    closed: bool,
}

type Liveness = Box<dyn Fn() -> bool + Send + Sync>;

/// A unit's mailbox; see the module docs.
pub struct Mailbox {
    /// `Context/service`.
    pub address: String,
    /// Its context.
    pub context: String,
    /// Its service.
    pub service: String,
    capacity: usize,
    inner: Mutex<Inner>,
    /// Wakes the mailbox thread: a message, a new token, a close.
    arrived: Condvar,
    /// Wakes senders waiting for room.
    room: Condvar,
    accepts: RwLock<Vec<(String, String)>>,
    alive: OnceLock<Liveness>,
    generation: AtomicU64,
    high_water: AtomicUsize,
    handled: AtomicU64,
}

impl Mailbox {
    /// An empty, open mailbox for `spec`.
    pub fn new(spec: &EndpointSpec) -> Mailbox {
        Mailbox {
            address: format!("{}/{}", spec.context, spec.service),
            context: spec.context.clone(),
            service: spec.service.clone(),
            capacity: spec.capacity.max(1),
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                token: 0,
                closed: false,
            }),
            arrived: Condvar::new(),
            room: Condvar::new(),
            accepts: RwLock::new(spec.accepts.clone()),
            alive: OnceLock::new(),
            generation: AtomicU64::new(1),
            high_water: AtomicUsize::new(0),
            handled: AtomicU64::new(0),
        }
    }

    /// Sets how the mailbox tells whether its unit can still handle
    /// messages (set once, by the runtime); without it, it always can.
    pub fn set_liveness(&self, alive: impl Fn() -> bool + Send + Sync + 'static) {
        let _ = self.alive.set(Box::new(alive));
    }

    /// Replaces what the mailbox accepts (a new generation may differ).
    pub fn set_accepts(&self, accepts: Vec<(String, String)>) {
        *self.accepts.write() = accepts;
    }

    /// Does the unit accept `name`? Its payload type if so.
    pub fn payload_type(&self, name: &str) -> Option<String> {
        self.accepts
            .read()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.clone())
    }

    /// The names the unit accepts.
    pub fn accepted(&self) -> Vec<String> {
        self.accepts.read().iter().map(|(n, _)| n.clone()).collect()
    }

    /// The generation now attached (for events about the unit).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Can the unit still handle messages (not closed, and alive)?
    pub fn is_alive(&self) -> bool {
        let closed = self.inner.lock().closed;
        // The liveness check runs outside the lock.
        !closed && self.alive.get().is_none_or(|f| f())
    }

    /// Checks a message against what the unit accepts, before it is queued:
    /// `PeerGone`, `UnknownMessage` (the reserved `SHUTDOWN` is always
    /// accepted) or `InvalidPayload`.
    pub fn check(&self, name: &str, payload: &Value) -> Result<(), Failure> {
        if !self.is_alive() {
            return Err(Failure::new(
                MessageError::PeerGone,
                format!(
                    "{} has ended, gave up, or its context is stopping",
                    self.address
                ),
            ));
        }
        if name == super::SHUTDOWN {
            return Ok(());
        }
        match self.payload_type(name) {
            None => Err(Failure::new(
                MessageError::UnknownMessage,
                format!(
                    "{} accepts no message `{name}` (it accepts: {})",
                    self.address,
                    self.accepted().join(", ")
                ),
            )),
            Some(t) if t != "any" && t != payload.type_name() => Err(Failure::new(
                MessageError::InvalidPayload,
                format!(
                    "{} takes a payload of type {t} with `{name}`, not {}",
                    self.address,
                    payload.type_name()
                ),
            )),
            Some(_) => Ok(()),
        }
    }

    /// Queues `env`, waiting until `deadline` for room. A refused envelope
    /// is handed back, for the caller to drop outside the lock.
    pub fn push(&self, env: Envelope, deadline: Instant) -> Result<(), Box<(Failure, Envelope)>> {
        let mut inner = self.inner.lock();
        loop {
            if inner.closed {
                drop(inner);
                let f = Failure::new(
                    MessageError::PeerGone,
                    format!("{} has ended", self.address),
                );
                return Err(Box::new((f, env)));
            }
            if inner.queue.len() < self.capacity {
                inner.queue.push_back(env);
                self.high_water
                    .fetch_max(inner.queue.len(), Ordering::Relaxed);
                drop(inner);
                self.arrived.notify_all();
                // The unit may have stopped for good between the sender's
                // check and now: nobody would take the message out.
                if !self.is_alive() {
                    self.drain("has ended or gave up");
                }
                return Ok(());
            }
            if self.room.wait_until(&mut inner, deadline).timed_out()
                && inner.queue.len() >= self.capacity
            {
                drop(inner);
                let f = Failure::new(
                    MessageError::MailboxFull,
                    format!(
                        "the mailbox of {} stayed full ({} messages) for the whole timeout",
                        self.address, self.capacity
                    ),
                );
                return Err(Box::new((f, env)));
            }
        }
    }

    /// Makes the caller (generation `generation`'s mailbox thread) the only
    /// one that takes messages out; returns its token. A thread attached
    /// before is woken, and leaves.
    pub fn attach(&self, generation: u64) -> u64 {
        self.generation.store(generation, Ordering::Relaxed);
        let mut inner = self.inner.lock();
        inner.token += 1;
        let token = inner.token;
        drop(inner);
        self.arrived.notify_all();
        token
    }

    /// Blocks until a message is there for the holder of `token`, or it
    /// must leave: another token was attached, the mailbox was closed, or
    /// `leave()` (checked on every wake-up, under the lock: keep it to a
    /// few atomic loads) says so.
    pub fn next(&self, token: u64, leave: &dyn Fn() -> bool) -> Next {
        let mut inner = self.inner.lock();
        let mut spun = false;
        loop {
            if inner.token != token || inner.closed || leave() {
                return Next::Leave;
            }
            if let Some(env) = inner.queue.pop_front() {
                drop(inner);
                self.room.notify_one();
                return Next::Message(env);
            }
            // Spin a little before parking: waking a parked thread costs
            // tens of microseconds on a VM, far more than a message that
            // follows another closely. Bounded, and only right after
            // work: an idle mailbox parks.
            if !spun {
                spun = true;
                let until = Instant::now() + SPIN;
                let mut seen = false;
                while !seen && Instant::now() < until {
                    MutexGuard::unlocked(&mut inner, std::hint::spin_loop);
                    seen = !inner.queue.is_empty() || inner.token != token || inner.closed;
                }
                continue;
            }
            self.arrived.wait(&mut inner);
        }
    }

    /// Puts a message taken out but not handled back at the head of the
    /// queue (its thread had to leave first), whatever the capacity.
    pub fn put_back(&self, env: Envelope) {
        self.inner.lock().queue.push_front(env);
        self.arrived.notify_all();
    }

    /// Wakes the mailbox thread so that it checks whether it must leave.
    pub fn wake(&self) {
        let _guard = self.inner.lock();
        self.arrived.notify_all();
    }

    /// Closes the mailbox for good: later sends get `PeerGone`, and so do
    /// the requests still queued.
    pub fn close(&self) {
        let drained: Vec<Envelope> = {
            let mut inner = self.inner.lock();
            inner.closed = true;
            inner.queue.drain(..).collect()
        };
        self.arrived.notify_all();
        self.room.notify_all();
        self.gone(drained, "ended");
    }

    /// Answers the requests among `drained` `PeerGone`: the unit `why`
    /// before handling them.
    fn gone(&self, drained: Vec<Envelope>, why: &str) {
        for env in drained {
            if let Some(reply) = env.reply {
                reply.answer(Err(Failure::new(
                    MessageError::PeerGone,
                    format!("{} {why} before handling `{}`", self.address, env.name),
                )));
            }
        }
    }

    /// Empties the mailbox without closing it (its unit stopped for good
    /// but may be revived by a reload): queued requests are answered
    /// `PeerGone` at once, one-way messages are dropped.
    pub fn drain(&self, why: &str) {
        let drained: Vec<Envelope> = self.inner.lock().queue.drain(..).collect();
        self.room.notify_all();
        self.gone(drained, why);
    }

    /// Counts one handled message.
    pub fn note_handled(&self) {
        self.handled.fetch_add(1, Ordering::Relaxed);
    }

    /// Messages queued now.
    pub fn depth(&self) -> usize {
        self.inner.lock().queue.len()
    }

    /// The most messages ever queued at once.
    pub fn high_water(&self) -> usize {
        self.high_water.load(Ordering::Relaxed)
    }

    /// Messages handled so far (by every generation).
    pub fn handled(&self) -> u64 {
        self.handled.load(Ordering::Relaxed)
    }
}
