//! What `otools status` shows of a flow: its run, mode and state, per step
//! the activations waiting, running, succeeded and failed, the pending
//! delays and the pools in use.
//!
//! The coordinator owns the run's state; it publishes a [`FlowStatus`]
//! snapshot after every message it handles (a step's end, a raised event,
//! a fired delay), which the control thread reads without waiting for it.
//! The counts of succeeded and failed activations are those of this host
//! process (a recovered run's earlier successes are in the run store:
//! `otools flow show`).

use serde::{Deserialize, Serialize};

/// One flow in `otools status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowStatus {
    /// The flow's name.
    pub name: String,
    /// The id of its run.
    pub run: String,
    /// `restart`, `recover` or `continue`.
    pub mode: String,
    /// `running`, `stopping` (no new step starts), or `finished`.
    pub state: String,
    /// Once finished: `success`, `failure` or `stopped`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// Every step, in manifest order.
    pub steps: Vec<StepStatus>,
    /// Delays not yet fired.
    pub pending_delays: usize,
    /// Every pool, in manifest order.
    pub pools: Vec<PoolStatus>,
}

/// One step of a [`FlowStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepStatus {
    /// Its name.
    pub name: String,
    /// Activations waiting for a slot (`max_concurrent`, a pool).
    pub waiting: usize,
    /// Activations running now.
    pub running: u32,
    /// Activations that succeeded in this host process.
    pub succeeded: u64,
    /// Activations that failed in this host process (each attempt counts).
    pub failed: u64,
}

/// One pool of a [`FlowStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStatus {
    /// Its name.
    pub name: String,
    /// Units held by running steps.
    pub in_use: u32,
    /// Its `limit`.
    pub limit: u32,
}

impl FlowStatus {
    /// The flow's line in `otools status`, and its table's header and rows
    /// (one per step).
    pub fn text(&self) -> (String, [&'static str; 5], Vec<Vec<String>>) {
        let state = match &self.result {
            Some(r) => format!("{} ({r})", self.state),
            None => self.state.clone(),
        };
        let pools = if self.pools.is_empty() {
            String::new()
        } else {
            let shown: Vec<String> = self
                .pools
                .iter()
                .map(|p| format!("{} {}/{}", p.name.escape_debug(), p.in_use, p.limit))
                .collect();
            format!(", pools: {}", shown.join(", "))
        };
        let line = format!(
            "flow {}: {state}, run {} ({}), {} pending delay(s){pools}",
            self.name.escape_debug(),
            self.run.escape_debug(),
            self.mode,
            self.pending_delays
        );
        let rows = self
            .steps
            .iter()
            .map(|s| {
                vec![
                    s.name.escape_debug().to_string(),
                    s.waiting.to_string(),
                    s.running.to_string(),
                    s.succeeded.to_string(),
                    s.failed.to_string(),
                ]
            })
            .collect();
        (
            line,
            ["STEP", "WAITING", "RUNNING", "SUCCEEDED", "FAILED"],
            rows,
        )
    }
}
