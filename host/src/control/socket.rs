//! Where a host's control socket is, binding it (one host per manifest, a
//! stale socket replaced), removing it on every way out, and the client
//! side of one request.
//!
//! The path is `$XDG_RUNTIME_DIR/otools/<hash>.sock` when
//! `XDG_RUNTIME_DIR` is set (an absolute path), else
//! `/tmp/otools-<uid>/<hash>.sock`, where `<hash>` is the xxh3 hash of the
//! manifest's canonical path in 16 hex digits: every way of naming the
//! same manifest file finds the same socket. The folder is created with
//! mode 0700 and refused unless it is a folder owned by this user that
//! nobody else may enter; the socket itself gets mode 0600.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Envelope, PROTOCOL_VERSION, Reply, Request};
use crate::signals;

/// How long binding waits for a live host's answer before it reports it
/// without its pid.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The control socket of the host running `manifest`.
pub fn socket_path(manifest: &Path) -> std::io::Result<PathBuf> {
    let canonical = std::fs::canonicalize(manifest)?;
    let hash = xxhash_rust::xxh3::xxh3_64(canonical.as_os_str().as_bytes());
    Ok(control_dir()?.join(format!("{hash:016x}.sock")))
}

/// The folder of the control sockets of this user.
fn control_dir() -> std::io::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        let dir = PathBuf::from(dir);
        if dir.is_absolute() {
            return Ok(dir.join("otools"));
        }
    }
    Ok(PathBuf::from(format!("/tmp/otools-{}", uid()?)))
}

/// This process's user id (the owner of `/proc/self`).
fn uid() -> std::io::Result<u32> {
    Ok(std::fs::metadata("/proc/self")?.uid())
}

/// Why a host could not bind its control socket.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// A live host answers on the socket.
    #[error("already running (pid {}); its control socket is {}", pid.map_or_else(|| String::from("unknown: it did not answer"), |p| p.to_string()), socket.display())]
    AlreadyRunning {
        /// The running host's pid, if it answered in time.
        pid: Option<u32>,
        /// The socket.
        socket: PathBuf,
    },
    /// The folder is not safe to put a socket in.
    #[error(
        "cannot use {} for the control socket: it must be a folder owned by you that only you may enter (mode 0700)",
        dir.display()
    )]
    UnsafeDir {
        /// The folder.
        dir: PathBuf,
    },
    /// The socket or its folder could not be made.
    #[error("cannot create the control socket {}: {source}", socket.display())]
    Io {
        /// The socket (or the manifest, when its path could not be derived).
        socket: PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
}

/// A bound control socket, not served yet (see [`super::serve`]).
#[derive(Debug)]
pub struct Bound {
    listener: UnixListener,
    file: SocketFile,
    /// A socket left by a host that no longer runs was replaced.
    pub replaced_stale: bool,
}

