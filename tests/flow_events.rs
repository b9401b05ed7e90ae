//! Flow events raised from outside the flow's own routing: by a step
//! through its context, by a service of a context, and by `otools raise`
//! through the control socket; duplicates, refusals, `keep_open`, and the
//! flows in `otools status`.

use std::path::PathBuf;

use serde_json::Value;

use crate::control::{arg, host_stop, status_json, wait_status};
use crate::flows::{association, step};
use crate::util::{Running, TestDir, journal, run, run_manifest, wait_for_events};

fn steps_of(events: &[Value], step: &str) -> Vec<String> {
    let mut s: Vec<String> = events
        .iter()
        .filter(|e| e["event"] == "step_finished" && e["step"] == step)
        .map(|e| e["sequence"].as_str().unwrap_or_default().to_owned())
        .collect();
    s.sort();
    s
}

fn duplicates(events: &[Value], name: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == "duplicate" && e["kind"] == "event" && e["name"] == name)
        .map(|e| e["sequence"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn a_step_raises_events_of_its_flow_through_its_context_and_a_second_raise_is_a_duplicate() {
    let dir = TestDir::new("flow_step_raises");
    let m = dir.manifest(
        "m.toml",
        &[
            "\n[[flow]]\nname = \"f\"\nstore = \"f.db\"\nevents = [\"go\", \"next\"]\nstart = [\"go/1\"]\n",
            &step("a", r#"config = { raise = ["next", "next", "next/2"] }"#),
            &step("b", ""),
            &association("go", r#"["a"]"#, ""),
            &association("next", r#"["b"]"#, ""),
        ]
        .concat(),
    );
    let events = dir.path.join("events.jsonl");
    let out = run_manifest(&m, &["--events", &arg(&events)]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let ev = journal(&events);
    assert_eq!(steps_of(&ev, "b"), ["1", "2"], "b runs once per sequence");
    assert_eq!(duplicates(&ev, "next"), ["1"], "the second raise for 1");
    let raised: Vec<_> = ev
        .iter()
        .filter(|e| e["event"] == "event_raised" && e["name"] == "next")
        .collect();
    assert_eq!(raised.len(), 2, "{raised:?}");
    assert!(
        out.messages_of("a")
            .contains(&String::from("raised next/2")),
        "{:?}",
        out.messages()
    );
}

/// A host with a `keep_open` flow `f` (events `go`; step `work` on `go`)
/// and a flow `once` that ends by itself; `raiser` is the config of a
/// `Raiser` service in a context `Main` (none without it).
fn open_host(dir: &TestDir, raiser: Option<&str>) -> PathBuf {
    let context = raiser.map_or_else(String::new, |config| {
        format!(
            "\n[[context]]\nname = \"Main\"\n[[context.service]]\nname = \"raiser\"\nplugin = \"flowsteps\"\nexport = \"Raiser\"\nconfig = {config}\n"
        )
    });
    let body = [
        "\n[[flow]]\nname = \"f\"\nstore = \"f.db\"\nkeep_open = true\nevents = [\"go\"]\n[[flow.pool]]\nname = \"desk\"\nlimit = 2\n",
        &step("work", r#"pools = ["desk"]"#),
        &association("go", r#"["work"]"#, ""),
        "\n[[flow]]\nname = \"once\"\nevents = [\"tick\"]\nstart = [\"tick/1\"]\n",
        &step("t", ""),
        &association("tick", r#"["t"]"#, ""),
        &context,
    ]
    .concat();
    dir.manifest("m.toml", &body)
}

#[test]
fn a_service_raises_flow_events_and_an_unknown_event_is_refused_with_its_kind() {
    let dir = TestDir::new("flow_service_raises");
    let m = open_host(&dir, Some(r#"{ raise = ["go/7", "ghost/1", "go/7"] }"#));
    let events = dir.path.join("events.jsonl");
    let mut running = Running::start_with(&m, &["--events", &arg(&events)]);
    running.wait_for("refused ghost/1: Some(UnknownTarget): no flow declares an event `ghost`");
    // The step's end and the third raise (a duplicate) come in either order.
    wait_for_events(&events, 1, |e| {
        e["event"] == "step_finished" && e["step"] == "work"
    });
    let ev = wait_for_events(&events, 1, |e| e["event"] == "duplicate");
    assert_eq!(steps_of(&ev, "work"), ["7"]);
    assert_eq!(duplicates(&ev, "go"), ["7"]);
    running.wait_for_printed("event `go` raised for sequence 7 by Main/raiser");
    host_stop(&m, running);
    let ev = journal(&events);
    let finished: Vec<_> = ev
        .iter()
        .filter(|e| e["event"] == "flow_finished" && e["flow"] == "f")
        .collect();
    assert_eq!(finished.len(), 1, "{ev:?}");
    assert_eq!(finished[0]["result"], "success");
}

#[test]
fn otools_raise_reaches_a_kept_open_flow_and_status_shows_its_steps_delays_and_pools() {
    let dir = TestDir::new("flow_cli_raise");
    let m = open_host(&dir, None);
    let events = dir.path.join("events.jsonl");
    let running = Running::start_with(&m, &["--events", &arg(&events)]);
    // The flow that ends by itself has ended; `f` waits for events.
    wait_for_events(&events, 1, |e| {
        e["event"] == "flow_finished" && e["flow"] == "once"
    });
    let manifest = arg(&m);
    let raise = |args: &[&str]| {
        let mut all = vec!["raise", manifest.as_str()];
        all.extend_from_slice(args);
        run(&all)
    };
    let out = raise(&["go", "--sequence", "8"]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "raised `go` for sequence 8 in flow f");
    let status = wait_status(&m, |s| s["flows"][0]["steps"][0]["succeeded"] == 1);
    let f = &status["flows"][0];
    assert_eq!(f["name"], "f");
    assert_eq!(f["mode"], "restart");
    assert_eq!(f["state"], "running");
    assert!(f["run"].as_str().unwrap().starts_with("f-"), "{f}");
    assert_eq!(
        f["steps"][0],
        serde_json::json!({"name": "work", "waiting": 0, "running": 0, "succeeded": 1, "failed": 0})
    );
    assert_eq!(f["pending_delays"], 0);
    assert_eq!(
        f["pools"],
        serde_json::json!([{"name": "desk", "in_use": 0, "limit": 2}])
    );
    assert_eq!(status["flows"][1]["state"], "finished");
    assert_eq!(status["flows"][1]["result"], "success");
    let text = run(&["status", &arg(&m)]);
    assert_eq!(text.code(), 0, "{}", text.stderr);
    assert!(
        text.stdout.contains("flow f: running, run f-")
            && text
                .stdout
                .contains("(restart), 0 pending delay(s), pools: desk 0/2"),
        "{}",
        text.stdout
    );
    let row: Vec<&str> = text
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some("work"))
        .unwrap_or_else(|| panic!("{}", text.stdout))
        .split_whitespace()
        .collect();
    assert_eq!(row, ["work", "0", "0", "1", "0"]);
    // Again for 8: stored as a duplicate, the step does not run again.
    let out = raise(&["go", "--sequence", "8", "--flow", "f"]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    wait_for_events(&events, 1, |e| {
        e["event"] == "duplicate" && e["name"] == "go"
    });
    for (args, want) in [
        (
            &["ghost"][..],
            "cannot raise `ghost` for sequence 0: unknown target: no flow declares an event `ghost` that can be raised; this host's flows: `f`, `once`",
        ),
        (
            &["go", "--flow", "nope"][..],
            "cannot raise `go` for sequence 0: unknown target: no flow `nope`; this host's flows: `f`, `once`",
        ),
        (
            &["tick", "--sequence", "2"][..],
            "cannot raise `tick` for sequence 2: peer gone: the run of flow `once` has finished",
        ),
    ] {
        let out = raise(args);
        assert_eq!(out.code(), 1, "{args:?}: {}", out.stdout);
        assert!(out.stderr.contains(want), "{args:?}: {}", out.stderr);
    }
    host_stop(&m, running);
    let ev = journal(&events);
    assert_eq!(steps_of(&ev, "work"), ["8"]);
    assert!(status_json(&m).is_none(), "the host is gone");
}

#[test]
fn otools_raise_in_a_host_without_flows_is_refused() {
    let dir = TestDir::new("flow_raise_no_flow");
    let m = dir.manifest(
        "m.toml",
        r#"
[[context]]
name = "Main"
[[context.service]]
name = "s"
plugin = "probe"
export = "Lifecycle"
"#,
    );
    let running = Running::start(&m);
    wait_status(&m, |s| s["contexts"][0]["units"][0]["state"] == "serving");
    let out = run(&["raise", &arg(&m), "go"]);
    assert_eq!(out.code(), 1, "{}", out.stdout);
    assert!(
        out.stderr
            .contains("cannot raise `go` for sequence 0: unknown target: this host runs no flow"),
        "{}",
        out.stderr
    );
    host_stop(&m, running);
}

#[test]
fn a_raised_event_is_stored_before_raise_returns_and_stays_a_duplicate_after_a_kill_and_recover() {
    let dir = TestDir::new("flow_raise_durable");
    let body = [
        "\n[[flow]]\nname = \"f\"\nstore = \"f.db\"\nkeep_open = true\nevents = [\"go\"]\n",
        &step("work", "config = { sleep_ms = 600000, until_attempt = 1 }"),
        &association("go", r#"["work"]"#, ""),
    ]
    .concat();
    let m = dir.manifest("m.toml", &body);
    let events = dir.path.join("events.jsonl");
    let running = Running::start_with(&m, &["--events", &arg(&events)]);
    wait_for_events(&events, 1, |e| e["event"] == "flow_started");
    let out = run(&["raise", &arg(&m), "go", "--sequence", "5"]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    wait_for_events(&events, 1, |e| e["event"] == "step_started");
    running.signal("KILL");
    let _ = running.finish();
    // The recovered run reruns the interrupted step (attempt 2 does not
    // sleep) and knows `go/5` was raised: raising it again is a duplicate.
    let again = dir.path.join("again.jsonl");
    let running = Running::start_with(&m, &["--events", &arg(&again), "--mode", "recover"]);
    let ev = wait_for_events(&again, 1, |e| {
        e["event"] == "step_finished" && e["step"] == "work"
    });
    let done = ev.iter().find(|e| e["event"] == "step_finished").unwrap();
    assert_eq!(
        (done["sequence"].as_str(), done["attempt"].as_u64()),
        (Some("5"), Some(2))
    );
    let out = run(&["raise", &arg(&m), "go", "--sequence", "5"]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    wait_for_events(&again, 1, |e| {
        e["event"] == "duplicate" && e["name"] == "go"
    });
    host_stop(&m, running);
    assert_eq!(steps_of(&journal(&again), "work"), ["5"]);
}
