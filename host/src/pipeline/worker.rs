//! One stage worker's thread: build (after a restart) and set up its
//! instance, run it over its items, finalize it, and on a failure let the
//! restart policy decide whether a fresh instance takes its place. A call
//! the watchdog declares hung leaves this thread abandoned in it; the hang
//! handler ([`RunningPipeline::worker_hung`], on the watchdog thread)
//! fences the instance, fails the item in hand, and starts a new thread
//! for the worker.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use abi_stable::std_types::{RResult, RVec};
use otools_abi::{
    CallError, CallErrorKind, CallResult, FfiStageBox, HostRef, StageRole, Value, WorkerInfo,
};

use super::queue::{Aborted, Msg, Queue};
use super::{PipelineEvent, RunningPipeline, worker_name};
use crate::event::Event;
use crate::instance::InstanceHost;
use crate::plugin::construct_stage;
use crate::supervision::policy::{Decision, GiveUp};
use crate::supervision::watchdog::{Entry, Hung, Slot, limit_ms};

/// Where a worker thread starts.
#[derive(Debug, Clone, Copy)]
pub(super) enum Resume {
    /// With the instance the plan built.
    First,
    /// After generation `generation` failed: the restart policy decides.
    Failed {
        /// The generation that failed.
        generation: u64,
    },
    /// The worker is done (its last instance hung in `finalize`): only
    /// count it out, which may block on the next queue, so never on the
    /// watchdog thread.
    Finished,
}

/// What became of one instance.
enum Served {
    /// It ran out of items and was finalized.
    Done,
    /// It failed (its setup, a source call, a panic on an item).
    Failed(u64),
    /// The watchdog abandoned this thread in one of its calls.
    Abandoned,
}

/// What the restart policy leaves a worker to do after a failure.
enum After {
    Restart,
    Finish,
    /// The stage's last worker gave up: fail its items until the end.
    Discard,
}

/// How an instance's run over its items ended.
enum Ran {
    Done,
    Failed,
    Abandoned,
    /// A hot reload handed the worker a new instance: switch to it.
    Switch,
}

/// The text of a failed call, as the journal's `reason` has it.
pub(super) fn reason(e: &CallError) -> String {
    match e.kind {
        CallErrorKind::Panicked => format!("panicked: {}", e.message),
        _ => format!("failed: {}", e.message),
    }
}

/// One instance's calls: its worker, its generation, its handle, and its
/// thread's watchdog slot.
struct Calls<'a> {
    s: usize,
    w: usize,
    generation: u64,
    host: &'a InstanceHost,
    watch: &'a Slot,
}

impl Calls<'_> {
    /// One call with the instance's handle, under the watchdog when there
    /// is a `limit`; `None` when the watchdog abandoned it (the thread must
    /// then leave without touching anything).
    fn call<T>(
        &self,
        entry: Entry,
        limit: Option<Duration>,
        f: impl FnOnce(HostRef<'_>) -> CallResult<T>,
    ) -> Option<CallResult<T>> {
        let Some(limit) = limit else {
            return Some(self.host.with_handle(f));
        };
        let started = self.watch.begin_ms(
            self.w,
            self.generation,
            entry,
            limit_ms(limit),
            self.s as u64,
        );
        let r = self.host.with_handle(f);
        self.watch.end(started).then_some(r)
    }
}

/// Drops a worker's plugin object and reports a panic in its destructor.
pub(super) fn drop_object(object: FfiStageBox, host: &InstanceHost) {
    drop(object);
    host.collect_drop_panic();
}

impl RunningPipeline {
    /// Starts a thread for worker `w` of stage `s`.
    pub(super) fn spawn_worker(
        self: &Arc<Self>,
        s: usize,
        w: usize,
        resume: Resume,
    ) -> std::io::Result<()> {
        let me = Arc::clone(self);
        let name = worker_name(&self.stages[s].name, w);
        self.threads
            .spawn(
                &format!("worker {name} of pipeline {}", self.name()),
                &format!("pipe-{name}"),
                move || me.work(s, w, resume),
            )
            .map(drop)
    }

