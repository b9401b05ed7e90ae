//! The control socket: how `otools status`, `otools send`, `otools raise`
//! and `otools stop` reach a running host.
//!
//! `otools run` binds a Unix socket whose path is derived from the
//! manifest ([`socket::socket_path`]) before it loads any plugin, so a
//! second host for the same manifest refuses to start ("already running
//! (pid N)"), and a socket left by a host that was killed is detected
//! (nobody answers) and replaced. Once the contexts run, [`serve`] accepts
//! connections on a `control` thread of its own (blocked in `accept`
//! between them) and answers each on a thread of its own, at most
//! [`MAX_CONNECTIONS`] at a time: a `send --request` to a slow handler
//! does not hold up `status` or `stop`. A connection beyond that gets an
//! error reply at once.
//!
//! The protocol is one JSON line each way, versioned by
//! [`PROTOCOL_VERSION`]: a [`Envelope`] (`{"version":1,"command":"status"}`),
//! then a [`Reply`] (`{"version":1,"pid":N,"ok":true,"result":{...}}`, or
//! `"ok":false` and an `error`). Each command is one variant of [`Request`]
//! and one arm of [`Commands::dispatch`]; adding a command adds both.
//! `stop` is carried out once its reply was sent, and its connection is
//! kept open until the process exits, so the client can wait for the host
//! to be gone.

pub mod pipelines;
mod send;
pub mod socket;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use otools_abi::ExportKind;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

pub use send::{DEFAULT_REQUEST_TIMEOUT, DEFAULT_SEND_WAIT, MAX_REQUEST_TIMEOUT};
pub use socket::{BindError, Bound, ClientError, SocketFile, request, socket_path, wait_closed};

use crate::event::UnitStates;
use crate::flow::engine::FlowHandle;
use crate::flow::status::FlowStatus;
use crate::messaging::{FlowDirectory, Router};
use crate::pipeline::RunningPipeline;
use crate::runtime::RunningContext;
use crate::threads::Spawner;

/// The version of the request and reply lines. A host refuses a request of
/// another version with an error reply naming both.
pub const PROTOCOL_VERSION: u32 = 1;

/// The longest request line a host reads.
const MAX_REQUEST: u64 = 64 * 1024;

/// How long the host waits for a client's request line, and for its reply to be taken.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// How many connections are served at once, each on its own thread.
pub const MAX_CONNECTIONS: usize = 16;

/// One command to a running host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    /// Who is there: the host's pid (in every reply) and manifest.
    Ping,
    /// The state of every context and unit ([`Status`]).
    Status,
    /// The same graceful stop as SIGTERM.
    Stop,
    /// A message to a service, from `control`: queued (result `null`), or,
    /// with `request`, the reply (as JSON).
    Send {
        /// The target: `Context/service`, or a service name only one
        /// context uses.
        to: String,
        /// The message name.
        name: String,
        /// The payload (checked against the type the target declared).
        #[serde(default)]
        payload: Json,
        /// Wait for the reply instead of returning once it is queued.
        #[serde(default)]
        request: bool,
        /// How long to wait, in milliseconds: for room in a full mailbox
        /// (default 1000), or for the reply (default 5000); at most 60000.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
    /// A flow event, from `control`: raised (and committed to the flow's
    /// run store) for `sequence`; the result names the flow.
    Raise {
        /// A plain event of the flow.
        event: String,
        /// The flow (none: the only flow that declares `event`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        flow: Option<String>,
        /// The sequence.
        sequence: String,
    },
}

/// A request line: the protocol version and the command with its fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// [`PROTOCOL_VERSION`] of the client.
    pub version: u32,
    /// The command.
    #[serde(flatten)]
    pub request: Request,
}

/// A reply line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// [`PROTOCOL_VERSION`] of the host.
    pub version: u32,
    /// The host's process id.
    pub pid: u32,
    /// Whether the command was carried out.
    pub ok: bool,
    /// Why not, when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the command returns (`null` for none).
    #[serde(default, skip_serializing_if = "Json::is_null")]
    pub result: Json,
}

impl Reply {
    fn ok(result: Json) -> Reply {
        Reply {
            version: PROTOCOL_VERSION,
            pid: std::process::id(),
            ok: true,
            error: None,
            result,
        }
    }

