use crate::util::{Running, TestDir, run_manifest};

fn position(messages: &[String], pred: impl Fn(&str) -> bool) -> Vec<usize> {
    messages
        .iter()
        .enumerate()
        .filter(|(_, m)| pred(m))
        .map(|(i, _)| i)
        .collect()
}

#[test]
fn setup_of_every_instance_runs_before_any_main_across_contexts() {
    let dir = TestDir::new("setup_first");
    let mut body = String::new();
    for c in ["A", "B", "C"] {
        body.push_str(&format!(
            "[[context]]\nname = \"{c}\"\n\
             [[context.service]]\nname = \"{c}1\"\nplugin = \"probe\"\nexport = \"Lifecycle\"\nconfig = {{ log_main = true }}\n\
             [[context.service]]\nname = \"{c}2\"\nplugin = \"probe\"\nexport = \"Lifecycle\"\nconfig = {{ log_main = true }}\n\
             [[context.service]]\nname = \"stop\"\nplugin = \"hello\"\nexport = \"StopAfter\"\nconfig = {{ count = 2 }}\n"
        ));
    }
    let out = run_manifest(&dir.manifest("m.toml", &body), &[]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let m = out.messages();
    let setups = position(&m, |s| s.starts_with("setup "));
    let mains = position(&m, |s| {
        s.starts_with("main ") && !s.starts_with("main call")
    });
    assert_eq!(setups.len(), 6, "{m:#?}");
    assert_eq!(mains.len(), 6, "{m:#?}");
    assert!(
        setups.iter().max() < mains.iter().min(),
        "a main ran before every setup returned: {m:#?}"
    );
}

#[test]
fn main_never_runs_before_its_own_setup() {
    let dir = TestDir::new("setup_gate");
    let body = r#"
[[dataframe]]
name = "d"
[[context]]
name = "C"
dataframes = ["d"]
[[context.service]]
name = "gate"
plugin = "probe"
export = "SetupGate"
config = { dataframe = "d" }
[[context.service]]
name = "stop"
plugin = "hello"
export = "StopAfter"
config = { count = 4 }
[[context.service]]
name = "report"
plugin = "probe"
export = "Report"
config = { dataframe = "d", keys = ["mains"] }
"#;
    let out = run_manifest(&dir.manifest("m.toml", body), &[]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(
        out.report("d", "mains").as_deref(),
        Some("4"),
        "{}",
        out.stderr
    );
}

#[test]
fn finalize_runs_exactly_once_per_instance_in_reverse_manifest_order() {
    let dir = TestDir::new("finalize_order");
    let body = r#"
[[context]]
name = "C"
[[context.service]]
name = "a"
plugin = "probe"
export = "Lifecycle"
[[context.trigger]]
name = "t"
condition = [ { plugin = "probe", export = "Constant", config = { value = false } } ]
service = [ { name = "b", plugin = "probe", export = "Lifecycle" } ]
[[context.service]]
name = "c"
plugin = "probe"
export = "Lifecycle"
[[context.service]]
name = "stop"
plugin = "hello"
export = "StopAfter"
config = { count = 2 }
"#;
    let out = run_manifest(&dir.manifest("m.toml", body), &[]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let m = out.messages();
    let setups: Vec<&String> = m.iter().filter(|s| s.starts_with("setup ")).collect();
    let finals: Vec<&String> = m.iter().filter(|s| s.starts_with("finalize ")).collect();
    assert_eq!(setups, ["setup a", "setup b", "setup c"]);
    assert_eq!(finals, ["finalize c", "finalize b", "finalize a"]);
}

#[test]
fn a_deactivated_service_is_finalized_and_the_others_go_on() {
    let dir = TestDir::new("deactivate");
    let body = r#"
[[dataframe]]
name = "d"
[[context]]
name = "C"
dataframes = ["d"]
[[context.service]]
name = "quitter"
plugin = "control"
export = "Deactivate"
config = { after = 2 }
[[context.service]]
name = "rec"
plugin = "probe"
export = "Record"
config = { dataframe = "d", key = "iterations" }
[[context.service]]
name = "stop"
plugin = "hello"
export = "StopAfter"
config = { count = 5 }
[[context.service]]
name = "report"
plugin = "probe"
export = "Report"
config = { dataframe = "d", keys = ["iterations"] }
"#;
    let out = run_manifest(&dir.manifest("m.toml", body), &["--log-level", "debug"]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let logs = out.logs();
    let deactivating = logs
        .iter()
        .filter(|l| l["message"] == "deactivating quitter")
        .count();
    assert_eq!(deactivating, 1);
    let deactivated = logs
        .iter()
        .position(|l| l["message"] == "deactivated" && l["service"] == "quitter")
        .expect("the host reports the deactivation");
    let stop = logs
        .iter()
        .position(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("terminating context"))
        })
        .expect("stop");
    assert!(
        deactivated < stop,
        "the deactivation was noticed only at the end"
    );
    let calls: Vec<String> = out
        .messages_of("quitter")
        .into_iter()
        .filter(|m| m.starts_with("main call"))
        .collect();
    assert_eq!(
        calls,
        ["main call 1", "main call 2"],
        "main was called after deactivation"
    );
    assert_eq!(out.report("d", "iterations").as_deref(), Some("5"));
}

#[test]
fn fatal_terminates_its_context_and_the_exit_code_says_so() {
    let dir = TestDir::new("fatal");
    let body = r#"
[[context]]
name = "Doomed"
[[context.service]]
name = "f"
plugin = "control"
export = "Fatal"
config = { after = 2, message = "the sky fell" }
[[context]]
name = "Healthy"
[[context.service]]
name = "stop"
plugin = "hello"
export = "StopAfter"
config = { count = 3 }
"#;
    let out = run_manifest(&dir.manifest("m.toml", body), &[]);
    assert_eq!(out.code(), 1, "{}", out.stderr);
    let logs = out.logs();
    assert!(logs.iter().any(|l| l["level"] == "FATAL"
        && l["message"] == "the sky fell"
        && l["context"] == "Doomed"));
    assert!(
        out.messages_of("stop")
            .iter()
            .any(|m| m.contains("terminating context Healthy"))
    );
}

fn looping_manifest(dir: &TestDir, shutdown_timeout: &str, loop_ms: u64) -> std::path::PathBuf {
    dir.manifest(
        "m.toml",
        &format!(
            r#"shutdown_timeout = "{shutdown_timeout}"
[[context]]
name = "Busy"
[[context.service]]
name = "greeter"
plugin = "hello"
export = "Greeter"
config = {{ loop_interval_ms = {loop_ms} }}
[[context.service]]
name = "life"
plugin = "probe"
export = "Lifecycle"
"#
        ),
    )
}

#[test]
fn sigterm_stops_every_context_and_finalizes_each_instance_once() {
    let dir = TestDir::new("sigterm");
    let mut host = Running::start(&looping_manifest(&dir, "30s", 5));
    host.wait_for("from the loop (call 3)");
    host.signal("TERM");
    let out = host.finish();
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(
        out.messages_of("life")
            .iter()
            .filter(|m| *m == "finalize life")
            .count(),
        1
    );
    assert!(
        out.messages()
            .iter()
            .any(|m| m.starts_with("received SIGTERM"))
    );
}

#[test]
fn sigint_is_handled_like_sigterm() {
    let dir = TestDir::new("sigint");
    let mut host = Running::start(&looping_manifest(&dir, "30s", 5));
    host.wait_for("from the loop (call 2)");
    host.signal("INT");
    let out = host.finish();
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert!(out.messages_of("life").iter().any(|m| m == "finalize life"));
}

#[test]
fn a_second_signal_exits_at_once_with_a_distinct_code() {
    let dir = TestDir::new("second_signal");
    // The loop sleeps for ten minutes, so the first signal cannot finish the shutdown.
    let mut host = Running::start(&looping_manifest(&dir, "10m", 600_000));
    host.wait_for("from the loop (call 1)");
    host.signal("TERM");
    host.wait_for("received SIGTERM");
    host.signal("TERM");
    let out = host.finish();
    assert_eq!(out.code(), 130, "{}", out.stderr);
}

#[test]
fn shutdown_overrunning_shutdown_timeout_names_the_context_and_exits_3() {
    let dir = TestDir::new("shutdown_timeout");
    let mut host = Running::start(&looping_manifest(&dir, "100ms", 600_000));
    host.wait_for("from the loop (call 1)");
    host.signal("TERM");
    let out = host.finish();
    assert_eq!(out.code(), 3, "{}", out.stderr);
    assert_abandoned(&out, "Busy");
}

fn assert_abandoned(out: &crate::util::Output, context: &str) {
    assert!(
        out.logs().iter().any(|l| l["context"] == context
            && l["message"]
                .as_str()
                .is_some_and(|m| m.contains("did not return within") && m.contains("abandoned"))),
        "{}",
        out.stderr
    );
}

#[test]
fn a_context_ending_by_itself_is_also_bounded_by_shutdown_timeout() {
    let dir = TestDir::new("natural_end_timeout");
    // The trigger ends the context once the sleeper's first loop call has
    // started; that call sleeps for ten minutes, so stopping overruns.
    let m = dir.manifest(
        "m.toml",
        r#"shutdown_timeout = "100ms"
[[dataframe]]
name = "d"
[[context]]
name = "Slow"
dataframes = ["d"]
[[context.service]]
name = "sleeper"
plugin = "probe"
export = "Sleeper"
config = { dataframe = "d", sleep_ms = 600000 }
[[context.trigger]]
name = "started"
condition = [ { plugin = "counter", export = "AtLeast", config = { dataframe = "d", key = "loops", min = 1 } } ]
service = [ { plugin = "control", export = "Shutdown" } ]
"#,
    );
    let out = crate::util::run_manifest(&m, &[]);
    assert_eq!(out.code(), 3, "{}", out.stderr);
    assert_abandoned(&out, "Slow");
}

#[test]
fn each_context_logs_at_its_own_level_and_log_level_overrides_them() {
    let dir = TestDir::new("levels");
    let body = r#"log_level = "info"
[[context]]
name = "Quiet"
log_level = "warning"
[[context.service]]
name = "q"
plugin = "hello"
export = "StopAfter"
config = { count = 2 }
[[context]]
name = "Chatty"
log_level = "debug"
dataframes = ["d"]
[[context.service]]
name = "inc"
plugin = "counter"
export = "Increment"
config = { dataframe = "d", key = "n" }
[[context.service]]
name = "c"
plugin = "hello"
export = "StopAfter"
config = { count = 2 }
[[dataframe]]
name = "d"
"#;
    let m = dir.manifest("m.toml", body);
    let out = run_manifest(&m, &[]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    // Quiet drops its info line; Chatty keeps its debug lines.
    assert!(out.messages_of("q").is_empty(), "{}", out.stderr);
    assert_eq!(out.messages_of("inc"), ["d.n = 1", "d.n = 2"]);
    let levels: Vec<String> = out
        .logs()
        .iter()
        .filter(|l| l["service"] == "inc")
        .map(|l| l["level"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(levels, ["DEBUG", "DEBUG"]);

    let out = run_manifest(&m, &["--log-level", "error"]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert!(
        out.messages_of("inc").is_empty() && out.messages_of("c").is_empty(),
        "{}",
        out.stderr
    );

    let out = run_manifest(&m, &["--log-level", "warning,plugin=info"]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(
        out.messages_of("q"),
        ["main call 2: terminating context Quiet"]
    );
    assert!(out.messages_of("inc").is_empty(), "{}", out.stderr);
}

#[test]
fn text_logs_name_the_level_context_and_service() {
    let dir = TestDir::new("text_logs");
    let m = dir.manifest(
        "m.toml",
        "[[context]]\nname = \"Main\"\n[[context.service]]\nname = \"stop\"\nplugin = \"hello\"\nexport = \"StopAfter\"\nconfig = { count = 1 }\n",
    );
    let path = m.to_string_lossy().into_owned();
    let out = crate::util::run(&["run", &path]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("terminating context Main"))
        .unwrap_or_else(|| panic!("{}", out.stderr));
    assert!(
        line.contains(" INFO    Main/stop: main call 1: terminating context Main"),
        "{line}"
    );
    assert!(
        !line.contains('\x1b'),
        "no colours when stderr is not a terminal: {line:?}"
    );
}

/// Sends `sig` to process `pid` straight from the test.
fn send(pid: u32, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid).expect("pid")).expect("pid");
    rustix::process::kill_process(pid, sig).expect("send a signal to the host");
}

/// The folder of the private copies of plugin libraries that process `pid`
/// has mapped, once it has mapped one.
fn mapped_private_copies(pid: u32) -> Option<std::path::PathBuf> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let tmp = std::env::temp_dir();
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(std::path::Path::new)
        .find(|p| p.starts_with(&tmp) && p.to_string_lossy().contains(".so"))
        .and_then(std::path::Path::parent)
        .map(std::path::Path::to_path_buf)
}

/// Is `sig` pending (sent, not yet delivered) for process `pid`?
fn pending(pid: u32, sig: rustix::process::Signal) -> bool {
    let bit = 1u64 << (sig.as_raw() - 1);
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.strip_prefix("ShdPnd:")
                .or_else(|| l.strip_prefix("SigPnd:"))
        })
        .filter_map(|m| u64::from_str_radix(m.trim(), 16).ok())
        .any(|m| m & bit != 0)
}

/// One context using six plugin libraries, each loaded (and privately
/// copied) before anything runs.
const SIX_LIBRARIES: &str = r#"
[[dataframe]]
name = "d"
[[context]]
name = "A"
dataframes = ["d"]
period = "20ms"
[[context.service]]
name = "greeter"
plugin = "hello"
export = "Greeter"
config = { loop_interval_ms = 20 }
[[context.service]]
name = "life"
plugin = "probe"
export = "Lifecycle"
[[context.service]]
name = "faulty"
plugin = "faulty"
export = "Faulty"
[[context.service]]
name = "inc"
plugin = "counter"
export = "Increment"
config = { dataframe = "d", key = "n" }
[[context.service]]
name = "versioned"
plugin = "versioned"
export = "Counter"
config = { dataframe = "d" }
[[context.service]]
name = "quit"
plugin = "control"
export = "Deactivate"
config = { after = 1000000 }
"#;

#[test]
fn a_sigterm_or_sigint_while_plugins_load_stops_cleanly_with_code_0_and_removes_the_private_copies()
{
    let dir = TestDir::new("sigterm_while_loading");
    let m = dir.manifest("m.toml", SIX_LIBRARIES);
    let m = m.to_string_lossy().into_owned();
    // Rounds alternate SIGTERM and SIGINT until each has landed while the
    // plugins were loading (the host says so); a signal that lands just
    // after loading must stop cleanly too, but proves less.
    let mut during_loading = [0_usize; 2];
    let signals = [
        (rustix::process::Signal::TERM, "SIGTERM"),
        (rustix::process::Signal::INT, "SIGINT"),
    ];
    for round in 0..20 {
        if during_loading.iter().all(|n| *n > 0) {
            break;
        }
        let (signal, name) = signals[round % 2];
        let mut child = crate::util::spawn(&["run", &m, "--log-format", "json"]);
        let pid = child.id();
        // The first private copy is mapped: the plugins are loading.
        let deadline = std::time::Instant::now() + crate::util::DEADLINE;
        let copies = loop {
            if let Some(d) = mapped_private_copies(pid) {
                break d;
            }
            let exited = child.try_wait().expect("wait for otools");
            assert!(
                exited.is_none() && std::time::Instant::now() < deadline,
                "round {round}: no plugin was ever mapped ({exited:?})"
            );
            std::thread::sleep(std::time::Duration::from_micros(200));
        };
        send(pid, signal);
        let out = crate::util::wait(child);
        assert_eq!(
            out.status.code(),
            Some(0),
            "round {round} ({name}): not a clean stop: {out:?}"
        );
        assert!(
            !copies.exists(),
            "round {round} ({name}): {} is left behind",
            copies.display()
        );
        if out
            .stderr
            .contains(&format!("received {name} while loading the plugins"))
        {
            during_loading[round % 2] += 1;
        }
    }
    assert!(
        during_loading.iter().all(|n| *n > 0),
        "in 20 rounds, SIGTERM landed while loading {} time(s) and SIGINT {} time(s)",
        during_loading[0],
        during_loading[1]
    );
}

#[test]
fn sighup_finalizes_every_service_of_every_context_and_exits_0() {
    let dir = TestDir::new("sighup");
    let m = dir.manifest(
        "m.toml",
        r#"
[[context]]
name = "A"
[[context.service]]
name = "greeter"
plugin = "hello"
export = "Greeter"
config = { loop_interval_ms = 5 }
[[context.service]]
name = "lifeA"
plugin = "probe"
export = "Lifecycle"
[[context]]
name = "B"
[[context.service]]
name = "lifeB"
plugin = "probe"
export = "Lifecycle"
"#,
    );
    let mut host = Running::start(&m);
    host.wait_for("from the loop (call 2)");
    host.signal("HUP");
    let out = host.finish();
    assert_eq!(out.code(), 0, "{}", out.stderr);
    for life in ["lifeA", "lifeB"] {
        let finals = out
            .messages_of(life)
            .iter()
            .filter(|m| **m == format!("finalize {life}"))
            .count();
        assert_eq!(finals, 1, "{life}: {}", out.stderr);
    }
    assert!(
        out.messages()
            .iter()
            .any(|m| m.starts_with("received SIGHUP")),
        "{}",
        out.stderr
    );
}

#[test]
fn a_second_sigterm_right_after_the_first_exits_at_once_with_130() {
    let dir = TestDir::new("two_sigterms");
    // Finalizing runs in reverse order: `slow` finalizes first and takes
    // three seconds, then `life` would log its finalize.
    let m = dir.manifest(
        "m.toml",
        r#"shutdown_timeout = "1m"
[[context]]
name = "C"
[[context.service]]
name = "life"
plugin = "probe"
export = "Lifecycle"
[[context.service]]
name = "slow"
plugin = "faulty"
export = "Faulty"
config = { hang_in = ["finalize"], hang_ms = 3000 }
"#,
    );
    for round in 0..3 {
        let mut host = Running::start(&m);
        host.wait_for("all contexts ready");
        let pid = host.pid();
        let private = mapped_private_copies(pid).expect("the host maps its private copies");
        send(pid, rustix::process::Signal::TERM);
        // The second goes as soon as the kernel has delivered the first (the
        // kernel itself merges a signal sent while the same one is pending).
        let deadline = std::time::Instant::now() + crate::util::DEADLINE;
        while pending(pid, rustix::process::Signal::TERM) {
            assert!(
                std::time::Instant::now() < deadline,
                "SIGTERM never delivered"
            );
        }
        send(pid, rustix::process::Signal::TERM);
        let out = host.finish();
        assert_eq!(
            out.status.code(),
            Some(130),
            "round {round}: {}",
            out.stderr
        );
        assert!(
            !out.messages_of("life").iter().any(|m| m == "finalize life"),
            "round {round}: the shutdown ran to its end: {}",
            out.stderr
        );
        // `exit` runs no destructor: the forced exit removes it itself.
        assert!(
            !private.exists(),
            "round {round}: the forced exit left {}",
            private.display()
        );
    }
}

#[test]
fn a_host_started_with_sighup_ignored_keeps_ignoring_it() {
    let dir = TestDir::new("nohup");
    let m = looping_manifest(&dir, "30s", 5);
    // As `nohup` does: SIGHUP ignored, which exec keeps.
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg("trap '' HUP; exec \"$0\" \"$@\"")
        .arg(crate::util::otools())
        .args(["run", &m.to_string_lossy(), "--log-format", "json"])
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start otools with SIGHUP ignored");
    let pid = child.id();
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    loop {
        let line = rx
            .recv_timeout(crate::util::DEADLINE)
            .unwrap_or_else(|e| panic!("{e}: {}", seen.join("\n")));
        let ready = line.contains("from the loop (call 2)");
        seen.push(line);
        if ready {
            break;
        }
    }
    // Were SIGHUP handled, it would be the first signal and SIGTERM the
    // second (exit 130).
    send(pid, rustix::process::Signal::HUP);
    send(pid, rustix::process::Signal::TERM);
    loop {
        match rx.recv_timeout(crate::util::DEADLINE) {
            Ok(line) => seen.push(line),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!("otools did not exit: {}", seen.join("\n"));
            }
        }
    }
    let status = child.wait().expect("wait for otools");
    let text = seen.join("\n");
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(
        text.contains("received SIGTERM: stopping every context"),
        "{text}"
    );
    assert!(!text.contains("SIGHUP"), "{text}");
    assert!(text.contains("finalize life"), "{text}");
}
