//! From a parsed manifest to instances ready to run: create the dataframes,
//! resolve and load every plugin library, check every export, and build
//! every service and condition instance from its config (their `setup` runs
//! later, on the context's thread). Every problem is collected, with the
//! manifest line it comes from, so `otools check` reports them all at once.

mod context;
mod flow;
mod pipeline;

pub use context::{ContextPlan, StepPlan, UnitPlan};
pub use pipeline::{PipelinePlan, StagePlan};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8};
use std::time::Duration;

use otools_abi::{CallError, ExportKind};
use otools_abi::{LogLevel, Value};
use toml::Spanned;

use crate::dataframe::Dataframe;
use crate::event::Events;
use crate::instance::{ContextShared, Wake};
use crate::manifest::config::ConfigJson;
use crate::manifest::policy::{Policy, Strategy};
use crate::manifest::validate::validate;
use crate::manifest::{
    ContextDecl, Diagnostic, Diagnostics, EntryDecl, ExitWhen, Level, Manifest, Mode, ServiceDecl,
    StackEntry, name_error, shown,
};
use crate::messaging::{
    DEFAULT_MAILBOX_SIZE, EndpointSpec, FlowDirectory, InProcess, Mailbox, Router,
};
use crate::plugin::construct;
use crate::plugin::{LoadError, Registry};

/// Choices made on the command line that change how a manifest is deployed.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Overrides `[host] plugin_dir`.
    pub plugin_dir: Option<PathBuf>,
    /// Overrides every context's log level (`None`: the manifest decides).
    pub level_override: Option<LogLevel>,
    /// Keep abi_stable's full reports in load errors.
    pub verbose: bool,
    /// Where lifecycle events go: the host's hub (none by default).
    pub events: Arc<Events>,
}

/// Everything needed to run a manifest.
pub struct Deployment {
    /// All contexts, in manifest order.
    pub contexts: Vec<ContextPlan>,
    /// All pipelines, in manifest order.
    pub pipelines: Vec<PipelinePlan>,
    /// How many distinct libraries were loaded.
    pub libraries: usize,
    /// The distinct libraries, for the reload watcher.
    pub loaded: Vec<Arc<crate::plugin::Library>>,
    /// How reloads are watched (from `[host]`; the CLI may turn watching off).
    pub reload: crate::manifest::ReloadSettings,
    /// Where lifecycle events go (from [`Options::events`]).
    pub events: Arc<Events>,
    /// What ends the run besides every context ending (`[host] exit_when`).
    pub exit_when: ExitWhen,
    /// `[host] max_abandoned_threads` (at least 1), for the host's watchdog.
    pub max_abandoned_threads: usize,
    /// The flows, in manifest order.
    pub flows: Vec<crate::flow::FlowPlan>,
    /// The routing layer: every service that accepts messages, by name,
    /// with its mailbox. [`Router::send`] on it is the entry point for a
    /// message from outside the plugins (sender `control`).
    pub router: Arc<InProcess>,
    /// The running flows that services, steps and `otools raise` raise
    /// events in (filled in by the host once it has opened the flows).
    pub flow_directory: Arc<FlowDirectory>,
}

impl Deployment {
    /// Counts of (contexts, services, triggers, conditions).
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let mut services = 0;
        let mut triggers = 0;
        let mut conditions = 0;
        for c in &self.contexts {
            for u in &c.units {
                match u.kind {
                    ExportKind::Service => services += 1,
                    ExportKind::Condition => conditions += 1,
                }
            }
            triggers += c
                .steps
                .iter()
                .filter(|s| matches!(s, StepPlan::Trigger { .. }))
                .count();
        }
        (self.contexts.len(), services, triggers, conditions)
    }

    /// The shortest `watchdog` of any service or stage (sets the host's watchdog's tick).
    pub fn shortest_watchdog(&self) -> Option<Duration> {
        let stages = self
            .pipelines
            .iter()
            .flat_map(|p| p.stages.iter())
            .filter_map(|s| s.policy.watchdog);
        self.contexts
            .iter()
            .flat_map(|c| c.units.iter())
            .filter_map(|u| u.policy.watchdog)
            .chain(stages)
            .chain(
                self.flows
                    .iter()
                    .filter_map(crate::flow::FlowPlan::shortest_watchdog),
            )
            .min()
    }
}

