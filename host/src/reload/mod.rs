//! Hot reload: a plugin file that changes on disk replaces its running
//! instances in place, or is refused while the old version keeps serving.
//!
//! What triggers a reload: the *directories* holding the manifest's plugin
//! files are watched (a build or an editor replaces files by rename, which
//! a watch on the file itself would lose); events are filtered by file name
//! and debounced, then the file's content hash decides: a touch, a rewrite
//! with identical bytes or a content already refused does nothing, so there
//! is exactly one attempt per distinct content. Attempts are rate-limited.
//!
//! What a reload does (spawn first, swap second): the new file is loaded
//! from a private copy (see the loader), its ABI checked, and for every
//! service and condition that uses it a new instance is built from the same
//! config and `setup` while the old ones keep serving. Then the old ones
//! are paused, their state exported and imported into the new ones, and
//! only when every step succeeded for every instance is the swap
//! committed: old instances finalized and fenced, new ones serving under
//! the same names. Any failure (load, ABI, missing export, config, setup
//! error, panic or hang, import) rolls everything back: new instances are
//! finalized, old ones resume, and one line says which file, export and why.
//! Past that point of no return nothing undoes the swap (see `Swap`), so
//! every unit of the file ends on the new version or every one on the old.
//! An old instance that hangs in `export_state` exits under its restart
//! policy, and the content is tried again at the file's next change.
//!
//! Nothing is ever unloaded (see ARCHITECTURE.md): every loaded version is
//! counted, with its size, and a ceiling can make the host exit so that an
//! OS supervisor restarts it clean.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Instant;

use notify::{EventKind, RecursiveMode, Watcher as _};

use crate::event::Events;
use crate::manifest::ReloadSettings;
use crate::pipeline::RunningPipeline;
use crate::plugin::{Library, loader};
use crate::runtime::RunningContext;
use crate::supervision::watchdog::Watchdog;
use crate::threads::Spawner;

mod swap;
mod watcher;

use swap::Swap;
use watcher::Watcher;

/// Marks a refusal that is only about timing (a unit restarting): retried.
const BUSY: &str = "cannot be swapped now";

/// Why the host must exit because of reloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ceiling {
    /// `max_loaded_libraries` was reached.
    Reached,
}

struct FileState {
    current: u64,
    rejected: Option<u64>,
    attempts: VecDeque<Instant>,
    /// Postponed by the rate limit, or refused for timing only: look again.
    pending: bool,
    /// Changed recently: look again once it has been quiet for the debounce.
    settling: bool,
    /// The file as last seen, and since when it looks like that.
    seen: Option<(loader::Fingerprint, Instant)>,
    /// The content hash of the file as it was when last hashed: a look at
    /// an unchanged file (a postponed or retried reload) reads it no more.
    hashed: Option<(loader::Fingerprint, u64)>,
    /// Where the path leads (symlinks resolved), watched as well.
    target: PathBuf,
}

/// Why a reload did not happen, and whether the same content is tried again.
struct Refusal {
    reason: String,
    retry: Retry,
}

/// When refused content is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Never: only a different content is tried.
    Never,
    /// A unit was restarting or stopping: again a little later.
    Later,
    /// The file changed while it was read: again once it is quiet.
    WhenQuiet,
    /// The old version failed to hand over (its `export_state` hung): not
    /// the new content's fault, so it is tried again when the file changes
    /// again, even to the same bytes.
    OnChange,
}

impl From<String> for Refusal {
    fn from(reason: String) -> Refusal {
        let retry = if reason.contains(BUSY) {
            Retry::Later
        } else {
            Retry::Never
        };
        Refusal { reason, retry }
    }
}

struct Accounting {
    /// Content hashes of every version loaded (refused ones too: they stay mapped).
    hashes: std::collections::HashSet<u64>,
    versions: usize,
    bytes: u64,
    warned: bool,
}

