//! Restart policy arithmetic, free of threads and clocks: every function
//! takes `now`, so the window, back-off and reset rules are unit-tested on
//! a fake clock (plain `Instant`s moved by hand).
//!
//! - Intensity (Erlang/OTP, systemd `StartLimitBurst`): at most
//!   `max_restarts` restarts within any `restart_window`; one more failure
//!   gives up.
//! - Back-off (Kubernetes CrashLoopBackOff, systemd `RestartSteps`): the
//!   delay before the k-th consecutive restart is
//!   `min(restart_delay * 2^(k-1), max_restart_delay)`, and k resets once
//!   the service has run healthy for `backoff_reset_after`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub use crate::manifest::policy::{GiveUp, Policy, Restart, Strategy};

/// The verdict on one exit of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Restart after this delay; `attempt` counts consecutive restarts (1-based).
    Restart {
        /// Wait this long first.
        delay: Duration,
        /// Consecutive restart number since the last reset.
        attempt: u32,
    },
    /// Do not restart (the policy says never, or a normal exit under on-failure).
    Stay,
    /// Too many restarts: give up.
    GiveUp,
}

/// A service's restart history.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    /// When each restart within the window happened.
    restarts: VecDeque<Instant>,
    /// Consecutive restarts since the last back-off reset.
    consecutive: u32,
}

impl Tracker {
    /// The delay before consecutive restart `attempt` (1-based).
    pub fn backoff(policy: &Policy, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        policy
            .restart_delay
            .checked_mul(factor)
            .unwrap_or(policy.max_restart_delay)
            .min(policy.max_restart_delay)
    }

    /// Restarts counted in the current window.
    pub fn restarts_in_window(&self) -> usize {
        self.restarts.len()
    }

    /// Decides what follows an exit at `now` of an instance that had been
    /// running since `running_since` (`failure`: error, panic, hang, failed
    /// setup; otherwise a deactivation). Records the restart if it decides one.
    pub fn on_exit(
        &mut self,
        policy: &Policy,
        failure: bool,
        running_since: Instant,
        now: Instant,
    ) -> Decision {
        let wanted = match policy.restart {
            Restart::Always => true,
            Restart::OnFailure => failure,
            Restart::Never => false,
        };
        if !wanted {
            return Decision::Stay;
        }
        if now.saturating_duration_since(running_since) >= policy.backoff_reset_after {
            self.consecutive = 0;
        }
        while self
            .restarts
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= policy.restart_window)
        {
            self.restarts.pop_front();
        }
        if self.restarts.len() >= policy.max_restarts as usize {
            return Decision::GiveUp;
        }
        self.restarts.push_back(now);
        self.consecutive += 1;
        Decision::Restart {
            delay: Tracker::backoff(policy, self.consecutive),
            attempt: self.consecutive,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            max_restarts: 3,
            restart_window: Duration::from_secs(10),
            restart_delay: Duration::from_millis(100),
            max_restart_delay: Duration::from_millis(1000),
            backoff_reset_after: Duration::from_secs(60),
            ..Policy::default()
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = policy();
        let curve: Vec<u128> = (1..=7)
            .map(|k| Tracker::backoff(&p, k).as_millis())
            .collect();
        assert_eq!(curve, [100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(Tracker::backoff(&p, 40), ms(1000), "no overflow far out");
    }

    #[test]
    fn exactly_max_restarts_within_the_window_then_give_up() {
        let p = policy();
        let t0 = Instant::now();
        let mut t = Tracker::default();
        let mut restarts = 0;
        for i in 0..10u64 {
            let now = t0 + ms(i * 10);
            match t.on_exit(&p, true, now, now) {
                Decision::Restart { .. } => restarts += 1,
                Decision::GiveUp => break,
                Decision::Stay => unreachable!(),
            }
        }
        assert_eq!(restarts, 3);
    }

    #[test]
    fn a_restart_just_outside_the_window_is_forgotten() {
        let p = policy();
        let t0 = Instant::now();
        let mut t = Tracker::default();
        for i in 0..3 {
            let now = t0 + ms(i);
            assert!(matches!(
                t.on_exit(&p, true, now, now),
                Decision::Restart { .. }
            ));
        }
        // One instant before the first restart leaves the window: still full.
        let almost = t0 + p.restart_window - ms(1);
        assert_eq!(
            t.clone().on_exit(&p, true, almost, almost),
            Decision::GiveUp
        );
        // Once it has left, there is room for one more.
        let after = t0 + p.restart_window;
        assert!(matches!(
            t.on_exit(&p, true, after, after),
            Decision::Restart { .. }
        ));
        assert_eq!(t.restarts_in_window(), 3);
    }

    #[test]
    fn backoff_resets_after_healthy_running() {
        let p = Policy {
            max_restarts: 100,
            ..policy()
        };
        let t0 = Instant::now();
        let mut t = Tracker::default();
        let mut delays = Vec::new();
        for i in 0..4u64 {
            let now = t0 + ms(i);
            if let Decision::Restart { delay, .. } = t.on_exit(&p, true, now, now) {
                delays.push(delay.as_millis());
            }
        }
        assert_eq!(delays, [100, 200, 400, 800]);
        // The next generation ran healthy for backoff_reset_after: back to the start.
        let started = t0 + ms(10);
        let now = started + p.backoff_reset_after;
        assert_eq!(
            t.on_exit(&p, true, started, now),
            Decision::Restart {
                delay: ms(100),
                attempt: 1
            }
        );
        // ...but a shorter healthy run does not reset it.
        let now2 = now + ms(5);
        assert_eq!(
            t.on_exit(&p, true, now, now2),
            Decision::Restart {
                delay: ms(200),
                attempt: 2
            }
        );
    }

    #[test]
    fn restart_types_decide_which_exits_restart() {
        let now = Instant::now();
        for (restart, failure, restarts) in [
            (Restart::Always, true, true),
            (Restart::Always, false, true),
            (Restart::OnFailure, true, true),
            (Restart::OnFailure, false, false),
            (Restart::Never, true, false),
            (Restart::Never, false, false),
        ] {
            let p = Policy {
                restart,
                ..policy()
            };
            let d = Tracker::default().on_exit(&p, failure, now, now);
            assert_eq!(
                matches!(d, Decision::Restart { .. }),
                restarts,
                "{restart:?} failure={failure}"
            );
        }
    }
}
