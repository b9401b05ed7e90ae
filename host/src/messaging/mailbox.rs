//! A unit's mailbox: a bounded queue of [`Envelope`]s, and the reply slot of
//! a request ([`reply_pair`]).
//!
//! The mailbox is shared by the senders (through a [`super::Router`]) and
//! the unit's mailbox thread, one per serving generation. A generation's
//! thread [`Mailbox::attach`]es and gets a token; attaching again (the next
//! generation) wakes the previous thread, which leaves, so only one thread
//! ever takes messages out, and they are handled in queue order.
//!
//! The queue has two halves, so that a burst of messages costs the sender
//! and the mailbox thread little more than a move each: senders append to
//! the back half under its lock; the mailbox thread hands messages out of
//! the front half, and when that is empty swaps the two halves in one go
//! (one lock per batch, not per message; the emptied half goes back to the
//! senders with its room, so a steady flow allocates nothing). How many
//! messages are queued is `pushed - taken`, two counters each written on
//! one side only, so the bound (`mailbox_size`) holds over both halves
//! without a shared lock per message. An idle thread spins briefly on those
//! counters, then blocks on a condvar: nothing polls. A sender wakes it only
//! when it is blocked, and a thread that takes a message wakes a sender
//! only when one waits for room.
//!
//! No plugin code runs under a mailbox lock, and no [`Value`] is dropped
//! under one (a value a plugin built frees its memory through that
//! plugin's code): refused and drained envelopes are handed back and
//! dropped after the locks are released.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use otools_abi::{MessageError, Value};
use parking_lot::{Condvar, Mutex};

use super::correlation::CorrelationId;
use super::{EndpointSpec, Failure, ShortStr};

/// How long a mailbox thread or a requester spins before it parks.
const SPIN: Duration = Duration::from_micros(50);

/// Waits until `ready()` or `until`, without parking: a few rounds of
/// busy spinning, then yielding the CPU between looks (the thread that
/// would make it ready may share this CPU: on a small machine the
/// scheduler often wakes one thread on its waker's CPU). Returns
/// `ready()`.
fn spin_until(until: Instant, ready: impl Fn() -> bool) -> bool {
    for _ in 0..64 {
        if ready() {
            return true;
        }
        std::hint::spin_loop();
    }
    while !ready() {
        if Instant::now() >= until {
            return false;
        }
        std::thread::yield_now();
    }
    true
}

/// One queued message.
#[derive(Debug)]
pub struct Envelope {
    /// Who sent it (`Context/service`, or `control`).
    pub from: ShortStr,
    /// Its name.
    pub name: ShortStr,
    /// Its payload.
    pub payload: Value,
    /// Its correlation id.
    pub correlation: CorrelationId,
    /// Where the reply goes, for a request.
    pub reply: Option<ReplyTo>,
}

