//! Typed lifecycle events and the sinks they are delivered to.
//!
//! Every lifecycle event the host records (a unit started, failed, hung,
//! was abandoned, restarted, finalized, a reload was attempted, ...) is one
//! [`Event`] value. An [`Events`] hub delivers each event to its list of
//! [`Sink`]s, in order: the `--events` JSON-lines file
//! ([`crate::supervision::journal::Journal`]) is one, [`UnitStates`] (the
//! latest state of every unit, for a status view or metrics) another.
//!
//! An [`Events`] hub is a value, not a static: two hubs never see each
//! other's events. `otools run` builds one and hands it down in
//! [`crate::plan::Options::events`]: every context's
//! [`crate::instance::ContextShared::events`] (the runtime and every
//! instance handle record there), the reload watcher and the supervisor
//! hold it. The host's watchdog and thread starter
//! ([`crate::supervision::watchdog::Watchdog`], [`crate::threads::Spawner`])
//! record `leak_ceiling` and `thread_spawn_failed` there too.

use std::fmt;
use std::sync::Arc;

use serde_json::Value as Json;

/// Which instance of which service an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// The context the service runs in.
    pub context: String,
    /// The service's name in the manifest.
    pub service: String,
    /// The instance's generation (1 for the first, one more per replacement).
    pub generation: u64,
}

impl Unit {
    /// The unit `service` of `context`, at `generation`.
    pub fn new(context: &str, service: &str, generation: u64) -> Self {
        Self {
            context: context.to_owned(),
            service: service.to_owned(),
            generation,
        }
    }
}

/// Which leak ceiling was reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ceiling {
    /// `[host] max_abandoned_threads`: threads left in hung plugin calls.
    AbandonedThreads {
        /// Threads abandoned now.
        abandoned_threads: u64,
        /// The ceiling.
        max: u64,
    },
    /// `max_loaded_libraries`: plugin library versions mapped (never unmapped).
    LoadedLibraries {
        /// Versions loaded now.
        loaded_versions: u64,
    },
}

