//! The pipeline part of the boundary: stage exports (sources, transforms
//! and sinks) and the one trait object the host drives each stage worker
//! through.
//!
//! A library lists and builds its stages through [`StageRoot`], a root
//! module of its own, exported beside `PluginRoot` under its own symbol
//! ([`STAGES_SYMBOL`]) and checked by abi_stable on its own. They could
//! not be appended to `PluginRoot`: abi_stable refuses a library whose
//! prefix types have fewer fields than the host's, so that would have
//! refused every plugin built before. A library built before pipelines
//! existed lacks the symbol: it loads as before, and exports no stage.
//! Every type here is new: nothing that existed before changed.

use abi_stable::library::RootModule;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RBox, RStr, RString, RVec};
use abi_stable::{StableAbi, declare_root_module_statics, package_version_strings, sabi_trait};

use crate::{CallResult, HostRef, Value};

/// What a stage does with items.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StageRole {
    /// Produces items until it is exhausted (`produce`).
    Source = 0,
    /// Maps one item to zero, one or several items (`process`).
    Transform = 1,
    /// Consumes items (`process`, with no output).
    Sink = 2,
}

impl StageRole {
    /// The role's name as written in manifests (`source`, ...).
    pub fn name(self) -> &'static str {
        match self {
            StageRole::Source => "source",
            StageRole::Transform => "transform",
            StageRole::Sink => "sink",
        }
    }
}

/// One stage export of a library.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct StageExportInfo {
    /// Source, transform or sink.
    pub role: StageRole,
    /// The name manifests use in `export = "..."`.
    pub name: RString,
}

/// Which worker of its stage an instance is: `index` in `0..count`.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WorkerInfo {
    /// This worker's index, from 0.
    pub index: u32,
    /// How many workers the stage has (its `threads`).
    pub count: u32,
}

/// One stage worker's instance, as the host drives it. Only its own worker
/// thread calls it, one call at a time.
#[sabi_trait]
pub trait FfiStage: Send {
    /// Runs once before the first item, with the worker's place in its stage.
    fn setup(&mut self, host: HostRef<'_>, worker: WorkerInfo) -> CallResult;
    /// A source: appends the next items to `out`; returns false once it is
    /// exhausted (the items appended by that call still count).
    fn produce(&mut self, host: HostRef<'_>, out: &mut RVec<Value>) -> CallResult<bool>;
    /// A transform: appends what `item` maps to; a sink: consumes `item`.
    fn process(&mut self, host: HostRef<'_>, item: Value, out: &mut RVec<Value>) -> CallResult;
    /// Runs once after the worker's last item.
    #[sabi(last_prefix_field)]
    fn finalize(&mut self, host: HostRef<'_>) -> CallResult;
}

/// An owned stage instance.
pub type FfiStageBox = FfiStage_TO<'static, RBox<()>>;

/// The root module of a library's pipeline stages (see the module docs).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = StageRoot_Ref)))]
pub struct StageRoot {
    /// The library's stages.
    pub stage_exports: extern "C" fn() -> RVec<StageExportInfo>,
    /// Builds a stage instance from its export name and JSON config (setup not run).
    #[sabi(last_prefix_field)]
    pub new_stage: extern "C" fn(RStr<'_>, RStr<'_>) -> CallResult<FfiStageBox>,
}

impl RootModule for StageRoot_Ref {
    declare_root_module_statics! {StageRoot_Ref}
    const BASE_NAME: &'static str = "otools_stages";
    const NAME: &'static str = "otools_stages";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// The symbol [`StageRoot`]'s library header is exported under.
pub const STAGES_SYMBOL: &str = "otools_stages_header";
