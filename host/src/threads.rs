//! Starting the host's own threads (context drivers, loops, restart
//! workers, the watchdog, hot reload, signal watchers).
//!
//! Two rules hold for every thread the host starts:
//! - its name is always valid: a name built from a manifest name is cleaned
//!   of NUL and other control characters (which `std::thread::Builder::name`
//!   would panic on or the logs would echo raw), see [`thread_name`];
//! - a thread that cannot be created (the system's thread or memory limit is
//!   reached) is an error, never silence: [`spawn`] logs it and hands a
//!   `thread_spawn_failed` event to the handler the supervisor installed
//!   with [`on_failure`], which records it and stops every context
//!   cleanly; the host then exits with code 71
//!   ([`crate::exit::CANNOT_SPAWN`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use parking_lot::Mutex;

use crate::event::Event;

/// Set once any thread could not be created.
static FAILED: AtomicBool = AtomicBool::new(false);

type Handler = Box<dyn Fn(&Event) + Send + Sync>;

/// What to do when a thread cannot be created (set by the supervisor).
static ON_FAILURE: Mutex<Option<Handler>> = Mutex::new(None);

/// Sets what to do when a thread cannot be created (after it was logged):
/// the supervisor records the `thread_spawn_failed` event it is handed with
/// its event hub, and stops everything.
pub fn on_failure(handler: impl Fn(&Event) + Send + Sync + 'static) {
    *ON_FAILURE.lock() = Some(Box::new(handler));
}

/// Has a thread failed to start since the host started?
pub fn any_failed() -> bool {
    FAILED.load(Ordering::SeqCst)
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

/// Starts a thread named `name` (cleaned with [`thread_name`]) running
/// `body`. `what` says what the thread is for, in the error message (e.g.
/// "the loop thread of C/svc"). A failure is journaled, logged and handed to
/// the supervisor's handler before it is returned; the caller only undoes
/// its own bookkeeping.
pub fn spawn<T, F>(what: &str, name: &str, body: F) -> std::io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match std::thread::Builder::new()
        .name(thread_name("", name))
        .spawn(body)
    {
        Ok(h) => Ok(h),
        Err(e) => {
            spawn_failed(what, &e);
            Err(e)
        }
    }
}

/// Reports a thread that could not be created (see the module docs); for
/// the few places that start a thread with `std::thread::Builder` directly.
pub fn spawn_failed(what: &str, e: &std::io::Error) {
    let what = thread_name("", what);
    let what = what.as_str();
    FAILED.store(true, Ordering::SeqCst);
    tracing::error!(
        "cannot create a thread ({what}): {e}; the system's thread limit may be reached. \
         Stopping every context, then exiting with code {}",
        crate::exit::CANNOT_SPAWN
    );
    if let Some(h) = ON_FAILURE.lock().as_ref() {
        h(&Event::ThreadSpawnFailed {
            thread: what.into(),
            error: e.to_string(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_name_with_nul_or_control_characters_never_panics() {
        let name = thread_name("ctx-", "a\0b\nc\u{1b}[31m");
        assert_eq!(name, "ctx-a?b?c?[31m");
        let h = spawn("a test thread", &name, || 7).expect("spawn");
        assert_eq!(h.join().ok(), Some(7));
        let h = spawn("a test thread", "raw\0nul", || 8).expect("a raw NUL is cleaned too");
        assert_eq!(h.join().ok(), Some(8));
    }
}