impl Bound {
    /// Binds the control socket of `manifest`: refuses when a host answers
    /// on it, and replaces it when nobody does (a host that was killed).
    pub fn bind(manifest: &Path) -> Result<Bound, BindError> {
        let socket = socket_path(manifest).map_err(|source| BindError::Io {
            socket: manifest.to_path_buf(),
            source,
        })?;
        let io = |source| BindError::Io {
            socket: socket.clone(),
            source,
        };
        let dir = socket.parent().unwrap_or(Path::new("/")).to_path_buf();
        make_private_dir(&dir)?;
        let mut replaced_stale = false;
        loop {
            match UnixListener::bind(&socket) {
                Ok(listener) => {
                    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
                        .map_err(io)?;
                    let ino = std::fs::symlink_metadata(&socket).map_err(io)?.ino();
                    signals::remove_on_forced_exit(&socket);
                    return Ok(Bound {
                        listener,
                        file: SocketFile { path: socket, ino },
                        replaced_stale,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && !replaced_stale => {
                    match UnixStream::connect(&socket) {
                        Ok(stream) => {
                            let pid = ping(stream).ok().map(|r| r.pid);
                            return Err(BindError::AlreadyRunning { pid, socket });
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                            // Nobody listens: a host that was killed left it.
                            match std::fs::remove_file(&socket) {
                                Ok(()) => {}
                                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                                Err(e) => return Err(io(e)),
                            }
                        }
                        Err(e) => return Err(io(e)),
                    }
                    replaced_stale = true;
                }
                Err(e) => return Err(io(e)),
            }
        }
    }

    /// The listener, and the file that removes the socket when dropped.
    pub fn into_parts(self) -> (UnixListener, SocketFile) {
        (self.listener, self.file)
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.file.path
    }
}

/// Creates `dir` with mode 0700 if it is missing, and checks that it is a
/// folder (not a link) owned by this user that nobody else may enter.
fn make_private_dir(dir: &Path) -> Result<(), BindError> {
    let io = |source| BindError::Io {
        socket: dir.to_path_buf(),
        source,
    };
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(e)),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(io)?;
    if !meta.is_dir() || meta.uid() != uid().map_err(io)? || meta.mode() & 0o077 != 0 {
        return Err(BindError::UnsafeDir {
            dir: dir.to_path_buf(),
        });
    }
    Ok(())
}

/// The control socket's file: removed when dropped (if it is still the one
/// this host bound), and by a forced exit, which runs no destructor.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    ino: u64,
}

impl SocketFile {
    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        signals::keep_on_forced_exit(&self.path);
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Why a request to a host failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket.
    #[error("no host listens on {}", socket.display())]
    NoHost {
        /// The socket.
        socket: PathBuf,
    },
    /// Talking to the host failed.
    #[error("talking to the host on {}: {source}", socket.display())]
    Io {
        /// The socket.
        socket: PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
    /// The host's reply could not be read.
    #[error("unreadable reply from the host on {}: {reason}", socket.display())]
    BadReply {
        /// The socket.
        socket: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
}

/// Sends `request` to the host on `socket` and reads its reply, waiting at
/// most `timeout` for it. Returns the connection too: after `stop` it
/// closes when the host's process exits.
pub fn request(
    socket: &Path,
    request: Request,
    timeout: Duration,
) -> Result<(Reply, UnixStream), ClientError> {
    let stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            ClientError::NoHost {
                socket: socket.to_path_buf(),
            }
        }
        _ => ClientError::Io {
            socket: socket.to_path_buf(),
            source: e,
        },
    })?;
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    exchange(&stream, &request)
        .map_err(|e| match e {
            Exchange::Io(source) => ClientError::Io {
                socket: socket.to_path_buf(),
                source,
            },
            Exchange::Bad(reason) => ClientError::BadReply {
                socket: socket.to_path_buf(),
                reason,
            },
        })
        .map(|reply| (reply, stream))
}

enum Exchange {
    Io(std::io::Error),
    Bad(String),
}

/// Writes one request line and reads one reply line.
fn exchange(stream: &UnixStream, request: &Request) -> Result<Reply, Exchange> {
    let envelope = Envelope {
        version: PROTOCOL_VERSION,
        request: request.clone(),
    };
    let mut line = serde_json::to_string(&envelope).map_err(|e| Exchange::Bad(e.to_string()))?;
    line.push('\n');
    let mut writer = stream;
    writer.write_all(line.as_bytes()).map_err(Exchange::Io)?;
    let mut reply = String::new();
    BufReader::new(stream.take(16 << 20))
        .read_line(&mut reply)
        .map_err(Exchange::Io)?;
    if reply.is_empty() {
        return Err(Exchange::Bad(String::from(
            "the connection closed without a reply",
        )));
    }
    serde_json::from_str(&reply).map_err(|e| Exchange::Bad(e.to_string()))
}

/// Asks a live host who it is, within [`PROBE_TIMEOUT`].
fn ping(stream: UnixStream) -> Result<Reply, Exchange> {
    let _ = stream.set_read_timeout(Some(PROBE_TIMEOUT));
    let _ = stream.set_write_timeout(Some(PROBE_TIMEOUT));
    exchange(&stream, &Request::Ping)
}

/// Waits until the host closes `stream` (its process exited, after `stop`).
pub fn wait_closed(mut stream: UnixStream) {
    let _ = stream.set_read_timeout(None);
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
