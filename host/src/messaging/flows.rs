//! Flow events raised from outside a flow: by a plugin (`ctx.raise_event`,
//! a step's `ctx.raise`) or through the control socket (`otools raise`).
//!
//! Like a message, such an event is something a service (or `control`)
//! hands the host for someone else to take: a running flow. The flows
//! register here once their run is set up ([`FlowDirectory::register`]),
//! behind the [`FlowInbox`] trait (the flow engine is in a higher layer);
//! [`FlowDirectory::raise`] finds the flow, checks the event, and hands it
//! over. Failures reuse the messaging kinds: `UnknownTarget` for a flow
//! that does not exist (or an event no flow, or several, declare, when no
//! flow is named), `UnknownMessage` for an event the flow does not declare
//! as a plain event, `PeerGone` for a flow whose run has finished.

use std::sync::Arc;

use parking_lot::RwLock;

use super::{Failure, MessageError};

/// A running flow, as those who raise its events see it.
pub trait FlowInbox: Send + Sync {
    /// The flow's name.
    fn name(&self) -> &str;
    /// The events that may be raised from outside: its plain events (an
    /// expression event is raised by its expression only).
    fn events(&self) -> &[String];
    /// Raises `event` (one of [`FlowInbox::events`]) for `sequence` on
    /// behalf of `from`; returns once the flow's store has committed it
    /// (or journaled it as a duplicate).
    fn raise(&self, event: &str, sequence: &str, from: &str) -> Result<(), Failure>;
}

/// The host's running flows, by name (empty in a host without flows).
#[derive(Default)]
pub struct FlowDirectory {
    flows: RwLock<Vec<Arc<dyn FlowInbox>>>,
}

impl FlowDirectory {
    /// Adds a flow (before the contexts start, so a plugin finds it at once).
    pub fn register(&self, flow: Arc<dyn FlowInbox>) {
        self.flows.write().push(flow);
    }

    /// Raises `event` for `sequence` in `flow` (`None`: the only flow that
    /// declares `event`) on behalf of `from`; returns the flow's name.
    pub fn raise(
        &self,
        flow: Option<&str>,
        event: &str,
        sequence: &str,
        from: &str,
    ) -> Result<String, Failure> {
        let target = self.find(flow, event)?;
        if !target.events().iter().any(|e| e == event) {
            return Err(Failure::new(
                MessageError::UnknownMessage,
                format!(
                    "flow `{}` has no event `{event}` that can be raised; its events: {}",
                    target.name(),
                    listed(target.events())
                ),
            ));
        }
        target.raise(event, sequence, from)?;
        Ok(target.name().to_owned())
    }

    fn find(&self, flow: Option<&str>, event: &str) -> Result<Arc<dyn FlowInbox>, Failure> {
        let flows = self.flows.read();
        let names: Vec<String> = flows.iter().map(|f| f.name().to_owned()).collect();
        if flows.is_empty() {
            return Err(Failure::new(
                MessageError::UnknownTarget,
                "this host runs no flow",
            ));
        }
        if let Some(name) = flow {
            return flows
                .iter()
                .find(|f| f.name() == name)
                .cloned()
                .ok_or_else(|| {
                    Failure::new(
                        MessageError::UnknownTarget,
                        format!("no flow `{name}`; this host's flows: {}", listed(&names)),
                    )
                });
        }
        let mut declaring = flows
            .iter()
            .filter(|f| f.events().iter().any(|e| e == event));
        match (declaring.next(), declaring.next()) {
            (Some(f), None) => Ok(Arc::clone(f)),
            (None, _) => Err(Failure::new(
                MessageError::UnknownTarget,
                format!(
                    "no flow declares an event `{event}` that can be raised; this host's flows: {}",
                    listed(&names)
                ),
            )),
            (Some(_), Some(_)) => Err(Failure::new(
                MessageError::UnknownTarget,
                format!("several flows declare `{event}`: name the flow"),
            )),
        }
    }
}

fn listed(names: &[String]) -> String {
    if names.is_empty() {
        return String::from("none");
    }
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    struct Fake {
        name: String,
        events: Vec<String>,
        got: Mutex<Vec<(String, String, String)>>,
    }

    impl FlowInbox for Fake {
        fn name(&self) -> &str {
            &self.name
        }
        fn events(&self) -> &[String] {
            &self.events
        }
        fn raise(&self, event: &str, sequence: &str, from: &str) -> Result<(), Failure> {
            self.got
                .lock()
                .push((event.into(), sequence.into(), from.into()));
            Ok(())
        }
    }

    fn fake(name: &str, events: &[&str]) -> Arc<Fake> {
        Arc::new(Fake {
            name: name.into(),
            events: events.iter().map(|e| (*e).to_owned()).collect(),
            got: Mutex::default(),
        })
    }

    #[test]
    fn an_event_goes_to_the_named_flow_or_the_only_one_declaring_it() {
        let d = FlowDirectory::default();
        let (a, b) = (fake("a", &["go", "x"]), fake("b", &["go", "y"]));
        d.register(Arc::clone(&a) as Arc<dyn FlowInbox>);
        d.register(Arc::clone(&b) as Arc<dyn FlowInbox>);
        assert_eq!(d.raise(Some("b"), "go", "1", "t").unwrap(), "b");
        assert_eq!(d.raise(None, "x", "2", "t").unwrap(), "a");
        assert_eq!(
            b.got.lock().as_slice(),
            [("go".into(), "1".into(), "t".into())]
        );
        assert_eq!(
            a.got.lock().as_slice(),
            [("x".into(), "2".into(), "t".into())]
        );
    }

    #[test]
    fn unknown_flows_and_events_and_ambiguous_events_are_refused_with_their_kind() {
        let d = FlowDirectory::default();
        let e = d.raise(None, "go", "1", "t").unwrap_err();
        assert_eq!(
            (e.kind, e.message.as_str()),
            (MessageError::UnknownTarget, "this host runs no flow")
        );
        d.register(fake("a", &["go"]));
        d.register(fake("b", &["go"]));
        for (flow, event, kind, text) in [
            (
                Some("c"),
                "go",
                MessageError::UnknownTarget,
                "no flow `c`; this host's flows: `a`, `b`",
            ),
            (
                Some("a"),
                "nope",
                MessageError::UnknownMessage,
                "flow `a` has no event `nope`",
            ),
            (
                None,
                "nope",
                MessageError::UnknownTarget,
                "no flow declares an event `nope`",
            ),
            (
                None,
                "go",
                MessageError::UnknownTarget,
                "several flows declare `go`",
            ),
        ] {
            let e = d.raise(flow, event, "1", "t").unwrap_err();
            assert_eq!(e.kind, kind, "{}", e.message);
            assert!(e.message.starts_with(text), "{}", e.message);
        }
    }
}