/// One lifecycle event. The JSON name of each is in its doc
/// ([`Event::name`]); [`Event::fields`] gives its event-specific keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `started`: an instance was set up and serves.
    Started {
        /// The unit.
        unit: Unit,
    },
    /// `failed`: an entry point returned an error or panicked.
    Failed {
        /// The unit.
        unit: Unit,
        /// The entry point (`setup`, `main`, `loop`, `finalize`, ...).
        entry: String,
        /// Why, in words.
        reason: String,
    },
    /// `hung`: an entry point did not return within its limit (`limit_ms`
    /// when the watchdog declared it; none when a finalize overran).
    Hung {
        /// The unit.
        unit: Unit,
        /// The entry point (`setup`, `main`, `loop`, `finalize`, ...).
        entry: String,
        /// The limit it overran, in milliseconds.
        limit_ms: Option<u64>,
    },
    /// `abandoned`: an instance's thread is left in a call; the instance is fenced.
    Abandoned {
        /// The unit.
        unit: Unit,
        /// The entry point (`setup`, `main`, `loop`, `finalize`, ...).
        entry: String,
    },
    /// `abandoned` with `entry` = `context`: a whole context did not stop
    /// within its shutdown budget.
    ContextAbandoned {
        /// The context.
        context: String,
    },
    /// `deactivated`: a service asked to stop serving.
    Deactivated {
        /// The unit.
        unit: Unit,
    },
    /// `stopping`: a sibling is stopped because `because` is restarted with it.
    Stopping {
        /// The unit.
        unit: Unit,
        /// The service whose restart stops it.
        because: String,
    },
    /// `restarting`: the restart policy restarts `group` after `delay_ms`.
    Restarting {
        /// The unit.
        unit: Unit,
        /// The back-off before the restart, in milliseconds.
        delay_ms: u64,
        /// Consecutive restarts so far (1-based).
        attempt: u32,
        /// Restarts within the policy's window.
        restarts_in_window: u64,
        /// The services restarted together, in manifest order.
        group: Vec<String>,
    },
    /// `stopped`: a failed unit stays stopped (its restart policy).
    Stopped {
        /// The unit.
        unit: Unit,
        /// Why, in words.
        reason: String,
    },
    /// `gave_up`: too many restarts within the window; `action` is the give-up action.
    GaveUp {
        /// The unit.
        unit: Unit,
        /// The give-up action (`stop_service`, `stop_context`, `exit_host`).
        action: String,
        /// Restarts within the policy's window.
        restarts_in_window: u64,
    },
    /// `main_once_done`: a `main_once` service's `main` returned; it is not called again.
    MainOnceDone {
        /// The unit.
        unit: Unit,
    },
    /// `finalized`: an instance's `finalize` returned.
    Finalized {
        /// The unit.
        unit: Unit,
    },
    /// `revived`: a reload of `file` started a unit that had stopped.
    Revived {
        /// The unit.
        unit: Unit,
        /// The plugin library file.
        file: String,
    },
    /// `fenced_call`: a fenced instance made a host call, refused.
    FencedCall {
        /// The unit.
        unit: Unit,
        /// The refused host call.
        call: String,
        /// Refused calls of this instance so far.
        fenced_calls: u64,
    },
    /// `drop_panicked`: the plugin object's destructor panicked.
    DropPanicked {
        /// The unit.
        unit: Unit,
        /// Why, in words.
        reason: String,
    },
    /// `reload_setup_ok`: a reload set up the new version of a unit.
    ReloadSetupOk {
        /// The unit.
        unit: Unit,
        /// The plugin library file.
        file: String,
    },
    /// `reload_rolled_back`: a reload that set up this unit's new version
    /// (the generation named) was refused before it served: the new
    /// instance was discarded (finalized, or only fenced when a call of the
    /// reload hung) and the unit's old generation serves on.
    ReloadRolledBack {
        /// The unit, at the discarded new generation.
        unit: Unit,
        /// The plugin library file.
        file: String,
    },
    /// `ready`: every service of a context was set up.
    ContextReady {
        /// The context.
        context: String,
    },
    /// `context_stopping`: a context began stopping.
    ContextStopping {
        /// The context.
        context: String,
    },
    /// `context_ended`: a context stopped.
    ContextEnded {
        /// The context.
        context: String,
    },
    /// `leak_ceiling`: a leak ceiling was reached; the host exits with 76.
    LeakCeiling(Ceiling),
    /// `thread_spawn_failed`: the host could not create a thread it needs.
    ThreadSpawnFailed {
        /// The thread that could not be created.
        thread: String,
        /// The system's error.
        error: String,
    },
    /// `reload_postponed`: too many reload attempts within the window.
    ReloadPostponed {
        /// The plugin library file.
        file: String,
    },
    /// `reload_attempted`: a reload of `file` (content `hash`) begins.
    ReloadAttempted {
        /// The plugin library file.
        file: String,
        /// The file content's hash, in hex.
        hash: String,
    },
    /// `reload_ok`: a reload replaced `instances` instances and revived `revived` units.
    ReloadOk {
        /// The plugin library file.
        file: String,
        /// The file content's hash, in hex.
        hash: String,
        /// Instances replaced.
        instances: u64,
        /// Stopped units started again.
        revived: u64,
        /// Plugin library versions loaded now (never unloaded).
        loaded_versions: u64,
        /// Their size in bytes.
        loaded_bytes: u64,
    },
    /// A durable event flow's event (`flow_started`, `step_started`, ...):
    /// see [`FlowEvent`].
    Flow(FlowEvent),
    /// `reload_rejected`: a reload was refused; the running version serves on.
    ReloadRejected {
        /// The plugin library file.
        file: String,
        /// The file content's hash, in hex.
        hash: String,
        /// Why, in words.
        reason: String,
    },
    /// `message_unknown`: a message of a name the service does not accept
    /// was refused (the sender got `UnknownMessage`); the service goes on.
    MessageUnknown {
        /// The target unit.
        unit: Unit,
        /// The message name.
        name: String,
        /// Who sent it.
        from: String,
        /// Its correlation id.
        correlation: String,
    },
    /// `message_failed`: a message handler returned an error or panicked
    /// (the requester got `PeerFailed`; a `failed` event follows).
    MessageFailed {
        /// The unit.
        unit: Unit,
        /// The message name.
        name: String,
        /// Its correlation id.
        correlation: String,
        /// Why, in words.
        reason: String,
    },
    /// `shutdown`: the service received the reserved `SHUTDOWN` message
    /// and stops as a normal exit, not restarted.
    Shutdown {
        /// The unit.
        unit: Unit,
        /// Who sent it.
        from: String,
        /// Its correlation id.
        correlation: String,
    },
    /// `item_failed`: a transform or sink failed on an item (an error, a
    /// panic, or a hang), which went to the dead-letter file.
    ItemFailed {
        /// Where and which item.
        item: ItemRef,
        /// Why, in words.
        reason: String,
    },
    /// `stage_stats`: one stage's figures, every `stats_interval` and at the end.
    StageStats(StageStats),
    /// `pipeline_finished`: every worker of the pipeline has finished.
    PipelineFinished {
        /// The pipeline.
        pipeline: String,
        /// Items its sources produced.
        items_in: u64,
        /// Items its sinks consumed.
        items_out: u64,
        /// Items that failed in any stage.
        items_failed: u64,
        /// Each stage's figures, source first (what holds for a transform
        /// that makes zero or several items of one: see [`StageStats`]).
        stages: Vec<StageStats>,
        /// `completed` (every source exhausted), `stopped` (a stop request
        /// or `stop_pipeline`) or `failed` (a stage could not go on).
        outcome: String,
    },
}

