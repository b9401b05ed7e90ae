//! `otools stop MANIFEST`: the same graceful stop as SIGTERM for the host
//! running that manifest, asked through its control socket; waits until
//! that host has exited unless `--no-wait`.

use std::io::Write as _;
use std::path::PathBuf;

use clap::Args;

use super::{CLIENT_EXIT_CODES, ask, exit};
use crate::control::{Request, wait_closed};

/// Stop a running host gracefully.
#[derive(Debug, Args)]
#[command(after_help = CLIENT_EXIT_CODES)]
pub struct StopCommand {
    /// The manifest the host runs.
    pub manifest: PathBuf,
    /// Return once the host has begun stopping, without waiting for it to exit.
    #[arg(long)]
    pub no_wait: bool,
}

impl StopCommand {
    /// Asks the host to stop (and waits for it); returns the exit code.
    pub fn execute(&self) -> u8 {
        let (reply, stream) = match ask(&self.manifest, Request::Stop) {
            Ok(r) => r,
            Err(code) => return code,
        };
        let _ = writeln!(
            std::io::stdout(),
            "stopping the host of {} (pid {})",
            self.manifest.display(),
            reply.pid
        );
        if !self.no_wait {
            wait_closed(stream);
            let _ = writeln!(std::io::stdout(), "the host (pid {}) has exited", reply.pid);
        }
        exit::OK
    }
}
