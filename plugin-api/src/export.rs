//! The glue between a plugin's Rust types and the stable-ABI boundary:
//! [`export_plugin!`](crate::export_plugin), the adapters that turn a
//! [`Service`] or [`Condition`] into an FFI trait object, and the panic
//! guard around every entry point.
//!
//! A panic must never unwind out of a plugin: abi_stable turns that into a
//! process exit, taking the host down (measured: "Attempted to panic across the ffi boundary", then exit). So every entry point
//! runs inside `catch_unwind`, and the panic becomes a [`CallError`] with the
//! panic message and location. A panic hook installed when the library is
//! loaded captures that message instead of printing it; panics outside entry
//! points (e.g. on a thread the plugin spawned itself) still print as usual.
//!
//! Dropping an instance is guarded the same way: abi_stable aborts the
//! process on a panic in the destructor of a trait object, so the adapters
//! drop the plugin's value inside `catch_unwind`, and keep the message for
//! the host to collect right after the drop (`PluginRoot::take_drop_panic`).

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

use abi_stable::library::{
    __call_root_module_loader, CheckTypeLayout, LibHeader, RootModuleResult,
};
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_trait::{TD_CanDowncast, TD_Opaque};
use abi_stable::std_types::{ROption, RResult, RSlice, RStr, RString, RVec, Tuple2};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::ffi::API_VERSION;
use crate::flow::{Step, StepContext};
use crate::message::Accept;
use crate::pipeline::StageCtor;
use crate::service::{Condition, Service};
use otools_abi::{
    CallError, CallErrorKind, CallResult, ExportInfo, ExportKind, FfiCondition, FfiCondition_TO,
    FfiConditionBox, FfiService, FfiService_TO, FfiServiceBox, FfiStep, FfiStep_TO, FfiStepBox,
    FlowEventsRoot, FlowEventsRoot_Ref, FlowHost_Ref, FlowRoot, FlowRoot_Ref, HostRef, MessageSpec,
    MessagingRoot, MessagingRoot_Ref, MsgHost_Ref, PluginRoot, PluginRoot_Ref, StageRole,
    StepActivation, Value,
};

thread_local! {
    static IN_ENTRY_POINT: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
    /// The panic of the last instance this thread dropped, if it panicked.
    static DROP_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

fn install_panic_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_ENTRY_POINT.with(Cell::get) {
                let message = panic_payload_text(info.payload());
                let text = match info.location() {
                    Some(l) => format!("{message} (at {}:{}:{})", l.file(), l.line(), l.column()),
                    None => message,
                };
                LAST_PANIC.with(|p| *p.borrow_mut() = Some(text));
            } else {
                previous(info);
            }
        }));
    });
}

fn panic_payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        String::from("panic with a non-string payload")
    }
}

