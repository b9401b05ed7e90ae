//! The context driver: `setup` of every unit in manifest order, the start
//! gate, the main loop paced by `period`, and `finalize` in reverse order at
//! the end; plus the hand-over to a new driver when the watchdog abandons one.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use abi_stable::std_types::RResult;
use otools_abi::{CallErrorKind, CallResult};

use super::unit::{Exit, State};
use super::{Abandoned, ContextEvent, Instance, RunningContext};
use crate::event::Event;
use crate::instance::InstanceHost;
use crate::plan::StepPlan;
use crate::supervision::watchdog::{Entry, Hung, Watched};
use crate::threads;

/// Where a (replacement) driver starts.
#[derive(Debug, Clone, Copy)]
pub(super) enum Resume {
    /// Set up units from this index on.
    Setup(usize),
    /// Run the main loop from this step of the current iteration.
    Run(usize),
    /// Finalize the units before this index, last first.
    Shutdown(usize),
}

const PHASE_SETUP: u64 = 0;
const PHASE_RUN: u64 = 1;
const PHASE_SHUTDOWN: u64 = 2;

pub(super) fn position(phase: u64, index: usize) -> u64 {
    (phase << 30) | (index as u64 & 0x3fff_ffff)
}

impl RunningContext {
    pub(super) fn spawn_driver(
        self: &Arc<Self>,
        resume: Resume,
        epoch: u64,
    ) -> std::io::Result<()> {
        let core = Arc::clone(self);
        std::thread::Builder::new()
            .name(threads::thread_name("ctx-", &self.shared.name))
            .spawn(move || drive(&core, epoch, resume))
            .map(drop)
            .inspect_err(|e| {
                let what = format!("the driver of context {}", self.shared.name);
                self.threads.spawn_failed(&what, e);
            })
    }

    /// The watchdog found the driver's call hung: abandon it, hand over to a new driver.
    fn driver_hung(self: &Arc<Self>, epoch: u64, h: Hung) {
        if self
            .driver_epoch
            .compare_exchange(epoch, epoch + 1, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return;
        }
        let phase = h.position >> 30;
        let index = usize::try_from(h.position & 0x3fff_ffff).unwrap_or(0);
        let resume = match phase {
            PHASE_SETUP | PHASE_RUN => {
                self.instance_hung(&h);
                if phase == PHASE_SETUP {
                    Resume::Setup(index + 1)
                } else {
                    Resume::Run(index + 1)
                }
            }
            _ => {
                self.finalize_hung(h, true);
                Resume::Shutdown(index)
            }
        };
        if self.spawn_driver(resume, epoch + 1).is_err() {
            // Journaled and logged, and the supervisor stops everything; no
            // thread is left to finalize this context's instances.
            tracing::error!(context = %self.shared.name, "no driver left: the context ends without finalizing");
            self.abandoned.store(true, Ordering::SeqCst);
            self.ended.store(true, Ordering::SeqCst);
            let _ = self.events.send(ContextEvent::Ended(self.index));
        }
    }
}

/// What a serving call came to.
enum Served<T> {
    /// The unit was not serving: nothing was called.
    NotServing,
    /// The call returned this.
    Returned(T),
    /// The call failed, or the entry point is not implemented.
    Failed,
}

pub(super) enum Classified {
    Ok,
    Unimplemented,
    Failed(String),
}

/// Logs a failed call and says what it came to.
pub(super) fn classify<T>(host: &InstanceHost, entry: &str, r: CallResult<T>) -> Classified {
    match r {
        RResult::ROk(_) => Classified::Ok,
        RResult::RErr(e) if e.kind == CallErrorKind::Unimplemented => Classified::Unimplemented,
        RResult::RErr(e) => {
            host.report_failure(entry, &e);
            let what = if e.kind == CallErrorKind::Panicked {
                "panicked"
            } else {
                "failed"
            };
            Classified::Failed(format!("{what}: {}", e.message))
        }
    }
}

struct Driver<'a> {
    pub(super) core: &'a Arc<RunningContext>,
    pub(super) slot: &'a Watched,
    results: Vec<bool>,
}

