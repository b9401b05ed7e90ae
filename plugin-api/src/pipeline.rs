//! Pipeline stages: the [`Source`], [`Transform`] and [`Sink`] traits
//! plugin authors implement, and the adapters that put them behind the
//! ABI's `FfiStage` (listed in [`export_plugin!`](crate::export_plugin)
//! under `sources`, `transforms` and `sinks`).
//!
//! Each worker thread of a stage has its own instance: built from the
//! stage's `config` (`new`), then `setup` with its [`Worker`] (its index
//! and the stage's worker count), then its items, one call at a time, then
//! `finalize`. That is why every method takes `&mut self`: nothing else
//! runs on the instance. A panic in any method is caught inside the plugin,
//! as for services.

use abi_stable::library::{
    __call_root_module_loader, CheckTypeLayout, LibHeader, RootModuleResult,
};
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RStr, RString, RVec};
use serde::de::DeserializeOwned;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::export::{guard, guarded_drop, on_mut, parse_config, unknown_export};
use otools_abi::{
    CallResult, FfiStage, FfiStage_TO, FfiStageBox, HostRef, StageExportInfo, StageRole, StageRoot,
    StageRoot_Ref, Value, WorkerInfo,
};

/// Which worker of its stage an instance is. A source with several workers
/// uses it to partition its input, so that each item is produced once:
/// worker `index` of `count` takes every `count`-th item, for example.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Worker {
    /// This worker's index, from 0.
    pub index: usize,
    /// How many workers the stage has (its `threads`).
    pub count: usize,
}

/// Where a [`Transform`] puts what an item maps to.
pub struct Output<'a> {
    items: &'a mut RVec<Value>,
}

impl Output<'_> {
    /// Sends one item on to the next stage (after `process` returns).
    pub fn push(&mut self, item: impl Into<Value>) {
        self.items.push(item.into());
    }
}

/// The first stage of a pipeline: produces items until it is exhausted.
pub trait Source: Send + Sized + 'static {
    /// The configuration the stage's `config` table deserializes into.
    type Config: DeserializeOwned;

    /// Builds a worker's instance from its configuration (no side effects).
    fn new(config: Self::Config) -> Result<Self>;

    /// Runs once before the first `next`, with the worker's place in its stage.
    fn setup(&mut self, ctx: &Context<'_>, worker: Worker) -> Result<()> {
        let _ = (ctx, worker);
        Ok(())
    }

    /// The next item, or `None` once this worker is exhausted (it is then
    /// not called again). An error is a failure of the worker, which its
    /// restart policy handles; a restarted source starts from `setup` again.
    fn next(&mut self, ctx: &Context<'_>) -> Result<Option<Value>>;

    /// Runs once after the worker's last item.
    fn finalize(&mut self, ctx: &Context<'_>) -> Result<()> {
        let _ = ctx;
        Ok(())
    }
}

/// A middle stage: maps each item to zero, one or several items.
pub trait Transform: Send + Sized + 'static {
    /// The configuration the stage's `config` table deserializes into.
    type Config: DeserializeOwned;

    /// Builds a worker's instance from its configuration (no side effects).
    fn new(config: Self::Config) -> Result<Self>;

    /// Runs once before the first item, with the worker's place in its stage.
    fn setup(&mut self, ctx: &Context<'_>, worker: Worker) -> Result<()> {
        let _ = (ctx, worker);
        Ok(())
    }

    /// Maps `item`: push what it becomes to `out`. An error or a panic
    /// fails this item only (it goes to the dead-letter file); what was
    /// pushed before it is dropped.
    fn process(&mut self, ctx: &Context<'_>, item: Value, out: &mut Output<'_>) -> Result<()>;

    /// Runs once after the worker's last item.
    fn finalize(&mut self, ctx: &Context<'_>) -> Result<()> {
        let _ = ctx;
        Ok(())
    }
}

