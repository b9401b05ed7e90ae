//! `otools-abi`: everything that crosses the boundary between the otools
//! host and a plugin library, and the version of that boundary.
//!
//! This crate sits under `otools-api` as `tracing-core` sits under
//! `tracing`: plugin authors never use it directly (`otools-api` re-exports
//! what they need, and its `export_plugin!` writes the glue), and the host
//! depends on it to load a library and drive its instances. Everything
//! here is an FFI type (a `StableAbi` type, a `#[sabi_trait]`, the root
//! module) or a method on one; the author's API (`Context`, `Service`,
//! helpers) lives in `otools-api`, which may change freely.
//!
//! # The ABI version
//!
//! The ABI version is this crate's package version, [`ABI_VERSION`]. It is
//! what abi_stable compares when the host loads a library: the root
//! module's version ([`PluginRoot_Ref`]'s `VERSION_STRINGS`) and the package
//! version recorded in the layout of every type below (same `0.minor`
//! required). `otools-api`'s own version is not checked, so a new helper in
//! `otools-api` does not make the host refuse plugins built before it.
//!
//! # Evolution
//!
//! The root module ([`PluginRoot`]) and the three traits are abi_stable *prefix
//! types*: a field or method may only ever be **added after** the one marked
//! `#[sabi(last_prefix_field)]`, never inserted, removed or changed. But
//! abi_stable checks that the host's prefix types have *no more* fields
//! than the library's: such an addition lets a plugin built against it
//! load on an older host (which sees the newer entries as absent), and
//! makes the host refuse every plugin built before it. So a new host
//! callback or plugin entry point goes into a **new root module** instead,
//! exported under its own symbol and checked on its own
//! ([`MessagingRoot`] under [`MESSAGING_SYMBOL`], [`StageRoot`] under
//! [`STAGES_SYMBOL`], [`FlowRoot`] under [`FLOW_SYMBOL`], [`FlowEventsRoot`]
//! under [`FLOW_EVENTS_SYMBOL`]): a plugin built
//! before it lacks the symbol and loads unchanged; that bumps the patch
//! version.
//! Anything else (a changed type, a new enum variant, a reordered method)
//! is a breaking change: bump the minor version of `otools-abi` (we are at
//! 0.x), and the host refuses plugins of the other minor with a message
//! saying which side to rebuild (a layout change forgotten without a bump
//! is still refused, by abi_stable's layout check). A pure-Rust addition (a
//! method or conversion on [`Value`]) is a patch.

#![allow(
    non_local_definitions,
    reason = "emitted by abi_stable's StableAbi derive and #[sabi_trait] expansions"
)]
#![allow(
    non_camel_case_types,
    reason = "abi_stable names its types `*_Ref` and `*_TO`"
)]
#![allow(missing_docs, reason = "abi_stable's generated items carry no docs")]
#![allow(
    unreachable_pub,
    reason = "abi_stable's generated items are pub by design"
)]
#![allow(
    unsafe_code,
    reason = "abi_stable's StableAbi derive and #[sabi_trait] expand to unsafe blocks; none is written by hand here"
)]

use abi_stable::library::RootModule;
use abi_stable::sabi_types::{RRef, VersionStrings};
use abi_stable::std_types::{RBox, ROption, RResult, RSlice, RStr, RString, RVec, Tuple2};
use abi_stable::{StableAbi, declare_root_module_statics, package_version_strings, sabi_trait};

mod flow;
mod pipeline;
mod value;

pub use flow::{
    FLOW_EVENTS_SYMBOL, FLOW_SYMBOL, FfiStep, FfiStep_TO, FfiStepBox, FlowEventsRoot,
    FlowEventsRoot_Ref, FlowHost, FlowHost_Ref, FlowRoot, FlowRoot_Ref, StepActivation,
};
pub use pipeline::{
    FfiStage, FfiStage_TO, FfiStageBox, STAGES_SYMBOL, StageExportInfo, StageRole, StageRoot,
    StageRoot_Ref, WorkerInfo,
};
pub use value::{TypeMismatch, Value};

/// Timeout argument meaning "wait as long as it takes".
pub const NO_TIMEOUT: u64 = u64::MAX;

/// The six log levels of OTools, from most to least verbose.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// Very detailed tracing of what a service does.
    Verbose = 0,
    /// Information useful when debugging.
    Debug = 1,
    /// Normal operation worth recording.
    Info = 2,
    /// Something unexpected that the service handled.
    Warning = 3,
    /// Something failed.
    Error = 4,
    /// Something failed so badly that the context terminates.
    Fatal = 5,
}

