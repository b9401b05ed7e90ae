//! Cross-checks of a parsed manifest that the types alone cannot express:
//! unique names made of allowed characters, dataframes that exist, triggers
//! that have conditions and services. Plugins, exports and configs are checked when they are loaded
//! ([`crate::plan`]).

use std::collections::HashMap;

use toml::Spanned;

use super::{
    Diagnostic, EntryDecl, ExitWhen, Manifest, ServiceDecl, SupervisionKeys, name_error, shown,
};

/// Every cross-reference problem in the manifest.
pub fn validate(m: &Manifest) -> Vec<Diagnostic> {
    let mut errors = Vec::new();

    let mut dataframes = HashMap::new();
    for d in &m.dataframes {
        let name = d.name.get_ref();
        let shown = shown(name);
        if let Some(first) = first_of(&mut dataframes, name, d.name.span().start) {
            let (line, _) = m.line_column(first);
            errors.push(m.diagnostic(
                d.name.span().start,
                format!("dataframe \"{shown}\" > name"),
                format!("duplicate dataframe name `{shown}` (first declared on line {line})"),
            ));
        }
        check_name(m, &d.name, "dataframe > name", &mut errors);
    }

    let mut contexts = HashMap::new();
    for c in &m.contexts {
        let cname = shown(c.name.get_ref());
        let ckey = format!("context \"{cname}\"");
        check_name(m, &c.name, &format!("{ckey} > name"), &mut errors);
        if let Some(first) = first_of(&mut contexts, c.name.get_ref(), c.name.span().start) {
            let (line, _) = m.line_column(first);
            errors.push(m.diagnostic(
                c.name.span().start,
                format!("{ckey} > name"),
                format!("duplicate context name `{cname}` (first declared on line {line})"),
            ));
        }
        check_dataframes(m, &ckey, &c.dataframes, &dataframes, &mut errors);

        let mut names: HashMap<&str, usize> = HashMap::new();
        for entry in c.entries() {
            let name = entry.name();
            let (kind, what) = match entry {
                EntryDecl::Service(_) => ("service", "service"),
                EntryDecl::Trigger(_) => ("trigger", "trigger"),
            };
            let shown_name = shown(name.get_ref());
            let key = format!("{ckey} > {kind} \"{shown_name}\"");
            check_name(m, name, &format!("{key} > name"), &mut errors);
            if let Some(first) = first_of(&mut names, name.get_ref(), name.span().start) {
                let (line, _) = m.line_column(first);
                errors.push(m.diagnostic(
                    name.span().start,
                    format!("{key} > name"),
                    format!(
                        "duplicate name `{shown_name}` in context `{cname}` (first used on line {line}); services and triggers share one namespace"
                    ),
                ));
            }
            match entry {
                EntryDecl::Service(s) => check_supervision(m, &key, &s.keys(), &mut errors),
                EntryDecl::Trigger(t) => {
                    let conditions = t
                        .condition
                        .iter()
                        .enumerate()
                        .map(|(i, e)| ("condition", i, e));
                    let services = t.service.iter().enumerate().map(|(i, e)| ("service", i, e));
                    for (what, i, e) in conditions.chain(services) {
                        // The same key as `plan::build` uses for the entry.
                        let ekey = format!("{key} > {what} #{}", i + 1);
                        if let Some(n) = &e.get_ref().name {
                            check_name(m, n, &format!("{ekey} > name"), &mut errors);
                        }
                        check_supervision(m, &ekey, &e.get_ref().keys(), &mut errors);
                    }
                }
            }
            if let EntryDecl::Trigger(t) = entry {
                if t.condition.is_empty() {
                    errors.push(m.diagnostic(
                        name.span().start,
                        format!("{key} > condition"),
                        format!("{what} `{shown_name}` has no condition; add `condition = [ {{ plugin = ..., export = ... }} ]`"),
                    ));
                }
                if t.service.is_empty() {
                    errors.push(m.diagnostic(
                        name.span().start,
                        format!("{key} > service"),
                        format!("{what} `{shown_name}` has no service to run when it fires; add `service = [ {{ plugin = ..., export = ... }} ]`"),
                    ));
                }
            }
        }
    }
    super::pipeline::validate(m, &contexts, &dataframes, &mut errors);
    check_exit_when(m, &mut errors);
    errors.sort_by_key(|d| d.position);
    errors
}

/// Every listed dataframe (of the context or pipeline `key`) must be declared.
pub(super) fn check_dataframes(
    m: &Manifest,
    key: &str,
    listed: &[Spanned<String>],
    declared: &HashMap<&str, usize>,
    errors: &mut Vec<Diagnostic>,
) {
    for d in listed {
        if !declared.contains_key(d.get_ref().as_str()) {
            errors.push(m.diagnostic(
                d.span().start,
                format!("{key} > dataframes"),
                format!(
                    "unknown dataframe `{}`; declared dataframes: {}",
                    shown(d.get_ref()),
                    list(m.dataframes.iter().map(|d| d.name.get_ref().as_str()))
                ),
            ));
        }
    }
}

