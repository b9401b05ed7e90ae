//! Flow steps: the [`Step`] trait a plugin implements to be a step of a
//! durable event flow (`[[flow.step]]` in the manifest), and the
//! [`StepContext`] each run receives.
//!
//! A step is built once from its `config` (like a service), then `run` is
//! called once per activation: for one sequence of one run, at one attempt.
//! Several activations of the same step may run at the same time (up to
//! the step's `max_concurrent`), so `run` takes `&self`. What the
//! activation is (flow, step, sequence, attempt, run id) comes with the
//! call, in its [`StepContext`]: never keep it in process-wide state.
//! Returning an error (or panicking) fails the activation; the host routes
//! the failure as the manifest says (`on_failure`, `stop_on_error`). A step
//! may raise events of its flow while it runs ([`StepContext::raise`]).

use std::ops::Deref;

use serde::de::DeserializeOwned;

use crate::context::Context;
use crate::error::Result;
use otools_abi::StepActivation;

/// A step of a durable event flow.
pub trait Step: Send + Sync + Sized + 'static {
    /// The configuration the step's manifest `config` table deserializes into.
    type Config: DeserializeOwned;

    /// Builds the step from its configuration (see [`crate::Service::new`]).
    fn new(config: Self::Config) -> Result<Self>;

    /// Runs the step for one activation. An error or a panic is a failure
    /// of this activation.
    fn run(&self, ctx: &StepContext<'_>) -> Result<()>;
}

/// What a step may ask of the host during one run: everything a
/// [`Context`] offers (logging, dataframes), plus which activation this is.
pub struct StepContext<'a> {
    ctx: Context<'a>,
    activation: StepActivation,
}

impl<'a> StepContext<'a> {
    #[doc(hidden)]
    pub fn new(ctx: Context<'a>, activation: &StepActivation) -> StepContext<'a> {
        StepContext {
            ctx,
            activation: activation.clone(),
        }
    }

    /// The flow's name.
    pub fn flow(&self) -> &str {
        self.activation.flow.as_str()
    }

    /// The step's name in the flow.
    pub fn step(&self) -> &str {
        self.activation.step.as_str()
    }

    /// The sequence of this activation (the sequence of the event that
    /// activated the step).
    pub fn sequence(&self) -> &str {
        self.activation.sequence.as_str()
    }

    /// The attempt, from 1 (one more per retry or recovery).
    pub fn attempt(&self) -> u32 {
        self.activation.attempt
    }

    /// The id of the run (the same across recoveries of that run).
    pub fn run_id(&self) -> &str {
        self.activation.run.as_str()
    }

    /// Raises `event` of this step's flow for `sequence` (often
    /// [`StepContext::sequence`]): see [`Context::raise_event`]. It is
    /// committed to the run store before this returns; raising it again
    /// for the same sequence, here or anywhere, is a journaled duplicate.
    pub fn raise(&self, event: &str, sequence: &str) -> Result<()> {
        self.ctx.raise_event(Some(self.flow()), event, sequence)
    }
}

impl<'a> Deref for StepContext<'a> {
    type Target = Context<'a>;
    fn deref(&self) -> &Context<'a> {
        &self.ctx
    }
}