fn drive(core: &Arc<RunningContext>, epoch: u64, resume: Resume) {
    let weak: Weak<RunningContext> = Arc::downgrade(core);
    let slot = core.watchdog.register(move |h| {
        if let Some(c) = weak.upgrade() {
            c.driver_hung(epoch, h);
        }
    });
    let mut d = Driver {
        core,
        slot: &slot,
        results: Vec::new(),
    };
    if d.run(resume).is_ok() {
        core.ended.store(true, Ordering::SeqCst);
        core.emit(Event::ContextEnded {
            context: core.shared.name.clone(),
        });
        let _ = core.events.send(ContextEvent::Ended(core.index));
    }
}

impl Driver<'_> {
    pub(super) fn run(&mut self, resume: Resume) -> Result<(), Abandoned> {
        let core = self.core;
        let mut shutdown_from = core.units.len();
        match resume {
            Resume::Setup(i) => {
                self.setup_from(i)?;
                core.emit(Event::ContextReady {
                    context: core.shared.name.clone(),
                });
                if core.gate.arrive(core.index) {
                    let _ = core.events.send(ContextEvent::AllReady);
                }
                core.gate.wait_open();
                if !core.shared.stopping() {
                    for u in 0..core.units.len() {
                        if core.units[u].state() == State::Ready
                            && let Some(live) = core.units[u].live.load_full()
                        {
                            core.start_loop(u, &live);
                        }
                    }
                    self.main_loop(0)?;
                }
            }
            Resume::Run(j) => self.main_loop(j)?,
            Resume::Shutdown(i) => shutdown_from = i,
        }
        if !matches!(resume, Resume::Shutdown(_)) {
            core.emit(Event::ContextStopping {
                context: core.shared.name.clone(),
            });
            let _ = core.events.send(ContextEvent::Stopping(core.index));
        }
        self.shutdown_from(shutdown_from)
    }

    fn setup_from(&mut self, first: usize) -> Result<(), Abandoned> {
        let core = self.core;
        for u in first..core.units.len() {
            if core.shared.stopping() {
                break;
            }
            let unit = &core.units[u];
            if unit.state() != State::Pending {
                continue;
            }
            let Some(mut live) = unit.live.swap(None) else {
                continue;
            };
            let generation = live.host.generation;
            let Some(obj) = Arc::get_mut(&mut live) else {
                continue;
            };
            match core.setup_watched(u, obj, self.slot, position(PHASE_SETUP, u))? {
                Some(reason) => core.instance_ended(u, generation, Exit::setup_failed(reason)),
                None => core.install(u, live),
            }
        }
        Ok(())
    }

    /// Calls one entry point (`main` or `check`) of unit `u` if it is
    /// serving, watched, and reports a failure or a deactivation.
    pub(super) fn serve<T>(
        &mut self,
        u: usize,
        step: usize,
        entry: Entry,
        call: impl FnOnce(&Instance) -> CallResult<T>,
    ) -> Result<Served<T>, Abandoned> {
        let core = self.core;
        let unit = &core.units[u];
        if unit.state() != State::Ready {
            return Ok(Served::NotServing);
        }
        let guard = unit.live.load();
        let Some(live) = guard.as_ref() else {
            return Ok(Served::NotServing);
        };
        let generation = live.host.generation;
        let limit = unit.policy.watchdog;
        let r = RunningContext::watched(
            self.slot,
            u,
            generation,
            entry,
            limit,
            position(PHASE_RUN, step),
            || call(live),
        )?;
        let (served, failed) = match r {
            RResult::ROk(v) => (Served::Returned(v), None),
            RResult::RErr(e) => match classify(&live.host, entry.name(), RResult::<(), _>::RErr(e))
            {
                Classified::Failed(reason) => (Served::Failed, Some(reason)),
                _ => {
                    // Not implemented: a service without `main` is not asked again.
                    if entry == Entry::Main {
                        unit.has_main.store(false, Ordering::Relaxed);
                    }
                    (Served::Failed, None)
                }
            },
        };
        let deactivated = live.host.deactivated();
        drop(guard);
        if let Some(reason) = failed {
            core.instance_ended(u, generation, Exit::Failed { entry, reason });
        } else if deactivated {
            core.instance_ended(u, generation, Exit::Deactivated);
        }
        Ok(served)
    }

    /// Calls `main` of unit `u` if it is serving and has one; true if called.
    /// A `main_once` unit's `main` is called until it returns once.
    fn call_main(&mut self, u: usize, step: usize) -> Result<bool, Abandoned> {
        let unit = &self.core.units[u];
        if !unit.wants_main() {
            return Ok(false);
        }
        let served = self.serve(u, step, Entry::Main, Instance::main)?;
        if unit.main_once
            && (matches!(served, Served::Returned(())) || !unit.has_main.load(Ordering::Relaxed))
        {
            self.core.main_once_done(u);
        }
        Ok(!matches!(served, Served::NotServing))
    }

    /// Evaluates condition `u`; false if it is not serving or failed.
    pub(super) fn check(&mut self, u: usize, step: usize) -> Result<bool, Abandoned> {
        Ok(matches!(
            self.serve(u, step, Entry::Check, Instance::check)?,
            Served::Returned(true)
        ))
    }

    fn main_loop(&mut self, mut start: usize) -> Result<(), Abandoned> {
        let core = self.core;
        let mut beats = core.heartbeat.load(Ordering::Relaxed);
        loop {
            let started = Instant::now();
            // Taken before anything is checked, so a change during the
            // iteration (a loop ending, a restart) is never missed.
            let seen = core.shared.wake.epoch();
            // A driver resuming mid-iteration skipped the first steps: what
            // it waits for may already have happened, so it must not sleep.
            let mut worked = start != 0;
            for step in start..core.steps.len() {
                if core.shared.stopping() {
                    return Ok(());
                }
                match &core.steps[step] {
                    StepPlan::Service(u) => worked |= self.call_main(*u, step)?,
                    StepPlan::Trigger {
                        name,
                        mode,
                        conditions,
                        stack,
                    } => {
                        self.results.clear();
                        for &c in conditions {
                            let v = self.check(c, step)?;
                            self.results.push(v);
                            worked = true;
                        }
                        if mode.fires(self.results.iter().copied()) {
                            tracing::trace!(context = %core.shared.name, trigger = %name, "fired");
                            for &s in stack {
                                if core.shared.stopping() {
                                    return Ok(());
                                }
                                self.call_main(s, step)?;
                            }
                        }
                    }
                }
            }
            start = 0;
            beats = beats.wrapping_add(1);
            core.heartbeat.store(beats, Ordering::Relaxed);
            if !core.alive() {
                tracing::debug!(context = %core.shared.name, "nothing left to run");
                return Ok(());
            }
            self.pace(started, seen, worked);
        }
    }

    /// Waits for the next iteration: the rest of the period, or, when the
    /// last iteration had nothing to call, until something changes.
    pub(super) fn pace(&self, started: Instant, seen: u64, worked: bool) {
        let core = self.core;
        let wake = &core.shared.wake;
        if !worked {
            if !core.shared.stopping() {
                core.idle.store(true, Ordering::Relaxed);
                wake.wait_until(seen, None);
                core.idle.store(false, Ordering::Relaxed);
            }
            return;
        }
        if core.period.is_zero() {
            return;
        }
        let next = started + core.period;
        core.idle.store(true, Ordering::Relaxed);
        wake.wait_for(next, || core.shared.stopping());
        core.idle.store(false, Ordering::Relaxed);
    }

    fn shutdown_from(&mut self, next: usize) -> Result<(), Abandoned> {
        let core = self.core;
        core.shared.stop.store(true, Ordering::SeqCst);
        core.shared.wake.notify();
        let longest = core
            .units
            .iter()
            // A worker may be in a `setup` or a `finalize`, each bounded.
            .map(|u| u.policy.shutdown_timeout.max(u.policy.startup_timeout))
            .max()
            .unwrap_or_default();
        core.wait_workers(Instant::now() + longest + Duration::from_millis(100));
        for u in (0..next).rev() {
            let unit = &core.units[u];
            if matches!(unit.state(), State::Ready | State::Stopping) {
                core.stop_instance(u, self.slot, position(PHASE_SHUTDOWN, u))?;
                unit.set_state(State::Ended);
            }
        }
        Ok(())
    }
}