    /// The body of a worker thread.
    fn work(self: &Arc<Self>, s: usize, w: usize, mut resume: Resume) {
        let weak = Arc::downgrade(self);
        let watch = self.watchdog.register(move |h| {
            if let Some(p) = weak.upgrade() {
                p.worker_hung(s, w, h);
            }
        });
        loop {
            let object = match resume {
                Resume::Finished => return self.worker_done(s, w),
                Resume::First => self.stages[s].slots[w].initial.lock().take(),
                Resume::Failed { generation } => match self.after_failure(s, w, generation) {
                    After::Restart => None,
                    After::Finish => return self.worker_done(s, w),
                    After::Discard => {
                        self.discard(s, w);
                        return self.worker_done(s, w);
                    }
                },
            };
            match self.serve(s, w, object, &watch) {
                Served::Done => return self.worker_done(s, w),
                Served::Failed(generation) => resume = Resume::Failed { generation },
                Served::Abandoned => return,
            }
        }
    }

    /// Worker `w` of stage `s` finished for good.
    fn worker_done(&self, s: usize, w: usize) {
        self.drop_next(s, w, true);
        self.worker_finished(s);
    }

    /// Records that worker `w` tried its first setup (once).
    fn arrive_once(&self, s: usize, w: usize) {
        let first = {
            let mut c = self.stages[s].slots[w].control.lock();
            !std::mem::replace(&mut c.arrived, true)
        };
        if first {
            self.arrived();
        }
    }

    /// Logs and journals a failed call of generation `generation`.
    pub(super) fn report(
        &self,
        s: usize,
        w: usize,
        generation: u64,
        host: &InstanceHost,
        entry: &str,
        e: &CallError,
    ) {
        host.report_failure(entry, e);
        self.emit(Event::Failed {
            unit: self.unit_id(s, w, generation),
            entry: entry.into(),
            reason: reason(e),
        });
    }

    /// One instance of worker `w` from setup to finalize (built here after a restart).
    fn serve(&self, s: usize, w: usize, object: Option<FfiStageBox>, watch: &Slot) -> Served {
        let stage = &self.stages[s];
        let slot = &stage.slots[w];
        // A restart builds its own instance (from the newest version).
        self.drop_next(s, w, false);
        let library = Arc::clone(&stage.library.lock());
        let (host, generation) = {
            let mut c = slot.control.lock();
            c.generation += 1;
            c.running_since = Instant::now();
            c.ran_out = false;
            let host = Arc::new(InstanceHost::new(
                Arc::clone(&self.shared),
                worker_name(&stage.name, w),
                Arc::clone(&library),
                stage.export.clone(),
                c.generation,
                Arc::clone(&slot.stash),
            ));
            c.host = Some(Arc::clone(&host));
            (host, c.generation)
        };
        let built = match object {
            Some(o) => Ok(o),
            None => construct_stage(&library, &stage.export, &stage.config_json),
        };
        let mut object = match built {
            Ok(o) => o,
            Err(e) => {
                let e = CallError {
                    kind: e.kind,
                    message: format!("construction failed: {}", e.message).into(),
                };
                self.report(s, w, generation, &host, "setup", &e);
                host.fence();
                self.arrive_once(s, w);
                return Served::Failed(generation);
            }
        };
        let info = WorkerInfo {
            index: u32::try_from(w).unwrap_or(u32::MAX),
            count: u32::try_from(stage.slots.len()).unwrap_or(u32::MAX),
        };
        let calls = Calls {
            s,
            w,
            generation,
            host: &host,
            watch,
        };
        let limit = Some(stage.policy.startup_timeout);
        let Some(setup) = calls.call(Entry::Setup, limit, |h| object.setup(h, info)) else {
            return Served::Abandoned;
        };
        self.arrive_once(s, w);
        if let RResult::RErr(e) = setup {
            self.report(s, w, generation, &host, "setup", &e);
            host.fence();
            drop_object(object, &host);
            return Served::Failed(generation);
        }
        self.emit(Event::Started {
            unit: self.unit_id(s, w, generation),
        });
        let (mut object, mut host, mut generation) = (object, host, generation);
        loop {
            let calls = Calls {
                s,
                w,
                generation,
                host: &host,
                watch,
            };
            let ran = match stage.role {
                StageRole::Source => self.produce_all(&calls, &mut object),
                _ => self.consume_all(&calls, &mut object),
            };
            if matches!(ran, Ran::Abandoned) {
                return Served::Abandoned;
            }
            slot.control.lock().ran_out = matches!(ran, Ran::Done);
            if !self.finalize(&calls, object) {
                return Served::Abandoned;
            }
            match ran {
                Ran::Failed => return Served::Failed(generation),
                Ran::Switch => {}
                _ => return Served::Done,
            }
            // A hot reload's instance, already set up, takes the next item.
            let Some(next) = self.take_next(s, w) else {
                return Served::Failed(generation);
            };
            {
                let mut c = slot.control.lock();
                c.generation = next.generation;
                c.running_since = Instant::now();
                c.host = Some(Arc::clone(&next.host));
            }
            (object, host, generation) = (next.object, next.host, next.generation);
            self.emit(Event::Started {
                unit: self.unit_id(s, w, generation),
            });
        }
    }

