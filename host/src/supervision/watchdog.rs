//! The watchdog: one thread for the whole host that watches every call
//! made with a deadline (a service's `main`, loop or `check` when it has a
//! `watchdog`, every `setup` and `finalize`), and declares a call hung when
//! it overruns.
//!
//! Each thread that calls plugins owns a [`Slot`]. Starting a call stores
//! the call's identity and the time from a coarse clock (an atomic the
//! watchdog advances every tick, so a call pays no clock read); ending it is
//! one atomic swap. The watchdog scans the slots every tick. To declare a
//! call hung it swaps the slot's call id for `ABANDONED`, and only the side
//! whose swap wins acts: either the call ended in time, or the watchdog owns
//! the hang and the calling thread, when (if ever) it returns, learns that
//! it was abandoned and leaves without touching anything.
//!
//! A thread whose call was declared hung is *abandoned*: it cannot be
//! stopped, and stays until the plugin call returns (if ever). The watchdog
//! counts the threads abandoned and not yet returned, host-wide; once they
//! reach `[host] max_abandoned_threads` it hands a `leak_ceiling` event
//! (kind `abandoned_threads`) to the supervisor, which records it, stops
//! every context and exits with code 76.
//!
//! A call is never declared before its deadline, and at most two ticks after
//! it (its start stamp is up to one tick early, and the scan runs once a
//! tick); the tick is an eighth of the shortest watchdog in the manifest
//! (rounded down), between 1 ms and 20 ms.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::notify;
use crate::event::{Ceiling, Event};
use crate::threads;

/// A slot's call id when no call is running.
const IDLE: u64 = 0;
/// A slot's call id once the watchdog has declared its call hung.
const ABANDONED: u64 = u64::MAX;

static START: OnceLock<Instant> = OnceLock::new();
static NOW_MS: AtomicU64 = AtomicU64::new(0);
static TICK_MS: AtomicU64 = AtomicU64::new(20);
static SLOTS: Mutex<Vec<Arc<Slot>>> = Mutex::new(Vec::new());
static STARTED: AtomicBool = AtomicBool::new(false);
/// Threads abandoned in a hung call that have not returned yet.
static ABANDONED_THREADS: AtomicUsize = AtomicUsize::new(0);
static MAX_ABANDONED_THREADS: AtomicUsize =
    AtomicUsize::new(crate::manifest::DEFAULT_MAX_ABANDONED_THREADS);
static CEILING_HIT: AtomicBool = AtomicBool::new(false);
type CeilingHandler = Box<dyn Fn(&Event) + Send + Sync>;
static ON_CEILING: Mutex<Option<CeilingHandler>> = Mutex::new(None);

/// Sets `[host] max_abandoned_threads` (at least 1).
pub fn set_max_abandoned_threads(max: usize) {
    MAX_ABANDONED_THREADS.store(max.max(1), Ordering::Relaxed);
}

/// Sets what to do once `max_abandoned_threads` is reached (the supervisor
/// records the `leak_ceiling` event it is handed, then stops everything);
/// called at most once.
pub fn on_ceiling(handler: impl Fn(&Event) + Send + Sync + 'static) {
    *ON_CEILING.lock() = Some(Box::new(handler));
}

/// Threads abandoned in a hung call that have not returned yet.
pub fn abandoned_threads() -> usize {
    ABANDONED_THREADS.load(Ordering::SeqCst)
}

/// A thread was abandoned in a hung call: count it, and act at the ceiling.
/// The watchdog calls it for the calls it declares hung; stopping an
/// instance calls it for an unwatched loop call it gave up waiting for.
pub fn thread_abandoned() {
    let n = ABANDONED_THREADS.fetch_add(1, Ordering::SeqCst) + 1;
    let max = MAX_ABANDONED_THREADS.load(Ordering::Relaxed);
    if n < max || CEILING_HIT.swap(true, Ordering::SeqCst) {
        return;
    }
    tracing::error!(
        "{n} threads are left in hung plugin calls (max_abandoned_threads = {max}): \
         stopping every context, then exiting with code 76 so that the host restarts clean"
    );
    if let Some(h) = ON_CEILING.lock().as_ref() {
        h(&Event::LeakCeiling(Ceiling::AbandonedThreads {
            abandoned_threads: u64::try_from(n).unwrap_or(u64::MAX),
            max: u64::try_from(max).unwrap_or(u64::MAX),
        }));
    }
}

