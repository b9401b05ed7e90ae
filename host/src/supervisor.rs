//! The top of the process: starts one thread per context, watches for
//! SIGINT/SIGTERM, and decides the exit code.
//!
//! The first signal asks every context to stop (each finalizes its
//! instances in reverse order) and starts the `shutdown_timeout` clock; a
//! second signal exits at once. When the clock runs out, the contexts still
//! running are named and the process exits without waiting for them.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Instant;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::cli::exit;
use crate::deploy::Deployment;
use crate::runtime::{ContextEvent, StartGate, run_context};

enum Msg {
    Context(ContextEvent),
    Signal(i32),
    SecondSignal(i32),
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

/// Runs a deployment to its end and returns the process exit code.
pub fn run(deployment: Deployment) -> u8 {
    let (tx, rx) = mpsc::channel::<Msg>();
    match Signals::new([SIGINT, SIGTERM]) {
        Ok(mut signals) => {
            let tx = tx.clone();
            let spawned = std::thread::Builder::new()
                .name("signals".into())
                .spawn(move || {
                    for (n, sig) in signals.forever().enumerate() {
                        let msg = if n == 0 {
                            Msg::Signal(sig)
                        } else {
                            Msg::SecondSignal(sig)
                        };
                        if tx.send(msg).is_err() {
                            break;
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!("cannot watch for signals: {e}");
            }
        }
        Err(e) => tracing::warn!("cannot watch for signals: {e}"),
    }

    let total = deployment.contexts.len();
    if total == 0 {
        tracing::warn!("the manifest has no context: nothing to run");
        return exit::OK;
    }
    let shared: Vec<_> = deployment
        .contexts
        .iter()
        .map(|c| Arc::clone(&c.shared))
        .collect();
    let gate = Arc::new(StartGate::new(total));
    let (ctx_tx, ctx_rx) = mpsc::channel::<ContextEvent>();
    let mut threads = Vec::new();
    for (i, plan) in deployment.contexts.into_iter().enumerate() {
        let gate = Arc::clone(&gate);
        let events = ctx_tx.clone();
        let name = plan.shared.name.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("ctx-{name}"))
            .spawn(move || run_context(i, plan, &gate, &events));
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                tracing::error!(context = %name, "cannot start the context thread: {e}");
                return exit::RUNTIME_FAILURE;
            }
        }
    }
    drop(ctx_tx);
    // Forward context events into the one channel the loop below reads.
    {
        let tx = tx.clone();
        let _ = std::thread::Builder::new()
            .name("ctx-events".into())
            .spawn(move || {
                for e in ctx_rx {
                    if tx.send(Msg::Context(e)).is_err() {
                        break;
                    }
                }
            });
    }
    drop(tx);

    let mut ended = vec![false; total];
    let mut abandoned = vec![false; total];
    // When each context must have finished stopping (set when it starts to
    // stop, or for all of them on a signal).
    let mut deadlines: Vec<Option<Instant>> = vec![None; total];
    let timeout = deployment.shutdown_timeout;
    loop {
        let next = deadlines
            .iter()
            .zip(&ended)
            .filter(|(_, e)| !**e)
            .filter_map(|(d, _)| *d)
            .min();
        let msg = match next {
            None => rx.recv().ok(),
            Some(d) => match rx.recv_timeout(d.saturating_duration_since(Instant::now())) {
                Ok(m) => Some(m),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let now = Instant::now();
                    for i in 0..total {
                        if !ended[i] && deadlines[i].is_some_and(|d| d <= now) {
                            tracing::error!(
                                context = %shared[i].name,
                                "did not finish stopping within shutdown_timeout ({}): abandoned, its remaining instances are not finalized",
                                humantime::format_duration(timeout)
                            );
                            ended[i] = true;
                            abandoned[i] = true;
                        }
                    }
                    if ended.iter().all(|e| *e) {
                        break;
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => None,
            },
        };
        match msg {
            None => break,
            Some(Msg::Context(ContextEvent::AllReady)) => {
                tracing::info!("all contexts ready ({total})");
            }
            Some(Msg::Context(ContextEvent::Stopping(i))) => {
                if deadlines[i].is_none() {
                    deadlines[i] = Some(Instant::now() + timeout);
                }
            }
            Some(Msg::Context(ContextEvent::Ended(i))) => {
                ended[i] = true;
                if ended.iter().all(|e| *e) {
                    break;
                }
            }
            Some(Msg::Signal(sig)) => {
                tracing::info!(
                    "received {}: stopping every context (finalizing, at most {}); send it again to exit at once",
                    signal_name(sig),
                    humantime::format_duration(timeout)
                );
                let deadline = Instant::now() + timeout;
                for (i, s) in shared.iter().enumerate() {
                    s.request_stop();
                    if deadlines[i].is_none() {
                        deadlines[i] = Some(deadline);
                    }
                }
                gate.abort();
            }
            Some(Msg::SecondSignal(sig)) => {
                tracing::warn!("received {} again: exiting now", signal_name(sig));
                return exit::FORCED;
            }
        }
    }
    if abandoned.iter().any(|a| *a) {
        return exit::SHUTDOWN_TIMEOUT;
    }
    for t in threads {
        let _ = t.join();
    }
    let failed: Vec<&str> = shared
        .iter()
        .filter(|s| s.fatal.load(Ordering::SeqCst) || s.setup_failed.load(Ordering::SeqCst))
        .map(|s| s.name.as_str())
        .collect();
    if failed.is_empty() {
        tracing::info!("every context ended");
        exit::OK
    } else {
        tracing::error!("ended with failures in: {}", failed.join(", "));
        exit::RUNTIME_FAILURE
    }
}
