//! What a pipeline is built from: [`PipelinePlan`] and its [`StagePlan`]s,
//! and the part of the build that loads each stage's library, checks that
//! it exports the stage under the role the manifest declares, and builds
//! one instance per worker from the stage's config (no `setup`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use otools_abi::{FfiStageBox, StageRole};

use super::Builder;
use crate::dataframe::Dataframe;
use crate::instance::ContextShared;
use crate::manifest::config::ConfigJson;
use crate::manifest::pipeline::{OnItemError, PipelineDecl, Role, StageDecl};
use crate::manifest::policy::Policy;
use crate::manifest::shown;
use crate::plugin::{Library, construct_stage};

/// One stage, as planned from the manifest.
pub struct StagePlan {
    /// Its name in logs (`<name>.<worker>` for each worker).
    pub name: String,
    /// Source, transform or sink.
    pub role: StageRole,
    /// Its library.
    pub library: Arc<Library>,
    /// Its export.
    pub export: String,
    /// Its config, as handed to the plugin.
    pub config_json: String,
    /// The capacity of its input queue (unused for a source).
    pub queue_size: usize,
    /// How each worker is supervised.
    pub policy: Policy,
    /// One instance per worker (`threads` of them), built by [`super::build`].
    pub initial: Vec<FfiStageBox>,
}

/// A pipeline, ready to run.
pub struct PipelinePlan {
    /// Shared by its workers' handles: its name, level, stop flag, dataframes.
    pub shared: Arc<ContextShared>,
    /// Its stages, source first, sink last.
    pub stages: Vec<StagePlan>,
    /// What a bad item does.
    pub on_item_error: OnItemError,
    /// How long draining may take once the sources stopped.
    pub drain_timeout: Duration,
    /// How often stage figures are journaled.
    pub stats_interval: Duration,
    /// The dead-letter file (opened at the first bad item).
    pub dead_letter: PathBuf,
}

impl PipelinePlan {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }
}

fn abi_role(role: Role) -> StageRole {
    match role {
        Role::Source => StageRole::Source,
        Role::Transform => StageRole::Transform,
        Role::Sink => StageRole::Sink,
    }
}

impl Builder<'_> {
    /// Plans one pipeline; `None` (with its errors recorded) if a stage cannot be built.
    pub(super) fn pipeline(
        &mut self,
        p: &PipelineDecl,
        all_dataframes: &HashMap<&str, &Arc<Dataframe>>,
        names: &Arc<Vec<String>>,
    ) -> Option<PipelinePlan> {
        let shared = self.shared(
            &p.name,
            p.log_level.as_ref(),
            &p.dataframes,
            all_dataframes,
            names,
        );
        let pkey = format!("pipeline \"{}\"", shown(p.name.get_ref()));
        let host_shutdown = self.manifest.shutdown_timeout();
        let mut stages = Vec::new();
        let mut complete = true;
        for s in &p.stages {
            let key = format!("{pkey} > stage \"{}\"", shown(s.name().get_ref()));
            match self.stage(s, s.policy(p, host_shutdown), &key) {
                Some(stage) => stages.push(stage),
                None => complete = false,
            }
        }
        let dead_letter = self.manifest.dir().join(p.dead_letter());
        complete.then(|| PipelinePlan {
            shared,
            stages,
            on_item_error: p.on_item_error(),
            drain_timeout: p.drain_timeout(),
            stats_interval: p.stats_interval(),
            dead_letter,
        })
    }

    fn stage(&mut self, s: &StageDecl, policy: Policy, key: &str) -> Option<StagePlan> {
        let lib = self.library(&s.plugin, key)?;
        let export = s.export.get_ref().as_str();
        let role = abi_role(*s.role.get_ref());
        let found = lib.stage_role(export);
        if found != Some(role) {
            let why = match found {
                Some(other) => format!(
                    "`{export}` is a {}, not a {} (change `role`, or pick another export)",
                    other.name(),
                    role.name()
                ),
                None if !lib.knows_stages() => format!(
                    "the library was built before pipelines existed (otools-abi {}): it exports no stage; rebuild it against this otools-api",
                    lib.abi_version
                ),
                None => {
                    let all = lib.stages();
                    let listed: Vec<String> = all
                        .iter()
                        .map(|e| format!("{} ({})", e.name, e.role.name()))
                        .collect();
                    format!(
                        "it exports no stage named `{export}`; its stages: {}",
                        if listed.is_empty() {
                            String::from("(none)")
                        } else {
                            listed.join(", ")
                        }
                    )
                }
            };
            let (at, k) = if found.is_some() {
                (s.role.span().start, "role")
            } else {
                (s.export.span().start, "export")
            };
            self.errors.push(self.manifest.diagnostic(
                at,
                format!("{key} > {k}"),
                format!(
                    "plugin `{}` ({}): {why}",
                    s.plugin.get_ref(),
                    lib.path.display()
                ),
            ));
            return None;
        }
        let json = ConfigJson::new(s.config.as_ref().map(|c| c.get_ref()));
        let mut initial = Vec::new();
        for _ in 0..s.threads() {
            match construct_stage(&lib, export, &json.text) {
                Ok(o) => initial.push(o),
                Err(e) => {
                    let anchor = s.name().span().start;
                    self.config_rejected(
                        &e,
                        &json,
                        s.config.as_ref(),
                        anchor,
                        key,
                        export,
                        &s.plugin,
                    );
                    return None;
                }
            }
        }
        Some(StagePlan {
            name: s.name().get_ref().clone(),
            role,
            library: lib,
            export: export.to_owned(),
            config_json: json.text.clone(),
            queue_size: s.queue_size() as usize,
            policy,
            initial,
        })
    }
}
