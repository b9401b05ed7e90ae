//! One hot swap of every unit that uses a file, all or nothing: the
//! protocol (prepare, pause, export, import, point of no return, commit or
//! roll back) and its hang handler.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

use parking_lot::Mutex;

use crate::event::Event;
use crate::instance::InstanceHost;
use crate::plugin::Library;
use crate::runtime::{Paused, Prepared, RunningContext};
use crate::supervision::watchdog::{Hung, Slot, Watchdog};
use crate::threads::Spawner;

use super::{BUSY, Refusal, Retry};

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
pub(super) struct Swap {
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
    /// A swap of `n` units to `lib` (from `file`), reporting its outcome
    /// on `tx` once; its threads start through `threads` and are watched by
    /// `watchdog`.
    pub(super) fn new(
        lib: Arc<Library>,
        file: String,
        n: usize,
        tx: mpsc::Sender<Result<usize, Refusal>>,
        watchdog: Arc<Watchdog>,
        threads: Arc<Spawner>,
    ) -> Arc<Swap> {
        Arc::new(Swap {
            lib,
            current: Mutex::new(file.clone()),
            file,
            n,
            tx,
            hosts: Mutex::new(Vec::new()),
            set_up: Mutex::new(Vec::new()),
            exporting: Mutex::new(None),
            paused: Mutex::new(Vec::new()),
            committed: AtomicBool::new(false),
            commits: Mutex::new(VecDeque::new()),
            committing: Mutex::new(None),
            kept: AtomicUsize::new(0),
            watchdog,
            threads,
        })
    }

    /// Runs the swap of `targets` on a thread of its own, so the watchdog
    /// can abandon a hung plugin call; with no targets, the rest of the
    /// commit.
    pub(super) fn spawn(
        self: &Arc<Self>,
        targets: Vec<(Arc<RunningContext>, usize)>,
    ) -> std::io::Result<()> {
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
        for (i, (core, u)) in targets.iter().enumerate() {
            let p = match core.pause(*u) {
                Ok(p) => p,
                Err(reason) => {
                    let reason = format!("{}: {BUSY}: {reason}", self.label(core, *u));
                    return self.rollback(prepared, slot, reason);
                }
            };
            if p.generation() >= prepared[i].1.generation() {
                // Restarted while the new version was set up: the restart
                // took the generation the prepared instance would serve as.
                self.paused.lock().push((Arc::clone(core), p));
                return self.rollback(prepared, slot, interrupted(&self.label(core, *u)));
            }
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
pub(super) fn interrupted(label: &str) -> String {
    format!(
        "{label}: {BUSY}: it was restarted or its context began stopping during the swap; every unit keeps the old version"
    )
}
