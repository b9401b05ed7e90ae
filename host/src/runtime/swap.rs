//! The primitives a hot reload's swap is built from: prepare a new instance,
//! pause, export and import state, then promote the new instance or discard it
//! and resume the old one (see `crate::reload` for the protocol).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use abi_stable::std_types::RResult;

use super::driver::{Classified, classify};
use super::lifecycle::{NotSetUp, wait_unshared};
use super::restart::Op;
use super::unit::{Exit, State};
use super::{Abandoned, Instance, RunningContext};
use crate::event::Event;
use crate::instance::InstanceHost;
use crate::plugin::Library;
use crate::supervision::policy::Tracker;
use crate::supervision::watchdog::{Entry, Hung, Slot};

/// What an old instance hands its successor: a schema version and bytes, if any.
pub type ExportedState = Option<(u32, Vec<u8>)>;

/// A new instance built and set up for a hot reload, not yet serving.
pub struct Prepared {
    pub(super) unit: usize,
    pub(super) generation: u64,
    pub(super) live: Instance,
}

/// An old instance paused for a hot reload: its loop stopped, its `main`
/// no longer called, but still set up and able to resume.
pub struct Paused {
    pub(super) unit: usize,
    pub(super) generation: u64,
    pub(super) live: Arc<Instance>,
}

impl Prepared {
    /// Its unit.
    pub fn unit(&self) -> usize {
        self.unit
    }

    /// The generation it will serve as.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

impl Paused {
    /// Its unit.
    pub fn unit(&self) -> usize {
        self.unit
    }

    /// Its generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

impl RunningContext {
    /// The units whose library was loaded from the file at `path`. Paths
    /// are compared as absolute paths with symlinks kept: a symlink swapped
    /// to a new target is still the path the units were loaded from (units
    /// sharing a file share its `Library`, so they name it the same way).
    pub fn units_of_file(&self, path: &std::path::Path) -> Vec<usize> {
        let absolute =
            |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let target = absolute(path);
        (0..self.units.len())
            .filter(|u| absolute(&self.units[*u].library.load().path) == target)
            .collect()
    }

    /// The host handle of a new generation of unit `u`, built from `library`.
    pub(super) fn new_host(
        &self,
        u: usize,
        library: Arc<Library>,
        generation: u64,
    ) -> Arc<InstanceHost> {
        let unit = &self.units[u];
        Arc::new(InstanceHost::new(
            Arc::clone(&self.shared),
            unit.name.clone(),
            library,
            unit.export.clone(),
            generation,
            Arc::clone(&unit.stash),
        ))
    }

    /// Generation `generation` of unit `u`, paused for a reload, hung in a
    /// call (its `export_state`): it exits under its restart policy (fenced,
    /// abandoned, a fresh generation started from the unit's library). The
    /// `Paused` itself stays with the abandoned thread, which is still in
    /// the call.
    pub fn hung_while_paused(self: &Arc<Self>, u: usize, generation: u64, h: Hung) {
        self.units[u].set_state(State::Ready);
        self.instance_ended(u, generation, Exit::hung(&h));
    }

    /// The unit's name and export, for messages.
    pub fn unit_label(&self, u: usize) -> (&str, &str) {
        (&self.units[u].name, &self.units[u].export)
    }

    /// Does `lib` export what unit `u` needs?
    pub fn lib_has_export(&self, u: usize, lib: &Library) -> bool {
        lib.exports(self.units[u].kind, &self.units[u].export)
    }

    /// Builds and sets up a new instance of unit `u` from `lib` (the old one
    /// keeps serving), as a restart does (`build_and_setup`). `on_host` sees
    /// the new host handle as soon as it exists, so a caller can fence it if
    /// this call is abandoned. Journals nothing.
    pub fn prepare(
        &self,
        u: usize,
        lib: &Arc<Library>,
        slot: &Slot,
        on_host: &dyn Fn(&Arc<InstanceHost>),
    ) -> Result<Result<Prepared, String>, Abandoned> {
        // The number the new version serves under if it is swapped in; a
        // restart meanwhile takes the same number, and the swap is then
        // rolled back (`crate::reload`), so the serving generations of a
        // unit only go up.
        let generation = self.units[u].control.lock().generation + 1;
        Ok(
            match self.build_and_setup(u, Arc::clone(lib), generation, slot, 0, on_host)? {
                Ok(live) => Ok(Prepared {
                    unit: u,
                    generation,
                    live,
                }),
                Err(NotSetUp::Rejected(message)) => {
                    Err(format!("its config was rejected: {message}"))
                }
                Err(NotSetUp::Failed(reason)) => Err(format!("setup {reason}")),
            },
        )
    }

