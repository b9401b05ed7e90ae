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
