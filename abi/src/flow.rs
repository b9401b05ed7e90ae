//! The boundary types of flow steps (durable event flows): a step instance
//! ([`FfiStep`]) and the activation it runs for ([`StepActivation`]).
//!
//! Steps were added after the first plugins were built, following the
//! evolution rule of the crate docs: the two root-module entries that list
//! and build steps (`step_exports`, `new_step`) are appended after the last
//! prefix field of `PluginRoot`, so a library built before them loads and
//! runs, and the host sees it as exporting no step.

use abi_stable::std_types::{RBox, RString};
use abi_stable::{StableAbi, sabi_trait};

use crate::{CallResult, HostRef};

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
