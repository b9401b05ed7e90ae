//! The watchdog: one thread per host that watches every call made with a
//! deadline (a service's `main`, loop or `check` when it has a `watchdog`,
//! every `setup` and `finalize`), and declares a call hung when it
//! overruns.
//!
//! A [`Watchdog`] is a value, not a static: `host::run` makes one per host
//! (with the tick from the deployment and `[host] max_abandoned_threads`)
//! and hands it to every context and to the reload watcher, so two hosts in
//! one process never scan, count or stop each other's calls. Each thread
//! that calls plugins registers a [`Slot`] with its host's watchdog
//! ([`Watchdog::register`]). Starting a call stores the call's identity and
//! the time from the watchdog's coarse clock (an atomic the watchdog
//! advances every tick, so a call pays no clock read); ending it is one
//! atomic swap. The watchdog scans its slots every tick. To declare a call
//! hung it swaps the slot's call id for `ABANDONED`, and only the side
//! whose swap wins acts: either the call ended in time, or the watchdog owns
//! the hang and the calling thread, when (if ever) it returns, learns that
//! it was abandoned and leaves without touching anything.
//!
//! A thread whose call was declared hung is *abandoned*: it cannot be
//! stopped, and stays until the plugin call returns (if ever). The watchdog
//! counts its host's threads abandoned and not yet returned; once they
//! reach `[host] max_abandoned_threads` it records a `leak_ceiling` event
//! (kind `abandoned_threads`) on its host's event hub and tells `host::run`
//! (the `on_ceiling` it was made with), which stops every context and exits
//! with code 76.
//!
//! A call is never declared before its deadline, and at most two ticks after
//! it (its start stamp is up to one tick early, and the scan runs once a
//! tick); the tick is an eighth of the shortest watchdog in the manifest
//! (rounded down), between 1 ms and 20 ms.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::notify;
use crate::event::{Ceiling, Event, Events};
use crate::threads::Spawner;

/// A slot's call id when no call is running.
const IDLE: u64 = 0;
/// A slot's call id once the watchdog has declared its call hung.
const ABANDONED: u64 = u64::MAX;

/// One host's watchdog: its coarse clock, its tick, its slots and its count
/// of abandoned threads (see the module docs).
pub struct Watchdog {
    /// When the coarse clock read 0.
    start: Instant,
    /// The coarse clock: milliseconds since `start`, advanced every tick.
    now_ms: AtomicU64,
    /// How often the slots are scanned, in milliseconds.
    tick_ms: u64,
    /// The registered slots (see [`Watchdog::register`]).
    slots: Mutex<Vec<Arc<Slot>>>,
    /// Set once the thread was started.
    started: AtomicBool,
    /// Threads abandoned in a hung call that have not returned yet.
    abandoned_threads: AtomicUsize,
    /// `[host] max_abandoned_threads` (at least 1).
    max_abandoned_threads: usize,
    /// Set once the ceiling was reported (it is reported once).
    ceiling_hit: AtomicBool,
    /// Where `leak_ceiling` is recorded: the host's hub.
    events: Arc<Events>,
    /// Tells the host that the ceiling was reached.
    on_ceiling: Box<dyn Fn() + Send + Sync>,
}

impl Watchdog {
    /// A watchdog whose tick follows `shortest`, the shortest watchdog
    /// deadline of the deployment (see [`tick_ms`]), that reports
    /// `max_abandoned_threads` (at least 1) reached by recording
    /// `leak_ceiling` on `events` and calling `on_ceiling`, once. Its thread
    /// runs from [`Watchdog::start`].
    pub fn new(
        shortest: Option<Duration>,
        max_abandoned_threads: usize,
        events: Arc<Events>,
        on_ceiling: impl Fn() + Send + Sync + 'static,
    ) -> Arc<Watchdog> {
        Arc::new(Watchdog {
            start: Instant::now(),
            now_ms: AtomicU64::new(0),
            tick_ms: tick_ms(shortest),
            slots: Mutex::new(Vec::new()),
            started: AtomicBool::new(false),
            abandoned_threads: AtomicUsize::new(0),
            max_abandoned_threads: max_abandoned_threads.max(1),
            ceiling_hit: AtomicBool::new(false),
            events,
            on_ceiling: Box::new(on_ceiling),
        })
    }

