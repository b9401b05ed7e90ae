//! From a parsed manifest to instances ready to run: create the dataframes,
//! resolve and load every plugin library, check every export, and build
//! every service and condition instance from its config (their `setup` runs
//! later, on the context's thread). Every problem is collected, with the
//! manifest line it comes from, so `otools check` reports them all at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8};
use std::time::Duration;

use abi_stable::std_types::{RResult, RStr};
use otools_api::ffi::ExportKind;
use otools_api::{LogLevel, Value};
use toml::Spanned;

use crate::dataframe::Dataframe;
use crate::instance::{ConditionInstance, ContextShared, InstanceHost, ServiceInstance, Wake};
use crate::manifest::validate::validate;
use crate::manifest::{
    ContextDecl, Diagnostic, Diagnostics, EntryDecl, Manifest, Mode, StackEntry,
};
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
}

/// Everything needed to run a manifest.
pub struct Deployment {
    /// All dataframes, in manifest order.
    pub dataframes: Vec<Arc<Dataframe>>,
    /// All contexts, in manifest order.
    pub contexts: Vec<ContextPlan>,
    /// How long a shutdown may take.
    pub shutdown_timeout: Duration,
    /// How many distinct libraries were loaded.
    pub libraries: usize,
}

/// One context, ready to run.
pub struct ContextPlan {
    /// State shared with its instances.
    pub shared: Arc<ContextShared>,
    /// Minimum time between main-loop starts.
    pub period: Duration,
    /// Services and triggers, in manifest order.
    pub entries: Vec<PlanEntry>,
}

/// A service or trigger of a context.
pub enum PlanEntry {
    /// A service the main loop calls (and whose loop runs on its own thread).
    Service(ServiceInstance),
    /// A trigger.
    Trigger(TriggerPlan),
}

/// A trigger: conditions and the stack of services they fire.
pub struct TriggerPlan {
    /// Its name.
    pub name: String,
    /// How its conditions combine.
    pub mode: Mode,
    /// Its conditions.
    pub conditions: Vec<ConditionInstance>,
    /// The services whose `main` runs when it fires.
    pub stack: Vec<ServiceInstance>,
}

impl Deployment {
    /// Counts of (contexts, services, triggers, conditions).
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let mut services = 0;
        let mut triggers = 0;
        let mut conditions = 0;
        for c in &self.contexts {
            for e in &c.entries {
                match e {
                    PlanEntry::Service(_) => services += 1,
                    PlanEntry::Trigger(t) => {
                        triggers += 1;
                        conditions += t.conditions.len();
                        services += t.stack.len();
                    }
                }
            }
        }
        (self.contexts.len(), services, triggers, conditions)
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

/// Converts a TOML value into JSON, the form configs cross the boundary in.
pub fn toml_to_json(v: &toml::Value) -> serde_json::Value {
    match v {
        toml::Value::String(s) => s.clone().into(),
        toml::Value::Integer(i) => (*i).into(),
        toml::Value::Float(f) => {
            serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into)
        }
        toml::Value::Boolean(b) => (*b).into(),
        toml::Value::Datetime(d) => d.to_string().into(),
        toml::Value::Array(a) => a.iter().map(toml_to_json).collect(),
        toml::Value::Table(t) => t
            .iter()
            .map(|(k, v)| (k.clone(), toml_to_json(v)))
            .collect(),
    }
}

struct Builder<'m> {
    manifest: &'m Manifest,
    opts: &'m Options,
    registry: Registry,
    errors: Vec<Diagnostic>,
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

