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

use notify_debouncer_mini::{DebounceEventResult, new_debouncer, notify::RecursiveMode};
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
    pending: bool,
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
        let path = absolute(&lib.path);
        if let Some(dir) = path.parent()
            && !dirs.iter().any(|d| d == dir)
        {
            dirs.push(dir.to_path_buf());
        }
        files.insert(
            path,
            FileState {
                current: lib.hash,
                rejected: None,
                attempts: VecDeque::new(),
                pending: false,
            },
        );
    }
    let accounting = Accounting {
        hashes: libraries.iter().map(|l| l.hash).collect(),
        versions: libraries.len(),
        bytes: libraries.iter().map(|l| l.size).sum(),
        warned: false,
    };
    let spawned = std::thread::Builder::new()
        .name("reload".into())
        .spawn(move || {
            let (tx, rx) = mpsc::channel::<DebounceEventResult>();
            let mut debouncer = match new_debouncer(settings.debounce, tx) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!("hot reload is off: cannot watch plugin files: {e}");
                    return;
                }
            };
            for dir in &dirs {
                if let Err(e) = debouncer.watcher().watch(dir, RecursiveMode::NonRecursive) {
                    tracing::warn!("hot reload: cannot watch {}: {e}", dir.display());
                }
            }
            tracing::debug!("watching {} plugin file(s) for changes", files.len());
            let mut w = Watcher {
                cores,
                files,
                settings,
                accounting,
                on_ceiling: Box::new(on_ceiling),
                ceiling_hit: false,
            };
            loop {
                let wait = if w.files.values().any(|f| f.pending) {
                    (w.settings.window / 10).max(Duration::from_millis(10))
                } else {
                    Duration::from_secs(3600)
                };
                match rx.recv_timeout(wait) {
                    Ok(Ok(events)) => {
                        let mut changed: Vec<PathBuf> =
                            events.into_iter().map(|e| absolute(&e.path)).collect();
                        changed.sort();
                        changed.dedup();
                        for path in changed {
                            if w.files.contains_key(&path) {
                                w.consider(&path);
                            }
                        }
                    }
                    Ok(Err(e)) => tracing::warn!("hot reload: watch error: {e}"),
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        let pending: Vec<PathBuf> = w
                            .files
                            .iter()
                            .filter(|(_, f)| f.pending)
                            .map(|(p, _)| p.clone())
                            .collect();
                        for path in pending {
                            w.consider(&path);
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
        });
    if let Err(e) = spawned {
        // Journaled, logged, and the host stops (see `crate::threads`).
        crate::threads::spawn_failed("the hot reload watcher", &e);
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

struct Watcher {
    cores: Vec<Arc<Core>>,
    files: HashMap<PathBuf, FileState>,
    settings: Settings,
    accounting: Accounting,
    on_ceiling: Box<dyn Fn(Ceiling) + Send>,
    ceiling_hit: bool,
}

fn hex(h: u64) -> String {
    format!("{h:016x}")
}

impl Watcher {
    /// Looks at a changed file: reload once per distinct content.
    fn consider(&mut self, path: &Path) {
        let Ok(hash) = loader::file_hash(path) else {
            // Removed (mid-build, or a rename in progress): the next event will tell.
            return;
        };
        let Some(state) = self.files.get_mut(path) else {
            return;
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
            Ok((lib, swapped)) => {
                let state = self.files.get_mut(path).expect("known file");
                state.current = lib.hash;
                state.rejected = None;
                journal::record(
                    "reload_ok",
                    "",
                    None,
                    None,
                    &[
                        ("file", path.display().to_string().into()),
                        ("hash", hex(lib.hash).into()),
                        ("instances", swapped.into()),
                        ("loaded_versions", self.accounting.versions.into()),
                        ("loaded_bytes", self.accounting.bytes.into()),
                    ],
                );
                tracing::info!(
                    "reloaded {} ({} instance(s) replaced; {} library versions loaded, {} KiB, never unloaded)",
                    path.display(),
                    swapped,
                    self.accounting.versions,
                    self.accounting.bytes / 1024
                );
                self.check_budget();
            }
            Err(reason) => {
                if let Some(state) = self.files.get_mut(path) {
                    if reason.contains(BUSY) {
                        // A unit was restarting: try the same content again later.
                        state.pending = true;
                    } else {
                        state.rejected = Some(hash);
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
    fn reload(&mut self, path: &Path) -> Result<(Arc<Library>, usize), String> {
        let lib = loader::load(path, self.settings.verbose)
            .map(Arc::new)
            .map_err(|e| e.to_string())?;
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
                ));
            }
        }
        // Units that ended for good just take the new library for any later start.
        let targets: Vec<(Arc<Core>, usize)> = targets
            .into_iter()
            .filter(|(core, u)| {
                if core.is_over(*u) {
                    core.adopt_library(*u, &lib);
                    false
                } else {
                    true
                }
            })
            .collect();
        let (tx, rx) = mpsc::channel::<Result<usize, String>>();
        let job = Arc::new(Job {
            current: Mutex::new(path.display().to_string()),
            hosts: Mutex::new(Vec::new()),
            paused: Mutex::new(Vec::new()),
        });
        let job_lib = Arc::clone(&lib);
        let file = path.display().to_string();
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
                    for (core, p) in hang_job.paused.lock().drain(..) {
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
                let result = swap(&targets, &job_lib, &slot, &job, &file);
                if let Some(r) = result {
                    let _ = tx.send(r);
                }
            });
        if let Err(e) = spawned {
            crate::threads::spawn_failed("a reload job", &e);
            return Err(format!("cannot start the reload: {e}"));
        }
        match rx.recv() {
            Ok(Ok(n)) => Ok((lib, n)),
            Ok(Err(reason)) => Err(reason),
            Err(_) => Err(String::from("the reload stopped without a result")),
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
        for (core, p) in self.paused.lock().drain(..) {
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
        return Some(Err(format!(
            "{file}: {kept} of {n} instance(s) were restarted or stopping during the swap and keep the old version"
        )));
    }
    Some(Ok(n))
}