    /// A new slot registered with this watchdog; `on_hang` runs on the
    /// watchdog thread when a call of this slot is declared hung.
    pub fn register(self: &Arc<Self>, on_hang: impl Fn(Hung) + Send + Sync + 'static) -> Watched {
        let slot = Arc::new(Slot {
            call: AtomicU64::new(IDLE),
            next_id: AtomicU64::new(1),
            started_ms: AtomicU64::new(0),
            limit_ms: AtomicU64::new(0),
            tag: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            watchdog: Arc::clone(self),
            on_hang: Box::new(on_hang),
        });
        self.slots.lock().push(Arc::clone(&slot));
        Watched(slot)
    }

    /// Threads abandoned in a hung call that have not returned yet.
    pub fn abandoned_threads(&self) -> usize {
        self.abandoned_threads.load(Ordering::SeqCst)
    }

    /// A thread was abandoned in a hung call: count it, and act at the
    /// ceiling. The watchdog calls it for the calls it declares hung;
    /// stopping an instance calls it for an unwatched loop call it gave up
    /// waiting for.
    pub fn thread_abandoned(&self) {
        let n = self.abandoned_threads.fetch_add(1, Ordering::SeqCst) + 1;
        let max = self.max_abandoned_threads;
        if n < max || self.ceiling_hit.swap(true, Ordering::SeqCst) {
            return;
        }
        tracing::error!(
            "{n} threads are left in hung plugin calls (max_abandoned_threads = {max}): \
             stopping every context, then exiting with code 76 so that the host restarts clean"
        );
        self.events
            .emit(&Event::LeakCeiling(Ceiling::AbandonedThreads {
                abandoned_threads: u64::try_from(n).unwrap_or(u64::MAX),
                max: u64::try_from(max).unwrap_or(u64::MAX),
            }));
        (self.on_ceiling)();
    }

    /// An abandoned thread's call returned: it leaves, so it no longer counts.
    pub fn abandoned_thread_returned(&self) {
        let _ = self
            .abandoned_threads
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_sub(1))
            });
    }

    /// Milliseconds since the watchdog was made, read from the system clock.
    fn precise_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX / 2)
    }

    /// One tick at `now_ms`: advances the coarse clock, then declares every
    /// overrun call of this watchdog's slots hung and runs its `on_hang`
    /// (after the registry's lock is released).
    fn scan(&self, now_ms: u64) {
        self.now_ms.store(now_ms, Ordering::Relaxed);
        let slots: Vec<Arc<Slot>> = self.slots.lock().clone();
        for slot in slots {
            if let Some(h) = slot.check(now_ms) {
                self.thread_abandoned();
                (slot.on_hang)(h);
            }
        }
    }

    /// Starts the watchdog thread (once). `healthy` decides whether a
    /// systemd `WATCHDOG=1` ping is deserved (only asked when systemd wants
    /// pings). Fails when the thread cannot be created (reported through
    /// `threads`, see [`crate::threads`]). The thread ends once the
    /// watchdog is dropped (every holder of it gone).
    pub fn start(
        self: &Arc<Self>,
        threads: &Spawner,
        healthy: impl Fn() -> bool + Send + 'static,
    ) -> std::io::Result<()> {
        if self.started.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.now_ms.store(self.precise_ms(), Ordering::Relaxed);
        let ping = notify::watchdog_interval();
        let tick = Duration::from_millis(self.tick_ms);
        let watchdog = Arc::downgrade(self);
        threads
            .spawn("the watchdog", "watchdog", move || {
                let mut last_ping = Instant::now();
                loop {
                    std::thread::sleep(tick);
                    let Some(w) = watchdog.upgrade() else {
                        return;
                    };
                    w.scan(w.precise_ms());
                    drop(w);
                    if let Some(every) = ping
                        && last_ping.elapsed() >= every
                    {
                        last_ping = Instant::now();
                        if healthy() {
                            notify::send("WATCHDOG=1");
                        }
                    }
                }
            })
            .map(drop)
    }
}

