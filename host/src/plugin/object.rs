//! A plugin object: a service or condition built from a library's export
//! with its config, before any `setup` ([`construct`]), or a flow step
//! ([`construct_step`]).

use abi_stable::std_types::{RResult, RStr, RString};
use otools_abi::{CallError, ExportKind, FfiConditionBox, FfiServiceBox, FfiStepBox};

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

/// The flow steps a library exports (none for a library built before
/// steps existed: it lacks the flow root module).
pub fn step_exports(lib: &Library) -> Vec<String> {
    lib.flow
        .map(|f| {
            f.step_exports()()
                .into_iter()
                .map(RString::into_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Builds a flow step of `export` from `lib` with its JSON config.
pub fn construct_step(
    lib: &Library,
    export: &str,
    config_json: &str,
) -> Result<FfiStepBox, CallError> {
    let Some(flow) = lib.flow else {
        return Err(CallError {
            kind: otools_abi::CallErrorKind::UnknownExport,
            message: "the library was built before flow steps existed".into(),
        });
    };
    match flow.new_step()(RStr::from_str(export), RStr::from_str(config_json)) {
        RResult::ROk(o) => Ok(o),
        RResult::RErr(e) => Err(e),
    }
}
