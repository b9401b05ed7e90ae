//! `otools flow show`: a run store read directly (read-only) between runs
//! of the real binary, as text and JSON, and its refusals.

use serde_json::Value;

use crate::flows::{association, step};
use crate::util::{Output, TestDir, run, run_manifest};

/// Asserts that `out` exited with `code` and its standard error holds every one of `needles`.
fn refused(out: &Output, code: i32, needles: &[&str]) {
    assert_eq!(out.code(), code, "{}", out.stderr);
    for n in needles {
        assert!(out.stderr.contains(n), "{n}: {}", out.stderr);
    }
}

#[test]
fn flow_show_reads_the_store_between_a_failed_run_and_its_recovery() {
    let dir = TestDir::new("flow_show");
    let m = dir.manifest(
        "m.toml",
        &[
            r#"
[[flow]]
name = "chain"
store = "runs/chain.db"
events = ["go", "a_done"]
start = ["go/1"]
"#
            .to_owned(),
            step(
                "a",
                r#"config = { fail = ["1"], until_attempt = 1 }
on_success = "a_done""#,
            ),
            step("b", ""),
            association("go", r#"["a"]"#, ""),
            association("a_done", r#"["b"]"#, ""),
        ]
        .concat(),
    );
    let store = dir.path.join("runs/chain.db");
    let store_arg = store.to_string_lossy().into_owned();
    let out = run_manifest(&m, &[]);
    assert_eq!(out.code(), 1, "{}", out.stderr);

    let shown = run(&["flow", "show", &store_arg]);
    assert_eq!(shown.code(), 0, "{}", shown.stderr);
    assert!(shown.stdout.contains("1 run(s)"), "{}", shown.stdout);
    assert!(
        shown.stdout.contains("finished") && shown.stdout.contains("failure"),
        "{}",
        shown.stdout
    );
    assert!(
        shown
            .stdout
            .contains("injected failure in chain/a sequence=1 attempt=1"),
        "{}",
        shown.stdout
    );
    let json = run(&["flow", "show", &store_arg, "--json"]);
    assert_eq!(json.code(), 0, "{}", json.stderr);
    let v: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["runs"][0]["result"], "failure", "{v}");
    assert_eq!(v["runs"][0]["recovery"], 0, "{v}");
    let run_id = v["runs"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(v["shown"]["run"], run_id.as_str());
    let tasks = v["shown"]["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1, "{v}");
    assert_eq!(
        (&tasks[0]["step"], &tasks[0]["attempt"], &tasks[0]["status"]),
        (&"a".into(), &1.into(), &"failure".into())
    );

    let out = run_manifest(&m, &["--mode", "recover"]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let json = run(&["flow", "show", &store_arg, "--run", &run_id, "--json"]);
    assert_eq!(json.code(), 0, "{}", json.stderr);
    let v: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(
        (&v["runs"][0]["result"], &v["runs"][0]["recovery"]),
        (&"success".into(), &1.into()),
        "{v}"
    );
    let tasks: Vec<(String, u64, String)> = v["shown"]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["step"].as_str().unwrap().to_owned(),
                t["attempt"].as_u64().unwrap(),
                t["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        tasks,
        vec![
            ("a".into(), 1, "failure".into()),
            ("a".into(), 2, "success".into()),
            ("b".into(), 1, "success".into()),
        ]
    );
    assert_eq!(v["shown"]["pending_delays"], Value::Array(vec![]));
}

#[test]
fn flow_show_refuses_a_missing_file_a_file_that_is_not_a_store_and_an_unknown_run() {
    crate::util::build();
    let dir = TestDir::new("flow_show_errors");
    let missing = dir.path.join("nowhere.db");
    let out = run(&["flow", "show", &missing.to_string_lossy()]);
    refused(&out, 1, &["nowhere.db", "the file does not exist"]);
    dir.write("text.db", "this is not SQLite at all, just some text\n");
    let out = run(&["flow", "show", &dir.path.join("text.db").to_string_lossy()]);
    refused(&out, 1, &["text.db", "not an otools run store"]);
    dir.write("empty.db", "");
    let out = run(&["flow", "show", &dir.path.join("empty.db").to_string_lossy()]);
    refused(&out, 1, &["not an otools run store"]);

    let m = dir.manifest(
        "m.toml",
        &[
            "\n[[flow]]\nname = \"f\"\nstore = \"f.db\"\nevents = [\"go\"]\nstart = [\"go\"]\n"
                .to_owned(),
            step("s", ""),
            association("go", r#"["s"]"#, ""),
        ]
        .concat(),
    );
    assert_eq!(run_manifest(&m, &[]).code(), 0);
    let store = dir.path.join("f.db");
    let out = run(&["flow", "show", &store.to_string_lossy(), "--run", "nope"]);
    refused(&out, 1, &["f.db", "it holds no run `nope`"]);
}

#[test]
fn flow_show_reads_a_store_while_its_host_runs_with_a_pending_delay() {
    let dir = TestDir::new("flow_show_live");
    let m = dir.manifest(
        "m.toml",
        &[
            "\n[[flow]]\nname = \"later\"\nstore = \"later.db\"\nevents = [\"go\"]\nstart = [\"go/7\"]\n"
                .to_owned(),
            step("reminder", ""),
            association("go", r#"["reminder"]"#, r#"delay = "1h""#),
        ]
        .concat(),
    );
    let events = dir.path.join("events.jsonl");
    let ev = events.to_string_lossy().into_owned();
    let host = crate::util::Running::start_with(&m, &["--events", ev.as_str()]);
    crate::util::wait_for_events(&events, 1, |e| e["event"] == "delay_scheduled");
    let json = run(&[
        "flow",
        "show",
        &dir.path.join("later.db").to_string_lossy(),
        "--json",
    ]);
    host.signal("TERM");
    let out = host.finish();
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(json.code(), 0, "{}", json.stderr);
    let v: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["runs"][0]["state"], "unfinished", "{v}");
    let delays = v["shown"]["pending_delays"].as_array().unwrap();
    assert_eq!(delays.len(), 1, "{v}");
    assert_eq!(
        (
            &delays[0]["kind"],
            &delays[0]["target"],
            &delays[0]["sequence"]
        ),
        (&"step".into(), &"reminder".into(), &"7".into())
    );
    assert!(delays[0]["due_ms"].as_u64().unwrap() > 0, "{v}");
}

#[test]
fn a_bounded_run_with_a_pending_delay_exits_incomplete_and_continue_finishes_it() {
    let dir = TestDir::new("flow_once");
    let m = dir.manifest(
        "m.toml",
        &[
            "\n[[flow]]\nname = \"later\"\nstore = \"later.db\"\nevents = [\"go\"]\nstart = [\"go/7\"]\n"
                .to_owned(),
            step("first", ""),
            step("reminder", ""),
            association("go", r#"["first"]"#, ""),
            association("go", r#"["reminder"]"#, r#"delay = "2s""#),
        ]
        .concat(),
    );
    let events = dir.path.join("events.jsonl");
    let ev = events.to_string_lossy().into_owned();
    let out = run_manifest(&m, &["--once", "--events", ev.as_str()]);
    assert_eq!(out.code(), 4, "{}", out.stderr);
    let j = crate::util::journal(&events);
    let finished: Vec<_> = j.iter().filter(|e| e["event"] == "flow_finished").collect();
    assert_eq!(finished[0]["result"], "incomplete", "{j:?}");
    let incomplete: Vec<_> = j
        .iter()
        .filter(|e| e["event"] == "flow_incomplete")
        .collect();
    assert_eq!(incomplete.len(), 1, "{j:?}");
    let outstanding = incomplete[0]["outstanding"][0].as_str().unwrap();
    assert!(
        outstanding.starts_with("delay of step `reminder` for sequence 7, due "),
        "{outstanding}"
    );
    assert!(
        out.stderr.contains("incomplete") && out.stderr.contains("delay of step `reminder`"),
        "{}",
        out.stderr
    );
    // `first` ran; the store keeps the delay for `continue`.
    assert!(
        j.iter()
            .any(|e| e["event"] == "step_finished" && e["step"] == "first"),
        "{j:?}"
    );
    let store = dir.path.join("later.db").to_string_lossy().into_owned();
    let shown = run(&["flow", "show", &store, "--json"]);
    let v: Value = serde_json::from_str(&shown.stdout).unwrap();
    assert_eq!(v["runs"][0]["result"], "incomplete", "{v}");
    assert_eq!(v["shown"]["pending_delays"][0]["target"], "reminder", "{v}");

    let _ = std::fs::remove_file(&events);
    let out = run_manifest(&m, &["--mode", "continue", "--events", ev.as_str()]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let j = crate::util::journal(&events);
    assert!(
        j.iter().any(|e| e["event"] == "step_finished"
            && e["step"] == "reminder"
            && e["status"] == "success"),
        "{j:?}"
    );
    let shown = run(&["flow", "show", &store]);
    assert_eq!(shown.code(), 0, "{}", shown.stderr);
    assert!(
        shown.stdout.contains("success") && shown.stdout.contains("pending delays: 0"),
        "{}",
        shown.stdout
    );
}

#[test]
fn once_without_a_flow_is_refused() {
    let dir = TestDir::new("flow_once_none");
    let m = dir.manifest("m.toml", &crate::util::script_context(""));
    let out = run_manifest(&m, &["--once"]);
    refused(&out, 2, &["--once"]);
}
