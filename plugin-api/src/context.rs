//! The handle a running service or condition receives: logging, its names,
//! control of its context, and the dataframes its context lists.
//!
//! A [`Context`] is only valid during the call it was passed to; the borrow
//! checker keeps it (and every [`Dataframe`] taken from it) from escaping.
//! Every method is a call into the host, which does the locking: no plugin
//! code ever runs while the host holds a lock.

use std::fmt;
use std::time::Duration;

use abi_stable::std_types::{RResult, RStr};

use crate::error::{Error, Result};
use crate::export::{flow_host, msg_host};
use crate::message::{DEFAULT_REQUEST_TIMEOUT, SEND_TIMEOUT};
use otools_abi::Value;
use otools_abi::{HostError, HostRef, LockMode, NO_TIMEOUT};

/// What a service or condition may ask of the host during one call.
pub struct Context<'a> {
    host: HostRef<'a>,
}

impl<'a> Context<'a> {
    #[doc(hidden)]
    pub fn from_host(host: HostRef<'a>) -> Context<'a> {
        Context { host }
    }

    /// The name of the context this instance runs in.
    pub fn context_name(&self) -> &str {
        self.host.context_name().as_str()
    }

    /// The name of this service or trigger, as given in the manifest.
    pub fn service_name(&self) -> &str {
        self.host.service_name().as_str()
    }

    /// Is a message at `level` going to be written? Use it to skip costly formatting.
    pub fn log_enabled(&self, level: crate::LogLevel) -> bool {
        self.host.log_enabled(level)
    }

    /// Logs `message` at `level`, tagged with this context and service.
    ///
    /// The message is only formatted when the level is enabled. Logging at
    /// [`LogLevel::Fatal`](crate::LogLevel::Fatal) also terminates the context.
    pub fn log(&self, level: crate::LogLevel, message: impl fmt::Display) {
        if self.host.log_enabled(level) {
            let text = message.to_string();
            self.host.log(level, RStr::from_str(&text));
        } else if level == crate::LogLevel::Fatal {
            self.host.log(level, RStr::from_str(""));
        }
    }

    /// Logs at `verbose` level.
    pub fn verbose(&self, message: impl fmt::Display) {
        self.log(crate::LogLevel::Verbose, message);
    }
    /// Logs at `debug` level.
    pub fn debug(&self, message: impl fmt::Display) {
        self.log(crate::LogLevel::Debug, message);
    }
    /// Logs at `info` level.
    pub fn info(&self, message: impl fmt::Display) {
        self.log(crate::LogLevel::Info, message);
    }
    /// Logs at `warning` level.
    pub fn warning(&self, message: impl fmt::Display) {
        self.log(crate::LogLevel::Warning, message);
    }
    /// Logs at `error` level.
    pub fn error(&self, message: impl fmt::Display) {
        self.log(crate::LogLevel::Error, message);
    }
    /// Logs at `fatal` level, then terminates this context.
    pub fn fatal(&self, message: impl fmt::Display) {
        self.log(crate::LogLevel::Fatal, message);
    }

    /// Ends this context: the current main-loop iteration stops after the
    /// current call, loop threads stop, and every instance is finalized.
    pub fn terminate_context(&self) {
        self.host.terminate_context();
    }

    /// Stops this service (its main and loop are no longer called) and
    /// finalizes it; the rest of the context goes on. This is a normal exit:
    /// only a service with `restart = "always"` is started again.
    pub fn deactivate(&self) {
        self.host.deactivate();
    }

    /// The bytes this service last put in its stash, if any.
    ///
    /// The stash is kept by the host and survives restarts of the service
    /// (after a failure or a hang): read it in `setup` to carry a little
    /// state over to the next generation. It does not survive the host.
    pub fn stash(&self) -> Option<Vec<u8>> {
        self.host
            .stash_get()
            .into_option()
            .map(abi_stable::std_types::RVec::into_vec)
    }

    /// Replaces this service's stash (see [`Context::stash`]). Keep it small:
    /// it is copied on every read and write.
    pub fn set_stash(&self, bytes: &[u8]) -> Result<()> {
        match self.host.stash_set(bytes.into()) {
            RResult::ROk(()) => Ok(()),
            RResult::RErr(e) => Err(Error::host(e, "stash")),
        }
    }

    /// Sends a one-way message `name` with `payload` to `to`: a service
    /// named `Context/service`, or by its name alone when no other context
    /// has a service of that name. It returns once the message is queued
    /// in the target's mailbox (waiting up to [`SEND_TIMEOUT`] for room).
    ///
    /// A failure is an error whose [`Error::message_error`] says which:
    /// `UnknownTarget`, `UnknownMessage`, `InvalidPayload` (checked here: a
    /// bad message is never queued), `MailboxFull` or `PeerGone`.
    pub fn send(&self, to: &str, name: &str, payload: impl Into<Value>) -> Result<()> {
        let host = msg_host().ok_or_else(no_messaging)?;
        match (host.send())(
            self.host.sabi_reborrow(),
            RStr::from_str(to),
            RStr::from_str(name),
            payload.into(),
            timeout_ns(SEND_TIMEOUT),
        ) {
            RResult::ROk(()) => Ok(()),
            RResult::RErr(f) => Err(Error::message_failure(f)),
        }
    }

    /// Sends a request and waits for the reply, for at most `timeout`
    /// ([`DEFAULT_REQUEST_TIMEOUT`], 5 s, when `None`): the whole call always
    /// ends within it. Besides the failures of [`Context::send`], it can
    /// fail with `Timeout` (no reply in time, or the handler hung) and
    /// `PeerFailed` (the handler returned an error or panicked: its message
    /// is in the error's).
    pub fn request(
        &self,
        to: &str,
        name: &str,
        payload: impl Into<Value>,
        timeout: Option<Duration>,
    ) -> Result<Value> {
        let timeout = timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT);
        let host = msg_host().ok_or_else(no_messaging)?;
        match (host.request())(
            self.host.sabi_reborrow(),
            RStr::from_str(to),
            RStr::from_str(name),
            payload.into(),
            timeout_ns(timeout),
        ) {
            RResult::ROk(v) => Ok(v),
            RResult::RErr(f) => Err(Error::message_failure(f)),
        }
    }