    fn error(message: String) -> Reply {
        Reply {
            version: PROTOCOL_VERSION,
            pid: std::process::id(),
            ok: false,
            error: Some(message),
            result: Json::Null,
        }
    }
}

/// `status`: the host and every context and unit, in manifest order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The host's process id.
    pub pid: u32,
    /// The manifest it runs (canonical path).
    pub manifest: String,
    /// `running`, or `stopping` once every context and pipeline is
    /// stopping or has ended (after a signal, `otools stop` or `exit_when`).
    pub state: String,
    /// Every context, in manifest order.
    pub contexts: Vec<ContextStatus>,
    /// Every pipeline, in manifest order (absent when there is none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pipelines: Vec<pipelines::PipelineStatus>,
    /// Every flow, in manifest order (absent in a host without flows).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flows: Vec<FlowStatus>,
}

/// One context in a [`Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextStatus {
    /// Its name.
    pub name: String,
    /// `running`, `stopping` or `ended`.
    pub state: String,
    /// Its services and conditions, in manifest order.
    pub units: Vec<UnitStatus>,
}

/// One service or condition in a [`Status`]. Fields may be added (a
/// client ignores the ones it does not know); none is removed within a
/// protocol version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitStatus {
    /// Its name (a stack entry's is `<trigger>/<export>` unless named).
    pub name: String,
    /// `service` or `condition`.
    pub kind: String,
    /// `pending` until its first generation is set up, then the phase its
    /// latest event gave it ([`crate::event::Phase::name`]): `serving`,
    /// `restarting`, `gave_up`, ...
    pub state: String,
    /// Its newest generation (1 for the first).
    pub generation: u64,
    /// Restarts decided for it since the host started.
    pub restarts: u64,
    /// The reason of its latest failure, if any.
    pub last_failure: Option<String>,
    /// New versions a hot reload set up for it and did not roll back.
    pub reloads: u64,
    /// New versions a refused hot reload set up for it and discarded.
    pub reloads_rolled_back: u64,
    /// Its mailbox, when it accepts messages (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<MailboxStatus>,
}

/// A unit's mailbox in a [`Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxStatus {
    /// Messages queued now.
    pub depth: usize,
    /// The most messages ever queued at once (its high-water mark).
    pub high_water: usize,
    /// Messages handled so far, by every generation.
    pub handled: u64,
}

/// What follows a reply, once it was sent (the host may exit at once after
/// a stop, so the reply goes first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Close the connection.
    Close,
    /// Stop the host, and keep the connection open until the process exits.
    Stop,
}

/// What `otools run` hands the host for its control socket.
pub struct Setup {
    /// The socket, bound before the plugins were loaded.
    pub socket: Bound,
    /// The manifest (as `status` and `ping` name it).
    pub manifest: PathBuf,
    /// The host's unit states (a sink of its event hub).
    pub states: Arc<UnitStates>,
}

/// What the control thread answers with: the running contexts, the host's
/// unit states, its router, and how to stop the host.
pub struct Commands {
    manifest: PathBuf,
    cores: Vec<Arc<RunningContext>>,
    states: Arc<UnitStates>,
    router: Arc<dyn Router>,
    stop: Box<dyn Fn() + Send + Sync>,
    pipes: Vec<Arc<RunningPipeline>>,
    flow_directory: Arc<FlowDirectory>,
    flows: Vec<FlowHandle>,
}

impl Commands {
    /// The commands of the host running `manifest` as `cores`, whose unit
    /// states `states` keeps and whose services `router` reaches; `stop`
    /// asks the host to stop every context.
    pub fn new(
        manifest: PathBuf,
        cores: Vec<Arc<RunningContext>>,
        states: Arc<UnitStates>,
        router: Arc<dyn Router>,
        stop: impl Fn() + Send + Sync + 'static,
    ) -> Commands {
        Commands {
            manifest,
            cores,
            states,
            router,
            stop: Box::new(stop),
            pipes: Vec::new(),
            flow_directory: Arc::default(),
            flows: Vec::new(),
        }
    }

    /// The same, also showing `pipes` in `status`.
    #[must_use]
    pub fn with_pipelines(mut self, pipes: Vec<Arc<RunningPipeline>>) -> Commands {
        self.pipes = pipes;
        self
    }