/// Which plugin entry point a call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Entry {
    /// `setup` (deadline: `startup_timeout`).
    Setup = 0,
    /// `main` (deadline: `watchdog`).
    Main = 1,
    /// One loop call (deadline: `watchdog`).
    Loop = 2,
    /// A condition's `check` (deadline: `watchdog`).
    Check = 3,
    /// `finalize` (deadline: `shutdown_timeout`).
    Finalize = 4,
    /// `export_state` during a reload (deadline: `watchdog`, else `shutdown_timeout`).
    Export = 5,
    /// `import_state` during a reload (deadline: `startup_timeout`).
    Import = 6,
    /// A message handler (deadline: `watchdog`).
    Message = 7,
}

impl Entry {
    /// The entry point's name in logs and the journal.
    pub fn name(self) -> &'static str {
        match self {
            Entry::Setup => "setup",
            Entry::Main => "main",
            Entry::Loop => "loop",
            Entry::Check => "check",
            Entry::Finalize => "finalize",
            Entry::Export => "export_state",
            Entry::Import => "import_state",
            Entry::Message => "message",
        }
    }

    fn from_u8(v: u8) -> Entry {
        match v {
            0 => Entry::Setup,
            1 => Entry::Main,
            2 => Entry::Loop,
            3 => Entry::Check,
            5 => Entry::Export,
            6 => Entry::Import,
            7 => Entry::Message,
            _ => Entry::Finalize,
        }
    }
}

/// A call the watchdog declared hung.
#[derive(Debug, Clone, Copy)]
pub struct Hung {
    /// The unit (instance slot) of the context that was called.
    pub unit: usize,
    /// The generation of the instance that was called.
    pub generation: u64,
    /// The entry point.
    pub entry: Entry,
    /// Where the calling thread was (its own meaning, e.g. a step index).
    pub position: u64,
    /// The deadline it overran.
    pub limit: Duration,
}

/// One calling thread's watch slot.
pub struct Slot {
    call: AtomicU64,
    next_id: AtomicU64,
    started_ms: AtomicU64,
    limit_ms: AtomicU64,
    tag: AtomicU64,
    generation: AtomicU64,
    /// The watchdog it is registered with: its clock stamps calls.
    watchdog: Arc<Watchdog>,
    on_hang: Box<dyn Fn(Hung) + Send + Sync>,
}

/// Registration of a slot; dropping it unregisters the slot.
pub struct Watched(Arc<Slot>);

impl Drop for Watched {
    fn drop(&mut self) {
        self.0
            .watchdog
            .slots
            .lock()
            .retain(|s| !Arc::ptr_eq(s, &self.0));
    }
}

impl std::ops::Deref for Watched {
    type Target = Slot;
    fn deref(&self) -> &Slot {
        &self.0
    }
}

/// A running call; finish it with [`Slot::end`].
#[must_use = "end the call to learn whether it was abandoned"]
pub struct Call(u64);

impl Slot {
    /// Marks the start of a call with a deadline in milliseconds (see
    /// [`limit_ms`]). Only the owning thread calls this.
    #[inline]
    pub fn begin_ms(
        &self,
        unit: usize,
        generation: u64,
        entry: Entry,
        limit_ms: u64,
        position: u64,
    ) -> Call {
        // The coarse clock: one load, through the slot's one pointer to its
        // watchdog.
        let now_ms = self.watchdog.now_ms.load(Ordering::Relaxed);
        self.begin_at(now_ms, unit, generation, entry, limit_ms, position)
    }

    #[inline]
    fn begin_at(
        &self,
        now_ms: u64,
        unit: usize,
        generation: u64,
        entry: Entry,
        limit_ms: u64,
        position: u64,
    ) -> Call {
        let id = self.next_id.load(Ordering::Relaxed);
        self.next_id.store(
            if id + 1 == ABANDONED { 1 } else { id + 1 },
            Ordering::Relaxed,
        );
        self.started_ms.store(now_ms, Ordering::Relaxed);
        self.limit_ms.store(limit_ms, Ordering::Relaxed);
        // unit (24 bits) | entry (8 bits) | position (32 bits)
        let tag =
            ((unit as u64 & 0xff_ffff) << 40) | ((entry as u64) << 32) | (position & 0xffff_ffff);
        self.tag.store(tag, Ordering::Relaxed);
        self.generation.store(generation, Ordering::Relaxed);
        self.call.store(id, Ordering::Release);
        Call(id)
    }

