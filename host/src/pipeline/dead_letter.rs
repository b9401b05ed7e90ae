//! The dead-letter file of a pipeline: one JSON object per line for each
//! item that failed (`pipeline`, `stage`, `worker`, `item`, `value`,
//! `error`). It is opened (for appending) at the first bad item, so a
//! pipeline that never fails leaves no file. A write that fails is logged
//! once; the item is still counted and journaled.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

use otools_abi::Value;
use parking_lot::Mutex;
use serde_json::{Map, Value as Json};

use crate::event::ItemRef;

/// The dead-letter file, opened on first use.
pub(super) struct DeadLetter {
    path: PathBuf,
    file: Mutex<Option<File>>,
    failed: std::sync::atomic::AtomicBool,
}

/// An item's value as JSON: bytes become an array of numbers.
pub(super) fn to_json(v: &Value) -> Json {
    match v {
        Value::Bool(b) => Json::from(*b),
        Value::Int(i) => Json::from(*i),
        Value::Float(f) => Json::from(*f),
        Value::Str(s) => Json::from(s.as_str()),
        Value::Bytes(b) => Json::from(b.as_slice().to_vec()),
        Value::List(l) => Json::Array(l.iter().map(to_json).collect()),
        Value::Map(_) => Json::Object(
            v.entries()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.to_owned(), to_json(v)))
                .collect::<Map<String, Json>>(),
        ),
        _ => Json::Null,
    }
}

impl DeadLetter {
    pub(super) fn new(path: PathBuf) -> DeadLetter {
        DeadLetter {
            path,
            file: Mutex::new(None),
            failed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Appends one record (`value` is `None` when the item was not kept,
    /// after a hang).
    pub(super) fn write(&self, item: &ItemRef, value: Option<&Value>, error: &str) {
        let mut record = Map::new();
        record.insert("pipeline".into(), item.pipeline.as_str().into());
        record.insert("stage".into(), item.stage.as_str().into());
        record.insert("worker".into(), item.worker.into());
        record.insert("item".into(), item.item.into());
        record.insert("value".into(), value.map_or(Json::Null, to_json));
        record.insert("error".into(), error.into());
        let mut line = Json::Object(record).to_string();
        line.push('\n');
        let mut file = self.file.lock();
        if file.is_none() {
            match File::options().create(true).append(true).open(&self.path) {
                Ok(f) => *file = Some(f),
                Err(e) => return self.lost(&e),
            }
        }
        if let Some(f) = file.as_mut()
            && let Err(e) = f.write_all(line.as_bytes())
        {
            drop(file);
            self.lost(&e);
        }
    }

    fn lost(&self, e: &std::io::Error) {
        if !self.failed.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::error!(
                "cannot write to the dead-letter file {}: {e}",
                self.path.display()
            );
        }
    }
}
