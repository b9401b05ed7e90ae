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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use parking_lot::Mutex;

use crate::event::{self, Event, Events};
use crate::instance::InstanceHost;
use crate::manifest::ReloadSettings;
use crate::plugin::{Library, loader};
use crate::runtime::{Paused, Prepared, RunningContext};
use crate::supervision::watchdog::{Hung, Slot, Watchdog};
use crate::threads::Spawner;

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

/// Starts the watcher thread for the plugin files used by `cores`, which
/// records on `events`, has its jobs' calls watched by `watchdog` and
/// starts its threads through `threads` (all three its host's).
/// `on_ceiling` is called (once) if the ceiling of loaded versions is reached.
pub fn start(
    cores: Vec<Arc<RunningContext>>,
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
    tracing::debug!("watching {} plugin file(s) for changes", files.len());
    let host_threads = Arc::clone(&threads);
    let spawned = std::thread::Builder::new()
        .name("reload".into())
        .spawn(move || {
            let mut w = Watcher {
                cores,
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

struct Watcher {
    cores: Vec<Arc<RunningContext>>,
    files: HashMap<PathBuf, FileState>,
    settings: ReloadSettings,
    accounting: Accounting,
    on_ceiling: Box<dyn Fn(Ceiling) + Send>,
    /// Where the reload events go (the host's hub).
    events: Arc<Events>,
    /// The host's watchdog, which watches every reload job's calls.
    watchdog: Arc<Watchdog>,
    /// The host's thread starter.
    threads: Arc<Spawner>,
    ceiling_hit: bool,
    watcher: RecommendedWatcher,
    /// The folders watched so far.
    dirs: Vec<PathBuf>,
}

/// A count as an event field.
fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn hex(h: u64) -> String {
    format!("{h:016x}")
}

impl Watcher {
    /// How long to wait for events before looking at files again.
    fn next_look(&self) -> Duration {
        let mut wait = Duration::from_secs(3600);
        if self.files.values().any(|f| f.settling) {
            wait = wait.min((self.settings.debounce / 4).max(Duration::from_millis(5)));
        }
        if self.files.values().any(|f| f.pending) {
            wait = wait.min(self.pending_period());
        }
        wait
    }

    /// How often a postponed file is looked at again.
    fn pending_period(&self) -> Duration {
        (self.settings.window / 10).max(Duration::from_millis(10))
    }

    /// Has the file been quiet (same size, times and inode) for the
    /// debounce? The first event of a write arrives while it is still
    /// going on: such a file is looked at again until it has been left
    /// alone for the debounce.
    fn quiet(&mut self, path: &Path) -> Option<loader::Fingerprint> {
        let debounce = self.settings.debounce;
        let state = self.files.get_mut(path)?;
        let Ok(now_seen) = loader::Fingerprint::of(path) else {
            // Removed (mid-build, or a rename in progress): the next event will tell.
            state.seen = None;
            state.settling = false;
            return None;
        };
        let now = Instant::now();
        let by_ctime = now_seen.unchanged_for().is_some_and(|d| d >= debounce);
        let quiet = match state.seen {
            Some((before, since)) if before == now_seen => {
                by_ctime || now.duration_since(since) >= debounce
            }
            _ => {
                state.seen = Some((now_seen, now));
                by_ctime
            }
        };
        state.settling = !quiet;
        quiet.then_some(now_seen)
    }

    /// Follows a path that is (or became) a symlink: the folder of what it
    /// leads to is watched too, so that a change of the target is seen.
    fn follow(&mut self, path: &Path) {
        let target = canonical(path);
        let Some(state) = self.files.get_mut(path) else {
            return;
        };
        if state.target == target {
            return;
        }
        tracing::info!(
            "{} now leads to {}: watching that file",
            path.display(),
            target.display()
        );
        state.target.clone_from(&target);
        if let Some(dir) = target.parent()
            && !self.dirs.iter().any(|d| d == dir)
        {
            if let Err(e) = self.watcher.watch(dir, RecursiveMode::NonRecursive) {
                tracing::warn!("hot reload: cannot watch {}: {e}", dir.display());
            }
            self.dirs.push(dir.to_path_buf());
        }
    }

    /// Looks at a changed file: reload once per distinct content.
    fn consider(&mut self, path: &Path) {
        let Some(quiet) = self.quiet(path) else {
            return;
        };
        self.follow(path);
        let Some(state) = self.files.get_mut(path) else {
            return;
        };
        let hash = match state.hashed {
            Some((seen, hash)) if seen == quiet => hash,
            _ => {
                let Ok(hash) = loader::file_hash(path) else {
                    return;
                };
                if loader::Fingerprint::of(path).ok() != Some(quiet) {
                    // It changed while it was hashed: wait for it to be quiet again.
                    state.seen = None;
                    state.settling = true;
                    return;
                }
                state.hashed = Some((quiet, hash));
                hash
            }
        };
        if hash == state.current || Some(hash) == state.rejected {
            state.pending = false;
            return;
        }
        let now = Instant::now();
        while state
            .attempts
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.settings.window)
        {
            state.attempts.pop_front();
        }
        if state.attempts.len() >= self.settings.limit {
            if !state.pending {
                tracing::warn!(
                    "reload of {} postponed: {} attempts within {} already",
                    path.display(),
                    self.settings.limit,
                    humantime::format_duration(self.settings.window)
                );
                self.events.emit(&Event::ReloadPostponed {
                    file: path.display().to_string(),
                });
            }
            state.pending = true;
            return;
        }
        state.pending = false;
        state.attempts.push_back(now);
        self.events.emit(&Event::ReloadAttempted {
            file: path.display().to_string(),
            hash: hex(hash),
        });
        match self.reload(path) {
            Ok((lib, swapped, revived)) => {
                if let Some(state) = self.files.get_mut(path) {
                    state.current = lib.hash;
                    state.rejected = None;
                }
                self.events.emit(&Event::ReloadOk {
                    file: path.display().to_string(),
                    hash: hex(lib.hash),
                    instances: count(swapped),
                    revived: count(revived),
                    loaded_versions: count(self.accounting.versions),
                    loaded_bytes: self.accounting.bytes,
                });
                tracing::info!(
                    "reloaded {} ({} instance(s) replaced, {} revived; {} library versions loaded, {} KiB, never unloaded)",
                    path.display(),
                    swapped,
                    revived,
                    self.accounting.versions,
                    self.accounting.bytes / 1024
                );
                self.check_budget();
            }
            Err(Refusal { reason, retry }) => {
                if let Some(state) = self.files.get_mut(path) {
                    // Only about timing: try the same content again.
                    match retry {
                        Retry::Never => state.rejected = Some(hash),
                        Retry::Later => state.pending = true,
                        Retry::WhenQuiet => {
                            state.seen = None;
                            state.settling = true;
                        }
                        Retry::OnChange => {}
                    }
                }
                self.events.emit(&Event::ReloadRejected {
                    file: path.display().to_string(),
                    hash: hex(hash),
                    reason: reason.clone(),
                });
                tracing::error!(
                    "reload of {} refused; the running version keeps serving: {reason}",
                    path.display()
                );
                self.check_budget();
            }
        }
    }

    /// Counts a version once it is mapped: refused or not, it stays.
    fn count_loaded(&mut self, lib: &Library) {
        let a = &mut self.accounting;
        if a.hashes.insert(lib.hash) {
            a.versions += 1;
            a.bytes += lib.size;
        }
    }

    fn check_budget(&mut self) {
        if self.accounting.bytes > self.settings.budget_bytes && !self.accounting.warned {
            self.accounting.warned = true;
            tracing::warn!(
                "loaded plugin versions now take {} MiB (budget {} MiB): libraries are never unloaded; restart the host to reclaim them",
                self.accounting.bytes >> 20,
                self.settings.budget_bytes >> 20
            );
        }
        if let Some(max) = self.settings.max_loaded
            && self.accounting.versions >= max
            && !self.ceiling_hit
        {
            self.ceiling_hit = true;
            tracing::error!(
                "{max} plugin library versions loaded (max_loaded_libraries): exiting so that the host restarts clean"
            );
            self.events
                .emit(&Event::LeakCeiling(event::Ceiling::LoadedLibraries {
                    loaded_versions: count(self.accounting.versions),
                }));
            (self.on_ceiling)(Ceiling::Reached);
        }
    }

    /// One reload of `path`, on a thread of its own so the watchdog can
    /// abandon a hung `setup`, `export_state` or `import_state`.
    fn reload(&mut self, path: &Path) -> Result<(Arc<Library>, usize, usize), Refusal> {
        let lib = match loader::load(path, self.settings.verbose) {
            Ok(lib) => Arc::new(lib),
            Err(e @ loader::LoadError::Changing { .. }) => {
                return Err(Refusal {
                    reason: e.to_string(),
                    retry: Retry::WhenQuiet,
                });
            }
            Err(e) => return Err(e.to_string().into()),
        };
        let targets: Vec<(Arc<RunningContext>, usize)> = self
            .cores
            .iter()
            .flat_map(|c| {
                c.units_of_file(path)
                    .into_iter()
                    .map(move |u| (Arc::clone(c), u))
            })
            .collect();
        self.count_loaded(&lib);
        for (core, u) in &targets {
            if !core.lib_has_export(*u, &lib) {
                let (name, export) = core.unit_label(*u);
                return Err(format!(
                    "{}: the new version has no export `{export}` (used by `{name}` in context `{}`)",
                    path.display(),
                    core.shared.name
                )
                .into());
            }
        }
        // Units that are over have nothing to swap: one that failed for good
        // (it gave up) is revived with the new version once the others are
        // swapped; one that ended normally takes it for any later start.
        let mut failed: Vec<(Arc<RunningContext>, usize)> = Vec::new();
        let targets: Vec<(Arc<RunningContext>, usize)> = targets
            .into_iter()
            .filter(|(core, u)| {
                if core.has_failed(*u) {
                    failed.push((Arc::clone(core), *u));
                    false
                } else if core.is_over(*u) {
                    core.adopt_library(*u, &lib);
                    false
                } else {
                    true
                }
            })
            .collect();
        let file = path.display().to_string();
        let revive = |swapped: usize| {
            let revived = failed
                .iter()
                .filter(|(core, u)| core.revive(*u, &lib, &file))
                .count();
            (Arc::clone(&lib), swapped, revived)
        };
        if targets.is_empty() {
            return Ok(revive(0));
        }
        let (tx, rx) = mpsc::channel::<Result<usize, Refusal>>();
        let swap = Arc::new(Swap {
            lib: Arc::clone(&lib),
            file: file.clone(),
            n: targets.len(),
            tx,
            current: Mutex::new(file.clone()),
            hosts: Mutex::new(Vec::new()),
            set_up: Mutex::new(Vec::new()),
            exporting: Mutex::new(None),
            paused: Mutex::new(Vec::new()),
            committed: AtomicBool::new(false),
            commits: Mutex::new(VecDeque::new()),
            committing: Mutex::new(None),
            kept: AtomicUsize::new(0),
            watchdog: Arc::clone(&self.watchdog),
            threads: Arc::clone(&self.threads),
        });
        if let Err(e) = swap.spawn(targets) {
            return Err(format!("cannot start the reload: {e}").into());
        }
        match rx.recv() {
            Ok(Ok(n)) => Ok(revive(n)),
            Ok(Err(refusal)) => Err(refusal),
            Err(_) => Err(String::from("the reload stopped without a result").into()),
        }
    }
}

/// One hot swap of every unit that uses a file, all or nothing; it owns
/// the protocol and is shared with the hang handler of the thread running
/// it (a `reload-job`).
///
/// Until the *point of no return* a failure anywhere (config, `setup`,
/// pause, `export_state`, `import_state`, a unit restarted or its context
/// stopping) rolls every unit back: new instances are discarded, paused
/// ones resume, none was committed. Only once every new instance is set up
/// and has imported its state, and every old one is paused and still
/// current, is the swap committed, unit by unit: the old instance is
/// finalized and its successor serves. From there nothing undoes it: an old
/// instance that hangs in `finalize` is abandoned and its successor serves
/// anyway, and the commit of the units left goes on from a new thread.
/// Hence every unit ends on the new version, or every unit on the old one;
/// the one exception is a stop of the host during the commit, which wins
/// as it does before (the units not yet committed keep the old version and
/// are finalized with their context).
struct Swap {
    lib: Arc<Library>,
    file: String,
    /// How many units are swapped.
    n: usize,
    /// Where the outcome goes (sent once).
    tx: mpsc::Sender<Result<usize, Refusal>>,
    /// What the swap is calling now (file, export, service), for messages.
    current: Mutex<String>,
    /// Host handles of the new instances (fenced if the swap is abandoned
    /// before the point of no return).
    hosts: Mutex<Vec<Arc<InstanceHost>>>,
    /// The units whose new version was set up (journaled
    /// `reload_setup_ok`), with its generation: each is journaled
    /// `reload_rolled_back` if the swap rolls back.
    set_up: Mutex<Vec<(Arc<RunningContext>, usize, u64)>>,
    /// The old instance whose `export_state` is running (its context, unit
    /// and generation): a hang there ends it under its restart policy.
    exporting: Mutex<Option<(Arc<RunningContext>, usize, u64)>>,
    /// Old instances paused and exported so far (resumed on rollback).
    paused: Mutex<Vec<(Arc<RunningContext>, Paused)>>,
    /// Past the point of no return.
    committed: AtomicBool,
    /// Past the point of no return: the units still to commit, in order.
    commits: Mutex<VecDeque<(Arc<RunningContext>, Paused, Prepared)>>,
    /// The successor of the old instance being finalized now.
    committing: Mutex<Option<(Arc<RunningContext>, Prepared)>>,
    /// Units left on the old version because their context began stopping
    /// during the commit.
    kept: AtomicUsize,
    /// The host's watchdog: each job's thread registers its slot there.
    watchdog: Arc<Watchdog>,
    /// The host's thread starter.
    threads: Arc<Spawner>,
}

impl Swap {
    /// Runs the swap of `targets` on a thread of its own, so the watchdog
    /// can abandon a hung plugin call; with no targets, the rest of the
    /// commit.
    fn spawn(self: &Arc<Self>, targets: Vec<(Arc<RunningContext>, usize)>) -> std::io::Result<()> {
        let swap = Arc::clone(self);
        std::thread::Builder::new()
            .name("reload-job".into())
            .spawn(move || {
                let handler = Arc::clone(&swap);
                let slot = swap.watchdog.register(move |h| handler.on_hang(h));
                if !targets.is_empty() {
                    match swap.prepare_all(&targets, &slot) {
                        None => return,
                        Some(Err(refusal)) => {
                            swap.send(Err(refusal));
                            return;
                        }
                        Some(Ok(())) => {}
                    }
                }
                if swap.commit_rest(&slot).is_some() {
                    let kept = swap.kept.load(Ordering::SeqCst);
                    swap.send(if kept == 0 {
                        Ok(swap.n)
                    } else {
                        Err(format!(
                            "{}: {BUSY}: {kept} of {} instance(s) kept the old version: their context began stopping during the commit",
                            swap.file, swap.n
                        )
                        .into())
                    });
                }
            })
            .map(drop)
            .inspect_err(|e| self.threads.spawn_failed("a reload job", e))
    }

    fn send(&self, outcome: Result<usize, Refusal>) {
        let _ = self.tx.send(outcome);
    }

    fn label(&self, core: &RunningContext, u: usize) -> String {
        let (name, export) = core.unit_label(u);
        format!(
            "{}: export `{export}` (`{name}` in context `{}`)",
            self.file, core.shared.name
        )
    }

    /// A call of the swap's thread hung; that thread is abandoned.
    fn on_hang(self: &Arc<Self>, h: Hung) {
        if self.committed.load(Ordering::SeqCst) {
            // An old instance hung in its `finalize`: abandoned, not
            // finalized; its successor serves all the same, and the units
            // left are committed from a new thread.
            let committing = self.committing.lock().take();
            if let Some((core, new)) = committing {
                core.retire_hung(h);
                core.promote(new, &self.lib);
            }
            if let Err(e) = self.spawn(Vec::new()) {
                // Journaled, and the host stops (see `crate::threads`).
                self.send(Err(
                    format!("{}: cannot finish the swap: {e}", self.file).into()
                ));
            }
            return;
        }
        // Before the point of no return: undo everything from here.
        for host in self.hosts.lock().iter() {
            host.fence();
        }
        self.journal_rolled_back();
        // Taken out first: resuming or exiting a paused instance can drop
        // it, and a plugin's `Drop` never runs under a host lock.
        let exporting = self.exporting.lock().take();
        let retry = match exporting {
            Some((core, u, generation)) => {
                // The old instance itself hung: it exits under its restart
                // policy (a fresh generation of the old version). The new
                // content is not at fault: tried again when the file changes.
                core.hung_while_paused(u, generation, h);
                Retry::OnChange
            }
            None => Retry::Never,
        };
        self.resume_paused();
        let what = self.current.lock().clone();
        self.send(Err(Refusal {
            reason: format!(
                "{what}: {} hung (no return within {})",
                h.entry.name(),
                humantime::format_duration(h.limit)
            ),
            retry,
        }));
    }

    /// Up to the point of no return: prepare all, pause all, hand the state
    /// over, check that every unit can still be committed; or roll back.
    /// `None` when the thread was abandoned (its hang handler has rolled
    /// back and reported).
    fn prepare_all(
        &self,
        targets: &[(Arc<RunningContext>, usize)],
        slot: &Slot,
    ) -> Option<Result<(), Refusal>> {
        let record = |h: &Arc<InstanceHost>| self.hosts.lock().push(Arc::clone(h));
        // 1. Build and set up every new instance while the old ones serve.
        let mut prepared: Vec<(Arc<RunningContext>, Prepared)> = Vec::new();
        for (core, u) in targets {
            *self.current.lock() = self.label(core, *u);
            match core.prepare(*u, &self.lib, slot, &record) {
                Err(_abandoned) => return None,
                Ok(Err(reason)) => {
                    let reason = format!("{}: {reason}", self.label(core, *u));
                    return self.rollback(prepared, slot, reason);
                }
                Ok(Ok(p)) => {
                    core.emit(Event::ReloadSetupOk {
                        unit: core.unit_id(*u, p.generation()),
                        file: self.file.clone(),
                    });
                    let set_up = (Arc::clone(core), *u, p.generation());
                    self.set_up.lock().push(set_up);
                    prepared.push((Arc::clone(core), p));
                }
            }
        }
        // 2. Pause the old instances and take their state.
        let mut states = Vec::new();
        for (core, u) in targets {
            let p = match core.pause(*u) {
                Ok(p) => p,
                Err(reason) => {
                    let reason = format!("{}: {BUSY}: {reason}", self.label(core, *u));
                    return self.rollback(prepared, slot, reason);
                }
            };
            *self.current.lock() = format!("{} (old version)", self.label(core, *u));
            // Known before the call: if it hangs, the hang handler ends
            // this instance under its restart policy.
            *self.exporting.lock() = Some((Arc::clone(core), *u, p.generation()));
            let Ok(exported) = core.export(&p, slot) else {
                return None;
            };
            *self.exporting.lock() = None;
            self.paused.lock().push((Arc::clone(core), p));
            match exported {
                Err(reason) => {
                    let reason = format!("{} (old version): {reason}", self.label(core, *u));
                    return self.rollback(prepared, slot, reason);
                }
                Ok(state) => states.push(state),
            }
        }
        // 3. Hand the state over.
        for (i, state) in states.iter().enumerate() {
            let outcome = {
                let (core, new) = &mut prepared[i];
                let u = new.unit();
                *self.current.lock() = self.label(core, u);
                core.import(new, state.as_ref(), slot)
                    .map(|r| r.map_err(|e| format!("{}: {e}", self.label(core, u))))
            };
            match outcome {
                Err(_abandoned) => return None,
                Ok(Err(reason)) => return self.rollback(prepared, slot, reason),
                Ok(Ok(())) => {}
            }
        }
        // 4. Every unit still what was paused (no restart, its context not
        // stopping)? Then this is the point of no return.
        let stale = self
            .paused
            .lock()
            .iter()
            .find(|(core, p)| !core.can_commit(p))
            .map(|(core, p)| interrupted(&self.label(core, p.unit())));
        if let Some(reason) = stale {
            return self.rollback(prepared, slot, reason);
        }
        let paused: Vec<(Arc<RunningContext>, Paused)> = self.paused.lock().drain(..).collect();
        let mut commits = self.commits.lock();
        for ((core, new), (_, old)) in prepared.into_iter().zip(paused) {
            commits.push_back((core, old, new));
        }
        drop(commits);
        self.set_up.lock().clear();
        self.committed.store(true, Ordering::SeqCst);
        Some(Ok(()))
    }

    /// Past the point of no return: for each unit left, finalize the old
    /// instance, then let the new one serve. `None` when the thread was
    /// abandoned (its hang handler carries on).
    fn commit_rest(&self, slot: &Slot) -> Option<()> {
        loop {
            let next = self.commits.lock().pop_front();
            let Some((core, old, new)) = next else {
                return Some(());
            };
            if !core.can_commit(&old) {
                // Its context began stopping: the stop wins (the host is
                // on its way out, versions no longer matter). The old
                // instance is finalized with its context.
                self.kept.fetch_add(1, Ordering::SeqCst);
                core.resume(old);
                let (u, generation) = (new.unit(), new.generation());
                core.discard(new, slot).ok()?;
                self.rolled_back(&core, u, generation);
                continue;
            }
            *self.current.lock() = format!("{} (old version)", self.label(&core, old.unit()));
            *self.committing.lock() = Some((Arc::clone(&core), new));
            core.retire(old, slot).ok()?;
            let committing = self.committing.lock().take();
            if let Some((core, new)) = committing {
                core.promote(new, &self.lib);
            }
        }
    }

    /// Journals `reload_rolled_back` for every unit whose new version this
    /// swap set up (`set_up`, drained, so once): called when the swap rolls
    /// back, after the new instances were discarded or fenced and before
    /// anything else is journaled about those units (a hang of an old
    /// instance).
    fn journal_rolled_back(&self) {
        let set_up: Vec<_> = self.set_up.lock().drain(..).collect();
        for (core, u, generation) in set_up {
            self.rolled_back(&core, u, generation);
        }
    }

    /// Journals `reload_rolled_back` for unit `u`, whose new instance (of
    /// `generation`) was discarded.
    fn rolled_back(&self, core: &RunningContext, u: usize, generation: u64) {
        core.emit(Event::ReloadRolledBack {
            unit: core.unit_id(u, generation),
            file: self.file.clone(),
        });
    }

    /// Resumes every paused old instance, taken out of `paused` first (a
    /// plugin's `Drop` never runs under a host lock).
    fn resume_paused(&self) {
        let paused: Vec<(Arc<RunningContext>, Paused)> = self.paused.lock().drain(..).collect();
        for (core, p) in paused {
            core.resume(p);
        }
    }

    /// Rolls back: discards the prepared instances, resumes the paused ones.
    fn rollback(
        &self,
        prepared: Vec<(Arc<RunningContext>, Prepared)>,
        slot: &Slot,
        reason: String,
    ) -> Option<Result<(), Refusal>> {
        for (core, p) in prepared {
            if core.discard(p, slot).is_err() {
                return None;
            }
        }
        self.journal_rolled_back();
        self.resume_paused();
        Some(Err(reason.into()))
    }
}

/// The refusal when a unit was restarted, or its context began stopping,
/// during the swap: only about timing, so the same content is tried again.
fn interrupted(label: &str) -> String {
    format!(
        "{label}: {BUSY}: it was restarted or its context began stopping during the swap; every unit keeps the old version"
    )
}

#[cfg(test)]
mod tests {
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
