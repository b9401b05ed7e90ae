//! The host's exit codes, documented in `--help` and the README. They live
//! here, outside `cli`, so that `host`, `signals` and `threads`
//! can use them without depending on the command line.

/// Every context ended normally (or stopped on the first signal) and everything was finalized.
pub const OK: u8 = 0;
/// The deployment ran but failed: a service logged at `fatal`, or a
/// service ended in failure (it gave up, or failed with `restart = "never"`).
pub const RUNTIME_FAILURE: u8 = 1;
/// Nothing ran: the manifest or a plugin is wrong (or `check` found problems).
pub const CONFIG_ERROR: u8 = 2;
/// A bounded run (`otools run --once`) left flow work outstanding (pending
/// delays or retries): not a failure; `--mode continue` takes it up.
pub const INCOMPLETE: u8 = 4;
/// Stopped, but something was abandoned: a `finalize` or a loop call overran `shutdown_timeout`.
pub const SHUTDOWN_TIMEOUT: u8 = 3;
/// A service gave up with `on_give_up = "exit_host"` (EX_TEMPFAIL: let systemd restart the host).
pub const GAVE_UP: u8 = 75;
/// A leak ceiling was reached (hot reloads loaded `max_loaded_libraries` versions, or
/// `max_abandoned_threads` threads are stuck in hung calls): stopped cleanly so an OS
/// supervisor restarts the host.
pub const LEAK_CEILING: u8 = 76;
/// The host could not create a thread it needs (EX_OSERR: the system's
/// thread limit is reached): it stopped every context cleanly.
pub const CANNOT_SPAWN: u8 = 71;
/// A second SIGINT/SIGTERM/SIGHUP: exited at once, without waiting.
pub const FORCED: u8 = 130;