    /// The host's flows: `raise` goes through `directory`, `status` shows `flows`.
    #[must_use]
    pub fn with_flows(mut self, directory: Arc<FlowDirectory>, flows: Vec<FlowHandle>) -> Commands {
        self.flow_directory = directory;
        self.flows = flows;
        self
    }

    /// Carries out one request line; the reply, and what follows once it
    /// was sent.
    pub fn dispatch(&self, line: &str) -> (Reply, After) {
        let envelope: Envelope = match serde_json::from_str(line) {
            Ok(e) => e,
            Err(e) => {
                return (Reply::error(unreadable(line, &e)), After::Close);
            }
        };
        if envelope.version != PROTOCOL_VERSION {
            return (
                Reply::error(format!(
                    "protocol version {} is not supported; this host speaks version {PROTOCOL_VERSION}",
                    envelope.version
                )),
                After::Close,
            );
        }
        match envelope.request {
            Request::Ping => (
                Reply::ok(serde_json::json!({ "manifest": self.manifest.display().to_string() })),
                After::Close,
            ),
            Request::Status => (Reply::ok(to_json(&self.status())), After::Close),
            Request::Stop => (
                Reply::ok(serde_json::json!({ "stopping": true })),
                After::Stop,
            ),
            Request::Send {
                to,
                name,
                payload,
                request,
                timeout_ms,
            } => {
                let timeout = timeout_ms.map_or(
                    if request {
                        DEFAULT_REQUEST_TIMEOUT
                    } else {
                        DEFAULT_SEND_WAIT
                    },
                    Duration::from_millis,
                );
                let args = send::SendArgs {
                    to: &to,
                    name: &name,
                    payload: &payload,
                    request,
                    timeout,
                };
                let reply = match send::send(&self.router, &args) {
                    Ok(result) => Reply::ok(result),
                    Err(why) => Reply::error(format!("cannot send `{name}` to `{to}`: {why}")),
                };
                (reply, After::Close)
            }
            Request::Raise {
                event,
                flow,
                sequence,
            } => {
                let reply =
                    match self
                        .flow_directory
                        .raise(flow.as_deref(), &event, &sequence, "control")
                    {
                        Ok(flow) => Reply::ok(serde_json::json!({ "flow": flow })),
                        Err(f) => Reply::error(format!(
                            "cannot raise `{event}` for sequence {sequence}: {}: {}",
                            f.kind.describe(),
                            f.message
                        )),
                    };
                (reply, After::Close)
            }
        }
    }

    /// What follows a reply once it was sent.
    fn after(&self, after: After, stream: UnixStream) -> Option<UnixStream> {
        match after {
            After::Close => None,
            After::Stop => {
                tracing::info!(
                    "stop requested through the control socket: stopping every context (finalizing)"
                );
                (self.stop)();
                Some(stream)
            }
        }
    }

    /// The state of every context and unit.
    pub fn status(&self) -> Status {
        let states = self.states.snapshot();
        // Stopping once every context and pipeline is stopping or done.
        let stopping = !(self.cores.is_empty() && self.pipes.is_empty())
            && self
                .cores
                .iter()
                .all(|c| c.shared.stopping() || c.ended.load(Ordering::SeqCst))
            && self.pipes.iter().all(|p| p.state() != "running");
        let contexts = self
            .cores
            .iter()
            .map(|core| {
                let context = &core.shared.name;
                let units = core
                    .units
                    .iter()
                    .map(|u| {
                        let kind = match u.kind() {
                            ExportKind::Service => "service",
                            ExportKind::Condition => "condition",
                        };
                        let mailbox = u.mailbox.as_ref().map(|mb| MailboxStatus {
                            depth: mb.depth(),
                            high_water: mb.high_water(),
                            handled: mb.handled(),
                        });
                        match states.get(&(context.clone(), u.name.clone())) {
                            Some(s) => UnitStatus {
                                name: u.name.clone(),
                                kind: kind.into(),
                                state: s.phase.name().into(),
                                generation: s.generation,
                                restarts: s.restarts,
                                last_failure: s.last_failure.clone(),
                                reloads: s.reloads,
                                reloads_rolled_back: s.reloads_rolled_back,
                                mailbox,
                            },
                            None => UnitStatus {
                                name: u.name.clone(),
                                kind: kind.into(),
                                state: "pending".into(),
                                generation: 1,
                                restarts: 0,
                                last_failure: None,
                                reloads: 0,
                                reloads_rolled_back: 0,
                                mailbox,
                            },
                        }
                    })
                    .collect();
                let state = if core.ended.load(Ordering::SeqCst) {
                    "ended"
                } else if core.shared.stopping() {
                    "stopping"
                } else {
                    "running"
                };
                ContextStatus {
                    name: context.clone(),
                    state: state.into(),
                    units,
                }
            })
            .collect();
        Status {
            pid: std::process::id(),
            manifest: self.manifest.display().to_string(),
            state: if stopping { "stopping" } else { "running" }.into(),
            contexts,
            pipelines: pipelines::status(&self.pipes, &states),
            flows: self.flows.iter().map(FlowHandle::status).collect(),
        }
    }
}

