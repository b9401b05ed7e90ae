//! Running pipelines: stages of workers connected by bounded queues.
//!
//! A [`RunningPipeline`] is shared (`Arc`) by its threads: one per stage
//! worker (`pipe-<stage>.<worker>`, see `worker.rs`) and one monitor
//! (`pipe-<pipeline>`) that journals each stage's figures every
//! `stats_interval` and tells the supervisor when the pipeline starts
//! stopping. Each worker has its own plugin instance, set up before its
//! first item and finalized after its last, supervised like a service:
//! a failed setup, a failed source call, a panic in `process`, or a call
//! that overruns its `watchdog` ends the instance, and the restart policy
//! ([`crate::supervision::policy::Tracker`]) decides whether a fresh one
//! takes its place on the same worker. A hung call's thread is abandoned
//! (the watchdog's [`crate::supervision::watchdog::Slot`]) and a new thread
//! carries on for that worker.
//!
//! Items flow source → transforms → sink through one bounded
//! `Queue` per consuming stage. The end of the stream is one end
//! marker behind the last item: when every worker of a stage has finished
//! (its sources exhausted or stopped, or its input ended), the stage sends
//! it into the next stage's queue, and each worker there leaves after it.
//! So stages drain and finalize in order, sources first, sinks last, and
//! the pipeline has finished when its last stage has.
//!
//! A stop (a signal, `stop_pipeline`, a stage giving up) stops the sources
//! between calls; the queues drain as above. If that overruns the drain
//! budget, the supervisor abandons the pipeline: its `Abort` frees
//! every worker blocked on a queue.

mod dead_letter;
mod queue;
mod reload;
mod worker;

pub use reload::StageReload;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use otools_abi::{FfiStageBox, StageRole, Value};
use parking_lot::{Condvar, Mutex};

use self::dead_letter::DeadLetter;
use self::queue::{Abort, Msg, Queue};
use crate::event::{self, Event, Figures, ItemRef, StageStats};
use crate::instance::{ContextShared, InstanceHost};
use crate::manifest::pipeline::OnItemError;
use crate::plan::PipelinePlan;
use crate::plugin::Library;
use crate::supervision::policy::{Policy, Tracker};
use crate::supervision::watchdog::Watchdog;
use crate::threads::Spawner;

/// What a pipeline tells the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineEvent {
    /// It started stopping (its drain budget starts now).
    Stopping(usize),
    /// Every worker has finished.
    Ended(usize),
    /// A stage gave up with `on_give_up = "exit_host"`.
    ExitHost(usize),
}

/// How the supervisor hears from pipelines.
pub type Notify = Arc<dyn Fn(PipelineEvent) + Send + Sync>;

/// One worker's slot: the instances that succeed each other in it.
struct WorkerSlot {
    control: Mutex<SlotControl>,
    /// The number of the item being processed (for a hang report).
    current_item: AtomicU64,
    /// The instance built by the plan, taken by the first thread.
    initial: Mutex<Option<FfiStageBox>>,
    stash: Arc<Mutex<Option<Vec<u8>>>>,
    /// A hot reload's new instance, set up and waiting for the worker to
    /// switch to it at its next item (see `reload.rs`).
    next: Mutex<reload::Next>,
    /// `next` holds an instance (checked between items without a lock).
    has_next: AtomicBool,
}

struct SlotControl {
    generation: u64,
    tracker: Tracker,
    running_since: Instant,
    host: Option<Arc<InstanceHost>>,
    /// The worker tried its first setup (the sources wait for every worker's).
    arrived: bool,
    /// The current instance is past its items (a hung `finalize` then ends the worker).
    ran_out: bool,
}

/// One stage while it runs.
struct Stage {
    name: String,
    role: StageRole,
    /// Its library: the newest version a hot reload moved it to.
    library: Mutex<Arc<Library>>,
    export: String,
    config_json: String,
    policy: Policy,
    /// Its input queue (none for a source).
    input: Option<Queue>,
    slots: Vec<WorkerSlot>,
    /// Workers whose thread has not finished for good.
    running: AtomicUsize,
    /// Workers that have not given up.
    live: AtomicUsize,
    items_in: AtomicU64,
    items_done: AtomicU64,
    items_out: AtomicU64,
    items_failed: AtomicU64,
}

