//! Reading a manifest file: TOML syntax first, then each top-level item
//! deserialized on its own so that one bad `[[context]]` does not hide the
//! errors of the next. Every error carries the file, line, column and key.

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::{
    ContextDecl, DataframeDecl, Diagnostic, Diagnostics, HostSection, MANIFEST_VERSION, Manifest,
};

/// Reads and parses the manifest at `path`, reporting every error found.
pub fn load(path: &Path) -> Result<Manifest, Diagnostics> {
    let source = std::fs::read_to_string(path).map_err(|e| {
        // No position: the problem is the file, not a place in it.
        let message = match e.kind() {
            std::io::ErrorKind::NotFound => String::from("manifest not found"),
            _ => format!("cannot read the manifest: {e}"),
        };
        Diagnostics(vec![Diagnostic {
            file: path.to_path_buf(),
            position: None,
            key: String::new(),
            message,
        }])
    })?;
    parse(path, source)
}

/// Parses manifest text; `path` is used in messages and to resolve relative paths.
pub fn parse(path: &Path, source: String) -> Result<Manifest, Diagnostics> {
    let mut manifest = Manifest {
        path: path.to_path_buf(),
        line_starts: super::line_starts(&source),
        configs: std::collections::BTreeMap::new(),
        source,
        host: HostSection::default(),
        dataframes: Vec::new(),
        contexts: Vec::new(),
        flows: Vec::new(),
        pipelines: Vec::new(),
    };
    let text = manifest.source.clone();
    let (root, syntax) = DeTable::parse_recoverable(&text);
    if !syntax.is_empty() {
        let errors = syntax
            .iter()
            .map(|e| {
                // The parser gives no position for a key of too many dotted
                // parts ("recursion limit"): that error is at the deepest key.
                let at = e.span().map_or_else(|| deepest_key(&text), |s| s.start);
                manifest.diagnostic(at, "(syntax)", format!("invalid TOML: {}", e.message()))
            })
            .collect();
        return Err(Diagnostics(errors));
    }

    let mut errors = Vec::new();
    let mut version_seen = false;
    let root_span = root.span();
    for (key, value) in root.into_inner() {
        let at = key.span().start;
        match key.get_ref().as_ref() {
            "version" => {
                version_seen = true;
                let at = value.span().start;
                match item::<i64>(value) {
                    Ok(MANIFEST_VERSION) => {}
                    _ => errors.push(manifest.diagnostic(
                        at,
                        "version",
                        format!("unsupported manifest version, expected `version = {MANIFEST_VERSION}`"),
                    )),
                }
            }
            "host" => match item::<HostSection>(value) {
                Ok(h) => manifest.host = h,
                Err((at, msg)) => errors.push(manifest.diagnostic(at, "host", msg)),
            },
            "dataframe" => {
                for (i, v) in array_items(&manifest, value, "dataframe", &mut errors).into_iter().enumerate() {
                    match item::<DataframeDecl>(v) {
                        Ok(d) => manifest.dataframes.push(d),
                        Err((at, msg)) => {
                            errors.push(manifest.diagnostic(at, format!("dataframe #{}", i + 1), msg));
                        }
                    }
                }
            }
            "context" => {
                for (i, v) in array_items(&manifest, value, "context", &mut errors).into_iter().enumerate() {
                    let label = item_label(&v, "context", i);
                    super::config::SpanTree::collect(&v, &mut manifest.configs);
                    match item::<ContextDecl>(v) {
                        Ok(c) => manifest.contexts.push(c),
                        Err((at, msg)) => errors.push(manifest.diagnostic(at, label, msg)),
                    }
                }
            }
            "flow" => {
                for (i, v) in array_items(&manifest, value, "flow", &mut errors).into_iter().enumerate() {
                    let label = item_label(&v, "flow", i);
                    super::config::SpanTree::collect(&v, &mut manifest.configs);
                    match item::<super::flow::FlowDecl>(v) {
                        Ok(f) => manifest.flows.push(f),
                        Err((at, msg)) => errors.push(manifest.diagnostic(at, label, msg)),
                    }
                }
            }
            "pipeline" => {
                for (i, v) in array_items(&manifest, value, "pipeline", &mut errors).into_iter().enumerate() {
                    let label = item_label(&v, "pipeline", i);
                    super::config::SpanTree::collect(&v, &mut manifest.configs);
                    match item::<super::pipeline::PipelineDecl>(v) {
                        Ok(p) => manifest.pipelines.push(p),
                        Err((at, msg)) => errors.push(manifest.diagnostic(at, label, msg)),
                    }
                }
            }
            other => errors.push(manifest.diagnostic(
                at,
                other,
                format!(
                    "unknown key `{other}`, expected one of `version`, `host`, `dataframe`, `context`, `pipeline`, `flow`"
                ),
            )),
        }
    }
    if !version_seen {
        errors.push(manifest.diagnostic(
            root_span.start,
            "version",
            format!("missing key `version`; add `version = {MANIFEST_VERSION}` at the top"),
        ));
    }
    if errors.is_empty() {
        Ok(manifest)
    } else {
        errors.sort_by_key(|d| d.position);
        Err(Diagnostics(errors))
    }
}