/// Which item of which worker of which pipeline stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemRef {
    /// The pipeline.
    pub pipeline: String,
    /// The stage.
    pub stage: String,
    /// The worker's index in its stage.
    pub worker: u32,
    /// The item's number: the number its source gave it, from 1 (the
    /// items a transform makes of one item share its number).
    pub item: u64,
}

/// One stage's figures, journaled as `stage_stats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageStats {
    /// The pipeline.
    pub pipeline: String,
    /// The stage.
    pub stage: String,
    /// Its workers that are running now.
    pub workers: u64,
    /// Its queue and item counts.
    pub figures: Figures,
}

/// The keys of [`Figures`], in the order `stage_stats` lists them.
const FIGURE_KEYS: [&str; 7] = [
    "queue_depth",
    "queue_high_water",
    "queue_size",
    "items_in",
    "items_done",
    "items_out",
    "items_failed",
];

/// A stage's queue and item counts (in `stage_stats`, and in `otools
/// status`, whose JSON has the same keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Figures {
    /// Items in its input queue now (0 for a source).
    pub queue_depth: u64,
    /// The most items its input queue held (never above `queue_size`).
    pub queue_high_water: u64,
    /// The capacity of its input queue (0 for a source).
    pub queue_size: u64,
    /// Items it took in (a source: produced).
    pub items_in: u64,
    /// Items it took in and handled without failing (a source: produced).
    /// `items_in == items_done + items_failed` once the stage has finished
    /// (while it runs, the difference is the items in its workers' hands).
    pub items_done: u64,
    /// Items it sent on (a sink: consumed, so equal to `items_done`). A
    /// transform sends on as many as it made: zero, one or several per
    /// item done. Once the pipeline has drained, the next stage's
    /// `items_in` equals this.
    pub items_out: u64,
    /// Items that failed in it.
    pub items_failed: u64,
}

impl StageStats {
    /// The figures of a finished stage, as `pipeline_finished` lists them.
    fn figures(&self) -> Json {
        let f = &self.figures;
        serde_json::json!({
            "stage": self.stage,
            "items_in": f.items_in,
            "items_done": f.items_done,
            "items_out": f.items_out,
            "items_failed": f.items_failed,
        })
    }
}

