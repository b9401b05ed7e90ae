//! The supervision keys of a service and a context, as declared: restart
//! type, give-up action, strategy and the [`Policy`] they add up to (pure
//! data; the arithmetic that applies them is `supervision::policy`).

use std::time::Duration;

use serde::Deserialize;

/// When a service is restarted (OTP's permanent / transient / temporary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    /// After any exit, failure or deactivation (OTP `permanent`).
    Always,
    /// After a failure only: error, panic, hang, failed setup (OTP `transient`).
    #[default]
    OnFailure,
    /// Never (OTP `temporary`).
    Never,
}

/// What happens when a service exceeds its restart intensity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum GiveUp {
    /// The service stays down; everything else goes on.
    #[default]
    StopService,
    /// Its context stops (finalizing the rest).
    StopContext,
    /// The host stops every context and exits with code 75, for an OS supervisor to restart it.
    ExitHost,
}

/// Which services restart with a failed one (OTP restart strategies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Only the failed service.
    #[default]
    OneForOne,
    /// Every service of the context.
    OneForAll,
    /// The failed service and those after it in manifest order.
    RestForOne,
}

/// How one service is supervised; defaults in [`Policy::default`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Longest a single `main`, loop or `check` call may take (`None`: not watched).
    pub watchdog: Option<Duration>,
    /// Longest `setup` may take.
    pub startup_timeout: Duration,
    /// Longest `finalize` may take.
    pub shutdown_timeout: Duration,
    /// When to restart.
    pub restart: Restart,
    /// Restarts allowed within `restart_window`.
    pub max_restarts: u32,
    /// The intensity window.
    pub restart_window: Duration,
    /// Delay before the first restart.
    pub restart_delay: Duration,
    /// Cap of the doubling delay.
    pub max_restart_delay: Duration,
    /// Healthy running time after which the back-off starts over.
    pub backoff_reset_after: Duration,
    /// What to do when giving up.
    pub on_give_up: GiveUp,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            watchdog: None,
            startup_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(5),
            restart: Restart::OnFailure,
            max_restarts: 5,
            restart_window: Duration::from_secs(10),
            restart_delay: Duration::from_millis(100),
            max_restart_delay: Duration::from_secs(30),
            backoff_reset_after: Duration::from_secs(60),
            on_give_up: GiveUp::StopService,
        }
    }
}
