//! Mailbox threads: one per serving generation of a service that has a
//! mailbox. It takes messages out of the unit's mailbox one at a time, in
//! order, and calls the instance's `handle_message` (under its `watchdog`),
//! never on the context's driver thread, so a service can request from
//! another of its own context without deadlock.
//!
//! It starts with the loop thread (`start_loop`), so only once the start
//! gate is open and the generation is installed: messages sent while a
//! generation sets up, restarts or is swapped by a reload stay queued and
//! reach the next one. It blocks on the mailbox while idle, and leaves
//! when its instance is retired or fenced, deactivates, its context stops,
//! or the next generation's thread attaches. The message being handled
//! when the handler fails is answered `PeerFailed`; when it hangs, the
//! watchdog's hang handler answers it `Timeout`. `SHUTDOWN` ends the unit
//! as a normal exit (`Exit::Shutdown`) and closes its mailbox.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use abi_stable::std_types::RResult;
use otools_abi::{CallErrorKind, MessageError, Value};
use parking_lot::Mutex;

use super::driver::{Classified, classify};
use super::unit::{Exit, State};
use super::{Instance, RunningContext};

use crate::event::Event;
use crate::instance::InstanceHost;
use crate::messaging::{self, Envelope, Failure, Next, ReplyTo, SHUTDOWN, correlation};
use crate::supervision::watchdog::Entry;
use crate::threads;

impl RunningContext {
    /// Tells each mailbox whether its unit can still handle messages: not
    /// ended or failed for good, and its context not stopping. Every send
    /// asks, so it reads two flags, the ones the context and the unit
    /// keep (shared, not a reference to the context: the router, which
    /// holds the mailboxes, outlives it).
    pub(super) fn watch_mailboxes(&self) {
        for unit in &self.units {
            if let Some(mb) = &unit.mailbox {
                let stop = Arc::clone(&self.shared.stop);
                let state = Arc::clone(&unit.state);
                mb.set_liveness(move || {
                    !stop.load(Ordering::Relaxed)
                        && !State::from_u8(state.load(Ordering::Acquire)).terminal()
                });
            }
        }
    }

    /// Starts the mailbox thread of `live`'s generation, if the unit has a
    /// mailbox; the previous generation's thread leaves.
    pub(super) fn start_mailbox(self: &Arc<Self>, u: usize, live: &Arc<Instance>) {
        let unit = &self.units[u];
        let Some(mb) = &unit.mailbox else { return };
        if unit.control.lock().generation != live.host.generation {
            return;
        }
        let messages = crate::plugin::messages(&live.host.library, &unit.export);
        if !messages.is_empty() {
            mb.set_accepts(messages);
        }
        let token = mb.attach(live.host.generation);
        let core = Arc::clone(self);
        let host = Arc::clone(&live.host);
        let what = format!("the mailbox thread of {}/{}", self.shared.name, unit.name);
        // A failure is journaled and handled by `threads::spawn`: the host
        // stops, and the messages stay queued.
        let _ = self.threads.spawn(
            &what,
            &threads::thread_name("mbox-", &unit.name),
            move || mailbox_thread(&core, u, token, &host),
        );
    }
}

/// What the message being handled is, for the hang handler to answer.
type InFlight = Arc<Mutex<Option<ReplyTo>>>;

