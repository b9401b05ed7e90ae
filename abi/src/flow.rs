//! The boundary types of flow steps (durable event flows): a step instance
//! ([`FfiStep`]) and the activation it runs for ([`StepActivation`]).
//!
//! Steps were added after the first plugins were built, following the
//! evolution rule of the crate docs: the entries that list and build steps
//! are a root module of their own ([`FlowRoot`]), exported under its own
//! symbol ([`FLOW_SYMBOL`]) and checked on its own, so a library built
//! before them (which lacks the symbol) loads and runs unchanged, and the
//! host sees it as exporting no step. (Appending them to `PluginRoot`
//! would make the host refuse it: abi_stable refuses a library whose prefix
//! types have fewer fields than the host's.)
//!
//! Raising a flow event from a plugin came after the steps, the same way:
//! [`FlowEventsRoot`], under [`FLOW_EVENTS_SYMBOL`], through which the host
//! hands the library its [`FlowHost`] callbacks once, at load (as
//! [`crate::MessagingRoot`] hands over the messaging ones). A library built
//! before it lacks the symbol, loads unchanged and cannot raise events.

use abi_stable::library::RootModule;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RBox, RResult, RStr, RString, RVec};
use abi_stable::{StableAbi, declare_root_module_statics, package_version_strings, sabi_trait};

use crate::{CallResult, HostRef, MessageFailure};

/// What one call of a step is for: which flow, step, sequence and attempt.
/// The plugin reads it through its step context, never from process-wide
/// state, so steps of several flows, sequences and attempts can run at the
/// same time in one process.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct StepActivation {
    /// The flow's name in the manifest.
    pub flow: RString,
    /// The step's name in the flow.
    pub step: RString,
    /// The id of the run this activation belongs to.
    pub run: RString,
    /// The sequence the activation carries (the event's sequence).
    pub sequence: RString,
    /// The attempt, from 1: one more for each retry or recovery of the same
    /// step and sequence.
    pub attempt: u32,
}

/// One step instance, as the host drives it. `run` may be called from
/// several threads at once (one per running activation).
#[sabi_trait]
pub trait FfiStep: Send + Sync {
    /// Runs the step once for `activation`.
    #[sabi(last_prefix_field)]
    fn run(&self, host: HostRef<'_>, activation: &StepActivation) -> CallResult;
}

/// An owned step instance.
pub type FfiStepBox = FfiStep_TO<'static, RBox<()>>;

/// The root module of a library's flow steps, exported beside `PluginRoot`
/// under [`FLOW_SYMBOL`] (see the module docs).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = FlowRoot_Ref)))]
pub struct FlowRoot {
    /// The names of the steps the library exports.
    pub step_exports: extern "C" fn() -> RVec<RString>,
    /// Builds a step instance from its export name and JSON config.
    #[sabi(last_prefix_field)]
    pub new_step: extern "C" fn(RStr<'_>, RStr<'_>) -> CallResult<FfiStepBox>,
}

impl RootModule for FlowRoot_Ref {
    declare_root_module_statics! {FlowRoot_Ref}
    const BASE_NAME: &'static str = "otools_flow";
    const NAME: &'static str = "otools_flow";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// The symbol [`FlowRoot`]'s library header is exported under.
pub const FLOW_SYMBOL: &str = "otools_flow_header";

/// The root module through which the host hands a library its flow-event
/// callbacks, exported beside [`FlowRoot`] under [`FLOW_EVENTS_SYMBOL`]
/// (see the module docs).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = FlowEventsRoot_Ref)))]
pub struct FlowEventsRoot {
    /// Hands the library the host's flow-event callbacks, once, at load.
    #[sabi(last_prefix_field)]
    pub set_host: extern "C" fn(host: FlowHost_Ref),
}

impl RootModule for FlowEventsRoot_Ref {
    declare_root_module_statics! {FlowEventsRoot_Ref}
    const BASE_NAME: &'static str = "otools_flow_events";
    const NAME: &'static str = "otools_flow_events";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// The symbol [`FlowEventsRoot`]'s library header is exported under.
pub const FLOW_EVENTS_SYMBOL: &str = "otools_flow_events_header";

/// The host's flow-event callbacks. `caller` is the host handle of the call
/// the plugin is in (the host tells who raises from it).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = FlowHost_Ref)))]
pub struct FlowHost {
    /// Raises `event` for `sequence` in the running flow `flow` (empty: the
    /// only flow that declares `event`), and returns once the store has
    /// committed it (or journaled it as a duplicate). Failures:
    /// `UnknownTarget` (no such flow, or no flow or several declare the
    /// event), `UnknownMessage` (the flow has no such plain event),
    /// `PeerGone` (the flow's run has finished), `Fenced`.
    #[sabi(last_prefix_field)]
    pub raise: extern "C" fn(
        caller: HostRef<'_>,
        flow: RStr<'_>,
        event: RStr<'_>,
        sequence: RStr<'_>,
    ) -> RResult<(), MessageFailure>,
}