    /// Publishes `payload` on `topic`: every service whose manifest entry
    /// has `subscribe = ["<topic>", ...]` gets it as a message named
    /// `topic`, in publication order. Returns how many subscribers got it
    /// (0 when there are none).
    pub fn publish(&self, topic: &str, payload: impl Into<Value>) -> Result<usize> {
        let host = msg_host().ok_or_else(no_messaging)?;
        match (host.publish())(
            self.host.sabi_reborrow(),
            RStr::from_str(topic),
            payload.into(),
            timeout_ns(SEND_TIMEOUT),
        ) {
            RResult::ROk(n) => Ok(n as usize),
            RResult::RErr(f) => Err(Error::message_failure(f)),
        }
    }

    /// The correlation id of the message being handled: created by the host
    /// at the first send, and carried by every message a handler sends in
    /// turn as a child id (`7`, then `7.1`, `7.2`, ...). `None` outside a
    /// message handler.
    pub fn correlation_id(&self) -> Option<String> {
        msg_host()
            .and_then(|h| (h.correlation_id())().into_option())
            .map(abi_stable::std_types::RString::into_string)
    }

    /// Raises the flow event `event` for `sequence` in the running flow
    /// `flow` (`None`: the only flow that declares `event`), as if an
    /// association had raised it: it is stored and journaled like any raised
    /// event, and raising it again for the same run and sequence is a
    /// journaled duplicate that activates nothing. It returns once the
    /// flow's run store has committed it. A step raises in its own flow with
    /// [`crate::StepContext::raise`].
    ///
    /// A failure is an error whose [`Error::message_error`] says which:
    /// `UnknownTarget` (no such flow, or no flow or several declare the
    /// event), `UnknownMessage` (the flow has no such plain event: an
    /// expression event is raised by its expression only), `PeerGone` (the
    /// flow's run has finished) or `Unsupported` (a host built before
    /// plugins could raise flow events).
    pub fn raise_event(&self, flow: Option<&str>, event: &str, sequence: &str) -> Result<()> {
        let host = flow_host().ok_or_else(|| {
            Error::message_failure(otools_abi::MessageFailure::new(
                otools_abi::MessageError::Unsupported,
                "this host cannot raise flow events from plugins (it was built before otools-abi 0.3.3)",
            ))
        })?;
        match (host.raise())(
            self.host.sabi_reborrow(),
            RStr::from_str(flow.unwrap_or_default()),
            RStr::from_str(event),
            RStr::from_str(sequence),
        ) {
            RResult::ROk(()) => Ok(()),
            RResult::RErr(f) => Err(Error::message_failure(f)),
        }
    }

