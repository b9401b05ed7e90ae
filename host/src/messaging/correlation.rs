//! The correlation id of the message being handled on this thread.
//!
//! The mailbox thread enters a [`Scope`] around each handler call. While
//! it lasts, the handler's log lines carry the id, and each message the
//! handler sends gets a child id: `X.1`, then `X.2`, and so on (a child's
//! handler sends `X.1.1`). Outside a scope, a send starts a new root id.
//! The id is per call, so it lives with the call's thread, not with the
//! instance (a service's `main`, loop and handler share one host handle).

use std::cell::RefCell;

thread_local! {
    /// The id being handled, and how many children it has had.
    static CURRENT: RefCell<Option<(String, u64)>> = const { RefCell::new(None) };
}

/// While it lives, the current thread handles the message with this id.
pub struct Scope {
    previous: Option<(String, u64)>,
}

/// Makes `id` the current correlation id until the scope is dropped.
pub fn enter(id: &str) -> Scope {
    let previous = CURRENT.with(|c| c.borrow_mut().replace((id.to_owned(), 0)));
    Scope { previous }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

/// Runs `f` with the current id (none outside a handler).
pub fn with_current<R>(f: impl FnOnce(Option<&str>) -> R) -> R {
    CURRENT.with(|c| f(c.borrow().as_ref().map(|(id, _)| id.as_str())))
}

/// The next child id of the current one (`X.1`, `X.2`, ...), or `None`
/// outside a handler.
pub fn next_child() -> Option<String> {
    CURRENT.with(|c| {
        c.borrow_mut().as_mut().map(|(id, n)| {
            *n += 1;
            format!("{id}.{n}")
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_are_numbered_from_one_and_scopes_nest() {
        assert_eq!(next_child(), None);
        {
            let _a = enter("7");
            assert_eq!(next_child().as_deref(), Some("7.1"));
            {
                let _b = enter("7.1");
                assert_eq!(next_child().as_deref(), Some("7.1.1"));
            }
            assert_eq!(next_child().as_deref(), Some("7.2"));
            with_current(|c| assert_eq!(c, Some("7")));
        }
        with_current(|c| assert_eq!(c, None));
    }
}
