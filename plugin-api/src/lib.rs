//! `otools-api`: the crate an otools plugin is written against.
//!
//! A plugin is a Rust `cdylib` that exports **services** (units of logic a
//! context runs: OTools' `Service` with `setup` / `main` / `loop` /
//! `finalize`) and **conditions** (boolean checks that fire triggers). The
//! `otools` host loads the library, builds one instance per manifest entry
//! from its `config` table, and drives it. Everything a running instance
//! does to the outside world goes through its [`Context`]: logging at six
//! levels, reading and writing the dataframes its context lists, ending its
//! context, deactivating itself.
//!
//! # A complete plugin
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use otools_api::{Condition, Context, NoConfig, Result, Service};
//!
//! /// Adds `step` to a key of a dataframe on every main-loop iteration.
//! pub struct Increment {
//!     config: IncrementConfig,
//!     calls: AtomicU64,
//! }
//!
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! pub struct IncrementConfig {
//!     dataframe: String,
//!     key: String,
//!     #[serde(default = "one")]
//!     step: i64,
//! }
//! fn one() -> i64 { 1 }
//!
//! impl Service for Increment {
//!     type Config = IncrementConfig;
//!
//!     fn new(config: IncrementConfig) -> Result<Self> {
//!         if config.step == 0 {
//!             otools_api::bail!("`step` must not be 0");
//!         }
//!         Ok(Increment { config, calls: AtomicU64::new(0) })
//!     }
//!
//!     fn main(&self, ctx: &Context<'_>) -> Result<()> {
//!         let df = ctx.dataframe(&self.config.dataframe)?;
//!         let now = df.increment(&self.config.key, self.config.step)?;
//!         self.calls.fetch_add(1, Ordering::Relaxed);
//!         ctx.debug(format_args!("{} = {now}", self.config.key));
//!         Ok(())
//!     }
//!
//!     fn finalize(&mut self, ctx: &Context<'_>) -> Result<()> {
//!         ctx.info(format_args!("incremented {} times", self.calls.load(Ordering::Relaxed)));
//!         Ok(())
//!     }
//! }
//!
//! /// True once the context's `ticks` key reaches 10.
//! pub struct TenTicks;
//!
//! impl Condition for TenTicks {
//!     type Config = NoConfig;
//!     fn new(_: NoConfig) -> Result<Self> { Ok(TenTicks) }
//!     fn check(&self, ctx: &Context<'_>) -> Result<bool> {
//!         let n = ctx.dataframe("counter")?.get_as::<i64>("ticks")?;
//!         Ok(n.unwrap_or(0) >= 10)
//!     }
//! }
//!
//! otools_api::export_plugin! {
//!     services: [Increment],
//!     conditions: [TenTicks],
//! }
//! # fn main() {}
//! ```
//!
//! In `Cargo.toml`, the crate is `crate-type = ["cdylib", "rlib"]` and
//! depends on `otools-api` and `serde` (with `derive`). A panic in any method
//! is caught inside the library and reported to the host as a failure of
//! that call, with the panic message; it never takes the host down.
//!
//! # Pipelines
//!
//! A pipeline stage implements [`Source`] (produces items until exhausted),
//! [`Transform`] (maps one item to zero, one or several, through
//! [`Output`]) or [`Sink`] (consumes items), and is listed in
//! `export_plugin!` under `sources`, `transforms` or `sinks`. Each worker
//! thread of a stage has its own instance, which learns its [`Worker`]
//! index and count in `setup`; every method takes `&mut self`.
//!
//! # Threads
//!
//! `main` runs on the context's thread and `run_loop` on the service's own
//! thread, at the same time, on the same instance: that is why they take
//! `&self` (see [`Service`]). `setup` and `finalize` have the instance to
//! themselves.
//!
//! # Compatibility
//!
//! This crate is in two layers, as `tracing` sits on `tracing-core`: the
//! types that cross the boundary and their version are in the small
//! `otools-abi` crate (re-exported here as [`ffi`]); this crate adds the
//! author's API on top ([`Context`], [`Service`], [`export_plugin!`] and
//! helpers), in plain Rust.
//!
//! The host checks, when it loads a library, that it was built against a
//! compatible `otools-abi` (same `0.minor` version) and that every type
//! crossing the boundary has the layout the host expects; a mismatch is
//! refused with a message saying which side to rebuild. The version of
//! this crate is not checked: a plugin built against an older or newer
//! `otools-api` loads as long as both use a compatible `otools-abi`. The
//! rules for growing the ABI without breaking old plugins are in the crate
//! docs of `otools-abi` (re-exported as [`ffi`]).
//!
//! # Glossary (abi_stable's words)
//! - *interface*: `otools-abi` (with this crate over it), shared by both sides.
//! - *implementation*: a plugin library.
//! - *user*: the `otools` host, which loads implementations.

mod context;
mod error;
mod export;
mod flow;
mod message;
mod pipeline;
mod service;

/// The FFI types and the ABI version, from `otools-abi`; plugin authors
/// never need them (kept under this name for code that used them here).
pub mod ffi {
    pub use otools_abi::*;

    /// The `otools-api` version this crate is (and a plugin was built
    /// against). Informational: the host checks [`ABI_VERSION`] instead.
    pub const API_VERSION: &str = env!("CARGO_PKG_VERSION");
}

pub use context::{Context, Dataframe, LockGuard};
pub use error::{Error, Result};
pub use flow::{Step, StepContext};
pub use message::{Accept, DEFAULT_REQUEST_TIMEOUT, Payload, SEND_TIMEOUT, SHUTDOWN};
pub use otools_abi::{HostError, LogLevel, MessageError, TypeMismatch, Value};
pub use pipeline::{Output, Sink, Source, Transform, Worker};
pub use service::{Condition, NoConfig, Service};

#[doc(hidden)]
pub mod __private {
    pub use crate::export::{
        ConditionCtor, MessageHandler, PluginExports, ServiceCtor, StepCtor, flow_events_header,
        flow_header, handle_with, lib_header, messaging_header, new_condition, new_service,
        new_step,
    };
    pub use crate::pipeline::{
        SINK, SOURCE, StageCtor, TRANSFORM, new_sink, new_source, new_transform, stages_header,
    };
    pub use abi_stable::library::LibHeader;
}
