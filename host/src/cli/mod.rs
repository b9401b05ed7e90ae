//! The command line: `otools run`, `otools check`, `otools inspect`, and
//! `otools status`, `otools send`, `otools raise` and `otools stop`, which
//! talk to a running host.
//!
//! clap parses the raw arguments into these structs; each subcommand is an
//! `XCommand` with an `execute()` that returns the process exit code.

mod check;
mod inspect;
mod raise;
mod run;
mod send;
mod status;
mod stop;

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

pub use check::CheckCommand;
pub use inspect::InspectCommand;
pub use raise::RaiseCommand;
pub use run::RunCommand;
pub use send::SendCommand;
pub use status::StatusCommand;
pub use stop::StopCommand;

use crate::logging::LogFormat;

/// Exit codes, documented in `--help` and the README (defined in [`crate::exit`]).
pub use crate::exit;

const EXIT_CODES: &str = "\
Exit codes:
  0    every context ended and was finalized (also after a first SIGINT, SIGTERM
       or SIGHUP, and when one came before anything ran)
  1    runtime failure: a service logged at fatal, or ended in failure (gave up,
       or failed with restart = \"never\"), or a flow failed (unhandled step failure)
  2    nothing ran: manifest or plugin error (check: problems found), an invalid
       --log-level, the --events file cannot be opened, another host already
       runs this manifest (\"already running (pid N)\") or its control socket
       cannot be created, a flow's run store cannot be used, or --mode
       recover/continue found nothing to take up
  3    stopped, but something was abandoned: a finalize, or a loop or main call,
       overran shutdown_timeout, or a context overran its shutdown budget
  71   the host could not create a thread it needs (the system's thread limit)
  75   a service gave up with on_give_up = \"exit_host\" (for systemd to restart the host)
  76   a leak ceiling was reached: hot reloads loaded max_loaded_libraries
       versions, or max_abandoned_threads threads were abandoned; stopped
       cleanly for systemd to restart the host
  130  a second SIGINT, SIGTERM or SIGHUP: exited at once";

/// The exit codes of `status`, `send` and `stop`, in their `--help`.
const CLIENT_EXIT_CODES: &str = "\
Exit codes:
  0    done (send: the message was queued, or the reply came; raise: the event
       was stored)
  1    no host runs this manifest, the host did not answer, or it refused the
       request (send: unknown target or message name, a payload that is not
       JSON or not of the declared type, a full mailbox, no reply in time, ...;
       raise: unknown event or flow, no flow in this host, a finished run)";

/// How long `status` and `stop` wait for the host's reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// otools: run OTools-style deployments of Rust plugins.
#[derive(Debug, Parser)]
#[command(
    name = "otools",
    version,
    about = "Run OTools-style deployments: contexts of services and triggers from Rust plugin libraries, described in a TOML manifest",
    after_help = EXIT_CODES
)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a deployment until every context has ended, a signal or `otools
    /// stop` arrives, or `[host] exit_when` is met.
    ///
    /// Signals: SIGINT, SIGTERM and SIGHUP are handled from the start. The
    /// first one stops cleanly: while the plugins are still loading, before
    /// anything runs; once running, every context stops and finalizes its
    /// instances (exit code 0 unless something else failed). SIGHUP is the
    /// same graceful stop as SIGTERM (no reload: hot reload follows the
    /// plugin files). A second signal exits at once with code 130.
    ///
    /// While it runs, the host answers `otools status`, `otools send`, `otools raise` and `otools stop` on a
    /// control socket derived from the manifest's path
    /// (`$XDG_RUNTIME_DIR/otools/<hash>.sock`, else
    /// `/tmp/otools-<uid>/<hash>.sock`; mode 0600, removed at exit). A second `run` of the same manifest is
    /// refused with "already running (pid N)" (exit code 2); a socket left by
    /// a killed host is replaced.
    #[command(after_help = EXIT_CODES)]
    Run(RunCommand),
    /// Parse and validate a manifest, load every plugin and build every
    /// instance with its config (without running setup); report all problems.
    #[command(after_help = EXIT_CODES)]
    Check(CheckCommand),
    /// Show a plugin library's interface version and exports.
    Inspect(InspectCommand),
    /// Show the state of every context and unit of the host running a
    /// manifest (through its control socket).
    ///
    /// For each unit: its state, generation, restarts, reloads and last
    /// failure, and for a service with a mailbox its depth (messages queued
    /// now), high-water mark and messages handled. `--json` prints one JSON
    /// object.
    Status(StatusCommand),
    /// Send a message to a service of the host running a manifest (through
    /// its control socket), as the sender `control`.
    ///
    /// It is checked as a service's own send: an unknown target or message
    /// name, a payload of another type than the one declared, and a mailbox
    /// that stays full are refused with a clear error (exit code 1). Without
    /// `--request` it returns once the message is queued; with it, it waits
    /// for the handler's reply and prints it as JSON.
    Send(SendCommand),
    /// Raise a flow event in the host running a manifest (through its
    /// control socket), as the sender `control`.
    ///
    /// The event must be a plain event of one of its flows (`--flow` when
    /// several declare it); it is raised for `--sequence` (default `0`) and
    /// committed to the flow's run store before the command returns.
    /// Raising it again for the same sequence is a journaled duplicate. An
    /// unknown event or flow, a host without flows, or a flow whose run has
    /// finished is refused (exit code 1). A `keep_open` flow waits for such
    /// events when idle.
    Raise(RaiseCommand),
    /// Stop the host running a manifest, gracefully, as SIGTERM does
    /// (through its control socket), and wait until it has exited.
    ///
    /// Every context stops and finalizes its instances, and the host exits
    /// with the same code as after a first SIGTERM. This does not count as a
    /// signal: a second SIGTERM after it is still a first one.
    Stop(StopCommand),
}

/// Sends `request` to the host running `manifest` and returns its reply and
/// the connection; or reports why not and returns the exit code.
fn ask(
    manifest: &Path,
    request: crate::control::Request,
) -> Result<(crate::control::Reply, UnixStream), u8> {
    ask_within(manifest, request, REPLY_TIMEOUT)
}

/// [`ask`], waiting at most `timeout` for the reply.
fn ask_within(
    manifest: &Path,
    request: crate::control::Request,
    timeout: Duration,
) -> Result<(crate::control::Reply, UnixStream), u8> {
    use crate::control::{ClientError, request as send, socket_path};
    let socket = match socket_path(manifest) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("error: {}: manifest not found", manifest.display());
            return Err(exit::RUNTIME_FAILURE);
        }
        Err(e) => {
            eprintln!("error: {}: {e}", manifest.display());
            return Err(exit::RUNTIME_FAILURE);
        }
    };
    match send(&socket, request, timeout) {
        Ok((reply, _)) if !reply.ok => {
            eprintln!(
                "error: the host (pid {}) refused: {}",
                reply.pid,
                reply.error.as_deref().unwrap_or("no reason given")
            );
            Err(exit::RUNTIME_FAILURE)
        }
        Ok(answer) => Ok(answer),
        Err(ClientError::NoHost { socket }) => {
            eprintln!(
                "error: no running host for {} (socket {})",
                manifest.display(),
                socket.display()
            );
            Err(exit::RUNTIME_FAILURE)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Err(exit::RUNTIME_FAILURE)
        }
    }
}

