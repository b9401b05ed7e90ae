//! Messages between services: the routing layer.
//!
//! A service that declares messages (`Service::MESSAGES` in `otools-api`)
//! has a [`Mailbox`], which belongs to its unit, not to one instance: it
//! outlives restarts and hot reloads, so what is queued while a generation
//! is replaced reaches the next one, in order. The runtime's mailbox thread
//! (`runtime/mailbox.rs`) takes messages out of it and calls the handler.
//!
//! Everything that moves a message from a sender to a mailbox is behind the
//! [`Router`] trait, so that a network backend can take the place of the
//! in-process one ([`InProcess`], the only backend today) without touching
//! the runtime or the plugins. Its contract is written down once, as the
//! conformance suite in `conformance.rs`, which every backend must pass:
//! - targets are `Context/service`, or a service name that only one
//!   context uses; anything else is [`MessageError::UnknownTarget`];
//! - a message is checked before it is queued: an unknown name, a payload
//!   of the wrong type, or a target that is gone is refused at the sender,
//!   and a bad message never reaches the handler;
//! - a full mailbox makes the sender wait until its deadline, then
//!   [`MessageError::MailboxFull`];
//! - a request ends by its deadline, always: with the reply, the handler's
//!   failure ([`MessageError::PeerFailed`]), [`MessageError::PeerGone`], or
//!   [`MessageError::Timeout`]; a request that is dropped unanswered is
//!   answered [`MessageError::PeerGone`], never left waiting, and so is one
//!   queued for a mailbox that is drained (its unit stopped for good) or
//!   one whose [`Cancel`] fires (its sender's context stops);
//! - a publication reaches every live subscriber of its topic, in
//!   publication order per subscriber, and nobody else.
//!
//! [`FlowDirectory`] (`flows.rs`) carries flow events raised from outside a
//! flow (by a plugin or `otools raise`) to the running flow, the way the
//! router carries messages to a mailbox.
//!
//! [`correlation`] holds the correlation id of the message being handled
//! on the current thread, from which a handler's own sends get child ids.

pub mod correlation;
mod flows;
mod in_process;
mod mailbox;
mod short_str;

#[cfg(test)]
mod conformance;

use std::time::{Duration, Instant};

pub use correlation::CorrelationId;
pub use flows::{FlowDirectory, FlowInbox};
pub use in_process::{InProcess, report_unknown};
pub use mailbox::{Cancel, Envelope, Mailbox, Next, Pending, ReplyTo, Wait, reply_pair};
pub use otools_abi::MessageError;
use otools_abi::Value;
pub use short_str::ShortStr;

/// The reserved message that stops a service as a normal exit (finalized,
/// never restarted).
pub const SHUTDOWN: &str = "SHUTDOWN";

/// The mailbox size of a service without `mailbox_size` in the manifest.
pub const DEFAULT_MAILBOX_SIZE: usize = 1000;

/// A failed send, request or publication: a kind the caller can match on,
/// and a message that names the target and says why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    /// What kind of failure.
    pub kind: MessageError,
    /// Details, for logs.
    pub message: String,
}

impl Failure {
    /// A failure of `kind` with `message`.
    pub fn new(kind: MessageError, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
        }
    }
}

/// A message on its way: who sends it, its name, payload and correlation
/// id. The name is borrowed from the sender: a backend that queues the
/// message keeps its own copy (the in-process one shares the target's).
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    /// The sender (`Context/service`, or `control` from outside).
    pub from: ShortStr,
    /// The message name.
    pub name: &'a str,
    /// The payload.
    pub payload: Value,
    /// The correlation id it carries.
    pub correlation: CorrelationId,
    /// For a request: what releases it early (the sender's context stops).
    pub cancel: Option<Cancel>,
}

/// One endpoint to register with a backend: a service's mailbox and the
/// topics it subscribes to.
#[derive(Debug, Clone)]
pub struct EndpointSpec {
    /// Its context.
    pub context: String,
    /// Its service name.
    pub service: String,
    /// The messages it accepts: (name, payload type name or `any`).
    pub accepts: Vec<(String, String)>,
    /// How many messages its mailbox holds.
    pub capacity: usize,
    /// The topics it subscribes to.
    pub subscribe: Vec<String>,
}

/// The routing layer: how a message gets from a sender to a mailbox. One
/// implementation per backend; see the module docs for the contract.
pub trait Router: Send + Sync {
    /// The canonical address (`Context/service`) of `target`.
    fn resolve(&self, target: &str) -> Result<String, Failure>;

    /// Queues a one-way message for `to`, waiting up to `wait` for room.
    fn send(&self, to: &str, msg: Outgoing<'_>, wait: Duration) -> Result<(), Failure>;

    /// Queues a request for `to` and waits until `deadline` for its reply.
    fn request(&self, to: &str, msg: Outgoing<'_>, deadline: Instant) -> Result<Value, Failure>;

    /// Queues `msg` (named after `topic`) for every live subscriber of
    /// `topic`; returns how many got it.
    fn publish(&self, topic: &str, msg: Outgoing<'_>, deadline: Instant) -> Result<usize, Failure>;

    /// A new root correlation id, unique in this router.
    fn new_correlation(&self) -> CorrelationId;
}

/// `now + d`, or a far future when that does not fit in an `Instant`.
pub fn deadline_after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}
