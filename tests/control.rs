//! The control socket: `otools status`, `otools send` and `otools stop`
//! against a running host, one host per manifest, a stale socket replaced,
//! and the socket's mode and removal on every way out.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{DEADLINE, Output, Running, TestDir, run, script_context, spawn};

/// A context whose services run until they are stopped: `a`, `b` and `c`
/// log their setup and finalize, `flaky` fails once the file `fail` appears
/// in `dir`, and a trigger that never fires adds a condition.
fn lasting(dir: &TestDir) -> PathBuf {
    let fail = dir.path.join("fail");
    dir.manifest(
        "m.toml",
        &format!(
            r#"
[[context]]
name = "Main"
period = "20ms"
[[context.service]]
name = "a"
plugin = "probe"
export = "Lifecycle"
[[context.service]]
name = "flaky"
plugin = "probe"
export = "FailOnFile"
config = {{ path = "{}" }}
restart_delay = "10ms"
[[context.service]]
name = "b"
plugin = "probe"
export = "Lifecycle"
[[context.trigger]]
name = "never"
condition = [ {{ plugin = "probe", export = "Constant", config = {{ value = false }} }} ]
service = [ {{ name = "c", plugin = "probe", export = "Lifecycle" }} ]
"#,
            fail.display()
        ),
    )
}

pub fn arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// `otools status --json MANIFEST`, parsed; `None` while no host answers.
pub fn status_json(manifest: &Path) -> Option<Value> {
    let out = run(&["status", "--json", &arg(manifest)]);
    (out.code() == 0).then(|| {
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("bad status JSON {:?}: {e}", out.stdout))
    })
}

