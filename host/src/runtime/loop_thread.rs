//! Loop threads: one per top-level service with a loop, started once the
//! start gate opens and stopped when its instance is retired.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use otools_abi::ExportKind;

use super::driver::{Classified, classify};
use super::unit::{Exit, LOOP_LEFT, LOOP_RUNNING};
use super::{Instance, RunningContext};
use crate::supervision::watchdog::Entry;
use crate::threads;

impl RunningContext {
    /// Starts the loop thread of a top-level service (and its mailbox
    /// thread, if it has a mailbox).
    pub(super) fn start_loop(self: &Arc<Self>, u: usize, live: &Arc<Instance>) {
        self.start_mailbox(u, live);
        let unit = &self.units[u];
        if !unit.top_level || unit.kind != ExportKind::Service {
            return;
        }
        let mut c = unit.control.lock();
        let generation = live.host.generation;
        if c.generation != generation
            || c.loop_thread
                .as_ref()
                .is_some_and(|(g, _)| *g == generation)
        {
            return;
        }
        let core = Arc::clone(self);
        let l = Arc::clone(live);
        unit.loop_running.store(true, Ordering::SeqCst);
        live.loop_fate.store(LOOP_RUNNING, Ordering::SeqCst);
        match std::thread::Builder::new()
            .name(threads::thread_name("loop-", &unit.name))
            .spawn(move || loop_thread(&core, u, &l))
        {
            // A previous generation's handle, if any, belongs to an abandoned thread: detach it.
            Ok(t) => c.loop_thread = Some((generation, t)),
            Err(e) => {
                unit.loop_running.store(false, Ordering::SeqCst);
                let what = format!("the loop thread of {}/{}", self.shared.name, unit.name);
                self.threads.spawn_failed(&what, &e);
            }
        }
    }
}

/// The body of a service's loop thread.
pub(super) fn loop_thread(core: &Arc<RunningContext>, u: usize, live: &Arc<Instance>) {
    let unit = &core.units[u];
    let generation = live.host.generation;
    let weak = Arc::downgrade(core);
    let slot = core.watchdog.register(move |h| {
        if let Some(c) = weak.upgrade() {
            c.instance_hung(&h);
        }
    });
    let mut failed = None;
    while !core.shared.stopping() && !live.host.retired() && !live.host.deactivated() {
        let Ok(r) = RunningContext::watched(
            &slot,
            u,
            generation,
            Entry::Loop,
            unit.policy.watchdog,
            0,
            || live.run_loop(),
        ) else {
            // Abandoned: the watchdog replaced this instance; leave quietly.
            return;
        };
        match classify(&live.host, "loop", r) {
            Classified::Ok => {}
            Classified::Unimplemented => break,
            Classified::Failed(reason) => {
                failed = Some(reason);
                break;
            }
        }
    }
    if live
        .loop_fate
        .compare_exchange(LOOP_RUNNING, LOOP_LEFT, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        // Abandoned while stopping: it no longer holds a thread.
        core.watchdog.abandoned_thread_returned();
    }
    live.loop_done.store(true, Ordering::SeqCst);
    if unit.control.lock().generation == generation {
        unit.loop_running.store(false, Ordering::SeqCst);
    }
    if let Some(reason) = failed {
        core.instance_ended(
            u,
            generation,
            Exit::Failed {
                entry: Entry::Loop,
                reason,
            },
        );
    } else if live.host.deactivated() && !live.host.retired() {
        core.instance_ended(u, generation, Exit::Deactivated);
    }
    // The context thread may be waiting for this loop to end.
    core.shared.wake.notify();
}