/// The byte offset of the first of the keys with the most dotted parts
/// (`a.b.c = 1`, `[a.b.c]`) in `text`, or 0 if it has no key.
fn deepest_key(text: &str) -> usize {
    use toml_parser::parser::EventReceiver;
    use toml_parser::{ErrorSink, Span};

    /// Counts the parts of each key as the parser reports them.
    #[derive(Default)]
    struct Deepest {
        /// (parts, start) of the key being read.
        current: Option<(usize, usize)>,
        /// (parts, start) of the deepest key so far.
        deepest: (usize, usize),
    }
    impl Deepest {
        fn end_key(&mut self) {
            if let Some(key) = self.current.take()
                && key.0 > self.deepest.0
            {
                self.deepest = key;
            }
        }
    }
    impl EventReceiver for Deepest {
        fn simple_key(
            &mut self,
            span: Span,
            _: Option<toml_parser::decoder::Encoding>,
            _: &mut dyn ErrorSink,
        ) {
            let (parts, start) = self.current.unwrap_or((0, span.start()));
            self.current = Some((parts + 1, start));
        }
        fn key_sep(&mut self, _: Span, _: &mut dyn ErrorSink) {}
        fn whitespace(&mut self, _: Span, _: &mut dyn ErrorSink) {}
        fn key_val_sep(&mut self, _: Span, _: &mut dyn ErrorSink) {
            self.end_key();
        }
        fn std_table_close(&mut self, _: Span, _: &mut dyn ErrorSink) {
            self.end_key();
        }
        fn array_table_close(&mut self, _: Span, _: &mut dyn ErrorSink) {
            self.end_key();
        }
        fn newline(&mut self, _: Span, _: &mut dyn ErrorSink) {
            self.end_key();
        }
    }

    let tokens = toml_parser::Source::new(text).lex().into_vec();
    let mut receiver = Deepest::default();
    toml_parser::parser::parse_document(&tokens, &mut receiver, &mut ());
    receiver.end_key();
    receiver.deepest.1
}

/// Deserializes one item, returning the error's byte offset and message.
fn item<T: for<'de> Deserialize<'de>>(value: Spanned<DeValue<'_>>) -> Result<T, (usize, String)> {
    let start = value.span().start;
    T::deserialize(ValueDeserializer::from(value)).map_err(|e| {
        let at = e.span().map_or(start, |s| s.start);
        (at, e.message().to_owned())
    })
}

/// The elements of an array of tables (`[[name]]`), reporting a non-array.
fn array_items<'i>(
    manifest: &Manifest,
    value: Spanned<DeValue<'i>>,
    name: &str,
    errors: &mut Vec<Diagnostic>,
) -> Vec<Spanned<DeValue<'i>>> {
    let at = value.span().start;
    match value.into_inner() {
        DeValue::Array(items) => items.iter().cloned().collect(),
        _ => {
            errors.push(manifest.diagnostic(
                at,
                name,
                format!("expected an array of tables: write `[[{name}]]`, not `[{name}]`"),
            ));
            Vec::new()
        }
    }
}

/// `<kind> "Name"` if the item has a string name, else `<kind> #n`.
fn item_label(value: &Spanned<DeValue<'_>>, kind: &str, index: usize) -> String {
    value
        .get_ref()
        .as_table()
        .and_then(|t| t.get("name"))
        .and_then(|n| n.get_ref().as_str())
        .map_or_else(
            || format!("{kind} #{}", index + 1),
            |n| format!("{kind} \"{}\"", super::shown(n)),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn errs(src: &str) -> Vec<String> {
        parse(&PathBuf::from("m.toml"), src.to_owned())
            .unwrap_err()
            .0
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_good_manifest_parses() {
        let src = r#"
version = 1
[host]
log_level = "debug"
shutdown_timeout = "2s"
[[dataframe]]
name = "counter"
init = { count = 0 }
[[context]]
name = "Main"
period = "10ms"
dataframes = ["counter"]
[[context.trigger]]
name = "t"
condition = [ { plugin = "p", export = "C" } ]
service = [ { plugin = "p", export = "S" } ]
[[context.service]]
name = "s"
plugin = "p"
export = "S"
config = { key = "count" }
"#;
        let m = parse(&PathBuf::from("m.toml"), src.to_owned()).unwrap();
        assert_eq!(m.contexts.len(), 1);
        assert_eq!(m.shutdown_timeout(), std::time::Duration::from_secs(2));
        let order: Vec<_> = m.contexts[0]
            .entries()
            .iter()
            .map(|e| e.name().get_ref().clone())
            .collect();
        assert_eq!(order, ["t", "s"]);
    }

    #[test]
    fn every_bad_context_is_reported_with_its_line() {
        let src = "version = 1\n[[context]]\nname = \"A\"\nperod = \"1s\"\n[[context]]\nname = \"B\"\nperiod = \"5 parsecs\"\n";
        let e = errs(src);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].starts_with("m.toml:4:1: context \"A\": unknown field `perod`"),
            "{}",
            e[0]
        );
        assert!(
            e[1].starts_with("m.toml:7:10: context \"B\": invalid duration `5 parsecs`"),
            "{}",
            e[1]
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let e = errs("version = 1\n[[context]\n");
        assert!(e[0].starts_with("m.toml:2:"), "{e:?}");
        assert!(e[0].contains("invalid TOML"), "{e:?}");
    }

    #[test]
    fn a_too_deep_dotted_key_is_reported_at_the_key() {
        let deep = "a.".repeat(200);
        let e = errs(&format!(
            "version = 1\n[host]\n  {deep}b = 1\nx = {{ y.z = 1 }}\n"
        ));
        assert!(e[0].starts_with("m.toml:3:3: (syntax)"), "{e:?}");
        let e = errs(&format!("version = 1\n\n[{deep}b]\n"));
        assert!(e[0].starts_with("m.toml:3:2: (syntax)"), "{e:?}");
    }

    #[test]
    fn missing_version_is_an_error() {
        let e = errs("[host]\n");
        assert!(e[0].contains("missing key `version`"), "{e:?}");
    }
}
