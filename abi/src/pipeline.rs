//! The pipeline part of the boundary: stage exports (sources, transforms
//! and sinks) and the one trait object the host drives each stage worker
//! through.
//!
//! A library lists its stages with `PluginRoot::stage_exports` and builds
//! one with `PluginRoot::new_stage`; both are appended after the root
//! module's last prefix field, so a library built before pipelines existed
//! lacks them and the host sees it as exporting no stage. Every type here
//! is new: nothing that existed before changed.

use abi_stable::std_types::{RBox, RString, RVec};
use abi_stable::{StableAbi, sabi_trait};

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
