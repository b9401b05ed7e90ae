//! `[[flow]]`: durable event flows, as the manifest declares them (pure
//! data), the expression syntax of expression events (`and(a, or(b, c))`)
//! and the cross-checks of a flow's names and references.
//!
//! A flow declares its events, its steps (a plugin export each, with a
//! `config`), associations from an event to steps and events (optionally
//! after a `delay`), expression events over other events, resource pools
//! and the events raised at start. Every reference (an association's event,
//! step or target event, an `on_success` / `on_failure` / `on_complete`
//! event, an expression's operand, a pool, a dataframe) must name something
//! declared; [`validate`] reports each one that does not with the file,
//! line and key.

use std::collections::HashMap;

use serde::Deserialize;
use toml::Spanned;

use super::policy::Restart;
use super::validate::{check_name, first_of, list};
use super::{Diagnostic, HumanDuration, Level, Manifest, name_error, shown};

/// How a flow's run starts: a new run, a recovery of an earlier one, or a
/// continuation of its pending work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunMode {
    /// A new run: the start events are raised (the default).
    #[default]
    Restart,
    /// The latest run (or `--run ID`) again: succeeded steps are skipped,
    /// failed and interrupted ones run again, pending work goes on.
    Recover,
    /// The latest run (or `--run ID`): only its pending activations and
    /// delays go on.
    Continue,
}

impl RunMode {
    /// The mode's name as written in the manifest and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            RunMode::Restart => "restart",
            RunMode::Recover => "recover",
            RunMode::Continue => "continue",
        }
    }
}

/// What `recover` does with a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recovery {
    /// Skip it if it succeeded, run it again if it failed or was interrupted.
    #[default]
    Auto,
    /// Run it again even if it succeeded.
    Rerun,
    /// Never run it again: keep its last result.
    Skip,
}

/// `[[flow]]`: one durable event flow.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowDecl {
    /// Unique among flows.
    pub name: Spanned<String>,
    /// The SQLite run store, relative to the manifest's folder (default: in
    /// memory, nothing survives the host).
    pub store: Option<Spanned<String>>,
    /// How the run starts (default `restart`; `otools run --mode` overrides it).
    pub mode: Option<Spanned<RunMode>>,
    /// After an unhandled failure, start no new step (default true).
    pub stop_on_error: Option<bool>,
    /// True: the run does not end when it goes idle; it waits for events
    /// raised by plugins or `otools raise` until the host stops (default false).
    pub keep_open: Option<bool>,
    /// The level of the flow's step logs (default: the host's).
    pub log_level: Option<Spanned<Level>>,
    /// The only dataframes the flow's steps may use.
    #[serde(default)]
    pub dataframes: Vec<Spanned<String>>,
    /// The flow's plain events.
    #[serde(default)]
    pub events: Vec<Spanned<String>>,
    /// Events raised when a new run starts: `event` (sequence `0`) or `event/sequence`.
    #[serde(default)]
    pub start: Vec<Spanned<String>>,
    /// `[[flow.step]]`.
    #[serde(default, rename = "step")]
    pub steps: Vec<StepDecl>,
    /// `[[flow.association]]`.
    #[serde(default, rename = "association")]
    pub associations: Vec<AssociationDecl>,
    /// `[[flow.expression]]`.
    #[serde(default, rename = "expression")]
    pub expressions: Vec<ExpressionDecl>,
    /// `[[flow.pool]]`.
    #[serde(default, rename = "pool")]
    pub pools: Vec<PoolDecl>,
}

