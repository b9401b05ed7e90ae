//! What a context is built from: the plan types `deploy` fills in (units, steps,
//! period, strategy) and [`construct`], which builds a plugin object.

use std::sync::Arc;
use std::time::Duration;

use abi_stable::std_types::{RResult, RStr};
use otools_abi::{CallError, ExportKind, FfiConditionBox, FfiServiceBox};

use crate::instance::ContextShared;
use crate::manifest::Mode;
use crate::plugin::Library;
use crate::supervision::policy::{Policy, Strategy};

/// The plugin object of an instance.
pub enum Obj {
    /// A service.
    Service(FfiServiceBox),
    /// A condition.
    Condition(FfiConditionBox),
}

/// Builds an instance of `export` from `lib` with its JSON config (no `setup`).
pub fn construct(
    lib: &Library,
    kind: ExportKind,
    export: &str,
    config_json: &str,
) -> Result<Obj, CallError> {
    let (export, json) = (RStr::from_str(export), RStr::from_str(config_json));
    match kind {
        ExportKind::Service => match (lib.root.new_service())(export, json) {
            RResult::ROk(o) => Ok(Obj::Service(o)),
            RResult::RErr(e) => Err(e),
        },
        ExportKind::Condition => match (lib.root.new_condition())(export, json) {
            RResult::ROk(o) => Ok(Obj::Condition(o)),
            RResult::RErr(e) => Err(e),
        },
    }
}

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
    /// The first instance, built by `deploy` (setup not run).
    pub initial: Obj,
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
