//! [`InProcess`]: the in-process backend of [`Router`]. The manifest is the
//! registry: every service that accepts messages is registered while the
//! deployment is planned, with its mailbox and its topics, and a message
//! goes straight into the target's mailbox on the sender's thread (no
//! serialization: the payload `Value` is moved). The table is read on
//! every send and written only while registering: readers load it from an
//! `ArcSwap` (no shared counter written per send, so senders on several
//! threads do not contend), and registering replaces it with a copy.

use std::collections::HashMap as StdHashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use otools_abi::{MessageError, Value};
use parking_lot::Mutex;

use super::mailbox::{Envelope, Mailbox, Wait, reply_pair};
use super::{CorrelationId, EndpointSpec, Failure, Outgoing, Router, ShortStr};
use crate::event::{self, Event, Events};

/// Keyed by manifest names, looked up on every send: a fast hash.
type HashMap<K, V> = StdHashMap<K, V, rustc_hash::FxBuildHasher>;

#[derive(Default, Clone)]
struct Table {
    mailboxes: Vec<Arc<Mailbox>>,
    /// `Context/service` and bare service names, to mailbox indexes.
    by_name: HashMap<String, Vec<usize>>,
    /// Topic to subscribers' mailbox indexes, in manifest order.
    topics: HashMap<String, Vec<usize>>,
}

/// The in-process backend; see the module docs.
pub struct InProcess {
    table: ArcSwap<Table>,
    /// Held while registering: one copy of the table at a time.
    registering: Mutex<()>,
    next_root: AtomicU64,
    events: Arc<Events>,
}

impl InProcess {
    /// An empty router whose unknown-message events go to `events`.
    pub fn new(events: Arc<Events>) -> InProcess {
        InProcess {
            table: ArcSwap::default(),
            registering: Mutex::new(()),
            next_root: AtomicU64::new(1),
            events,
        }
    }

    /// Registers a service's mailbox and its subscriptions; returns the mailbox.
    pub fn register(&self, spec: &EndpointSpec) -> Arc<Mailbox> {
        let mailbox = Arc::new(Mailbox::new(spec));
        let _one_at_a_time = self.registering.lock();
        let mut t = Table::clone(&self.table.load());
        let i = t.mailboxes.len();
        t.mailboxes.push(Arc::clone(&mailbox));
        t.by_name
            .entry(mailbox.address.clone())
            .or_default()
            .push(i);
        t.by_name.entry(spec.service.clone()).or_default().push(i);
        for topic in &spec.subscribe {
            t.topics.entry(topic.clone()).or_default().push(i);
        }
        self.table.store(Arc::new(t));
        mailbox
    }

    /// Every registered mailbox, in registration (manifest) order.
    pub fn mailboxes(&self) -> Vec<Arc<Mailbox>> {
        self.table.load().mailboxes.clone()
    }

