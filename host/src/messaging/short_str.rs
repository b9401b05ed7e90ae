//! [`ShortStr`]: the text a queued message carries (its name, its sender,
//! a child correlation id), kept inline when it is short.
//!
//! Message names, `Context/service` addresses and ids such as `7.1` are
//! short, and a message crosses threads: a `String` would be allocated by
//! the sender and freed by the mailbox thread (the allocator then contends
//! between the two), and a shared `Arc<str>` would have both threads write
//! its reference count on every message. Up to 30 bytes are copied
//! into the envelope instead; longer text is shared.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// The longest text kept inline.
const INLINE: usize = 30;

/// Text that is copied inline up to 30 bytes, shared beyond.
#[derive(Clone)]
pub struct ShortStr(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Shared(Arc<str>),
}

impl ShortStr {
    /// `s`, inline when it is short enough.
    pub fn new(s: &str) -> ShortStr {
        ShortStr::inline(s).unwrap_or_else(|| ShortStr(Repr::Shared(Arc::from(s))))
    }

    /// `s`, inline when it is short enough, else sharing `s` (no copy).
    pub fn from_shared(s: &Arc<str>) -> ShortStr {
        ShortStr::inline(s).unwrap_or_else(|| ShortStr(Repr::Shared(Arc::clone(s))))
    }

    fn inline(s: &str) -> Option<ShortStr> {
        let len = u8::try_from(s.len())
            .ok()
            .filter(|n| usize::from(*n) <= INLINE)?;
        let mut bytes = [0u8; INLINE];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Some(ShortStr(Repr::Inline { len, bytes }))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Always the bytes of a `&str`, cut at its end.
            Repr::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            Repr::Shared(s) => s,
        }
    }
}

impl Deref for ShortStr {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for ShortStr {
    fn from(s: &str) -> ShortStr {
        ShortStr::new(s)
    }
}

impl PartialEq for ShortStr {
    fn eq(&self, other: &ShortStr) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for ShortStr {}

impl fmt::Display for ShortStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self)
    }
}

impl fmt::Debug for ShortStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_inline_and_long_text_shared_and_both_read_back() {
        let short = "Bench/watch";
        let exact = "x".repeat(INLINE);
        let long = "y".repeat(INLINE + 1);
        for s in [short, "", exact.as_str(), "é✓ multi-byte"] {
            let t = ShortStr::new(s);
            assert!(matches!(t.0, Repr::Inline { .. }), "{s}");
            assert_eq!(t.as_str(), s);
        }
        let shared: Arc<str> = Arc::from(long.as_str());
        let t = ShortStr::from_shared(&shared);
        assert!(matches!(&t.0, Repr::Shared(a) if Arc::ptr_eq(a, &shared)));
        assert_eq!(&*t, long);
        assert_eq!(ShortStr::new(&long), t);
        assert_eq!(format!("{t:?}"), format!("{long:?}"));
    }
}