/// `[[flow.step]]`: a plugin step and how it is run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepDecl {
    /// Unique within the flow.
    pub name: Spanned<String>,
    /// A library name looked up in `plugin_dir`, or a path to a library.
    pub plugin: Spanned<String>,
    /// Which of the library's steps.
    pub export: Spanned<String>,
    /// Handed to the plugin, which deserializes it into the step's config type.
    pub config: Option<Spanned<toml::Table>>,
    /// Longest one run may take; overrunning it is a failure (default: not watched).
    pub watchdog: Option<Spanned<HumanDuration>>,
    /// How many more attempts a failed activation gets (default 0).
    pub retries: Option<u32>,
    /// `on-failure` (the default: a failed activation gets its retries) or
    /// `never` (no retry); `always` is refused (a step that succeeded never
    /// runs again).
    pub restart: Option<Spanned<Restart>>,
    /// The service key for `retries` (the same thing; give one of the two).
    pub max_restarts: Option<Spanned<u32>>,
    /// Only an activation's failures within this window count against its
    /// retries (default: every failure counts).
    pub restart_window: Option<Spanned<HumanDuration>>,
    /// Delay before the first retry, doubled for each next one (default 0:
    /// at once).
    pub restart_delay: Option<Spanned<HumanDuration>>,
    /// Cap of the doubling retry delay (default 30s).
    pub max_restart_delay: Option<Spanned<HumanDuration>>,
    /// A service key that does not apply to a step: refused, saying why.
    pub startup_timeout: Option<Spanned<toml::Value>>,
    /// A service key that does not apply to a step: refused, saying why.
    pub shutdown_timeout: Option<Spanned<toml::Value>>,
    /// A service key that does not apply to a step: refused, saying why.
    pub backoff_reset_after: Option<Spanned<toml::Value>>,
    /// A service key that does not apply to a step: refused, saying why.
    pub on_give_up: Option<Spanned<toml::Value>>,
    /// At most this many activations of the step run at once (default: no limit).
    pub max_concurrent: Option<Spanned<u32>>,
    /// Pools the step holds one unit of while it runs.
    #[serde(default)]
    pub pools: Vec<Spanned<String>>,
    /// Raised (same sequence) when the step succeeds.
    pub on_success: Option<Spanned<String>>,
    /// Raised when the step fails: the failure is then handled.
    pub on_failure: Option<Spanned<String>>,
    /// Raised when the step ends, either way.
    pub on_complete: Option<Spanned<String>>,
    /// Overrides the flow's `stop_on_error` for this step's failures.
    pub stop_on_error: Option<bool>,
    /// What `recover` does with the step (default `auto`).
    pub recovery: Option<Recovery>,
    /// False: an activation interrupted by the host's death is failed by
    /// `recover`, not run again (default true).
    pub idempotent: Option<bool>,
}

/// `[[flow.association]]`: when `event` is raised, activate `steps` and
/// raise `events` with its sequence, at once or after `delay`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssociationDecl {
    /// The event that activates the association.
    pub event: Spanned<String>,
    /// Steps activated.
    #[serde(default)]
    pub steps: Vec<Spanned<String>>,
    /// Events raised.
    #[serde(default)]
    pub events: Vec<Spanned<String>>,
    /// Wait this long first (persisted in the store with its due time).
    pub delay: Option<Spanned<HumanDuration>>,
}

/// `[[flow.expression]]`: an event raised, once per sequence, when its
/// expression over other events becomes true for that sequence.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpressionDecl {
    /// The expression event's name (events and expressions share one namespace).
    pub name: Spanned<String>,
    /// `and(a, b, ...)`, `or(a, b, ...)` or an event name, nestable.
    pub expr: Spanned<String>,
}

/// `[[flow.pool]]`: a resource pool of `limit` units.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolDecl {
    /// Unique within the flow.
    pub name: Spanned<String>,
    /// How many units (at least 1).
    pub limit: Spanned<u32>,
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// True once the event was raised for the sequence.
    Event(String),
    /// True once every operand is.
    And(Vec<Expr>),
    /// True once any operand is.
    Or(Vec<Expr>),
}

impl Expr {
    /// Parses `and(a, or(b, c))`; the error says what is wrong and where
    /// (a character offset into `text`).
    pub fn parse(text: &str) -> Result<Expr, (usize, String)> {
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        let mut p = Parser { chars, at: 0 };
        let e = p.expr()?;
        p.space();
        if let Some(&(i, c)) = p.chars.get(p.at) {
            return Err((
                i,
                format!("unexpected `{}` after the expression", c.escape_debug()),
            ));
        }
        Ok(e)
    }

    /// Every event name the expression mentions.
    pub fn events(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Expr::Event(e) => out.push(e),
            Expr::And(v) | Expr::Or(v) => v.iter().for_each(|e| e.collect(out)),
        }
    }
}

struct Parser {
    chars: Vec<(usize, char)>,
    at: usize,
}

impl Parser {
    fn space(&mut self) {
        while self
            .chars
            .get(self.at)
            .is_some_and(|(_, c)| c.is_whitespace())
        {
            self.at += 1;
        }
    }

