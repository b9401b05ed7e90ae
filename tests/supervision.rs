//! Supervision through the real binary: hung and failed services are
//! replaced in place under their restart policy, stale instances are fenced,
//! give-up escalates, strategies restart the right siblings, and the host
//! talks to systemd. Every claim is checked on the `--events` journal.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::util::{Running, TestDir, events_of, journal, run_manifest, wait_for_events};

fn position(events: &[Value], pred: impl Fn(&Value) -> bool) -> Option<usize> {
    events.iter().position(pred)
}

fn is(e: &Value, event: &str, service: &str, generation: u64) -> bool {
    e["event"] == event && e["service"] == service && e["generation"] == generation
}

fn events_arg(dir: &TestDir) -> (PathBuf, String) {
    let p = dir.path.join("events.jsonl");
    let s = p.to_string_lossy().into_owned();
    (p, s)
}

#[test]
fn a_hung_service_is_replaced_in_place_50_times_while_its_neighbour_keeps_iterating() {
    let dir = TestDir::new("hung_50");
    let m = dir.manifest(
        "m.toml",
        r#"
[[dataframe]]
name = "d"
[[context]]
name = "C"
dataframes = ["d"]
[[context.service]]
name = "hang"
plugin = "faulty"
export = "Faulty"
config = { hang_in = ["main"], after = 1 }
watchdog = "30ms"
max_restarts = 1000
restart_window = "10m"
restart_delay = "1ms"
max_restart_delay = "1ms"
[[context.service]]
name = "healthy"
plugin = "probe"
export = "Record"
config = { dataframe = "d", key = "healthy" }
[[context.service]]
name = "report"
plugin = "probe"
export = "Report"
config = { dataframe = "d", keys = ["healthy"] }
"#,
    );
    let (events, arg) = events_arg(&dir);
    let host = Running::start_with(&m, &["--events", &arg]);
    wait_for_events(&events, 1, |e| is(e, "started", "hang", 51));
    host.signal("TERM");
    let out = host.finish();
    let j = journal(&events);
    // Every generation hangs on its second call, so the one serving at
    // SIGTERM may itself be hung: it cannot be finalized, and the exit code
    // says so (3) exactly when the journal shows it abandoned while stopping.
    let last_hung = j.iter().rposition(|e| e["event"] == "hung").expect("hangs");
    let generation = &j[last_hung]["generation"];
    let restarted = j[last_hung..]
        .iter()
        .any(|e| e["event"] == "restarting" && e["generation"] == *generation);
    assert_eq!(out.code(), if restarted { 0 } else { 3 }, "{}", out.stderr);
    for n in 1..=50u64 {
        let hung =
            position(&j, |e| is(e, "hung", "hang", n)).unwrap_or_else(|| panic!("no hung({n})"));
        let abandoned = position(&j, |e| is(e, "abandoned", "hang", n))
            .unwrap_or_else(|| panic!("no abandoned({n})"));
        let started = position(&j, |e| is(e, "started", "hang", n + 1))
            .unwrap_or_else(|| panic!("no started({})", n + 1));
        assert!(
            hung < abandoned && abandoned < started,
            "order for generation {n}"
        );
        assert_eq!(j[hung]["entry"], "main");
    }
    // The neighbour was called in every generation's iterations.
    let healthy: u64 = out
        .report("d", "healthy")
        .and_then(|v| v.parse().ok())
        .expect("report");
    assert!(
        healthy >= 50,
        "healthy neighbour iterated only {healthy} times"
    );
}

