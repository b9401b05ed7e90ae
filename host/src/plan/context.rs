//! What a context is built from: the plan types [`super::build`] fills in
//! (units, steps, period, strategy). A plan holds no threads; each unit
//! holds its first plugin object, constructed (its config accepted) but not
//! set up.

use std::sync::Arc;
use std::time::Duration;

use otools_abi::ExportKind;

use crate::instance::ContextShared;
use crate::manifest::Mode;
use crate::manifest::policy::{Policy, Strategy};
use crate::messaging::Mailbox;
use crate::plugin::{Library, PluginObject};

/// One service or condition of a context, as planned from the manifest.
pub struct UnitPlan {
    /// Name in logs (a stack entry's is `<trigger>/<export>` unless named).
    pub name: String,
    /// Service or condition.
    pub kind: ExportKind,
    /// A service of the context itself (not a trigger's stack): it gets a loop thread.
    pub top_level: bool,
    /// Its library.
    pub library: Arc<Library>,
    /// Its export.
    pub export: String,
    /// Its config, as handed to the plugin.
    pub config_json: String,
    /// How it is supervised.
    pub policy: Policy,
    /// `main_once = true`: its `main` is called once, not on every iteration.
    pub main_once: bool,
    /// The first instance, built by [`super::build`] (its config accepted, setup not run).
    pub initial: PluginObject,
    /// Its mailbox, if it accepts messages (registered with the router).
    pub mailbox: Option<Arc<Mailbox>>,
}

/// One step of a main-loop iteration.
pub enum StepPlan {
    /// Call this unit's `main`.
    Service(usize),
    /// Evaluate a trigger.
    Trigger {
        /// Its name.
        name: String,
        /// How its conditions combine.
        mode: Mode,
        /// Condition units.
        conditions: Vec<usize>,
        /// Stack service units, called in order when it fires.
        stack: Vec<usize>,
    },
}

/// A context, ready to run.
pub struct ContextPlan {
    /// State shared with its instances.
    pub shared: Arc<ContextShared>,
    /// Minimum time between main-loop starts.
    pub period: Duration,
    /// Which units restart with a failed one.
    pub strategy: Strategy,
    /// Every service and condition, in manifest order.
    pub units: Vec<UnitPlan>,
    /// The main loop's steps, in manifest order.
    pub steps: Vec<StepPlan>,
}
