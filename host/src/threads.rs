//! Starting the host's own threads (context drivers, loops, restart
//! workers, the watchdog, hot reload, signal watchers).
//!
//! Two rules hold for every thread the host starts:
//! - its name is always valid: a name built from a manifest name is cleaned
//!   of NUL and other control characters (which `std::thread::Builder::name`
//!   would panic on or the logs would echo raw), see [`thread_name`];
//! - a thread that cannot be created (the system's thread or memory limit is
//!   reached) is an error, never silence: its host's [`Spawner`] logs it,
//!   records a `thread_spawn_failed` event on the host's event hub and tells
//!   `host::run` (the `on_failure` it was made with), which stops every
//!   context cleanly; the host then exits with code 71
//!   ([`crate::exit::CANNOT_SPAWN`]).
//!
//! A [`Spawner`] is a value, not a static: `host::run` makes one per host
//! and hands it to every context, the watchdog and the reload watcher, so a
//! failure in one host neither stops nor is counted by another host of the
//! same process. The signal watchers are started before any host exists
//! (signals are per process): their caller reports a failure itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crate::event::{Event, Events};

/// One host's thread starter: where a thread that cannot be created is
/// reported (see the module docs).
pub struct Spawner {
    /// Where `thread_spawn_failed` is recorded: the host's hub.
    events: Arc<Events>,
    /// Set once any of the host's threads could not be created.
    failed: AtomicBool,
    /// Tells the host that a thread could not be created.
    on_failure: Box<dyn Fn() + Send + Sync>,
}

impl Spawner {
    /// A thread starter that reports a thread it cannot create by recording
    /// `thread_spawn_failed` on `events` and calling `on_failure` (after it
    /// was logged).
    pub fn new(events: Arc<Events>, on_failure: impl Fn() + Send + Sync + 'static) -> Spawner {
        Spawner {
            events,
            failed: AtomicBool::new(false),
            on_failure: Box::new(on_failure),
        }
    }

    /// Has one of this host's threads failed to start?
    pub fn any_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// Starts a thread named `name` (cleaned with [`thread_name`]) running
    /// `body`. `what` says what the thread is for, in the error message
    /// (e.g. "the loop thread of C/svc"). A failure is reported (see
    /// [`Spawner::spawn_failed`]) before it is returned; the caller only
    /// undoes its own bookkeeping.
    pub fn spawn<T, F>(&self, what: &str, name: &str, body: F) -> std::io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        std::thread::Builder::new()
            .name(thread_name("", name))
            .spawn(body)
            .inspect_err(|e| self.spawn_failed(what, e))
    }

    /// Reports a thread that could not be created (see the module docs);
    /// for the few places that start a thread with `std::thread::Builder`
    /// directly.
    pub fn spawn_failed(&self, what: &str, e: &std::io::Error) {
        let what = thread_name("", what);
        self.failed.store(true, Ordering::SeqCst);
        tracing::error!(
            "cannot create a thread ({what}): {e}; the system's thread limit may be reached. \
             Stopping every context, then exiting with code {}",
            crate::exit::CANNOT_SPAWN
        );
        self.events.emit(&Event::ThreadSpawnFailed {
            thread: what,
            error: e.to_string(),
        });
        (self.on_failure)();
    }
}

/// A thread name made of `prefix` and `name` (a manifest name) that
/// `std::thread::Builder::name` accepts: control characters (NUL
/// included) are replaced by `?`.
pub fn thread_name(prefix: &str, name: &str) -> String {
    let mut s = String::with_capacity(prefix.len() + name.len());
    s.extend(
        prefix
            .chars()
            .chain(name.chars())
            .map(|c| if c.is_control() { '?' } else { c }),
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Collect;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn a_thread_name_with_nul_or_control_characters_never_panics() {
        let threads = Spawner::new(Arc::default(), || panic!("no failure"));
        let name = thread_name("ctx-", "a\0b\nc\u{1b}[31m");
        assert_eq!(name, "ctx-a?b?c?[31m");
        let h = threads.spawn("a test thread", &name, || 7).expect("spawn");
        assert_eq!(h.join().ok(), Some(7));
        let h = threads
            .spawn("a test thread", "raw\0nul", || 8)
            .expect("a raw NUL is cleaned too");
        assert_eq!(h.join().ok(), Some(8));
    }

    /// Two hosts in one process, each with its own thread starter: a thread
    /// that host A cannot create is recorded on A's hub and stops A only.
    #[test]
    fn a_thread_one_host_cannot_create_stops_that_host_only() {
        let host = || {
            let seen = Arc::new(Collect::default());
            let told = Arc::new(AtomicUsize::new(0));
            let t = Arc::clone(&told);
            let threads = Spawner::new(Arc::new(Events::new(vec![seen.clone()])), move || {
                t.fetch_add(1, Ordering::SeqCst);
            });
            (threads, seen, told)
        };
        let (a, a_events, a_told) = host();
        let (b, b_events, b_told) = host();
        a.spawn_failed(
            "a driver",
            &std::io::Error::from(std::io::ErrorKind::OutOfMemory),
        );
        assert!(a.any_failed());
        assert_eq!(a_told.load(Ordering::SeqCst), 1);
        assert!(matches!(
            a_events.0.lock().as_slice(),
            [Event::ThreadSpawnFailed { thread, .. }] if thread == "a driver"
        ));
        assert!(!b.any_failed());
        assert_eq!(b_told.load(Ordering::SeqCst), 0);
        assert!(b_events.0.lock().is_empty());
    }
}