/// Starts the watcher thread for the plugin files used by `cores` and
/// `pipes` (the stages' libraries, see `crate::pipeline`), which
/// records on `events`, has its jobs' calls watched by `watchdog` and
/// starts its threads through `threads` (all three its host's).
/// `on_ceiling` is called (once) if the ceiling of loaded versions is reached.
#[expect(
    clippy::too_many_arguments,
    reason = "the host's shared parts, each handed over once"
)]
pub fn start(
    cores: Vec<Arc<RunningContext>>,
    pipes: Vec<Arc<RunningPipeline>>,
    libraries: Vec<Arc<Library>>,
    settings: ReloadSettings,
    events: Arc<Events>,
    watchdog: Arc<Watchdog>,
    threads: Arc<Spawner>,
    on_ceiling: impl Fn(Ceiling) + Send + 'static,
) {
    if !settings.watch || libraries.is_empty() {
        return;
    }
    let mut files: HashMap<PathBuf, FileState> = HashMap::new();
    let mut dirs: Vec<PathBuf> = Vec::new();
    for lib in &libraries {
        // The path as the manifest names it (a symlink stays a symlink),
        // and where it leads now: both folders are watched.
        let path = lexical(&lib.path);
        let target = canonical(&path);
        for dir in [path.parent(), target.parent()].into_iter().flatten() {
            if !dirs.iter().any(|d| d == dir) {
                dirs.push(dir.to_path_buf());
            }
        }
        files.insert(
            path,
            FileState {
                current: lib.hash,
                rejected: None,
                attempts: VecDeque::new(),
                pending: false,
                settling: false,
                seen: None,
                hashed: None,
                target,
            },
        );
    }
    let accounting = Accounting {
        hashes: libraries.iter().map(|l| l.hash).collect(),
        versions: libraries.len(),
        bytes: libraries.iter().map(|l| l.size).sum(),
        warned: false,
    };
    // The watches are in place when this returns: a change from then on is
    // seen. A change between loading and now is caught by looking at every
    // file once, first thing on the thread.
    // The raw events only say "look at this file"; whether it is quiet is
    // decided here (see `Watcher::quiet`), so a flood of events in a busy
    // folder (a build tree) cannot hold a reload back. Opening or reading a
    // file (the host's own copies too) is no change.
    let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
    let watcher = notify::recommended_watcher(move |r: notify::Result<notify::Event>| {
        if !matches!(&r, Ok(e) if matches!(e.kind, EventKind::Access(_))) {
            let _ = tx.send(r);
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("hot reload is off: cannot watch plugin files: {e}");
            return;
        }
    };
    for dir in &dirs {
        if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
            tracing::warn!("hot reload: cannot watch {}: {e}", dir.display());
        }
    }
    tracing::info!(
        "hot reload: watching {} plugin file(s) for changes",
        files.len()
    );
    let host_threads = Arc::clone(&threads);
    let spawned = std::thread::Builder::new()
        .name("reload".into())
        .spawn(move || {
            let mut w = Watcher {
                cores,
                pipes,
                files,
                settings,
                accounting,
                on_ceiling: Box::new(on_ceiling),
                events,
                watchdog,
                threads,
                ceiling_hit: false,
                watcher,
                dirs,
            };
            let all: Vec<PathBuf> = w.files.keys().cloned().collect();
            for path in all {
                w.consider(&path);
            }
            let mut pending_due = Instant::now();
            loop {
                let mut batch = Vec::new();
                match rx.recv_timeout(w.next_look()) {
                    Ok(r) => batch.push(r),
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
                while batch.len() < 10_000
                    && let Ok(r) = rx.try_recv()
                {
                    batch.push(r);
                }
                let mut due: Vec<PathBuf> = Vec::new();
                for r in batch {
                    match r {
                        Ok(event) => {
                            for p in event.paths {
                                let p = lexical(&p);
                                for (key, f) in &w.files {
                                    if (*key == p || f.target == p) && !due.contains(key) {
                                        due.push(key.clone());
                                    }
                                }
                            }
                        }
                        Err(e) => tracing::warn!("hot reload: watch error: {e}"),
                    }
                }
                // Files waiting to be quiet are looked at on every round (a
                // stat); postponed ones every window / 10.
                let now = Instant::now();
                let look_pending = now >= pending_due;
                if look_pending {
                    pending_due = now + w.pending_period();
                }
                for (key, f) in &w.files {
                    if (f.settling || (f.pending && look_pending)) && !due.contains(key) {
                        due.push(key.clone());
                    }
                }
                due.sort();
                for path in due {
                    w.consider(&path);
                }
            }
        });
    if let Err(e) = spawned {
        // Journaled, logged, and the host stops (see `crate::threads`).
        host_threads.spawn_failed("the hot reload watcher", &e);
    }
}

/// The absolute path, symlinks kept (the name the manifest uses).
fn lexical(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Where a path leads now, symlinks resolved.
fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| lexical(p))
}
/// A count as an event field.
fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn hex(h: u64) -> String {
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::swap::interrupted;
    use super::*;

    #[test]
    fn a_swap_that_a_restart_interrupted_is_tried_again_not_refused_for_good() {
        let refusal = Refusal::from(interrupted("/x/libp.so: export `E` (`s` in context `C`)"));
        assert_eq!(refusal.retry, Retry::Later, "{}", refusal.reason);
    }

    #[test]
    fn a_unit_not_serving_at_the_pause_is_tried_again() {
        let refusal = Refusal::from(format!(
            "f: export `E` (`s` in context `C`): {BUSY}: it is not serving"
        ));
        assert_eq!(refusal.retry, Retry::Later);
        let refusal = Refusal::from(String::from("f: setup failed: no"));
        assert_eq!(refusal.retry, Retry::Never);
    }
}
