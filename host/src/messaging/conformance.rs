//! The conformance suite of [`Router`]: the contract in the module docs,
//! written against the trait only. Every backend runs it through a
//! factory that registers the endpoints it is given; the in-process
//! backend's run is at the bottom.

use std::sync::Arc;
use std::time::{Duration, Instant};

use otools_abi::{MessageError, Value};

use super::{EndpointSpec, Failure, InProcess, Mailbox, Next, Outgoing, Router, deadline_after};
use crate::event::Events;

/// Builds a backend with these endpoints; returns it and their mailboxes, in order.
type Factory = dyn Fn(&[EndpointSpec]) -> (Arc<dyn Router>, Vec<Arc<Mailbox>>);

fn spec(context: &str, service: &str, capacity: usize, subscribe: &[&str]) -> EndpointSpec {
    let mut accepts = vec![
        (String::from("PING"), String::from("any")),
        (String::from("ADD"), String::from("integer")),
    ];
    accepts.extend(
        subscribe
            .iter()
            .map(|t| ((*t).to_owned(), String::from("any"))),
    );
    EndpointSpec {
        context: context.into(),
        service: service.into(),
        accepts,
        capacity,
        subscribe: subscribe.iter().map(|t| (*t).to_owned()).collect(),
    }
}

fn msg(name: &str, payload: impl Into<Value>) -> Outgoing<'_> {
    Outgoing {
        from: "test".into(),
        name,
        payload: payload.into(),
        correlation: super::CorrelationId::Root(1),
        cancel: None,
    }
}

/// How long a send waits for room in these tests.
const SOON: Duration = Duration::from_secs(5);

fn soon() -> Instant {
    deadline_after(Duration::from_secs(5))
}

/// Takes what is queued for a freshly attached thread, without blocking.
fn drain(mb: &Mailbox) -> Vec<(String, Value)> {
    let token = mb.attach(1);
    let mut out = Vec::new();
    while mb.depth() > 0 {
        match mb.next(token, &|| false) {
            Next::Message(e) => out.push((e.name.to_string(), e.payload)),
            Next::Leave => break,
        }
    }
    out
}

/// A thread that answers every request on `mb` with `answer(payload)`.
fn replier(
    mb: Arc<Mailbox>,
    answer: impl Fn(Value) -> Result<Value, Failure> + Send + 'static,
) -> std::thread::JoinHandle<()> {
    let token = mb.attach(1);
    std::thread::spawn(move || {
        while let Next::Message(e) = mb.next(token, &|| false) {
            if let Some(r) = e.reply {
                r.answer(answer(e.payload));
            }
        }
    })
}

fn kind<T: std::fmt::Debug>(r: Result<T, Failure>) -> MessageError {
    r.expect_err("a failure").kind
}

pub(super) fn suite(make: &Factory) {
    targets_resolve_by_address_or_unique_name(make);
    bad_messages_are_refused_at_the_sender_and_never_queued(make);
    messages_are_delivered_in_order_even_before_a_handler_attaches(make);
    a_full_mailbox_refuses_after_the_deadline(make);
    requests_get_the_reply_or_the_handlers_failure(make);
    a_request_always_ends_by_its_deadline(make);
    publications_reach_every_subscriber_in_order_and_nobody_else(make);
    a_gone_peer_is_reported_and_its_queued_requests_answered(make);
    a_new_generation_takes_over_the_mailbox(make);
    a_cancelled_request_and_one_queued_for_a_drained_mailbox_end_at_once(make);
}

fn targets_resolve_by_address_or_unique_name(make: &Factory) {
    let (r, _) = make(&[
        spec("A", "x", 10, &[]),
        spec("B", "x", 10, &[]),
        spec("B", "y", 10, &[]),
    ]);
    assert_eq!(r.resolve("A/x").unwrap(), "A/x");
    assert_eq!(r.resolve("y").unwrap(), "B/y");
    assert_eq!(
        kind(r.resolve("x")),
        MessageError::UnknownTarget,
        "ambiguous"
    );
    assert_eq!(kind(r.resolve("C/z")), MessageError::UnknownTarget);
    assert_eq!(
        kind(r.send("nobody", msg("PING", ()), SOON)),
        MessageError::UnknownTarget
    );
}