/// Polls `otools status --json` until `want` holds (the deadline only
/// fails a hung test); returns that status.
pub fn wait_status(manifest: &Path, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + DEADLINE;
    let mut last = None;
    loop {
        if let Some(s) = status_json(manifest) {
            if want(&s) {
                return s;
            }
            last = Some(s);
        }
        assert!(
            Instant::now() < deadline,
            "the status never matched; last: {last:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The unit `name` of context `Main` in a status.
fn unit<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["contexts"][0]["units"]
        .as_array()
        .and_then(|units| units.iter().find(|u| u["name"] == name))
        .unwrap_or_else(|| panic!("no unit {name} in {status:#?}"))
}

fn all_serving(status: &Value) -> bool {
    status["contexts"][0]["units"]
        .as_array()
        .is_some_and(|units| units.iter().all(|u| u["state"] == "serving"))
}

/// The words of the text status line of unit `name`.
fn text_row(manifest: &Path, name: &str) -> Vec<String> {
    let out = run(&["status", &arg(manifest)]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    out.stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row for {name}:\n{}", out.stdout))
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// The socket `otools status` names when no host runs for `manifest`
/// (which it reports as a clear error, exit code 1).
fn socket_of(manifest: &Path) -> PathBuf {
    let out = run(&["status", &arg(manifest)]);
    assert_eq!(out.code(), 1, "{}", out.stderr);
    let want = format!("error: no running host for {} (socket ", manifest.display());
    let rest = out
        .stderr
        .trim_end()
        .strip_prefix(&want)
        .unwrap_or_else(|| panic!("expected {want:?}...; got {:?}", out.stderr));
    PathBuf::from(rest.strip_suffix(')').expect("ends with `)`"))
}

/// A host running [`lasting`] in a fresh folder.
struct Host {
    dir: TestDir,
    manifest: PathBuf,
    socket: PathBuf,
    running: Running,
}

impl Host {
    /// Starts it, and waits until `status` shows every unit serving.
    fn start(name: &str) -> Host {
        let dir = TestDir::new(name);
        let manifest = lasting(&dir);
        let socket = socket_of(&manifest);
        let running = Running::start(&manifest);
        wait_status(&manifest, all_serving);
        Host {
            dir,
            manifest,
            socket,
            running,
        }
    }

    /// `otools stop`, which returns once the host has exited; the host's
    /// output, after asserting that it exited with 0.
    fn stop(self) -> Output {
        let out = run(&["stop", &arg(&self.manifest)]);
        assert_eq!(out.code(), 0, "{}", out.stderr);
        assert!(out.stdout.contains("has exited"), "{}", out.stdout);
        let out = self.running.finish();
        assert_eq!(out.code(), 0, "{}", out.stderr);
        out
    }
}

#[test]
fn status_shows_every_unit_with_its_state_and_generation_and_follows_a_restart() {
    let host = Host::start("control_status");
    let m = &host.manifest;
    let s = status_json(m).expect("the host answers");
    assert_eq!(s["pid"], host.running.pid());
    assert_eq!(s["state"], "running");
    assert_eq!(s["contexts"][0]["name"], "Main");
    assert_eq!(s["contexts"][0]["state"], "running");
    let names: Vec<&str> = s["contexts"][0]["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "flaky", "b", "never/Constant", "c"]);
    assert_eq!(unit(&s, "never/Constant")["kind"], "condition");
    let flaky = unit(&s, "flaky");
    assert_eq!(flaky["kind"], "service");
    assert_eq!(flaky["generation"], 1);
    assert_eq!(flaky["restarts"], 0);
    assert_eq!(flaky["last_failure"], Value::Null);
    assert_eq!(
        text_row(m, "flaky"),
        ["flaky", "service", "serving", "1", "0", "0", "-"]
    );

    std::fs::write(host.dir.path.join("fail"), "").unwrap();
    let s = wait_status(m, |s| {
        unit(s, "flaky")["generation"] == 2 && unit(s, "flaky")["state"] == "serving"
    });
    let flaky = unit(&s, "flaky");
    assert_eq!(flaky["restarts"], 1);
    let failure = flaky["last_failure"].as_str().unwrap();
    assert!(failure.starts_with("failed: asked to fail by"), "{failure}");
    assert_eq!(unit(&s, "a")["generation"], 1);
    let row = text_row(m, "flaky");
    assert_eq!(row[..6], ["flaky", "service", "serving", "2", "1", "0"]);
    assert_eq!(row[6..9], ["failed:", "asked", "to"]);
    host.stop();
}

#[test]
fn stop_finalizes_in_reverse_order_and_exits_0_like_sigterm() {
    let host = Host::start("control_stop");
    let socket = host.socket.clone();
    let meta = std::fs::symlink_metadata(&socket).expect("the socket exists while the host runs");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let dir_mode = std::fs::metadata(socket.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700);

    let out = host.stop();
    let m = out.messages();
    let finals: Vec<&String> = m.iter().filter(|s| s.starts_with("finalize ")).collect();
    assert_eq!(finals, ["finalize c", "finalize b", "finalize a"]);
    assert!(
        m.iter()
            .any(|s| s.contains("stop requested through the control socket")),
        "{m:#?}"
    );
    assert!(!socket.exists(), "the socket is removed at exit");
}

#[test]
fn a_second_host_for_the_same_manifest_is_refused_with_the_pid() {
    let host = Host::start("control_second");
    let second = run(&["run", &arg(&host.manifest), "--log-format", "json"]);
    assert_eq!(second.code(), 2, "{}", second.stderr);
    let want = format!("already running (pid {})", host.running.pid());
    assert!(second.stderr.contains(&want), "{}", second.stderr);
    assert!(
        second.stderr.contains("nothing was started"),
        "{}",
        second.stderr
    );
    // The refused host left the first one's socket alone.
    let s = status_json(&host.manifest).expect("the first host answers");
    assert_eq!(s["pid"], host.running.pid());
    host.stop();
}

#[test]
fn a_stale_socket_from_a_killed_host_is_replaced() {
    let Host {
        dir,
        manifest,
        socket,
        running,
    } = Host::start("control_stale");
    running.signal("KILL");
    let _ = running.finish();
    assert!(socket.exists(), "SIGKILL leaves the socket behind");
    assert_eq!(socket_of(&manifest), socket, "nobody answers on it");

    let mut running = Running::start(&manifest);
    running.wait_for("replaced the control socket");
    let host = Host {
        dir,
        manifest,
        socket,
        running,
    };
    let s = wait_status(&host.manifest, all_serving);
    assert_eq!(s["pid"], host.running.pid());
    let socket = host.socket.clone();
    host.stop();
    assert!(!socket.exists());
}

#[test]
fn the_socket_is_removed_when_the_run_ends_by_itself_or_by_a_signal() {
    let dir = TestDir::new("control_removed");
    // Ends by itself after three iterations.
    let m = dir.manifest(
        "ends.toml",
        "[[context]]\nname = \"C\"\n[[context.service]]\nname = \"stop\"\nplugin = \"hello\"\nexport = \"StopAfter\"\nconfig = { count = 3 }\n",
    );
    let socket = socket_of(&m);
    let out = run(&["run", &arg(&m), "--log-format", "json"]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert!(
        out.messages()
            .iter()
            .any(|s| s.starts_with("control socket: ")),
        "{}",
        out.stderr
    );
    assert!(!socket.exists());

    let host = Host::start("control_term");
    host.running.signal("TERM");
    assert_eq!(host.running.finish().code(), 0);
    assert!(!host.socket.exists());
}

#[test]
fn the_socket_is_removed_by_the_forced_exit_of_a_second_signal() {
    let dir = TestDir::new("control_forced");
    // Its finalize hangs, so the host is still stopping at the second signal.
    let m = dir.manifest(
        "m.toml",
        r#"
[[context]]
name = "C"
period = "20ms"
[[context.service]]
name = "stuck"
plugin = "faulty"
export = "Faulty"
config = { hang_in = ["finalize"] }
shutdown_timeout = "60s"
"#,
    );
    let socket = socket_of(&m);
    let mut host = Running::start(&m);
    wait_status(&m, all_serving);
    host.signal("TERM");
    host.wait_for("received SIGTERM");
    host.signal("TERM");
    let out = host.finish();
    assert_eq!(out.code(), 130, "{}", out.stderr);
    assert!(!socket.exists(), "a forced exit removes the socket too");
}

#[test]
fn status_and_stop_without_a_running_host_fail_with_a_clear_error() {
    let dir = TestDir::new("control_nohost");
    let m = lasting(&dir);
    let socket = socket_of(&m);
    let out = run(&["stop", &arg(&m)]);
    assert_eq!(out.code(), 1);
    assert_eq!(
        out.stderr.trim_end(),
        format!(
            "error: no running host for {} (socket {})",
            m.display(),
            socket.display()
        )
    );
    let missing = dir.path.join("missing.toml");
    let out = run(&["status", &arg(&missing)]);
    assert_eq!(out.code(), 1);
    assert!(out.stderr.contains("manifest not found"), "{}", out.stderr);
}

/// `otools send MANIFEST ARGS...`.
fn send(manifest: &Path, args: &[&str]) -> Output {
    let m = arg(manifest);
    let mut all = vec!["send", m.as_str()];
    all.extend_from_slice(args);
    run(&all)
}

/// An `Agent`, an `Echo` (its mailbox holding `mailbox_size` messages, and
/// given up on 200 ms into its finalize) and a unit without a mailbox, in
/// context `Agents`; `more` is appended.
fn agents(dir: &TestDir, mailbox_size: usize, more: &str) -> PathBuf {
    dir.manifest(
        "m.toml",
        &format!(
            r#"
[[context]]
name = "Agents"
period = "20ms"
[[context.service]]
name = "agent"
plugin = "messages"
export = "Agent"
[[context.service]]
name = "echo"
plugin = "messages"
export = "Echo"
mailbox_size = {mailbox_size}
shutdown_timeout = "200ms"
[[context.service]]
name = "plain"
plugin = "probe"
export = "Lifecycle"
{more}"#
        ),
    )
}

#[test]
fn send_queues_a_message_a_request_prints_the_reply_and_status_counts_them() {
    let dir = TestDir::new("control_send");
    let m = agents(&dir, 10, "");
    let running = Running::start(&m);
    wait_status(&m, all_serving);

    let out = send(&m, &["agent", "PING"]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim_end(), "queued `PING` for agent");
    let out = send(&m, &["Agents/agent", "PING", "--payload", "5"]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let out = send(&m, &["agent", "DUMP", "--request"]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim_end(), "2", "both PINGs were handled first");
    let out = send(
        &m,
        &[
            "echo",
            "ECHO",
            "--payload",
            r#""hi""#,
            "--request",
            "--timeout",
            "10s",
        ],
    );
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim_end(), r#""hi from 1""#);

    let s = status_json(&m).expect("the host answers");
    assert_eq!(unit(&s, "agent")["mailbox"]["handled"], 3);
    assert_eq!(unit(&s, "agent")["mailbox"]["depth"], 0);
    assert!(unit(&s, "agent")["mailbox"]["high_water"].as_u64() >= Some(1));
    assert_eq!(unit(&s, "echo")["mailbox"]["handled"], 1);
    assert_eq!(unit(&s, "plain").get("mailbox"), None, "no mailbox: absent");
    assert_eq!(
        text_row(&m, "plain"),
        [
            "plain", "service", "serving", "1", "0", "0", "-", "-", "-", "-"
        ]
    );
    let row = text_row(&m, "agent");
    assert_eq!(
        row[..7],
        ["agent", "service", "serving", "1", "0", "0", "0"]
    );
    assert_eq!(row[8..], ["3", "-"]);

    host_stop(&m, running);
}

#[test]
fn send_refuses_an_unknown_target_or_name_and_a_bad_payload_with_a_clear_error() {
    let dir = TestDir::new("control_send_refused");
    let m = agents(&dir, 10, "");
    let running = Running::start(&m);
    wait_status(&m, all_serving);
    for (args, want) in [
        (
            &["nobody", "PING"][..],
            "cannot send `PING` to `nobody`: unknown target: no service `nobody` accepts messages",
        ),
        (
            &["plain", "PING"][..],
            "unknown target: no service `plain` accepts messages",
        ),
        (
            &["agent", "BOGUS"][..],
            "unknown message name: Agents/agent accepts no message `BOGUS` (it accepts: PING, DUMP)",
        ),
        (
            &["echo", "ECHO", "--payload", "7"][..],
            "invalid payload: Agents/echo takes a payload of type string with `ECHO`, not integer",
        ),
        (
            &["echo", "ECHO", "--payload", "{oops"][..],
            "error: --payload is not valid JSON",
        ),
    ] {
        let out = send(&m, args);
        assert_eq!(out.code(), 1, "{args:?}: {}", out.stdout);
        assert!(out.stderr.contains(want), "{args:?}: {}", out.stderr);
        assert_eq!(out.stdout, "", "{args:?}");
    }
    // Nothing refused reached a handler.
    let s = status_json(&m).expect("the host answers");
    assert_eq!(unit(&s, "echo")["mailbox"]["handled"], 0);
    assert_eq!(unit(&s, "agent")["mailbox"]["handled"], 0);
    host_stop(&m, running);
}

#[test]
fn send_to_a_mailbox_that_stays_full_fails_with_mailbox_full_and_status_shows_its_depth() {
    let dir = TestDir::new("control_send_full");
    let m = agents(&dir, 1, "");
    let running = Running::start(&m);
    wait_status(&m, all_serving);
    let out = send(&m, &["echo", "HANG", "--payload", "30000"]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    // The handler took it out, and hangs.
    wait_status(&m, |s| unit(s, "echo")["mailbox"]["depth"] == 0);
    let out = send(&m, &["echo", "ECHO", "--payload", r#""a""#]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let out = send(
        &m,
        &["echo", "ECHO", "--payload", r#""b""#, "--timeout", "100ms"],
    );
    assert_eq!(out.code(), 1);
    assert!(
        out.stderr
            .contains("mailbox full: the mailbox of Agents/echo stayed full (1 messages)"),
        "{}",
        out.stderr
    );
    let s = status_json(&m).expect("the host answers");
    assert_eq!(unit(&s, "echo")["mailbox"]["depth"], 1);
    assert_eq!(unit(&s, "echo")["mailbox"]["high_water"], 1);
    assert_eq!(unit(&s, "echo")["mailbox"]["handled"], 0);
    let row = text_row(&m, "echo");
    assert_eq!(row[6..], ["1", "1", "0", "-"]);
    stop_with_echo_hung(&m, running);
}

#[test]
fn status_answers_while_a_request_to_a_hanging_handler_is_in_flight() {
    let dir = TestDir::new("control_concurrent");
    let m = agents(&dir, 10, "");
    let running = Running::start(&m);
    wait_status(&m, all_serving);
    // A request whose handler sleeps 30 s: its connection stays busy.
    let mut request = spawn(&[
        "send",
        &arg(&m),
        "echo",
        "HANG",
        "--payload",
        "30000",
        "--request",
        "--timeout",
        "40s",
    ]);
    // Once the HANG is queued (the request is being served), status still
    // answers, and the request is still waiting for its reply.
    let s = wait_status(&m, |s| unit(s, "echo")["mailbox"]["high_water"] == 1);
    assert_eq!(unit(&s, "echo")["mailbox"]["handled"], 0);
    assert!(
        request.try_wait().expect("the sender").is_none(),
        "status answered while the request was in flight"
    );
    assert_eq!(text_row(&m, "agent")[2], "serving");
    stop_with_echo_hung(&m, running);
    let _ = request.kill();
    let _ = request.wait();
}

#[test]
fn a_service_blocked_in_a_request_is_released_when_its_context_stops() {
    let dir = TestDir::new("control_request_released");
    // The script's request waits behind a hanging message, far longer than
    // any shutdown budget.
    let m = agents(
        &dir,
        10,
        &script_context(
            r#"  { kind = "send", to = "echo", name = "HANG", payload = 30000 },
  { kind = "request", to = "echo", name = "ECHO", payload = "x", timeout_ms = 60000 },"#,
        ),
    );
    let running = Running::start(&m);
    // The HANG is being handled and the request is queued behind it (the
    // script sends the HANG and requests right after).
    wait_status(&m, |s| unit(s, "echo")["mailbox"]["depth"] == 1);
    let out = run(&["stop", &arg(&m)]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let out = running.finish();
    let script = out.messages_of("script");
    assert_eq!(script.len(), 2, "{script:#?}");
    assert_eq!(script[0], "sent HANG");
    assert!(
        script[1].starts_with("ECHO failed: PeerGone: the requester's context Main is stopping"),
        "{script:#?}"
    );
    // Only echo, whose handler hangs, was abandoned; not the script.
    let abandoned: Vec<String> = out
        .logs()
        .iter()
        .filter(|l| l["message"].as_str().is_some_and(|m| m.contains("abandon")))
        .map(|l| format!("{}/{}", l["context"], l["service"]))
        .collect();
    assert!(
        abandoned.iter().all(|a| !a.contains("script")),
        "{abandoned:#?}"
    );
}

/// `otools stop` while echo's handler hangs: the hung handler keeps echo
/// from finalizing in time, so the host exits with code 3.
fn stop_with_echo_hung(manifest: &Path, running: Running) {
    let out = run(&["stop", &arg(manifest)]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(running.finish().code(), 3);
}

/// `otools stop`, then the host's exit code 0.
pub fn host_stop(manifest: &Path, running: Running) {
    let out = run(&["stop", &arg(manifest)]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let out = running.finish();
    assert_eq!(out.code(), 0, "{}", out.stderr);
}