/// A running pipeline; see the module docs.
pub struct RunningPipeline {
    /// Its index in the manifest.
    pub index: usize,
    /// Shared with its workers' handles: name, level, stop and fatal flags.
    pub shared: Arc<ContextShared>,
    stages: Vec<Stage>,
    on_item_error: OnItemError,
    drain_timeout: Duration,
    stats_interval: Duration,
    dead_letter: DeadLetter,
    abort: Abort,
    notify: Notify,
    /// The host's watchdog: every worker thread registers a slot on it.
    watchdog: Arc<Watchdog>,
    /// The host's thread starter.
    threads: Arc<Spawner>,
    next_item: AtomicU64,
    /// Workers that have not yet tried their first setup (sources wait for 0).
    unready: Mutex<usize>,
    ready: Condvar,
    stopping_sent: AtomicBool,
    /// When draining must be over (set when the pipeline starts stopping).
    deadline: Mutex<Option<Instant>>,
    /// Set once every worker has finished.
    pub finished: AtomicBool,
    /// Something failed for good: an item under `stop_pipeline`, a stage
    /// that gave up or failed without restart, a fatal message.
    pub failed: AtomicBool,
    /// The supervisor gave up waiting for it to drain.
    pub abandoned: AtomicBool,
}

/// One stage as `otools status` shows it.
pub struct StageSnapshot {
    /// Source, transform or sink.
    pub role: StageRole,
    /// Its figures now.
    pub stats: StageStats,
    /// The newest generation of each worker (1 for its first instance).
    pub generations: Vec<u64>,
}

/// A worker's name in logs and events: `<stage>.<worker>`.
pub fn worker_name(stage: &str, w: usize) -> String {
    format!("{stage}.{w}")
}

