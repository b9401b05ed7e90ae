//! `otools inspect LIBRARY`: what a plugin library is and exports.

use std::io::Write as _;

use std::path::PathBuf;

use clap::Args;
use otools_abi::{ABI_VERSION, ExportKind, StageRole};

use super::exit;
use crate::plugin::loader;

/// Show a library's interface version and exports.
#[derive(Debug, Args)]
pub struct InspectCommand {
    /// The plugin library (`.so`).
    pub library: PathBuf,
    /// Show abi_stable's full report when the layout does not match.
    #[arg(short, long)]
    pub verbose: bool,
}

impl InspectCommand {
    /// Prints the library's description; returns the exit code.
    pub fn execute(&self) -> u8 {
        match loader::load(&self.library, self.verbose) {
            Ok(lib) => {
                let _ = writeln!(std::io::stdout(), "library:    {}", lib.path.display());
                let _ = writeln!(
                    std::io::stdout(),
                    "plugin:     {} {}",
                    lib.name,
                    lib.version
                );
                let _ = writeln!(
                    std::io::stdout(),
                    "otools-abi: {} (host: {ABI_VERSION}, compatible)",
                    lib.abi_version
                );
                let _ = writeln!(
                    std::io::stdout(),
                    "otools-api: {} (not checked)",
                    lib.api_version
                );
                for (kind, label) in [
                    (ExportKind::Service, "services"),
                    (ExportKind::Condition, "conditions"),
                ] {
                    let names = lib.export_names(kind);
                    let _ = writeln!(
                        std::io::stdout(),
                        "{label}:{}{}",
                        " ".repeat(11 - label.len()),
                        if names.is_empty() {
                            "(none)".to_owned()
                        } else {
                            names.join(", ")
                        }
                    );
                }
                // Stages only when it has some: older libraries and plain
                // service plugins print as before.
                let stages = lib.stages();
                for (role, label) in [
                    (StageRole::Source, "sources"),
                    (StageRole::Transform, "transforms"),
                    (StageRole::Sink, "sinks"),
                ] {
                    let names: Vec<&str> = stages
                        .iter()
                        .filter(|e| e.role == role)
                        .map(|e| e.name.as_str())
                        .collect();
                    if !names.is_empty() {
                        let _ = writeln!(
                            std::io::stdout(),
                            "{label}:{}{}",
                            " ".repeat(11 - label.len()),
                            names.join(", ")
                        );
                    }
                }
                let steps = crate::plugin::step_exports(&lib);
                let _ = writeln!(
                    std::io::stdout(),
                    "steps:      {}",
                    if steps.is_empty() {
                        "(none)".to_owned()
                    } else {
                        steps.join(", ")
                    }
                );
                exit::OK
            }
            Err(e) => {
                eprintln!("error: {e}");
                exit::CONFIG_ERROR
            }
        }
    }
}
