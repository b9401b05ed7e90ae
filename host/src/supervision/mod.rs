//! Supervision: how failed or hung services are replaced in place.
//!
//! - [`policy`]: the restart rules (intensity window, exponential back-off
//!   that resets, give-up actions, restart types and strategies) as pure
//!   arithmetic on a caller-supplied clock.
//! - [`watchdog`]: one per host, the thread that watches every call with a
//!   deadline and declares it hung; it also keeps the coarse clock calls are
//!   stamped with, counts the abandoned threads, and sends systemd's
//!   `WATCHDOG=1` pings.
//! - [`journal`]: the `--events` JSON-lines journal of lifecycle events, a
//!   sink of the host's [`crate::event::Events`].
//! - [`notify`]: systemd's `sd_notify` protocol.
//!
//! What an in-process host cannot do: stop a thread stuck in plugin code, or
//! survive a plugin that aborts or segfaults. A hung call's thread is
//! abandoned (its instance fenced so it can no longer act), and a crash of
//! the whole process is left to the OS supervisor (systemd) to restart.

pub mod journal;
pub mod notify;
pub mod policy;
pub mod watchdog;
