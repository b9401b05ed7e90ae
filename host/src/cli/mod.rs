//! The command line: `otools run`, `otools check`, `otools inspect`.
//!
//! clap parses the raw arguments into these structs; each subcommand is an
//! `XCommand` with an `execute()` that returns the process exit code.

mod check;
mod inspect;
mod run;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use check::CheckCommand;
pub use inspect::InspectCommand;
pub use run::RunCommand;

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
       --log-level, the --events file cannot be opened, a flow's run store
       cannot be used, or --mode recover/continue found nothing to take up
  3    stopped, but something was abandoned: a finalize, or a loop or main call,
       overran shutdown_timeout, or a context overran its shutdown budget
  71   the host could not create a thread it needs (the system's thread limit)
  75   a service gave up with on_give_up = \"exit_host\" (for systemd to restart the host)
  76   a leak ceiling was reached: hot reloads loaded max_loaded_libraries
       versions, or max_abandoned_threads threads were abandoned; stopped
       cleanly for systemd to restart the host
  130  a second SIGINT, SIGTERM or SIGHUP: exited at once";

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
    /// Run a deployment until every context has ended or a signal arrives.
    ///
    /// Signals: SIGINT, SIGTERM and SIGHUP are handled from the start. The
    /// first one stops cleanly: while the plugins are still loading, before
    /// anything runs; once running, every context stops and finalizes its
    /// instances (exit code 0 unless something else failed). SIGHUP is the
    /// same graceful stop as SIGTERM (no reload: hot reload follows the
    /// plugin files). A second signal exits at once with code 130.
    #[command(after_help = EXIT_CODES)]
    Run(RunCommand),
    /// Parse and validate a manifest, load every plugin and build every
    /// instance with its config (without running setup); report all problems.
    #[command(after_help = EXIT_CODES)]
    Check(CheckCommand),
    /// Show a plugin library's interface version and exports.
    Inspect(InspectCommand),
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