#[test]
fn an_abandoned_instance_that_wakes_up_cannot_write() {
    let dir = TestDir::new("fenced");
    let m = dir.manifest(
        "m.toml",
        r#"
[[dataframe]]
name = "d"
[[context]]
name = "C"
period = "1ms"
dataframes = ["d"]
[[context.service]]
name = "sleepy"
plugin = "faulty"
export = "Faulty"
config = { hang_in = ["main"], hang_ms = 1000, once = true, write_after_hang = { dataframe = "d", key = "marker" } }
watchdog = "50ms"
restart_delay = "1ms"
[[context.service]]
name = "report"
plugin = "probe"
export = "Report"
config = { dataframe = "d", keys = ["marker"] }
"#,
    );
    let (events, arg) = events_arg(&dir);
    let host = Running::start_with(&m, &["--events", &arg]);
    // Both the replacement and the stale instance's wake-up, in either order.
    wait_for_events(&events, 2, |e| {
        (e["event"] == "fenced_call" && e["service"] == "sleepy") || is(e, "started", "sleepy", 2)
    });
    host.signal("TERM");
    let out = host.finish();
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let j = journal(&events);
    // On waking, its first callback (looking the dataframe up, before the
    // write) is refused, and it makes no other: exactly one refusal, the
    // first of generation 1.
    let fenced = events_of(&j, "fenced_call", "sleepy");
    assert_eq!(fenced.len(), 1, "{fenced:#?}");
    assert_eq!(
        (
            &fenced[0]["generation"],
            &fenced[0]["call"],
            &fenced[0]["fenced_calls"]
        ),
        (&Value::from(1), &Value::from("dataframe"), &Value::from(1)),
        "only the stale generation is refused, once"
    );
    // The journal's order: declared hung, abandoned, replaced, and only then
    // the stale instance woke and was refused.
    let at = |event: &str, generation: u64| {
        position(&j, |e| is(e, event, "sleepy", generation))
            .unwrap_or_else(|| panic!("no {event}({generation}) in {j:#?}"))
    };
    let woke = position(&j, |e| is(e, "fenced_call", "sleepy", 1)).unwrap();
    assert!(
        at("hung", 1) < at("abandoned", 1) && at("abandoned", 1) < at("started", 2),
        "hung, abandoned, then replaced: {j:#?}"
    );
    assert!(at("started", 2) < woke, "replaced before it woke: {j:#?}");
    assert_eq!(
        out.report("d", "marker").as_deref(),
        Some("absent"),
        "the stale write became visible"
    );
}

fn crash_loop(dir: &TestDir, action: &str, extra_context: &str) -> PathBuf {
    dir.manifest(
        "m.toml",
        &format!(
            r#"
[[context]]
name = "C"
[[context.service]]
name = "crashy"
plugin = "faulty"
export = "Faulty"
config = {{ error_in = ["main"] }}
max_restarts = 3
restart_window = "10m"
restart_delay = "10ms"
max_restart_delay = "40ms"
on_give_up = "{action}"
{extra_context}
"#
        ),
    )
}

fn check_escalation(j: &[Value], action: &str) {
    assert_eq!(
        events_of(j, "failed", "crashy").len(),
        4,
        "the first run and three restarts"
    );
    let restarting = events_of(j, "restarting", "crashy");
    assert_eq!(restarting.len(), 3, "exactly max_restarts restarts");
    let delays: Vec<u64> = restarting
        .iter()
        .map(|e| e["delay_ms"].as_u64().unwrap())
        .collect();
    assert_eq!(
        delays,
        [10, 20, 40],
        "min(restart_delay * 2^(k-1), max_restart_delay)"
    );
    let gave_up = events_of(j, "gave_up", "crashy");
    assert_eq!(gave_up.len(), 1);
    assert_eq!(gave_up[0]["action"], action);
    assert_eq!(gave_up[0]["generation"], 4);
}

#[test]
fn a_crash_loop_backs_off_then_gives_up_with_stop_service() {
    let dir = TestDir::new("give_up_service");
    let m = crash_loop(
        &dir,
        "stop_service",
        "[[context.service]]\nname = \"healthy\"\nplugin = \"hello\"\nexport = \"Greeter\"\nconfig = { loop_interval_ms = 5 }\n",
    );
    let (events, arg) = events_arg(&dir);
    let mut host = Running::start_with(&m, &["--events", &arg]);
    wait_for_events(&events, 1, |e| e["event"] == "gave_up");
    // The rest of the context goes on.
    host.wait_for("from main (call");
    host.signal("TERM");
    let out = host.finish();
    assert_eq!(
        out.code(),
        1,
        "giving up is a failure of the deployment: {}",
        out.stderr
    );
    check_escalation(&journal(&events), "stop_service");
}

