//! `otools send MANIFEST TARGET NAME [--payload JSON] [--request]`: a message
//! to a service of the host running that manifest, through its control
//! socket; with `--request`, waits for the reply and prints it as JSON.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{CLIENT_EXIT_CODES, REPLY_TIMEOUT, ask_within, exit};
use crate::control::{MAX_REQUEST_TIMEOUT, Request};

/// Send a message to a service of a running host.
#[derive(Debug, Args)]
#[command(after_help = CLIENT_EXIT_CODES)]
pub struct SendCommand {
    /// The manifest the host runs.
    pub manifest: PathBuf,
    /// The service: `Context/service`, or a service name only one context uses.
    pub target: String,
    /// The message name (one the service accepts, or SHUTDOWN).
    pub name: String,
    /// The payload, as JSON (`7`, `"text"`, `{"a":[1,2]}`); null without it.
    #[arg(long, value_name = "JSON")]
    pub payload: Option<String>,
    /// Wait for the reply and print it as JSON on standard output.
    #[arg(long)]
    pub request: bool,
    /// With --request, how long to wait for the reply (default 5s); without,
    /// how long to wait for room in a full mailbox (default 1s). At most 60s.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
}

impl SendCommand {
    /// Sends the message (and waits for the reply); returns the exit code.
    pub fn execute(&self) -> u8 {
        let payload = match self.payload.as_deref().map(serde_json::from_str) {
            None => serde_json::Value::Null,
            Some(Ok(p)) => p,
            Some(Err(e)) => {
                eprintln!("error: --payload is not valid JSON: {e}");
                return exit::RUNTIME_FAILURE;
            }
        };
        if self.timeout.is_some_and(|t| t > MAX_REQUEST_TIMEOUT) {
            eprintln!(
                "error: --timeout must be at most {}",
                humantime::format_duration(MAX_REQUEST_TIMEOUT)
            );
            return exit::RUNTIME_FAILURE;
        }
        let request = Request::Send {
            to: self.target.clone(),
            name: self.name.clone(),
            payload,
            request: self.request,
            timeout_ms: self
                .timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        };
        let within = REPLY_TIMEOUT + self.timeout.unwrap_or(MAX_REQUEST_TIMEOUT);
        let (reply, _) = match ask_within(&self.manifest, request, within) {
            Ok(r) => r,
            Err(code) => return code,
        };
        let mut out = std::io::stdout();
        if self.request {
            let _ = writeln!(out, "{}", reply.result);
        } else {
            let _ = writeln!(
                out,
                "queued `{}` for {}",
                self.name.escape_debug(),
                self.target.escape_debug()
            );
        }
        exit::OK
    }
}
