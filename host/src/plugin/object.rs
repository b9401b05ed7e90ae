//! A plugin object: a service or condition built from a library's export
//! with its config, before any `setup` ([`construct`]), or a flow step
//! ([`construct_step`]).

use abi_stable::std_types::{RResult, RStr};
use otools_abi::{CallError, ExportKind, FfiConditionBox, FfiServiceBox, FfiStepBox};

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

/// The flow steps a library exports (none for a library built before
/// steps existed: it lacks the root module's `step_exports`).
pub fn step_exports(lib: &Library) -> Vec<String> {
    lib.root
        .step_exports()
        .map(|f| f().into_iter().map(|n| n.into_string()).collect())
        .unwrap_or_default()
}

/// Builds a flow step of `export` from `lib` with its JSON config.
pub fn construct_step(
    lib: &Library,
    export: &str,
    config_json: &str,
) -> Result<FfiStepBox, CallError> {
    let Some(new_step) = lib.root.new_step() else {
        return Err(CallError {
            kind: otools_abi::CallErrorKind::UnknownExport,
            message: "the library was built before flow steps existed".into(),
        });
    };
    match new_step(RStr::from_str(export), RStr::from_str(config_json)) {
        RResult::ROk(o) => Ok(o),
        RResult::RErr(e) => Err(e),
    }
}