/// Runs one entry point: a panic or an error becomes a [`CallError`].
pub(crate) fn guard<T>(f: impl FnOnce() -> Result<T>) -> CallResult<T> {
    let outer = IN_ENTRY_POINT.with(|c| c.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    IN_ENTRY_POINT.with(|c| c.set(outer));
    match result {
        Ok(Ok(v)) => RResult::ROk(v),
        Ok(Err(e)) => RResult::RErr(e.into_call_error()),
        Err(payload) => {
            let message = LAST_PANIC
                .with(|p| p.borrow_mut().take())
                .unwrap_or_else(|| panic_payload_text(&*payload));
            // Dropping a payload can itself panic; keep it from unwinding out.
            let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
            RResult::RErr(CallError {
                kind: CallErrorKind::Panicked,
                message: RString::from(message),
            })
        }
    }
}

/// Drops `value` like an entry point runs: a panic in its destructor is
/// caught and its message kept in `DROP_PANIC` (cleared otherwise), for
/// the host to collect with `take_drop_panic` right after the drop.
pub(crate) fn guarded_drop<T>(value: Option<T>) {
    let outcome = guard(move || {
        drop(value);
        Ok(())
    });
    let message = match outcome {
        RResult::ROk(()) => None,
        RResult::RErr(e) => Some(e.message.into_string()),
    };
    DROP_PANIC.with(|p| *p.borrow_mut() = message);
}

/// The answer to a call on an adapter whose value was already dropped: it
/// cannot happen (the host never calls a dropped object), but the adapter
/// must answer something without `unsafe`.
#[cold]
#[inline(never)]
fn dropped<T>() -> CallResult<T> {
    RResult::RErr(Error::msg("the instance was already dropped").into_call_error())
}

/// Runs entry point `f` on the adapter's value under [`guard`]. The value is
/// looked at outside the guard, so the guarded closure is only the plugin's
/// own call (a trivial entry point then costs what it did before adapters
/// held an `Option`).
#[inline]
pub(crate) fn on<S, T>(value: Option<&S>, f: impl FnOnce(&S) -> Result<T>) -> CallResult<T> {
    match value {
        Some(v) => guard(|| f(v)),
        None => dropped(),
    }
}

/// [`on`] for the entry points that take the value mutably.
#[inline]
pub(crate) fn on_mut<S, T>(
    value: Option<&mut S>,
    f: impl FnOnce(&mut S) -> Result<T>,
) -> CallResult<T> {
    match value {
        Some(v) => guard(|| f(v)),
        None => dropped(),
    }
}

/// A [`Service`] behind the FFI trait. The value is an `Option` only so that
/// `Drop` can take it out and drop it inside the panic guard; it is `Some`
/// for the adapter's whole life.
struct ServiceAdapter<S>(Option<S>);

impl<S> Drop for ServiceAdapter<S> {
    fn drop(&mut self) {
        guarded_drop(self.0.take());
    }
}

impl<S: Service> FfiService for ServiceAdapter<S> {
    fn setup(&mut self, host: HostRef<'_>) -> CallResult {
        on_mut(self.0.as_mut(), |v| v.setup(&Context::from_host(host)))
    }
    fn main(&self, host: HostRef<'_>) -> CallResult {
        on(self.0.as_ref(), |v| v.main(&Context::from_host(host)))
    }
    fn run_loop(&self, host: HostRef<'_>) -> CallResult {
        on(self.0.as_ref(), |v| v.run_loop(&Context::from_host(host)))
    }
    fn finalize(&mut self, host: HostRef<'_>) -> CallResult {
        on_mut(self.0.as_mut(), |v| v.finalize(&Context::from_host(host)))
    }
    fn export_state(&self, host: HostRef<'_>) -> CallResult<ROption<Tuple2<u32, RVec<u8>>>> {
        on(self.0.as_ref(), |v| {
            let state = v.export_state(&Context::from_host(host))?;
            Ok(state.map(|(v, b)| Tuple2(v, RVec::from(b))).into())
        })
    }
    fn import_state(
        &mut self,
        host: HostRef<'_>,
        version: u32,
        bytes: RSlice<'_, u8>,
    ) -> CallResult {
        on_mut(self.0.as_mut(), |v| {
            v.import_state(&Context::from_host(host), version, bytes.as_slice())
        })
    }
}

/// A [`Condition`] behind the FFI trait; `Option` as in [`ServiceAdapter`].
struct ConditionAdapter<C>(Option<C>);

impl<C> Drop for ConditionAdapter<C> {
    fn drop(&mut self) {
        guarded_drop(self.0.take());
    }
}

impl<C: Condition> FfiCondition for ConditionAdapter<C> {
    fn setup(&mut self, host: HostRef<'_>) -> CallResult {
        on_mut(self.0.as_mut(), |v| v.setup(&Context::from_host(host)))
    }
    fn check(&self, host: HostRef<'_>) -> CallResult<bool> {
        on(self.0.as_ref(), |v| v.check(&Context::from_host(host)))
    }
    fn finalize(&mut self, host: HostRef<'_>) -> CallResult {
        on_mut(self.0.as_mut(), |v| v.finalize(&Context::from_host(host)))
    }
}

/// A [`Step`] behind the FFI trait; `Option` as in [`ServiceAdapter`].
struct StepAdapter<S>(Option<S>);

impl<S> Drop for StepAdapter<S> {
    fn drop(&mut self) {
        guarded_drop(self.0.take());
    }
}

impl<S: Step> FfiStep for StepAdapter<S> {
    fn run(&self, host: HostRef<'_>, activation: &StepActivation) -> CallResult {
        on(self.0.as_ref(), |step| {
            step.run(&StepContext::new(Context::from_host(host), activation))
        })
    }
}

pub(crate) fn parse_config<T: serde::de::DeserializeOwned>(json: &str) -> Result<T> {
    // The message keeps serde_json's ` at line 1 column N`: it refers to the
    // JSON the host generated, and the host turns it into the manifest line,
    // column and key of the value concerned (then removes it).
    serde_json::from_str(json).map_err(|e| Error::invalid_config(e.to_string()))
}

/// Builds a service instance from its JSON config. Used by [`export_plugin!`](crate::export_plugin).
#[doc(hidden)]
pub fn new_service<S: Service>(config_json: &str) -> Result<FfiServiceBox> {
    let config = parse_config::<S::Config>(config_json)?;
    let service = S::new(config).map_err(Error::rejecting_config)?;
    // Downcastable, so that `handle_message` can find the service again.
    Ok(FfiService_TO::from_value(
        ServiceAdapter(Some(service)),
        TD_CanDowncast,
    ))
}

/// Builds a condition instance from its JSON config. Used by [`export_plugin!`](crate::export_plugin).
#[doc(hidden)]
pub fn new_condition<C: Condition>(config_json: &str) -> Result<FfiConditionBox> {
    let config = parse_config::<C::Config>(config_json)?;
    let condition = C::new(config).map_err(Error::rejecting_config)?;
    Ok(FfiCondition_TO::from_value(
        ConditionAdapter(Some(condition)),
        TD_Opaque,
    ))
}

/// Builds a step instance from its JSON config. Used by [`export_plugin!`](crate::export_plugin).
#[doc(hidden)]
pub fn new_step<S: Step>(config_json: &str) -> Result<FfiStepBox> {
    let config = parse_config::<S::Config>(config_json)?;
    let step = S::new(config).map_err(Error::rejecting_config)?;
    Ok(FfiStep_TO::from_value(StepAdapter(Some(step)), TD_Opaque))
}

/// A constructor of a step instance from JSON config.
#[doc(hidden)]
pub type StepCtor = fn(&str) -> Result<FfiStepBox>;
/// A constructor of a service instance from JSON config.
#[doc(hidden)]
pub type ServiceCtor = fn(&str) -> Result<FfiServiceBox>;
/// A constructor of a condition instance from JSON config.
#[doc(hidden)]
pub type ConditionCtor = fn(&str) -> Result<FfiConditionBox>;
/// Handles a message if `object` is a `S` built by this library: the
/// payload is taken only then.
#[doc(hidden)]
pub type MessageHandler =
    fn(&FfiServiceBox, HostRef<'_>, &str, &mut Option<Value>) -> Option<CallResult<Value>>;

/// The [`MessageHandler`] of service type `S`. Used by [`export_plugin!`](crate::export_plugin).
#[doc(hidden)]
pub fn handle_with<S: Service>(
    object: &FfiServiceBox,
    host: HostRef<'_>,
    name: &str,
    payload: &mut Option<Value>,
) -> Option<CallResult<Value>> {
    let adapter = object.obj.downcast_as::<ServiceAdapter<S>>().ok()?;
    let payload = payload.take()?;
    Some(on(adapter.0.as_ref(), |v| {
        v.handle_message(&Context::from_host(host), name, payload)
    }))
}

/// What [`export_plugin!`](crate::export_plugin) declares about a library.
#[doc(hidden)]
pub trait PluginExports: 'static {
    /// Package name of the plugin crate.
    const NAME: &'static str;
    /// Package version of the plugin crate.
    const VERSION: &'static str;
    /// Exported services by name.
    const SERVICES: &'static [(&'static str, ServiceCtor)];
    /// Exported conditions by name.
    const CONDITIONS: &'static [(&'static str, ConditionCtor)];
    /// The messages each exported service accepts, by export name.
    const MESSAGES: &'static [(&'static str, &'static [Accept])];
    /// One message handler per exported service.
    const HANDLERS: &'static [MessageHandler];
    /// Exported pipeline stages by name, with their role.
    const STAGES: &'static [(&'static str, StageRole, StageCtor)] = &[];
    /// Exported flow steps by name.
    const STEPS: &'static [(&'static str, StepCtor)] = &[];
}

