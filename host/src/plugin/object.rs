//! A plugin object: a service or condition built from a library's export
//! with its config, before any `setup` ([`construct`]).

use abi_stable::std_types::{RResult, RStr};
use otools_abi::{CallError, ExportKind, FfiConditionBox, FfiServiceBox};

use super::Library;

/// The plugin object of an instance.
pub enum PluginObject {
    /// A service.
    Service(FfiServiceBox),
    /// A condition.
    Condition(FfiConditionBox),
}

/// The messages service export `export` of `library` accepts, as (name,
/// payload type); none for a library built before messaging existed.
/// (A constant of the plugin's type: no author code runs.)
pub fn messages(library: &Library, export: &str) -> Vec<(String, String)> {
    library.messaging.map_or_else(Vec::new, |m| {
        (m.messages())(RStr::from_str(export))
            .into_iter()
            .map(|m| (m.name.into_string(), m.payload.into_string()))
            .collect()
    })
}

/// Builds an instance of `export` from `lib` with its JSON config (no `setup`).
pub fn construct(
    lib: &Library,
    kind: ExportKind,
    export: &str,
    config_json: &str,
) -> Result<PluginObject, CallError> {
    let (export, json) = (RStr::from_str(export), RStr::from_str(config_json));
    match kind {
        ExportKind::Service => match (lib.root.new_service())(export, json) {
            RResult::ROk(o) => Ok(PluginObject::Service(o)),
            RResult::RErr(e) => Err(e),
        },
        ExportKind::Condition => match (lib.root.new_condition())(export, json) {
            RResult::ROk(o) => Ok(PluginObject::Condition(o)),
            RResult::RErr(e) => Err(e),
        },
    }
}
