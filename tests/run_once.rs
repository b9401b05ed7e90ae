//! Run-once services (`main_once = true`) and `[host] exit_when`.

use crate::util::{Output, TestDir, events_of, journal, run_manifest};

/// A `[[context.service]]` table; `extra` holds its other keys, one a line.
fn service(name: &str, plugin: &str, export: &str, extra: &str) -> String {
    format!(
        "[[context.service]]\nname = \"{name}\"\nplugin = \"{plugin}\"\nexport = \"{export}\"\n{extra}\n"
    )
}

/// A context of its own with a service that would run for ever.
fn forever() -> String {
    format!(
        "[[context]]\nname = \"Forever\"\nperiod = \"10ms\"\n{}",
        service("greeter", "hello", "Greeter", "")
    )
}

/// `exit_when = "main_once_done"`, a dataframe `d`, and a context `Job`
/// with `services`, beside [`forever`].
fn until_done(services: &[String]) -> String {
    format!(
        "exit_when = \"main_once_done\"\n[[dataframe]]\nname = \"d\"\n[[context]]\nname = \"Job\"\ndataframes = [\"d\"]\nperiod = \"10ms\"\n{}{}",
        services.concat(),
        forever()
    )
}

/// Runs `body` with a journal; the output and the journal's events.
fn run_journaled(name: &str, body: &str) -> (Output, Vec<serde_json::Value>) {
    let dir = TestDir::new(name);
    let m = dir.manifest("m.toml", body);
    let events = dir.path.join("events.jsonl");
    let out = run_manifest(&m, &["--events", events.to_str().unwrap()]);
    (out, journal(&events))
}

fn said_every_main_once_finished(out: &Output) -> bool {
    out.messages()
        .iter()
        .any(|s| s.contains("every main_once service has finished"))
}

#[test]
fn exit_when_main_once_done_ends_the_run_after_one_main_with_an_ordered_finalize() {
    let body = until_done(&[
        service("first", "probe", "Lifecycle", ""),
        service(
            "job",
            "probe",
            "Record",
            "config = { dataframe = \"d\", key = \"mains\" }\nmain_once = true",
        ),
        service("last", "probe", "Lifecycle", ""),
        service(
            "report",
            "probe",
            "Report",
            "config = { dataframe = \"d\", keys = [\"mains\"] }",
        ),
    ]);
    let (out, j) = run_journaled("once_exit_when", &body);
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
    assert!(said_every_main_once_finished(&out), "{m:#?}");
    let done = events_of(&j, "main_once_done", "job");
    assert_eq!(done.len(), 1, "{j:#?}");
    assert_eq!(done[0]["generation"], 1);
    // Both contexts stopped and finalized, the one without run-once work too.
    let ended = j.iter().filter(|e| e["event"] == "context_ended").count();
    assert_eq!(ended, 2, "{j:#?}");
}

#[test]
fn a_main_once_service_runs_main_once_while_the_others_run_every_iteration() {
    let dir = TestDir::new("once_default");
    let body = format!(
        "[[dataframe]]\nname = \"d\"\n[[context]]\nname = \"C\"\ndataframes = [\"d\"]\n{}{}{}{}",
        service(
            "once",
            "probe",
            "Record",
            "config = { dataframe = \"d\", key = \"once\" }\nmain_once = true"
        ),
        service(
            "every",
            "probe",
            "Record",
            "config = { dataframe = \"d\", key = \"every\" }"
        ),
        service("stop", "hello", "StopAfter", "config = { count = 5 }"),
        service(
            "report",
            "probe",
            "Report",
            "config = { dataframe = \"d\", keys = [\"once\", \"every\"] }"
        ),
    );
    let out = run_manifest(&dir.manifest("m.toml", &body), &[]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(out.report("d", "once").as_deref(), Some("1"));
    assert_eq!(out.report("d", "every").as_deref(), Some("5"));
}

#[test]
fn a_main_once_service_whose_main_fails_calls_main_again_in_its_next_generation() {
    let body = until_done(&[service(
        "job",
        "faulty",
        "Faulty",
        "config = { error_in = [\"main\"], once = true, tag = \"once_retry\" }\nmain_once = true\nrestart_delay = \"10ms\"",
    )]);
    let (out, j) = run_journaled("once_retry", &body);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let failed = events_of(&j, "failed", "job");
    assert_eq!(failed.len(), 1, "{j:#?}");
    assert_eq!(failed[0]["generation"], 1);
    let done = events_of(&j, "main_once_done", "job");
    assert_eq!(done.len(), 1, "{j:#?}");
    assert_eq!(done[0]["generation"], 2);
}

#[test]
fn a_main_once_service_that_fails_for_good_ends_the_run_with_code_1() {
    let body = until_done(&[service(
        "job",
        "faulty",
        "Faulty",
        "config = { error_in = [\"main\"] }\nmain_once = true\nrestart = \"never\"",
    )]);
    let (out, j) = run_journaled("once_never", &body);
    assert_eq!(out.code(), 1, "{}", out.stderr);
    assert!(said_every_main_once_finished(&out), "{}", out.stderr);
    assert!(events_of(&j, "main_once_done", "job").is_empty(), "{j:#?}");
}
