//! The two traits plugin authors implement: [`Service`] and [`Condition`].
//!
//! Both are built from their manifest `config` table (deserialized into
//! `Self::Config` with serde), then `setup` runs once, then the host calls
//! them while their context runs, then `finalize` runs once. `setup` and
//! `finalize` take `&mut self` because nothing else runs on the instance at
//! those times; `main`, `run_loop` and `check` take `&self` because a service's
//! `main` (on the context thread) and its loop (on its own thread) run at the
//! same time, as in OTools. Keep state that changes while running in atomics
//! or a `Mutex`, or in a dataframe.

use serde::de::DeserializeOwned;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::message::Accept;
use otools_abi::Value;

/// A unit of logic run by a context: OTools' `Service`.
///
/// Implement `main`, `run_loop`, or both. The others are optional.
pub trait Service: Send + Sync + Sized + 'static {
    /// The configuration the manifest's `config` table deserializes into.
    /// Use [`NoConfig`] for a service that takes none.
    type Config: DeserializeOwned;

    /// Builds an instance from its configuration. Reject a bad configuration
    /// here with an error: `otools check` and `otools run` report it with the
    /// manifest line. Do no work with side effects here; that is for `setup`.
    fn new(config: Self::Config) -> Result<Self>;

    /// Runs once, before any `main` or `run_loop` call of any service of the context.
    fn setup(&mut self, ctx: &Context<'_>) -> Result<()> {
        let _ = ctx;
        Ok(())
    }

    /// Called once per main-loop iteration of the context (or when the
    /// trigger whose stack lists this service fires).
    fn main(&self, ctx: &Context<'_>) -> Result<()> {
        let _ = ctx;
        Err(Error::unimplemented())
    }

    /// Called again and again on the service's own thread while the context
    /// runs. Return regularly (after one unit of work) so the host can stop
    /// the service: the host never interrupts a call.
    fn run_loop(&self, ctx: &Context<'_>) -> Result<()> {
        let _ = ctx;
        Err(Error::unimplemented())
    }

    /// Runs exactly once, after the service's main and loop calls have stopped.
    fn finalize(&mut self, ctx: &Context<'_>) -> Result<()> {
        let _ = ctx;
        Ok(())
    }

    /// Hot reload, old side: the state to hand to the new version of this
    /// service, as a schema version and bytes (like OTP's `code_change`).
    /// Called while the service is paused, just before the swap. The
    /// default keeps no state: the new version starts fresh (dataframes are
    /// untouched either way).
    fn export_state(&self, ctx: &Context<'_>) -> Result<Option<(u32, Vec<u8>)>> {
        let _ = ctx;
        Ok(None)
    }

    /// Hot reload, new side: the old version's exported state, after this
    /// instance's `setup` and before its first `main`. Check `version` and
    /// convert older schemas; return an error to refuse the state, which
    /// rolls the whole reload back and keeps the old version serving.
    fn import_state(&mut self, ctx: &Context<'_>, version: u32, bytes: &[u8]) -> Result<()> {
        let _ = (ctx, version, bytes);
        Ok(())
    }

    /// The messages this service accepts. A service that lists any gets a
    /// mailbox and a mailbox thread; a message of another name, or with a
    /// payload of another type, is refused at the sender.
    const MESSAGES: &'static [Accept] = &[];

    /// Handles one message listed in [`Service::MESSAGES`], on the service's
    /// own mailbox thread (never its context's thread), one at a time, in
    /// the order they were sent, and only once `setup` has returned. The
    /// value returned is the reply to a request (ignored for a one-way
    /// message). An error or a panic answers the requester `PeerFailed`
    /// and ends this instance under its restart policy.
    fn handle_message(&self, ctx: &Context<'_>, name: &str, payload: Value) -> Result<Value> {
        let _ = (ctx, name, payload);
        Err(Error::unimplemented())
    }
}

/// A trigger condition: OTools' `Condition`.
pub trait Condition: Send + Sync + Sized + 'static {
    /// The configuration the manifest's `config` table deserializes into.
    type Config: DeserializeOwned;

    /// Builds an instance from its configuration (see [`Service::new`]).
    fn new(config: Self::Config) -> Result<Self>;

    /// Runs once, before the first check.
    fn setup(&mut self, ctx: &Context<'_>) -> Result<()> {
        let _ = ctx;
        Ok(())
    }

    /// Is the condition true now? Called once per main-loop iteration.
    fn check(&self, ctx: &Context<'_>) -> Result<bool>;

    /// Runs exactly once, at the end.
    fn finalize(&mut self, ctx: &Context<'_>) -> Result<()> {
        let _ = ctx;
        Ok(())
    }
}

/// The configuration of a service or condition that takes none: any key
/// given in the manifest's `config` is an error.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoConfig {}
