//! `otools flow show STORE [--run ID] [--json]`: reads a flow run store
//! directly (read-only: no host needed, and safe beside a running one) and
//! prints its runs and, for one run (default: the newest), every task and
//! the pending delays (`flow/show.rs` reads them).

use std::io::Write as _;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::exit;
use super::status::table;
use crate::flow::show::{self, StoreReport};

/// The exit codes of `flow show`, in its `--help`.
const FLOW_SHOW_EXIT_CODES: &str = "\
Exit codes:
  0    shown
  1    the store cannot be shown: no such file, not a run store, a newer
       schema, or an unknown --run";

/// Work with flow run stores.
#[derive(Debug, Args)]
pub struct FlowCommand {
    /// What to do.
    #[command(subcommand)]
    pub command: FlowSubcommand,
}

/// The `flow` subcommands.
#[derive(Debug, Subcommand)]
pub enum FlowSubcommand {
    /// Show a run store's runs and, for one run (default: the newest), every
    /// task (step, sequence, attempt, status, error) and the pending delays.
    ///
    /// The file is opened read-only: it can be read while a host runs on it.
    #[command(after_help = FLOW_SHOW_EXIT_CODES)]
    Show(FlowShow),
}

/// `flow show`'s arguments.
#[derive(Debug, Args)]
pub struct FlowShow {
    /// The run store file (a flow's `store`).
    pub store: PathBuf,
    /// The run to show in detail (default: the newest).
    #[arg(long, value_name = "ID")]
    pub run: Option<String>,
    /// Print one JSON object: `store`, `runs`, and `shown` (`run`, `tasks`,
    /// `pending_delays`; null without runs).
    #[arg(long)]
    pub json: bool,
}

impl FlowCommand {
    /// Runs the subcommand; returns the exit code.
    pub fn execute(&self) -> u8 {
        match &self.command {
            FlowSubcommand::Show(s) => s.execute(),
        }
    }
}

impl FlowShow {
    fn execute(&self) -> u8 {
        let report = match show::read(&self.store, self.run.as_deref()) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::RUNTIME_FAILURE;
            }
        };
        let out = if self.json {
            match serde_json::to_string(&report) {
                Ok(s) => s + "\n",
                Err(e) => {
                    eprintln!("error: {e}");
                    return exit::RUNTIME_FAILURE;
                }
            }
        } else {
            text(&report)
        };
        let _ = std::io::stdout().write_all(out.as_bytes());
        exit::OK
    }
}

/// The report as tables: the runs, then the shown run's tasks and delays.
fn text(r: &StoreReport) -> String {
    let mut out = format!("run store {}: {} run(s)\n", r.store, r.runs.len());
    let or_dash =
        |s: Option<&str>| s.map_or_else(|| String::from("-"), |s| s.escape_debug().to_string());
    let rows: Vec<Vec<String>> = r
        .runs
        .iter()
        .map(|run| {
            vec![
                run.id.escape_debug().to_string(),
                run.flow.escape_debug().to_string(),
                show::rfc3339(run.started_ms),
                run.recovery.to_string(),
                run.state.clone(),
                or_dash(run.result.as_deref()),
            ]
        })
        .collect();
    table(
        &mut out,
        &["RUN", "FLOW", "STARTED", "RECOVERY", "STATE", "RESULT"],
        &rows,
    );
    if let Some(d) = &r.shown {
        out.push_str(&format!(
            "run {}: {} task(s)\n",
            d.run.escape_debug(),
            d.tasks.len()
        ));
        let rows: Vec<Vec<String>> = d
            .tasks
            .iter()
            .map(|t| {
                vec![
                    t.step.escape_debug().to_string(),
                    t.sequence.escape_debug().to_string(),
                    t.attempt.to_string(),
                    t.status.clone(),
                    or_dash(t.error.as_deref()),
                ]
            })
            .collect();
        table(
            &mut out,
            &["STEP", "SEQUENCE", "ATTEMPT", "STATUS", "ERROR"],
            &rows,
        );
        out.push_str(&format!("pending delays: {}\n", d.pending_delays.len()));
        if !d.pending_delays.is_empty() {
            let rows: Vec<Vec<String>> = d
                .pending_delays
                .iter()
                .map(|x| {
                    vec![
                        x.kind.clone(),
                        x.target.escape_debug().to_string(),
                        x.sequence.escape_debug().to_string(),
                        x.due.clone(),
                    ]
                })
                .collect();
            table(&mut out, &["KIND", "TARGET", "SEQUENCE", "DUE"], &rows);
        }
    }
    out
}