impl LogLevel {
    /// All levels, from most to least verbose.
    pub const ALL: [LogLevel; 6] = [
        LogLevel::Verbose,
        LogLevel::Debug,
        LogLevel::Info,
        LogLevel::Warning,
        LogLevel::Error,
        LogLevel::Fatal,
    ];

    /// The level's name as written in manifests and logs (`verbose`, ...).
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Verbose => "verbose",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warning => "warning",
            LogLevel::Error => "error",
            LogLevel::Fatal => "fatal",
        }
    }

    /// Parses a level name (case-insensitive; `warn` and `trace` are accepted too).
    pub fn parse(s: &str) -> Option<LogLevel> {
        Some(match s.to_ascii_lowercase().as_str() {
            "verbose" | "trace" => LogLevel::Verbose,
            "debug" => LogLevel::Debug,
            "info" => LogLevel::Info,
            "warning" | "warn" => LogLevel::Warning,
            "error" => LogLevel::Error,
            "fatal" => LogLevel::Fatal,
            _ => return None,
        })
    }

    /// Converts the wire value back, if it names a level.
    pub fn from_u8(v: u8) -> Option<LogLevel> {
        LogLevel::ALL.get(usize::from(v)).copied()
    }
}

/// Why a host callback refused or failed.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HostError {
    /// No dataframe of that name exists in the manifest.
    UnknownDataframe = 0,
    /// The dataframe exists but this context does not list it.
    NotPermitted = 1,
    /// The dataframe stayed locked by another service for the whole timeout.
    Timeout = 2,
    /// The operation needs another type of value (e.g. incrementing a
    /// string, or adding an integer to a float), or its integer result does
    /// not fit in an `i64`. Nothing was stored. (Overflow reuses this kind:
    /// a new variant would break the ABI for every built plugin.)
    WrongType = 3,
    /// The calling instance was replaced; its calls are refused.
    Fenced = 4,
    /// Unlocking a lock this service does not hold, or locking one it holds.
    LockState = 5,
    /// The host failed internally (a bug); the message is in the host log.
    Internal = 6,
}

impl HostError {
    /// A short description of the error.
    pub fn describe(self) -> &'static str {
        match self {
            HostError::UnknownDataframe => "no such dataframe",
            HostError::NotPermitted => "this context does not list the dataframe",
            HostError::Timeout => "timed out waiting for the dataframe lock",
            HostError::WrongType => {
                "the stored value has the wrong type for this operation, or the result overflows"
            }
            HostError::Fenced => "this instance was replaced; its calls are refused",
            HostError::LockState => "lock not held by this service, or already held",
            HostError::Internal => "internal host error",
        }
    }
}

/// What kind of failure a plugin entry point reports.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallErrorKind {
    /// The entry point returned an error.
    Failed = 0,
    /// The entry point panicked; the panic was caught inside the plugin.
    Panicked = 1,
    /// The entry point is not implemented by this service (e.g. no loop).
    Unimplemented = 2,
    /// The plugin rejected the configuration it was given.
    InvalidConfig = 3,
    /// The library has no export of that name.
    UnknownExport = 4,
}

/// A failure reported by a plugin entry point.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct CallError {
    /// What kind of failure.
    pub kind: CallErrorKind,
    /// The plugin's message.
    pub message: RString,
}

/// What every plugin entry point returns.
pub type CallResult<T = ()> = RResult<T, CallError>;

/// Why a message could not be sent, or a request got no reply. Every
/// failure of `send`, `request` and `publish` is one of these, so a caller
/// can match on it.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageError {
    /// No service of that name (`Context/service`, or a unique service
    /// name), or a name that more than one service has.
    UnknownTarget = 0,
    /// The target does not accept a message of that name.
    UnknownMessage = 1,
    /// The payload is not of the type the target declared for that message.
    InvalidPayload = 2,
    /// The target's mailbox stayed full for the whole timeout.
    MailboxFull = 3,
    /// No reply within the timeout (or the handler hung).
    Timeout = 4,
    /// The handler returned an error or panicked; the target is restarted
    /// under its policy.
    PeerFailed = 5,
    /// The target ended (`SHUTDOWN`, deactivated), gave up, or its context
    /// is stopping.
    PeerGone = 6,
    /// The calling instance was replaced; its calls are refused.
    Fenced = 7,
    /// The other side has no messaging (a host or plugin built before it).
    Unsupported = 8,
}