extern "C" fn exports<P: PluginExports>() -> RVec<ExportInfo> {
    let services = P::SERVICES.iter().map(|(name, _)| ExportInfo {
        kind: ExportKind::Service,
        name: RString::from(*name),
    });
    let conditions = P::CONDITIONS.iter().map(|(name, _)| ExportInfo {
        kind: ExportKind::Condition,
        name: RString::from(*name),
    });
    services.chain(conditions).collect()
}

pub(crate) fn unknown_export<T>(name: &str, kind: &str) -> CallResult<T> {
    RResult::RErr(CallError {
        kind: CallErrorKind::UnknownExport,
        message: RString::from(format!("the library exports no {kind} named `{name}`")),
    })
}

extern "C" fn new_service_ffi<P: PluginExports>(
    name: RStr<'_>,
    config: RStr<'_>,
) -> CallResult<FfiServiceBox> {
    match P::SERVICES.iter().find(|(n, _)| *n == name.as_str()) {
        Some((_, ctor)) => guard(|| ctor(config.as_str())),
        None => unknown_export(name.as_str(), "service"),
    }
}

extern "C" fn new_condition_ffi<P: PluginExports>(
    name: RStr<'_>,
    config: RStr<'_>,
) -> CallResult<FfiConditionBox> {
    match P::CONDITIONS.iter().find(|(n, _)| *n == name.as_str()) {
        Some((_, ctor)) => guard(|| ctor(config.as_str())),
        None => unknown_export(name.as_str(), "condition"),
    }
}

