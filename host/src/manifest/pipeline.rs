//! `[[pipeline]]` and its `[[pipeline.stage]]`s, as the manifest says them,
//! and the checks of their shape that need no plugin: a source first and
//! only first, a sink last and only last, transforms between them, worker
//! and queue counts of at least 1, a partitioned source for several source
//! workers, unique names. Whether each export exists under the declared
//! role is checked when the library is loaded ([`crate::plan`]).

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::policy::{GiveUp, Policy, Restart};
use super::validate::{check_dataframes, check_name, check_supervision, first_of};
use super::{Diagnostic, HumanDuration, Level, Manifest, SupervisionKeys, shown};

/// The default `queue_size` of a stage's input queue.
pub const DEFAULT_QUEUE_SIZE: u32 = 256;
/// The default `drain_timeout` of a pipeline.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The default `stats_interval` of a pipeline.
pub const DEFAULT_STATS_INTERVAL: Duration = Duration::from_secs(1);
/// The most workers a stage may have.
pub const MAX_THREADS: u32 = 1024;

/// What a bad item does to its pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnItemError {
    /// Count it, write it to the dead-letter file, go on.
    #[default]
    Skip,
    /// Also stop the pipeline's sources and drain it; the run fails.
    StopPipeline,
}

/// A stage's role, as the manifest names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Produces items.
    Source,
    /// Maps items.
    Transform,
    /// Consumes items.
    Sink,
}

impl Role {
    /// The role's name in the manifest.
    pub fn name(self) -> &'static str {
        match self {
            Role::Source => "source",
            Role::Transform => "transform",
            Role::Sink => "sink",
        }
    }
}

/// `[[pipeline]]`: stages connected by bounded queues.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineDecl {
    /// Unique among pipelines and contexts.
    pub name: Spanned<String>,
    /// Log level of its stages (default: the host's).
    pub log_level: Option<Spanned<Level>>,
    /// The only dataframes its stages may use.
    #[serde(default)]
    pub dataframes: Vec<Spanned<String>>,
    /// `skip` (default) or `stop_pipeline`.
    pub on_item_error: Option<Spanned<OnItemError>>,
    /// The dead-letter JSON-lines file, relative to the manifest's folder
    /// (default `<name>.dead-letter.jsonl`).
    pub dead_letter: Option<Spanned<String>>,
    /// How long the queues may take to drain once the sources stopped (default 10s).
    pub drain_timeout: Option<Spanned<HumanDuration>>,
    /// How often each stage's figures are journaled (default 1s).
    pub stats_interval: Option<Spanned<HumanDuration>>,
    /// The default `on_give_up` of its stages (default `stop_service`).
    pub on_give_up: Option<Spanned<GiveUp>>,
    /// `[[pipeline.stage]]`, in order.
    #[serde(default, rename = "stage")]
    pub stages: Vec<StageDecl>,
}

with_supervision_keys! {
/// `[[pipeline.stage]]`: one stage, run by `threads` workers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageDecl {
    /// Unique within the pipeline (default: the export's name).
    pub name: Option<Spanned<String>>,
    /// A library name looked up in `plugin_dir`, or a path to a library.
    pub plugin: Spanned<String>,
    /// Which of the library's stages.
    pub export: Spanned<String>,
    /// `source`, `transform` or `sink`: what the export must be.
    pub role: Spanned<Role>,
    /// How many workers, each with its own instance (default 1).
    pub threads: Option<Spanned<u32>>,
    /// The capacity of the stage's input queue (default 256; not for a source).
    pub queue_size: Option<Spanned<u32>>,
    /// A source whose workers split its input by their index (required for
    /// several source workers, so that no item is produced twice).
    pub partitioned: Option<Spanned<bool>>,
    /// Handed to the plugin, which deserializes it into its config type.
    pub config: Option<Spanned<toml::Table>>,
}
}

impl StageDecl {
    /// Its name: `name`, else the export's.
    pub fn name(&self) -> &Spanned<String> {
        self.name.as_ref().unwrap_or(&self.export)
    }

    /// Its worker count.
    pub fn threads(&self) -> u32 {
        self.threads.as_ref().map_or(1, |t| *t.get_ref())
    }

    /// The capacity of its input queue.
    pub fn queue_size(&self) -> u32 {
        self.queue_size
            .as_ref()
            .map_or(DEFAULT_QUEUE_SIZE, |q| *q.get_ref())
    }

    /// Its supervision policy (the pipeline's `on_give_up` is the default of its own).
    pub fn policy(&self, pipeline: &PipelineDecl, host_shutdown: Duration) -> Policy {
        policy_of!(self, pipeline, host_shutdown)
    }
}

impl PipelineDecl {
    /// What a bad item does.
    pub fn on_item_error(&self) -> OnItemError {
        self.on_item_error
            .as_ref()
            .map_or_else(OnItemError::default, |o| *o.get_ref())
    }

    /// How long draining may take.
    pub fn drain_timeout(&self) -> Duration {
        self.drain_timeout
            .as_ref()
            .map_or(DEFAULT_DRAIN_TIMEOUT, |d| d.get_ref().0)
    }

    /// How often stage figures are journaled.
    pub fn stats_interval(&self) -> Duration {
        self.stats_interval
            .as_ref()
            .map_or(DEFAULT_STATS_INTERVAL, |d| d.get_ref().0)
    }

    /// The dead-letter file as written (default `<name>.dead-letter.jsonl`).
    pub fn dead_letter(&self) -> String {
        self.dead_letter.as_ref().map_or_else(
            || format!("{}.dead-letter.jsonl", self.name.get_ref()),
            |d| d.get_ref().clone(),
        )
    }
}

