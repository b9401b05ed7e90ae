use serde_json::Value;

use crate::util::{Output, Running, TestDir};

/// Runs a context holding `faulty` (a service or trigger declaration) next
/// to a healthy greeter; waits for the failure to be reported and for the
/// greeter to go on after it; then stops the host with SIGTERM.
fn contained(name: &str, faulty: &str, entry: &str, kind: &str) -> Output {
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
    let mut host = Running::start(&dir.manifest("m.toml", &body));
    let failure = format!("{entry} {kind}: injected fault in {entry}");
    if entry == "finalize" {
        host.wait_for("hello, world, from main (call 3)");
        host.signal("TERM");
        host.wait_for(&failure);
    } else {
        host.wait_for(&failure);
        // The healthy neighbour keeps going after the failure.
        host.wait_for("from main (call");
        host.wait_for("from main (call");
        host.signal("TERM");
    }
    let out = host.finish();
    let logs: Vec<Value> = out.logs();
    let line = logs
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(&failure))
        })
        .unwrap_or_else(|| panic!("no failure line: {}", out.stderr));
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
    out
}

fn service(entry: &str, list: &str) -> String {
    let has_loop = entry == "loop";
    format!(
        "[[context.service]]\nname = \"bad\"\nplugin = \"faulty\"\nexport = \"Faulty\"\nconfig = {{ {list} = [\"{entry}\"], has_loop = {has_loop} }}\n"
    )
}

fn condition(entry: &str, list: &str) -> String {
    format!(
        "[[context.trigger]]\nname = \"t\"\ncondition = [ {{ name = \"bad\", plugin = \"faulty\", export = \"FaultyCondition\", config = {{ {list} = [\"{entry}\"] }} }} ]\n\
         service = [ {{ plugin = \"probe\", export = \"Record\", config = {{ dataframe = \"d\" }} }} ]\n"
    )
}

#[test]
fn a_panic_or_error_in_every_service_entry_point_is_contained_and_reported() {
    for entry in ["setup", "main", "loop", "finalize"] {
        for (list, kind) in [("panic_in", "panicked"), ("error_in", "failed")] {
            let out = contained(
                &format!("svc_{entry}_{list}"),
                &service(entry, list),
                entry,
                kind,
            );
            let expected = if entry == "setup" { 1 } else { 0 };
            assert_eq!(out.code(), expected, "{entry} {kind}: {}", out.stderr);
        }
    }
}

#[test]
fn a_panic_or_error_in_every_condition_entry_point_is_contained_and_reported() {
    for entry in ["setup", "check", "finalize"] {
        for (list, kind) in [("panic_in", "panicked"), ("error_in", "failed")] {
            let out = contained(
                &format!("cond_{entry}_{list}"),
                &condition(entry, list),
                entry,
                kind,
            );
            let expected = if entry == "setup" { 1 } else { 0 };
            assert_eq!(out.code(), expected, "{entry} {kind}: {}", out.stderr);
        }
    }
}

#[test]
fn a_panic_message_carries_the_plugin_source_location() {
    let out = contained(
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