    fn offset(&self) -> usize {
        self.chars.get(self.at).map_or_else(
            || self.chars.last().map_or(0, |(i, c)| i + c.len_utf8()),
            |(i, _)| *i,
        )
    }

    fn expr(&mut self) -> Result<Expr, (usize, String)> {
        self.space();
        let start = self.at;
        while self
            .chars
            .get(self.at)
            .is_some_and(|(_, c)| super::is_name_char(*c))
        {
            self.at += 1;
        }
        let word: String = self.chars[start..self.at].iter().map(|(_, c)| c).collect();
        let word_at = self.chars.get(start).map_or(self.offset(), |(i, _)| *i);
        self.space();
        if self.chars.get(self.at).is_some_and(|(_, c)| *c == '(') {
            self.at += 1;
            let mut operands = Vec::new();
            loop {
                operands.push(self.expr()?);
                self.space();
                match self.chars.get(self.at) {
                    Some((_, ',')) => self.at += 1,
                    Some((_, ')')) => {
                        self.at += 1;
                        break;
                    }
                    Some(&(i, c)) => {
                        return Err((
                            i,
                            format!("expected `,` or `)`, found `{}`", c.escape_debug()),
                        ));
                    }
                    None => return Err((self.offset(), String::from("missing `)`"))),
                }
            }
            return match word.as_str() {
                "and" => Ok(Expr::And(operands)),
                "or" => Ok(Expr::Or(operands)),
                _ => Err((
                    word_at,
                    format!(
                        "unknown operator `{}`: expected `and` or `or`",
                        shown(&word)
                    ),
                )),
            };
        }
        if word.is_empty() {
            return Err((
                self.offset(),
                String::from("expected an event name, `and(...)` or `or(...)`"),
            ));
        }
        Ok(Expr::Event(word))
    }
}

/// Splits a start entry `event` or `event/sequence` (sequence `0` by default).
pub fn split_start(entry: &str) -> (&str, &str) {
    entry.split_once('/').unwrap_or((entry, "0"))
}

/// Every problem of the manifest's flows: names, duplicates and references.
pub fn validate(m: &Manifest) -> Vec<Diagnostic> {
    let mut errors = Vec::new();
    let mut flows = HashMap::new();
    for f in &m.flows {
        let fkey = format!("flow \"{}\"", shown(f.name.get_ref()));
        check_name(m, &f.name, &format!("{fkey} > name"), &mut errors);
        if let Some(first) = first_of(&mut flows, f.name.get_ref(), f.name.span().start) {
            let (line, _) = m.line_column(first);
            errors.push(m.diagnostic(
                f.name.span().start,
                format!("{fkey} > name"),
                format!(
                    "duplicate flow name `{}` (first declared on line {line})",
                    shown(f.name.get_ref())
                ),
            ));
        }
        FlowCheck {
            m,
            f,
            key: fkey,
            errors: &mut errors,
        }
        .run();
    }
    errors
}

struct FlowCheck<'a> {
    m: &'a Manifest,
    f: &'a FlowDecl,
    key: String,
    errors: &'a mut Vec<Diagnostic>,
}