impl Event {
    /// The event's name (the `event` key of its JSON line).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Started { .. } => "started",
            Self::Failed { .. } => "failed",
            Self::Hung { .. } => "hung",
            Self::Abandoned { .. } | Self::ContextAbandoned { .. } => "abandoned",
            Self::Deactivated { .. } => "deactivated",
            Self::Stopping { .. } => "stopping",
            Self::Restarting { .. } => "restarting",
            Self::Stopped { .. } => "stopped",
            Self::GaveUp { .. } => "gave_up",
            Self::MainOnceDone { .. } => "main_once_done",
            Self::Finalized { .. } => "finalized",
            Self::Revived { .. } => "revived",
            Self::FencedCall { .. } => "fenced_call",
            Self::DropPanicked { .. } => "drop_panicked",
            Self::ReloadSetupOk { .. } => "reload_setup_ok",
            Self::ReloadRolledBack { .. } => "reload_rolled_back",
            Self::ContextReady { .. } => "ready",
            Self::ContextStopping { .. } => "context_stopping",
            Self::ContextEnded { .. } => "context_ended",
            Self::LeakCeiling(_) => "leak_ceiling",
            Self::ThreadSpawnFailed { .. } => "thread_spawn_failed",
            Self::ReloadPostponed { .. } => "reload_postponed",
            Self::ReloadAttempted { .. } => "reload_attempted",
            Self::ReloadOk { .. } => "reload_ok",
            Self::ReloadRejected { .. } => "reload_rejected",
            Self::ItemFailed { .. } => "item_failed",
            Self::StageStats(_) => "stage_stats",
            Self::PipelineFinished { .. } => "pipeline_finished",
            Self::MessageUnknown { .. } => "message_unknown",
            Self::MessageFailed { .. } => "message_failed",
            Self::Shutdown { .. } => "shutdown",
            Self::Flow(f) => f.name(),
        }
    }

    /// The unit the event is about, if it is about one.
    pub fn unit(&self) -> Option<&Unit> {
        match self {
            Self::Started { unit }
            | Self::Failed { unit, .. }
            | Self::Hung { unit, .. }
            | Self::Abandoned { unit, .. }
            | Self::Deactivated { unit }
            | Self::Stopping { unit, .. }
            | Self::Restarting { unit, .. }
            | Self::Stopped { unit, .. }
            | Self::GaveUp { unit, .. }
            | Self::Finalized { unit }
            | Self::MainOnceDone { unit }
            | Self::Revived { unit, .. }
            | Self::FencedCall { unit, .. }
            | Self::DropPanicked { unit, .. }
            | Self::ReloadSetupOk { unit, .. }
            | Self::ReloadRolledBack { unit, .. }
            | Self::MessageUnknown { unit, .. }
            | Self::MessageFailed { unit, .. }
            | Self::Shutdown { unit, .. } => Some(unit),
            _ => None,
        }
    }

    /// The context the event is about: the unit's, or the context's for a
    /// context-wide event; none for a host-wide one.
    pub fn context(&self) -> Option<&str> {
        match self {
            Self::ContextAbandoned { context }
            | Self::ContextReady { context }
            | Self::ContextStopping { context }
            | Self::ContextEnded { context } => Some(context),
            _ => self.unit().map(|u| u.context.as_str()),
        }
    }

    /// The event-specific keys of its JSON line (beyond `ts`, `mono_us`,
    /// `event`, `context`, `service` and `generation`).
    pub fn fields(&self) -> Vec<(&'static str, Json)> {
        match self {
            Self::Started { .. }
            | Self::Deactivated { .. }
            | Self::Finalized { .. }
            | Self::MainOnceDone { .. }
            | Self::ContextReady { .. }
            | Self::ContextStopping { .. }
            | Self::ContextEnded { .. } => Vec::new(),
            Self::Failed { entry, reason, .. } => {
                vec![
                    ("entry", entry.as_str().into()),
                    ("reason", reason.as_str().into()),
                ]
            }
            Self::Hung {
                entry, limit_ms, ..
            } => {
                let mut f = vec![("entry", entry.as_str().into())];
                if let Some(ms) = limit_ms {
                    f.push(("limit_ms", (*ms).into()));
                }
                f
            }
            Self::Abandoned { entry, .. } => vec![("entry", entry.as_str().into())],
            Self::ContextAbandoned { .. } => vec![("entry", "context".into())],
            Self::Stopping { because, .. } => vec![("because", because.as_str().into())],
            Self::Restarting {
                delay_ms,
                attempt,
                restarts_in_window,
                group,
                ..
            } => vec![
                ("delay_ms", (*delay_ms).into()),
                ("attempt", (*attempt).into()),
                ("restarts_in_window", (*restarts_in_window).into()),
                (
                    "group",
                    Json::Array(group.iter().map(|g| g.as_str().into()).collect()),
                ),
            ],
            Self::Stopped { reason, .. } | Self::DropPanicked { reason, .. } => {
                vec![("reason", reason.as_str().into())]
            }
            Self::GaveUp {
                action,
                restarts_in_window,
                ..
            } => vec![
                ("action", action.as_str().into()),
                ("restarts_in_window", (*restarts_in_window).into()),
            ],
            Self::Revived { file, .. }
            | Self::ReloadSetupOk { file, .. }
            | Self::ReloadRolledBack { file, .. }
            | Self::ReloadPostponed { file } => vec![("file", file.as_str().into())],
            Self::FencedCall {
                call, fenced_calls, ..
            } => vec![
                ("call", call.as_str().into()),
                ("fenced_calls", (*fenced_calls).into()),
            ],
            Self::LeakCeiling(Ceiling::AbandonedThreads {
                abandoned_threads,
                max,
            }) => vec![
                ("kind", "abandoned_threads".into()),
                ("abandoned_threads", (*abandoned_threads).into()),
                ("max", (*max).into()),
            ],
            Self::LeakCeiling(Ceiling::LoadedLibraries { loaded_versions }) => vec![
                ("kind", "loaded_libraries".into()),
                ("loaded_versions", (*loaded_versions).into()),
            ],
            Self::ThreadSpawnFailed { thread, error } => vec![
                ("thread", thread.as_str().into()),
                ("error", error.as_str().into()),
            ],
            Self::ReloadAttempted { file, hash } => {
                vec![
                    ("file", file.as_str().into()),
                    ("hash", hash.as_str().into()),
                ]
            }
            Self::ReloadOk {
                file,
                hash,
                instances,
                revived,
                loaded_versions,
                loaded_bytes,
            } => vec![
                ("file", file.as_str().into()),
                ("hash", hash.as_str().into()),
                ("instances", (*instances).into()),
                ("revived", (*revived).into()),
                ("loaded_versions", (*loaded_versions).into()),
                ("loaded_bytes", (*loaded_bytes).into()),
            ],
            Self::ReloadRejected { file, hash, reason } => vec![
                ("file", file.as_str().into()),
                ("hash", hash.as_str().into()),
                ("reason", reason.as_str().into()),
            ],
            Self::MessageUnknown {
                name,
                from,
                correlation,
                ..
            } => vec![
                ("name", name.as_str().into()),
                ("from", from.as_str().into()),
                ("correlation", correlation.as_str().into()),
            ],
            Self::MessageFailed {
                name,
                correlation,
                reason,
                ..
            } => vec![
                ("name", name.as_str().into()),
                ("correlation", correlation.as_str().into()),
                ("reason", reason.as_str().into()),
            ],
            Self::Shutdown {
                from, correlation, ..
            } => vec![
                ("from", from.as_str().into()),
                ("correlation", correlation.as_str().into()),
            ],
            Self::ItemFailed { item, reason } => vec![
                ("pipeline", item.pipeline.as_str().into()),
                ("stage", item.stage.as_str().into()),
                ("worker", item.worker.into()),
                ("item", item.item.into()),
                ("reason", reason.as_str().into()),
            ],
            Self::StageStats(s) => {
                let mut fields = vec![
                    ("pipeline", s.pipeline.as_str().into()),
                    ("stage", s.stage.as_str().into()),
                    ("workers", s.workers.into()),
                ];
                if let Json::Object(figures) = serde_json::to_value(s.figures).unwrap_or_default() {
                    fields.extend(FIGURE_KEYS.iter().map(|k| (*k, figures[*k].clone())));
                }
                fields
            }
            Self::PipelineFinished {
                pipeline,
                items_in,
                items_out,
                items_failed,
                stages,
                outcome,
            } => vec![
                ("pipeline", pipeline.as_str().into()),
                ("items_in", (*items_in).into()),
                ("items_out", (*items_out).into()),
                ("items_failed", (*items_failed).into()),
                (
                    "stages",
                    Json::Array(stages.iter().map(StageStats::figures).collect()),
                ),
                ("outcome", outcome.as_str().into()),
            ],
            Self::Flow(f) => f.fields(),
        }
    }
}