/// `exit_when = "main_once_done"` needs a service with `main_once = true`,
/// `"pipelines_finished"` a pipeline and `"flows_finished"` a flow.
fn check_exit_when(m: &Manifest, errors: &mut Vec<Diagnostic>) {
    if let Some(e) = &m.host.exit_when
        && *e.get_ref() == ExitWhen::MainOnceDone
        && !m
            .contexts
            .iter()
            .flat_map(|c| &c.services)
            .any(ServiceDecl::main_once)
    {
        errors.push(m.diagnostic(
            e.span().start,
            "host > exit_when",
            "`exit_when = \"main_once_done\"` needs at least one service with `main_once = true`",
        ));
    }
    if let Some(e) = &m.host.exit_when
        && *e.get_ref() == ExitWhen::PipelinesFinished
        && m.pipelines.is_empty()
    {
        errors.push(m.diagnostic(
            e.span().start,
            "host > exit_when",
            "`exit_when = \"pipelines_finished\"` needs at least one `[[pipeline]]`",
        ));
    }
    if let Some(e) = &m.host.exit_when
        && *e.get_ref() == ExitWhen::FlowsFinished
        && m.flows.is_empty()
    {
        errors.push(m.diagnostic(
            e.span().start,
            "host > exit_when",
            "`exit_when = \"flows_finished\"` needs at least one `[[flow]]`",
        ));
    }
}

/// Durations that must be positive, and a delay cap that must not be below the delay.
pub(super) fn check_supervision(
    m: &Manifest,
    key: &str,
    k: &SupervisionKeys<'_>,
    errors: &mut Vec<Diagnostic>,
) {
    for (name, value) in [
        ("watchdog", k.watchdog),
        ("startup_timeout", k.startup_timeout),
        ("shutdown_timeout", k.shutdown_timeout),
        ("restart_window", k.restart_window),
    ] {
        if let Some(v) = value
            && v.get_ref().0.is_zero()
        {
            errors.push(m.diagnostic(
                v.span().start,
                format!("{key} > {name}"),
                format!("`{name}` must be longer than 0"),
            ));
        }
    }
    if let (Some(delay), Some(cap)) = (k.restart_delay, k.max_restart_delay)
        && cap.get_ref().0 < delay.get_ref().0
    {
        errors.push(m.diagnostic(
            cap.span().start,
            format!("{key} > max_restart_delay"),
            "`max_restart_delay` must not be shorter than `restart_delay`",
        ));
    }
}

/// Records where `name` is first declared; for a name seen before, returns
/// the offset of its first declaration (not of the previous duplicate).
pub(super) fn first_of<'a>(
    seen: &mut HashMap<&'a str, usize>,
    name: &'a str,
    at: usize,
) -> Option<usize> {
    match seen.entry(name) {
        std::collections::hash_map::Entry::Occupied(e) => Some(*e.get()),
        std::collections::hash_map::Entry::Vacant(e) => {
            e.insert(at);
            None
        }
    }
}

/// A name that is empty or has a character outside [`is_name_char`] is an error at the name.
pub(super) fn check_name(
    m: &Manifest,
    name: &Spanned<String>,
    key: &str,
    errors: &mut Vec<Diagnostic>,
) {
    if let Some(message) = name_error(name.get_ref()) {
        errors.push(m.diagnostic(name.span().start, key, message));
    }
}

/// Names for a message: the first few, and how many more (a message per
/// error that listed them all would make `check` quadratic in their number).
pub(super) fn list<'a>(names: impl ExactSizeIterator<Item = &'a str>) -> String {
    const SHOWN: usize = 10;
    let total = names.len();
    let v: Vec<String> = names
        .take(SHOWN)
        .map(|n| format!("`{}`", shown(n)))
        .collect();
    if v.is_empty() {
        String::from("(none)")
    } else if total > SHOWN {
        format!("{} and {} more", v.join(", "), total - SHOWN)
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn check(src: &str) -> Vec<String> {
        let m = super::super::load::parse(&PathBuf::from("m.toml"), src.to_owned()).unwrap();
        validate(&m).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn all_cross_reference_errors_are_reported() {
        let src = r#"version = 1
[[dataframe]]
name = "a"
[[context]]
name = "C"
dataframes = ["a", "nope"]
[[context.service]]
name = "x"
plugin = "p"
export = "S"
[[context.trigger]]
name = "x"
condition = []
service = [ { plugin = "p", export = "S" } ]
"#;
        let e = check(src);
        assert_eq!(e.len(), 3, "{e:#?}");
        assert!(
            e[0].starts_with("m.toml:6:20: context \"C\" > dataframes: unknown dataframe `nope`"),
            "{}",
            e[0]
        );
        assert!(
            e[1].contains("m.toml:12:8: context \"C\" > trigger \"x\" > name: duplicate name `x`"),
            "{}",
            e[1]
        );
        assert!(e[2].contains("has no condition"), "{}", e[2]);
    }
}