    /// Finalizes an instance under `shutdown_timeout`; false when the
    /// watchdog abandoned the call (the thread must then leave).
    fn finalize(&self, calls: &Calls<'_>, mut object: FfiStageBox) -> bool {
        let Calls {
            s, w, generation, ..
        } = *calls;
        let limit = Some(self.stages[s].policy.shutdown_timeout);
        let Some(finalized) = calls.call(Entry::Finalize, limit, |h| object.finalize(h)) else {
            return false;
        };
        match finalized {
            RResult::ROk(()) => self.emit(Event::Finalized {
                unit: self.unit_id(s, w, generation),
            }),
            RResult::RErr(e) => self.report(s, w, generation, calls.host, "finalize", &e),
        }
        calls.host.fence();
        drop_object(object, calls.host);
        true
    }

    /// A source's items, until it is exhausted, fails or the pipeline stops.
    fn produce_all(&self, calls: &Calls<'_>, object: &mut FfiStageBox) -> Ran {
        let Calls {
            s, w, generation, ..
        } = *calls;
        self.wait_ready();
        let stage = &self.stages[s];
        let Some(next) = self.stages.get(s + 1).and_then(|n| n.input.as_ref()) else {
            return Ran::Done;
        };
        let mut out = RVec::new();
        let switch = &stage.slots[w].has_next;
        loop {
            if self.shared.stopping() {
                return Ran::Done;
            }
            if switch.load(Ordering::Relaxed) {
                return Ran::Switch;
            }
            let Some(r) = calls.call(Entry::Main, stage.policy.watchdog, |h| {
                object.produce(h, &mut out)
            }) else {
                return Ran::Abandoned;
            };
            let more = match r {
                RResult::ROk(more) => more,
                RResult::RErr(e) => {
                    self.report(s, w, generation, calls.host, "produce", &e);
                    return Ran::Failed;
                }
            };
            for item in out.drain(..) {
                let n = self.next_item.fetch_add(1, Ordering::SeqCst);
                if next.send(Msg::Item(n, item), &self.abort).is_err() {
                    return Ran::Abandoned;
                }
                stage.items_in.fetch_add(1, Ordering::SeqCst);
                stage.items_done.fetch_add(1, Ordering::SeqCst);
                stage.items_out.fetch_add(1, Ordering::SeqCst);
            }
            if !more {
                return Ran::Done;
            }
        }
    }

