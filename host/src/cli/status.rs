//! `otools status [--json] MANIFEST`: the state of every context and unit
//! of the host running that manifest (with its mailbox, if it has one), of
//! every pipeline (`control::pipelines`), and of every flow
//! (`FlowStatus::text` in `flow/status.rs` gives its line and rows), asked
//! through its control socket.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;

use clap::Args;

use super::{CLIENT_EXIT_CODES, ask, exit};
use crate::control::{Request, Status, pipelines};

/// Show the state of a running host.
#[derive(Debug, Args)]
#[command(after_help = CLIENT_EXIT_CODES)]
pub struct StatusCommand {
    /// The manifest the host runs.
    pub manifest: PathBuf,
    /// Print the status as one JSON object (the reply's `result`).
    #[arg(long)]
    pub json: bool,
}

impl StatusCommand {
    /// Asks the host and prints its answer; returns the exit code.
    pub fn execute(&self) -> u8 {
        let (reply, _) = match ask(&self.manifest, Request::Status) {
            Ok(r) => r,
            Err(code) => return code,
        };
        if self.json {
            let _ = writeln!(std::io::stdout(), "{}", reply.result);
            return exit::OK;
        }
        match serde_json::from_value::<Status>(reply.result) {
            Ok(status) => {
                let _ = std::io::stdout().write_all(text(&status).as_bytes());
                exit::OK
            }
            Err(e) => {
                eprintln!("error: unreadable status from the host: {e}");
                exit::RUNTIME_FAILURE
            }
        }
    }
}

/// The status as a table per context, names and failures escaped. The
/// mailbox columns (DEPTH, HIGH-WATER, HANDLED) are shown when some unit
/// of the host has a mailbox, with `-` for the units that have none.
fn text(status: &Status) -> String {
    let mut out = format!(
        "host: pid {}, {}, {}\n",
        status.pid, status.state, status.manifest
    );
    let mailboxes = status
        .contexts
        .iter()
        .any(|c| c.units.iter().any(|u| u.mailbox.is_some()));
    let mut header = vec!["UNIT", "KIND", "STATE", "GENERATION", "RESTARTS", "RELOADS"];
    if mailboxes {
        header.extend(["DEPTH", "HIGH-WATER", "HANDLED"]);
    }
    header.push("LAST FAILURE");
    for c in &status.contexts {
        let _ = writeln!(out, "context {}: {}", c.name.escape_debug(), c.state);
        let rows: Vec<Vec<String>> = c
            .units
            .iter()
            .map(|u| {
                let mut row = vec![
                    u.name.escape_debug().to_string(),
                    u.kind.clone(),
                    u.state.clone(),
                    u.generation.to_string(),
                    u.restarts.to_string(),
                    u.reloads.to_string(),
                ];
                if mailboxes {
                    match &u.mailbox {
                        Some(m) => row.extend([
                            m.depth.to_string(),
                            m.high_water.to_string(),
                            m.handled.to_string(),
                        ]),
                        None => row.extend(["-", "-", "-"].map(String::from)),
                    }
                }
                row.push(
                    u.last_failure
                        .as_deref()
                        .map_or_else(|| String::from("-"), |f| f.escape_debug().to_string()),
                );
                row
            })
            .collect();
        table(&mut out, &header, &rows);
    }
    for f in &status.flows {
        let (line, header, rows) = f.text();
        let _ = writeln!(out, "{line}");
        table(&mut out, &header, &rows);
    }
    out.push_str(&pipelines::text(&status.pipelines));
    out
}

/// `rows` under `header`, in columns; the last column is not padded.
pub(super) fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut l = String::from(" ");
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                l.push(' ');
                l.push_str(cell);
            } else {
                let _ = write!(l, " {cell:<w$}");
            }
        }
        l.push('\n');
        l
    };
    out.push_str(&line(header));
    for row in rows {
        out.push_str(&line(&row.iter().map(String::as_str).collect::<Vec<_>>()));
    }
}