    /// Marks the end of a call: false if the watchdog abandoned it meanwhile
    /// (the caller must then leave without touching anything).
    pub fn end(&self, call: Call) -> bool {
        let in_time = self.call.swap(IDLE, Ordering::AcqRel) == call.0;
        if !in_time {
            self.watchdog.abandoned_thread_returned();
        }
        in_time
    }

    /// Declares the running call hung if it overran; returns what it was.
    fn check(&self, now_ms: u64) -> Option<Hung> {
        let id = self.call.load(Ordering::Acquire);
        if id == IDLE || id == ABANDONED {
            return None;
        }
        let started = self.started_ms.load(Ordering::Relaxed);
        let limit = self.limit_ms.load(Ordering::Relaxed);
        // The stamp is up to one tick older than the call's real start, so a
        // call is only declared once it has surely run past its deadline.
        if now_ms.saturating_sub(started) <= limit + self.watchdog.tick_ms {
            return None;
        }
        let tag = self.tag.load(Ordering::Relaxed);
        let hung = Hung {
            unit: usize::try_from(tag >> 40).unwrap_or(usize::MAX),
            generation: self.generation.load(Ordering::Relaxed),
            entry: Entry::from_u8(u8::try_from((tag >> 32) & 0xff).unwrap_or(4)),
            position: tag & 0xffff_ffff,
            limit: Duration::from_millis(limit),
        };
        // Only if the same call is still running: otherwise the fields above
        // may belong to a newer call, and the swap fails.
        self.call
            .compare_exchange(id, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| hung)
    }
}

/// A deadline in whole milliseconds, as slots store it.
pub fn limit_ms(limit: Duration) -> u64 {
    u64::try_from(limit.as_millis()).unwrap_or(u64::MAX / 4)
}