/// The body of a mailbox thread.
fn mailbox_thread(core: &Arc<RunningContext>, u: usize, token: u64, host: &Arc<InstanceHost>) {
    let unit = &core.units[u];
    let Some(mb) = unit.mailbox.as_ref() else {
        return;
    };
    let generation = host.generation;
    let in_flight: InFlight = Arc::default();
    let slot = {
        let weak = Arc::downgrade(core);
        let in_flight = Arc::clone(&in_flight);
        core.watchdog.register(move |h| {
            let reply = in_flight.lock().take();
            if let Some(reply) = reply {
                reply.answer(Err(Failure::new(
                    MessageError::Timeout,
                    format!(
                        "the handler hung (no return within {})",
                        humantime::format_duration(h.limit)
                    ),
                )));
            }
            if let Some(c) = weak.upgrade() {
                c.instance_hung(&h);
            }
        })
    };
    // Atomic loads only: it runs under the mailbox lock.
    let leave = || core.shared.stopping() || host.retired() || host.deactivated();
    loop {
        let env = match mb.next(token, &leave) {
            Next::Message(env) => env,
            Next::Leave => break,
        };
        // The instance is loaded for each message and held only while it is
        // handled (no `Weak` either): stopping it waits for the last holder,
        // and `finalize` needs it unshared. A guard, not a clone: swapping
        // the instance out turns the guard into a counted reference.
        let guard = unit.live.load();
        let Some(live) = guard
            .as_ref()
            .filter(|l| Arc::ptr_eq(&l.host, host) && !l.host.retired())
        else {
            mb.put_back(env);
            break;
        };
        let Envelope {
            from,
            name,
            payload,
            correlation: id,
            reply,
        } = env;
        let _scope = correlation::enter(id.clone());
        let name = name.as_str();
        if name == SHUTDOWN {
            if mb.accepts(SHUTDOWN) {
                // The plugin's own clean-up first, like pyros' `shutdown()`.
                *in_flight.lock() = reply;
                let Ok(r) = RunningContext::watched(
                    &slot,
                    u,
                    generation,
                    Entry::Message,
                    unit.policy.watchdog,
                    0,
                    || live.handle_message(SHUTDOWN, payload),
                ) else {
                    return;
                };
                let reply = in_flight.lock().take();
                answer(reply, r, &live.host, name);
            } else if let Some(reply) = reply {
                drop(payload);
                reply.answer(Ok(Value::Null));
            }
            core.emit(Event::Shutdown {
                unit: core.unit_id(u, generation),
                from: from.to_string(),
                correlation: id.to_string(),
            });
            drop(guard);
            mb.close();
            core.instance_ended(u, generation, Exit::Shutdown);
            break;
        }
        if !mb.accepts(name) {
            // Accepted by the generation it was sent to, not by this one.
            messaging::report_unknown(&core.shared.events, mb, name, &from, &id);
            if let Some(reply) = reply {
                reply.answer(Err(Failure::new(
                    MessageError::UnknownMessage,
                    format!("{} no longer accepts `{name}`", mb.address),
                )));
            }
            continue;
        }
        // Only a request has someone to answer if the handler hangs.
        let request = reply.is_some();
        if request {
            *in_flight.lock() = reply;
        }
        let Ok(r) = RunningContext::watched(
            &slot,
            u,
            generation,
            Entry::Message,
            unit.policy.watchdog,
            0,
            || live.handle_message(name, payload),
        ) else {
            // Abandoned: the hang handler answered and ended the instance.
            return;
        };
        mb.note_handled();
        let reply = if request {
            in_flight.lock().take()
        } else {
            None
        };
        if let Some(reason) = answer(reply, r, &live.host, name) {
            core.emit(Event::MessageFailed {
                unit: core.unit_id(u, generation),
                name: name.to_string(),
                correlation: id.to_string(),
                reason: reason.clone(),
            });
            drop(guard);
            core.instance_ended(
                u,
                generation,
                Exit::Failed {
                    entry: Entry::Message,
                    reason,
                },
            );
            break;
        }
    }
    if core.shared.stopping() {
        // Nothing will handle what is left: answer it now.
        mb.close();
    }
}

/// Answers a request with the handler's result; returns the reason when
/// the handler failed (logged here).
fn answer(
    reply: Option<ReplyTo>,
    r: RResult<Value, otools_abi::CallError>,
    host: &InstanceHost,
    name: &str,
) -> Option<String> {
    let address = || format!("{}/{}", host.context.name, host.name);
    let (result, failed) = match r {
        RResult::ROk(v) => (Ok(v), None),
        RResult::RErr(e) if e.kind == CallErrorKind::Unimplemented => {
            tracing::warn!(
                context = %host.context.name,
                service = %host.name,
                "`{name}` is declared, but the service does not implement handle_message"
            );
            let f = Failure::new(
                MessageError::PeerFailed,
                format!("{} does not implement handle_message", address()),
            );
            (Err(f), None)
        }
        RResult::RErr(e) => match classify(host, "message", RResult::<(), _>::RErr(e)) {
            Classified::Failed(reason) => {
                let f = Failure::new(
                    MessageError::PeerFailed,
                    format!("{} {reason} (handling `{name}`)", address()),
                );
                (Err(f), Some(reason))
            }
            Classified::Ok | Classified::Unimplemented => (Ok(Value::Null), None),
        },
    };
    match reply {
        Some(reply) => reply.answer(result),
        None => drop(result),
    }
    failed
}
