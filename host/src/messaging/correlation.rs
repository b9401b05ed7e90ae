//! Correlation ids ([`CorrelationId`]), and the one of the message being
//! handled on this thread.
//!
//! The mailbox thread enters a [`Scope`] around each handler call. While
//! it lasts, the handler's log lines carry the id, and each message the
//! handler sends gets a child id: `X.1`, then `X.2`, and so on (a child's
//! handler sends `X.1.1`). Outside a scope, a send starts a new root id.
//! The id is per call, so it lives with the call's thread, not with the
//! instance (a service's `main`, loop and handler share one host handle).
//!
//! A root id is a number and is carried as one: a message sent outside a
//! handler (the common case of a burst of one-way sends) allocates nothing
//! for its id; the text is written on a small stack buffer when a log line
//! or the plugin asks for it. A child id is a [`ShortStr`].

use std::cell::RefCell;
use std::fmt;

use super::ShortStr;

/// A message's correlation id: a root number (`7`), or a child's dotted
/// path (`7.1.2`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorrelationId {
    /// A root id, created by a router at the first send.
    Root(u64),
    /// A child id, `<parent>.<n>`.
    Child(ShortStr),
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorrelationId::Root(n) => write!(f, "{n}"),
            CorrelationId::Child(path) => f.write_str(path),
        }
    }
}

impl CorrelationId {
    /// Runs `f` with the id as text, without allocating.
    pub fn with_str<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        match self {
            CorrelationId::Root(n) => {
                // u64::MAX has 20 digits.
                let mut buf = [0u8; 20];
                let mut at = buf.len();
                let mut n = *n;
                loop {
                    at -= 1;
                    buf[at] = b'0' + (n % 10) as u8;
                    n /= 10;
                    if n == 0 {
                        break;
                    }
                }
                f(std::str::from_utf8(&buf[at..]).unwrap_or_default())
            }
            CorrelationId::Child(path) => f(path),
        }
    }
}

impl From<&str> for CorrelationId {
    /// A number is a root id; anything else a child's path.
    fn from(s: &str) -> CorrelationId {
        match s.parse() {
            Ok(n) => CorrelationId::Root(n),
            Err(_) => CorrelationId::Child(ShortStr::new(s)),
        }
    }
}

thread_local! {
    /// The id being handled, and how many children it has had.
    static CURRENT: RefCell<Option<(CorrelationId, u64)>> = const { RefCell::new(None) };
}

/// While it lives, the current thread handles the message with this id.
pub struct Scope {
    previous: Option<(CorrelationId, u64)>,
}

/// Makes `id` the current correlation id until the scope is dropped.
pub fn enter(id: CorrelationId) -> Scope {
    let previous = CURRENT.with(|c| c.borrow_mut().replace((id, 0)));
    Scope { previous }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

/// Runs `f` with the current id as text (none outside a handler).
pub fn with_current<R>(f: impl FnOnce(Option<&str>) -> R) -> R {
    CURRENT.with(|c| match c.borrow().as_ref() {
        Some((id, _)) => id.with_str(|s| f(Some(s))),
        None => f(None),
    })
}

/// The next child id of the current one (`X.1`, `X.2`, ...), or `None`
/// outside a handler.
pub fn next_child() -> Option<CorrelationId> {
    CURRENT.with(|c| {
        c.borrow_mut().as_mut().map(|(id, n)| {
            *n += 1;
            CorrelationId::Child(ShortStr::new(&format!("{id}.{n}")))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(id: Option<CorrelationId>) -> Option<String> {
        id.map(|i| i.to_string())
    }

    #[test]
    fn children_are_numbered_from_one_and_scopes_nest() {
        assert_eq!(next_child(), None);
        {
            let _a = enter(CorrelationId::Root(7));
            assert_eq!(text(next_child()).as_deref(), Some("7.1"));
            {
                let _b = enter(CorrelationId::from("7.1"));
                assert_eq!(text(next_child()).as_deref(), Some("7.1.1"));
            }
            assert_eq!(text(next_child()).as_deref(), Some("7.2"));
            with_current(|c| assert_eq!(c, Some("7")));
        }
        with_current(|c| assert_eq!(c, None));
    }

    #[test]
    fn a_root_id_reads_as_its_number() {
        for n in [0, 9, 10, 1234, u64::MAX] {
            let id = CorrelationId::Root(n);
            id.with_str(|s| assert_eq!(s, n.to_string()));
            assert_eq!(id.to_string(), n.to_string());
            assert_eq!(CorrelationId::from(n.to_string().as_str()), id);
        }
    }
}