/// An abandoned thread's call returned: it leaves, so it no longer counts.
pub fn abandoned_thread_returned() {
    let _ = ABANDONED_THREADS.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
        Some(n.saturating_sub(1))
    });
}

fn start_instant() -> Instant {
    *START.get_or_init(Instant::now)
}

fn precise_ms() -> u64 {
    u64::try_from(start_instant().elapsed().as_millis()).unwrap_or(u64::MAX / 2)
}

/// The coarse clock, in ms since the host started.
fn coarse_ms() -> u64 {
    NOW_MS.load(Ordering::Relaxed)
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
    on_hang: Box<dyn Fn(Hung) + Send + Sync>,
}

/// Registration of a slot; dropping it unregisters the slot.
pub struct Watched(Arc<Slot>);

impl Drop for Watched {
    fn drop(&mut self) {
        SLOTS.lock().retain(|s| !Arc::ptr_eq(s, &self.0));
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
    /// A new registered slot; `on_hang` runs on the watchdog thread when a
    /// call of this slot is declared hung.
    pub fn register(on_hang: impl Fn(Hung) + Send + Sync + 'static) -> Watched {
        let slot = Arc::new(Slot {
            call: AtomicU64::new(IDLE),
            next_id: AtomicU64::new(1),
            started_ms: AtomicU64::new(0),
            limit_ms: AtomicU64::new(0),
            tag: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            on_hang: Box::new(on_hang),
        });
        SLOTS.lock().push(Arc::clone(&slot));
        Watched(slot)
    }

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
        self.begin_at(coarse_ms(), unit, generation, entry, limit_ms, position)
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
            abandoned_thread_returned();
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
        if now_ms.saturating_sub(started) <= limit + TICK_MS.load(Ordering::Relaxed) {
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

/// Sets the tick from the shortest watchdog deadline in the deployment.
pub fn configure(shortest: Option<Duration>) {
    let ms = shortest.map_or(20, |d| {
        u64::try_from(d.as_millis() / 8).unwrap_or(20).clamp(1, 20)
    });
    TICK_MS.store(ms, Ordering::Relaxed);
}

/// Starts the watchdog thread (once). `healthy` decides whether a systemd
/// `WATCHDOG=1` ping is deserved (only asked when systemd wants pings).
/// Fails when the thread cannot be created (see [`crate::threads`]).
pub fn start(healthy: impl Fn() -> bool + Send + 'static) -> std::io::Result<()> {
    if STARTED.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    start_instant();
    NOW_MS.store(precise_ms(), Ordering::Relaxed);
    let ping = notify::watchdog_interval();
    let spawned = std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || {
            let mut last_ping = Instant::now();
            loop {
                let tick = Duration::from_millis(TICK_MS.load(Ordering::Relaxed));
                std::thread::sleep(tick);
                let now = precise_ms();
                NOW_MS.store(now, Ordering::Relaxed);
                let slots: Vec<Arc<Slot>> = SLOTS.lock().clone();
                for slot in slots {
                    if let Some(h) = slot.check(now) {
                        thread_abandoned();
                        (slot.on_hang)(h);
                    }
                }
                if let Some(every) = ping
                    && last_ping.elapsed() >= every
                {
                    last_ping = Instant::now();
                    if healthy() {
                        notify::send("WATCHDOG=1");
                    }
                }
            }
        });
    if let Err(e) = &spawned {
        threads::spawn_failed("the watchdog", e);
    }
    spawned.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn an_overrun_call_is_declared_hung_once_and_its_thread_learns_it() {
        let seen = Arc::new(AtomicUsize::new(0));
        let s2 = Arc::clone(&seen);
        let slot = Slot::register(move |h| {
            assert_eq!(
                (h.unit, h.generation, h.entry, h.position),
                (3, 7, Entry::Main, 9)
            );
            s2.fetch_add(1, Ordering::SeqCst);
        });
        let tick = TICK_MS.load(Ordering::Relaxed);
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
        let slot = Slot::register(|_| panic!("not hung"));
        let call = slot.begin_at(5000, 0, 1, Entry::Loop, 10, 0);
        assert!(slot.end(call));
        assert!(slot.check(99_999).is_none());
    }
}