/// Converts a TOML value into a dataframe value (datetimes become strings).
pub fn toml_to_value(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::from(s.as_str()),
        toml::Value::Integer(i) => Value::Int(*i),
        toml::Value::Float(f) => Value::Float(*f),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::from(d.to_string()),
        toml::Value::Array(a) => Value::List(a.iter().map(toml_to_value).collect()),
        toml::Value::Table(t) => Value::map(t.iter().map(|(k, v)| (k.clone(), toml_to_value(v)))),
    }
}

struct Builder<'m> {
    manifest: &'m Manifest,
    opts: &'m Options,
    registry: Registry,
    errors: Vec<Diagnostic>,
    router: Arc<InProcess>,
    flow_directory: Arc<FlowDirectory>,
    /// Every `sends_to` target and its manifest key, checked once all are registered.
    sends_to: Vec<(&'m Spanned<String>, String)>,
}

/// Where `plugin = "..."` points: a path (with a `/` or ending in `.so`,
/// relative to the manifest) or a name looked up as `lib<name>.so` in the
/// plugin folder.
pub fn resolve_plugin(manifest: &Manifest, opts: &Options, plugin: &str) -> PathBuf {
    if plugin.contains('/') || Path::new(plugin).extension().is_some_and(|e| e == "so") {
        let p = PathBuf::from(plugin);
        return if p.is_absolute() {
            p
        } else {
            manifest.dir().join(p)
        };
    }
    let dir = match (&opts.plugin_dir, &manifest.host.plugin_dir) {
        (Some(d), _) => d.clone(),
        (None, Some(d)) => manifest.dir().join(d.get_ref()),
        (None, None) => manifest.dir(),
    };
    dir.join(format!("lib{plugin}.so"))
}

