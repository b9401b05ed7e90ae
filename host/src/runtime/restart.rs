//! Restart decisions and workers: what happens when an instance exits
//! (`RunningContext::instance_ended` applies the policy and strategy) and the worker threads that
//! stop, delay and start instances so the driver never waits for a restart.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::unit::{Exit, State};
use super::{ContextEvent, RunningContext};
use crate::event::Event;
use crate::supervision::policy::{Decision, GiveUp, Restart, Strategy};
use crate::supervision::watchdog::Hung;
use crate::threads;

/// A restart or stop job run by a worker thread.
#[derive(Debug, Clone)]
pub(super) enum Op {
    /// Retire, wait for the loop, finalize (unless hung) and fence the current instance.
    Stop(usize),
    /// Wait until then (or until the context stops).
    Delay(Instant),
    /// Build, set up and install a new generation.
    Start(usize),
    /// Leave the unit in this final state.
    Settle(usize, State),
}

impl RunningContext {
    /// The units restarted along with `u` under the context's strategy, in manifest order.
    fn group(&self, u: usize) -> Vec<usize> {
        let include = |i: usize| {
            i == u
                || (self.units[i].state() == State::Ready
                    && self.units[i].policy.restart != Restart::Never)
        };
        match self.strategy {
            Strategy::OneForOne => vec![u],
            Strategy::OneForAll => (0..self.units.len()).filter(|i| include(*i)).collect(),
            Strategy::RestForOne => (u..self.units.len()).filter(|i| include(*i)).collect(),
        }
    }

    /// The watchdog declared a call of an instance hung: it ends as
    /// [`Exit::Hung`] (see [`RunningContext::instance_ended`]).
    pub(super) fn instance_hung(self: &Arc<Self>, h: &Hung) {
        self.instance_ended(h.unit, h.generation, Exit::hung(h));
    }

    /// An instance of unit `u` stopped serving: apply the restart policy.
    /// Safe to call from any thread, and more than once: only the first
    /// report of a generation counts.
    pub(super) fn instance_ended(self: &Arc<Self>, u: usize, generation: u64, how: Exit) {
        let unit = &self.units[u];
        let mut c = unit.control.lock();
        let state = unit.state();
        if c.generation != generation || !matches!(state, State::Ready | State::Pending) {
            return;
        }
        let now = Instant::now();
        let failure = !matches!(how, Exit::Deactivated | Exit::Shutdown);
        match &how {
            Exit::Failed { entry, reason } => {
                self.emit(Event::Failed {
                    unit: self.unit_id(u, generation),
                    entry: entry.name().into(),
                    reason: reason.clone(),
                });
            }
            Exit::Hung { entry, limit } => {
                let limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
                self.emit(Event::Hung {
                    unit: self.unit_id(u, generation),
                    entry: entry.name().into(),
                    limit_ms: Some(limit_ms),
                });
                tracing::warn!(
                    context = %self.shared.name,
                    service = %unit.name,
                    "{} hung (no return within {}); abandoning generation {generation}",
                    entry.name(),
                    humantime::format_duration(*limit)
                );
                if let Some(h) = &c.host {
                    h.fence();
                }
                self.emit(Event::Abandoned {
                    unit: self.unit_id(u, generation),
                    entry: entry.name().into(),
                });
                unit.loop_running.store(false, Ordering::Relaxed);
            }
            Exit::Deactivated => {
                self.emit(Event::Deactivated {
                    unit: self.unit_id(u, generation),
                });
                tracing::debug!(context = %self.shared.name, service = %unit.name, "deactivated");
            }
            Exit::Shutdown => {
                // Journaled as `shutdown` by the mailbox thread.
                tracing::info!(context = %self.shared.name, service = %unit.name, "stopped by SHUTDOWN");
            }
        }
        unit.set_state(State::Stopping);
        if self.shared.stopping() {
            // The driver's shutdown stops and finalizes every Ready or
            // Stopping unit in reverse order; a worker would race it.
            if matches!(how, Exit::Hung { .. }) {
                self.abandoned.store(true, Ordering::SeqCst);
            }
            drop(c);
            self.shared.wake.notify();
            return;
        }
        let decision = if matches!(how, Exit::Shutdown) {
            Decision::Stay
        } else {
            let since = c.running_since;
            c.tracker.on_exit(&unit.policy, failure, since, now)
        };
        let in_window = c.tracker.restarts_in_window();
        drop(c);
        let ops = match decision {
            Decision::Restart { delay, attempt } => {
                // Claim each sibling under its own lock, so that a sibling
                // reporting its own exit at the same time restarts only once.
                let group: Vec<usize> = self
                    .group(u)
                    .into_iter()
                    .filter(|&g| {
                        if g == u {
                            return true;
                        }
                        let _claim = self.units[g].control.lock();
                        self.units[g].transition(State::Ready, State::Stopping)
                    })
                    .collect();
                for &g in &group {
                    if g != u {
                        let sibling_gen = self.units[g].control.lock().generation;
                        self.emit(Event::Stopping {
                            unit: self.unit_id(g, sibling_gen),
                            because: unit.name.clone(),
                        });
                    }
                }
                let names: Vec<String> =
                    group.iter().map(|g| self.units[*g].name.clone()).collect();
                let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                self.emit(Event::Restarting {
                    unit: self.unit_id(u, generation),
                    delay_ms,
                    attempt,
                    restarts_in_window: u64::try_from(in_window).unwrap_or(u64::MAX),
                    group: names,
                });
                tracing::info!(
                    context = %self.shared.name,
                    service = %unit.name,
                    "restarting in {} (restart {in_window} of at most {} within {})",
                    humantime::format_duration(delay),
                    unit.policy.max_restarts,
                    humantime::format_duration(unit.policy.restart_window)
                );
                let mut ops: Vec<Op> = group.iter().rev().map(|g| Op::Stop(*g)).collect();
                ops.push(Op::Delay(now + delay));
                ops.extend(group.iter().map(|g| Op::Start(*g)));
                ops
            }
            Decision::Stay => {
                let end = if failure && !self.shared.stopping() {
                    self.failed.store(true, Ordering::SeqCst);
                    self.emit(Event::Stopped {
                        unit: self.unit_id(u, generation),
                        reason: "restart policy".into(),
                    });
                    State::Failed
                } else {
                    State::Ended
                };
                vec![Op::Stop(u), Op::Settle(u, end)]
            }
            Decision::GiveUp => {
                self.failed.store(true, Ordering::SeqCst);
                let action = match unit.policy.on_give_up {
                    GiveUp::StopService => "stop_service",
                    GiveUp::StopContext => "stop_context",
                    GiveUp::ExitHost => "exit_host",
                };
                self.emit(Event::GaveUp {
                    unit: self.unit_id(u, generation),
                    action: action.into(),
                    restarts_in_window: u64::try_from(in_window).unwrap_or(u64::MAX),
                });
                tracing::error!(
                    context = %self.shared.name,
                    service = %unit.name,
                    "gave up after {in_window} restarts within {}; action: {action}",
                    humantime::format_duration(unit.policy.restart_window)
                );
                match unit.policy.on_give_up {
                    GiveUp::StopService => {}
                    GiveUp::StopContext => self.shared.request_stop(),
                    GiveUp::ExitHost => {
                        let _ = self.events.send(ContextEvent::ExitHost(self.index));
                    }
                }
                vec![Op::Stop(u), Op::Settle(u, State::Failed)]
            }
        };
        self.spawn_worker(ops, 0, true);
        self.shared.wake.notify();
    }

