//! Cross-checks of a parsed manifest that the types alone cannot express:
//! unique names, dataframes that exist, triggers that have conditions and
//! services. Plugins, exports and configs are checked when they are loaded
//! ([`crate::deploy`]).

use std::collections::HashMap;

use super::{Diagnostic, EntryDecl, Manifest, SupervisionKeys};

/// Every cross-reference problem in the manifest.
pub fn validate(m: &Manifest) -> Vec<Diagnostic> {
    let mut errors = Vec::new();

    let mut dataframes = HashMap::new();
    for d in &m.dataframes {
        let name = d.name.get_ref();
        if let Some(first) = dataframes.insert(name.as_str(), d.name.span().start) {
            let (line, _) = super::line_column(&m.source, first);
            errors.push(m.diagnostic(
                d.name.span().start,
                format!("dataframe \"{name}\" > name"),
                format!("duplicate dataframe name `{name}` (first declared on line {line})"),
            ));
        }
        if name.is_empty() {
            errors.push(m.diagnostic(
                d.name.span().start,
                "dataframe > name",
                "a name must not be empty",
            ));
        }
    }

    let mut contexts = HashMap::new();
    for c in &m.contexts {
        let cname = c.name.get_ref();
        let ckey = format!("context \"{cname}\"");
        if cname.is_empty() {
            errors.push(m.diagnostic(
                c.name.span().start,
                format!("{ckey} > name"),
                "a name must not be empty",
            ));
        }
        if let Some(first) = contexts.insert(cname.as_str(), c.name.span().start) {
            let (line, _) = super::line_column(&m.source, first);
            errors.push(m.diagnostic(
                c.name.span().start,
                format!("{ckey} > name"),
                format!("duplicate context name `{cname}` (first declared on line {line})"),
            ));
        }
        for d in &c.dataframes {
            if !dataframes.contains_key(d.get_ref().as_str()) {
                errors.push(m.diagnostic(
                    d.span().start,
                    format!("{ckey} > dataframes"),
                    format!(
                        "unknown dataframe `{}`; declared dataframes: {}",
                        d.get_ref(),
                        list(m.dataframes.iter().map(|d| d.name.get_ref().as_str()))
                    ),
                ));
            }
        }

        let mut names: HashMap<&str, usize> = HashMap::new();
        for entry in c.entries() {
            let name = entry.name();
            let (kind, what) = match entry {
                EntryDecl::Service(_) => ("service", "service"),
                EntryDecl::Trigger(_) => ("trigger", "trigger"),
            };
            let key = format!("{ckey} > {kind} \"{}\"", name.get_ref());
            if name.get_ref().is_empty() {
                errors.push(m.diagnostic(
                    name.span().start,
                    format!("{key} > name"),
                    "a name must not be empty",
                ));
            }
            if let Some(first) = names.insert(name.get_ref().as_str(), name.span().start) {
                let (line, _) = super::line_column(&m.source, first);
                errors.push(m.diagnostic(
                    name.span().start,
                    format!("{key} > name"),
                    format!(
                        "duplicate name `{}` in context `{cname}` (first used on line {line}); services and triggers share one namespace",
                        name.get_ref()
                    ),
                ));
            }
            match entry {
                EntryDecl::Service(s) => check_supervision(m, &key, &s.keys(), &mut errors),
                EntryDecl::Trigger(t) => {
                    for (i, e) in t.condition.iter().chain(&t.service).enumerate() {
                        check_supervision(
                            m,
                            &format!("{key} > #{}", i + 1),
                            &e.get_ref().keys(),
                            &mut errors,
                        );
                    }
                }
            }
            if let EntryDecl::Trigger(t) = entry {
                if t.condition.is_empty() {
                    errors.push(m.diagnostic(
                        name.span().start,
                        format!("{key} > condition"),
                        format!("{what} `{}` has no condition; add `condition = [ {{ plugin = ..., export = ... }} ]`", name.get_ref()),
                    ));
                }
                if t.service.is_empty() {
                    errors.push(m.diagnostic(
                        name.span().start,
                        format!("{key} > service"),
                        format!("{what} `{}` has no service to run when it fires; add `service = [ {{ plugin = ..., export = ... }} ]`", name.get_ref()),
                    ));
                }
            }
        }
    }
    errors.sort_by_key(|d| (d.line, d.column));
    errors
}

/// Durations that must be positive, and a delay cap that must not be below the delay.
fn check_supervision(
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

fn list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<String> = names.map(|n| format!("`{n}`")).collect();
    if v.is_empty() {
        String::from("(none)")
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