#[test]
fn a_crash_loop_gives_up_with_stop_context() {
    let dir = TestDir::new("give_up_context");
    let m = crash_loop(&dir, "stop_context", "");
    let (events, arg) = events_arg(&dir);
    let out = run_manifest(&m, &["--events", &arg]);
    assert_eq!(out.code(), 1, "{}", out.stderr);
    let j = journal(&events);
    check_escalation(&j, "stop_context");
    assert!(
        j.iter()
            .any(|e| e["event"] == "context_ended" && e["context"] == "C")
    );
}

#[test]
fn a_crash_loop_gives_up_with_exit_host_and_exit_code_75() {
    let dir = TestDir::new("give_up_host");
    let m = crash_loop(
        &dir,
        "exit_host",
        "[[context]]\nname = \"Other\"\n[[context.service]]\nname = \"life\"\nplugin = \"probe\"\nexport = \"Lifecycle\"\n[[context.service]]\nname = \"g\"\nplugin = \"hello\"\nexport = \"Greeter\"\nconfig = { loop_interval_ms = 5 }\n",
    );
    let (events, arg) = events_arg(&dir);
    let out = run_manifest(&m, &["--events", &arg]);
    assert_eq!(out.code(), 75, "{}", out.stderr);
    let j = journal(&events);
    check_escalation(&j, "exit_host");
    // The other context was stopped cleanly first.
    assert_eq!(events_of(&j, "finalized", "life").len(), 1);
}

#[derive(Clone, Copy, Debug)]
enum ExitKind {
    Failure,
    Normal,
}

/// Runs services a, b, c (manifest order) where b exits once; returns the journal.
fn strategy_case(strategy: &str, restart: &str, kind: ExitKind) -> Vec<Value> {
    let dir = TestDir::new(&format!("strategy_{strategy}_{restart}_{kind:?}"));
    let fault = match kind {
        ExitKind::Failure => "error_in",
        ExitKind::Normal => "deactivate_in",
    };
    let m = dir.manifest(
        "m.toml",
        &format!(
            r#"
[[context]]
name = "C"
period = "1ms"
strategy = "{strategy}"
[[context.service]]
name = "a"
plugin = "probe"
export = "Lifecycle"
restart_delay = "1ms"
[[context.service]]
name = "b"
plugin = "faulty"
export = "Faulty"
config = {{ {fault} = ["main"], after = 1, once = true }}
restart = "{restart}"
restart_delay = "1ms"
[[context.service]]
name = "c"
plugin = "probe"
export = "Lifecycle"
restart_delay = "1ms"
"#
        ),
    );
    let (events, arg) = events_arg(&dir);
    let host = Running::start_with(&m, &["--events", &arg]);
    let restarts = matches!(
        (restart, kind),
        ("always", _) | ("on-failure", ExitKind::Failure)
    );
    if restarts {
        // The last member of the group to start again.
        let last = if strategy == "one_for_one" { "b" } else { "c" };
        wait_for_events(&events, 1, |e| is(e, "started", last, 2));
    } else {
        // b was stopped for good: no restart was decided.
        wait_for_events(&events, 1, |e| is(e, "finalized", "b", 1));
    }
    host.signal("TERM");
    let out = host.finish();
    // README, exit codes: 1 when a service ended in failure (here: failed
    // with `restart = "never"`); a restart or a deactivation is no failure.
    let failed_for_good = restart == "never" && matches!(kind, ExitKind::Failure);
    assert_eq!(
        out.code(),
        if failed_for_good { 1 } else { 0 },
        "{strategy} x {restart} x {kind:?}: {}",
        out.stderr
    );
    journal(&events)
}