extern "C" fn step_exports<P: PluginExports>() -> RVec<RString> {
    P::STEPS
        .iter()
        .map(|(name, _)| RString::from(*name))
        .collect()
}

extern "C" fn new_step_ffi<P: PluginExports>(
    name: RStr<'_>,
    config: RStr<'_>,
) -> CallResult<FfiStepBox> {
    match P::STEPS.iter().find(|(n, _)| *n == name.as_str()) {
        Some((_, ctor)) => guard(|| ctor(config.as_str())),
        None => unknown_export(name.as_str(), "step"),
    }
}

extern "C" fn take_drop_panic() -> ROption<RString> {
    DROP_PANIC
        .with(|p| p.borrow_mut().take())
        .map(RString::from)
        .into()
}

fn root_module<P: PluginExports>() -> PluginRoot_Ref {
    install_panic_hook();
    PluginRoot {
        plugin_name: RStr::from_str(P::NAME),
        plugin_version: RStr::from_str(P::VERSION),
        api_version: RStr::from_str(API_VERSION),
        exports: exports::<P>,
        new_service: new_service_ffi::<P>,
        new_condition: new_condition_ffi::<P>,
        take_drop_panic,
    }
    .leak_into_prefix()
}

extern "C" fn root_module_loader<P: PluginExports>() -> RootModuleResult {
    __call_root_module_loader(root_module::<P>)
}

/// The host's messaging callbacks, handed over when the library is loaded
/// (none under a host built before messaging).
static MSG_HOST: std::sync::OnceLock<MsgHost_Ref> = std::sync::OnceLock::new();

/// The host's messaging callbacks, if the host has any.
pub(crate) fn msg_host() -> Option<MsgHost_Ref> {
    MSG_HOST.get().copied()
}

extern "C" fn set_host(host: MsgHost_Ref) {
    let _ = MSG_HOST.set(host);
}

extern "C" fn messages_ffi<P: PluginExports>(export: RStr<'_>) -> RVec<MessageSpec> {
    P::MESSAGES
        .iter()
        .find(|(n, _)| *n == export.as_str())
        .map(|(_, accepts)| {
            accepts
                .iter()
                .map(|a| MessageSpec {
                    name: RString::from(a.name),
                    payload: RString::from(a.payload.type_name()),
                })
                .collect()
        })
        .unwrap_or_default()
}

