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
//!
//! Nothing is ever unloaded (see ARCHITECTURE.md): every loaded version is
//! counted, with its size, and a ceiling can make the host exit so that an
//! OS supervisor restarts it clean.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use parking_lot::Mutex;

use crate::instance::InstanceHost;
use crate::plugin::{Library, loader};
use crate::runtime::{Core, Paused, Prepared};
use crate::supervision::journal;
use crate::supervision::watchdog::Slot;

/// Marks a refusal that is only about timing (a unit restarting): retried.
const BUSY: &str = "cannot be swapped now";

/// How reloads are watched and bounded (`[host]` keys and `--no-watch`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Watch plugin files at all.
    pub watch: bool,
    /// Quiet time after the last change before a file is looked at.
    pub debounce: Duration,
    /// Reload attempts allowed per `window` (per file).
    pub limit: usize,
    /// The rate-limit window.
    pub window: Duration,
    /// Exit (code 76) once this many library versions have been loaded.
    pub max_loaded: Option<usize>,
    /// Warn once the loaded versions' files add up to more than this many bytes.
    pub budget_bytes: u64,
    /// Keep abi_stable's full reports in errors.
    pub verbose: bool,
}

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

/// Starts the watcher thread for the plugin files used by `cores`.
/// `on_ceiling` is called (once) if the ceiling of loaded versions is reached.
pub fn start(
    cores: Vec<Arc<Core>>,
    libraries: Vec<Arc<Library>>,
    settings: Settings,
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
    let spawned = std::thread::Builder::new()
        .name("reload".into())
        .spawn(move || {
            let mut w = Watcher {
                cores,
                files,
                settings,
                accounting,
                on_ceiling: Box::new(on_ceiling),
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
        crate::threads::spawn_failed("the hot reload watcher", &e);
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
    cores: Vec<Arc<Core>>,
    files: HashMap<PathBuf, FileState>,
    settings: Settings,
    accounting: Accounting,
    on_ceiling: Box<dyn Fn(Ceiling) + Send>,
    ceiling_hit: bool,
    watcher: RecommendedWatcher,
    /// The folders watched so far.
    dirs: Vec<PathBuf>,
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
        let hash = loader::file_hash(path);
        let Some(state) = self.files.get_mut(path) else {
            return;
        };
        let Ok(hash) = hash else {
            return;
        };
        if loader::Fingerprint::of(path).ok() != Some(quiet) {
            // It changed while it was hashed: wait for it to be quiet again.
            state.seen = None;
            state.settling = true;
            return;
        }
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
                journal::record(
                    "reload_postponed",
                    "",
                    None,
                    None,
                    &[("file", path.display().to_string().into())],
                );
            }
            state.pending = true;
            return;
        }
        state.pending = false;
        state.attempts.push_back(now);
        journal::record(
            "reload_attempted",
            "",
            None,
            None,
            &[
                ("file", path.display().to_string().into()),
                ("hash", hex(hash).into()),
            ],
        );
        match self.reload(path) {
            Ok((lib, swapped, revived)) => {
                if let Some(state) = self.files.get_mut(path) {
                    state.current = lib.hash;
                    state.rejected = None;
                }
                journal::record(
                    "reload_ok",
                    "",
                    None,
                    None,
                    &[
                        ("file", path.display().to_string().into()),
                        ("hash", hex(lib.hash).into()),
                        ("instances", swapped.into()),
                        ("revived", revived.into()),
                        ("loaded_versions", self.accounting.versions.into()),
                        ("loaded_bytes", self.accounting.bytes.into()),
                    ],
                );
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
                    }
                }
                journal::record(
                    "reload_rejected",
                    "",
                    None,
                    None,
                    &[
                        ("file", path.display().to_string().into()),
                        ("hash", hex(hash).into()),
                        ("reason", reason.as_str().into()),
                    ],
                );
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
            journal::record(
                "leak_ceiling",
                "",
                None,
                None,
                &[
                    ("kind", "loaded_libraries".into()),
                    ("loaded_versions", self.accounting.versions.into()),
                ],
            );
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
        let targets: Vec<(Arc<Core>, usize)> = self
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
        let mut failed: Vec<(Arc<Core>, usize)> = Vec::new();
        let targets: Vec<(Arc<Core>, usize)> = targets
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
        let (tx, rx) = mpsc::channel::<Result<usize, String>>();
        let job = Arc::new(Job {
            current: Mutex::new(path.display().to_string()),
            hosts: Mutex::new(Vec::new()),
            paused: Mutex::new(Vec::new()),
        });
        let job_lib = Arc::clone(&lib);
        let job_file = file.clone();
        let spawned = std::thread::Builder::new()
            .name("reload-job".into())
            .spawn(move || {
                let hang_tx = tx.clone();
                let hang_job = Arc::clone(&job);
                let slot = Slot::register(move |h| {
                    // The job's thread is stuck in a plugin call: undo what it did from here.
                    for (_, host) in hang_job.hosts.lock().iter() {
                        host.fence();
                    }
                    // Taken out first: resuming or exiting a paused instance can
                    // drop it, and a plugin's `Drop` never runs under a host lock.
                    let paused: Vec<(Arc<Core>, Paused)> =
                        hang_job.paused.lock().drain(..).collect();
                    for (core, p) in paused {
                        if p.unit() == h.unit && p.generation() == h.generation {
                            // The old instance itself hung while exporting its state.
                            core.hung_while_paused(p, h);
                        } else {
                            core.resume(p);
                        }
                    }
                    let what = hang_job.current.lock().clone();
                    let _ = hang_tx.send(Err(format!(
                        "{what}: {} hung (no return within {})",
                        h.entry.name(),
                        humantime::format_duration(h.limit)
                    )));
                });
                let result = swap(&targets, &job_lib, &slot, &job, &job_file);
                if let Some(r) = result {
                    let _ = tx.send(r);
                }
            });
        if let Err(e) = spawned {
            crate::threads::spawn_failed("a reload job", &e);
            return Err(format!("cannot start the reload: {e}").into());
        }
        match rx.recv() {
            Ok(Ok(n)) => Ok(revive(n)),
            Ok(Err(reason)) => Err(reason.into()),
            Err(_) => Err(String::from("the reload stopped without a result").into()),
        }
    }
}