impl FlowCheck<'_> {
    fn error(&mut self, at: usize, key: String, message: String) {
        self.errors.push(self.m.diagnostic(at, key, message));
    }

    /// Records `names` as one namespace, reporting bad and duplicate names.
    fn names<'n>(
        &mut self,
        names: impl Iterator<Item = (&'n Spanned<String>, &'static str)>,
    ) -> HashMap<&'n str, usize> {
        let mut seen = HashMap::new();
        for (n, what) in names {
            let key = format!("{} > {what} \"{}\"", self.key, shown(n.get_ref()));
            check_name(self.m, n, &key, self.errors);
            if let Some(first) = first_of(&mut seen, n.get_ref(), n.span().start) {
                let (line, _) = self.m.line_column(first);
                self.error(
                    n.span().start,
                    key,
                    format!(
                        "duplicate {what} name `{}` in flow `{}` (first declared on line {line})",
                        shown(n.get_ref()),
                        shown(self.f.name.get_ref())
                    ),
                );
            }
        }
        seen
    }

    fn reference(
        &mut self,
        known: &HashMap<&str, usize>,
        name: &Spanned<String>,
        what: &str,
        key: String,
    ) {
        if !known.contains_key(name.get_ref().as_str()) {
            let mut names: Vec<&str> = known.keys().copied().collect();
            names.sort_unstable();
            let message = format!(
                "unknown {what} `{}` in flow `{}`; its {what}s: {}",
                shown(name.get_ref()),
                shown(self.f.name.get_ref()),
                list(names.into_iter())
            );
            self.error(name.span().start, key, message);
        }
    }

    fn run(&mut self) {
        let f = self.f;
        let events = self.names(
            f.events
                .iter()
                .map(|e| (e, "event"))
                .chain(f.expressions.iter().map(|x| (&x.name, "event"))),
        );
        let steps = self.names(f.steps.iter().map(|s| (&s.name, "step")));
        let pools = self.names(f.pools.iter().map(|p| (&p.name, "pool")));
        let dataframes: HashMap<&str, usize> = self
            .m
            .dataframes
            .iter()
            .map(|d| (d.name.get_ref().as_str(), 0))
            .collect();
        let key = self.key.clone();
        for d in &f.dataframes {
            self.reference(&dataframes, d, "dataframe", format!("{key} > dataframes"));
        }
        for s in &f.start {
            let (event, sequence) = split_start(s.get_ref());
            if sequence.is_empty() {
                self.error(
                    s.span().start,
                    format!("{key} > start"),
                    format!("`{}` has an empty sequence after `/`", shown(s.get_ref())),
                );
            }
            let e = Spanned::new(s.span(), event.to_owned());
            self.reference(&events, &e, "event", format!("{key} > start"));
        }
        for p in &f.pools {
            if *p.limit.get_ref() == 0 {
                self.error(
                    p.limit.span().start,
                    format!("{key} > pool \"{}\" > limit", shown(p.name.get_ref())),
                    String::from("`limit` must be at least 1"),
                );
            }
        }
        for s in &f.steps {
            let skey = format!("{key} > step \"{}\"", shown(s.name.get_ref()));
            for (k, v) in [
                ("on_success", &s.on_success),
                ("on_failure", &s.on_failure),
                ("on_complete", &s.on_complete),
            ] {
                if let Some(v) = v {
                    self.reference(&events, v, "event", format!("{skey} > {k}"));
                }
            }
            for p in &s.pools {
                self.reference(&pools, p, "pool", format!("{skey} > pools"));
            }
            if let Some(mc) = &s.max_concurrent
                && *mc.get_ref() == 0
            {
                self.error(
                    mc.span().start,
                    format!("{skey} > max_concurrent"),
                    String::from("`max_concurrent` must be at least 1"),
                );
            }
            if let Some(w) = &s.watchdog
                && w.get_ref().0.is_zero()
            {
                self.error(
                    w.span().start,
                    format!("{skey} > watchdog"),
                    String::from("`watchdog` must be longer than 0s"),
                );
            }
            self.supervision(s, &skey);
        }
        for (i, a) in f.associations.iter().enumerate() {
            let akey = format!("{key} > association #{}", i + 1);
            self.reference(&events, &a.event, "event", format!("{akey} > event"));
            for s in &a.steps {
                self.reference(&steps, s, "step", format!("{akey} > steps"));
            }
            for e in &a.events {
                self.reference(&events, e, "event", format!("{akey} > events"));
            }
            if a.steps.is_empty() && a.events.is_empty() {
                self.error(
                    a.event.span().start,
                    akey,
                    String::from("an association needs `steps` or `events` (or both)"),
                );
            }
        }
        self.expressions(&events);
    }

    /// The supervision keys of a step: those that apply (retries and their
    /// delays, `restart = "never"`) must agree; the service keys that do
    /// not apply to a step are refused, each saying why.
    fn supervision(&mut self, s: &StepDecl, skey: &str) {
        let retries = s.retries.or(s.max_restarts.as_ref().map(|m| *m.get_ref()));
        if let (Some(_), Some(m)) = (s.retries, &s.max_restarts) {
            self.error(
                m.span().start,
                format!("{skey} > max_restarts"),
                String::from(
                    "give `retries` or `max_restarts`, not both (for a step they are the same)",
                ),
            );
        }
        if let Some(r) = &s.restart {
            let message = match r.get_ref() {
                Restart::Always => Some(String::from(
                    "`restart = \"always\"` does not apply to a step: an activation that succeeded never runs again; use `on-failure` (the default: failures get `retries`) or `never`",
                )),
                Restart::Never if retries.is_some_and(|n| n > 0) => Some(String::from(
                    "`restart = \"never\"` contradicts `retries`/`max_restarts` above 0: give one of them",
                )),
                _ => None,
            };
            if let Some(message) = message {
                self.error(r.span().start, format!("{skey} > restart"), message);
            }
        }
        for (k, v, why) in [
            (
                "startup_timeout",
                &s.startup_timeout,
                "a step has no `setup`: it is built once from its config, at load",
            ),
            (
                "shutdown_timeout",
                &s.shutdown_timeout,
                "a step has no `finalize`; once the host stops, running steps get `[host] shutdown_timeout`",
            ),
            (
                "backoff_reset_after",
                &s.backoff_reset_after,
                "a step's retry delay doubles per activation and starts over with the next one",
            ),
            (
                "on_give_up",
                &s.on_give_up,
                "a failure after the last retry is routed by `on_failure`, else it fails the flow (`stop_on_error`)",
            ),
        ] {
            if let Some(v) = v {
                self.error(
                    v.span().start,
                    format!("{skey} > {k}"),
                    format!("`{k}` does not apply to a step: {why}"),
                );
            }
        }
    }

    /// Each expression parses, names known events, and no expression
    /// depends on itself (directly or through other expressions).
    fn expressions(&mut self, events: &HashMap<&str, usize>) {
        let key = self.key.clone();
        let mut parsed: HashMap<&str, Vec<String>> = HashMap::new();
        for x in &self.f.expressions {
            let xkey = format!("{key} > expression \"{}\" > expr", shown(x.name.get_ref()));
            // The string's content starts after its opening quote.
            let at = x.expr.span().start + 1;
            match Expr::parse(x.expr.get_ref()) {
                Err((offset, message)) => self.error(at + offset, xkey, message),
                Ok(e) => {
                    let names: Vec<String> = e.events().into_iter().map(String::from).collect();
                    for n in &names {
                        if let Some(message) = name_error(n) {
                            self.error(x.expr.span().start, xkey.clone(), message);
                        }
                        let spanned = Spanned::new(x.expr.span(), n.clone());
                        self.reference(events, &spanned, "event", xkey.clone());
                    }
                    parsed.insert(x.name.get_ref(), names);
                }
            }
        }
        for x in &self.f.expressions {
            let me = x.name.get_ref().as_str();
            let mut stack: Vec<&str> = parsed
                .get(me)
                .map_or(Vec::new(), |v| v.iter().map(String::as_str).collect());
            let mut seen: Vec<&str> = Vec::new();
            while let Some(n) = stack.pop() {
                if n == me {
                    self.error(
                        x.expr.span().start,
                        format!("{key} > expression \"{}\" > expr", shown(me)),
                        format!("expression `{}` depends on itself", shown(me)),
                    );
                    break;
                }
                if seen.contains(&n) {
                    continue;
                }
                seen.push(n);
                if let Some(v) = parsed.get(n) {
                    stack.extend(v.iter().map(String::as_str));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_parse_nested_and_or() {
        let e = Expr::parse("and(a, or(b, c.d))").unwrap();
        assert_eq!(
            e,
            Expr::And(vec![
                Expr::Event("a".into()),
                Expr::Or(vec![Expr::Event("b".into()), Expr::Event("c.d".into())]),
            ])
        );
        assert_eq!(e.events(), vec!["a", "b", "c.d"]);
        assert_eq!(Expr::parse(" x ").unwrap(), Expr::Event("x".into()));
    }

    #[test]
    fn bad_expressions_say_where() {
        assert_eq!(Expr::parse("and(a b)").unwrap_err().0, 6);
        assert!(
            Expr::parse("xor(a, b)")
                .unwrap_err()
                .1
                .contains("unknown operator")
        );
        assert!(
            Expr::parse("and(a, b")
                .unwrap_err()
                .1
                .contains("missing `)`")
        );
        assert!(
            Expr::parse("and()")
                .unwrap_err()
                .1
                .contains("expected an event")
        );
        assert!(
            Expr::parse("a)")
                .unwrap_err()
                .1
                .contains("after the expression")
        );
    }

    #[test]
    fn start_entries_split_at_the_first_slash() {
        assert_eq!(split_start("go"), ("go", "0"));
        assert_eq!(split_start("go/1"), ("go", "1"));
        assert_eq!(split_start("go/a/b"), ("go", "a/b"));
    }
}
