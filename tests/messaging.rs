//! Messages between services through the real binary and the `messages`
//! plugin: a mailbox agent, an echo replier that panics or hangs on
//! command, a ticker and listeners, a relay chain, and messages sent while
//! a service sets up. Outcomes are read from the plugins' log lines (each
//! request's outcome is logged by the `Script` that made it) and from the
//! `--events` journal.

use serde_json::Value;

use crate::util::{Running, TestDir, events_of, journal, run, run_manifest, script_context};

/// The log lines of `service`, as (level, message, correlation).
fn lines_of(out: &crate::util::Output, service: &str) -> Vec<(String, String, String)> {
    out.logs()
        .iter()
        .filter(|l| l["service"] == service)
        .map(|l| {
            let s = |k: &str| l[k].as_str().unwrap_or_default().to_owned();
            (s("level"), s("message"), s("correlation"))
        })
        .collect()
}

#[test]
fn an_agent_handles_ping_ping_bogus_dump_in_order_then_shutdown_stops_it_for_good() {
    let dir = TestDir::new("msg_agent");
    let body = r#"
[[context]]
name = "Agents"
[[context.service]]
name = "agent"
plugin = "messages"
export = "Agent"
restart = "always"

[[context]]
name = "Main"
[[context.service]]
name = "script"
plugin = "messages"
export = "Script"
sends_to = ["agent", "Agents/agent"]
config = { steps = [
  { kind = "request", to = "agent", name = "PING" },
  { kind = "request", to = "Agents/agent", name = "PING" },
  { kind = "request", to = "agent", name = "BOGUS" },
  { kind = "request", to = "agent", name = "DUMP" },
  { kind = "send", to = "agent", name = "SHUTDOWN" },
] }
"#;
    let events = dir.path.join("events.jsonl");
    let m = dir.manifest("m.toml", body);
    let out = run_manifest(&m, &["--events", events.to_str().unwrap()]);
    assert_eq!(out.code(), 0, "{}", out.stderr);

    let agent: Vec<(String, String)> = lines_of(&out, "agent")
        .into_iter()
        .map(|(level, message, _)| (level, message))
        .collect();
    let expected = [
        ("INFO", "setup done"),
        ("INFO", "pong 1"),
        ("INFO", "pong 2"),
        (
            "WARNING",
            "unknown message `BOGUS` from Main/script: refused (accepts: PING, DUMP)",
        ),
        ("INFO", "dump: 2 pings"),
        ("INFO", "stopped by SHUTDOWN"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(l, m)| ((*l).to_owned(), (*m).to_owned()))
        .collect();
    assert_eq!(agent, expected, "{}", out.stderr);
    assert_eq!(
        out.messages_of("script"),
        [
            "reply to PING: 1",
            "reply to PING: 2",
            "BOGUS failed: UnknownMessage: Agents/agent accepts no message `BOGUS` (it accepts: PING, DUMP)",
            "reply to DUMP: 2",
            "sent SHUTDOWN",
        ]
    );

    let j = journal(&events);
    let unknown = events_of(&j, "message_unknown", "agent");
    assert_eq!(unknown.len(), 1, "{j:#?}");
    assert_eq!(unknown[0]["name"], "BOGUS");
    assert_eq!(unknown[0]["from"], "Main/script");
    assert_eq!(events_of(&j, "shutdown", "agent").len(), 1, "{j:#?}");
    assert!(
        events_of(&j, "restarting", "agent").is_empty(),
        "SHUTDOWN is never restarted, even under restart = \"always\": {j:#?}"
    );
    assert!(
        !j.iter()
            .any(|e| e["service"] == "agent" && e["generation"] == 2),
        "{j:#?}"
    );
    assert_eq!(events_of(&j, "finalized", "agent").len(), 1, "{j:#?}");
}

#[test]
fn a_replier_that_panics_then_hangs_answers_peer_failed_then_timeout_and_a_new_generation_serves_the_next()
 {
    let dir = TestDir::new("msg_echo");
    // Requester and replier share a context: the handler runs on the
    // replier's mailbox thread, never on the driver the requester waits on.
    let body = r#"
[[context]]
name = "Main"
[[context.service]]
name = "echo"
plugin = "messages"
export = "Echo"
watchdog = "200ms"
restart_delay = "10ms"
[[context.service]]
name = "requester"
plugin = "messages"
export = "Script"
config = { terminate = true, steps = [
  { kind = "request", to = "echo", name = "ECHO", payload = "a" },
  { kind = "request", to = "echo", name = "PANIC" },
  { kind = "request", to = "echo", name = "HANG", payload = 3000, timeout_ms = 20000 },
  { kind = "request", to = "echo", name = "ECHO", payload = "b" },
  { kind = "request", to = "echo", name = "ECHO", payload = 3 },
  { kind = "request", to = "nobody", name = "ECHO", payload = "c" },
] }
"#;
    let events = dir.path.join("events.jsonl");
    let out = run_manifest(
        &dir.manifest("m.toml", body),
        &["--events", events.to_str().unwrap()],
    );
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let said = out.messages_of("requester");
    assert_eq!(said.len(), 6, "{}", out.stderr);
    assert_eq!(said[0], "reply to ECHO: \"a from 1\"");
    assert!(
        said[1].starts_with("PANIC failed: PeerFailed: Main/echo panicked: asked to panic"),
        "{said:#?}"
    );
    // The watchdog answers the hung request long before its own 20 s timeout.
    assert_eq!(
        said[2],
        "HANG failed: Timeout: the handler hung (no return within 200ms)"
    );
    assert_eq!(
        said[3], "reply to ECHO: \"b from 3\"",
        "generation 3 serves it"
    );
    assert_eq!(
        said[4],
        "ECHO failed: InvalidPayload: Main/echo takes a payload of type string with `ECHO`, not integer"
    );
    assert_eq!(
        said[5],
        "ECHO failed: UnknownTarget: no service `nobody` accepts messages"
    );
    let j = journal(&events);
    let failed = events_of(&j, "message_failed", "echo");
    assert_eq!(failed.len(), 1, "{j:#?}");
    assert_eq!(failed[0]["name"], "PANIC");
    let hung = events_of(&j, "hung", "echo");
    assert_eq!(hung.len(), 1, "{j:#?}");
    assert_eq!(hung[0]["entry"], "message");
    let started: Vec<&Value> = events_of(&j, "started", "echo")
        .into_iter()
        .map(|e| &e["generation"])
        .collect();
    assert_eq!(started, [1, 2, 3], "{j:#?}");
}

#[test]
fn a_subscriber_gets_every_publication_in_order_and_a_non_subscriber_nothing() {
    let dir = TestDir::new("msg_pubsub");
    let body = r#"
[[context]]
name = "Pub"
period = "5ms"
[[context.service]]
name = "ticker"
plugin = "messages"
export = "Ticker"
config = { topic = "px", start = 100, count = 5 }

[[context]]
name = "Subs"
[[context.service]]
name = "subscriber"
plugin = "messages"
export = "Listener"
subscribe = ["px"]
[[context.service]]
name = "bystander"
plugin = "messages"
export = "Listener"
"#;
    let mut host = Running::start(&dir.manifest("m.toml", body));
    host.wait_for("got px 104");
    host.signal("TERM");
    let out = host.finish();
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(
        out.messages_of("subscriber"),
        (100..105)
            .map(|i| format!("got px {i}"))
            .collect::<Vec<_>>()
    );
    assert!(out.messages_of("bystander").is_empty(), "{}", out.stderr);
}

#[test]
fn messages_sent_while_a_service_sets_up_are_handled_after_its_setup_in_order() {
    let dir = TestDir::new("msg_setup");
    // The agent's setup returns only once the sender has sent its three
    // PINGs (the sender sets `d.sent` after them), so they are sent during it.
    let body = r#"
[[dataframe]]
name = "d"
[[context]]
name = "A"
dataframes = ["d"]
[[context.service]]
name = "agent"
plugin = "messages"
export = "Agent"
config = { setup_waits_for = ["d", "sent"] }

[[context]]
name = "B"
dataframes = ["d"]
[[context.service]]
name = "early"
plugin = "messages"
export = "Script"
config = { in_setup = true, then_set = ["d", "sent"], steps = [
  { kind = "send", to = "agent", name = "PING", payload = 1 },
  { kind = "send", to = "agent", name = "PING", payload = 2 },
  { kind = "send", to = "agent", name = "PING", payload = 3 },
] }
[[context.service]]
name = "late"
plugin = "messages"
export = "Script"
config = { steps = [
  { kind = "request", to = "agent", name = "DUMP" },
  { kind = "send", to = "agent", name = "SHUTDOWN" },
] }
"#;
    let out = run_manifest(&dir.manifest("m.toml", body), &[]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(
        out.messages_of("agent"),
        [
            "setup done",
            "pong 1",
            "pong 2",
            "pong 3",
            "dump: 3 pings",
            "stopped by SHUTDOWN"
        ]
    );
    let all = out.messages();
    let last_send = all.iter().rposition(|m| m == "sent PING").unwrap();
    let setup_done = all.iter().position(|m| m == "setup done").unwrap();
    assert!(last_send < setup_done, "{all:#?}");
    assert_eq!(
        out.messages_of("late"),
        ["reply to DUMP: 3", "sent SHUTDOWN"]
    );
}

#[test]
fn a_correlation_id_follows_a_request_across_three_hops_on_log_lines() {
    let dir = TestDir::new("msg_chain");
    let body = r#"
[[context]]
name = "Chain"
[[context.service]]
name = "relay1"
plugin = "messages"
export = "Relay"
config = { next = "relay2" }
[[context.service]]
name = "relay2"
plugin = "messages"
export = "Relay"
config = { next = "Chain/relay3" }
[[context.service]]
name = "relay3"
plugin = "messages"
export = "Relay"
[[context.service]]
name = "start"
plugin = "messages"
export = "Script"
config = { terminate = true, steps = [ { kind = "request", to = "relay1", name = "HOP", payload = 1 } ] }
"#;
    let out = run_manifest(&dir.manifest("m.toml", body), &[]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(out.messages_of("start"), ["reply to HOP: 3"]);
    let (_, _, root) = lines_of(&out, "relay1").remove(0);
    assert!(!root.is_empty(), "{}", out.stderr);
    for (relay, n, id) in [
        ("relay1", 1, root.clone()),
        ("relay2", 2, format!("{root}.1")),
        ("relay3", 3, format!("{root}.1.1")),
    ] {
        let lines = lines_of(&out, relay);
        assert_eq!(
            lines,
            [(
                String::from("INFO"),
                format!("hop {n} with correlation {id}"),
                id.clone()
            )],
            "the handler's ctx and its log line carry the id"
        );
    }
}

#[test]
fn unknown_static_targets_and_topics_a_service_does_not_accept_are_caught_by_check() {
    let dir = TestDir::new("msg_check");
    let body = r#"
[[context]]
name = "A"
[[context.service]]
name = "x"
plugin = "messages"
export = "Listener"
subscribe = ["px", "nope"]
[[context.service]]
name = "y"
plugin = "messages"
export = "Script"
sends_to = ["x", "B/x", "ghost"]
config = { steps = [] }
[[context]]
name = "B"
[[context.service]]
name = "x"
plugin = "messages"
export = "Listener"
"#;
    let m = dir.manifest("m.toml", body);
    let out = run(&["check", m.to_str().unwrap()]);
    assert_eq!(out.code(), 2, "{}", out.stderr);
    let err = &out.stderr;
    assert!(
        err.contains(":11:") && err.contains("subscribes to topic `nope`"),
        "{err}"
    );
    assert!(
        err.contains("`x` is ambiguous (A/x, B/x): name it `Context/service`"),
        "{err}"
    );
    assert!(err.contains("no service `ghost` accepts messages"), "{err}");
    assert!(!err.contains("`B/x`"), "B/x resolves: {err}");
}

#[test]
fn a_service_that_accepts_messages_is_refused_in_a_triggers_stack_by_check() {
    let dir = TestDir::new("msg_stack");
    let body = r#"
[[context]]
name = "A"
[[context.trigger]]
name = "t"
condition = [ { plugin = "probe", export = "Constant", config = { value = true } } ]
service = [
  { name = "quiet", plugin = "probe", export = "Lifecycle" },
  { name = "agent", plugin = "messages", export = "Agent" },
]
"#;
    let m = dir.manifest("m.toml", body);
    let out = run(&["check", m.to_str().unwrap()]);
    assert_eq!(out.code(), 2, "{}", out.stderr);
    let err = &out.stderr;
    assert!(
        err.contains(":12:")
            && err.contains(
                "`Agent` accepts messages (PING, DUMP), but a service in a trigger's stack has no mailbox"
            )
            && err.contains("declare it as a `[[context.service]]`"),
        "{err}"
    );
    assert!(err.contains("1 error(s)"), "only the agent: {err}");
}

#[test]
fn a_request_queued_for_a_target_that_fails_for_good_is_answered_peer_gone_at_once() {
    let dir = TestDir::new("msg_gone_queued");
    // The PANIC and the request wait behind HANG; the PANIC ends echo for
    // good (restart = "never"), so nobody will handle the request.
    let body = String::from(
        "[[context]]\nname = \"Agents\"\n[[context.service]]\nname = \"echo\"\nplugin = \"messages\"\nexport = \"Echo\"\nrestart = \"never\"\n",
    ) + &script_context(
        r#"  { kind = "send", to = "echo", name = "HANG", payload = 1000 },
  { kind = "send", to = "echo", name = "PANIC" },
  { kind = "request", to = "echo", name = "ECHO", payload = "x", timeout_ms = 60000 },"#,
    );
    let m = dir.manifest("m.toml", &body);
    let out = run_manifest(&m, &[]);
    assert_eq!(out.code(), 1, "echo failed for good: {}", out.stderr);
    let script = out.messages_of("script");
    assert_eq!(script[..2], ["sent HANG", "sent PANIC"], "{script:#?}");
    assert!(
        script[2].starts_with(
            "ECHO failed: PeerGone: Agents/echo has ended or gave up before handling `ECHO`"
        ),
        "{script:#?}"
    );
}