fn to_json<T: Serialize>(v: &T) -> Json {
    serde_json::to_value(v).unwrap_or(Json::Null)
}

/// Why a request line was refused, without echoing more than a few dozen
/// characters of it.
fn unreadable(line: &str, e: &serde_json::Error) -> String {
    let shown: String = line
        .chars()
        .take(60)
        .collect::<String>()
        .escape_debug()
        .to_string();
    format!(
        "unreadable request `{shown}`: {e}; send one JSON line such as {{\"version\":{PROTOCOL_VERSION},\"command\":\"status\"}}"
    )
}

/// Starts the `control` thread (with the host's `threads`) answering on
/// `socket` with `commands`. Returns the socket file, which is removed when
/// it is dropped: the caller keeps it until the host is done. A thread that
/// cannot be created was already reported (the host stops); the socket is
/// then removed.
pub fn serve(
    socket: Bound,
    commands: Commands,
    threads: &Arc<Spawner>,
) -> std::io::Result<SocketFile> {
    let (listener, file) = socket.into_parts();
    tracing::info!("control socket: {}", file.path().display());
    let server = Server {
        commands: Arc::new(commands),
        threads: Arc::clone(threads),
        serving: Arc::new(AtomicUsize::new(0)),
        held: Arc::default(),
    };
    threads.spawn("the control socket server", "control", move || {
        server.accept_loop(&listener);
    })?;
    Ok(file)
}

/// What the `control` thread shares with the connection threads.
struct Server {
    commands: Arc<Commands>,
    threads: Arc<Spawner>,
    /// Connections being served now.
    serving: Arc<AtomicUsize>,
    /// Connections of `stop` requests, kept open until the process exits.
    held: Arc<parking_lot::Mutex<Vec<UnixStream>>>,
}