impl RunningPipeline {
    /// Builds a pipeline from its plan, watched by its host's `watchdog`
    /// and starting its threads through its host's `threads`;
    /// [`RunningPipeline::start`] runs it.
    pub fn new(
        index: usize,
        plan: PipelinePlan,
        notify: Notify,
        watchdog: Arc<Watchdog>,
        threads: Arc<Spawner>,
    ) -> Arc<RunningPipeline> {
        let now = Instant::now();
        let mut workers = 0;
        let stages: Vec<Stage> = plan
            .stages
            .into_iter()
            .map(|s| {
                let threads = s.initial.len();
                workers += threads;
                let slots = s
                    .initial
                    .into_iter()
                    .map(|o| WorkerSlot {
                        control: Mutex::new(SlotControl {
                            generation: 0,
                            tracker: Tracker::default(),
                            running_since: now,
                            host: None,
                            arrived: false,
                            ran_out: false,
                        }),
                        current_item: AtomicU64::new(0),
                        initial: Mutex::new(Some(o)),
                        stash: Arc::new(Mutex::new(None)),
                        next: Mutex::new(reload::Next::default()),
                        has_next: AtomicBool::new(false),
                    })
                    .collect();
                Stage {
                    input: (s.role != StageRole::Source).then(|| Queue::new(s.queue_size)),
                    name: s.name,
                    role: s.role,
                    library: Mutex::new(s.library),
                    export: s.export,
                    config_json: s.config_json,
                    policy: s.policy,
                    slots,
                    running: AtomicUsize::new(threads),
                    live: AtomicUsize::new(threads),
                    items_in: AtomicU64::new(0),
                    items_done: AtomicU64::new(0),
                    items_out: AtomicU64::new(0),
                    items_failed: AtomicU64::new(0),
                }
            })
            .collect();
        Arc::new(RunningPipeline {
            index,
            shared: plan.shared,
            stages,
            on_item_error: plan.on_item_error,
            drain_timeout: plan.drain_timeout,
            stats_interval: plan.stats_interval,
            dead_letter: DeadLetter::new(plan.dead_letter),
            abort: Abort::new(),
            notify,
            watchdog,
            threads,
            next_item: AtomicU64::new(1),
            unready: Mutex::new(workers),
            ready: Condvar::new(),
            stopping_sent: AtomicBool::new(false),
            deadline: Mutex::new(None),
            finished: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
        })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Starts its monitor and one thread per worker, sinks first. Fails
    /// when a thread cannot be created (journaled and logged by
    /// [`crate::threads`]); the workers already started are stopped.
    pub fn start(self: &Arc<Self>) -> std::io::Result<()> {
        let me = Arc::clone(self);
        self.threads.spawn(
            &format!("the monitor of pipeline {}", self.name()),
            &format!("pipe-{}", self.name()),
            move || me.monitor(),
        )?;
        for s in (0..self.stages.len()).rev() {
            for w in 0..self.stages[s].slots.len() {
                if let Err(e) = self.spawn_worker(s, w, worker::Resume::First) {
                    self.stop("a worker thread could not be created");
                    self.abandon();
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Asks the sources to stop (between calls); the queues then drain.
    pub fn stop(&self, why: &str) {
        if self.done() {
            return;
        }
        if !self.shared.stopping() {
            tracing::info!(pipeline = %self.name(), "stopping the sources ({why}); draining");
        }
        self.shared.request_stop();
        self.stopping_sent_once();
    }

    fn stopping_sent_once(&self) {
        if !self.stopping_sent.swap(true, Ordering::SeqCst) {
            *self.deadline.lock() = Some(Instant::now() + self.drain_budget());
            (self.notify)(PipelineEvent::Stopping(self.index));
        }
    }

    /// When stopping must be over, once it started stopping.
    pub fn deadline(&self) -> Option<Instant> {
        *self.deadline.lock()
    }

    /// Has it finished, or been abandoned?
    pub fn done(&self) -> bool {
        self.finished.load(Ordering::SeqCst) || self.abandoned.load(Ordering::SeqCst)
    }

    /// Did it fail (an item under `stop_pipeline`, a stage that gave up, a fatal message)?
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst) || self.shared.fatal.load(Ordering::SeqCst)
    }

    /// How long stopping may take at most: `drain_timeout`, plus every
    /// stage's `shutdown_timeout` (its workers finalize together), plus 1 s.
    pub fn drain_budget(&self) -> Duration {
        self.stages.iter().map(|s| s.policy.shutdown_timeout).fold(
            self.drain_timeout + Duration::from_secs(1),
            Duration::saturating_add,
        )
    }

    /// Gives up on draining: every worker blocked on a queue leaves, and
    /// the items still queued are lost (the exit code is then 3).
    pub fn abandon(&self) {
        if self.abandoned.swap(true, Ordering::SeqCst) {
            return;
        }
        let queued: u64 = self
            .stages
            .iter()
            .filter_map(|s| s.input.as_ref())
            .map(Queue::depth)
            .sum();
        tracing::error!(
            pipeline = %self.name(),
            "did not drain within its budget ({}): abandoned with {queued} item(s) still queued",
            humantime::format_duration(self.drain_budget())
        );
        self.shared.request_stop();
        self.abort.fire();
        self.shared.wake.notify();
    }

    /// Who an event about generation `generation` of worker `w` of stage `s` is about.
    fn unit_id(&self, s: usize, w: usize, generation: u64) -> event::Unit {
        event::Unit::new(
            self.name(),
            &worker_name(&self.stages[s].name, w),
            generation,
        )
    }

    fn emit(&self, e: Event) {
        self.shared.events.emit(&e);
    }

    fn stats(&self, s: usize) -> StageStats {
        let st = &self.stages[s];
        let workers = st.running.load(Ordering::SeqCst) as u64;
        StageStats {
            pipeline: self.name().to_owned(),
            stage: st.name.clone(),
            workers,
            figures: Figures {
                // A finished stage's queue holds only the end marker.
                queue_depth: st
                    .input
                    .as_ref()
                    .filter(|_| workers > 0)
                    .map_or(0, Queue::depth),
                queue_high_water: st.input.as_ref().map_or(0, Queue::high_water),
                queue_size: st.input.as_ref().map_or(0, |q| q.size as u64),
                items_in: st.items_in.load(Ordering::SeqCst),
                items_done: st.items_done.load(Ordering::SeqCst),
                items_out: st.items_out.load(Ordering::SeqCst),
                items_failed: st.items_failed.load(Ordering::SeqCst),
            },
        }
    }

    /// Every stage's figures now, source first.
    pub fn snapshot(&self) -> Vec<StageSnapshot> {
        self.stages
            .iter()
            .enumerate()
            .map(|(s, st)| StageSnapshot {
                role: st.role,
                stats: self.stats(s),
                generations: st
                    .slots
                    .iter()
                    .map(|w| w.control.lock().generation.max(1))
                    .collect(),
            })
            .collect()
    }

    /// `running`, `stopping` (draining), `finished` or `abandoned`.
    pub fn state(&self) -> &'static str {
        if self.abandoned.load(Ordering::SeqCst) {
            "abandoned"
        } else if self.finished.load(Ordering::SeqCst) {
            "finished"
        } else if self.shared.stopping() {
            "stopping"
        } else {
            "running"
        }
    }

    /// The monitor thread: journals figures, and tells the supervisor when
    /// the pipeline was asked to stop from inside (a stage's
    /// `terminate_context` or fatal message).
    fn monitor(&self) {
        let news = || {
            self.done() || (self.shared.stopping() && !self.stopping_sent.load(Ordering::SeqCst))
        };
        while !self.done() {
            if self.shared.stopping() {
                self.stopping_sent_once();
            }
            for s in 0..self.stages.len() {
                self.emit(Event::StageStats(self.stats(s)));
            }
            self.shared
                .wake
                .wait_for(Instant::now() + self.stats_interval, news);
        }
    }

    /// One worker tried its first setup.
    fn arrived(&self) {
        let mut n = self.unready.lock();
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.ready.notify_all();
        }
    }

    /// Waits until every worker tried its first setup (a source waits here
    /// before its first item) or the pipeline stops.
    fn wait_ready(&self) {
        let mut n = self.unready.lock();
        while *n > 0 && !self.shared.stopping() {
            self.ready.wait_for(&mut n, Duration::from_millis(100));
        }
    }

    /// An item failed in stage `s`, worker `w`: count it, log it, journal
    /// it, write it to the dead-letter file, and stop the pipeline under
    /// `stop_pipeline`.
    fn item_failed(&self, s: usize, w: usize, item: u64, value: Option<&Value>, reason: &str) {
        let stage = &self.stages[s];
        stage.items_failed.fetch_add(1, Ordering::SeqCst);
        let at = ItemRef {
            pipeline: self.name().to_owned(),
            stage: stage.name.clone(),
            worker: u32::try_from(w).unwrap_or(u32::MAX),
            item,
        };
        tracing::error!(
            pipeline = %self.name(),
            stage = %stage.name,
            worker = w,
            item,
            "item {item} failed in stage {}: {reason}",
            stage.name
        );
        self.dead_letter.write(&at, value, reason);
        self.emit(Event::ItemFailed {
            item: at,
            reason: reason.to_owned(),
        });
        if self.on_item_error == OnItemError::StopPipeline
            && !self.failed.swap(true, Ordering::SeqCst)
        {
            tracing::error!(
                pipeline = %self.name(),
                "on_item_error = \"stop_pipeline\": item {item} failed in stage {} ({reason}); stopping the pipeline",
                stage.name
            );
            self.stop("an item failed");
        }
    }

    /// Worker `w` of stage `s` finished for good.
    fn worker_finished(&self, s: usize) {
        if self.stages[s].running.fetch_sub(1, Ordering::SeqCst) != 1 {
            return;
        }
        // The stage's last worker: everything it sent is queued before the end marker.
        if let Some(next) = self.stages.get(s + 1) {
            if let Some(q) = &next.input {
                let _ = q.send(Msg::End, &self.abort);
            }
        } else {
            self.all_finished();
        }
    }

    fn all_finished(&self) {
        self.finished.store(true, Ordering::SeqCst);
        let stages: Vec<StageStats> = (0..self.stages.len()).map(|s| self.stats(s)).collect();
        for s in &stages {
            self.emit(Event::StageStats(s.clone()));
        }
        let items_in = self.stages[0].items_out.load(Ordering::SeqCst);
        let items_out = self
            .stages
            .last()
            .map_or(0, |s| s.items_out.load(Ordering::SeqCst));
        let items_failed = self
            .stages
            .iter()
            .map(|s| s.items_failed.load(Ordering::SeqCst))
            .sum();
        let failed = self.failed.load(Ordering::SeqCst) || self.shared.fatal.load(Ordering::SeqCst);
        let outcome = if failed {
            "failed"
        } else if self.shared.stopping() {
            "stopped"
        } else {
            "completed"
        };
        tracing::info!(
            pipeline = %self.name(),
            "finished ({outcome}): {items_in} item(s) in, {items_out} out, {items_failed} failed"
        );
        self.emit(Event::PipelineFinished {
            pipeline: self.name().to_owned(),
            items_in,
            items_out,
            items_failed,
            stages,
            outcome: outcome.into(),
        });
        self.shared.wake.notify();
        (self.notify)(PipelineEvent::Ended(self.index));
    }
}
