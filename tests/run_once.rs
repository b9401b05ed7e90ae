//! Run-once services (`main_once = true`) and `[host] exit_when`.

use crate::util::{TestDir, events_of, journal, run_manifest};

#[test]
fn exit_when_main_once_done_ends_the_run_after_one_main_with_an_ordered_finalize() {
    let dir = TestDir::new("once_exit_when");
    let body = r#"exit_when = "main_once_done"
[[dataframe]]
name = "d"
[[context]]
name = "Job"
dataframes = ["d"]
period = "10ms"
[[context.service]]
name = "first"
plugin = "probe"
export = "Lifecycle"
[[context.service]]
name = "job"
plugin = "probe"
export = "Record"
config = { dataframe = "d", key = "mains" }
main_once = true
[[context.service]]
name = "last"
plugin = "probe"
export = "Lifecycle"
[[context.service]]
name = "report"
plugin = "probe"
export = "Report"
config = { dataframe = "d", keys = ["mains"] }
[[context]]
name = "Forever"
period = "10ms"
[[context.service]]
name = "greeter"
plugin = "hello"
export = "Greeter"
"#;
    let m = dir.manifest("m.toml", body);
    let events = dir.path.join("events.jsonl");
    let out = run_manifest(&m, &["--events", events.to_str().unwrap()]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(
        out.report("d", "mains").as_deref(),
        Some("1"),
        "{}",
        out.stderr
    );
    let m = out.messages();
    let finals: Vec<&String> = m.iter().filter(|s| s.starts_with("finalize ")).collect();
    assert_eq!(finals, ["finalize last", "finalize first"]);
    assert!(
        m.iter()
            .any(|s| s.contains("every main_once service has finished")),
        "{m:#?}"
    );
    let j = journal(&events);
    let done = events_of(&j, "main_once_done", "job");
    assert_eq!(done.len(), 1, "{j:#?}");
    assert_eq!(done[0]["generation"], 1);
    // Both contexts stopped and finalized, the one without run-once work too.
    let ended: Vec<&str> = j
        .iter()
        .filter(|e| e["event"] == "context_ended")
        .map(|e| e["context"].as_str().unwrap())
        .collect();
    assert_eq!(ended.len(), 2, "{j:#?}");
}

#[test]
fn a_main_once_service_runs_main_once_while_the_others_run_every_iteration() {
    let dir = TestDir::new("once_default");
    let body = r#"
[[dataframe]]
name = "d"
[[context]]
name = "C"
dataframes = ["d"]
[[context.service]]
name = "once"
plugin = "probe"
export = "Record"
config = { dataframe = "d", key = "once" }
main_once = true
[[context.service]]
name = "every"
plugin = "probe"
export = "Record"
config = { dataframe = "d", key = "every" }
[[context.service]]
name = "stop"
plugin = "hello"
export = "StopAfter"
config = { count = 5 }
[[context.service]]
name = "report"
plugin = "probe"
export = "Report"
config = { dataframe = "d", keys = ["once", "every"] }
"#;
    let out = run_manifest(&dir.manifest("m.toml", body), &[]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(out.report("d", "once").as_deref(), Some("1"));
    assert_eq!(out.report("d", "every").as_deref(), Some("5"));
}

#[test]
fn a_main_once_service_whose_main_fails_calls_main_again_in_its_next_generation() {
    let dir = TestDir::new("once_retry");
    let body = r#"exit_when = "main_once_done"
[[context]]
name = "C"
period = "10ms"
[[context.service]]
name = "job"
plugin = "faulty"
export = "Faulty"
config = { error_in = ["main"], once = true, tag = "once_retry" }
main_once = true
restart_delay = "10ms"
[[context.service]]
name = "greeter"
plugin = "hello"
export = "Greeter"
"#;
    let m = dir.manifest("m.toml", body);
    let events = dir.path.join("events.jsonl");
    let out = run_manifest(&m, &["--events", events.to_str().unwrap()]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let j = journal(&events);
    let failed = events_of(&j, "failed", "job");
    assert_eq!(failed.len(), 1, "{j:#?}");
    assert_eq!(failed[0]["generation"], 1);
    let done = events_of(&j, "main_once_done", "job");
    assert_eq!(done.len(), 1, "{j:#?}");
    assert_eq!(done[0]["generation"], 2);
}

#[test]
fn a_main_once_service_that_gives_up_ends_the_run_with_code_1() {
    let dir = TestDir::new("once_give_up");
    let body = r#"exit_when = "main_once_done"
[[context]]
name = "C"
period = "10ms"
[[context.service]]
name = "job"
plugin = "faulty"
export = "Faulty"
config = { error_in = ["main"] }
main_once = true
restart = "never"
[[context.service]]
name = "greeter"
plugin = "hello"
export = "Greeter"
"#;
    let out = run_manifest(&dir.manifest("m.toml", body), &[]);
    assert_eq!(out.code(), 1, "{}", out.stderr);
    assert!(
        out.messages()
            .iter()
            .any(|s| s.contains("every main_once service has finished")),
        "{}",
        out.stderr
    );
}
