//! The error type plugin code returns, and how it travels to the host.
//!
//! [`Error`] works like a small `anyhow::Error`: any `std::error::Error`
//! converts into it with `?`, and [`Error::msg`] (or [`crate::bail!`]) makes
//! one from a message. An error from a host callback keeps its
//! [`HostError`] kind so a service can tell a lock timeout from a missing
//! dataframe.

use std::fmt;

use abi_stable::std_types::RString;

use otools_abi::{CallError, CallErrorKind, HostError, MessageError, MessageFailure};

/// The result type of every plugin entry point.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error raised by plugin code or returned by a host callback.
pub struct Error {
    kind: Kind,
    message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Failed,
    Host(HostError),
    Message(MessageError),
    Unimplemented,
    InvalidConfig,
}

impl Error {
    /// An error with this message.
    pub fn msg(message: impl fmt::Display) -> Error {
        Error {
            kind: Kind::Failed,
            message: message.to_string(),
        }
    }

    /// The error a host callback returned, if this is one.
    pub fn host_error(&self) -> Option<HostError> {
        match self.kind {
            Kind::Host(e) => Some(e),
            _ => None,
        }
    }

    /// Why a `send`, `request` or `publish` failed, if this is such a failure.
    pub fn message_error(&self) -> Option<MessageError> {
        match self.kind {
            Kind::Message(e) => Some(e),
            _ => None,
        }
    }

    /// True if a dataframe lock could not be had within the timeout, or a
    /// request got no reply within its timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self.kind,
            Kind::Host(HostError::Timeout) | Kind::Message(MessageError::Timeout)
        )
    }

    pub(crate) fn message_failure(f: MessageFailure) -> Error {
        Error {
            kind: Kind::Message(f.kind),
            message: f.message.into_string(),
        }
    }

    /// The error message.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn host(kind: HostError, subject: &str) -> Error {
        Error {
            kind: Kind::Host(kind),
            message: format!("{subject}: {}", kind.describe()),
        }
    }

    /// A host error of `kind` with a message more precise than its description.
    pub(crate) fn host_message(kind: HostError, message: String) -> Error {
        Error {
            kind: Kind::Host(kind),
            message,
        }
    }

    /// The error `main` and `run_loop` return by default: "this service has
    /// no such entry point". The host stops calling that entry point, quietly.
    /// Return it yourself when a configuration leaves a service without a loop.
    pub fn unimplemented() -> Error {
        Error {
            kind: Kind::Unimplemented,
            message: String::from("not implemented"),
        }
    }

    pub(crate) fn invalid_config(message: String) -> Error {
        Error {
            kind: Kind::InvalidConfig,
            message,
        }
    }

    /// An error from `new`: the plugin rejected its configuration.
    pub(crate) fn rejecting_config(self) -> Error {
        match self.kind {
            Kind::Failed => Error {
                kind: Kind::InvalidConfig,
                ..self
            },
            _ => self,
        }
    }

    pub(crate) fn into_call_error(self) -> CallError {
        let kind = match self.kind {
            Kind::Failed | Kind::Host(_) | Kind::Message(_) => CallErrorKind::Failed,
            Kind::Unimplemented => CallErrorKind::Unimplemented,
            Kind::InvalidConfig => CallErrorKind::InvalidConfig,
        };
        CallError {
            kind,
            message: RString::from(self.message),
        }
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for Error {
    fn from(e: E) -> Error {
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        Error {
            kind: Kind::Failed,
            message,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Error({:?}: {})", self.kind, self.message)
    }
}

/// Returns early with an [`Error`] built from a format string.
///
/// ```
/// fn check(n: i64) -> otools_api::Result<()> {
///     if n < 0 {
///         otools_api::bail!("negative count {n}");
///     }
///     Ok(())
/// }
/// assert_eq!(check(-1).unwrap_err().to_string(), "negative count -1");
/// ```
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => {
        return ::core::result::Result::Err($crate::Error::msg(::core::format_args!($($arg)*)))
    };
}