    /// A transform's or sink's items, until the end marker or a panic.
    fn consume_all(&self, calls: &Calls<'_>, object: &mut FfiStageBox) -> Ran {
        let Calls {
            s, w, generation, ..
        } = *calls;
        let stage = &self.stages[s];
        let Some(input) = stage.input.as_ref() else {
            return Ran::Done;
        };
        let next = self.stages.get(s + 1).and_then(|n| n.input.as_ref());
        let mut out = RVec::new();
        let switch = &stage.slots[w].has_next;
        loop {
            if switch.load(Ordering::Relaxed) {
                return Ran::Switch;
            }
            let (n, item) = match self.next_item(input) {
                Ok(Some(next)) => next,
                Ok(None) => return Ran::Done,
                Err(Aborted) => return Ran::Abandoned,
            };
            stage.items_in.fetch_add(1, Ordering::SeqCst);
            stage.slots[w].current_item.store(n, Ordering::SeqCst);
            let kept = item.clone();
            let Some(r) = calls.call(Entry::Main, stage.policy.watchdog, |h| {
                object.process(h, item, &mut out)
            }) else {
                return Ran::Abandoned;
            };
            if matches!(r, RResult::ROk(())) {
                stage.items_done.fetch_add(1, Ordering::SeqCst);
            }
            match (r, next) {
                (RResult::ROk(()), Some(q)) => {
                    for o in out.drain(..) {
                        if q.send(Msg::Item(n, o), &self.abort).is_err() {
                            return Ran::Abandoned;
                        }
                        stage.items_out.fetch_add(1, Ordering::SeqCst);
                    }
                }
                (RResult::ROk(()), None) => {
                    stage.items_out.fetch_add(1, Ordering::SeqCst);
                }
                (RResult::RErr(e), _) => {
                    out.clear();
                    let panicked = e.kind == CallErrorKind::Panicked;
                    if panicked {
                        self.report(s, w, generation, calls.host, "process", &e);
                    }
                    self.item_failed(s, w, n, Some(&kept), &reason(&e));
                    if panicked {
                        return Ran::Failed;
                    }
                }
            }
        }
    }

    /// The stage's last worker gave up: its items fail until the end marker.
    fn discard(&self, s: usize, w: usize) {
        let stage = &self.stages[s];
        let Some(input) = stage.input.as_ref() else {
            return;
        };
        while let Ok(Some((n, item))) = self.next_item(input) {
            stage.items_in.fetch_add(1, Ordering::SeqCst);
            self.item_failed(s, w, n, Some(&item), "no worker left in the stage");
        }
    }

    /// The next item of `input`; `None` at the end marker (put back for
    /// the stage's other workers).
    fn next_item(&self, input: &Queue) -> Result<Option<(u64, Value)>, Aborted> {
        match input.recv(&self.abort)? {
            Msg::Item(n, item) => Ok(Some((n, item))),
            Msg::End => {
                input.pass_end_on();
                Ok(None)
            }
        }
    }