/// What a reload job has done so far, shared with its hang handler.
struct Job {
    /// What the job is calling now (file, export, service), for messages.
    current: Mutex<String>,
    /// Host handles of the new instances, with their units (fenced if the job is abandoned).
    hosts: Mutex<Vec<(usize, Arc<InstanceHost>)>>,
    /// Old instances paused so far (resumed on rollback).
    paused: Mutex<Vec<(Arc<Core>, Paused)>>,
}

impl Job {
    /// Rolls back: discards the prepared instances, resumes the paused ones.
    fn rollback(
        &self,
        prepared: Vec<(Arc<Core>, Prepared)>,
        slot: &Slot,
        reason: String,
    ) -> Option<Result<usize, String>> {
        for (core, p) in prepared {
            if core.discard(p, slot).is_err() {
                return None;
            }
        }
        let paused: Vec<(Arc<Core>, Paused)> = self.paused.lock().drain(..).collect();
        for (core, p) in paused {
            core.resume(p);
        }
        Some(Err(reason))
    }
}

/// The body of a reload job: prepare all, pause all, hand the state over,
/// commit all, or roll back. `None` when the job was abandoned (its hang
/// handler has rolled back and reported).
fn swap(
    targets: &[(Arc<Core>, usize)],
    lib: &Arc<Library>,
    slot: &Slot,
    job: &Job,
    file: &str,
) -> Option<Result<usize, String>> {
    let record = |h: &Arc<InstanceHost>| job.hosts.lock().push((0, Arc::clone(h)));
    let label = |core: &Core, u: usize| {
        let (name, export) = core.unit_label(u);
        format!(
            "{file}: export `{export}` (`{name}` in context `{}`)",
            core.shared.name
        )
    };
    // 1. Build and set up every new instance while the old ones serve.
    let mut prepared: Vec<(Arc<Core>, Prepared)> = Vec::new();
    for (core, u) in targets {
        *job.current.lock() = label(core, *u);
        match core.prepare(*u, lib, slot, &record) {
            Err(_abandoned) => return None,
            Ok(Err(reason)) => {
                return job.rollback(prepared, slot, format!("{}: {reason}", label(core, *u)));
            }
            Ok(Ok(p)) => {
                core.journal_unit(
                    "reload_setup_ok",
                    *u,
                    p.generation(),
                    &[("file", file.into())],
                );
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
                return job.rollback(
                    prepared,
                    slot,
                    format!("{}: {BUSY}: {reason}", label(core, *u)),
                );
            }
        };
        *job.current.lock() = format!("{} (old version)", label(core, *u));
        let exported = core.export(&p, slot);
        job.paused.lock().push((Arc::clone(core), p));
        match exported {
            Err(_abandoned) => return None,
            Ok(Err(reason)) => {
                return job.rollback(
                    prepared,
                    slot,
                    format!("{} (old version): {reason}", label(core, *u)),
                );
            }
            Ok(Ok(state)) => states.push(state),
        }
    }
    // 3. Hand the state over.
    for (i, state) in states.iter().enumerate() {
        let outcome = {
            let (core, new) = &mut prepared[i];
            let u = new.unit();
            *job.current.lock() = label(core, u);
            core.import(new, state.as_ref(), slot)
                .map(|r| r.map_err(|e| format!("{}: {e}", label(core, u))))
        };
        match outcome {
            Err(_abandoned) => return None,
            Ok(Err(reason)) => return job.rollback(prepared, slot, reason),
            Ok(Ok(())) => {}
        }
    }
    // 4. Commit: the point of no return.
    let paused: Vec<(Arc<Core>, Paused)> = job.paused.lock().drain(..).collect();
    let n = prepared.len();
    let mut kept = 0;
    for ((core, new), (_, old)) in prepared.into_iter().zip(paused) {
        match core.commit(old, new, lib, slot) {
            Err(_abandoned) => return None,
            Ok(true) => {}
            Ok(false) => kept += 1,
        }
    }
    if kept > 0 {
        return Some(Err(kept_old_version(file, kept, n)));
    }
    Some(Ok(n))
}

/// The refusal when some units were restarted or stopping at the commit:
/// only about timing, so the same content is tried again.
fn kept_old_version(file: &str, kept: usize, n: usize) -> String {
    format!(
        "{file}: {BUSY}: {kept} of {n} instance(s) were restarted or stopping during the swap and keep the old version"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_swap_that_a_restart_interrupted_is_tried_again_not_refused_for_good() {
        let refusal = Refusal::from(kept_old_version("/x/libp.so", 1, 2));
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