/// Counts a connection being served while it lives.
struct Serving(Arc<AtomicUsize>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Server {
    /// Answers `stream` on a `control-conn` thread, or, when
    /// [`MAX_CONNECTIONS`] are being served, with an error reply at once.
    fn serve_one(&self, stream: UnixStream) {
        if self.serving.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            self.serving.fetch_sub(1, Ordering::SeqCst);
            let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
            write_reply(
                &stream,
                &Reply::error(format!(
                    "busy: {MAX_CONNECTIONS} connections are being served; try again"
                )),
            );
            return;
        }
        let serving = Serving(Arc::clone(&self.serving));
        let commands = Arc::clone(&self.commands);
        let held = Arc::clone(&self.held);
        // A thread that cannot be created is reported by the spawner (the
        // host stops); the connection is then closed unanswered.
        let _ = self
            .threads
            .spawn("a control socket connection", "control-conn", move || {
                let _serving = serving;
                if let Some(keep) = answer(stream, &commands) {
                    held.lock().push(keep);
                }
            });
    }

    /// The body of the `control` thread.
    fn accept_loop(&self, listener: &UnixListener) {
        let mut warned = false;
        for stream in listener.incoming() {
            match stream {
                Ok(s) => {
                    warned = false;
                    self.serve_one(s);
                }
                Err(e) => {
                    // Out of file descriptors, say: wait a little instead of
                    // spinning on the same error.
                    if !warned {
                        tracing::warn!("control socket: cannot accept a connection: {e}");
                        warned = true;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

/// Writes `reply` as one line (a client that is gone is ignored).
fn write_reply(stream: &UnixStream, reply: &Reply) {
    let mut text = serde_json::to_string(reply).unwrap_or_default();
    text.push('\n');
    let mut writer = stream;
    let _ = writer.write_all(text.as_bytes());
}

/// Reads one request line from `stream` and writes the reply; returns the
/// stream when it must stay open.
fn answer(stream: UnixStream, commands: &Commands) -> Option<UnixStream> {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let mut line = String::new();
    let read = BufReader::new((&stream).take(MAX_REQUEST)).read_line(&mut line);
    let (reply, after) = match read {
        Ok(0) => return None,
        Ok(_) if !line.ends_with('\n') => (
            Reply::error(format!(
                "the request must be one line of at most {MAX_REQUEST} bytes, ended by a newline"
            )),
            After::Close,
        ),
        Ok(_) => commands.dispatch(line.trim_end()),
        Err(e) => (
            Reply::error(format!("cannot read the request: {e}")),
            After::Close,
        ),
    };
    write_reply(&stream, &reply);
    // A stop is carried out even if its client is gone.
    commands.after(after, stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commands() -> (Commands, Arc<std::sync::atomic::AtomicBool>) {
        let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&stopped);
        let c = Commands::new(
            PathBuf::from("/m.toml"),
            Vec::new(),
            Arc::new(UnitStates::default()),
            Arc::new(crate::messaging::InProcess::new(Arc::default())),
            move || flag.store(true, Ordering::SeqCst),
        );
        (c, stopped)
    }

    #[test]
    fn a_request_line_names_its_version_and_command() {
        let line = serde_json::to_string(&Envelope {
            version: PROTOCOL_VERSION,
            request: Request::Status,
        })
        .unwrap();
        assert_eq!(line, r#"{"version":1,"command":"status"}"#);
    }

    #[test]
    fn ping_and_status_answer_and_stop_waits_for_its_reply_to_be_sent() {
        let (c, stopped) = commands();
        let (reply, after) = c.dispatch(r#"{"version":1,"command":"ping"}"#);
        assert!(reply.ok);
        assert_eq!(reply.pid, std::process::id());
        assert_eq!(reply.result["manifest"], "/m.toml");
        assert_eq!(after, After::Close);
        let (reply, _) = c.dispatch(r#"{"version":1,"command":"status"}"#);
        let status: Status = serde_json::from_value(reply.result).unwrap();
        assert_eq!(status.manifest, "/m.toml");
        assert!(status.contexts.is_empty());
        let (reply, after) = c.dispatch(r#"{"version":1,"command":"stop"}"#);
        assert!(reply.ok);
        assert_eq!(after, After::Stop);
        assert!(
            !stopped.load(Ordering::SeqCst),
            "not before the reply is sent"
        );
    }

    #[test]
    fn raise_without_flows_is_refused_and_its_line_names_the_event_and_sequence() {
        let (c, _) = commands();
        let line = serde_json::to_string(&Envelope {
            version: PROTOCOL_VERSION,
            request: Request::Raise {
                event: "go".into(),
                flow: None,
                sequence: "7".into(),
            },
        })
        .unwrap();
        assert_eq!(
            line,
            r#"{"version":1,"command":"raise","event":"go","sequence":"7"}"#
        );
        let (reply, after) = c.dispatch(&line);
        assert!(!reply.ok);
        assert_eq!(after, After::Close);
        assert_eq!(
            reply.error.as_deref(),
            Some("cannot raise `go` for sequence 7: unknown target: this host runs no flow")
        );
    }

    #[test]
    fn bad_requests_get_an_error_reply_naming_what_is_wrong() {
        let (c, stopped) = commands();
        for (line, want) in [
            ("status", "unreadable request `status`"),
            (
                r#"{"version":2,"command":"status"}"#,
                "protocol version 2 is not supported; this host speaks version 1",
            ),
            (
                r#"{"version":1,"command":"reboot"}"#,
                "unknown variant `reboot`",
            ),
        ] {
            let (reply, after) = c.dispatch(line);
            assert!(!reply.ok, "{line}");
            assert_eq!(after, After::Close);
            let error = reply.error.unwrap_or_default();
            assert!(error.contains(want), "{line}: {error}");
        }
        assert!(!stopped.load(Ordering::SeqCst));
    }
}
