//! A panic or an error in any entry point is caught at the boundary,
//! reported with everything needed to find it, and handled by the restart
//! policy; the host and its healthy services go on.

use serde_json::Value;

use crate::util::{Output, Running, TestDir, events_of, wait_for_events};

const POLICY: &str = "max_restarts = 2\nrestart_delay = \"1ms\"\nrestart_window = \"10m\"\n";

/// Runs a context holding `faulty` (a service or trigger declaration named
/// `bad`) next to a healthy greeter, waits until the fault has run its
/// course in the journal, checks the greeter goes on, then sends SIGTERM.
fn contained(name: &str, faulty: &str, entry: &str, kind: &str) -> (Output, Vec<Value>) {
    let dir = TestDir::new(name);
    let body = format!(
        r#"[[dataframe]]
name = "d"
[[context]]
name = "C"
period = "2ms"
dataframes = ["d"]
{faulty}
[[context.service]]
name = "healthy"
plugin = "hello"
export = "Greeter"
config = {{ loop_interval_ms = 5 }}
"#
    );
    let events = dir.path.join("events.jsonl");
    let mut host = Running::start_with(
        &dir.manifest("m.toml", &body),
        &["--events", events.to_str().unwrap()],
    );
    if entry == "finalize" {
        host.wait_for("hello, world, from main (call 3)");
        host.signal("TERM");
    } else {
        // Three generations fail (two restarts allowed), then it gives up.
        wait_for_events(&events, 1, |e| e["event"] == "gave_up");
        // The healthy neighbour keeps going after that.
        host.wait_for("from main (call");
        host.wait_for("from main (call");
        host.signal("TERM");
    }
    let out = host.finish();
    let journal = crate::util::journal(&events);
    let failure = format!("{entry} {kind}: injected fault in {entry}");
    let logs = out.logs();
    let line = logs
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(&failure))
        })
        .unwrap_or_else(|| panic!("no failure line `{failure}`: {}", out.stderr));
    assert_eq!(line["level"], "ERROR");
    assert_eq!(line["context"], "C");
    assert_eq!(line["service"], "bad");
    assert_eq!(line["entry"], entry);
    assert!(
        line["library"]
            .as_str()
            .is_some_and(|l| l.ends_with("libfaulty.so")),
        "{line}"
    );
    assert!(
        line["export"]
            .as_str()
            .is_some_and(|e| e.starts_with("Faulty")),
        "{line}"
    );
    (out, journal)
}

fn check_journal(journal: &[Value], entry: &str, kind: &str) {
    let failed = events_of(journal, "failed", "bad");
    let expected = if entry == "finalize" { 1 } else { 3 };
    assert_eq!(
        failed.len(),
        expected,
        "one failure per injection: {failed:#?}"
    );
    for f in &failed {
        assert_eq!(f["entry"], entry);
        let reason = f["reason"].as_str().unwrap_or_default();
        assert!(
            reason.starts_with(&format!("{kind}: injected fault in {entry}")),
            "{reason}"
        );
    }
    if entry != "finalize" {
        let generations: Vec<u64> = failed
            .iter()
            .map(|f| f["generation"].as_u64().unwrap())
            .collect();
        assert_eq!(generations, [1, 2, 3], "each failure is a new generation");
        assert_eq!(events_of(journal, "restarting", "bad").len(), 2);
        assert_eq!(events_of(journal, "gave_up", "bad").len(), 1);
    }
}

fn service(entry: &str, list: &str) -> String {
    let has_loop = entry == "loop";
    format!(
        "[[context.service]]\nname = \"bad\"\nplugin = \"faulty\"\nexport = \"Faulty\"\nconfig = {{ {list} = [\"{entry}\"], has_loop = {has_loop} }}\n{POLICY}"
    )
}

fn condition(entry: &str, list: &str) -> String {
    format!(
        "[[context.trigger]]\nname = \"t\"\ncondition = [ {{ name = \"bad\", plugin = \"faulty\", export = \"FaultyCondition\", config = {{ {list} = [\"{entry}\"] }}, \
         max_restarts = 2, restart_delay = \"1ms\", restart_window = \"10m\" }} ]\n\
         service = [ {{ plugin = \"probe\", export = \"Record\", config = {{ dataframe = \"d\" }} }} ]\n"
    )
}

#[test]
fn a_panic_or_error_in_every_service_entry_point_is_contained_and_restarted() {
    for entry in ["setup", "main", "loop", "finalize"] {
        for (list, kind) in [("panic_in", "panicked"), ("error_in", "failed")] {
            let (out, journal) = contained(
                &format!("svc_{entry}_{list}"),
                &service(entry, list),
                entry,
                kind,
            );
            check_journal(&journal, entry, kind);
            // Giving up is a failure of the deployment; a failing finalize is only reported.
            let expected = if entry == "finalize" { 0 } else { 1 };
            assert_eq!(out.code(), expected, "{entry} {kind}: {}", out.stderr);
        }
    }
}