    /// Generation `generation` of worker `w` failed: restart it after the
    /// back-off, or give up.
    fn after_failure(&self, s: usize, w: usize, generation: u64) -> After {
        let stage = &self.stages[s];
        let source = stage.role == StageRole::Source;
        let stopped =
            || self.abandoned.load(Ordering::SeqCst) || (source && self.shared.stopping());
        if stopped() {
            // A stopping source is not replaced; nothing is left to do.
            return After::Finish;
        }
        let now = Instant::now();
        let (decision, in_window) = {
            let mut c = stage.slots[w].control.lock();
            let since = c.running_since;
            let d = c.tracker.on_exit(&stage.policy, true, since, now);
            (d, c.tracker.restarts_in_window())
        };
        let in_window = u64::try_from(in_window).unwrap_or(u64::MAX);
        let unit = self.unit_id(s, w, generation);
        let who = worker_name(&stage.name, w);
        match decision {
            Decision::Restart { delay, attempt } => {
                self.emit(Event::Restarting {
                    unit,
                    delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    attempt,
                    restarts_in_window: in_window,
                    group: vec![who.clone()],
                });
                tracing::info!(
                    context = %self.name(),
                    service = %who,
                    "restarting in {} (restart {in_window} of at most {} within {})",
                    humantime::format_duration(delay),
                    stage.policy.max_restarts,
                    humantime::format_duration(stage.policy.restart_window)
                );
                return if self.shared.wake.wait_for(now + delay, stopped) {
                    After::Finish
                } else {
                    After::Restart
                };
            }
            Decision::Stay => {
                self.emit(Event::Stopped {
                    unit,
                    reason: "restart policy".into(),
                });
            }
            Decision::GiveUp => {
                let action = match stage.policy.on_give_up {
                    GiveUp::StopService => "stop_service",
                    GiveUp::StopContext => "stop_context",
                    GiveUp::ExitHost => "exit_host",
                };
                self.emit(Event::GaveUp {
                    unit,
                    action: action.into(),
                    restarts_in_window: in_window,
                });
                tracing::error!(
                    context = %self.name(),
                    service = %who,
                    "gave up after {in_window} restarts within {}; action: {action}",
                    humantime::format_duration(stage.policy.restart_window)
                );
                match stage.policy.on_give_up {
                    GiveUp::StopService => {}
                    GiveUp::StopContext => self.stop("a stage worker gave up"),
                    GiveUp::ExitHost => (self.notify)(PipelineEvent::ExitHost(self.index)),
                }
            }
        }
        self.failed.store(true, Ordering::SeqCst);
        if stage.live.fetch_sub(1, Ordering::SeqCst) != 1 || source {
            return After::Finish;
        }
        tracing::error!(
            pipeline = %self.name(),
            "stage {} has no worker left: its items fail until the pipeline has drained",
            stage.name
        );
        self.stop("a stage has no worker left");
        After::Discard
    }

    /// The watchdog declared a call of worker `w` hung (on the watchdog
    /// thread): fence the instance, fail the item in hand, and let a new
    /// thread carry on for the worker.
    fn worker_hung(self: &Arc<Self>, s: usize, w: usize, h: Hung) {
        let stage = &self.stages[s];
        let slot = &stage.slots[w];
        let ran_out = {
            let c = slot.control.lock();
            if c.generation != h.generation {
                return;
            }
            if let Some(host) = &c.host {
                host.fence();
            }
            c.ran_out
        };
        let entry = match (h.entry, stage.role) {
            (Entry::Setup | Entry::Finalize, _) => h.entry.name(),
            (_, StageRole::Source) => "produce",
            _ => "process",
        };
        let unit = self.unit_id(s, w, h.generation);
        self.emit(Event::Hung {
            unit: unit.clone(),
            entry: entry.into(),
            limit_ms: Some(limit_ms(h.limit)),
        });
        tracing::warn!(
            context = %self.name(),
            service = %unit.service,
            "{entry} hung (no return within {}); abandoning generation {}",
            humantime::format_duration(h.limit),
            h.generation
        );
        self.emit(Event::Abandoned {
            unit,
            entry: entry.into(),
        });
        if entry == "process" {
            let n = slot.current_item.load(Ordering::SeqCst);
            let why = format!(
                "hung: process did not return within {}",
                humantime::format_duration(h.limit)
            );
            self.item_failed(s, w, n, None, &why);
        }
        self.arrive_once(s, w);
        let resume = if h.entry == Entry::Finalize && ran_out {
            Resume::Finished
        } else {
            Resume::Failed {
                generation: h.generation,
            }
        };
        if self.abandoned.load(Ordering::SeqCst) || self.spawn_worker(s, w, resume).is_err() {
            self.worker_finished(s);
        }
    }
}