/// Every shape problem of the manifest's pipelines; `contexts` are the
/// context names (a pipeline must not reuse one: events name either).
pub fn validate(
    m: &Manifest,
    contexts: &HashMap<&str, usize>,
    dataframes: &HashMap<&str, usize>,
    errors: &mut Vec<Diagnostic>,
) {
    let mut names: HashMap<&str, usize> = HashMap::new();
    for p in &m.pipelines {
        let pname = shown(p.name.get_ref());
        let pkey = format!("pipeline \"{pname}\"");
        check_name(m, &p.name, &format!("{pkey} > name"), errors);
        let at = p.name.span().start;
        if let Some(first) = first_of(&mut names, p.name.get_ref(), at)
            .or_else(|| contexts.get(p.name.get_ref().as_str()).copied())
        {
            let (line, _) = m.line_column(first);
            errors.push(m.diagnostic(
                at,
                format!("{pkey} > name"),
                format!("duplicate name `{pname}` (first used on line {line}); pipelines and contexts share one namespace"),
            ));
        }
        check_dataframes(m, &pkey, &p.dataframes, dataframes, errors);
        for (name, value) in [
            ("drain_timeout", &p.drain_timeout),
            ("stats_interval", &p.stats_interval),
        ] {
            if let Some(v) = value
                && v.get_ref().0.is_zero()
            {
                errors.push(m.diagnostic(
                    v.span().start,
                    format!("{pkey} > {name}"),
                    format!("`{name}` must be longer than 0"),
                ));
            }
        }
        stages(m, p, &pkey, errors);
    }
}

/// The checks of one pipeline's stages.
fn stages(m: &Manifest, p: &PipelineDecl, pkey: &str, errors: &mut Vec<Diagnostic>) {
    let pname = shown(p.name.get_ref());
    let at = p.name.span().start;
    match p.stages.first() {
        None => errors.push(m.diagnostic(
            at,
            format!("{pkey} > stage"),
            format!("pipeline `{pname}` has no stage; it needs a source first and a sink last (`[[pipeline.stage]]` with `role = \"source\"`, then `role = \"sink\"`)"),
        )),
        Some(s) if *s.role.get_ref() != Role::Source => errors.push(m.diagnostic(
            s.role.span().start,
            format!("{pkey} > stage \"{}\" > role", shown(s.name().get_ref())),
            format!("pipeline `{pname}` has no source: its first stage must have `role = \"source\"`"),
        )),
        Some(_) if p.stages.len() == 1 => errors.push(m.diagnostic(
            at,
            format!("{pkey} > stage"),
            format!("pipeline `{pname}` has no consumer: add a stage with `role = \"sink\"` after its source"),
        )),
        Some(_) => {}
    }
    let last = p.stages.len().saturating_sub(1);
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, s) in p.stages.iter().enumerate() {
        let name = s.name();
        let skey = format!("{pkey} > stage \"{}\"", shown(name.get_ref()));
        check_name(m, name, &format!("{skey} > name"), errors);
        if let Some(first) = first_of(&mut names, name.get_ref(), name.span().start) {
            let (line, _) = m.line_column(first);
            errors.push(m.diagnostic(
                name.span().start,
                format!("{skey} > name"),
                format!(
                    "duplicate stage name `{}` in pipeline `{pname}` (first used on line {line}); give the stage a `name`",
                    shown(name.get_ref())
                ),
            ));
        }
        let role = *s.role.get_ref();
        let misplaced = match role {
            Role::Source => (i != 0).then_some("only the first stage may be a source"),
            Role::Sink if i != last => Some("only the last stage may be a sink"),
            Role::Transform if i == last && i > 0 => {
                Some("the last stage must be a sink: a transform's items would go nowhere")
            }
            _ => None,
        };
        if let Some(why) = misplaced {
            errors.push(m.diagnostic(s.role.span().start, format!("{skey} > role"), why));
        }
        if let Some(t) = &s.threads
            && !(1..=MAX_THREADS).contains(t.get_ref())
        {
            errors.push(m.diagnostic(
                t.span().start,
                format!("{skey} > threads"),
                format!("`threads` must be between 1 and {MAX_THREADS}"),
            ));
        }
        if let Some(q) = &s.queue_size {
            let why = if role == Role::Source {
                Some("a source has no input queue: remove `queue_size`")
            } else if *q.get_ref() == 0 {
                Some("`queue_size` must be at least 1")
            } else {
                None
            };
            if let Some(why) = why {
                errors.push(m.diagnostic(q.span().start, format!("{skey} > queue_size"), why));
            }
        }
        let partitioned = s.partitioned.as_ref().is_some_and(|p| *p.get_ref());
        if let Some(p) = &s.partitioned
            && role != Role::Source
        {
            errors.push(m.diagnostic(
                p.span().start,
                format!("{skey} > partitioned"),
                "only a source is partitioned",
            ));
        }
        if role == Role::Source && s.threads() > 1 && !partitioned {
            let at = s
                .threads
                .as_ref()
                .map_or(name.span().start, |t| t.span().start);
            errors.push(m.diagnostic(
                at,
                format!("{skey} > threads"),
                format!(
                    "a source with {} workers would produce every item {} times: set `partitioned = true` if each worker reads its own share (by its worker index), or use `threads = 1`",
                    s.threads(),
                    s.threads()
                ),
            ));
        }
        check_supervision(m, &skey, &s.keys(), errors);
    }
}
