//! Integration tests: every test builds the real plugins (once) and runs the
//! real `otools` binary, asserting on its exit code and its JSON log lines.
//! No test asserts a duration; waits are on log lines or process exit, with
//! a generous deadline that only fails a hung test.

#![allow(missing_docs, reason = "test functions are named as claims")]
#![allow(unreachable_pub, reason = "helpers are shared between test modules")]
#![allow(clippy::print_stdout, reason = "tests may print what they saw")]

/// The shared kit: build once, write manifests, run the binary.
mod util;

/// Libraries built against an incompatible ABI are refused clearly; another otools-api on the same ABI loads.
mod compat;
/// The control socket: `otools status` and `otools stop`, one host per manifest.
mod control;
/// Dataframe semantics through real plugins: atomic updates, lock timeouts, values.
mod dataframes;
/// Panics and errors in every entry point are contained and reported.
mod failures;
/// Flow events raised by steps, services and `otools raise`; flows in `otools status`.
mod flow_events;
/// Step supervision keys: retries with their delays and window, `restart = "never"`, refused service keys.
mod flow_retries;
/// Durable event flows: routing, expressions, limits, failures, recovery, delays.
mod flows;
/// The host's module layers and ARCHITECTURE.md's code map, read from the source.
mod layout;
/// setup before main, finalize once in reverse order, deactivation, fatal, signals.
mod lifecycle;
/// Manifest mistakes: exit code 2 and a message naming the file and line.
mod manifest_errors;
/// Every shipped manifest in manifests/ checks clean and runs to its end.
mod manifests;
/// Messages between services: mailboxes, request/reply, publish/subscribe, SHUTDOWN, correlation ids.
mod messaging;
/// Pipelines: delivery, bounded queues, drain on stop, dead letters, partitioned sources.
mod pipelines;
/// Plugin libraries: inspect, and refusal of files that are not plugins.
mod plugins;
/// Hot reload: swap in place with state hand-off, refusal keeps the old version.
mod reload;
/// Run-once services (`main_once`) and `[host] exit_when`.
mod run_once;
/// Hangs, failures, restarts, fencing, give-up, strategies and systemd.
mod supervision;
/// Trigger modes (and / or / xor) over one to three conditions.
mod triggers;