/// The last stage of a pipeline: consumes items.
pub trait Sink: Send + Sized + 'static {
    /// The configuration the stage's `config` table deserializes into.
    type Config: DeserializeOwned;

    /// Builds a worker's instance from its configuration (no side effects).
    fn new(config: Self::Config) -> Result<Self>;

    /// Runs once before the first item, with the worker's place in its stage.
    fn setup(&mut self, ctx: &Context<'_>, worker: Worker) -> Result<()> {
        let _ = (ctx, worker);
        Ok(())
    }

    /// Consumes `item`. An error or a panic fails this item only.
    fn consume(&mut self, ctx: &Context<'_>, item: Value) -> Result<()>;

    /// Runs once after the worker's last item.
    fn finalize(&mut self, ctx: &Context<'_>) -> Result<()> {
        let _ = ctx;
        Ok(())
    }
}

/// What the three roles have in common behind the FFI trait; the calls a
/// role does not answer are refused as unimplemented.
trait Role: Send + 'static {
    fn setup(&mut self, ctx: &Context<'_>, worker: Worker) -> Result<()>;
    fn produce(&mut self, ctx: &Context<'_>, out: &mut RVec<Value>) -> Result<bool> {
        let _ = (ctx, out);
        Err(Error::unimplemented())
    }
    fn process(&mut self, ctx: &Context<'_>, item: Value, out: &mut RVec<Value>) -> Result<()>;
    fn finalize(&mut self, ctx: &Context<'_>) -> Result<()>;
}

struct AsSource<S>(S);
struct AsTransform<T>(T);
struct AsSink<K>(K);

impl<S: Source> Role for AsSource<S> {
    fn setup(&mut self, ctx: &Context<'_>, worker: Worker) -> Result<()> {
        self.0.setup(ctx, worker)
    }
    fn produce(&mut self, ctx: &Context<'_>, out: &mut RVec<Value>) -> Result<bool> {
        Ok(self.0.next(ctx)?.map(|item| out.push(item)).is_some())
    }
    fn process(&mut self, _: &Context<'_>, _: Value, _: &mut RVec<Value>) -> Result<()> {
        Err(Error::unimplemented())
    }
    fn finalize(&mut self, ctx: &Context<'_>) -> Result<()> {
        self.0.finalize(ctx)
    }
}

impl<T: Transform> Role for AsTransform<T> {
    fn setup(&mut self, ctx: &Context<'_>, worker: Worker) -> Result<()> {
        self.0.setup(ctx, worker)
    }
    fn process(&mut self, ctx: &Context<'_>, item: Value, out: &mut RVec<Value>) -> Result<()> {
        self.0.process(ctx, item, &mut Output { items: out })
    }
    fn finalize(&mut self, ctx: &Context<'_>) -> Result<()> {
        self.0.finalize(ctx)
    }
}

impl<K: Sink> Role for AsSink<K> {
    fn setup(&mut self, ctx: &Context<'_>, worker: Worker) -> Result<()> {
        self.0.setup(ctx, worker)
    }
    fn process(&mut self, ctx: &Context<'_>, item: Value, _: &mut RVec<Value>) -> Result<()> {
        self.0.consume(ctx, item)
    }
    fn finalize(&mut self, ctx: &Context<'_>) -> Result<()> {
        self.0.finalize(ctx)
    }
}

/// A stage behind the FFI trait; the `Option` is there only so that `Drop`
/// can drop the value inside the panic guard (as for services).
struct StageAdapter<R>(Option<R>);

impl<R> Drop for StageAdapter<R> {
    fn drop(&mut self) {
        guarded_drop(self.0.take());
    }
}

impl<R: Role> FfiStage for StageAdapter<R> {
    fn setup(&mut self, host: HostRef<'_>, worker: WorkerInfo) -> CallResult {
        let worker = Worker {
            index: worker.index as usize,
            count: worker.count as usize,
        };
        on_mut(self.0.as_mut(), |v| {
            v.setup(&Context::from_host(host), worker)
        })
    }
    fn produce(&mut self, host: HostRef<'_>, out: &mut RVec<Value>) -> CallResult<bool> {
        on_mut(self.0.as_mut(), |v| {
            v.produce(&Context::from_host(host), out)
        })
    }
    fn process(&mut self, host: HostRef<'_>, item: Value, out: &mut RVec<Value>) -> CallResult {
        on_mut(self.0.as_mut(), |v| {
            v.process(&Context::from_host(host), item, out)
        })
    }
    fn finalize(&mut self, host: HostRef<'_>) -> CallResult {
        on_mut(self.0.as_mut(), |v| v.finalize(&Context::from_host(host)))
    }
}

fn boxed<R: Role>(role: R) -> FfiStageBox {
    FfiStage_TO::from_value(StageAdapter(Some(role)), TD_Opaque)
}

/// Builds a source worker's instance from its JSON config. Used by [`export_plugin!`](crate::export_plugin).
#[doc(hidden)]
pub fn new_source<S: Source>(config_json: &str) -> Result<FfiStageBox> {
    let config = parse_config::<S::Config>(config_json)?;
    Ok(boxed(AsSource(
        S::new(config).map_err(Error::rejecting_config)?,
    )))
}

/// Builds a transform worker's instance from its JSON config. Used by [`export_plugin!`](crate::export_plugin).
#[doc(hidden)]
pub fn new_transform<T: Transform>(config_json: &str) -> Result<FfiStageBox> {
    let config = parse_config::<T::Config>(config_json)?;
    Ok(boxed(AsTransform(
        T::new(config).map_err(Error::rejecting_config)?,
    )))
}

/// Builds a sink worker's instance from its JSON config. Used by [`export_plugin!`](crate::export_plugin).
#[doc(hidden)]
pub fn new_sink<K: Sink>(config_json: &str) -> Result<FfiStageBox> {
    let config = parse_config::<K::Config>(config_json)?;
    Ok(boxed(AsSink(
        K::new(config).map_err(Error::rejecting_config)?,
    )))
}

/// A constructor of a stage instance from JSON config.
#[doc(hidden)]
pub type StageCtor = fn(&str) -> Result<FfiStageBox>;

/// The stage exports `P` declares.
extern "C" fn stage_exports<P: crate::export::PluginExports>() -> RVec<StageExportInfo> {
    P::STAGES
        .iter()
        .map(|(name, role, _)| StageExportInfo {
            role: *role,
            name: RString::from(*name),
        })
        .collect()
}

/// Builds the stage export `name` of `P` from its JSON config.
extern "C" fn new_stage<P: crate::export::PluginExports>(
    name: RStr<'_>,
    config: RStr<'_>,
) -> CallResult<FfiStageBox> {
    match P::STAGES.iter().find(|(n, _, _)| *n == name.as_str()) {
        Some((_, _, ctor)) => guard(|| ctor(config.as_str())),
        None => unknown_export(name.as_str(), "stage"),
    }
}

fn stage_module<P: crate::export::PluginExports>() -> StageRoot_Ref {
    StageRoot {
        stage_exports: stage_exports::<P>,
        new_stage: new_stage::<P>,
    }
    .leak_into_prefix()
}

extern "C" fn stage_module_loader<P: crate::export::PluginExports>() -> RootModuleResult {
    __call_root_module_loader(stage_module::<P>)
}

/// The header of the library's stage root module, exported by
/// [`export_plugin!`](crate::export_plugin) under `otools_abi::STAGES_SYMBOL`.
#[doc(hidden)]
#[allow(
    unsafe_code,
    reason = "the stages' header, through the same abi_stable export API as the root module's"
)]
pub const fn stages_header<P: crate::export::PluginExports>() -> LibHeader {
    // SAFETY: as in `export::lib_header`: `from_constructor::<M>` requires
    // the constructor to return the root module of type `M`, and
    // `stage_module_loader::<P>` returns exactly a `StageRoot_Ref`, for every `P`.
    unsafe {
        LibHeader::from_constructor::<StageRoot_Ref>(stage_module_loader::<P>, CheckTypeLayout::Yes)
    }
}

/// The role of a source, for [`export_plugin!`](crate::export_plugin).
#[doc(hidden)]
pub const SOURCE: StageRole = StageRole::Source;
/// The role of a transform, for [`export_plugin!`](crate::export_plugin).
#[doc(hidden)]
pub const TRANSFORM: StageRole = StageRole::Transform;
/// The role of a sink, for [`export_plugin!`](crate::export_plugin).
#[doc(hidden)]
pub const SINK: StageRole = StageRole::Sink;