#[test]
fn restart_strategies_and_types_restart_exactly_the_expected_generations() {
    for strategy in ["one_for_one", "one_for_all", "rest_for_one"] {
        for restart in ["always", "on-failure", "never"] {
            for kind in [ExitKind::Failure, ExitKind::Normal] {
                let j = strategy_case(strategy, restart, kind);
                let case = format!("{strategy} x {restart} x {kind:?}");
                let b_restarts = matches!(
                    (restart, kind),
                    ("always", _) | ("on-failure", ExitKind::Failure)
                );
                let group: &[&str] = match (b_restarts, strategy) {
                    (false, _) => &[],
                    (true, "one_for_one") => &["b"],
                    (true, "one_for_all") => &["a", "b", "c"],
                    (true, _) => &["b", "c"],
                };
                for s in ["a", "b", "c"] {
                    let second = j.iter().any(|e| is(e, "started", s, 2));
                    assert_eq!(
                        second,
                        group.contains(&s),
                        "{case}: did {s} get a new generation?"
                    );
                }
                // Stopped last-started first, restarted in start order.
                let finalized: Vec<&str> = j
                    .iter()
                    .filter(|e| {
                        e["event"] == "finalized"
                            && e["generation"] == 1
                            && group.contains(&e["service"].as_str().unwrap())
                    })
                    .map(|e| e["service"].as_str().unwrap())
                    .collect();
                let mut reversed = group.to_vec();
                reversed.reverse();
                assert_eq!(finalized, reversed, "{case}: stop order");
                let restarted: Vec<&str> = j
                    .iter()
                    .filter(|e| e["event"] == "started" && e["generation"] == 2)
                    .map(|e| e["service"].as_str().unwrap())
                    .collect();
                assert_eq!(restarted, group, "{case}: restart order");
            }
        }
    }
}

