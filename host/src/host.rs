//! The top of the process: starts every context, every flow and the
//! watchdog, talks to systemd, and decides the exit code.
//!
//! Flows ([`crate::flow`]) are opened first (their run stores, and the run
//! each takes up): a flow that cannot start (an unusable store, a
//! `recover` with nothing to recover) stops the host before anything runs,
//! with code 2. The run ends when every context has ended and every flow
//! has finished; with `[host] exit_when = "flows_finished"`, the contexts
//! are stopped once every flow has finished. A signal stops the flows too.
//!
//! A host's state is its own: [`run`] makes the host's watchdog and thread
//! starter ([`Watchdog`], [`Spawner`]) and hands them, with the deployment's
//! event hub, to every context and the reload watcher. Only the signal
//! handler is per process.
//!
//! The first SIGINT/SIGTERM/SIGHUP ([`crate::signals`]) asks every context
//! to stop: each finalizes its instances in reverse order, each `finalize`
//! bounded by its `shutdown_timeout`. A second signal exits at once. A
//! thread that cannot be created ([`crate::threads`]) and the ceiling of
//! abandoned threads ([`Watchdog`]) stop every context the same way. A
//! context that does not finish stopping within its budget (one second plus
//! twice the sum of its services' shutdown timeouts, a backstop the per-call
//! deadlines should never let it reach) is abandoned and named.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Weak};
use std::time::Instant;

use crate::control::{self, Commands};
use crate::event::Event;
use crate::exit;
use crate::flow::engine::{self as flows, Outcome};
use crate::manifest::ExitWhen;
use crate::pipeline::{PipelineEvent, RunningPipeline};
use crate::plan::Deployment;
use crate::runtime::{ContextEvent, RunningContext, StartGate};
use crate::signals;
use crate::supervision::notify;
use crate::supervision::watchdog::Watchdog;
use crate::threads::Spawner;

enum Msg {
    Context(ContextEvent),
    Pipeline(PipelineEvent),
    /// Flow `index` finished with this outcome.
    Flow(usize, Outcome),
    LeakCeiling,
    Signal(i32),
    CannotSpawn,
    /// `otools stop`, through the control socket.
    Stop,
}

/// Has every `main_once` service finished (for `exit_when = "main_once_done"`)?
fn main_once_finished(cores: &[Arc<RunningContext>]) -> bool {
    !cores.iter().any(|c| c.main_once_pending())
}

/// Is every context making progress (for systemd's `WATCHDOG=1`)? A context
/// counts as alive when it ended (or is gone), waits with nothing to do, or
/// its driver completed an iteration since the last ping. It holds the
/// contexts weakly: the watchdog thread that asks it must not keep its host
/// alive.
fn progress_check(cores: &[Arc<RunningContext>]) -> impl Fn() -> bool + Send + 'static {
    let cores: Vec<Weak<RunningContext>> = cores.iter().map(Arc::downgrade).collect();
    let last: Vec<AtomicU64> = cores.iter().map(|_| AtomicU64::new(u64::MAX)).collect();
    move || {
        let mut ok = true;
        for (core, seen) in cores.iter().zip(&last) {
            let Some(core) = core.upgrade() else {
                continue;
            };
            let beat = core.heartbeat.load(Ordering::Relaxed);
            let moved = seen.swap(beat, Ordering::Relaxed) != beat;
            ok &= moved || core.idle.load(Ordering::Relaxed) || core.ended.load(Ordering::Relaxed);
        }
        ok
    }
}