/// Which run of which flow a flow event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowRun {
    /// The flow's name.
    pub flow: String,
    /// The run id.
    pub run: String,
}

/// Which activation of a step: the step, its sequence and attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activation {
    /// The step's name.
    pub step: String,
    /// The sequence.
    pub sequence: String,
    /// The attempt, from 1.
    pub attempt: u32,
}

/// An event of a durable event flow (`crate::flow`). Each names its flow
/// and run; the JSON name of each is in its doc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowEvent {
    /// `flow_started`: a run starts (or is taken up again) in `mode`.
    Started {
        /// The flow and run.
        run: FlowRun,
        /// `restart`, `recover` or `continue`.
        mode: String,
        /// How many times this run was taken up again (0 for a new run).
        recovery: u32,
    },
    /// `event_raised`: an event was raised for a sequence.
    Raised {
        /// The flow and run.
        run: FlowRun,
        /// The event.
        name: String,
        /// The sequence.
        sequence: String,
    },
    /// `duplicate`: an event already raised for this sequence, or a step
    /// already activated for it, was raised or activated again: ignored.
    Duplicate {
        /// The flow and run.
        run: FlowRun,
        /// `event` or `step`.
        kind: String,
        /// The event's or step's name.
        name: String,
        /// The sequence.
        sequence: String,
    },
    /// `delay_scheduled`: an association's targets wait until `due_ms`.
    DelayScheduled {
        /// The flow and run.
        run: FlowRun,
        /// The step or event that will be activated or raised.
        target: String,
        /// The sequence.
        sequence: String,
        /// When (milliseconds since the Unix epoch).
        due_ms: u64,
    },
    /// `step_started`: an activation of a step starts running.
    StepStarted {
        /// The flow and run.
        run: FlowRun,
        /// Which activation.
        activation: Activation,
    },
    /// `step_finished`: an activation ended with `status` (`success` or `failure`).
    StepFinished {
        /// The flow and run.
        run: FlowRun,
        /// Which activation.
        activation: Activation,
        /// `success` or `failure`.
        status: String,
        /// Why it failed (`failed: ...`, `panicked: ...`, `hung: ...`).
        reason: Option<String>,
    },
    /// `step_skipped`: `recover` did not run a step again (it had
    /// succeeded, or its `recovery` is `skip`).
    StepSkipped {
        /// The flow and run.
        run: FlowRun,
        /// The activation that stays as it was.
        activation: Activation,
        /// Its recorded status.
        status: String,
    },
    /// `and_unsatisfied`: the flow went idle with an expression event
    /// still false for a sequence where some of its operands were raised.
    Unsatisfied {
        /// The flow and run.
        run: FlowRun,
        /// The expression event.
        name: String,
        /// The sequence.
        sequence: String,
        /// The operands never raised for it.
        missing: Vec<String>,
    },
    /// `flow_incomplete`: a bounded run (`--once`) went idle with work
    /// outstanding (pending delays or retries), taken up by `continue`.
    Incomplete {
        /// The flow and run.
        run: FlowRun,
        /// What is outstanding, one line each.
        outstanding: Vec<String>,
    },
    /// `flow_finished`: the run ended: `success`, `failure`, `stopped`
    /// (a signal or a stop left work pending) or `incomplete` (a bounded
    /// run left work pending).
    Finished {
        /// The flow and run.
        run: FlowRun,
        /// `success`, `failure` or `stopped`.
        result: String,
    },
}

