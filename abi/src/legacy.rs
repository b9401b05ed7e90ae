//! The root module as libraries built before flow steps have it, so that
//! the host still loads them.
//!
//! abi_stable's layout check lets a library's prefix type have *more*
//! fields than the host expects (a newer library), not fewer: a host whose
//! `PluginRoot` has fields appended refuses a library built before them
//! ("too many fields"). So the host keeps the layout of each earlier root
//! module here, frozen, checks a library against it when the current one
//! does not match, and [`before_steps::PluginRoot_Ref::upgrade`]s what it
//! finds into a current [`crate::PluginRoot_Ref`] whose missing entries
//! answer "none". A type here never changes; a new appended field adds the
//! current root module, as it is just before that change, as a new module.

/// `PluginRoot` of `otools-abi` 0.3.0, before `step_exports` and `new_step`.
pub mod before_steps {
    use abi_stable::library::RootModule;
    use abi_stable::prefix_type::PrefixTypeTrait;
    use abi_stable::sabi_types::VersionStrings;
    use abi_stable::std_types::{ROption, RResult, RStr, RString, RVec};
    use abi_stable::{StableAbi, declare_root_module_statics, package_version_strings};

    use crate::{
        CallError, CallErrorKind, CallResult, ExportInfo, FfiConditionBox, FfiServiceBox,
        FfiStepBox,
    };

    /// The root module of a library built against `otools-abi` 0.3.0 (it
    /// keeps the name `PluginRoot`: abi_stable compares type names).
    #[repr(C)]
    #[derive(StableAbi)]
    #[sabi(kind(Prefix(prefix_ref = PluginRoot_Ref)))]
    pub struct PluginRoot {
        /// The plugin crate's package name.
        pub plugin_name: RStr<'static>,
        /// The plugin crate's package version.
        pub plugin_version: RStr<'static>,
        /// The `otools-api` version the plugin was built against.
        pub api_version: RStr<'static>,
        /// Lists the services and conditions the library exports.
        pub exports: extern "C" fn() -> RVec<ExportInfo>,
        /// Builds a service instance.
        pub new_service: extern "C" fn(RStr<'_>, RStr<'_>) -> CallResult<FfiServiceBox>,
        /// Builds a condition instance.
        #[sabi(last_prefix_field)]
        pub new_condition: extern "C" fn(RStr<'_>, RStr<'_>) -> CallResult<FfiConditionBox>,
        /// The last dropped instance's destructor panic.
        pub take_drop_panic: extern "C" fn() -> ROption<RString>,
    }

    impl RootModule for PluginRoot_Ref {
        declare_root_module_statics! {PluginRoot_Ref}
        const BASE_NAME: &'static str = "otools_plugin";
        const NAME: &'static str = "otools_plugin";
        const VERSION_STRINGS: VersionStrings = package_version_strings!();
    }

    extern "C" fn no_steps() -> RVec<RString> {
        RVec::new()
    }

    extern "C" fn no_step(_: RStr<'_>, _: RStr<'_>) -> CallResult<FfiStepBox> {
        RResult::RErr(CallError {
            kind: CallErrorKind::UnknownExport,
            message: RString::from("the library was built before flow steps existed"),
        })
    }

    extern "C" fn no_drop_panic() -> ROption<RString> {
        ROption::RNone
    }

    impl PluginRoot_Ref {
        /// The same library as a current root module: the entries it lacks
        /// answer "none" (no step, no destructor panic).
        pub fn upgrade(self) -> crate::PluginRoot_Ref {
            crate::PluginRoot {
                plugin_name: self.plugin_name(),
                plugin_version: self.plugin_version(),
                api_version: self.api_version(),
                exports: self.exports(),
                new_service: self.new_service(),
                new_condition: self.new_condition(),
                take_drop_panic: self.take_drop_panic().unwrap_or(no_drop_panic),
                step_exports: no_steps,
                new_step: no_step,
            }
            .leak_into_prefix()
        }
    }
}
