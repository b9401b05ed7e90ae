//! The pipelines part of `status`: each pipeline's state, and for each of
//! its stages the workers (state, generation, restarts, reloads), the input queue
//! (depth, high-water mark, capacity) and the item counts, with the text
//! table `otools status` prints for them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::event::{Figures, UnitState};
use crate::pipeline::{RunningPipeline, worker_name};

/// One pipeline in a [`super::Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineStatus {
    /// Its name.
    pub name: String,
    /// `running`, `stopping` (draining), `finished` or `abandoned`.
    pub state: String,
    /// Its stages, source first.
    pub stages: Vec<StageStatus>,
}

/// One stage of a [`PipelineStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageStatus {
    /// Its name.
    pub name: String,
    /// `source`, `transform` or `sink`.
    pub role: String,
    /// Its queue and item counts, as `stage_stats` has them (the same keys).
    #[serde(flatten)]
    pub figures: Figures,
    /// Its workers, by index.
    pub workers: Vec<WorkerStatus>,
}

/// One worker of a [`StageStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// `<stage>.<index>`, as logs and the journal name it.
    pub name: String,
    /// `pending` until its first instance is set up, then the phase its
    /// latest event gave it (`serving`, `restarting`, `finalized`, ...).
    pub state: String,
    /// Its newest generation (1 for its first instance).
    pub generation: u64,
    /// Restarts decided for it since the host started.
    pub restarts: u64,
    /// New instances a hot reload set up for it and did not roll back.
    pub reloads: u64,
    /// The reason of its latest failure, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
}

/// The status of `pipes`, their workers' states taken from `states`.
pub fn status(
    pipes: &[Arc<RunningPipeline>],
    states: &BTreeMap<(String, String), UnitState>,
) -> Vec<PipelineStatus> {
    pipes
        .iter()
        .map(|p| {
            let stages = p
                .snapshot()
                .into_iter()
                .map(|st| {
                    let workers = st
                        .generations
                        .iter()
                        .enumerate()
                        .map(|(w, &generation)| {
                            let name = worker_name(&st.stats.stage, w);
                            let known = states.get(&(p.name().to_owned(), name.clone()));
                            WorkerStatus {
                                state: known.map_or("pending", |s| s.phase.name()).into(),
                                generation,
                                restarts: known.map_or(0, |s| s.restarts),
                                reloads: known.map_or(0, |s| s.reloads),
                                last_failure: known.and_then(|s| s.last_failure.clone()),
                                name,
                            }
                        })
                        .collect();
                    StageStatus {
                        name: st.stats.stage,
                        role: st.role.name().into(),
                        figures: st.stats.figures,
                        workers,
                    }
                })
                .collect();
            PipelineStatus {
                name: p.name().to_owned(),
                state: p.state().into(),
                stages,
            }
        })
        .collect()
}

/// `pipeline NAME: STATE`, then one row per stage (its queue and item
/// counts) followed by one indented row per worker; names and failures
/// escaped.
pub fn text(pipes: &[PipelineStatus]) -> String {
    let mut out = String::new();
    for p in pipes {
        let _ = writeln!(out, "pipeline {}: {}", p.name.escape_debug(), p.state);
        let _ = writeln!(
            out,
            "  {:<16} {:<9} {:>7} {:>10} {:>6} {:>10} {:>10} {:>10} {:>7}",
            "STAGE", "ROLE", "QUEUE", "HIGH-WATER", "SIZE", "IN", "DONE", "OUT", "FAILED"
        );
        for s in &p.stages {
            let _ = writeln!(
                out,
                "  {:<16} {:<9} {:>7} {:>10} {:>6} {:>10} {:>10} {:>10} {:>7}",
                s.name.escape_debug().to_string(),
                s.role,
                s.figures.queue_depth,
                s.figures.queue_high_water,
                s.figures.queue_size,
                s.figures.items_in,
                s.figures.items_done,
                s.figures.items_out,
                s.figures.items_failed
            );
            for w in &s.workers {
                let failure = w.last_failure.as_deref().map_or_else(String::new, |f| {
                    format!(" last failure: {}", f.escape_debug())
                });
                let _ = writeln!(
                    out,
                    "    worker {} {} generation {} restarts {} reloads {}{failure}",
                    w.name.escape_debug(),
                    w.state,
                    w.generation,
                    w.restarts,
                    w.reloads
                );
            }
        }
    }
    out
}
