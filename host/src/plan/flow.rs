//! Planning a `[[flow]]`: names become indices, the store path is resolved
//! against the manifest's folder, and every step is built from its library
//! with its `config` (errors located at the manifest key, like a service's).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::Builder;
use crate::dataframe::Dataframe;
use crate::flow::{Association, DEFAULT_MAX_RETRY_DELAY, Expr, FlowPlan, FlowStep, Pool};
use crate::manifest::config::ConfigJson;
use crate::manifest::flow::{self as decl, FlowDecl, StepDecl};
use crate::manifest::policy::Restart;
use crate::manifest::shown;
use crate::plugin::{construct_step, step_exports};

fn compile(e: &decl::Expr, events: &HashMap<&str, usize>) -> Option<Expr> {
    Some(match e {
        decl::Expr::Event(n) => Expr::Event(*events.get(n.as_str())?),
        decl::Expr::And(v) => Expr::And(
            v.iter()
                .map(|x| compile(x, events))
                .collect::<Option<_>>()?,
        ),
        decl::Expr::Or(v) => Expr::Or(
            v.iter()
                .map(|x| compile(x, events))
                .collect::<Option<_>>()?,
        ),
    })
}

impl Builder<'_> {
    /// Plans one flow; `None` when something in it is wrong (reported).
    pub(super) fn flow(
        &mut self,
        f: &FlowDecl,
        all_dataframes: &HashMap<&str, &Arc<Dataframe>>,
        names: &Arc<Vec<String>>,
    ) -> Option<FlowPlan> {
        let fkey = format!("flow \"{}\"", shown(f.name.get_ref()));
        let shared = self.shared(
            &f.name,
            f.log_level.as_ref(),
            &f.dataframes,
            all_dataframes,
            names,
        );
        let events: Vec<String> = f
            .events
            .iter()
            .chain(f.expressions.iter().map(|x| &x.name))
            .map(|e| e.get_ref().clone())
            .collect();
        let event_ids: HashMap<&str, usize> = events
            .iter()
            .enumerate()
            .map(|(i, e)| (e.as_str(), i))
            .collect();
        let step_ids: HashMap<&str, usize> = f
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.get_ref().as_str(), i))
            .collect();
        let pool_ids: HashMap<&str, usize> = f
            .pools
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.get_ref().as_str(), i))
            .collect();
        // Unknown names were reported by validation: plan what resolves.
        let ev = |n: &Spanned<String>| event_ids.get(n.get_ref().as_str()).copied();
        let mut steps = Vec::new();
        for s in &f.steps {
            let skey = format!("{fkey} > step \"{}\"", shown(s.name.get_ref()));
            if let Some(object) = self.step(s, &skey) {
                steps.push(FlowStep {
                    name: s.name.get_ref().clone(),
                    library: object.0,
                    export: s.export.get_ref().clone(),
                    object: Arc::new(object.1),
                    watchdog: s.watchdog.as_ref().map(|w| w.get_ref().0),
                    retries: match s.restart.as_ref().map(|r| *r.get_ref()) {
                        Some(Restart::Never) => 0,
                        _ => s
                            .retries
                            .or(s.max_restarts.as_ref().map(|m| *m.get_ref()))
                            .unwrap_or(0),
                    },
                    restart_window: s.restart_window.as_ref().map(|w| w.get_ref().0),
                    restart_delay: s
                        .restart_delay
                        .as_ref()
                        .map_or(Duration::ZERO, |d| d.get_ref().0),
                    max_restart_delay: s
                        .max_restart_delay
                        .as_ref()
                        .map_or(DEFAULT_MAX_RETRY_DELAY, |d| d.get_ref().0),
                    max_concurrent: s.max_concurrent.as_ref().map(|m| *m.get_ref()),
                    pools: s
                        .pools
                        .iter()
                        .filter_map(|p| pool_ids.get(p.get_ref().as_str()).copied())
                        .collect(),
                    on_success: s.on_success.as_ref().and_then(ev),
                    on_failure: s.on_failure.as_ref().and_then(ev),
                    on_complete: s.on_complete.as_ref().and_then(ev),
                    stop_on_error: s.stop_on_error,
                    recovery: s.recovery.unwrap_or_default(),
                    idempotent: s.idempotent.unwrap_or(true),
                });
            }
        }
        if steps.len() != f.steps.len() {
            return None;
        }
        let associations = f
            .associations
            .iter()
            .filter_map(|a| {
                Some(Association {
                    event: ev(&a.event)?,
                    steps: a
                        .steps
                        .iter()
                        .filter_map(|s| step_ids.get(s.get_ref().as_str()).copied())
                        .collect(),
                    events: a.events.iter().filter_map(ev).collect(),
                    delay: a.delay.as_ref().map(|d| d.get_ref().0),
                })
            })
            .collect();
        let expressions = f
            .expressions
            .iter()
            .filter_map(|x| {
                let parsed = decl::Expr::parse(x.expr.get_ref()).ok()?;
                Some((ev(&x.name)?, compile(&parsed, &event_ids)?))
            })
            .collect();
        let start = f
            .start
            .iter()
            .filter_map(|s| {
                let (e, sequence) = decl::split_start(s.get_ref());
                Some((*event_ids.get(e)?, sequence.to_owned()))
            })
            .collect();
        Some(FlowPlan {
            name: f.name.get_ref().clone(),
            store: f
                .store
                .as_ref()
                .map(|p| self.manifest.dir().join(p.get_ref())),
            mode: f
                .mode
                .as_ref()
                .map_or_else(Default::default, |m| *m.get_ref()),
            run_id: None,
            stop_on_error: f.stop_on_error.unwrap_or(true),
            keep_open: f.keep_open.unwrap_or(false),
            shutdown_timeout: self.manifest.shutdown_timeout(),
            shared,
            events,
            expressions,
            associations,
            steps,
            pools: f
                .pools
                .iter()
                .map(|p| Pool {
                    name: p.name.get_ref().clone(),
                    limit: *p.limit.get_ref(),
                })
                .collect(),
            start,
        })
    }

    /// Loads a step's library and builds the step from its config.
    fn step(
        &mut self,
        s: &StepDecl,
        key: &str,
    ) -> Option<(Arc<crate::plugin::Library>, otools_abi::FfiStepBox)> {
        let lib = self.library(&s.plugin, key)?;
        let export = s.export.get_ref().as_str();
        let names = step_exports(&lib);
        if !names.iter().any(|n| n == export) {
            self.errors.push(self.manifest.diagnostic(
                s.export.span().start,
                format!("{key} > export"),
                format!(
                    "plugin `{}` ({}) exports no step named `{export}`; its steps: {}",
                    s.plugin.get_ref(),
                    lib.path.display(),
                    if names.is_empty() {
                        String::from("(none)")
                    } else {
                        names.join(", ")
                    }
                ),
            ));
            return None;
        }
        let json = ConfigJson::new(s.config.as_ref().map(Spanned::get_ref));
        match construct_step(&lib, export, &json.text) {
            Ok(object) => Some((lib, object)),
            Err(e) => {
                let config = s.config.as_ref();
                self.config_rejected(
                    &e,
                    &json,
                    config,
                    s.name.span().start,
                    key,
                    export,
                    &s.plugin,
                );
                None
            }
        }
    }
}
