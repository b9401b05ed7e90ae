//! systemd's `sd_notify` protocol: datagrams such as `READY=1`,
//! `WATCHDOG=1` and `STOPPING=1` sent to the socket named by
//! `NOTIFY_SOCKET` (a path, or `@name` for an abstract socket). Without
//! that variable every call does nothing. `WATCHDOG_USEC` (set by systemd
//! when the unit has `WatchdogSec=`) says how often to ping.

use std::os::unix::net::UnixDatagram;
use std::sync::OnceLock;
use std::time::Duration;

/// The socket and where it sends, made on first use. Per process by nature:
/// `NOTIFY_SOCKET` is the process's environment, and systemd supervises
/// the process, whichever host in it sends.
static SOCKET: OnceLock<Option<(UnixDatagram, String)>> = OnceLock::new();

fn socket() -> Option<&'static (UnixDatagram, String)> {
    SOCKET
        .get_or_init(|| {
            let target = std::env::var("NOTIFY_SOCKET")
                .ok()
                .filter(|s| !s.is_empty())?;
            let sock = UnixDatagram::unbound().ok()?;
            Some((sock, target))
        })
        .as_ref()
}

/// Sends one message (e.g. `READY=1`); errors are ignored, as sd_notify does.
pub fn send(message: &str) {
    let Some((sock, target)) = socket() else {
        return;
    };
    let result = match target.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                .and_then(|addr| sock.send_to_addr(message.as_bytes(), &addr))
        }
        None => sock.send_to(message.as_bytes(), target),
    };
    if let Err(e) = result {
        tracing::debug!("sd_notify {message:?} to {target}: {e}");
    }
}

/// How often systemd wants `WATCHDOG=1`: half of `WATCHDOG_USEC`, if set.
pub fn watchdog_interval() -> Option<Duration> {
    socket()?;
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}