impl MessageError {
    /// A short description of the error.
    pub fn describe(self) -> &'static str {
        match self {
            MessageError::UnknownTarget => "unknown target",
            MessageError::UnknownMessage => "unknown message name",
            MessageError::InvalidPayload => "invalid payload",
            MessageError::MailboxFull => "mailbox full",
            MessageError::Timeout => "timed out",
            MessageError::PeerFailed => "peer failed",
            MessageError::PeerGone => "peer gone",
            MessageError::Fenced => "this instance was replaced; its calls are refused",
            MessageError::Unsupported => "messaging is not supported here",
        }
    }
}

/// A failed `send`, `request` or `publish`: its kind and a message that
/// names the target and says why.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct MessageFailure {
    /// What kind of failure.
    pub kind: MessageError,
    /// Details, for logs.
    pub message: RString,
}

impl MessageFailure {
    /// A failure of `kind` with `message`.
    pub fn new(kind: MessageError, message: impl Into<RString>) -> MessageFailure {
        MessageFailure {
            kind,
            message: message.into(),
        }
    }
}

/// One message a service accepts: its name and the type of its payload
/// (a [`Value::type_name`], or `any`).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct MessageSpec {
    /// The message name (`PING`).
    pub name: RString,
    /// `any`, or the only payload type accepted (`null`, `integer`, `map`, ...).
    pub payload: RString,
}

/// Read or write lock of a dataframe held across several operations.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockMode {
    /// Others may still read, nobody else may write.
    Read = 0,
    /// Nobody else may read or write.
    Write = 1,
}

/// The outcome of a compare-and-swap.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct CasOutcome {
    /// True if the value was replaced.
    pub swapped: bool,
    /// When not swapped: the value found instead of the expected one.
    pub actual: ROption<Value>,
}