    /// A handle on the dataframe `name`, which this context must list.
    ///
    /// Operations wait for a dataframe another service holds locked
    /// ([`Dataframe::lock_write`]) as long as it takes; use
    /// [`Dataframe::with_timeout`] to bound the wait.
    pub fn dataframe(&self, name: &str) -> Result<Dataframe<'_>> {
        match self.host.dataframe(RStr::from_str(name)) {
            RResult::ROk(index) => Ok(Dataframe {
                host: self.host.sabi_reborrow(),
                index,
                timeout_ns: NO_TIMEOUT,
            }),
            RResult::RErr(e) => Err(Error::host(e, &format!("dataframe `{name}`"))),
        }
    }
}

/// The error of a message call under a host without messaging.
fn no_messaging() -> Error {
    Error::message_failure(otools_abi::MessageFailure::new(
        otools_abi::MessageError::Unsupported,
        "this host has no messaging (it was built before otools-abi 0.3.1)",
    ))
}

/// A dataframe as seen from one call: get, set and atomic updates by key.
pub struct Dataframe<'a> {
    host: HostRef<'a>,
    index: u32,
    timeout_ns: u64,
}

fn timeout_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(NO_TIMEOUT - 1)
}

impl<'a> Dataframe<'a> {
    /// The same dataframe, but every operation gives up with an error for which
    /// [`Error::is_timeout`] is true if the dataframe stays locked by another
    /// service for longer than `timeout`. It never proceeds unlocked.
    pub fn with_timeout(self, timeout: Duration) -> Dataframe<'a> {
        Dataframe {
            timeout_ns: timeout_ns(timeout),
            ..self
        }
    }

    fn fail<T>(&self, e: HostError, key: &str) -> Result<T> {
        Err(Error::host(e, &format!("dataframe key `{key}`")))
    }

    /// The value under `key`, or `None` if the key is absent.
    pub fn get(&self, key: &str) -> Result<Option<Value>> {
        match self
            .host
            .df_get(self.index, RStr::from_str(key), self.timeout_ns)
        {
            RResult::ROk(v) => Ok(v.into_option()),
            RResult::RErr(e) => self.fail(e, key),
        }
    }

    /// The value under `key` converted to `T`, or `None` if absent.
    pub fn get_as<T>(&self, key: &str) -> Result<Option<T>>
    where
        T: TryFrom<Value>,
        T::Error: std::error::Error + Send + Sync + 'static,
    {
        match self.get(key)? {
            None => Ok(None),
            Some(v) => T::try_from(v)
                .map(Some)
                .map_err(|e| Error::msg(format!("dataframe key `{key}`: {e}"))),
        }
    }

    /// Stores `value` under `key`.
    pub fn set(&self, key: &str, value: impl Into<Value>) -> Result<()> {
        match self.host.df_set(
            self.index,
            RStr::from_str(key),
            value.into(),
            self.timeout_ns,
        ) {
            RResult::ROk(()) => Ok(()),
            RResult::RErr(e) => self.fail(e, key),
        }
    }

    /// Removes `key`, returning what it held.
    pub fn remove(&self, key: &str) -> Result<Option<Value>> {
        match self
            .host
            .df_remove(self.index, RStr::from_str(key), self.timeout_ns)
        {
            RResult::ROk(v) => Ok(v.into_option()),
            RResult::RErr(e) => self.fail(e, key),
        }
    }

    /// Atomically adds `by` to the integer under `key` (absent counts as 0)
    /// and returns the new value. No update is ever lost, whatever the
    /// number of threads.
    ///
    /// A key holding anything but an integer (a float included: use
    /// [`Dataframe::add_float`]) and a sum that would overflow `i64` are
    /// refused with [`HostError::WrongType`]; the key keeps its value.
    pub fn increment(&self, key: &str, by: i64) -> Result<i64> {
        match self.host.df_add(
            self.index,
            RStr::from_str(key),
            Value::Int(by),
            self.timeout_ns,
        ) {
            RResult::ROk(Value::Int(n)) => Ok(n),
            RResult::ROk(_) => self.fail(HostError::WrongType, key),
            RResult::RErr(HostError::WrongType) => Err(self.refused_increment(key, by)),
            RResult::RErr(e) => self.fail(e, key),
        }
    }

    /// The error of a refused increment, telling an overflow from a
    /// non-integer key (the host reports both as `WrongType`, and the
    /// current value, read after the fact, tells which).
    fn refused_increment(&self, key: &str, by: i64) -> Error {
        let subject = format!("dataframe key `{key}`");
        match self.get(key) {
            Ok(Some(Value::Int(n))) if n.checked_add(by).is_none() => Error::host_message(
                HostError::WrongType,
                format!(
                    "{subject}: adding {by} to {n} overflows a 64-bit integer; the key keeps its value"
                ),
            ),
            Ok(Some(v)) => Error::host_message(
                HostError::WrongType,
                format!(
                    "{subject}: holds {}, not an integer; the key keeps its value",
                    v.type_name()
                ),
            ),
            _ => Error::host(HostError::WrongType, &subject),
        }
    }

    /// Atomically adds `by` to the number under `key` (absent counts as 0)
    /// and returns the new value as a float.
    pub fn add_float(&self, key: &str, by: f64) -> Result<f64> {
        match self.host.df_add(
            self.index,
            RStr::from_str(key),
            Value::Float(by),
            self.timeout_ns,
        ) {
            RResult::ROk(v) => v
                .as_f64()
                .map_or_else(|| self.fail(HostError::WrongType, key), Ok),
            RResult::RErr(e) => self.fail(e, key),
        }
    }

    /// Atomically replaces the value under `key` with `new` if it currently
    /// equals `expected` (`None` = the key is absent). Returns `Ok(Ok(()))` if
    /// it swapped, `Ok(Err(actual))` with the value found otherwise, so a
    /// read-modify-write loop can retry without losing updates.
    pub fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<Value>,
        new: impl Into<Value>,
    ) -> Result<std::result::Result<(), Option<Value>>> {
        match self.host.df_compare_and_swap(
            self.index,
            RStr::from_str(key),
            expected.into(),
            new.into(),
            self.timeout_ns,
        ) {
            RResult::ROk(o) if o.swapped => Ok(Ok(())),
            RResult::ROk(o) => Ok(Err(o.actual.into_option())),
            RResult::RErr(e) => self.fail(e, key),
        }
    }

    /// Every key of the dataframe, in no particular order.
    pub fn keys(&self) -> Result<Vec<String>> {
        match self.host.df_keys(self.index, self.timeout_ns) {
            RResult::ROk(keys) => Ok(keys.into_iter().map(Into::into).collect()),
            RResult::RErr(e) => self.fail(e, "*"),
        }
    }

    fn lock(&self, mode: LockMode) -> Result<LockGuard<'_>> {
        match self.host.df_lock(self.index, mode, self.timeout_ns) {
            RResult::ROk(()) => Ok(LockGuard {
                df: Dataframe {
                    host: self.host.sabi_reborrow(),
                    index: self.index,
                    timeout_ns: self.timeout_ns,
                },
                mode,
            }),
            RResult::RErr(e) => self.fail(e, "*"),
        }
    }

    /// Blocks writes by other services until the guard is dropped (OTools'
    /// `blockWriting`); they still read. Use it for a consistent view of
    /// several keys. Waits for other holders within the timeout.
    pub fn lock_read(&self) -> Result<LockGuard<'_>> {
        self.lock(LockMode::Read)
    }

    /// Blocks reads and writes by other services until the guard is dropped
    /// (OTools' `blockReading`); this service goes on using the dataframe.
    /// Use it for a multi-key update others must see all at once.
    pub fn lock_write(&self) -> Result<LockGuard<'_>> {
        self.lock(LockMode::Write)
    }
}

/// A lock on a dataframe, released when dropped (or when the call ends).
pub struct LockGuard<'a> {
    df: Dataframe<'a>,
    mode: LockMode,
}

impl<'a> std::ops::Deref for LockGuard<'a> {
    type Target = Dataframe<'a>;
    fn deref(&self) -> &Dataframe<'a> {
        &self.df
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        // An unlock can only fail if the host already released the lock (the
        // instance was fenced); there is nothing left to undo then.
        let _ = self.df.host.df_unlock(self.df.index, self.mode);
    }
}