/// Prints every diagnostic, then `N error(s)` followed by `closing`, to
/// standard error in one buffered write (one line per write made a long
/// report slow).
fn print_errors(errors: &crate::manifest::Diagnostics, closing: &str) {
    use std::io::Write as _;
    let mut text = errors.to_string();
    text.push_str(&format!("\n{} error(s){closing}\n", errors.0.len()));
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// Options shared by the commands that read a manifest.
#[derive(Debug, Args)]
pub struct ManifestArgs {
    /// The deployment manifest (TOML).
    pub manifest: PathBuf,
    /// Look up `plugin = "name"` in this folder instead of `[host] plugin_dir`.
    #[arg(long, value_name = "DIR")]
    pub plugin_dir: Option<PathBuf>,
    /// Show abi_stable's full report when a plugin's layout does not match.
    #[arg(short, long)]
    pub verbose: bool,
}

/// Options that choose what is logged and how.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// A level (verbose, debug, info, warning, error, fatal) for the host and
    /// every context, overriding the manifest; or a RUST_LOG-style filter
    /// such as "info,plugin=debug" (plugin messages have target `plugin`).
    /// Without it, RUST_LOG is used if set.
    #[arg(long, value_name = "LEVEL|FILTER")]
    pub log_level: Option<String>,
    /// Log line format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}
