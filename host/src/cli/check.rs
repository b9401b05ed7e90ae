//! `otools check MANIFEST`: everything `run` does before starting anything,
//! reporting every problem found.

use std::io::Write as _;

use clap::Args;

use super::{ManifestArgs, exit, print_errors};
use crate::manifest;
use crate::plan::{self, Options};

/// Check a deployment without running it.
#[derive(Debug, Args)]
pub struct CheckCommand {
    /// The manifest and where its plugins are.
    #[command(flatten)]
    pub manifest: ManifestArgs,
}

impl CheckCommand {
    /// Checks the manifest; returns the exit code.
    pub fn execute(&self) -> u8 {
        let m = match manifest::load(&self.manifest.manifest) {
            Ok(m) => m,
            Err(d) => {
                print_errors(&d, "");
                return exit::CONFIG_ERROR;
            }
        };
        let opts = Options {
            plugin_dir: self.manifest.plugin_dir.clone(),
            level_override: None,
            verbose: self.manifest.verbose,
            ..Options::default()
        };
        match plan::build(&m, &opts) {
            Ok(d) => {
                let (contexts, services, triggers, conditions) = d.counts();
                let pipelines = if d.pipelines.is_empty() {
                    String::new()
                } else {
                    let stages: usize = d.pipelines.iter().map(|p| p.stages.len()).sum();
                    format!("{} pipeline(s) of {stages} stage(s), ", d.pipelines.len())
                };
                let _ = writeln!(
                    std::io::stdout(),
                    "{}: ok ({contexts} context(s), {services} service(s), {triggers} trigger(s), {conditions} condition(s), {pipelines}{} flow(s), {} plugin librar{})",
                    m.path.display(),
                    d.flows.len(),
                    d.libraries,
                    if d.libraries == 1 { "y" } else { "ies" }
                );
                exit::OK
            }
            Err(d) => {
                print_errors(&d, "");
                exit::CONFIG_ERROR
            }
        }
    }
}