fn bad_messages_are_refused_at_the_sender_and_never_queued(make: &Factory) {
    let (r, m) = make(&[spec("A", "x", 10, &[])]);
    assert_eq!(
        kind(r.send("x", msg("BOGUS", ()), SOON)),
        MessageError::UnknownMessage
    );
    assert_eq!(
        kind(r.send("x", msg("ADD", "two"), SOON)),
        MessageError::InvalidPayload
    );
    assert_eq!(
        kind(r.request("x", msg("ADD", ()), soon())),
        MessageError::InvalidPayload
    );
    assert_eq!(m[0].depth(), 0);
    r.send("x", msg("ADD", 2), SOON).unwrap();
    assert_eq!(m[0].depth(), 1);
}

fn messages_are_delivered_in_order_even_before_a_handler_attaches(make: &Factory) {
    let (r, m) = make(&[spec("A", "x", 100, &[])]);
    for i in 0..20 {
        r.send("A/x", msg("ADD", i), SOON).unwrap();
    }
    let got: Vec<Value> = drain(&m[0]).into_iter().map(|(_, v)| v).collect();
    assert_eq!(got, (0..20).map(Value::Int).collect::<Vec<_>>());
}

fn a_full_mailbox_refuses_after_the_deadline(make: &Factory) {
    let (r, m) = make(&[spec("A", "x", 2, &[])]);
    r.send("x", msg("PING", 1), SOON).unwrap();
    r.send("x", msg("PING", 2), SOON).unwrap();
    assert_eq!(
        kind(r.send("x", msg("PING", 3), Duration::from_millis(20))),
        MessageError::MailboxFull
    );
    let short = deadline_after(Duration::from_millis(20));
    assert_eq!(
        kind(r.request("x", msg("PING", 3), short)),
        MessageError::MailboxFull
    );
    assert_eq!(m[0].depth(), 2);
    assert_eq!(m[0].high_water(), 2);
}

fn requests_get_the_reply_or_the_handlers_failure(make: &Factory) {
    let (r, m) = make(&[spec("A", "x", 10, &[])]);
    let t = replier(Arc::clone(&m[0]), |v| match v.as_i64() {
        Some(n) if n >= 0 => Ok(Value::Int(n * 2)),
        _ => Err(Failure::new(MessageError::PeerFailed, "negative")),
    });
    assert_eq!(
        r.request("x", msg("ADD", 21), soon()).unwrap(),
        Value::Int(42)
    );
    assert_eq!(
        kind(r.request("x", msg("ADD", -1), soon())),
        MessageError::PeerFailed
    );
    m[0].close();
    t.join().unwrap();
}

fn a_request_always_ends_by_its_deadline(make: &Factory) {
    let (r, _m) = make(&[spec("A", "x", 10, &[])]);
    // Nobody handles the mailbox: the request times out, by its deadline.
    let deadline = deadline_after(Duration::from_millis(30));
    assert_eq!(
        kind(r.request("x", msg("PING", ()), deadline)),
        MessageError::Timeout
    );
    assert!(Instant::now() >= deadline);
}

fn publications_reach_every_subscriber_in_order_and_nobody_else(make: &Factory) {
    let (r, m) = make(&[
        spec("A", "s1", 10, &["px"]),
        spec("B", "s2", 10, &["px", "other"]),
        spec("B", "quiet", 10, &["other"]),
    ]);
    for i in 100..105 {
        assert_eq!(r.publish("px", msg("px", i), soon()).unwrap(), 2);
    }
    assert_eq!(
        r.publish("nobody-listens", msg("nobody-listens", 1), soon())
            .unwrap(),
        0
    );
    let expected: Vec<(String, Value)> = (100..105)
        .map(|i| (String::from("px"), Value::Int(i)))
        .collect();
    assert_eq!(drain(&m[0]), expected);
    assert_eq!(drain(&m[1]), expected);
    assert!(drain(&m[2]).is_empty());
}

