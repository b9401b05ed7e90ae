//! `otools run MANIFEST`: load, validate, build, then run until every
//! context has ended or a signal arrives. Signals are handled from the
//! start (see [`crate::signals`]): a first signal while loading stops
//! before anything runs, with code 0.

use std::sync::Arc;

use clap::Args;
use otools_abi::LogLevel;
use tracing_subscriber::EnvFilter;

use super::{LogArgs, ManifestArgs, exit, print_errors};
use crate::control;
use crate::event::{Events, Sink, UnitStates};
use crate::logging::{self, directive};
use crate::manifest::flow::RunMode;
use crate::manifest::{self, Diagnostics, Manifest};
use crate::plan::{self, Options};
use crate::signals;
use crate::supervision::journal::Journal;

/// Run a deployment.
#[derive(Debug, Args)]
pub struct RunCommand {
    /// The manifest and where its plugins are.
    #[command(flatten)]
    pub manifest: ManifestArgs,
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
    /// Do not watch plugin files for changes (no hot reload).
    #[arg(long)]
    pub no_watch: bool,
    /// Append one JSON line per lifecycle event (started, failed, hung,
    /// restarting, gave_up, fenced_call, finalized, reload_attempted,
    /// reload_ok, reload_rejected, ...) to this file.
    #[arg(long, value_name = "FILE")]
    pub events: Option<std::path::PathBuf>,
    /// How every flow's run starts: `restart` (a new run), `recover` (the
    /// latest run again: succeeded steps skipped, failed and interrupted
    /// ones rerun) or `continue` (its pending work only). Overrides each
    /// flow's `mode`.
    #[arg(long, value_name = "MODE", value_parser = parse_mode)]
    pub mode: Option<RunMode>,
    /// A bounded run of the flows: each flow's run ends once it is idle
    /// (nothing running, nothing that can start now) instead of waiting
    /// for pending delays, retries or raised events (`keep_open`). Work
    /// left outstanding is reported (a WARNING and a `flow_incomplete`
    /// event) and the exit code is 4; `--mode continue` takes it up.
    /// Refused for a manifest without flows.
    #[arg(long)]
    pub once: bool,
    /// With `--mode recover|continue`: the run to take up (default: the latest).
    #[arg(long, value_name = "ID")]
    pub run: Option<String>,
}

fn parse_mode(s: &str) -> Result<RunMode, String> {
    match s {
        "restart" => Ok(RunMode::Restart),
        "recover" => Ok(RunMode::Recover),
        "continue" => Ok(RunMode::Continue),
        _ => Err(String::from("expected `restart`, `recover` or `continue`")),
    }
}

/// The subscriber filter, and the level every context is forced to (if any).
fn filters(log: &LogArgs, m: &Manifest) -> Result<(EnvFilter, Option<LogLevel>), String> {
    let custom = |s: &str| {
        EnvFilter::try_new(s)
            .map(|f| (f, Some(LogLevel::Verbose)))
            .map_err(|e| format!("invalid log filter `{s}`: {e}"))
    };
    if let Some(s) = &log.log_level {
        return match LogLevel::parse(s) {
            Some(l) => Ok((EnvFilter::new(directive(l)), Some(l))),
            None => custom(s),
        };
    }
    if let Ok(env) = std::env::var("RUST_LOG")
        && !env.trim().is_empty()
    {
        return custom(&env);
    }
    let host = m.host_level();
    let most_verbose = m
        .contexts
        .iter()
        .filter_map(|c| c.log_level.as_ref().map(|l| l.get_ref().0))
        .chain(
            m.flows
                .iter()
                .filter_map(|f| f.log_level.as_ref().map(|l| l.get_ref().0)),
        )
        .fold(host, std::cmp::min);
    Ok((
        EnvFilter::new(format!(
            "{},plugin={}",
            directive(host),
            directive(most_verbose)
        )),
        None,
    ))
}

/// Reports the manifest's problems and returns the exit code: every failure
/// before anything starts ends with `N error(s); nothing was started`.
fn refuse(errors: &Diagnostics) -> u8 {
    print_errors(errors, "; nothing was started");
    exit::CONFIG_ERROR
}

