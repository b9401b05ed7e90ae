//! [`UnitStates`]: the sink that keeps the latest state of every unit
//! (phase, generation, restarts, last failure, reloads), for `otools
//! status`, metrics and any later view.

use std::collections::BTreeMap;

use parking_lot::Mutex;

use super::{Event, Sink};

/// Where a unit is in its lifecycle, as its latest event says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Set up and serving (`started`, or the new version after a reload).
    Serving,
    /// Failed or hung; what comes next follows (`restarting`, `stopped`, `gave_up`).
    Failed,
    /// Its thread was left in a call.
    Abandoned,
    /// Asked to stop serving.
    Deactivated,
    /// Stopped with a sibling that restarts.
    Stopping,
    /// Waiting to be restarted.
    Restarting,
    /// Stays stopped after a failure (restart policy).
    Stopped,
    /// Gave up restarting.
    GaveUp,
    /// Finalized.
    Finalized,
    /// Started again by a reload after it had stopped.
    Revived,
}

impl Phase {
    /// The phase as a word (status views): `serving`, `failed`,
    /// `abandoned`, `deactivated`, `stopping`, `restarting`, `stopped`,
    /// `gave_up`, `finalized` or `revived`.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Serving => "serving",
            Phase::Failed => "failed",
            Phase::Abandoned => "abandoned",
            Phase::Deactivated => "deactivated",
            Phase::Stopping => "stopping",
            Phase::Restarting => "restarting",
            Phase::Stopped => "stopped",
            Phase::GaveUp => "gave_up",
            Phase::Finalized => "finalized",
            Phase::Revived => "revived",
        }
    }
}

/// The latest known state of one unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitState {
    /// Its phase.
    pub phase: Phase,
    /// The newest generation seen (a reload's new version counts from its setup).
    pub generation: u64,
    /// Restarts decided for it (`restarting` events), since the host started.
    pub restarts: u64,
    /// The reason of its latest failure, if any.
    pub last_failure: Option<String>,
    /// New versions a reload set up for it and did not roll back
    /// (`reload_setup_ok`, less `reload_rolled_back`).
    pub reloads: u64,
    /// New versions a refused reload set up for it and discarded
    /// (`reload_rolled_back`).
    pub reloads_rolled_back: u64,
}

/// A sink that keeps the latest state of every unit, keyed by context and
/// service. An event about an older generation than the newest seen (the
/// old instance finalized after a reload or a restart) changes no phase.
/// A reload's new version counts as the newest generation from its
/// `reload_setup_ok`; when that reload is rolled back
/// (`reload_rolled_back`), the unit is back at the generation and phase it
/// had before, unless a `started` came between (a restart meanwhile).
#[derive(Default)]
pub struct UnitStates {
    units: Mutex<BTreeMap<(String, String), Tracked>>,
}

/// One unit's state, and what it was before a reload's new version was
/// set up (until that version serves or is rolled back).
struct Tracked {
    state: UnitState,
    before_reload: Option<(u64, Phase)>,
}

impl UnitStates {
    /// A copy of every unit's state, ordered by context, then service.
    pub fn snapshot(&self) -> BTreeMap<(String, String), UnitState> {
        self.units
            .lock()
            .iter()
            .map(|(k, t)| (k.clone(), t.state.clone()))
            .collect()
    }
}