#[test]
fn a_setup_that_hangs_past_startup_timeout_is_a_startup_failure_and_is_retried() {
    let dir = TestDir::new("setup_hang");
    let m = dir.manifest(
        "m.toml",
        r#"
[[context]]
name = "C"
[[context.service]]
name = "slow"
plugin = "faulty"
export = "Faulty"
config = { hang_in = ["setup"], once = true }
startup_timeout = "50ms"
restart_delay = "1ms"
[[context.service]]
name = "life"
plugin = "probe"
export = "Lifecycle"
config = { log_main = true }
"#,
    );
    let (events, arg) = events_arg(&dir);
    let host = Running::start_with(&m, &["--events", &arg]);
    let j = wait_for_events(&events, 1, |e| is(e, "started", "slow", 2));
    host.signal("TERM");
    let out = host.finish();
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let hung = position(&j, |e| is(e, "hung", "slow", 1)).expect("hung setup");
    assert_eq!(j[hung]["entry"], "setup");
    let restarting = position(&j, |e| is(e, "restarting", "slow", 1)).expect("restart");
    let started = position(&j, |e| is(e, "started", "slow", 2)).expect("gen 2");
    assert!(hung < restarting && restarting < started);
    // The other service was set up after the hung setup was given up, and ran.
    assert!(
        out.messages_of("life").iter().any(|m| m == "main life"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_finalize_that_hangs_is_abandoned_at_shutdown_timeout_and_named() {
    let dir = TestDir::new("finalize_hang");
    let m = dir.manifest(
        "m.toml",
        r#"
[[context]]
name = "C"
[[context.service]]
name = "first"
plugin = "probe"
export = "Lifecycle"
[[context.service]]
name = "stuck"
plugin = "faulty"
export = "Faulty"
config = { hang_in = ["finalize"] }
shutdown_timeout = "100ms"
[[context.service]]
name = "last"
plugin = "probe"
export = "Lifecycle"
[[context.service]]
name = "stop"
plugin = "hello"
export = "StopAfter"
config = { count = 2 }
"#,
    );
    let (events, arg) = events_arg(&dir);
    let out = run_manifest(&m, &["--events", &arg]);
    assert_eq!(out.code(), 3, "something was abandoned: {}", out.stderr);
    let j = journal(&events);
    let order: Vec<(String, String)> = j
        .iter()
        .filter(|e| {
            e["event"] == "finalized" || (e["event"] == "abandoned" && e["entry"] == "finalize")
        })
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_owned(),
                e["service"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("finalized", "stop"),
        ("finalized", "last"),
        ("abandoned", "stuck"),
        ("finalized", "first"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(a, b)| ((*a).into(), (*b).into()))
        .collect();
    assert_eq!(
        order, expected,
        "reverse order, the hung one abandoned and the rest still finalized"
    );
    assert!(
        out.logs().iter().any(|l| l["service"] == "stuck"
            && l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("finalize did not return"))),
        "{}",
        out.stderr
    );
}

#[test]
fn the_stash_and_the_dataframes_survive_restarts() {
    let dir = TestDir::new("stash");
    let m = dir.manifest(
        "m.toml",
        r#"
[[dataframe]]
name = "d"
[[context]]
name = "C"
dataframes = ["d"]
[[context.service]]
name = "counter"
plugin = "probe"
export = "StashCounter"
config = { dataframe = "d", fail_every = 3 }
restart_delay = "1ms"
max_restarts = 100
restart_window = "10m"
[[context.service]]
name = "report"
plugin = "probe"
export = "Report"
config = { dataframe = "d", keys = ["count"] }
"#,
    );
    let (events, arg) = events_arg(&dir);
    let host = Running::start_with(&m, &["--events", &arg]);
    wait_for_events(&events, 1, |e| is(e, "started", "counter", 3));
    host.signal("TERM");
    let out = host.finish();
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let restored: Vec<String> = out
        .messages_of("counter")
        .into_iter()
        .filter(|m| m.starts_with("restored "))
        .collect();
    assert_eq!(
        restored[..2],
        ["restored 3", "restored 6"],
        "each generation resumes from the stash"
    );
    let count: u64 = out
        .report("d", "count")
        .and_then(|v| v.parse().ok())
        .expect("report");
    assert!(
        count >= 6,
        "the dataframe kept counting across restarts: {count}"
    );
}

fn recv_until(sock: &UnixDatagram, want: &str, seen: &mut Vec<String>) {
    let mut buf = [0u8; 256];
    loop {
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let done = msg == want;
                seen.push(msg);
                if done {
                    return;
                }
            }
            Err(e) => panic!("no {want} on the notify socket ({e}); saw {seen:?}"),
        }
    }
}

#[test]
fn sd_notify_sends_ready_watchdog_pings_and_stopping_in_order() {
    let dir = TestDir::new("sd_notify");
    let m = dir.manifest(
        "m.toml",
        "[[context]]\nname = \"C\"\nperiod = \"5ms\"\n[[context.service]]\nname = \"g\"\nplugin = \"hello\"\nexport = \"Greeter\"\nconfig = { loop_interval_ms = 5 }\n",
    );
    let socket_path: &Path = &dir.path.join("notify.sock");
    let sock = UnixDatagram::bind(socket_path).expect("bind the notify socket");
    sock.set_read_timeout(Some(crate::util::DEADLINE)).unwrap();
    let path = socket_path.to_string_lossy().into_owned();
    let host = Running::start_env(
        &m,
        &[],
        &[("NOTIFY_SOCKET", &path), ("WATCHDOG_USEC", "100000")],
    );
    let mut seen = Vec::new();
    recv_until(&sock, "READY=1", &mut seen);
    recv_until(&sock, "WATCHDOG=1", &mut seen);
    recv_until(&sock, "WATCHDOG=1", &mut seen);
    host.signal("TERM");
    recv_until(&sock, "STOPPING=1", &mut seen);
    let out = host.finish();
    assert_eq!(out.code(), 0, "{}", out.stderr);
    // Everything the host sent, to its exit: the datagrams are queued.
    sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 256];
    while let Ok(n) = sock.recv(&mut buf) {
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    // READY=1 once and first, STOPPING=1 once, and nothing else but pings:
    // the two waited for and any others before STOPPING=1, and any sent
    // while the contexts finalize (how many is up to the clock).
    let stopping = seen.iter().position(|m| m == "STOPPING=1").unwrap();
    let mut expected = vec!["READY=1"];
    expected.extend(std::iter::repeat_n("WATCHDOG=1", stopping.max(3) - 1));
    expected.push("STOPPING=1");
    expected.extend(std::iter::repeat_n("WATCHDOG=1", seen.len() - stopping - 1));
    assert_eq!(seen, expected);
}

#[test]
fn abandoned_threads_reaching_max_abandoned_threads_stop_every_context_and_exit_76() {
    let dir = TestDir::new("abandoned_ceiling");
    // Every call of `hang` hangs for ever: each generation leaves one thread.
    let m = dir.manifest(
        "m.toml",
        r#"max_abandoned_threads = 5
[[context]]
name = "C"
[[context.service]]
name = "life"
plugin = "probe"
export = "Lifecycle"
[[context.service]]
name = "hang"
plugin = "faulty"
export = "Faulty"
config = { hang_in = ["main"] }
watchdog = "10ms"
max_restarts = 1000
restart_window = "10m"
restart_delay = "1ms"
max_restart_delay = "1ms"
"#,
    );
    let (events, arg) = events_arg(&dir);
    let out = run_manifest(&m, &["--events", &arg]);
    assert_eq!(out.code(), 76, "{}", out.stderr);
    let j = journal(&events);
    let ceilings: Vec<&Value> = j.iter().filter(|e| e["event"] == "leak_ceiling").collect();
    assert_eq!(ceilings.len(), 1, "{j:#?}");
    assert_eq!(ceilings[0]["kind"], "abandoned_threads");
    assert_eq!(ceilings[0]["abandoned_threads"], 5);
    assert_eq!(ceilings[0]["max"], 5);
    let hung_before = j
        .iter()
        .take_while(|e| e["event"] != "leak_ceiling")
        .filter(|e| e["event"] == "hung" && e["service"] == "hang")
        .count();
    assert_eq!(
        hung_before, 4,
        "the fifth hung call reaches the ceiling (journaled before its own `hung`)"
    );
    assert_eq!(
        events_of(&j, "finalized", "life").len(),
        1,
        "every context stopped cleanly: {}",
        out.stderr
    );
}

/// A pids cgroup (v1 `pids` hierarchy, or v2 with the pids controller)
/// holding at most `max` tasks, removed when dropped.
struct PidsCgroup(PathBuf);

impl PidsCgroup {
    fn new(max: usize) -> PidsCgroup {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let name = format!(
            "otools-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        for base in ["/sys/fs/cgroup/pids", "/sys/fs/cgroup"] {
            let p = Path::new(base).join(&name);
            if std::fs::create_dir(&p).is_ok() {
                if std::fs::write(p.join("pids.max"), max.to_string()).is_ok() {
                    return PidsCgroup(p);
                }
                let _ = std::fs::remove_dir(&p);
            }
        }
        panic!(
            "this test limits the host's threads with a pids cgroup: it needs root and a \
             writable /sys/fs/cgroup/pids (cgroup v1) or /sys/fs/cgroup with the pids controller"
        );
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_thread_that_cannot_be_created_stops_every_context_cleanly_with_71() {
    let dir = TestDir::new("thread_limit");
    let mut body = String::new();
    for i in 0..20 {
        body.push_str(&format!(
            "[[context]]\nname = \"C{i}\"\n\
             [[context.service]]\nname = \"life{i}\"\nplugin = \"probe\"\nexport = \"Lifecycle\"\n\
             [[context.service]]\nname = \"greeter{i}\"\nplugin = \"hello\"\nexport = \"Greeter\"\nconfig = {{ loop_interval_ms = 5 }}\n"
        ));
    }
    let m = dir.manifest("m.toml", &body);
    // 16 tasks: the main thread, the signal watchers and the first context
    // drivers, then a driver cannot be created. 40: every driver starts,
    // then a loop thread cannot be created.
    for max in [16, 40] {
        let cgroup = PidsCgroup::new(max);
        let (events, arg) = events_arg(&dir);
        let _ = std::fs::remove_file(&events);
        let child = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {}/cgroup.procs && exec \"$0\" \"$@\"",
                cgroup.0.display()
            ))
            .arg(crate::util::otools())
            .args([
                "run",
                &m.to_string_lossy(),
                "--log-format",
                "json",
                "--events",
                &arg,
            ])
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start otools in the cgroup");
        let out = crate::util::wait(child);
        drop(cgroup);
        assert_eq!(out.status.code(), Some(71), "pids.max {max}: {out:?}");
        let j = journal(&events);
        assert!(
            j.iter().any(|e| e["event"] == "thread_spawn_failed"),
            "pids.max {max}: {j:#?}"
        );
        assert!(
            out.messages()
                .iter()
                .any(|m| m.starts_with("cannot create a thread")),
            "pids.max {max}: {}",
            out.stderr
        );
        // Stopped cleanly: every instance that was set up was finalized.
        let setups: Vec<String> = out
            .messages()
            .into_iter()
            .filter_map(|m| m.strip_prefix("setup ").map(str::to_owned))
            .collect();
        let mut finals: Vec<String> = out
            .messages()
            .into_iter()
            .filter_map(|m| m.strip_prefix("finalize ").map(str::to_owned))
            .collect();
        finals.sort();
        let mut expected = setups.clone();
        expected.sort();
        assert_eq!(finals, expected, "pids.max {max}: {}", out.stderr);
        println!(
            "pids.max {max}: {} instance(s) set up and finalized; failed: {:?}",
            setups.len(),
            j.iter()
                .filter(|e| e["event"] == "thread_spawn_failed")
                .map(|e| e["thread"].to_string())
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn unwatched_loop_calls_abandoned_at_restarts_count_toward_max_abandoned_threads() {
    let dir = TestDir::new("abandoned_loops");
    // `failing` fails every main call; under one_for_all each restart stops
    // `stuck`, whose loop call never returns and has no watchdog: stopping
    // gives up on it after shutdown_timeout, leaving its thread behind.
    let m = dir.manifest(
        "m.toml",
        r#"max_abandoned_threads = 3
[[context]]
name = "C"
strategy = "one_for_all"
[[context.service]]
name = "stuck"
plugin = "faulty"
export = "Faulty"
config = { has_loop = true, hang_in = ["loop"] }
shutdown_timeout = "50ms"
[[context.service]]
name = "failing"
plugin = "faulty"
export = "Faulty"
config = { error_in = ["main"] }
max_restarts = 10
restart_window = "10m"
restart_delay = "1ms"
max_restart_delay = "1ms"
on_give_up = "exit_host"
"#,
    );
    let (events, arg) = events_arg(&dir);
    let out = run_manifest(&m, &["--events", &arg]);
    assert_eq!(out.code(), 76, "{}", out.stderr);
    let j = journal(&events);
    let at = position(&j, |e| e["event"] == "leak_ceiling").expect("leak_ceiling");
    assert_eq!(j[at]["kind"], "abandoned_threads");
    assert_eq!(j[at]["abandoned_threads"], 3);
    let loops_before = j[..at]
        .iter()
        .filter(|e| e["event"] == "abandoned" && e["service"] == "stuck" && e["entry"] == "loop")
        .count();
    assert_eq!(
        loops_before, 2,
        "the third abandoned loop reaches the ceiling (journaled before its own `abandoned`)"
    );
}