    pub(super) fn spawn_worker(self: &Arc<Self>, ops: Vec<Op>, from: usize, counted: bool) {
        if counted {
            *self.workers.lock() += 1;
        }
        let core = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name(threads::thread_name("restart-", &self.shared.name))
            .spawn(move || work(&core, &ops, from));
        if let Err(e) = spawned {
            let what = format!("a restart worker of context {}", self.shared.name);
            self.threads.spawn_failed(&what, &e);
            self.worker_done();
        }
    }

    fn worker_done(&self) {
        let mut n = self.workers.lock();
        *n = n.saturating_sub(1);
        self.workers_done.notify_all();
    }

    /// Waits (at most until `deadline`) for the restart workers to finish.
    pub(super) fn wait_workers(&self, deadline: Instant) {
        let mut n = self.workers.lock();
        while *n > 0 {
            if self.workers_done.wait_until(&mut n, deadline).timed_out() {
                return;
            }
        }
    }
}

/// The body of a worker thread: runs `ops` from `from` on.
pub(super) fn work(core: &Arc<RunningContext>, ops: &[Op], from: usize) {
    let weak = Arc::downgrade(core);
    let plan: Vec<Op> = ops.to_vec();
    let slot = core.watchdog.register(move |h| {
        let Some(c) = weak.upgrade() else { return };
        let k = usize::try_from(h.position).unwrap_or(usize::MAX);
        match plan.get(k) {
            Some(Op::Stop(_)) => c.finalize_hung(h, false),
            Some(Op::Start(_)) => c.instance_hung(&h),
            _ => {}
        }
        // Carry on with the rest of the job on a new worker (it inherits this
        // one's place in the count).
        c.spawn_worker(plan.clone(), k + 1, false);
    });
    for (k, op) in ops.iter().enumerate().skip(from) {
        let r = match op {
            Op::Stop(u) => core.stop_instance(*u, &slot, k as u64).map(|()| {
                if core.units[*u].state() == State::Stopping {
                    core.units[*u].set_state(State::Down);
                }
            }),
            Op::Delay(until) => {
                core.shared.wake.wait_for(*until, || core.shared.stopping());
                Ok(())
            }
            Op::Start(u) => {
                if core.shared.stopping() {
                    core.units[*u].set_state(State::Ended);
                    Ok(())
                } else {
                    core.start_instance(*u, &slot, k as u64)
                }
            }
            Op::Settle(u, s) => {
                core.units[*u].set_state(*s);
                core.settled(*u);
                Ok(())
            }
        };
        if r.is_err() {
            // Abandoned by the watchdog; a replacement worker goes on.
            return;
        }
    }
    core.shared.wake.notify();
    core.worker_done();
}
