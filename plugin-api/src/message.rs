//! Messages between services: what a service declares it accepts
//! ([`Accept`], [`Payload`]), the reserved [`SHUTDOWN`] message, and the
//! default timeouts of [`Context::send`](crate::Context::send) and
//! [`Context::request`](crate::Context::request).
//!
//! A service that lists messages in [`Service::MESSAGES`](crate::Service::MESSAGES)
//! gets a mailbox: every message sent to it (a name and a [`Value`](crate::Value)
//! payload) is queued there and handed to
//! [`Service::handle_message`](crate::Service::handle_message), one at a
//! time and in order, on the service's own mailbox thread.

use std::time::Duration;

/// The reserved message that stops a service as a normal exit: it is
/// finalized and not restarted, whatever its `restart` policy. A service
/// receives it in `handle_message` only if it lists it in `MESSAGES` (to
/// clean up before `finalize`, like pyros' `shutdown()`); either way it stops.
pub const SHUTDOWN: &str = "SHUTDOWN";

/// How long [`Context::send`](crate::Context::send) and
/// [`Context::publish`](crate::Context::publish) wait for room in a full
/// mailbox before they fail with `MailboxFull`.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// The timeout of [`Context::request`](crate::Context::request) when none is given.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The payload type a message accepts; anything else is refused at the
/// sender with `InvalidPayload`, before it is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// Any value.
    Any,
    /// `Value::Null` only.
    Null,
    /// A boolean.
    Bool,
    /// An integer.
    Int,
    /// A float.
    Float,
    /// A string.
    Str,
    /// Bytes.
    Bytes,
    /// A list.
    List,
    /// A map.
    Map,
}

impl Payload {
    /// The name the host compares with [`Value::type_name`](crate::Value::type_name)
    /// (`any` accepts every value).
    pub fn type_name(self) -> &'static str {
        match self {
            Payload::Any => "any",
            Payload::Null => "null",
            Payload::Bool => "bool",
            Payload::Int => "integer",
            Payload::Float => "float",
            Payload::Str => "string",
            Payload::Bytes => "bytes",
            Payload::List => "list",
            Payload::Map => "map",
        }
    }
}

/// One message a service accepts: its name and its payload type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accept {
    /// The message name, as senders spell it (`"PING"`).
    pub name: &'static str,
    /// The payload type it takes.
    pub payload: Payload,
}

impl Accept {
    /// A message `name` whose payload must be of type `payload`.
    pub const fn new(name: &'static str, payload: Payload) -> Accept {
        Accept { name, payload }
    }

    /// A message `name` with any payload.
    pub const fn any(name: &'static str) -> Accept {
        Accept::new(name, Payload::Any)
    }
}
