//! The reload watcher: which plugin files changed, whether their content
//! is new, the rate limit and the accounting of loaded versions; it hands
//! each new content to a [`super::Swap`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};

use crate::event::{self, Event, Events};
use crate::manifest::ReloadSettings;
use crate::pipeline::{RunningPipeline, StageReload};
use crate::plugin::{Library, loader};
use crate::runtime::RunningContext;
use crate::supervision::watchdog::Watchdog;
use crate::threads::Spawner;

use super::{Accounting, Ceiling, FileState, Refusal, Retry, Swap, canonical, count, hex};

pub(super) struct Watcher {
    pub(super) cores: Vec<Arc<RunningContext>>,
    /// The running pipelines, whose stages' libraries are swapped too.
    pub(super) pipes: Vec<Arc<RunningPipeline>>,
    pub(super) files: HashMap<PathBuf, FileState>,
    pub(super) settings: ReloadSettings,
    pub(super) accounting: Accounting,
    pub(super) on_ceiling: Box<dyn Fn(Ceiling) + Send>,
    /// Where the reload events go (the host's hub).
    pub(super) events: Arc<Events>,
    /// The host's watchdog, which watches every reload job's calls.
    pub(super) watchdog: Arc<Watchdog>,
    /// The host's thread starter.
    pub(super) threads: Arc<Spawner>,
    pub(super) ceiling_hit: bool,
    pub(super) watcher: RecommendedWatcher,
    /// The folders watched so far.
    pub(super) dirs: Vec<PathBuf>,
}

impl Watcher {
    /// How long to wait for events before looking at files again.
    pub(super) fn next_look(&self) -> Duration {
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
    pub(super) fn pending_period(&self) -> Duration {
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
    pub(super) fn consider(&mut self, path: &Path) {
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
        match self.reload(path, &quiet) {
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
    fn reload(
        &mut self,
        path: &Path,
        quiet: &loader::Fingerprint,
    ) -> Result<(Arc<Library>, usize, usize), Refusal> {
        // The file as it was judged quiet and hashed, or a refusal to try
        // again once it is quiet: a write that began since must not get
        // that content refused for good.
        let lib = match loader::load_expecting(path, self.settings.verbose, Some(quiet)) {
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
        let stages = self.prepare_stages(path, &lib, &file)?;
        let revive = |swapped: usize| {
            let revived = failed
                .iter()
                .filter(|(core, u)| core.revive(*u, &lib, &file))
                .count();
            (Arc::clone(&lib), swapped, revived)
        };
        // Stages switch only once every service and condition did.
        let commit = |stages: Vec<StageReload>, swapped: usize| {
            let handed: usize = stages.into_iter().map(StageReload::commit).sum();
            revive(swapped + handed)
        };
        if targets.is_empty() {
            return Ok(commit(stages, 0));
        }
        let (tx, rx) = mpsc::channel::<Result<usize, Refusal>>();
        let swap = Swap::new(
            Arc::clone(&lib),
            file.clone(),
            targets.len(),
            tx,
            Arc::clone(&self.watchdog),
            Arc::clone(&self.threads),
        );
        let outcome = match swap.spawn(targets) {
            Err(e) => Err(format!("cannot start the reload: {e}").into()),
            Ok(()) => match rx.recv() {
                Ok(r) => r,
                Err(_) => Err(String::from("the reload stopped without a result").into()),
            },
        };
        match outcome {
            Ok(n) => Ok(commit(stages, n)),
            Err(refusal) => {
                stages.into_iter().for_each(StageReload::roll_back);
                Err(refusal)
            }
        }
    }

    /// New instances of `lib` for every worker of every pipeline stage
    /// that uses `path`, set up while the old ones keep working; refused
    /// (nothing kept) when the new version lacks a stage or one fails.
    fn prepare_stages(
        &self,
        path: &Path,
        lib: &Arc<Library>,
        file: &str,
    ) -> Result<Vec<StageReload>, Refusal> {
        let targets: Vec<(&Arc<RunningPipeline>, usize)> = self
            .pipes
            .iter()
            .flat_map(|p| p.stages_of_file(path).into_iter().map(move |s| (p, s)))
            .collect();
        for (p, s) in &targets {
            if let Some(why) = p.refuses_library(*s, lib) {
                return Err(format!("{file}: {why}").into());
            }
        }
        let mut prepared = Vec::new();
        for (p, s) in targets {
            match p.prepare_reload(s, lib, file) {
                Ok(r) => prepared.push(r),
                Err(why) => {
                    prepared.into_iter().for_each(StageReload::roll_back);
                    return Err(why.into());
                }
            }
        }
        Ok(prepared)
    }
}