#[allow(
    improper_ctypes_definitions,
    reason = "Value is a #[repr(u8)] StableAbi enum whose layout abi_stable checks; #[non_exhaustive] only binds Rust code"
)]
extern "C" fn handle_message_ffi<P: PluginExports>(
    object: &FfiServiceBox,
    host: HostRef<'_>,
    name: RStr<'_>,
    payload: Value,
) -> CallResult<Value> {
    let mut payload = Some(payload);
    for handle in P::HANDLERS {
        if let Some(r) = handle(object, host.sabi_reborrow(), name.as_str(), &mut payload) {
            return r;
        }
    }
    RResult::RErr(CallError {
        kind: CallErrorKind::Failed,
        message: RString::from("this library did not build that service instance"),
    })
}

fn messaging_module<P: PluginExports>() -> MessagingRoot_Ref {
    MessagingRoot {
        messages: messages_ffi::<P>,
        handle_message: handle_message_ffi::<P>,
        set_host,
    }
    .leak_into_prefix()
}

extern "C" fn messaging_module_loader<P: PluginExports>() -> RootModuleResult {
    __call_root_module_loader(messaging_module::<P>)
}

/// The header of the library's messaging root module, exported by
/// `export_plugin!` under `otools_abi::MESSAGING_SYMBOL`.
#[doc(hidden)]
#[allow(
    unsafe_code,
    reason = "the second header, through the same abi_stable export API as the first"
)]
pub const fn messaging_header<P: PluginExports>() -> LibHeader {
    // SAFETY: as in `lib_header`: `messaging_module_loader::<P>` returns a
    // `MessagingRoot_Ref`, for every `P`.
    unsafe {
        LibHeader::from_constructor::<MessagingRoot_Ref>(
            messaging_module_loader::<P>,
            CheckTypeLayout::Yes,
        )
    }
}

fn flow_module<P: PluginExports>() -> FlowRoot_Ref {
    FlowRoot {
        step_exports: step_exports::<P>,
        new_step: new_step_ffi::<P>,
    }
    .leak_into_prefix()
}

extern "C" fn flow_module_loader<P: PluginExports>() -> RootModuleResult {
    __call_root_module_loader(flow_module::<P>)
}

/// The header of the library's flow-step root module, exported by
/// `export_plugin!` under `otools_abi::FLOW_SYMBOL`.
#[doc(hidden)]
#[allow(
    unsafe_code,
    reason = "the third header, through the same abi_stable export API as the first"
)]
pub const fn flow_header<P: PluginExports>() -> LibHeader {
    // SAFETY: as in `lib_header`: `flow_module_loader::<P>` returns a
    // `FlowRoot_Ref`, for every `P`.
    unsafe {
        LibHeader::from_constructor::<FlowRoot_Ref>(flow_module_loader::<P>, CheckTypeLayout::Yes)
    }
}

/// The host's flow-event callbacks, handed over when the library is loaded
/// (none under a host built before plugins could raise flow events).
static FLOW_HOST: std::sync::OnceLock<FlowHost_Ref> = std::sync::OnceLock::new();

/// The host's flow-event callbacks, if the host has any.
pub(crate) fn flow_host() -> Option<FlowHost_Ref> {
    FLOW_HOST.get().copied()
}

extern "C" fn set_flow_host(host: FlowHost_Ref) {
    let _ = FLOW_HOST.set(host);
}

fn flow_events_module() -> FlowEventsRoot_Ref {
    FlowEventsRoot {
        set_host: set_flow_host,
    }
    .leak_into_prefix()
}

extern "C" fn flow_events_module_loader() -> RootModuleResult {
    __call_root_module_loader(flow_events_module)
}

/// The header of the library's flow-event root module, exported by
/// `export_plugin!` under `otools_abi::FLOW_EVENTS_SYMBOL`.
#[doc(hidden)]
#[allow(
    unsafe_code,
    reason = "the fourth header, through the same abi_stable export API as the first"
)]
pub const fn flow_events_header() -> LibHeader {
    // SAFETY: as in `lib_header`: `flow_events_module_loader` returns a
    // `FlowEventsRoot_Ref`.
    unsafe {
        LibHeader::from_constructor::<FlowEventsRoot_Ref>(
            flow_events_module_loader,
            CheckTypeLayout::Yes,
        )
    }
}

