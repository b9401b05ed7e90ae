//! A `config` table on its way to a plugin, and back to the manifest when
//! the plugin rejects it.
//!
//! The host hands a config to the plugin as JSON ([`ConfigJson`]). When the
//! plugin's serde rejects it, its message ends with serde_json's position in
//! that JSON (` at line 1 column N`); [`ConfigJson::locate`] turns it back into
//! the key path and the manifest position of the value (or key) concerned,
//! using the spans kept at load time ([`SpanTree`]). A message without a
//! position (a plugin built with an older `otools-api`, or an error from the
//! plugin's own `new`) stays at the `config` table.

use std::collections::BTreeMap;
use std::ops::Range;

use toml::Spanned;
use toml::de::DeValue;

/// Where each key and value inside a `config` table is in the manifest.
#[derive(Debug, Clone, Default)]
pub struct SpanTree {
    /// Byte offset of the key naming this value (none for the table itself and array items).
    key: Option<usize>,
    /// Byte offset of the value.
    value: usize,
    /// A table's entries.
    entries: BTreeMap<String, SpanTree>,
    /// An array's items.
    items: Vec<SpanTree>,
}

impl SpanTree {
    /// The spans of `value` and everything in it.
    pub(super) fn new(key: Option<usize>, value: &Spanned<DeValue<'_>>) -> SpanTree {
        let mut tree = SpanTree {
            key,
            value: value.span().start,
            ..SpanTree::default()
        };
        match value.get_ref() {
            DeValue::Table(t) => {
                for (k, v) in t.iter() {
                    let name: &str = k.get_ref().as_ref();
                    tree.entries
                        .insert(name.to_owned(), SpanTree::new(Some(k.span().start), v));
                }
            }
            DeValue::Array(a) => {
                tree.items = a.iter().map(|v| SpanTree::new(None, v)).collect();
            }
            _ => {}
        }
        tree
    }