struct ReplySlot {
    value: Mutex<Option<Result<Value, Failure>>>,
    /// Set once `value` is: what a spinning requester watches.
    answered: AtomicBool,
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
        answered: AtomicBool::new(false),
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
                self.answered.store(true, Ordering::Release);
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
            slot.answered.store(true, Ordering::Release);
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
        // A reply usually comes within microseconds: spin briefly before
        // parking (see `Mailbox::next`), on a flag, not on the lock the
        // replier needs.
        spin_until((Instant::now() + SPIN).min(deadline), || {
            self.0.answered.load(Ordering::Acquire)
        });
        let mut v = self.0.value.lock();
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

/// How long [`Mailbox::push`] may wait for room.
#[derive(Debug, Clone, Copy)]
pub enum Wait {
    /// Until this instant.
    Until(Instant),
    /// This long from when the mailbox is found full: a mailbox with room
    /// costs no clock reading.
    For(Duration),
}

impl Wait {
    fn deadline(self) -> Instant {
        match self {
            Wait::Until(at) => at,
            Wait::For(d) => super::deadline_after(d),
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

/// On a cache line (and its prefetched neighbour) of its own: what the
/// senders write stays out of the mailbox thread's line, and the reverse.
#[repr(align(128))]
struct Own<T>(T);

impl<T> std::ops::Deref for Own<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// The senders' side: their half of the queue, and how many messages
/// they ever queued.
struct SenderSide {
    back: Mutex<Back>,
    /// Messages ever queued (and put back); written under `back`'s lock.
    pushed: AtomicU64,
}

/// The mailbox thread's side: its half of the queue, and how many
/// messages it ever took out.
struct TakerSide {
    /// Handed out first, refilled from the senders' half.
    front: Mutex<VecDeque<Envelope>>,
    /// Messages ever handed out or drained; written under `front`'s lock.
    taken: AtomicU64,
    handled: AtomicU64,
}

/// The senders' half of the queue.
struct Back {
    queue: VecDeque<Envelope>,
    /// `Mailbox::taken` as last read by a sender: while `pushed` minus it is
    /// below the capacity there is room for sure (`taken` only grows), and
    /// the mailbox thread's counter need not be read.
    taken_seen: u64,
}

/// One accepted message name and its payload type (`any` for any).
struct Accept {
    name: Arc<str>,
    payload: String,
}

fn accepts_of(list: Vec<(String, String)>) -> Arc<Vec<Accept>> {
    Arc::new(
        list.into_iter()
            .map(|(name, payload)| Accept {
                name: Arc::from(name),
                payload,
            })
            .collect(),
    )
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
    capacity: u64,
    /// Lock order: `taker.front`, then `sender.back`.
    sender: Own<SenderSide>,
    taker: Own<TakerSide>,
    /// Senders blocked waiting for room.
    waiting_for_room: AtomicUsize,
    /// The token of the thread that may take messages out.
    token: AtomicU64,
    closed: AtomicBool,
    /// Wakes the mailbox thread: a message, a new token, a close (waited
    /// on with `back`'s lock).
    arrived: Condvar,
    /// Wakes senders waiting for room (with `back`'s lock).
    room: Condvar,
    accepts: ArcSwap<Vec<Accept>>,
    alive: OnceLock<Liveness>,
    generation: AtomicU64,
    high_water: AtomicUsize,
}

impl Mailbox {
    /// An empty, open mailbox for `spec`.
    pub fn new(spec: &EndpointSpec) -> Mailbox {
        Mailbox {
            address: format!("{}/{}", spec.context, spec.service),
            context: spec.context.clone(),
            service: spec.service.clone(),
            capacity: spec.capacity.max(1) as u64,
            sender: Own(SenderSide {
                back: Mutex::new(Back {
                    queue: VecDeque::new(),
                    taken_seen: 0,
                }),
                pushed: AtomicU64::new(0),
            }),
            taker: Own(TakerSide {
                front: Mutex::new(VecDeque::new()),
                taken: AtomicU64::new(0),
                handled: AtomicU64::new(0),
            }),
            waiting_for_room: AtomicUsize::new(0),
            token: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            arrived: Condvar::new(),
            room: Condvar::new(),
            accepts: ArcSwap::new(accepts_of(spec.accepts.clone())),
            alive: OnceLock::new(),
            generation: AtomicU64::new(1),
            high_water: AtomicUsize::new(0),
        }
    }

    /// Sets how the mailbox tells whether its unit can still handle
    /// messages (set once, by the runtime); without it, it always can.
    pub fn set_liveness(&self, alive: impl Fn() -> bool + Send + Sync + 'static) {
        let _ = self.alive.set(Box::new(alive));
    }

    /// Replaces what the mailbox accepts (a new generation may differ).
    pub fn set_accepts(&self, accepts: Vec<(String, String)>) {
        self.accepts.store(accepts_of(accepts));
    }

    /// Does the unit accept `name`? Its payload type if so.
    pub fn payload_type(&self, name: &str) -> Option<String> {
        self.accepts
            .load()
            .iter()
            .find(|a| &*a.name == name)
            .map(|a| a.payload.clone())
    }

    /// Does the unit accept `name` (the reserved `SHUTDOWN` only if it
    /// lists it)?
    pub fn accepts(&self, name: &str) -> bool {
        self.accepts.load().iter().any(|a| &*a.name == name)
    }

    /// The names the unit accepts.
    pub fn accepted(&self) -> Vec<String> {
        self.accepts
            .load()
            .iter()
            .map(|a| a.name.to_string())
            .collect()
    }

    /// The generation now attached (for events about the unit).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Can the unit still handle messages (not closed, and alive)?
    pub fn is_alive(&self) -> bool {
        !self.closed.load(Ordering::Acquire) && self.alive.get().is_none_or(|f| f())
    }

    /// Checks a message against what the unit accepts, before it is queued:
    /// `PeerGone`, `UnknownMessage` (the reserved `SHUTDOWN` is always
    /// accepted) or `InvalidPayload`. Returns the name to queue it under.
    pub fn check(&self, name: &str, payload: &Value) -> Result<ShortStr, Failure> {
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
            return Ok(ShortStr::new(super::SHUTDOWN));
        }
        let accepts = self.accepts.load();
        match accepts.iter().find(|a| &*a.name == name) {
            None => Err(Failure::new(
                MessageError::UnknownMessage,
                format!(
                    "{} accepts no message `{name}` (it accepts: {})",
                    self.address,
                    self.accepted().join(", ")
                ),
            )),
            Some(a) if a.payload != "any" && a.payload != payload.type_name() => Err(Failure::new(
                MessageError::InvalidPayload,
                format!(
                    "{} takes a payload of type {} with `{name}`, not {}",
                    self.address,
                    a.payload,
                    payload.type_name()
                ),
            )),
            Some(a) => Ok(ShortStr::from_shared(&a.name)),
        }
    }

    /// Messages queued now: `pushed - taken`, `taken` read first so that
    /// the difference never goes below zero.
    fn queued(&self) -> u64 {
        let taken = self.taker.taken.load(Ordering::SeqCst);
        self.sender
            .pushed
            .load(Ordering::SeqCst)
            .saturating_sub(taken)
    }

    /// Queues `env`, waiting as `wait` says for room. A refused envelope
    /// is handed back, for the caller to drop outside the lock.
    pub fn push(&self, env: Envelope, wait: Wait) -> Result<(), Box<(Failure, Envelope)>> {
        let mut back = self.sender.back.lock();
        let mut spun = false;
        let mut deadline = None;
        loop {
            if self.closed.load(Ordering::Acquire) {
                drop(back);
                let f = Failure::new(
                    MessageError::PeerGone,
                    format!("{} has ended", self.address),
                );
                return Err(Box::new((f, env)));
            }
            // Only senders write `pushed`, under this lock.
            let pushed = self.sender.pushed.load(Ordering::Relaxed);
            if pushed.saturating_sub(back.taken_seen) >= self.capacity {
                back.taken_seen = self.taker.taken.load(Ordering::SeqCst);
            }
            if pushed.saturating_sub(back.taken_seen) < self.capacity {
                back.queue.push_back(env);
                self.sender.pushed.store(pushed + 1, Ordering::Release);
                // At most the depth; read `taken` again only when it could
                // be a new high-water mark.
                let high = self.high_water.load(Ordering::Relaxed);
                if (pushed + 1).saturating_sub(back.taken_seen) > high as u64 {
                    back.taken_seen = self.taker.taken.load(Ordering::SeqCst);
                    let depth = (pushed + 1).saturating_sub(back.taken_seen);
                    let depth = usize::try_from(depth).unwrap_or(usize::MAX);
                    if depth > high {
                        self.high_water.fetch_max(depth, Ordering::Relaxed);
                    }
                }
                drop(back);
                // Costs a load unless the mailbox thread is blocked.
                self.arrived.notify_one();
                // The unit may have stopped for good between the sender's
                // check and now: nobody would take the message out.
                if !self.is_alive() {
                    self.drain("has ended or gave up");
                }
                return Ok(());
            }
            // Full. A busy mailbox thread makes room within microseconds:
            // spin a little (without the lock) before blocking, as it does.
            let deadline = *deadline.get_or_insert_with(|| wait.deadline());
            if !spun {
                spun = true;
                parking_lot::MutexGuard::unlocked(&mut back, || {
                    spin_until((Instant::now() + SPIN).min(deadline), || {
                        self.queued() < self.capacity || self.closed.load(Ordering::Relaxed)
                    })
                });
                continue;
            }
            // Announce the wait, then look again: the mailbox thread takes
            // a message, then looks for waiters (see `took`), so one of the
            // two sees the other.
            self.waiting_for_room.fetch_add(1, Ordering::SeqCst);
            back.taken_seen = self.taker.taken.load(Ordering::SeqCst);
            let timed_out = pushed.saturating_sub(back.taken_seen) >= self.capacity
                && self.room.wait_until(&mut back, deadline).timed_out();
            self.waiting_for_room.fetch_sub(1, Ordering::SeqCst);
            spun = false;
            if timed_out {
                back.taken_seen = self.taker.taken.load(Ordering::SeqCst);
                let pushed = self.sender.pushed.load(Ordering::Relaxed);
                if pushed.saturating_sub(back.taken_seen) >= self.capacity {
                    drop(back);
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
    }

    /// Makes the caller (generation `generation`'s mailbox thread) the only
    /// one that takes messages out; returns its token. A thread attached
    /// before is woken, and leaves.
    pub fn attach(&self, generation: u64) -> u64 {
        self.generation.store(generation, Ordering::Relaxed);
        let back = self.sender.back.lock();
        let token = self.token.fetch_add(1, Ordering::SeqCst) + 1;
        drop(back);
        self.arrived.notify_all();
        token
    }

    /// Must the holder of `token` leave?
    fn must_leave(&self, token: u64, leave: &dyn Fn() -> bool) -> bool {
        self.token.load(Ordering::SeqCst) != token || self.closed.load(Ordering::SeqCst) || leave()
    }

    /// Counts `n` messages taken out of the front half (its lock held), and
    /// wakes the senders waiting for room, if any.
    fn took(&self, n: u64) {
        self.taker.taken.fetch_add(n, Ordering::SeqCst);
        if self.waiting_for_room.load(Ordering::SeqCst) > 0 {
            let _back = self.sender.back.lock();
            self.room.notify_all();
        }
    }

    /// Blocks until a message is there for the holder of `token`, or it
    /// must leave: another token was attached, the mailbox was closed, or
    /// `leave()` (checked before each message and on every wake-up, under
    /// a lock: keep it to a few atomic loads) says so.
    pub fn next(&self, token: u64, leave: &dyn Fn() -> bool) -> Next {
        let mut spun = false;
        loop {
            if self.must_leave(token, leave) {
                return Next::Leave;
            }
            {
                let mut front = self.taker.front.lock();
                if front.is_empty() {
                    // Take the whole back half at once; it gets the
                    // emptied front, and its room.
                    std::mem::swap(&mut *front, &mut self.sender.back.lock().queue);
                }
                if let Some(env) = front.pop_front() {
                    self.took(1);
                    return Next::Message(env);
                }
            }
            // Spin a little before parking: waking a parked thread costs
            // tens of microseconds on a VM, far more than a message that
            // follows another closely. Bounded, and only right after
            // work: an idle mailbox parks.
            if !spun {
                spun = true;
                spin_until(Instant::now() + SPIN, || {
                    self.queued() > 0
                        || self.token.load(Ordering::Relaxed) != token
                        || self.closed.load(Ordering::Relaxed)
                });
                continue;
            }
            // Senders change `pushed`, `token` and `closed` under this
            // lock, then notify: nothing is missed between the look and
            // the wait.
            let mut back = self.sender.back.lock();
            if self.queued() == 0 && !self.must_leave(token, leave) {
                self.arrived.wait(&mut back);
            }
        }
    }

    /// Puts a message taken out but not handled back at the head of the
    /// queue (its thread had to leave first), whatever the capacity.
    pub fn put_back(&self, env: Envelope) {
        let mut front = self.taker.front.lock();
        front.push_front(env);
        let back = self.sender.back.lock();
        self.sender.pushed.fetch_add(1, Ordering::SeqCst);
        drop(back);
        drop(front);
        self.arrived.notify_all();
    }

    /// Wakes the mailbox thread so that it checks whether it must leave.
    pub fn wake(&self) {
        let _back = self.sender.back.lock();
        self.arrived.notify_all();
    }

    /// Takes every queued message out, both halves, `closing` the mailbox
    /// or not; they are counted as taken.
    fn take_all(&self, closing: bool) -> Vec<Envelope> {
        let mut front = self.taker.front.lock();
        let mut back = self.sender.back.lock();
        if closing {
            self.closed.store(true, Ordering::SeqCst);
        }
        let all: Vec<Envelope> = front.drain(..).chain(back.queue.drain(..)).collect();
        drop(back);
        self.took(all.len() as u64);
        drop(front);
        all
    }

    /// Closes the mailbox for good: later sends get `PeerGone`, and so do
    /// the requests still queued.
    pub fn close(&self) {
        let drained = self.take_all(true);
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
        let drained = self.take_all(false);
        self.gone(drained, why);
    }

    /// Counts one handled message.
    pub fn note_handled(&self) {
        self.taker.handled.fetch_add(1, Ordering::Relaxed);
    }

    /// Messages queued now.
    pub fn depth(&self) -> usize {
        usize::try_from(self.queued()).unwrap_or(usize::MAX)
    }

    /// The most messages ever queued at once.
    pub fn high_water(&self) -> usize {
        self.high_water.load(Ordering::Relaxed)
    }

    /// Messages handled so far (by every generation).
    pub fn handled(&self) -> u64 {
        self.taker.handled.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messaging::deadline_after;

    fn mailbox(capacity: usize) -> Mailbox {
        Mailbox::new(&EndpointSpec {
            context: "A".into(),
            service: "x".into(),
            accepts: vec![("N".into(), "integer".into())],
            capacity,
            subscribe: Vec::new(),
        })
    }

    fn env(n: i64) -> Envelope {
        Envelope {
            from: ShortStr::new("test"),
            name: ShortStr::new("N"),
            payload: Value::Int(n),
            correlation: CorrelationId::Root(1),
            reply: None,
        }
    }

    fn push(mb: &Mailbox, n: i64, wait: Duration) -> Result<(), MessageError> {
        mb.push(env(n), Wait::For(wait)).map_err(|r| r.0.kind)
    }

    /// A mailbox of `capacity` holding `1..=n`, and the token of its thread.
    fn filled(capacity: usize, n: i64) -> (Mailbox, u64) {
        let mb = mailbox(capacity);
        let token = mb.attach(1);
        for i in 1..=n {
            push(&mb, i, Duration::from_secs(5)).unwrap();
        }
        (mb, token)
    }

    fn take(mb: &Mailbox, token: u64) -> i64 {
        match mb.next(token, &|| false) {
            Next::Message(e) => e.payload.as_i64().unwrap_or(-1),
            Next::Leave => -1,
        }
    }

    #[test]
    fn a_batch_taken_out_counts_against_the_bound_until_each_message_is_handed_out() {
        let (mb, token) = filled(3, 3);
        // The thread takes the three at once, and hands out one.
        assert_eq!(take(&mb, token), 1);
        assert_eq!(mb.depth(), 2);
        push(&mb, 4, Duration::from_secs(5)).unwrap();
        assert_eq!(
            push(&mb, 5, Duration::from_millis(20)),
            Err(MessageError::MailboxFull)
        );
        assert_eq!(mb.depth(), 3);
        assert_eq!(mb.high_water(), 3);
        assert_eq!(
            (2..=4).map(|_| take(&mb, token)).collect::<Vec<_>>(),
            [2, 3, 4]
        );
        assert_eq!(mb.depth(), 0);
    }

    #[test]
    fn a_sender_blocked_on_a_full_mailbox_gets_in_once_a_message_is_taken() {
        let mb = Arc::new(mailbox(1));
        let token = mb.attach(1);
        push(&mb, 1, Duration::from_secs(5)).unwrap();
        let sender = {
            let mb = Arc::clone(&mb);
            std::thread::spawn(move || push(&mb, 2, Duration::from_secs(60)))
        };
        // It spins, then blocks.
        let deadline = deadline_after(Duration::from_secs(30));
        while mb.waiting_for_room.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert_eq!(mb.waiting_for_room.load(Ordering::SeqCst), 1);
        assert_eq!(take(&mb, token), 1);
        assert_eq!(sender.join().unwrap(), Ok(()));
        assert_eq!(take(&mb, token), 2);
    }

    #[test]
    fn the_next_generation_takes_a_put_back_message_first_then_the_rest_of_its_batch() {
        let (mb, old) = filled(10, 5);
        let first = match mb.next(old, &|| false) {
            Next::Message(e) => e,
            Next::Leave => panic!("a message is queued"),
        };
        let new = mb.attach(2);
        assert!(matches!(mb.next(old, &|| false), Next::Leave));
        mb.put_back(first);
        push(&mb, 6, Duration::from_secs(5)).unwrap();
        assert_eq!(mb.depth(), 6);
        assert_eq!(
            (1..=6).map(|_| take(&mb, new)).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5, 6]
        );
    }

    #[test]
    fn closing_answers_the_requests_of_both_halves() {
        let mb = mailbox(10);
        let token = mb.attach(1);
        let ask = |n| {
            let (reply, p) = reply_pair();
            let mut e = env(n);
            e.reply = Some(reply);
            mb.push(e, Wait::For(Duration::from_secs(5))).unwrap();
            p
        };
        let mut pending: Vec<Pending> = (1..=4).map(ask).collect();
        // The first is handed out (and dropped unanswered), the next three
        // stay in the thread's half; two more go to the senders' half.
        assert_eq!(take(&mb, token), 1);
        pending.extend((5..=6).map(ask));
        mb.close();
        assert_eq!(mb.depth(), 0);
        let kinds: Vec<MessageError> = pending
            .into_iter()
            .map(|p| {
                p.wait(deadline_after(Duration::from_secs(5)), "x")
                    .unwrap_err()
                    .kind
            })
            .collect();
        assert_eq!(kinds, [MessageError::PeerGone; 6]);
    }
}
