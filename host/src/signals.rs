//! SIGINT, SIGTERM and SIGHUP, handled from the first moment of
//! `otools run` (before the manifest is read and the plugins are loaded).
//!
//! - The first of these signals asks for a clean stop. While the host is
//!   still starting (reading the manifest, loading plugins, building
//!   instances) it stops before anything runs; once running, every context
//!   stops and finalizes its instances. Either way the exit code is 0
//!   unless something else went wrong.
//! - SIGHUP is a graceful stop like SIGTERM (hot reload follows the plugin
//!   files, so SIGHUP has nothing to reload); when the host was started with
//!   SIGHUP ignored (`nohup`), it stays ignored.
//! - Any second one of them exits at once with code 130
//!   ([`crate::exit::FORCED`]), whatever the host is doing, after removing
//!   the loader's private folder and the files registered with
//!   [`remove_on_forced_exit`] (the control sockets), since `exit` runs no
//!   destructor.
//!
//! Each signal's handler writes one byte to its own socket pair (signal-hook's
//! self-pipe), and one thread per signal reads the bytes one by one: every
//! delivery is counted, so two signals the kernel delivers back to back
//! count as two. (signal-hook's iterator records "pending" per signal and
//! merged them.) The kernel itself still merges a signal sent while the same
//! signal is pending and not yet delivered; no handler can see that one.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

use parking_lot::Mutex;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::low_level::pipe;

use crate::exit;
use crate::threads;

// These statics are per process by nature: a signal's disposition (its
// handler) belongs to the process, not to a host, so the first delivery is
// one fact for the whole process. The one handler told about it is the
// running host's (`host::run` installs it).

/// Deliveries of any handled signal so far.
static DELIVERED: AtomicUsize = AtomicUsize::new(0);
/// The first signal received (0 = none yet).
static FIRST: AtomicI32 = AtomicI32::new(0);

type Handler = Box<dyn Fn(i32) + Send + Sync>;

/// Told about the first signal (set by `host::run` once it runs; a later
/// host of the same process replaces it).
static ON_FIRST: Mutex<Option<Handler>> = Mutex::new(None);

/// Files a forced exit removes first (it runs no destructor): the control
/// sockets of the hosts in this process.
static REMOVE_ON_FORCED_EXIT: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Has a forced exit (a second signal) remove `path` before the process ends.
pub fn remove_on_forced_exit(path: &Path) {
    REMOVE_ON_FORCED_EXIT.lock().push(path.to_path_buf());
}

/// Undoes [`remove_on_forced_exit`] (the owner removes `path` itself).
pub fn keep_on_forced_exit(path: &Path) {
    REMOVE_ON_FORCED_EXIT.lock().retain(|p| p != path);
}

/// The signal's name for messages.
pub fn name(sig: i32) -> &'static str {
    match sig {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

/// Installs the handlers and starts their watcher threads. Fails only when
/// a watcher thread cannot be created; a handler that cannot be installed
/// is warned about on stderr (the signal then keeps its default action).
pub fn install() -> std::io::Result<()> {
    for sig in [SIGINT, SIGTERM, SIGHUP] {
        if sig == SIGHUP && ignored_at_start(sig) {
            continue;
        }
        let (mut read, write) = match UnixStream::pair() {
            Ok(pair) => pair,
            Err(e) => {
                eprintln!("warning: cannot watch for {}: {e}", name(sig));
                continue;
            }
        };
        if let Err(e) = pipe::register(sig, write) {
            eprintln!("warning: cannot watch for {}: {e}", name(sig));
            continue;
        }
        // No host exists yet to report a failure to: the caller does.
        std::thread::Builder::new()
            .name(threads::thread_name("", name(sig)))
            .spawn(move || {
                let mut byte = [0u8; 1];
                loop {
                    match read.read(&mut byte) {
                        Ok(0) => return,
                        Ok(_) => delivered(sig),
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => return,
                    }
                }
            })?;
    }
    Ok(())
}

/// The first signal received so far, if any.
pub fn requested() -> Option<i32> {
    match FIRST.load(Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

/// Calls `handler` with the first signal: now if it already arrived, else
/// when it does.
pub fn on_first(handler: impl Fn(i32) + Send + Sync + 'static) {
    let mut slot = ON_FIRST.lock();
    if let Some(sig) = requested() {
        handler(sig);
    }
    *slot = Some(Box::new(handler));
}

/// One delivery of `sig`.
fn delivered(sig: i32) {
    if DELIVERED.fetch_add(1, Ordering::SeqCst) == 0 {
        let handler = ON_FIRST.lock();
        FIRST.store(sig, Ordering::SeqCst);
        if let Some(h) = handler.as_ref() {
            h(sig);
        }
        return;
    }
    let msg = format!(
        "received {} as a second signal: exiting now (code {})",
        name(sig),
        exit::FORCED
    );
    if tracing::dispatcher::has_been_set() {
        tracing::warn!("{msg}");
    } else {
        eprintln!("{msg}");
    }
    // `exit` runs no destructor: remove the private library copies and the
    // control sockets first.
    crate::plugin::loader::remove_private_dir();
    for path in REMOVE_ON_FORCED_EXIT.lock().iter() {
        let _ = std::fs::remove_file(path);
    }
    std::process::exit(i32::from(exit::FORCED));
}

/// Was `sig` ignored when the process started (as `nohup` does for SIGHUP)?
fn ignored_at_start(sig: i32) -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1u64 << (sig - 1)) != 0)
}