impl Builder<'_> {
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

    fn config_json(config: Option<&Spanned<toml::Table>>) -> String {
        config.map_or_else(
            || String::from("{}"),
            |c| toml_to_json(&toml::Value::Table(c.get_ref().clone())).to_string(),
        )
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one call site; the arguments are the manifest item's parts"
    )]
    fn instance(
        &mut self,
        kind: ExportKind,
        shared: &Arc<ContextShared>,
        name: String,
        plugin: &Spanned<String>,
        export: &Spanned<String>,
        config: Option<&Spanned<toml::Table>>,
        key: &str,
        anchor: usize,
    ) -> Option<Built> {
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
        let json = Self::config_json(config);
        let host = Arc::new(InstanceHost::new(
            Arc::clone(shared),
            name,
            Arc::clone(&lib),
            export_name.to_owned(),
        ));
        let export_r = RStr::from_str(export_name);
        let json_r = RStr::from_str(&json);
        let built = match kind {
            ExportKind::Service => match (lib.root.new_service())(export_r, json_r) {
                RResult::ROk(object) => Ok(Built::Service(ServiceInstance {
                    host,
                    object: Arc::new(object),
                })),
                RResult::RErr(e) => Err(e),
            },
            ExportKind::Condition => match (lib.root.new_condition())(export_r, json_r) {
                RResult::ROk(object) => Ok(Built::Condition(ConditionInstance {
                    host,
                    object: Arc::new(object),
                })),
                RResult::RErr(e) => Err(e),
            },
        };
        match built {
            Ok(b) => Some(b),
            Err(e) => {
                let at = config.map_or(anchor, |c| c.span().start);
                self.errors.push(self.manifest.diagnostic(
                    at,
                    format!("{key} > config"),
                    format!(
                        "`{}` of plugin `{}` rejected its config: {}",
                        export_name,
                        plugin.get_ref(),
                        e.message
                    ),
                ));
                None
            }
        }
    }

    fn context(
        &mut self,
        c: &ContextDecl,
        all_dataframes: &[Arc<Dataframe>],
        names: &Arc<Vec<String>>,
    ) -> ContextPlan {
        let host_level = self.manifest.host_level();
        let level = self
            .opts
            .level_override
            .unwrap_or_else(|| c.log_level.as_ref().map_or(host_level, |l| l.get_ref().0));
        let dataframes = c
            .dataframes
            .iter()
            .filter_map(|n| {
                all_dataframes
                    .iter()
                    .find(|d| d.name() == n.get_ref())
                    .cloned()
            })
            .collect();
        let shared = Arc::new(ContextShared {
            name: c.name.get_ref().clone(),
            level: AtomicU8::new(level as u8),
            stop: AtomicBool::new(false),
            fatal: AtomicBool::new(false),
            setup_failed: AtomicBool::new(false),
            wake: Wake::default(),
            dataframes,
            all_dataframes: Arc::clone(names),
        });
        let ckey = format!("context \"{}\"", c.name.get_ref());
        let mut entries = Vec::new();
        for entry in c.entries() {
            match entry {
                EntryDecl::Service(s) => {
                    let key = format!("{ckey} > service \"{}\"", s.name.get_ref());
                    if let Some(Built::Service(i)) = self.instance(
                        ExportKind::Service,
                        &shared,
                        s.name.get_ref().clone(),
                        &s.plugin,
                        &s.export,
                        s.config.as_ref(),
                        &key,
                        s.name.span().start,
                    ) {
                        entries.push(PlanEntry::Service(i));
                    }
                }
                EntryDecl::Trigger(t) => {
                    let tname = t.name.get_ref().clone();
                    let key = format!("{ckey} > trigger \"{tname}\"");
                    let mut conditions = Vec::new();
                    for (i, e) in t.condition.iter().enumerate() {
                        let name = stack_name(&tname, e.get_ref());
                        let ekey = format!("{key} > condition #{}", i + 1);
                        if let Some(Built::Condition(c)) =
                            self.stack_instance(ExportKind::Condition, &shared, name, e, &ekey)
                        {
                            conditions.push(c);
                        }
                    }
                    let mut stack = Vec::new();
                    for (i, e) in t.service.iter().enumerate() {
                        let name = stack_name(&tname, e.get_ref());
                        let ekey = format!("{key} > service #{}", i + 1);
                        if let Some(Built::Service(s)) =
                            self.stack_instance(ExportKind::Service, &shared, name, e, &ekey)
                        {
                            stack.push(s);
                        }
                    }
                    entries.push(PlanEntry::Trigger(TriggerPlan {
                        name: tname,
                        mode: t.mode.as_ref().map_or(Mode::Or, |m| *m.get_ref()),
                        conditions,
                        stack,
                    }));
                }
            }
        }
        ContextPlan {
            shared,
            period: c.period.as_ref().map_or(Duration::ZERO, |p| p.get_ref().0),
            entries,
        }
    }

    fn stack_instance(
        &mut self,
        kind: ExportKind,
        shared: &Arc<ContextShared>,
        name: String,
        e: &Spanned<StackEntry>,
        key: &str,
    ) -> Option<Built> {
        let s = e.get_ref();
        self.instance(
            kind,
            shared,
            name,
            &s.plugin,
            &s.export,
            s.config.as_ref(),
            key,
            e.span().start,
        )
    }
}

/// A stack entry's name in logs: its `name`, or `<trigger>/<export>`.
fn stack_name(trigger: &str, e: &StackEntry) -> String {
    match &e.name {
        Some(n) => n.get_ref().clone(),
        None => format!("{trigger}/{}", e.export.get_ref()),
    }
}

enum Built {
    Service(ServiceInstance),
    Condition(ConditionInstance),
}

/// Validates the manifest, loads its plugins and builds every instance.
pub fn build(manifest: &Manifest, opts: &Options) -> Result<Deployment, Diagnostics> {
    let mut b = Builder {
        manifest,
        opts,
        registry: Registry::new(opts.verbose),
        errors: validate(manifest),
    };
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
    let contexts: Vec<ContextPlan> = manifest
        .contexts
        .iter()
        .map(|c| b.context(c, &dataframes, &names))
        .collect();
    if !b.errors.is_empty() {
        let mut errors = b.errors;
        errors.sort_by_key(|d| (d.line, d.column));
        errors.dedup();
        return Err(Diagnostics(errors));
    }
    Ok(Deployment {
        dataframes,
        contexts,
        shutdown_timeout: manifest.shutdown_timeout(),
        libraries: b.registry.len(),
    })
}