    /// Pauses unit `u`'s serving instance: no more `main`, its loop stopped.
    pub fn pause(self: &Arc<Self>, u: usize) -> Result<Paused, String> {
        let unit = &self.units[u];
        let generation = {
            let c = unit.control.lock();
            if self.shared.stopping() || !unit.transition(State::Ready, State::Stopping) {
                return Err(String::from(
                    "it is not serving (restarting, stopping or stopped)",
                ));
            }
            c.generation
        };
        // Taken out of service: no new `main` starts, and once the count
        // drops to one no call is in flight.
        let Some((live, loop_thread)) = self.take_out_of_service(u) else {
            unit.set_state(State::Ready);
            return Err(String::from("it is not serving"));
        };
        let deadline = Instant::now() + unit.policy.shutdown_timeout;
        if let Some(t) = loop_thread
            && let Err(t) = self.join_loop(&live, t, deadline)
        {
            // Put everything back: the loop is still in a call.
            unit.control.lock().loop_thread = Some((generation, t));
            live.host.retired.store(false, Ordering::SeqCst);
            unit.live.store(Some(live));
            unit.set_state(State::Ready);
            return Err(String::from(
                "its loop call did not return within shutdown_timeout",
            ));
        }
        let deadline = Instant::now() + unit.policy.shutdown_timeout;
        if !wait_unshared(&live, deadline) {
            self.back_in_service(u, &live);
            return Err(String::from(
                "its main call did not return within shutdown_timeout",
            ));
        }
        Ok(Paused {
            unit: u,
            generation,
            live,
        })
    }

    /// The paused instance's state for its successor (watched like `main`).
    pub fn export(
        &self,
        p: &Paused,
        slot: &Slot,
    ) -> Result<Result<ExportedState, String>, Abandoned> {
        let unit = &self.units[p.unit];
        let limit = Some(unit.policy.watchdog.unwrap_or(unit.policy.shutdown_timeout));
        let r =
            RunningContext::watched(slot, p.unit, p.generation, Entry::Export, limit, 0, || {
                p.live.export_state()
            })?;
        Ok(match r {
            RResult::ROk(v) => Ok(v),
            RResult::RErr(e) => Err(format!("export_state failed: {}", e.message)),
        })
    }

    /// Hands the old state to a prepared instance.
    pub fn import(
        &self,
        new: &mut Prepared,
        state: Option<&(u32, Vec<u8>)>,
        slot: &Slot,
    ) -> Result<Result<(), String>, Abandoned> {
        let Some((version, bytes)) = state else {
            return Ok(Ok(()));
        };
        let unit = &self.units[new.unit];
        let limit = Some(unit.policy.startup_timeout);
        let r = RunningContext::watched(
            slot,
            new.unit,
            new.generation,
            Entry::Import,
            limit,
            0,
            || new.live.import_state(*version, bytes),
        )?;
        Ok(match classify(&new.live.host, "import_state", r) {
            Classified::Failed(reason) => Err(format!("import_state {reason}")),
            _ => Ok(()),
        })
    }

    /// Rolls a paused instance back into service.
    pub fn resume(self: &Arc<Self>, p: Paused) {
        self.back_in_service(p.unit, &p.live);
    }

    /// The one way an instance taken out of service (its loop joined) is
    /// put back: no longer retired, stored in `live`, `Ready`, with a new
    /// loop thread. Journals nothing: it never stopped serving as far as
    /// the journal is concerned.
    fn back_in_service(self: &Arc<Self>, u: usize, live: &Arc<Instance>) {
        let unit = &self.units[u];
        live.host.retired.store(false, Ordering::SeqCst);
        live.loop_done.store(false, Ordering::SeqCst);
        unit.live.store(Some(Arc::clone(live)));
        unit.set_state(State::Ready);
        self.start_loop(u, live);
        self.shared.wake.notify();
    }