    /// Runs `f` with the mailbox of `target` (borrowed from the table:
    /// no reference count is touched).
    fn with_mailbox<R>(
        &self,
        target: &str,
        f: impl FnOnce(&Arc<Mailbox>) -> Result<R, Failure>,
    ) -> Result<R, Failure> {
        let t = self.table.load();
        match t.by_name.get(target).map(Vec::as_slice) {
            Some([i]) => f(&t.mailboxes[*i]),
            Some(many) if !many.is_empty() => Err(Failure::new(
                MessageError::UnknownTarget,
                format!(
                    "`{target}` is ambiguous ({}): name it `Context/service`",
                    many.iter()
                        .map(|i| t.mailboxes[*i].address.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
            _ => Err(Failure::new(
                MessageError::UnknownTarget,
                format!("no service `{target}` accepts messages"),
            )),
        }
    }

    /// Checks `msg` for `mb`, and returns the name to queue it under; an
    /// unknown name is also a WARN line and a `message_unknown` event about
    /// the target, which goes on.
    fn check(&self, mb: &Mailbox, msg: &Outgoing<'_>) -> Result<ShortStr, Failure> {
        let r = mb.check(msg.name, &msg.payload);
        if let Err(f) = &r
            && f.kind == MessageError::UnknownMessage
        {
            report_unknown(&self.events, mb, msg.name, &msg.from, &msg.correlation);
        }
        r
    }
}

/// Logs and journals a message of a name `mb` does not accept.
pub fn report_unknown(
    events: &Events,
    mb: &Mailbox,
    name: &str,
    from: &str,
    correlation: &CorrelationId,
) {
    tracing::warn!(
        context = %mb.context,
        service = %mb.service,
        correlation = %correlation,
        "unknown message `{name}` from {from}: refused (accepts: {})",
        mb.accepted().join(", ")
    );
    events.emit(&Event::MessageUnknown {
        unit: event::Unit::new(&mb.context, &mb.service, mb.generation()),
        name: name.to_owned(),
        from: from.to_owned(),
        correlation: correlation.to_string(),
    });
}

fn envelope(msg: Outgoing<'_>, name: ShortStr) -> Envelope {
    Envelope {
        from: msg.from,
        name,
        payload: msg.payload,
        correlation: msg.correlation,
        reply: None,
    }
}

impl Router for InProcess {
    fn resolve(&self, target: &str) -> Result<String, Failure> {
        self.with_mailbox(target, |m| Ok(m.address.clone()))
    }

    fn send(&self, to: &str, msg: Outgoing<'_>, wait: Duration) -> Result<(), Failure> {
        self.with_mailbox(to, |mb| {
            let name = self.check(mb, &msg)?;
            mb.push(envelope(msg, name), Wait::For(wait))
                .map_err(|refused| {
                    let (f, env) = *refused;
                    drop(env);
                    f
                })
        })
    }

    fn request(&self, to: &str, msg: Outgoing<'_>, deadline: Instant) -> Result<Value, Failure> {
        let mb = self.with_mailbox(to, |mb| Ok(Arc::clone(mb)))?;
        let name = self.check(&mb, &msg)?;
        let (reply, pending) = reply_pair();
        if let Some(cancel) = &msg.cancel {
            cancel.watch(&pending);
        }
        let mut env = envelope(msg, name);
        env.reply = Some(reply);
        if let Err(refused) = mb.push(env, Wait::Until(deadline)) {
            let (f, mut env) = *refused;
            // Not queued: nobody will answer, and the refusal is the answer.
            if let Some(r) = env.reply.take() {
                r.answer(Err(f.clone()));
            }
            return Err(f);
        }
        pending.wait(deadline, &mb.address)
    }

    fn publish(&self, topic: &str, msg: Outgoing<'_>, deadline: Instant) -> Result<usize, Failure> {
        let subscribers: Vec<Arc<Mailbox>> = {
            let t = self.table.load();
            t.topics
                .get(topic)
                .map(|v| v.iter().map(|i| Arc::clone(&t.mailboxes[*i])).collect())
                .unwrap_or_default()
        };
        // Every live subscriber must take it before anyone gets it.
        let live: Vec<Arc<Mailbox>> = subscribers.into_iter().filter(|m| m.is_alive()).collect();
        let names = live
            .iter()
            .map(|mb| self.check(mb, &msg))
            .collect::<Result<Vec<_>, _>>()?;
        let mut delivered = 0;
        let mut full = None;
        for (mb, name) in live.iter().zip(names) {
            let env = Envelope {
                from: msg.from.clone(),
                name,
                payload: msg.payload.clone(),
                correlation: msg.correlation.clone(),
                reply: None,
            };
            match mb.push(env, Wait::Until(deadline)) {
                Ok(()) => delivered += 1,
                Err(refused) => {
                    let (f, env) = *refused;
                    drop(env);
                    full.get_or_insert(f);
                }
            }
        }
        match full {
            Some(f) => Err(f),
            None => Ok(delivered),
        }
    }

    fn new_correlation(&self) -> CorrelationId {
        CorrelationId::Root(self.next_root.fetch_add(1, Ordering::Relaxed))
    }
}