impl<'m> Builder<'m> {
    fn library(
        &mut self,
        plugin: &Spanned<String>,
        key: &str,
    ) -> Option<Arc<crate::plugin::Library>> {
        let path = resolve_plugin(self.manifest, self.opts, plugin.get_ref());
        let first = !self.registry.seen(&path);
        match self.registry.get(&path) {
            Ok(lib) => Some(lib),
            Err(e) => {
                if first {
                    let message = match &e {
                        LoadError::NotFound { path } => format!(
                            "plugin library not found: {} (plugin `{}`; build it with `cargo build`, or set `[host] plugin_dir` or `--plugin-dir`)",
                            path.display(),
                            plugin.get_ref()
                        ),
                        other => other.to_string(),
                    };
                    self.errors.push(self.manifest.diagnostic(
                        plugin.span().start,
                        format!("{key} > plugin"),
                        message,
                    ));
                }
                None
            }
        }
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one call site per manifest item kind; the arguments are the item's parts"
    )]
    fn unit(
        &mut self,
        kind: ExportKind,
        name: String,
        plugin: &Spanned<String>,
        export: &Spanned<String>,
        config: Option<&Spanned<toml::Table>>,
        policy: Policy,
        top_level: bool,
        key: &str,
        anchor: usize,
    ) -> Option<UnitPlan> {
        let lib = self.library(plugin, key)?;
        let export_name = export.get_ref().as_str();
        if !lib.exports(kind, export_name) {
            let (what, other) = match kind {
                ExportKind::Service => ("service", ExportKind::Condition),
                ExportKind::Condition => ("condition", ExportKind::Service),
            };
            let hint = if lib.exports(other, export_name) {
                format!(
                    " (`{export_name}` is a {}, not a {what})",
                    if what == "service" {
                        "condition"
                    } else {
                        "service"
                    }
                )
            } else {
                String::new()
            };
            let names = lib.export_names(kind);
            self.errors.push(self.manifest.diagnostic(
                export.span().start,
                format!("{key} > export"),
                format!(
                    "plugin `{}` ({}) exports no {what} named `{export_name}`{hint}; its {what}s: {}",
                    plugin.get_ref(),
                    lib.path.display(),
                    if names.is_empty() { String::from("(none)") } else { names.join(", ") }
                ),
            ));
            return None;
        }
        let json = ConfigJson::new(config.map(Spanned::get_ref));
        let config_json = json.text.clone();
        match construct(&lib, kind, export_name, &config_json) {
            Ok(initial) => Some(UnitPlan {
                name,
                kind,
                top_level,
                library: lib,
                export: export_name.to_owned(),
                config_json,
                policy,
                main_once: false,
                initial,
                mailbox: None,
            }),
            Err(e) => {
                self.config_rejected(&e, &json, config, anchor, key, export_name, plugin);
                None
            }
        }
    }

    /// Reports a config the plugin refused: at the key or value concerned
    /// when the plugin's message says where in the JSON, else at the config
    /// table (or `anchor` without one).
    #[expect(
        clippy::too_many_arguments,
        reason = "the parts of the manifest item whose config was refused"
    )]
    fn config_rejected(
        &mut self,
        e: &CallError,
        json: &ConfigJson,
        config: Option<&Spanned<toml::Table>>,
        anchor: usize,
        key: &str,
        export_name: &str,
        plugin: &Spanned<String>,
    ) {
        let table_at = config.map_or(anchor, |c| c.span().start);
        let tree = config.and_then(|c| self.manifest.config_spans(c.span().start));
        let found = json.locate(e.message.as_str(), tree, table_at);
        self.errors.push(self.manifest.diagnostic(
            found.at,
            format!("{key} > config{}", found.key),
            format!(
                "`{}` of plugin `{}` rejected its config: {}",
                export_name,
                plugin.get_ref(),
                found.message
            ),
        ));
    }

    /// What the instances of a context (or a pipeline's workers) share:
    /// its name, level, stop flags and the dataframes it lists.
    fn shared(
        &self,
        name: &Spanned<String>,
        log_level: Option<&Spanned<Level>>,
        listed: &[Spanned<String>],
        all_dataframes: &HashMap<&str, &Arc<Dataframe>>,
        names: &Arc<Vec<String>>,
    ) -> Arc<ContextShared> {
        let host_level = self.manifest.host_level();
        let level = self
            .opts
            .level_override
            .unwrap_or_else(|| log_level.map_or(host_level, |l| l.get_ref().0));
        let dataframes = listed
            .iter()
            .filter_map(|n| {
                all_dataframes
                    .get(n.get_ref().as_str())
                    .map(|d| Arc::clone(d))
            })
            .collect();
        Arc::new(ContextShared {
            name: name.get_ref().clone(),
            level: AtomicU8::new(level as u8),
            stop: Arc::new(AtomicBool::new(false)),
            fatal: AtomicBool::new(false),
            wake: Wake::default(),
            dataframes,
            all_dataframes: Arc::clone(names),
            events: Arc::clone(&self.opts.events),
            router: Arc::clone(&self.router) as Arc<dyn Router>,
            cancel: crate::messaging::Cancel::default(),
            flows: Arc::clone(&self.flow_directory),
        })
    }

    /// Registers the mailbox of a top-level service that accepts messages
    /// or subscribes to topics; every subscribed topic must be a message it
    /// accepts.
    fn mailbox(
        &mut self,
        context: &str,
        s: &'_ ServiceDecl,
        u: &UnitPlan,
        key: &str,
    ) -> Option<Arc<Mailbox>> {
        let accepts = crate::plugin::messages(&u.library, &u.export);
        if accepts.is_empty() && s.subscribe.is_empty() {
            return None;
        }
        let mut subscribe = Vec::new();
        for topic in &s.subscribe {
            let t = topic.get_ref();
            let problem = if let Some(bad) = name_error(t) {
                Some(format!("topic \"{}\": {bad}", shown(t)))
            } else if !accepts.iter().any(|(n, _)| n == t) {
                Some(format!(
                    "`{}` subscribes to topic `{}`, but its export `{}` accepts no message of that name (it accepts: {})",
                    shown(&u.name),
                    shown(t),
                    u.export,
                    if accepts.is_empty() {
                        String::from("none")
                    } else {
                        accepts
                            .iter()
                            .map(|(n, _)| n.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ))
            } else {
                None
            };
            match problem {
                Some(message) => self.errors.push(self.manifest.diagnostic(
                    topic.span().start,
                    format!("{key} > subscribe"),
                    message,
                )),
                None => subscribe.push(t.clone()),
            }
        }
        let capacity = s
            .mailbox_size
            .as_ref()
            .map_or(DEFAULT_MAILBOX_SIZE, |n| *n.get_ref() as usize);
        Some(self.router.register(&EndpointSpec {
            context: context.to_owned(),
            service: u.name.clone(),
            accepts,
            capacity,
            subscribe,
        }))
    }

    fn context(
        &mut self,
        c: &'m ContextDecl,
        all_dataframes: &HashMap<&str, &Arc<Dataframe>>,
        names: &Arc<Vec<String>>,
    ) -> ContextPlan {
        let host_shutdown = self.manifest.shutdown_timeout();
        let shared = self.shared(
            &c.name,
            c.log_level.as_ref(),
            &c.dataframes,
            all_dataframes,
            names,
        );
        let ckey = format!("context \"{}\"", shown(c.name.get_ref()));
        let mut units = Vec::new();
        let mut steps = Vec::new();
        for entry in c.entries() {
            match entry {
                EntryDecl::Service(s) => {
                    let key = format!("{ckey} > service \"{}\"", shown(s.name.get_ref()));
                    let policy = s.policy(c, host_shutdown);
                    if let Some(u) = self.unit(
                        ExportKind::Service,
                        s.name.get_ref().clone(),
                        &s.plugin,
                        &s.export,
                        s.config.as_ref(),
                        policy,
                        true,
                        &key,
                        s.name.span().start,
                    ) {
                        let mut u = u;
                        u.mailbox = self.mailbox(c.name.get_ref(), s, &u, &key);
                        self.sends_to
                            .extend(s.sends_to.iter().map(|t| (t, format!("{key} > sends_to"))));
                        steps.push(StepPlan::Service(units.len()));
                        units.push(UnitPlan {
                            main_once: s.main_once(),
                            ..u
                        });
                    }
                }
                EntryDecl::Trigger(t) => {
                    let tname = t.name.get_ref().clone();
                    let key = format!("{ckey} > trigger \"{}\"", shown(&tname));
                    let mut conditions = Vec::new();
                    for (i, e) in t.condition.iter().enumerate() {
                        let ekey = format!("{key} > condition #{}", i + 1);
                        if let Some(u) = self.stack_unit(
                            ExportKind::Condition,
                            &tname,
                            e,
                            c,
                            host_shutdown,
                            &ekey,
                        ) {
                            conditions.push(units.len());
                            units.push(u);
                        }
                    }
                    let mut stack = Vec::new();
                    for (i, e) in t.service.iter().enumerate() {
                        let ekey = format!("{key} > service #{}", i + 1);
                        if let Some(u) =
                            self.stack_unit(ExportKind::Service, &tname, e, c, host_shutdown, &ekey)
                        {
                            stack.push(units.len());
                            units.push(u);
                        }
                    }
                    steps.push(StepPlan::Trigger {
                        name: tname,
                        mode: t.mode.as_ref().map_or(Mode::Or, |m| *m.get_ref()),
                        conditions,
                        stack,
                    });
                }
            }
        }
        ContextPlan {
            shared,
            period: c.period.as_ref().map_or(Duration::ZERO, |p| p.get_ref().0),
            strategy: c
                .strategy
                .as_ref()
                .map_or(Strategy::default(), |s| *s.get_ref()),
            units,
            steps,
        }
    }

    fn stack_unit(
        &mut self,
        kind: ExportKind,
        trigger: &str,
        e: &Spanned<StackEntry>,
        c: &ContextDecl,
        host_shutdown: Duration,
        key: &str,
    ) -> Option<UnitPlan> {
        let s = e.get_ref();
        let name = stack_name(trigger, s);
        let policy = s.policy(c, host_shutdown);
        let u = self.unit(
            kind,
            name,
            &s.plugin,
            &s.export,
            s.config.as_ref(),
            policy,
            false,
            key,
            e.span().start,
        )?;
        // A stack entry runs on the driver thread when its trigger fires:
        // it has no mailbox, and nothing could reach its handler.
        let accepts = crate::plugin::messages(&u.library, &u.export);
        if !accepts.is_empty() {
            self.errors.push(self.manifest.diagnostic(
                s.export.span().start,
                format!("{key} > export"),
                format!(
                    "`{}` accepts messages ({}), but a service in a trigger's stack has no mailbox, so no message could reach it; declare it as a `[[context.service]]` to send it messages",
                    shown(&u.export),
                    accepts
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
            return None;
        }
        Some(u)
    }
}

/// A stack entry's name in logs: its `name`, or `<trigger>/<export>`.
fn stack_name(trigger: &str, e: &StackEntry) -> String {
    match &e.name {
        Some(n) => n.get_ref().clone(),
        None => format!("{trigger}/{}", e.export.get_ref()),
    }
}

/// Validates the manifest, loads its plugins and builds every instance.
pub fn build(manifest: &Manifest, opts: &Options) -> Result<Deployment, Diagnostics> {
    let mut b = Builder {
        manifest,
        opts,
        registry: Registry::new(opts.verbose),
        errors: validate(manifest),
        router: Arc::new(InProcess::new(Arc::clone(&opts.events))),
        flow_directory: Arc::default(),
        sends_to: Vec::new(),
    };
    b.errors.extend(crate::manifest::flow::validate(manifest));
    let dataframes: Vec<Arc<Dataframe>> = manifest
        .dataframes
        .iter()
        .map(|d| {
            Arc::new(Dataframe::new(
                d.name.get_ref().clone(),
                d.init.iter().map(|(k, v)| (k.clone(), toml_to_value(v))),
            ))
        })
        .collect();
    let names = Arc::new(
        dataframes
            .iter()
            .map(|d| d.name().to_owned())
            .collect::<Vec<_>>(),
    );
    // The first of each name (a duplicate is an error reported by `validate`).
    let mut by_name = HashMap::new();
    for d in &dataframes {
        by_name.entry(d.name()).or_insert(d);
    }
    let contexts: Vec<ContextPlan> = manifest
        .contexts
        .iter()
        .map(|c| b.context(c, &by_name, &names))
        .collect();
    let pipelines: Vec<PipelinePlan> = manifest
        .pipelines
        .iter()
        .filter_map(|p| b.pipeline(p, &by_name, &names))
        .collect();
    // Hot reload follows the libraries of contexts and pipeline stages
    // (not those of flows; see ARCHITECTURE.md).
    let loaded = b.registry.libraries();
    // Static targets are caught here, by `check` as by `run`.
    for (target, key) in std::mem::take(&mut b.sends_to) {
        if let Err(f) = b.router.resolve(target.get_ref()) {
            b.errors
                .push(manifest.diagnostic(target.span().start, key, f.message));
        }
    }
    let flows: Vec<crate::flow::FlowPlan> = manifest
        .flows
        .iter()
        .filter_map(|f| b.flow(f, &by_name, &names))
        .collect();
    if !b.errors.is_empty() {
        let mut errors = b.errors;
        errors.sort_by_key(|d| d.position);
        errors.dedup();
        return Err(Diagnostics(errors));
    }
    Ok(Deployment {
        contexts,
        pipelines,
        libraries: b.registry.libraries().len(),
        loaded,
        reload: manifest.reload_settings(opts.verbose),
        events: Arc::clone(&opts.events),
        exit_when: manifest.exit_when(),
        max_abandoned_threads: manifest.max_abandoned_threads(),
        flows,
        router: b.router,
        flow_directory: b.flow_directory,
    })
}