impl FlowEvent {
    /// The event's name (the `event` key of its JSON line).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Started { .. } => "flow_started",
            Self::Raised { .. } => "event_raised",
            Self::Duplicate { .. } => "duplicate",
            Self::DelayScheduled { .. } => "delay_scheduled",
            Self::StepStarted { .. } => "step_started",
            Self::StepFinished { .. } => "step_finished",
            Self::StepSkipped { .. } => "step_skipped",
            Self::Unsatisfied { .. } => "and_unsatisfied",
            Self::Incomplete { .. } => "flow_incomplete",
            Self::Finished { .. } => "flow_finished",
        }
    }

    /// Its keys: `flow`, `run`, then its own.
    pub fn fields(&self) -> Vec<(&'static str, Json)> {
        let (run, mut own): (&FlowRun, Vec<(&'static str, Json)>) = match self {
            Self::Started {
                run,
                mode,
                recovery,
            } => (
                run,
                vec![
                    ("mode", mode.as_str().into()),
                    ("recovery", (*recovery).into()),
                ],
            ),
            Self::Raised {
                run,
                name,
                sequence,
            } => (
                run,
                vec![
                    ("name", name.as_str().into()),
                    ("sequence", sequence.as_str().into()),
                ],
            ),
            Self::Duplicate {
                run,
                kind,
                name,
                sequence,
            } => (
                run,
                vec![
                    ("kind", kind.as_str().into()),
                    ("name", name.as_str().into()),
                    ("sequence", sequence.as_str().into()),
                ],
            ),
            Self::DelayScheduled {
                run,
                target,
                sequence,
                due_ms,
            } => (
                run,
                vec![
                    ("target", target.as_str().into()),
                    ("sequence", sequence.as_str().into()),
                    ("due_ms", (*due_ms).into()),
                ],
            ),
            Self::StepStarted { run, activation } => (run, activation.fields()),
            Self::StepFinished {
                run,
                activation,
                status,
                reason,
            } => {
                let mut f = activation.fields();
                f.push(("status", status.as_str().into()));
                if let Some(r) = reason {
                    f.push(("reason", r.as_str().into()));
                }
                (run, f)
            }
            Self::StepSkipped {
                run,
                activation,
                status,
            } => {
                let mut f = activation.fields();
                f.push(("status", status.as_str().into()));
                (run, f)
            }
            Self::Unsatisfied {
                run,
                name,
                sequence,
                missing,
            } => (
                run,
                vec![
                    ("name", name.as_str().into()),
                    ("sequence", sequence.as_str().into()),
                    (
                        "missing",
                        Json::Array(missing.iter().map(|m| m.as_str().into()).collect()),
                    ),
                ],
            ),
            Self::Incomplete { run, outstanding } => (
                run,
                vec![(
                    "outstanding",
                    Json::Array(outstanding.iter().map(|o| o.as_str().into()).collect()),
                )],
            ),
            Self::Finished { run, result } => (run, vec![("result", result.as_str().into())]),
        };
        let mut f = vec![
            ("flow", run.flow.as_str().into()),
            ("run", run.run.as_str().into()),
        ];
        f.append(&mut own);
        f
    }
}