/// Runs a deployment to its end and returns the process exit code. With
/// `control`, it answers on the control socket while it runs (the socket
/// is removed when it returns).
pub fn run(mut deployment: Deployment, control: Option<control::Setup>) -> u8 {
    let (tx, rx) = mpsc::channel::<Msg>();
    {
        let tx = tx.clone();
        signals::on_first(move |sig| {
            let _ = tx.send(Msg::Signal(sig));
        });
    }
    // This host's thread starter and watchdog: they record on the host's
    // hub, and tell this loop.
    let threads = {
        let tx = tx.clone();
        Arc::new(Spawner::new(Arc::clone(&deployment.events), move || {
            let _ = tx.send(Msg::CannotSpawn);
        }))
    };
    let watchdog = {
        let tx = tx.clone();
        Watchdog::new(
            deployment.shortest_watchdog(),
            deployment.max_abandoned_threads,
            Arc::clone(&deployment.events),
            move || {
                let _ = tx.send(Msg::LeakCeiling);
            },
        )
    };

    // Every flow's store is opened and its run set up before anything
    // runs: a `recover` with nothing to recover stops here.
    let mut opened = Vec::new();
    for plan in std::mem::take(&mut deployment.flows) {
        match flows::open(plan, Arc::clone(&deployment.events)) {
            Ok(o) => opened.push(o),
            Err(e) => {
                tracing::error!("{e}; nothing was started");
                return exit::CONFIG_ERROR;
            }
        }
    }
    let flow_handles: Vec<_> = opened.iter().map(|o| o.handle.clone()).collect();
    // Plugins and `otools raise` find them from now on.
    for f in &flow_handles {
        deployment.flow_directory.register(Arc::new(f.clone()));
    }
    let exit_when = deployment.exit_when;
    let total = deployment.contexts.len();
    if total == 0 && deployment.pipelines.is_empty() && opened.is_empty() {
        tracing::warn!("the manifest has no context: nothing to run");
        notify::send("READY=1");
        return exit::OK;
    }
    let pipes: Vec<Arc<RunningPipeline>> = {
        let tx = tx.clone();
        let to_host: crate::pipeline::Notify = Arc::new(move |e| {
            let _ = tx.send(Msg::Pipeline(e));
        });
        let plans = std::mem::take(&mut deployment.pipelines);
        plans
            .into_iter()
            .enumerate()
            .map(|(i, plan)| {
                RunningPipeline::new(
                    i,
                    plan,
                    Arc::clone(&to_host),
                    Arc::clone(&watchdog),
                    Arc::clone(&threads),
                )
            })
            .collect()
    };
    let gate = Arc::new(StartGate::new(total));
    let (ctx_tx, ctx_rx) = mpsc::channel::<ContextEvent>();
    let cores: Vec<Arc<RunningContext>> = deployment
        .contexts
        .into_iter()
        .enumerate()
        .map(|(i, plan)| {
            RunningContext::new(
                i,
                plan,
                Arc::clone(&gate),
                ctx_tx.clone(),
                Arc::clone(&watchdog),
                Arc::clone(&threads),
            )
        })
        .collect();
    drop(ctx_tx);
    // Forward context events into the one channel the loop below reads.
    // Nothing runs yet: without this thread or the watchdog, stop here.
    {
        let tx = tx.clone();
        let forwarder = threads.spawn("the context event forwarder", "ctx-events", move || {
            for e in ctx_rx {
                if tx.send(Msg::Context(e)).is_err() {
                    break;
                }
            }
        });
        if forwarder.is_err() {
            return exit::CANNOT_SPAWN;
        }
    }
    if watchdog.start(&threads, progress_check(&cores)).is_err() {
        return exit::CANNOT_SPAWN;
    }
    // Answers `otools status`, `send` and `stop` from now on; removes the
    // socket when `run` returns.
    let _socket = control.and_then(|c| {
        let tx = tx.clone();
        let router = Arc::clone(&deployment.router) as Arc<dyn crate::messaging::Router>;
        let commands = Commands::new(c.manifest, cores.clone(), c.states, router, move || {
            let _ = tx.send(Msg::Stop);
        })
        .with_pipelines(pipes.clone())
        .with_flows(Arc::clone(&deployment.flow_directory), flow_handles.clone());
        control::serve(c.socket, commands, &threads).ok()
    });

    let mut ended = vec![false; total];
    let mut abandoned = vec![false; total];
    // When each context must have finished stopping.
    let mut deadlines: Vec<Option<Instant>> = vec![None; total];
    let mut exit_host = false;
    let mut leak_ceiling = false;
    let mut cannot_spawn = false;
    let mut flows_done: Vec<Option<Outcome>> = vec![None; opened.len()];
    let stop_all = |deadlines: &mut Vec<Option<Instant>>| {
        notify::send("STOPPING=1");
        for f in &flow_handles {
            f.stop();
        }
        for (i, core) in cores.iter().enumerate() {
            core.shared.request_stop();
            if deadlines[i].is_none() {
                deadlines[i] = Some(Instant::now() + core.shutdown_budget());
            }
        }
        for p in &pipes {
            p.stop("the host is stopping");
        }
        gate.abort();
    };
    for (i, core) in cores.iter().enumerate() {
        if core.start().is_err() {
            // Journaled and logged where it failed. The contexts not started
            // have nothing to finalize; the others stop and finalize.
            cannot_spawn = true;
            for e in &mut ended[i..] {
                *e = true;
            }
            stop_all(&mut deadlines);
            break;
        }
    }
    if total == 0 {
        notify::send("READY=1");
    }
    for p in &pipes {
        if cannot_spawn {
            break;
        }
        if p.start().is_err() {
            cannot_spawn = true;
            stop_all(&mut deadlines);
        }
    }
    for (i, o) in opened.into_iter().enumerate() {
        let tx = tx.clone();
        let started = o.start(
            Arc::clone(&watchdog),
            Arc::clone(&threads),
            move |outcome| {
                let _ = tx.send(Msg::Flow(i, outcome));
            },
        );
        if started.is_err() {
            cannot_spawn = true;
            flows_done[i] = Some(Outcome::Stopped);
            stop_all(&mut deadlines);
        }
    }
    if !cannot_spawn {
        let tx = tx.clone();
        crate::reload::start(
            cores.clone(),
            pipes.clone(),
            deployment.loaded.clone(),
            deployment.reload.clone(),
            Arc::clone(&deployment.events),
            Arc::clone(&watchdog),
            Arc::clone(&threads),
            move |_| {
                let _ = tx.send(Msg::LeakCeiling);
            },
        );
    }
    drop(tx);
    let mut once_stopped = false;

    let all_ended = |ended: &[bool], flows_done: &[Option<Outcome>]| {
        ended.iter().all(|e| *e)
            && pipes.iter().all(|p| p.done())
            && flows_done.iter().all(Option::is_some)
    };
    loop {
        if all_ended(&ended, &flows_done) {
            break;
        }
        let next = deadlines
            .iter()
            .zip(&ended)
            .filter(|(_, e)| !**e)
            .filter_map(|(d, _)| *d)
            .chain(
                pipes
                    .iter()
                    .filter(|p| !p.done())
                    .filter_map(|p| p.deadline()),
            )
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
                                context = %cores[i].shared.name,
                                "did not finish stopping within its shutdown budget ({}): abandoned",
                                humantime::format_duration(cores[i].shutdown_budget())
                            );
                            cores[i].emit(Event::ContextAbandoned {
                                context: cores[i].shared.name.clone(),
                            });
                            ended[i] = true;
                            abandoned[i] = true;
                        }
                    }
                    for p in &pipes {
                        if !p.done() && p.deadline().is_some_and(|d| d <= now) {
                            p.abandon();
                        }
                    }
                    if all_ended(&ended, &flows_done) {
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
                notify::send("READY=1");
            }
            Some(Msg::Context(ContextEvent::Stopping(i))) => {
                if deadlines[i].is_none() {
                    deadlines[i] = Some(Instant::now() + cores[i].shutdown_budget());
                }
            }
            Some(Msg::Context(e @ (ContextEvent::Ended(_) | ContextEvent::OnceDone(_)))) => {
                if let ContextEvent::Ended(i) = e {
                    ended[i] = true;
                }
                if all_ended(&ended, &flows_done) {
                    break;
                }
                if exit_when == ExitWhen::MainOnceDone
                    && !once_stopped
                    && main_once_finished(&cores)
                {
                    once_stopped = true;
                    tracing::info!(
                        "every main_once service has finished (exit_when = \"main_once_done\"): stopping every context"
                    );
                    stop_all(&mut deadlines);
                }
            }
            Some(Msg::Flow(i, outcome)) => {
                flows_done[i] = Some(outcome);
                if flows_done.iter().all(Option::is_some)
                    && exit_when == ExitWhen::FlowsFinished
                    && !ended.iter().all(|e| *e)
                {
                    tracing::info!(
                        "every flow finished (exit_when = \"flows_finished\"): stopping every context"
                    );
                    stop_all(&mut deadlines);
                }
            }
            Some(Msg::Pipeline(PipelineEvent::Stopping(_))) => {}
            Some(Msg::Pipeline(PipelineEvent::Ended(_))) => {
                if all_ended(&ended, &flows_done) {
                    break;
                }
                if exit_when == ExitWhen::PipelinesFinished && pipes.iter().all(|p| p.done()) {
                    tracing::info!(
                        "every pipeline has finished (exit_when = \"pipelines_finished\"): stopping every context"
                    );
                    stop_all(&mut deadlines);
                }
            }
            Some(Msg::Pipeline(PipelineEvent::ExitHost(i))) => {
                tracing::error!(
                    pipeline = %pipes[i].name(),
                    "a stage gave up with on_give_up = \"exit_host\": stopping everything, then exiting with code {}",
                    exit::GAVE_UP
                );
                exit_host = true;
                stop_all(&mut deadlines);
            }
            Some(Msg::Context(ContextEvent::ExitHost(i))) => {
                tracing::error!(
                    context = %cores[i].shared.name,
                    "a service gave up with on_give_up = \"exit_host\": stopping everything, then exiting with code {}",
                    exit::GAVE_UP
                );
                exit_host = true;
                stop_all(&mut deadlines);
            }
            Some(Msg::LeakCeiling) => {
                leak_ceiling = true;
                stop_all(&mut deadlines);
            }
            Some(Msg::CannotSpawn) => {
                cannot_spawn = true;
                stop_all(&mut deadlines);
            }
            Some(Msg::Stop) => stop_all(&mut deadlines),
            Some(Msg::Signal(sig)) => {
                tracing::info!(
                    "received {}: stopping every context (finalizing); send a signal again to exit at once",
                    signals::name(sig)
                );
                stop_all(&mut deadlines);
            }
        }
    }
    let abandoned_any = abandoned.iter().any(|a| *a)
        || cores.iter().any(|c| c.abandoned.load(Ordering::SeqCst))
        || pipes.iter().any(|p| p.abandoned.load(Ordering::SeqCst))
        || flows_done.contains(&Some(Outcome::Abandoned));
    if cannot_spawn || threads.any_failed() {
        tracing::error!(
            "stopped because a thread could not be created (see above); exit code {}",
            exit::CANNOT_SPAWN
        );
        return exit::CANNOT_SPAWN;
    }
    if exit_host {
        return exit::GAVE_UP;
    }
    if leak_ceiling {
        return exit::LEAK_CEILING;
    }
    if abandoned_any {
        tracing::error!(
            "stopped, but some instances were abandoned without finalizing (see above)"
        );
        return exit::SHUTDOWN_TIMEOUT;
    }
    let failed: Vec<&str> = cores
        .iter()
        .filter(|c| c.shared.fatal.load(Ordering::SeqCst) || c.failed.load(Ordering::SeqCst))
        .map(|c| c.shared.name.as_str())
        .chain(pipes.iter().filter(|p| p.has_failed()).map(|p| p.name()))
        .chain(
            flow_handles
                .iter()
                .zip(&flows_done)
                .filter(|(h, d)| **d == Some(Outcome::Failure) || h.fatal())
                .map(|(h, _)| h.name()),
        )
        .collect();
    let incomplete: Vec<&str> = flow_handles
        .iter()
        .zip(&flows_done)
        .filter(|(_, d)| **d == Some(Outcome::Incomplete))
        .map(|(h, _)| h.name())
        .collect();
    if failed.is_empty() && !incomplete.is_empty() {
        tracing::warn!(
            "bounded run (--once) incomplete: work is outstanding in flow(s) {}; exit code {} (`--mode continue` takes it up)",
            incomplete.join(", "),
            exit::INCOMPLETE
        );
        exit::INCOMPLETE
    } else if failed.is_empty() {
        if pipes.is_empty() {
            tracing::info!("every context ended");
        } else {
            tracing::info!("every context and pipeline ended");
        }
        exit::OK
    } else {
        tracing::error!("ended with failures in: {}", failed.join(", "));
        exit::RUNTIME_FAILURE
    }
}