    /// Drops a prepared instance that will not serve: it was set up, so it
    /// is finalized and fenced as any other (`finalize_and_fence`: journaled
    /// as `finalized`, or `failed`, for its generation).
    pub fn discard(&self, mut new: Prepared, slot: &Slot) -> Result<(), Abandoned> {
        self.finalize_and_fence(new.unit, &mut new.live, slot, 0)
    }

    /// Can the paused instance still be swapped: its context is not
    /// stopping and the unit was not restarted meanwhile?
    pub fn can_commit(&self, old: &Paused) -> bool {
        !self.shared.stopping() && self.units[old.unit].control.lock().generation == old.generation
    }

    /// The first half of committing a reload of one unit: the paused old
    /// instance is finalized (watched by `shutdown_timeout`) and fenced, as
    /// `stop_instance` would (`finalize_when_unshared`): one still shared
    /// after `shutdown_timeout` is abandoned, fenced, journaled and marked
    /// instead. [`RunningContext::promote`] puts its successor in its place.
    pub fn retire(&self, old: Paused, slot: &Slot) -> Result<(), Abandoned> {
        let deadline = Instant::now() + self.units[old.unit].policy.shutdown_timeout;
        self.finalize_when_unshared(old.unit, old.live, deadline, slot, 0)
    }

    /// The old instance's `finalize` in [`RunningContext::retire`] hung: it is
    /// fenced and abandoned, not finalized (its successor still takes over).
    pub fn retire_hung(&self, h: Hung) {
        self.finalize_hung(h, false);
    }

    /// The second half of committing a reload of one unit: the new instance
    /// serves under the same name, from `lib`.
    pub fn promote(self: &Arc<Self>, new: Prepared, lib: &Arc<Library>) {
        let unit = &self.units[new.unit];
        {
            let mut c = unit.control.lock();
            c.generation = new.generation;
            c.host = Some(Arc::clone(&new.live.host));
        }
        unit.library.store(Arc::clone(lib));
        self.install(new.unit, Arc::new(new.live));
    }

    /// Is unit `u` over for good (ended or failed)? Such a unit just takes
    /// the new library for any later start; there is nothing to swap.
    pub fn is_over(&self, u: usize) -> bool {
        self.units[u].state().terminal()
    }

    /// Points an ended unit at a new library.
    pub fn adopt_library(&self, u: usize, lib: &Arc<Library>) {
        self.units[u].library.store(Arc::clone(lib));
    }

    /// Did unit `u` fail for good (it gave up, or failed with no restart)?
    pub fn has_failed(&self, u: usize) -> bool {
        self.units[u].state() == State::Failed
    }

    /// Revives unit `u`, which failed for good, with `lib` (a hot reload of
    /// its file): its restart history is cleared and a new generation
    /// starts, journaled as `revived`. False (the unit just takes the
    /// library for any later start) when its context is stopping or over.
    pub fn revive(self: &Arc<Self>, u: usize, lib: &Arc<Library>, file: &str) -> bool {
        let unit = &self.units[u];
        unit.library.store(Arc::clone(lib));
        let generation = {
            let mut c = unit.control.lock();
            if self.shared.stopping()
                || self.ended.load(Ordering::SeqCst)
                || !unit.transition(State::Failed, State::Down)
            {
                drop(c);
                tracing::warn!(
                    context = %self.shared.name,
                    service = %unit.name,
                    "not revived by the reload of {file}: its context is stopping or has ended"
                );
                return false;
            }
            c.tracker = Tracker::default();
            c.generation
        };
        // It no longer counts as failed (the exit code); others still may.
        let others = self.units.iter().any(|x| x.state() == State::Failed);
        self.failed.store(others, Ordering::SeqCst);
        self.emit(Event::Revived {
            unit: self.unit_id(u, generation),
            file: file.into(),
        });
        tracing::info!(
            context = %self.shared.name,
            service = %unit.name,
            "revived by the reload of {file} (its restart history cleared)"
        );
        self.spawn_worker(vec![Op::Start(u)], 0, true);
        self.shared.wake.notify();
        true
    }
}