#[test]
fn a_panic_or_error_in_every_condition_entry_point_is_contained_and_restarted() {
    for entry in ["setup", "check", "finalize"] {
        for (list, kind) in [("panic_in", "panicked"), ("error_in", "failed")] {
            let (out, journal) = contained(
                &format!("cond_{entry}_{list}"),
                &condition(entry, list),
                entry,
                kind,
            );
            check_journal(&journal, entry, kind);
            let expected = if entry == "finalize" { 0 } else { 1 };
            assert_eq!(out.code(), expected, "{entry} {kind}: {}", out.stderr);
        }
    }
}

#[test]
fn a_panic_message_carries_the_plugin_source_location() {
    let (out, _) = contained(
        "panic_location",
        &service("main", "panic_in"),
        "main",
        "panicked",
    );
    assert!(
        out.messages().iter().any(
            |m| m.starts_with("main panicked: injected fault in main (at ")
                && m.contains("lib.rs:")
        ),
        "{}",
        out.stderr
    );
    // The plugin's own panic hook output is captured, not printed.
    assert!(!out.stderr.contains("thread '"), "{}", out.stderr);
}

#[test]
fn a_journal_that_cannot_be_written_is_reported_once_counted_and_the_host_runs_on() {
    let dir = TestDir::new("journal_full");
    let m = dir.manifest(
        "m.toml",
        r#"
[[context]]
name = "C"
[[context.service]]
name = "stop"
plugin = "hello"
export = "StopAfter"
config = { count = 3 }
"#,
    );
    // Every write to /dev/full fails with ENOSPC.
    let out = crate::util::run_manifest(&m, &["--events", "/dev/full"]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let messages = out.messages();
    let first: Vec<_> = messages
        .iter()
        .filter(|m| m.starts_with("cannot write to the event journal: "))
        .collect();
    assert_eq!(first.len(), 1, "reported once: {}", out.stderr);
    assert!(first[0].contains("No space left on device"), "{first:?}");
    let lost: Vec<u64> = messages
        .iter()
        .filter_map(|m| {
            m.strip_prefix("the event journal lost ")?
                .strip_suffix(" event(s) to write errors")?
                .parse()
                .ok()
        })
        .collect();
    assert_eq!(lost.len(), 1, "one summary at exit: {}", out.stderr);
    assert!(
        lost[0] > 1,
        "every lost event is counted, not only the reported one: {lost:?}"
    );
    assert!(
        messages.iter().any(|m| m == "every context ended"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_panic_in_a_plugin_destructor_is_reported_and_the_host_serves_on() {
    let dir = TestDir::new("drop_panic");
    let body = format!(
        r#"[[context]]
name = "C"
period = "2ms"
[[context.service]]
name = "bad"
plugin = "faulty"
export = "Faulty"
config = {{ error_in = ["main"], panic_in = ["drop"] }}
{POLICY}
[[context.service]]
name = "healthy"
plugin = "hello"
export = "Greeter"
config = {{ loop_interval_ms = 5 }}
"#
    );
    let events = dir.path.join("events.jsonl");
    let mut host = Running::start_with(
        &dir.manifest("m.toml", &body),
        &["--events", events.to_str().unwrap()],
    );
    // Each replacement drops the failed generation, whose destructor panics;
    // before the guard, the host died at the first one (and this fails at once).
    host.wait_for("generation 2 started");
    host.wait_for("generation 3 started");
    wait_for_events(&events, 1, |e| {
        e["event"] == "gave_up" && e["service"] == "bad"
    });
    host.wait_for("from main (call");
    host.wait_for("from main (call");
    host.signal("TERM");
    let out = host.finish();
    // Giving up is a failure of the deployment.
    assert_eq!(out.code(), 1, "{}", out.stderr);
    let reports: Vec<Value> = out
        .logs()
        .into_iter()
        .filter(|l| l["entry"] == "drop")
        .collect();
    let generations: Vec<u64> = crate::util::journal(&events)
        .iter()
        .filter(|e| e["event"] == "drop_panicked" && e["service"] == "bad")
        .map(|e| {
            assert!(
                e["reason"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("injected fault in drop (at ")),
                "{e}"
            );
            e["generation"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(
        generations,
        [1, 2, 3],
        "every dropped generation: {}",
        out.stderr
    );
    assert_eq!(reports.len(), 3, "{}", out.stderr);
    for r in &reports {
        assert_eq!(r["level"], "ERROR");
        assert_eq!(r["service"], "bad");
        assert_eq!(r["export"], "Faulty");
        assert!(
            r["library"]
                .as_str()
                .is_some_and(|l| l.ends_with("libfaulty.so")),
            "{r}"
        );
        assert!(
            r["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("drop panicked: injected fault in drop (at ")),
            "{r}"
        );
    }
}
