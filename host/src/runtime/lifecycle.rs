//! The instance lifecycle: build and set up a new generation, install it in
//! its unit, and stop one (wait for its loop, finalize unless hung, fence),
//! abandoning calls that overrun their deadline.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use otools_abi::{CallResult, ExportKind};

use super::driver::{Classified, classify};
use super::unit::{Exit, LOOP_ABANDONED, LOOP_RUNNING, State};
use super::{Abandoned, Instance, RunningContext};
use crate::event::Event;
use crate::instance::InstanceHost;
use crate::plugin::{Library, construct};
use crate::supervision::watchdog::{Entry, Hung, Slot, limit_ms};

/// Why [`RunningContext::build_and_setup`] has no instance to give.
pub(super) enum NotSetUp {
    /// The plugin's `new` refused the config (the message, without position).
    Rejected(String),
    /// `setup` failed or panicked (the reason); the instance is fenced.
    Failed(String),
}

/// Waits (at most until `deadline`) until nobody but the caller holds
/// `live` (a driver may still be in its `main`); true if so.
pub(super) fn wait_unshared(live: &Arc<Instance>, deadline: Instant) -> bool {
    while Arc::strong_count(live) > 1 {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

impl RunningContext {
    /// The one way a hung `finalize` (it overran `shutdown_timeout`) is
    /// handled, on the watchdog thread: the unit's current host is fenced,
    /// the context is marked as having abandoned something when it is
    /// stopping (exit code 3), `hung` and `abandoned` are journaled and it is
    /// logged; the instance is never finalized. `stopping_context` (the
    /// driver's shutdown) also leaves the unit `Ended`.
    pub(super) fn finalize_hung(&self, h: Hung, stopping_context: bool) {
        let unit = &self.units[h.unit];
        if let Some(host) = &unit.control.lock().host {
            host.fence();
        }
        if self.shared.stopping() {
            self.abandoned.store(true, Ordering::SeqCst);
        }
        self.emit(Event::Hung {
            unit: self.unit_id(h.unit, h.generation),
            entry: "finalize".into(),
            limit_ms: None,
        });
        self.emit(Event::Abandoned {
            unit: self.unit_id(h.unit, h.generation),
            entry: "finalize".into(),
        });
        tracing::error!(
            context = %self.shared.name,
            service = %unit.name,
            "finalize did not return within {}: abandoned, not finalized",
            humantime::format_duration(h.limit)
        );
        if stopping_context {
            unit.set_state(State::Ended);
        }
    }

    /// Runs one call of unit `u`'s instance under the watchdog if `limit` is set.
    pub(super) fn watched<T>(
        slot: &Slot,
        u: usize,
        generation: u64,
        entry: Entry,
        limit: Option<Duration>,
        pos: u64,
        call: impl FnOnce() -> CallResult<T>,
    ) -> Result<CallResult<T>, Abandoned> {
        match limit {
            None => Ok(call()),
            Some(limit) => {
                let c = slot.begin_ms(u, generation, entry, limit_ms(limit), pos);
                let r = call();
                if slot.end(c) { Ok(r) } else { Err(Abandoned) }
            }
        }
    }

    /// Retires the current instance of `u`, waits for its loop, finalizes it
    /// (unless it hung) and fences it.
    pub(super) fn stop_instance(&self, u: usize, slot: &Slot, pos: u64) -> Result<(), Abandoned> {
        let unit = &self.units[u];
        let Some((live, loop_thread)) = self.take_out_of_service(u) else {
            return Ok(());
        };
        if live.host.is_fenced() {
            // Hung: its threads are abandoned (the loop handle is dropped, detaching it).
            return Ok(());
        }
        let deadline = Instant::now() + unit.policy.shutdown_timeout;
        if let Some(t) = loop_thread
            && self.join_loop(&live, t, deadline).is_err()
        {
            self.abandon_on_stop(u, &live, "loop");
            return Ok(());
        }
        self.finalize_when_unshared(u, live, deadline, slot, pos)
    }

    /// Takes unit `u`'s instance out of service: out of `live` (no new
    /// `main` or `check` starts), marked retired (its loop thread leaves
    /// after its current call), with the handle of its loop thread if it
    /// has one. `None` when nothing serves. Nothing is waited for here.
    pub(super) fn take_out_of_service(
        &self,
        u: usize,
    ) -> Option<(Arc<Instance>, Option<JoinHandle<()>>)> {
        let unit = &self.units[u];
        let live = unit.live.swap(None)?;
        live.host.retired.store(true, Ordering::SeqCst);
        self.shared.wake.notify();
        let generation = live.host.generation;
        let loop_thread = {
            let mut c = unit.control.lock();
            match &c.loop_thread {
                Some((g, _)) if *g == generation => c.loop_thread.take().map(|(_, t)| t),
                _ => None,
            }
        };
        Some((live, loop_thread))
    }

    /// Waits (at most until `deadline`) for the loop thread `t` of a retired
    /// instance to leave and joins it; gives the handle back if it is still
    /// in a call.
    pub(super) fn join_loop(
        &self,
        live: &Instance,
        t: JoinHandle<()>,
        deadline: Instant,
    ) -> Result<(), JoinHandle<()>> {
        if self.wait_loop_done(live, deadline) {
            let _ = t.join();
            Ok(())
        } else {
            Err(t)
        }
    }

    /// Finalizes an instance out of service once nobody else holds it (a
    /// driver still in `main`): waits for that until `deadline`, then
    /// [`RunningContext::finalize_and_fence`]. If it is still shared at the
    /// deadline it is abandoned, not finalized, and marked so
    /// ([`RunningContext::abandon_on_stop`]: fenced, journaled `abandoned`,
    /// counted as abandoned when the context is stopping).
    pub(super) fn finalize_when_unshared(
        &self,
        u: usize,
        mut live: Arc<Instance>,
        deadline: Instant,
        slot: &Slot,
        pos: u64,
    ) -> Result<(), Abandoned> {
        if wait_unshared(&live, deadline)
            && let Some(obj) = Arc::get_mut(&mut live)
        {
            return self.finalize_and_fence(u, obj, slot, pos);
        }
        self.abandon_on_stop(u, &live, "main");
        Ok(())
    }

    /// The one way an instance that was set up is finalized: `finalize`
    /// under the watchdog (`shutdown_timeout`), journaled as `finalized`, or
    /// as `failed` (`entry = "finalize"`, only a report), and then fenced
    /// either way. When the watchdog abandons the call this returns
    /// `Abandoned` and touches nothing more: the hang handler
    /// ([`RunningContext::finalize_hung`]) fences it and journals the hang.
    pub(super) fn finalize_and_fence(
        &self,
        u: usize,
        live: &mut Instance,
        slot: &Slot,
        pos: u64,
    ) -> Result<(), Abandoned> {
        let generation = live.host.generation;
        let limit = Some(self.units[u].policy.shutdown_timeout);
        let r = RunningContext::watched(slot, u, generation, Entry::Finalize, limit, pos, || {
            live.finalize()
        })?;
        let unit = self.unit_id(u, generation);
        match classify(&live.host, "finalize", r) {
            Classified::Failed(reason) => self.emit(Event::Failed {
                unit,
                entry: "finalize".into(),
                reason,
            }),
            _ => self.emit(Event::Finalized { unit }),
        }
        live.host.fence();
        Ok(())
    }

    /// Waits (at most until `deadline`) for a retired instance's loop thread
    /// to leave; true if it did. The loop thread wakes us when it ends.
    pub(super) fn wait_loop_done(&self, live: &Instance, deadline: Instant) -> bool {
        self.shared
            .wake
            .wait_for(deadline, || live.loop_done.load(Ordering::SeqCst))
    }

    /// Abandons an instance out of service whose `entry` call (`loop` or
    /// `main`) did not return within `shutdown_timeout`: fences it, counts an
    /// unwatched loop thread as abandoned, marks the context as having
    /// abandoned something when it is stopping (exit code 3), journals
    /// `abandoned` and logs it. It is never finalized.
    pub(super) fn abandon_on_stop(&self, u: usize, live: &Instance, entry: &str) {
        let unit = &self.units[u];
        live.host.fence();
        // A watched loop call is counted by the watchdog when it declares it
        // hung; an unwatched one is counted here, once, unless it just left.
        if entry == "loop"
            && unit.policy.watchdog.is_none()
            && live
                .loop_fate
                .compare_exchange(
                    LOOP_RUNNING,
                    LOOP_ABANDONED,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                )
                .is_ok()
        {
            self.watchdog.thread_abandoned();
        }
        if self.shared.stopping() {
            self.abandoned.store(true, Ordering::SeqCst);
        }
        self.emit(Event::Abandoned {
            unit: self.unit_id(u, live.host.generation),
            entry: entry.into(),
        });
        tracing::error!(
            context = %self.shared.name,
            service = %unit.name,
            "its {entry} call did not return within {}: abandoned, not finalized",
            humantime::format_duration(unit.policy.shutdown_timeout)
        );
    }

    /// Builds, sets up and installs a new generation of `u`.
    pub(super) fn start_instance(
        self: &Arc<Self>,
        u: usize,
        slot: &Slot,
        pos: u64,
    ) -> Result<(), Abandoned> {
        let unit = &self.units[u];
        let generation = {
            let mut c = unit.control.lock();
            c.generation += 1;
            c.host = None;
            c.generation
        };
        unit.set_state(State::Pending);
        let library = unit.library.load_full();
        let on_host = |h: &Arc<InstanceHost>| unit.control.lock().host = Some(Arc::clone(h));
        let mut live = match self.build_and_setup(u, library, generation, slot, pos, &on_host)? {
            Ok(live) => live,
            Err(not) => {
                let reason = match not {
                    NotSetUp::Rejected(message) => format!("construction failed: {message}"),
                    NotSetUp::Failed(reason) => reason,
                };
                self.instance_ended(u, generation, Exit::setup_failed(reason));
                return Ok(());
            }
        };
        self.gate.wait_open();
        if self.shared.stopping() {
            // The context began stopping while this instance was set up: it
            // was set up, so it is finalized, now, instead of serving.
            self.finalize_and_fence(u, &mut live, slot, pos)?;
            unit.set_state(State::Ended);
            return Ok(());
        }
        self.install(u, Arc::new(live));
        Ok(())
    }

    /// The one way a new instance of unit `u` is built and set up: its
    /// plugin's `new` with the unit's config, a host handle for
    /// `generation` from `library` (shown to `on_host` as soon as it exists,
    /// so a caller can fence it if this call is abandoned), then
    /// [`RunningContext::setup_watched`]. Journals nothing and installs
    /// nothing: on a refusal the caller decides what it means (an exit, or
    /// a refused reload). A failed `setup` leaves the instance fenced.
    pub(super) fn build_and_setup(
        &self,
        u: usize,
        library: Arc<Library>,
        generation: u64,
        slot: &Slot,
        pos: u64,
        on_host: &dyn Fn(&Arc<InstanceHost>),
    ) -> Result<Result<Instance, NotSetUp>, Abandoned> {
        let unit = &self.units[u];
        let object = match construct(&library, unit.kind, &unit.export, &unit.config_json) {
            Ok(o) => o,
            Err(e) => {
                let message = crate::manifest::config::without_position(e.message.as_str());
                return Ok(Err(NotSetUp::Rejected(message.to_owned())));
            }
        };
        let host = self.new_host(u, library, generation);
        on_host(&host);
        let mut live = Instance::new(host, object);
        Ok(match self.setup_watched(u, &mut live, slot, pos)? {
            None => Ok(live),
            Some(reason) => Err(NotSetUp::Failed(reason)),
        })
    }

    /// The one way `setup` is called: under the watchdog
    /// (`startup_timeout`); a failure is logged and the instance fenced
    /// before its reason is returned. Journals nothing (the caller reports
    /// the failure). `Abandoned` when the watchdog declared it hung.
    pub(super) fn setup_watched(
        &self,
        u: usize,
        live: &mut Instance,
        slot: &Slot,
        pos: u64,
    ) -> Result<Option<String>, Abandoned> {
        let generation = live.host.generation;
        let limit = Some(self.units[u].policy.startup_timeout);
        let r = RunningContext::watched(slot, u, generation, Entry::Setup, limit, pos, || {
            live.setup()
        })?;
        Ok(match classify(&live.host, "setup", r) {
            Classified::Failed(reason) => {
                live.host.fence();
                Some(reason)
            }
            _ => None,
        })
    }

    /// The one way a set-up instance is put in service: stored in `live`,
    /// `Ready`, journaled as `started`, its loop thread started if the gate
    /// is open (otherwise the driver starts it when the gate opens). An
    /// instance whose generation is no longer the unit's current one never
    /// serves: it is only fenced.
    pub(super) fn install(self: &Arc<Self>, u: usize, live: Arc<Instance>) {
        let unit = &self.units[u];
        let generation = live.host.generation;
        if unit.control.lock().generation != generation {
            // A newer generation was started meanwhile: this one never serves.
            live.host.fence();
            return;
        }
        unit.live.store(Some(Arc::clone(&live)));
        unit.has_main
            .store(unit.kind == ExportKind::Service, Ordering::Relaxed);
        unit.control.lock().running_since = Instant::now();
        unit.set_state(State::Ready);
        self.emit(Event::Started {
            unit: self.unit_id(u, generation),
        });
        if generation > 1 {
            tracing::info!(context = %self.shared.name, service = %unit.name, "generation {generation} started");
        }
        if self.gate.open.load(Ordering::SeqCst) {
            self.start_loop(u, &live);
        }
        self.shared.wake.notify();
    }
}