impl Sink for UnitStates {
    fn event(&self, e: &Event) {
        let Some(unit) = e.unit() else { return };
        let mut units = self.units.lock();
        let t = units
            .entry((unit.context.clone(), unit.service.clone()))
            .or_insert(Tracked {
                state: UnitState {
                    phase: Phase::Serving,
                    generation: unit.generation,
                    restarts: 0,
                    last_failure: None,
                    reloads: 0,
                    reloads_rolled_back: 0,
                },
                before_reload: None,
            });
        let s = &mut t.state;
        match e {
            Event::Restarting { .. } => s.restarts += 1,
            Event::ReloadSetupOk { .. } => {
                s.reloads += 1;
                if unit.generation > s.generation && t.before_reload.is_none() {
                    t.before_reload = Some((s.generation, s.phase));
                }
            }
            Event::ReloadRolledBack { .. } => {
                s.reloads = s.reloads.saturating_sub(1);
                s.reloads_rolled_back += 1;
                if s.generation == unit.generation
                    && let Some((generation, phase)) = t.before_reload.take()
                {
                    s.generation = generation;
                    s.phase = phase;
                }
                return;
            }
            Event::Started { .. } if unit.generation >= s.generation => t.before_reload = None,
            Event::Failed { reason, .. } => s.last_failure = Some(reason.clone()),
            Event::Hung { entry, .. } => s.last_failure = Some(format!("{entry} hung")),
            _ => {}
        }
        if unit.generation < s.generation {
            return;
        }
        s.generation = unit.generation;
        s.phase = match e {
            Event::Started { .. } => Phase::Serving,
            Event::Failed { .. } | Event::Hung { .. } => Phase::Failed,
            Event::Abandoned { .. } => Phase::Abandoned,
            Event::Deactivated { .. } => Phase::Deactivated,
            Event::Stopping { .. } => Phase::Stopping,
            Event::Restarting { .. } => Phase::Restarting,
            Event::Stopped { .. } => Phase::Stopped,
            Event::GaveUp { .. } => Phase::GaveUp,
            Event::Finalized { .. } => Phase::Finalized,
            Event::Revived { .. } => Phase::Revived,
            // A new version set up by a reload, a refused call, a panicking
            // destructor: the unit's phase is unchanged.
            _ => s.phase,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Unit;

    fn unit(service: &str, generation: u64) -> Unit {
        Unit::new("ctx", service, generation)
    }

    #[test]
    fn unit_states_follow_a_failure_restart_and_reload() {
        let states = UnitStates::default();
        let events = [
            Event::Started { unit: unit("a", 1) },
            Event::Started { unit: unit("b", 1) },
            Event::Failed {
                unit: unit("a", 1),
                entry: "main".into(),
                reason: "boom".into(),
            },
            Event::Restarting {
                unit: unit("a", 1),
                delay_ms: 10,
                attempt: 1,
                restarts_in_window: 1,
                group: vec!["a".into()],
            },
            Event::Finalized { unit: unit("a", 1) },
            Event::Started { unit: unit("a", 2) },
            // A reload sets up b's next version, then finalizes the old one.
            Event::ReloadSetupOk {
                unit: unit("b", 2),
                file: "lib.so".into(),
            },
            Event::Finalized { unit: unit("b", 1) },
        ];
        for e in &events {
            states.event(e);
        }
        let s = states.snapshot();
        let a = &s[&("ctx".to_owned(), "a".to_owned())];
        assert_eq!(
            *a,
            UnitState {
                phase: Phase::Serving,
                generation: 2,
                restarts: 1,
                last_failure: Some("boom".into()),
                reloads: 0,
                reloads_rolled_back: 0,
            }
        );
        let b = &s[&("ctx".to_owned(), "b".to_owned())];
        assert_eq!(
            *b,
            UnitState {
                phase: Phase::Serving,
                generation: 2,
                restarts: 0,
                last_failure: None,
                reloads: 1,
                reloads_rolled_back: 0,
            }
        );
    }

    #[test]
    fn unit_states_after_a_rolled_back_reload_show_the_old_generation_serving() {
        let states = UnitStates::default();
        let events = [
            Event::Started { unit: unit("a", 1) },
            // A reload sets up a's next version, then is refused: the new
            // instance is discarded (finalized), the old one resumes.
            Event::ReloadSetupOk {
                unit: unit("a", 2),
                file: "lib.so".into(),
            },
            Event::Finalized { unit: unit("a", 2) },
            Event::ReloadRolledBack {
                unit: unit("a", 2),
                file: "lib.so".into(),
            },
        ];
        for e in &events {
            states.event(e);
        }
        let a = &states.snapshot()[&("ctx".to_owned(), "a".to_owned())];
        assert_eq!(
            *a,
            UnitState {
                phase: Phase::Serving,
                generation: 1,
                restarts: 0,
                last_failure: None,
                reloads: 0,
                reloads_rolled_back: 1,
            }
        );
        // A later reload that is committed counts as one, from generation 2.
        states.event(&Event::ReloadSetupOk {
            unit: unit("a", 2),
            file: "lib.so".into(),
        });
        states.event(&Event::Finalized { unit: unit("a", 1) });
        states.event(&Event::Started { unit: unit("a", 2) });
        let a = &states.snapshot()[&("ctx".to_owned(), "a".to_owned())];
        assert_eq!((a.phase, a.generation, a.reloads), (Phase::Serving, 2, 1));
        assert_eq!(
            Event::ReloadRolledBack {
                unit: unit("a", 2),
                file: "lib.so".into(),
            }
            .name(),
            "reload_rolled_back"
        );
    }

    #[test]
    fn unit_states_keep_a_give_up_and_ignore_host_wide_events() {
        let states = UnitStates::default();
        states.event(&Event::Started { unit: unit("a", 1) });
        states.event(&Event::Hung {
            unit: unit("a", 1),
            entry: "loop".into(),
            limit_ms: Some(50),
        });
        states.event(&Event::GaveUp {
            unit: unit("a", 1),
            action: "stop_service".into(),
            restarts_in_window: 3,
        });
        states.event(&Event::ContextEnded {
            context: "ctx".into(),
        });
        states.event(&Event::ReloadPostponed {
            file: "lib.so".into(),
        });
        let s = states.snapshot();
        assert_eq!(s.len(), 1);
        let a = &s[&("ctx".to_owned(), "a".to_owned())];
        assert_eq!(a.phase, Phase::GaveUp);
        assert_eq!(a.last_failure.as_deref(), Some("loop hung"));
    }
}