fn a_gone_peer_is_reported_and_its_queued_requests_answered(make: &Factory) {
    let (r, m) = make(&[spec("A", "x", 10, &["px"]), spec("A", "y", 10, &[])]);
    m[1].set_liveness(|| false);
    assert_eq!(
        kind(r.send("y", msg("PING", ()), SOON)),
        MessageError::PeerGone
    );
    let r2 = Arc::clone(&r);
    let asker = std::thread::spawn(move || r2.request("x", msg("PING", ()), soon()));
    while m[0].depth() == 0 {
        std::thread::yield_now();
    }
    m[0].close();
    assert_eq!(kind(asker.join().unwrap()), MessageError::PeerGone);
    assert_eq!(
        kind(r.send("x", msg("PING", ()), SOON)),
        MessageError::PeerGone
    );
    // A gone subscriber is skipped, not an error.
    assert_eq!(r.publish("px", msg("px", 1), soon()).unwrap(), 0);
}

fn a_new_generation_takes_over_the_mailbox(make: &Factory) {
    let (r, m) = make(&[spec("A", "x", 10, &[])]);
    let mb = Arc::clone(&m[0]);
    let old = mb.attach(1);
    let mb2 = Arc::clone(&mb);
    let waiting = std::thread::spawn(move || matches!(mb2.next(old, &|| false), Next::Leave));
    let new = mb.attach(2);
    assert!(waiting.join().unwrap(), "the old thread leaves");
    r.send("x", msg("PING", 7), SOON).unwrap();
    match mb.next(new, &|| false) {
        Next::Message(e) => assert_eq!(e.payload, Value::Int(7)),
        Next::Leave => panic!("the new generation gets the message"),
    }
    // A dropped, unanswered request answers PeerGone.
    let r2 = Arc::clone(&r);
    let asker = std::thread::spawn(move || r2.request("x", msg("PING", ()), soon()));
    match mb.next(new, &|| false) {
        Next::Message(e) => drop(e),
        Next::Leave => panic!("a request was queued"),
    }
    assert_eq!(kind(asker.join().unwrap()), MessageError::PeerGone);
}

fn a_cancelled_request_and_one_queued_for_a_drained_mailbox_end_at_once(make: &Factory) {
    let (r, m) = make(&[spec("A", "x", 10, &[])]);
    let far = deadline_after(Duration::from_secs(600));
    let ask = |cancel: Option<super::Cancel>| {
        let r2 = Arc::clone(&r);
        std::thread::spawn(move || {
            let mut q = msg("PING", ());
            q.cancel = cancel;
            r2.request("x", q, far)
        })
    };
    let wait_depth = |n: usize| {
        while m[0].depth() != n {
            std::thread::yield_now();
        }
    };
    // The sender's context stops: its request in flight is released.
    let cancel = super::Cancel::default();
    let asker = ask(Some(cancel.clone()));
    wait_depth(1);
    cancel.fire("stopping");
    assert_eq!(kind(asker.join().unwrap()), MessageError::PeerGone);
    // The target stops for good: what is queued is answered, the mailbox
    // stays open (a reload may revive the unit).
    let asker = ask(None);
    wait_depth(2);
    m[0].drain("gave up");
    assert_eq!(kind(asker.join().unwrap()), MessageError::PeerGone);
    assert_eq!(m[0].depth(), 0);
    r.send("x", msg("PING", ()), SOON).unwrap();
}

fn in_process(specs: &[EndpointSpec]) -> (Arc<dyn Router>, Vec<Arc<Mailbox>>) {
    let router = Arc::new(InProcess::new(Arc::new(Events::default())));
    let mailboxes = specs.iter().map(|s| router.register(s)).collect();
    (router, mailboxes)
}

#[test]
fn the_in_process_backend_passes_the_conformance_suite() {
    suite(&in_process);
}