/// The tick for `shortest`, the shortest watchdog deadline of a deployment:
/// an eighth of it in whole milliseconds, between 1 and 20 (20 without one).
pub fn tick_ms(shortest: Option<Duration>) -> u64 {
    shortest.map_or(20, |d| {
        u64::try_from(d.as_millis() / 8).unwrap_or(20).clamp(1, 20)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Collect;

    /// A watchdog of its own (no thread: the tests scan by hand), the
    /// events on its host's hub, and how often it told its host of the
    /// ceiling.
    fn host(max_abandoned_threads: usize) -> (Arc<Watchdog>, Arc<Collect>, Arc<AtomicUsize>) {
        let seen = Arc::new(Collect::default());
        let told = Arc::new(AtomicUsize::new(0));
        let t = Arc::clone(&told);
        let watchdog = Watchdog::new(
            Some(Duration::from_millis(80)),
            max_abandoned_threads,
            Arc::new(Events::new(vec![seen.clone()])),
            move || {
                t.fetch_add(1, Ordering::SeqCst);
            },
        );
        (watchdog, seen, told)
    }

    #[test]
    fn an_overrun_call_is_declared_hung_once_and_its_thread_learns_it() {
        let (watchdog, _, _) = host(256);
        let seen = Arc::new(AtomicUsize::new(0));
        let s2 = Arc::clone(&seen);
        let slot = watchdog.register(move |h| {
            assert_eq!(
                (h.unit, h.generation, h.entry, h.position),
                (3, 7, Entry::Main, 9)
            );
            s2.fetch_add(1, Ordering::SeqCst);
        });
        let tick = watchdog.tick_ms;
        let call = slot.begin_at(1000, 3, 7, Entry::Main, 50, 9);
        assert!(
            slot.check(1050 + tick).is_none(),
            "within the deadline and the stamp's slack"
        );
        let h = slot.check(1051 + tick).expect("overran");
        (slot.on_hang)(h);
        assert!(slot.check(2000).is_none(), "declared once");
        assert!(!slot.end(call), "the caller learns it was abandoned");
        assert_eq!(seen.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_call_that_ends_in_time_is_never_declared() {
        let (watchdog, _, _) = host(256);
        let slot = watchdog.register(|_| panic!("not hung"));
        let call = slot.begin_at(5000, 0, 1, Entry::Loop, 10, 0);
        assert!(slot.end(call));
        assert!(slot.check(99_999).is_none());
    }

    /// Two hosts in one process, each with its own watchdog: a hang that A
    /// declares reaches A only. A never scans B's slots nor moves B's clock,
    /// B's count of abandoned threads stays as it was, and A reaching its
    /// `max_abandoned_threads` records `leak_ceiling` on A's hub and stops
    /// A only; B's ceiling is B's own count against B's own maximum.
    #[test]
    fn two_hosts_in_one_process_do_not_see_each_others_watchdog() {
        let (a, a_events, a_told) = host(1);
        let (b, b_events, b_told) = host(2);
        let a_hung = Arc::new(Mutex::new(Vec::new()));
        let b_hung = Arc::new(Mutex::new(Vec::new()));
        let slot_a = {
            let hung = Arc::clone(&a_hung);
            a.register(move |h| hung.lock().push(h.unit))
        };
        let slot_b = {
            let hung = Arc::clone(&b_hung);
            b.register(move |h| hung.lock().push(h.unit))
        };
        // Both calls overran long ago on either clock.
        let call_a = slot_a.begin_at(0, 1, 1, Entry::Main, 50, 0);
        let call_b = slot_b.begin_at(0, 2, 1, Entry::Main, 50, 0);

        a.scan(1000);
        assert_eq!(*a_hung.lock(), vec![1], "A declares its own call hung");
        assert!(b_hung.lock().is_empty(), "A does not scan B's slots");
        assert_eq!(a.now_ms.load(Ordering::Relaxed), 1000);
        assert_eq!(b.now_ms.load(Ordering::Relaxed), 0, "B's clock is B's");
        assert_eq!((a.abandoned_threads(), b.abandoned_threads()), (1, 0));
        let ceiling = Event::LeakCeiling(Ceiling::AbandonedThreads {
            abandoned_threads: 1,
            max: 1,
        });
        assert_eq!(*a_events.0.lock(), vec![ceiling], "on A's hub");
        assert_eq!(a_told.load(Ordering::SeqCst), 1, "A is stopped");
        assert!(b_events.0.lock().is_empty(), "nothing on B's hub");
        assert_eq!(b_told.load(Ordering::SeqCst), 0, "B is not stopped");

        // One thread abandoned in B, while A's is still out, is below B's
        // maximum of 2: had the count been shared with A's, it would be the
        // second and stop B.
        b.thread_abandoned();
        assert_eq!((a.abandoned_threads(), b.abandoned_threads()), (1, 1));
        assert!(b_events.0.lock().is_empty());
        assert_eq!(b_told.load(Ordering::SeqCst), 0);

        // B's call was never abandoned: it ends in time. A's learns it was,
        // and leaves A's count only.
        assert!(slot_b.end(call_b));
        assert!(!slot_a.end(call_a));
        assert_eq!((a.abandoned_threads(), b.abandoned_threads()), (0, 1));

        // B's second abandoned thread reaches B's own ceiling: recorded on
        // B's hub, B is stopped, and A is not told again.
        b.thread_abandoned();
        let ceiling = Event::LeakCeiling(Ceiling::AbandonedThreads {
            abandoned_threads: 2,
            max: 2,
        });
        assert_eq!(*b_events.0.lock(), vec![ceiling]);
        assert_eq!(
            (a_told.load(Ordering::SeqCst), b_told.load(Ordering::SeqCst)),
            (1, 1)
        );
        assert_eq!(a_events.0.lock().len(), 1);

        // A slot unregisters from its own watchdog only.
        drop(slot_a);
        assert_eq!((a.slots.lock().len(), b.slots.lock().len()), (0, 1));
    }
}