/// The header abi_stable looks for in a library: what `export_plugin!` exports.
#[doc(hidden)]
#[allow(
    unsafe_code,
    reason = "the one place the plugin side touches abi_stable's unsafe export API"
)]
pub const fn lib_header<P: PluginExports>() -> LibHeader {
    // SAFETY: `from_constructor::<M>` requires the constructor to return the
    // root module of type `M`; `root_module_loader::<P>` returns exactly a
    // `PluginRoot_Ref` (through abi_stable's own `__call_root_module_loader`,
    // which also catches panics), for every `P`.
    unsafe {
        LibHeader::from_constructor::<PluginRoot_Ref>(root_module_loader::<P>, CheckTypeLayout::Yes)
    }
}

/// Exports services, conditions, pipeline stages and flow steps from a plugin library.
///
/// Invoke it once, at the root of a `cdylib` crate, listing the types that
/// implement [`Service`](crate::Service), [`Condition`](crate::Condition),
/// [`Source`](crate::Source), [`Transform`](crate::Transform) and
/// [`Sink`](crate::Sink), then flow steps ([`Step`](crate::Step)), in that
/// order (each list is optional). Each is
/// exported under its type name, which manifests use in `export = "..."`.
///
/// ```text
/// otools_api::export_plugin! {
///     services: [Increment, Report],
///     conditions: [AtLeast],
///     sources: [Numbers],
///     transforms: [Double],
///     sinks: [Collect],
///     steps: [Charge],
/// }
/// ```
#[macro_export]
macro_rules! export_plugin {
    (
        $(services: [$($service:ident),* $(,)?] $(,)?)?
        $(conditions: [$($condition:ident),* $(,)?] $(,)?)?
        $(sources: [$($source:ident),* $(,)?] $(,)?)?
        $(transforms: [$($transform:ident),* $(,)?] $(,)?)?
        $(sinks: [$($sink:ident),* $(,)?] $(,)?)?
        $(steps: [$($step:ident),* $(,)?] $(,)?)?
    ) => {
        #[doc(hidden)]
        pub struct __OtoolsPluginExports;

        impl $crate::__private::PluginExports for __OtoolsPluginExports {
            const NAME: &'static str = ::core::env!("CARGO_PKG_NAME");
            const VERSION: &'static str = ::core::env!("CARGO_PKG_VERSION");
            const SERVICES: &'static [(&'static str, $crate::__private::ServiceCtor)] = &[
                $($((::core::stringify!($service), $crate::__private::new_service::<$service>),)*)?
            ];
            const CONDITIONS: &'static [(&'static str, $crate::__private::ConditionCtor)] = &[
                $($((::core::stringify!($condition), $crate::__private::new_condition::<$condition>),)*)?
            ];
            const MESSAGES: &'static [(&'static str, &'static [$crate::Accept])] = &[
                $($((::core::stringify!($service), <$service as $crate::Service>::MESSAGES),)*)?
            ];
            const HANDLERS: &'static [$crate::__private::MessageHandler] = &[
                $($($crate::__private::handle_with::<$service>,)*)?
            ];
            const STAGES: &'static [(
                &'static str,
                $crate::ffi::StageRole,
                $crate::__private::StageCtor,
            )] = &[
                $($((::core::stringify!($source), $crate::__private::SOURCE, $crate::__private::new_source::<$source>),)*)?
                $($((::core::stringify!($transform), $crate::__private::TRANSFORM, $crate::__private::new_transform::<$transform>),)*)?
                $($((::core::stringify!($sink), $crate::__private::SINK, $crate::__private::new_sink::<$sink>),)*)?
            ];
            const STEPS: &'static [(&'static str, $crate::__private::StepCtor)] = &[
                $($((::core::stringify!($step), $crate::__private::new_step::<$step>),)*)?
            ];
        }

        #[doc(hidden)]
        #[unsafe(export_name = "_1as_0lib_1header_0root_bmodule_bloader")]
        pub static __OTOOLS_LIB_HEADER: $crate::__private::LibHeader =
            $crate::__private::lib_header::<__OtoolsPluginExports>();

        #[doc(hidden)]
        #[unsafe(export_name = "otools_messaging_header")]
        pub static __OTOOLS_MESSAGING_HEADER: $crate::__private::LibHeader =
            $crate::__private::messaging_header::<__OtoolsPluginExports>();
        // The pipeline stages' root module, under its own symbol
        // (`otools_abi::STAGES_SYMBOL`): hosts before pipelines ignore it.
        #[doc(hidden)]
        #[unsafe(export_name = "otools_stages_header")]
        pub static __OTOOLS_STAGES_HEADER: $crate::__private::LibHeader =
            $crate::__private::stages_header::<__OtoolsPluginExports>();

        #[doc(hidden)]
        #[unsafe(export_name = "otools_flow_header")]
        pub static __OTOOLS_FLOW_HEADER: $crate::__private::LibHeader =
            $crate::__private::flow_header::<__OtoolsPluginExports>();
        // How the host hands over `raise` (`otools_abi::FLOW_EVENTS_SYMBOL`).
        #[doc(hidden)]
        #[unsafe(export_name = "otools_flow_events_header")]
        pub static __OTOOLS_FLOW_EVENTS_HEADER: $crate::__private::LibHeader =
            $crate::__private::flow_events_header();
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `export_plugin!` spells the symbol abi_stable looks up as a literal.
    #[test]
    fn root_symbol_matches_abi_stable() {
        let source = include_str!("export.rs");
        let spelled = format!(
            "export_name = \"{}\"",
            abi_stable::library::ROOT_MODULE_LOADER_NAME
        );
        assert!(
            source.contains(&spelled),
            "export_plugin! must use {spelled}"
        );
    }

    /// `export_plugin!` spells the messaging and flow headers' symbols as literals.
    #[test]
    fn messaging_and_flow_symbols_match_the_abi() {
        let source = include_str!("export.rs");
        for symbol in [
            otools_abi::MESSAGING_SYMBOL,
            otools_abi::FLOW_SYMBOL,
            otools_abi::FLOW_EVENTS_SYMBOL,
        ] {
            let spelled = format!("export_name = \"{symbol}\"");
            assert!(
                source.contains(&spelled),
                "export_plugin! must use {spelled}"
            );
        }
    }

    /// `export_plugin!` spells the stages' symbol as the host looks it up.
    #[test]
    fn stages_symbol_matches_the_abi() {
        let source = include_str!("export.rs");
        let spelled = format!("export_name = \"{}\"", otools_abi::STAGES_SYMBOL);
        assert!(
            source.contains(&spelled),
            "export_plugin! must use {spelled}"
        );
    }

    #[test]
    fn a_panic_becomes_an_error_value() {
        install_panic_hook();
        let r: CallResult<()> = guard(|| panic!("boom {}", 7));
        let e = r.unwrap_err();
        assert_eq!(e.kind, CallErrorKind::Panicked);
        assert!(
            e.message.as_str().starts_with("boom 7 (at "),
            "{}",
            e.message
        );
    }

    struct PanicsOnDrop;

    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            panic!("dropped badly");
        }
    }

    #[test]
    fn a_panic_in_a_destructor_is_caught_and_kept_for_the_host() {
        install_panic_hook();
        let adapter = ServiceAdapter(Some(PanicsOnDrop));
        drop(adapter);
        let message = take_drop_panic().into_option().unwrap();
        assert!(message.starts_with("dropped badly (at "), "{message}");
        // A clean drop clears it.
        drop(ServiceAdapter(Some(())));
        assert_eq!(take_drop_panic().into_option(), None);
    }

    #[test]
    fn an_error_keeps_its_message() {
        let r: CallResult<()> = guard(|| Err(Error::msg("nope")));
        let e = r.unwrap_err();
        assert_eq!(e.kind, CallErrorKind::Failed);
        assert_eq!(e.message.as_str(), "nope");
    }
}
