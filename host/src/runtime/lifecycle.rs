//! The instance lifecycle: build and set up a new generation, install it in
//! its unit, and stop one (wait for its loop, finalize unless hung, fence),
//! abandoning calls that overrun their deadline.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use otools_abi::{CallResult, ExportKind};

use super::driver::{Classified, classify};
use super::unit::{Exit, LOOP_ABANDONED, LOOP_RUNNING, State};
use super::{Abandoned, Instance, RunningContext};
use crate::event::Event;
use crate::plugin::construct;
use crate::supervision::watchdog::{Entry, Hung, Slot, limit_ms};

impl RunningContext {
    /// A `finalize` overran `shutdown_timeout`: abandon that instance.
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
        let Some(mut live) = unit.live.swap(None) else {
            return Ok(());
        };
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
        if live.host.is_fenced() {
            // Hung: its threads are abandoned (the loop handle is dropped, detaching it).
            return Ok(());
        }
        let deadline = Instant::now() + unit.policy.shutdown_timeout;
        if let Some(t) = loop_thread {
            self.wait_loop_done(&live, deadline);
            if live.loop_done.load(Ordering::SeqCst) {
                let _ = t.join();
            } else {
                self.abandon_on_stop(u, &live, "loop");
                return Ok(());
            }
        }
        // Someone may still be in a call (the driver in `main`): let it return.
        while Arc::strong_count(&live) > 1 {
            if Instant::now() >= deadline {
                self.abandon_on_stop(u, &live, "main");
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let Some(obj) = Arc::get_mut(&mut live) else {
            self.abandon_on_stop(u, &live, "main");
            return Ok(());
        };
        let r = RunningContext::watched(
            slot,
            u,
            generation,
            Entry::Finalize,
            Some(unit.policy.shutdown_timeout),
            pos,
            || obj.finalize(),
        )?;
        match classify(&live.host, "finalize", r) {
            Classified::Failed(reason) => {
                self.emit(Event::Failed {
                    unit: self.unit_id(u, generation),
                    entry: "finalize".into(),
                    reason,
                });
            }
            _ => self.emit(Event::Finalized {
                unit: self.unit_id(u, generation),
            }),
        }
        live.host.fence();
        Ok(())
    }

    /// Waits (at most until `deadline`) for a retired instance's loop thread
    /// to leave; true if it did. The loop thread wakes us when it ends.
    pub(super) fn wait_loop_done(&self, live: &Instance, deadline: Instant) -> bool {
        loop {
            let seen = self.shared.wake.epoch();
            if live.loop_done.load(Ordering::SeqCst) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            self.shared.wake.wait_until(seen, Some(deadline));
        }
    }

    fn abandon_on_stop(&self, u: usize, live: &Instance, entry: &str) {
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
        let object = match construct(&library, unit.kind, &unit.export, &unit.config_json) {
            Ok(o) => o,
            Err(e) => {
                self.instance_ended(
                    u,
                    generation,
                    Exit::Failed {
                        entry: Entry::Setup,
                        reason: format!(
                            "construction failed: {}",
                            crate::manifest::config::without_position(e.message.as_str())
                        ),
                    },
                );
                return Ok(());
            }
        };
        let host = self.new_host(u, library, generation);
        unit.control.lock().host = Some(Arc::clone(&host));
        let mut live = Instance::new(host, object);
        let r = RunningContext::watched(
            slot,
            u,
            generation,
            Entry::Setup,
            Some(unit.policy.startup_timeout),
            pos,
            || live.setup(),
        )?;
        if let Classified::Failed(reason) = classify(&live.host, "setup", r) {
            live.host.fence();
            self.instance_ended(
                u,
                generation,
                Exit::Failed {
                    entry: Entry::Setup,
                    reason,
                },
            );
            return Ok(());
        }
        self.gate.wait_open();
        if self.shared.stopping() {
            // The context began stopping while this instance was set up: it
            // was set up, so it is finalized, now, instead of serving.
            let limit = Some(unit.policy.shutdown_timeout);
            let r =
                RunningContext::watched(slot, u, generation, Entry::Finalize, limit, pos, || {
                    live.finalize()
                })?;
            if let Classified::Failed(reason) = classify(&live.host, "finalize", r) {
                self.emit(Event::Failed {
                    unit: self.unit_id(u, generation),
                    entry: "finalize".into(),
                    reason,
                });
            } else {
                self.emit(Event::Finalized {
                    unit: self.unit_id(u, generation),
                });
            }
            live.host.fence();
            unit.set_state(State::Ended);
            return Ok(());
        }
        self.install(u, live);
        Ok(())
    }

    /// Puts a set-up instance in service.
    pub(super) fn install(self: &Arc<Self>, u: usize, live: Instance) {
        let unit = &self.units[u];
        let generation = live.host.generation;
        if unit.control.lock().generation != generation {
            // A newer generation was started meanwhile: this one never serves.
            live.host.fence();
            return;
        }
        let live = Arc::new(live);
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
