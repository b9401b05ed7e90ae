//! `send`: a message from outside (`otools send`) into a service's mailbox,
//! through the deployment's router with `from = "control"`, one way or as a
//! request whose reply comes back as JSON.
//!
//! The payload crosses the socket as JSON and becomes a [`Value`] here
//! (integers that fit stay integers, objects become maps); the router then
//! checks it against the type the target declared, exactly as for a
//! service's own sends, so a bad message never reaches the handler.

use std::sync::Arc;
use std::time::Duration;

use otools_abi::Value;
use serde_json::Value as Json;

use crate::messaging::{Failure, Outgoing, Router, ShortStr, deadline_after};

/// How long a one-way send waits for room in a full mailbox, by default
/// (as a service's `ctx.send`).
pub const DEFAULT_SEND_WAIT: Duration = Duration::from_secs(1);

/// How long a request waits for its reply, by default (as a service's
/// `ctx.request`).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest timeout a request through the socket may ask for.
pub const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// What a `send` command asks for.
pub(super) struct SendArgs<'a> {
    /// The target (`Context/service` or a unique service name).
    pub(super) to: &'a str,
    /// The message name.
    pub(super) name: &'a str,
    /// The payload.
    pub(super) payload: &'a Json,
    /// Wait for the reply.
    pub(super) request: bool,
    /// The wait for room (one way) or for the reply (request).
    pub(super) timeout: Duration,
}

/// Sends as `args` says; the reply as JSON (`null` for a one-way send that
/// was queued), or why not (`<kind>: <message>`).
pub(super) fn send(router: &Arc<dyn Router>, args: &SendArgs<'_>) -> Result<Json, String> {
    let timeout = args.timeout.min(MAX_REQUEST_TIMEOUT);
    let msg = Outgoing {
        from: ShortStr::new("control"),
        name: args.name,
        payload: to_value(args.payload),
        correlation: router.new_correlation(),
        cancel: None,
    };
    let shown = |f: Failure| format!("{}: {}", f.kind.describe(), f.message);
    if args.request {
        router
            .request(args.to, msg, deadline_after(timeout))
            .map(|v| to_json(&v))
            .map_err(shown)
    } else {
        router
            .send(args.to, msg, timeout)
            .map(|()| Json::Null)
            .map_err(shown)
    }
}

/// A JSON payload as a `Value`.
pub(super) fn to_value(j: &Json) -> Value {
    match j {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::from(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::from(i),
            None => Value::from(n.as_f64().unwrap_or(0.0)),
        },
        Json::String(s) => Value::from(s.as_str()),
        Json::Array(a) => Value::List(a.iter().map(to_value).collect()),
        Json::Object(o) => Value::map(o.iter().map(|(k, v)| (k.clone(), to_value(v)))),
    }
}

/// A reply `Value` as JSON: bytes become a list of numbers, and a float
/// that JSON cannot hold (NaN, infinite) becomes `null`.
pub(super) fn to_json(v: &Value) -> Json {
    match v {
        Value::Bool(b) => Json::from(*b),
        Value::Int(i) => Json::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::Str(s) => Json::from(s.as_str()),
        Value::Bytes(b) => Json::from(b.to_vec()),
        Value::List(l) => Json::Array(l.iter().map(to_json).collect()),
        Value::Map(m) => Json::Object(m.iter().map(|t| (t.0.to_string(), to_json(&t.1))).collect()),
        _ => Json::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_payloads_become_values_and_replies_come_back_as_json() {
        let j: Json = serde_json::from_str(r#"{"a":[1,2.5,"x",true,null],"b":{}}"#).unwrap();
        let v = to_value(&j);
        assert_eq!(v.type_name(), "map");
        assert_eq!(to_json(&v), j);
        assert_eq!(to_json(&Value::from(f64::NAN)), Json::Null);
    }
}
