//! `otools raise MANIFEST EVENT [--sequence S] [--flow F]`: a flow event
//! raised in the host running that manifest, through its control socket,
//! as if an association had raised it (journaled, stored, a duplicate for a
//! sequence that already had it).

use std::io::Write as _;
use std::path::PathBuf;

use clap::Args;

use super::{CLIENT_EXIT_CODES, ask, exit};
use crate::control::Request;

/// Raise a flow event in a running host.
#[derive(Debug, Args)]
#[command(after_help = CLIENT_EXIT_CODES)]
pub struct RaiseCommand {
    /// The manifest the host runs.
    pub manifest: PathBuf,
    /// A plain event of one of its flows (not an expression event).
    pub event: String,
    /// The sequence the event is raised for (as in `start = ["event/sequence"]`).
    #[arg(long, default_value = "0")]
    pub sequence: String,
    /// The flow; needed only when several flows declare the event.
    #[arg(long)]
    pub flow: Option<String>,
}

impl RaiseCommand {
    /// Raises the event; returns the exit code.
    pub fn execute(&self) -> u8 {
        let request = Request::Raise {
            event: self.event.clone(),
            flow: self.flow.clone(),
            sequence: self.sequence.clone(),
        };
        let (reply, _) = match ask(&self.manifest, request) {
            Ok(r) => r,
            Err(code) => return code,
        };
        let flow = reply.result["flow"].as_str().unwrap_or_default();
        let _ = writeln!(
            std::io::stdout(),
            "raised `{}` for sequence {} in flow {}",
            self.event.escape_debug(),
            self.sequence.escape_debug(),
            flow.escape_debug()
        );
        exit::OK
    }
}
