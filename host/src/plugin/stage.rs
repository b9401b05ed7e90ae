//! A library's pipeline stages: which it exports ([`Library::stages`]) and
//! building one worker's instance ([`construct_stage`]), through its stage
//! root module (`otools_abi::StageRoot`). A library built before pipelines
//! existed has none: it exports no stage.

use abi_stable::std_types::{RResult, RStr, RString};
use otools_abi::{CallError, CallErrorKind, FfiStageBox, StageExportInfo, StageRole};

use super::Library;

impl Library {
    /// Its stage exports; none for a library built before pipelines existed.
    pub fn stages(&self) -> Vec<StageExportInfo> {
        self.stage_root
            .map(|r| r.stage_exports()().into_vec())
            .unwrap_or_default()
    }

    /// The role under which it exports the stage `name`, if it does.
    pub fn stage_role(&self, name: &str) -> Option<StageRole> {
        self.stages()
            .into_iter()
            .find(|s| s.name.as_str() == name)
            .map(|s| s.role)
    }

    /// Does it have the pipeline entry points at all?
    pub fn knows_stages(&self) -> bool {
        self.stage_root.is_some()
    }
}

/// Builds a stage instance of `export` from `lib` with its JSON config (no `setup`).
pub fn construct_stage(
    lib: &Library,
    export: &str,
    config_json: &str,
) -> Result<FfiStageBox, CallError> {
    let Some(new_stage) = lib.stage_root.map(|r| r.new_stage()) else {
        return Err(CallError {
            kind: CallErrorKind::UnknownExport,
            message: RString::from("the library was built before pipelines existed"),
        });
    };
    match new_stage(RStr::from_str(export), RStr::from_str(config_json)) {
        RResult::ROk(o) => Ok(o),
        RResult::RErr(e) => Err(e),
    }
}