    /// Every `config` table in `value` (a `[[context]]` and its services,
    /// triggers and stack entries, or a `[[flow]]` and its steps), by the
    /// byte offset of the table.
    pub(super) fn collect(value: &Spanned<DeValue<'_>>, out: &mut BTreeMap<usize, SpanTree>) {
        let Some(table) = value.get_ref().as_table() else {
            return;
        };
        for (k, v) in table.iter() {
            match k.get_ref().as_ref() {
                "config" => {
                    out.insert(v.span().start, SpanTree::new(None, v));
                }
                "service" | "trigger" | "condition" | "stage" | "step" => {
                    if let Some(items) = v.get_ref().as_array() {
                        for item in items.iter() {
                            SpanTree::collect(item, out);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// One step of a path into a config.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// A key or a value of the JSON, and where it came from in the config.
#[derive(Debug, Clone)]
struct Place {
    bytes: Range<usize>,
    path: Vec<Step>,
    is_key: bool,
}

/// A config as the JSON text handed to a plugin, with the place of every
/// key and value in that text.
#[derive(Debug, Clone, Default)]
pub struct ConfigJson {
    /// The JSON text.
    pub text: String,
    places: Vec<Place>,
}

/// Where a rejected config's problem is: the manifest offset, the key path
/// to add to the diagnostic's key (e.g. ` > step`), and the message without
/// its JSON position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// Byte offset in the manifest.
    pub at: usize,
    /// ` > a > b[2]`, or empty for the table itself.
    pub key: String,
    /// The plugin's message, without the JSON position.
    pub message: String,
}

impl ConfigJson {
    /// The JSON of `config` (`{}` for none).
    pub fn new(config: Option<&toml::Table>) -> ConfigJson {
        let mut json = ConfigJson::default();
        match config {
            Some(t) => json.table(t, &mut Vec::new()),
            None => json.text.push_str("{}"),
        }
        json
    }

    fn table(&mut self, t: &toml::Table, path: &mut Vec<Step>) {
        self.text.push('{');
        for (i, (k, v)) in t.iter().enumerate() {
            if i > 0 {
                self.text.push(',');
            }
            path.push(Step::Key(k.clone()));
            let start = self.text.len();
            self.text
                .push_str(&serde_json::Value::from(k.as_str()).to_string());
            self.places.push(Place {
                bytes: start..self.text.len(),
                path: path.clone(),
                is_key: true,
            });
            self.text.push(':');
            self.value(v, path);
            path.pop();
        }
        self.text.push('}');
    }

    fn value(&mut self, v: &toml::Value, path: &mut Vec<Step>) {
        let start = self.text.len();
        match v {
            toml::Value::Table(t) => self.table(t, path),
            toml::Value::Array(a) => {
                self.text.push('[');
                for (i, item) in a.iter().enumerate() {
                    if i > 0 {
                        self.text.push(',');
                    }
                    path.push(Step::Index(i));
                    self.value(item, path);
                    path.pop();
                }
                self.text.push(']');
            }
            scalar => self.text.push_str(&toml_to_json(scalar).to_string()),
        }
        self.places.push(Place {
            bytes: start..self.text.len(),
            path: path.clone(),
            is_key: false,
        });
    }

    /// Where the problem of a plugin's `message` about this config is, given
    /// the spans of the config table (`tree`) and the table's offset (`table_at`).
    pub fn locate(&self, message: &str, tree: Option<&SpanTree>, table_at: usize) -> Located {
        let whole = Located {
            at: table_at,
            key: String::new(),
            message: message.to_owned(),
        };
        let Some((text, column)) = split_position(message) else {
            return whole;
        };
        let whole = Located {
            message: text.to_owned(),
            ..whole
        };
        // serde_json's column counts the bytes consumed on the line: the
        // last one read is the innermost key or value that holds the error.
        let Some(last) = column.checked_sub(1) else {
            return whole;
        };
        let Some(place) = self
            .places
            .iter()
            .filter(|p| p.bytes.contains(&last))
            .min_by_key(|p| p.bytes.len())
        else {
            return whole;
        };
        let mut node = tree;
        let mut key = String::new();
        for step in &place.path {
            match step {
                Step::Key(k) => {
                    key.push_str(" > ");
                    key.push_str(k);
                    node = node.and_then(|n| n.entries.get(k));
                }
                Step::Index(i) => {
                    key.push_str(&format!("[{i}]"));
                    node = node.and_then(|n| n.items.get(*i));
                }
            }
        }
        let at = node.map_or(table_at, |n| {
            if place.is_key {
                n.key.unwrap_or(n.value)
            } else {
                n.value
            }
        });
        Located {
            at,
            key,
            message: text.to_owned(),
        }
    }
}

/// A plugin's config message without serde_json's position in the JSON
/// (meaningless to a reader of the manifest or the logs).
pub fn without_position(message: &str) -> &str {
    split_position(message).map_or(message, |(text, _)| text)
}

/// `message` without serde_json's ` at line 1 column N` suffix, and `N`.
fn split_position(message: &str) -> Option<(&str, usize)> {
    let (text, position) = message.rsplit_once(" at line ")?;
    let (line, column) = position.split_once(" column ")?;
    if line != "1" {
        return None;
    }
    Some((text, column.parse().ok()?))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn table(src: &str) -> toml::Table {
        src.parse().unwrap()
    }

    #[test]
    fn the_json_is_the_config() {
        let t = table("b = [1, { c = \"x\" }]\na = 1.5\n");
        let json = ConfigJson::new(Some(&t));
        let back: serde_json::Value = serde_json::from_str(&json.text).unwrap();
        assert_eq!(back, toml_to_json(&toml::Value::Table(t.clone())));
        assert_eq!(ConfigJson::new(None).text, "{}");
    }

    #[test]
    fn a_serde_json_position_becomes_the_key_path() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[expect(dead_code, reason = "only the errors are looked at")]
        struct C {
            a: i64,
            b: Vec<Inner>,
        }
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[expect(dead_code, reason = "only the errors are looked at")]
        struct Inner {
            c: String,
        }
        for (src, key) in [
            ("a = \"x\"\nb = []\n", " > a"),
            ("a = 1\nb = [{ c = \"x\" }, { c = 2 }]\n", " > b[1] > c"),
            ("a = 1\nb = [{ d = \"x\" }]\n", " > b[0] > d"),
            ("a = 1\nb = 3\n", " > b"),
        ] {
            let json = ConfigJson::new(Some(&table(src)));
            let e = serde_json::from_str::<C>(&json.text)
                .unwrap_err()
                .to_string();
            let found = json.locate(&e, None, 7);
            assert_eq!(found.key, key, "{src}: {e}");
            assert!(!found.message.contains(" at line "), "{found:?}");
        }
        let json = ConfigJson::new(Some(&table("a = 1\n")));
        let found = json.locate("`step` must not be 0", None, 7);
        assert_eq!((found.at, found.key.as_str()), (7, ""));
        assert_eq!(without_position("bad at line 1 column 9"), "bad");
        assert_eq!(
            without_position("`step` must not be 0"),
            "`step` must not be 0"
        );
    }
}