/// The host's side of the boundary: what a running instance may ask of the host.
///
/// `timeout_ns` is in nanoseconds, [`NO_TIMEOUT`] to wait indefinitely.
#[sabi_trait]
pub trait FfiHost: Send + Sync {
    /// Is a message at this level going to be written?
    fn log_enabled(&self, level: LogLevel) -> bool;
    /// Writes one log line under the caller's context and service.
    fn log(&self, level: LogLevel, message: RStr<'_>);
    /// The caller's context name.
    fn context_name(&self) -> RStr<'_>;
    /// The caller's service (or trigger) name.
    fn service_name(&self) -> RStr<'_>;
    /// Ends the caller's context after the current call.
    fn terminate_context(&self);
    /// Stops and finalizes the calling service; the others go on.
    fn deactivate(&self);
    /// Resolves a dataframe name to a handle valid for this context.
    fn dataframe(&self, name: RStr<'_>) -> RResult<u32, HostError>;
    /// Reads a key; `None` when absent.
    fn df_get(&self, df: u32, key: RStr<'_>, timeout_ns: u64)
    -> RResult<ROption<Value>, HostError>;
    /// Writes a key.
    fn df_set(
        &self,
        df: u32,
        key: RStr<'_>,
        value: Value,
        timeout_ns: u64,
    ) -> RResult<(), HostError>;
    /// Removes a key, returning what it held.
    fn df_remove(
        &self,
        df: u32,
        key: RStr<'_>,
        timeout_ns: u64,
    ) -> RResult<ROption<Value>, HostError>;
    /// Adds `by` (integer or float) to a numeric key atomically; an absent key counts as 0.
    /// An integer `by` needs an integer key and an `i64` result, else
    /// `WrongType` and nothing is stored; a float `by` makes the key a float.
    fn df_add(
        &self,
        df: u32,
        key: RStr<'_>,
        by: Value,
        timeout_ns: u64,
    ) -> RResult<Value, HostError>;
    /// Replaces the key's value with `new` only if it currently equals `expected` (None = absent).
    fn df_compare_and_swap(
        &self,
        df: u32,
        key: RStr<'_>,
        expected: ROption<Value>,
        new: Value,
        timeout_ns: u64,
    ) -> RResult<CasOutcome, HostError>;
    /// The keys, in no particular order.
    fn df_keys(&self, df: u32, timeout_ns: u64) -> RResult<RVec<RString>, HostError>;
    /// Takes a read or write lock on the dataframe, held until `df_unlock`.
    fn df_lock(&self, df: u32, mode: LockMode, timeout_ns: u64) -> RResult<(), HostError>;
    /// Releases a lock taken with `df_lock`.
    fn df_unlock(&self, df: u32, mode: LockMode) -> RResult<(), HostError>;
    /// The bytes this service last stashed with the host (kept across restarts).
    fn stash_get(&self) -> ROption<RVec<u8>>;
    /// Replaces this service's stash.
    #[sabi(last_prefix_field)]
    fn stash_set(&self, bytes: RSlice<'_, u8>) -> RResult<(), HostError>;
}

/// A borrowed host handle, valid for one call.
pub type HostRef<'a> = FfiHost_TO<'static, RRef<'a, ()>>;

/// One service instance, as the host drives it.
#[sabi_trait]
pub trait FfiService: Send + Sync {
    /// Runs once before any `main` or loop call.
    fn setup(&mut self, host: HostRef<'_>) -> CallResult;
    /// One main-loop step.
    fn main(&self, host: HostRef<'_>) -> CallResult;
    /// One iteration of the service's own loop (runs on its own thread).
    fn run_loop(&self, host: HostRef<'_>) -> CallResult;
    /// Runs once after the service's threads stopped.
    fn finalize(&mut self, host: HostRef<'_>) -> CallResult;
    /// The instance's state for its successor after a reload: `None` if it
    /// keeps none, else a schema version and bytes.
    fn export_state(&self, host: HostRef<'_>) -> CallResult<ROption<Tuple2<u32, RVec<u8>>>>;
    /// Receives a predecessor's exported state, after `setup` and before the
    /// first `main`; an error rolls the reload back.
    #[sabi(last_prefix_field)]
    fn import_state(
        &mut self,
        host: HostRef<'_>,
        version: u32,
        bytes: RSlice<'_, u8>,
    ) -> CallResult;
}

/// An owned service instance.
pub type FfiServiceBox = FfiService_TO<'static, RBox<()>>;

/// One condition instance, as the host drives it.
#[sabi_trait]
pub trait FfiCondition: Send + Sync {
    /// Runs once before the first check.
    fn setup(&mut self, host: HostRef<'_>) -> CallResult;
    /// Evaluates the condition.
    fn check(&self, host: HostRef<'_>) -> CallResult<bool>;
    /// Runs once at the end.
    #[sabi(last_prefix_field)]
    fn finalize(&mut self, host: HostRef<'_>) -> CallResult;
}

/// An owned condition instance.
pub type FfiConditionBox = FfiCondition_TO<'static, RBox<()>>;

/// Whether an export is a service or a condition.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExportKind {
    /// A service (`otools_api::Service`).
    Service = 0,
    /// A condition (`otools_api::Condition`).
    Condition = 1,
}

/// One export of a library.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct ExportInfo {
    /// Service or condition.
    pub kind: ExportKind,
    /// The name manifests use in `export = "..."`.
    pub name: RString,
}

/// The root module every plugin library exports.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginRoot_Ref)))]
pub struct PluginRoot {
    /// The plugin crate's package name.
    pub plugin_name: RStr<'static>,
    /// The plugin crate's package version.
    pub plugin_version: RStr<'static>,
    /// The `otools-api` version the plugin was built against (for display:
    /// the ABI version, which the host checks, is in the library header).
    pub api_version: RStr<'static>,
    /// Lists the services and conditions the library exports.
    pub exports: extern "C" fn() -> RVec<ExportInfo>,
    /// Builds a service instance from its export name and JSON config (setup not run).
    pub new_service: extern "C" fn(RStr<'_>, RStr<'_>) -> CallResult<FfiServiceBox>,
    /// Builds a condition instance from its export name and JSON config (setup not run).
    #[sabi(last_prefix_field)]
    pub new_condition: extern "C" fn(RStr<'_>, RStr<'_>) -> CallResult<FfiConditionBox>,
    /// Whether the last instance this thread dropped panicked in its
    /// destructor: the panic message, caught inside the plugin. Each drop
    /// of an instance resets it. Appended after the last prefix field:
    /// plugins built before it existed lack it (the accessor returns `None`).
    pub take_drop_panic: extern "C" fn() -> ROption<RString>,
}

impl RootModule for PluginRoot_Ref {
    declare_root_module_statics! {PluginRoot_Ref}
    const BASE_NAME: &'static str = "otools_plugin";
    const NAME: &'static str = "otools_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// The root module of a library's messaging, exported beside
/// [`PluginRoot`] under its own symbol ([`MESSAGING_SYMBOL`]) and checked on
/// its own by abi_stable: a library built before messaging existed does
/// not export it, and its [`PluginRoot`] tree is unchanged, so it still
/// loads (abi_stable refuses a library whose prefix types have fewer
/// fields than the host's, so messaging could not be appended to
/// [`FfiHost`] or [`FfiService`] without refusing every older plugin).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = MessagingRoot_Ref)))]
pub struct MessagingRoot {
    /// The messages the service export `export` accepts (none: no mailbox).
    pub messages: extern "C" fn(export: RStr<'_>) -> RVec<MessageSpec>,
    /// Handles one message on a service instance this library built
    /// (on the service's mailbox thread); the value is the reply.
    pub handle_message: extern "C" fn(
        object: &FfiServiceBox,
        host: HostRef<'_>,
        name: RStr<'_>,
        payload: Value,
    ) -> CallResult<Value>,
    /// Hands the library the host's messaging callbacks, once, at load.
    #[sabi(last_prefix_field)]
    pub set_host: extern "C" fn(host: MsgHost_Ref),
}

impl RootModule for MessagingRoot_Ref {
    declare_root_module_statics! {MessagingRoot_Ref}
    const BASE_NAME: &'static str = "otools_messaging";
    const NAME: &'static str = "otools_messaging";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// The symbol [`MessagingRoot`]'s library header is exported under.
pub const MESSAGING_SYMBOL: &str = "otools_messaging_header";

/// The host's messaging callbacks. `caller` is the host handle of the
/// call the plugin is in (the host tells who sends from it); timeouts are
/// in nanoseconds, [`NO_TIMEOUT`] for none.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = MsgHost_Ref)))]
pub struct MsgHost {
    /// Queues a one-way message for `to` (`Context/service` or a unique
    /// service name), waiting up to `timeout_ns` for room in its mailbox.
    pub send: extern "C" fn(
        caller: HostRef<'_>,
        to: RStr<'_>,
        name: RStr<'_>,
        payload: Value,
        timeout_ns: u64,
    ) -> RResult<(), MessageFailure>,
    /// Sends a request to `to` and waits for its reply, all within `timeout_ns`.
    pub request: extern "C" fn(
        caller: HostRef<'_>,
        to: RStr<'_>,
        name: RStr<'_>,
        payload: Value,
        timeout_ns: u64,
    ) -> RResult<Value, MessageFailure>,
    /// Delivers `payload` to every subscriber of `topic` (as a message
    /// named `topic`); returns how many got it.
    pub publish: extern "C" fn(
        caller: HostRef<'_>,
        topic: RStr<'_>,
        payload: Value,
        timeout_ns: u64,
    ) -> RResult<u32, MessageFailure>,
    /// The correlation id of the message being handled on this thread
    /// (none outside a handler).
    #[sabi(last_prefix_field)]
    pub correlation_id: extern "C" fn() -> ROption<RString>,
}

/// The ABI version: this crate's package version, which abi_stable checks
/// when the host loads a library (see [the crate docs](crate#the-abi-version)).
pub const ABI_VERSION: &str = env!("CARGO_PKG_VERSION");

#[cfg(test)]
mod tests {
    use super::*;

    /// What the host compares is this crate's version: in the library
    /// header (the root module's) and in every boundary type's layout.
    #[test]
    fn the_checked_versions_are_this_crates() {
        assert_eq!(
            <PluginRoot_Ref as RootModule>::VERSION_STRINGS
                .version
                .as_str(),
            ABI_VERSION
        );
        for layout in [
            <ExportInfo as StableAbi>::LAYOUT,
            <CallError as StableAbi>::LAYOUT,
            <Value as StableAbi>::LAYOUT,
            <FfiServiceBox as StableAbi>::LAYOUT,
            <FfiStageBox as StableAbi>::LAYOUT,
            <MessageFailure as StableAbi>::LAYOUT,
        ] {
            let (package, version) = layout.package_and_version();
            assert_eq!(package.as_str(), "otools-abi", "{}", layout.name());
            assert_eq!(version.version.as_str(), ABI_VERSION, "{}", layout.name());
        }
    }
}