impl Activation {
    fn fields(&self) -> Vec<(&'static str, Json)> {
        vec![
            ("step", self.step.as_str().into()),
            ("sequence", self.sequence.as_str().into()),
            ("attempt", self.attempt.into()),
        ]
    }
}

/// Receives every event of the [`Events`] hub it is added to. Called on the
/// thread that records the event, possibly several at once: keep it short
/// and never block on the host.
pub trait Sink: Send + Sync {
    /// One event.
    fn event(&self, e: &Event);
}

/// A list of sinks every recorded event is delivered to, in order.
#[derive(Default)]
pub struct Events {
    sinks: Vec<Arc<dyn Sink>>,
}

impl Events {
    /// A hub delivering to `sinks`.
    pub fn new(sinks: Vec<Arc<dyn Sink>>) -> Self {
        Self { sinks }
    }

    /// Delivers `e` to every sink.
    pub fn emit(&self, e: &Event) {
        for s in &self.sinks {
            s.event(e);
        }
    }
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("sinks", &self.sinks.len())
            .finish()
    }
}

mod states;

pub use states::{Phase, UnitState, UnitStates};

/// A sink that keeps every event it receives, for the tests of any module.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Collect(pub(crate) parking_lot::Mutex<Vec<Event>>);

#[cfg(test)]
impl Sink for Collect {
    fn event(&self, e: &Event) {
        self.0.lock().push(e.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(service: &str, generation: u64) -> Unit {
        Unit::new("ctx", service, generation)
    }

    #[test]
    fn two_hubs_do_not_see_each_others_events() {
        let a = Arc::new(Collect::default());
        let b = Arc::new(Collect::default());
        let states_a = Arc::new(UnitStates::default());
        let states_b = Arc::new(UnitStates::default());
        let hub_a = Events::new(vec![a.clone(), states_a.clone()]);
        let hub_b = Events::new(vec![b.clone(), states_b.clone()]);
        hub_a.emit(&Event::Started { unit: unit("x", 1) });
        hub_b.emit(&Event::Finalized { unit: unit("y", 3) });
        assert_eq!(*a.0.lock(), vec![Event::Started { unit: unit("x", 1) }]);
        assert_eq!(*b.0.lock(), vec![Event::Finalized { unit: unit("y", 3) }]);
        let sa = states_a.snapshot();
        let sb = states_b.snapshot();
        assert_eq!(
            sa.keys().collect::<Vec<_>>(),
            vec![&("ctx".into(), "x".into())]
        );
        assert_eq!(
            sb.keys().collect::<Vec<_>>(),
            vec![&("ctx".into(), "y".into())]
        );
    }

    /// Two hosts in one process, each a context with its own hub, run to
    /// their end at the same time: each hub holds its own context's
    /// lifecycle and nothing of the other's.
    #[test]
    fn two_hosts_in_one_process_record_to_their_own_hubs() {
        use std::sync::atomic::{AtomicBool, AtomicU8};
        use std::sync::mpsc;
        use std::time::Duration;

        use crate::instance::{ContextShared, Wake};
        use crate::plan::ContextPlan;
        use crate::runtime::{ContextEvent, RunningContext, StartGate};
        use crate::supervision::watchdog::Watchdog;
        use crate::threads::Spawner;

        let host = |name: &str| {
            let seen = Arc::new(Collect::default());
            let events = Arc::new(Events::new(vec![seen.clone()]));
            let shared = Arc::new(ContextShared {
                name: name.into(),
                level: AtomicU8::new(0),
                stop: Arc::new(AtomicBool::new(false)),
                fatal: AtomicBool::new(false),
                wake: Wake::default(),
                dataframes: Vec::new(),
                all_dataframes: Arc::new(Vec::new()),
                events: Arc::clone(&events),
                router: Arc::new(crate::messaging::InProcess::new(Arc::default())),
                cancel: crate::messaging::Cancel::default(),
                flows: Arc::default(),
            });
            let plan = ContextPlan {
                shared: Arc::clone(&shared),
                period: Duration::from_millis(1),
                strategy: Default::default(),
                units: Vec::new(),
                steps: Vec::new(),
            };
            let (tx, rx) = mpsc::channel();
            let watchdog = Watchdog::new(None, 1, Arc::clone(&events), || {});
            let threads = Arc::new(Spawner::new(events, || {}));
            let core =
                RunningContext::new(0, plan, Arc::new(StartGate::new(1)), tx, watchdog, threads);
            (seen, shared, core, rx)
        };
        let hosts = [host("a"), host("b")];
        for (_, _, core, _) in &hosts {
            core.start().expect("a driver thread");
        }
        // A deadline that only fails a hung test.
        let wait = |rx: &mpsc::Receiver<ContextEvent>, want: fn(&ContextEvent) -> bool| loop {
            let e = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("the context reports");
            if want(&e) {
                break;
            }
        };
        for (_, shared, _, rx) in &hosts {
            wait(rx, |e| matches!(e, ContextEvent::AllReady));
            shared.request_stop();
        }
        for (_, _, _, rx) in &hosts {
            wait(rx, |e| matches!(e, ContextEvent::Ended(_)));
        }
        for (seen, shared, _, _) in &hosts {
            let context = shared.name.clone();
            assert_eq!(
                *seen.0.lock(),
                vec![
                    Event::ContextReady {
                        context: context.clone()
                    },
                    Event::ContextStopping {
                        context: context.clone()
                    },
                    Event::ContextEnded { context },
                ]
            );
        }
    }
}
