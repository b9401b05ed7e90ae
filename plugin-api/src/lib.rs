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
//! # Threads
//!
//! `main` runs on the context's thread and `run_loop` on the service's own
//! thread, at the same time, on the same instance: that is why they take
//! `&self` (see [`Service`]). `setup` and `finalize` have the instance to
//! themselves.
//!
//! # Compatibility
//!
//! The host checks, when it loads a library, that it was built against a
//! compatible `otools-api` (same `0.minor` version) and that every type
//! crossing the boundary has the layout the host expects; a mismatch is
//! refused with a message saying which side to rebuild. The rules for
//! growing the interface without breaking old plugins are in [`ffi`].
//!
//! # Glossary (abi_stable's words)
//! - *interface*: this crate, shared by both sides.
//! - *implementation*: a plugin library.
//! - *user*: the `otools` host, which loads implementations.

#![allow(
    non_local_definitions,
    reason = "emitted by abi_stable's derive and #[sabi_trait] expansions"
)]

mod context;
mod error;
mod export;
pub mod ffi;
mod service;
mod value;

pub use context::{Context, Dataframe, LockGuard};
pub use error::{Error, Result};
pub use ffi::{HostError, LogLevel};
pub use service::{Condition, NoConfig, Service};
pub use value::{TypeMismatch, Value};

#[doc(hidden)]
pub mod __private {
    pub use crate::export::{
        ConditionCtor, PluginExports, ServiceCtor, lib_header, new_condition, new_service,
    };
    pub use abi_stable::library::LibHeader;
}