/// Like [`refuse`], for one problem that is not in the manifest.
fn refuse_one(message: &str) -> u8 {
    eprintln!("error: {message}\n1 error(s); nothing was started");
    exit::CONFIG_ERROR
}

impl RunCommand {
    /// Runs the deployment; returns the exit code.
    pub fn execute(&self) -> u8 {
        // First of all, so that a signal while the manifest is read or the
        // plugins load stops the host cleanly instead of killing it.
        if let Err(e) = signals::install() {
            eprintln!("error: cannot create a thread to watch for signals: {e}");
            return exit::CANNOT_SPAWN;
        }
        let m = match manifest::load(&self.manifest.manifest) {
            Ok(m) => m,
            Err(d) => return refuse(&d),
        };
        if let Some(sig) = signals::requested() {
            eprintln!(
                "received {} while reading the manifest: stopped before anything ran",
                signals::name(sig)
            );
            return exit::OK;
        }
        // Before any plugin loads: one host per manifest. Removed on return.
        let socket = match control::Bound::bind(&m.path) {
            Ok(s) => s,
            Err(e) => return refuse_one(&format!("{}: {e}", m.path.display())),
        };
        let (filter, level_override) = match filters(&self.log, &m) {
            Ok(f) => f,
            Err(e) => return refuse_one(&e),
        };
        logging::init(self.log.log_format, filter);
        if socket.replaced_stale {
            tracing::warn!(
                "replaced the control socket {}, left by a host that no longer runs",
                socket.path().display()
            );
        }
        // The host's events: the latest state of every unit (for `otools
        // status`), and the `--events` file when asked for.
        let states = Arc::new(UnitStates::default());
        let mut sinks: Vec<Arc<dyn Sink>> = vec![Arc::clone(&states) as Arc<dyn Sink>];
        let mut journal = None;
        if let Some(path) = &self.events {
            match Journal::open(path) {
                Ok(j) => {
                    let j = Arc::new(j);
                    sinks.push(Arc::clone(&j) as Arc<dyn Sink>);
                    journal = Some(j);
                }
                Err(e) => {
                    return refuse_one(&format!(
                        "cannot open the event journal {}: {e}",
                        path.display()
                    ));
                }
            }
        }
        let opts = Options {
            plugin_dir: self.manifest.plugin_dir.clone(),
            level_override,
            verbose: self.manifest.verbose,
            events: Arc::new(Events::new(sinks)),
        };
        let mut deployment = match plan::build(&m, &opts) {
            Ok(d) => d,
            Err(d) => return refuse(&d),
        };
        if let Some(sig) = signals::requested() {
            // Returning drops the deployment: the instances built so far and
            // the loaded plugins are released the normal way.
            tracing::info!(
                "received {} while loading the plugins: stopped before anything ran",
                signals::name(sig)
            );
            return exit::OK;
        }
        let (contexts, services, triggers, _) = deployment.counts();
        tracing::info!(
            "starting {}: {contexts} context(s), {services} service(s), {triggers} trigger(s), {} plugin librar{}",
            m.path.display(),
            deployment.libraries,
            if deployment.libraries == 1 {
                "y"
            } else {
                "ies"
            }
        );
        if self.no_watch {
            deployment.reload.watch = false;
        }
        if self.once && deployment.flows.is_empty() {
            return refuse_one(&format!(
                "{}: --once bounds the run of flows, and the manifest has no [[flow]]",
                m.path.display()
            ));
        }
        for f in &mut deployment.flows {
            if let Some(mode) = self.mode {
                f.mode = mode;
            }
            f.run_id.clone_from(&self.run);
            f.once = self.once;
        }
        let control = control::Setup {
            socket,
            manifest: std::fs::canonicalize(&m.path).unwrap_or_else(|_| m.path.clone()),
            states,
        };
        let code = crate::host::run(deployment, Some(control));
        if let Some(j) = &journal {
            j.finish();
        }
        code
    }
}
