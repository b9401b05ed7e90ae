use crate::util::{Running, TestDir, events_of, run_manifest, wait_for_events};

#[test]
fn four_loops_incrementing_one_key_atomically_lose_none_of_100000_increments() {
    let dir = TestDir::new("atomic");
    let mut body = String::from(
        "[[dataframe]]\nname = \"counter\"\ninit = { count = 0 }\n[[context]]\nname = \"Workers\"\ndataframes = [\"counter\"]\n",
    );
    for i in 0..4 {
        body.push_str(&format!(
            "[[context.service]]\nname = \"w{i}\"\nplugin = \"counter\"\nexport = \"LoopIncrement\"\nconfig = {{ key = \"count\", times = 25000, batch = 50 }}\n"
        ));
    }
    body.push_str("[[context.service]]\nname = \"report\"\nplugin = \"probe\"\nexport = \"Report\"\nconfig = { dataframe = \"counter\", keys = [\"count\"] }\n");
    let out = run_manifest(&dir.manifest("m.toml", &body), &[]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    for i in 0..4 {
        assert_eq!(
            out.messages_of(&format!("w{i}")),
            ["done: 25000 increments of count"]
        );
    }
    assert_eq!(
        out.report("counter", "count").as_deref(),
        Some("100000"),
        "{}",
        out.stderr
    );
}

#[test]
fn an_operation_on_a_dataframe_locked_by_another_service_times_out_with_an_error() {
    let dir = TestDir::new("lock_timeout");
    let body = r#"
[[dataframe]]
name = "data"
[[dataframe]]
name = "signal"
[[context]]
name = "Holder"
dataframes = ["data", "signal"]
[[context.service]]
name = "hold"
plugin = "probe"
export = "HoldLock"
config = { dataframe = "data", signal = "signal" }
[[context]]
name = "Reader"
dataframes = ["data", "signal"]
[[context.service]]
name = "try"
plugin = "probe"
export = "TryLocked"
config = { dataframe = "data", signal = "signal", timeout_ms = 20 }
"#;
    let out = run_manifest(&dir.manifest("m.toml", body), &[]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let tried = out.messages_of("try");
    assert_eq!(tried.len(), 1, "{tried:?}");
    assert!(
        tried[0].starts_with("lock timeout: ") && tried[0].contains("timed out"),
        "{tried:?}"
    );
    assert_eq!(out.messages_of("hold"), ["released lock on data"]);
}

#[test]
fn initial_values_of_every_type_reach_plugins_and_absent_keys_read_as_absent() {
    let dir = TestDir::new("values");
    let body = r#"
[[dataframe]]
name = "d"
init = { i = 42, f = 1.5, b = true, s = "text", l = [1, "two"], m = { x = 1 } }
[[context]]
name = "C"
dataframes = ["d"]
[[context.service]]
name = "report"
plugin = "probe"
export = "Report"
config = { dataframe = "d", keys = ["i", "f", "b", "s", "l", "m", "nothing"] }
"#;
    let out = run_manifest(&dir.manifest("m.toml", body), &[]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let r = |k: &str| {
        out.report("d", k)
            .unwrap_or_else(|| panic!("no report of {k}: {}", out.stderr))
    };
    assert_eq!(r("i"), "42");
    assert_eq!(r("f"), "1.5");
    assert_eq!(r("b"), "true");
    assert_eq!(r("s"), "\"text\"");
    assert_eq!(r("l"), "[1, \"two\"]");
    assert_eq!(r("m"), "{x = 1}");
    assert_eq!(r("nothing"), "absent");
}

#[test]
fn a_service_cannot_use_a_dataframe_its_context_does_not_list() {
    let dir = TestDir::new("not_listed");
    let body = r#"
[[dataframe]]
name = "secret"
[[context]]
name = "C"
[[context.service]]
name = "rec"
plugin = "probe"
export = "Record"
config = { dataframe = "secret" }
[[context.service]]
name = "stop"
plugin = "hello"
export = "StopAfter"
config = { count = 1 }
"#;
    let out = run_manifest(&dir.manifest("m.toml", body), &[]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert!(
        out.messages()
            .iter()
            .any(|m| m
                == "main failed: dataframe `secret`: this context does not list the dataframe"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_refused_increment_stores_nothing_and_says_why() {
    let dir = TestDir::new("refused_increment");
    let body = r#"
[[dataframe]]
name = "d"
init = { f = 1.5, big = 9223372036854775807 }
[[context]]
name = "C"
dataframes = ["d"]
[[context.service]]
name = "inc_f"
plugin = "counter"
export = "Increment"
config = { dataframe = "d", key = "f", step = 1 }
restart = "never"
[[context.service]]
name = "inc_big"
plugin = "counter"
export = "Increment"
config = { dataframe = "d", key = "big", step = 1 }
restart = "never"
[[context.service]]
name = "stop"
plugin = "hello"
export = "StopAfter"
config = { count = 3 }
[[context.service]]
name = "report"
plugin = "probe"
export = "Report"
config = { dataframe = "d", keys = ["f", "big"] }
"#;
    let out = run_manifest(&dir.manifest("m.toml", body), &[]);
    assert_eq!(
        out.messages_of("inc_f"),
        ["main failed: dataframe key `f`: holds float, not an integer; the key keeps its value"],
        "{}",
        out.stderr
    );
    assert_eq!(
        out.messages_of("inc_big"),
        [
            "main failed: dataframe key `big`: adding 1 to 9223372036854775807 overflows a 64-bit integer; the key keeps its value"
        ],
        "{}",
        out.stderr
    );
    assert_eq!(out.report("d", "f").as_deref(), Some("1.5"));
    assert_eq!(
        out.report("d", "big").as_deref(),
        Some("9223372036854775807")
    );
    // A service that failed and was not replaced is a failure of the deployment.
    assert_eq!(out.code(), 1, "{}", out.stderr);
}

#[test]
fn a_write_fenced_while_it_waited_for_a_lease_never_lands_after_its_replacement_served() {
    let dir = TestDir::new("stale_lease_write");
    let body = r#"
[[dataframe]]
name = "data"
[[dataframe]]
name = "signal"
[[context]]
name = "Holder"
dataframes = ["data", "signal"]
[[context.service]]
name = "hold"
plugin = "probe"
export = "HoldLock"
config = { dataframe = "data", signal = "signal", release_on = "served" }
[[context]]
name = "Writers"
dataframes = ["data", "signal"]
[[context.service]]
name = "writer"
plugin = "probe"
export = "LeaseWriter"
config = { dataframe = "data", key = "marker", signal = "signal" }
watchdog = "500ms"
restart_delay = "1ms"
[[context.service]]
name = "report"
plugin = "probe"
export = "Report"
config = { dataframe = "data", keys = ["marker"] }
"#;
    let events = dir.path.join("events.jsonl");
    let mut host = Running::start_with(
        &dir.manifest("m.toml", body),
        &["--events", events.to_str().unwrap()],
    );
    // Generation 1 waits for the lock past its watchdog, generation 2
    // serves, then the holder releases the lock.
    host.wait_for("released lock on data");
    // Whatever generation 1 does once the lock is granted (a refused write,
    // or a write and then a refused log line), its first refused call is
    // journaled.
    let stale = |e: &serde_json::Value| e["generation"] == 1;
    let j = wait_for_events(&events, 1, |e| {
        e["event"] == "fenced_call" && e["service"] == "writer" && stale(e)
    });
    host.signal("TERM");
    let out = host.finish();
    let fenced: Vec<_> = events_of(&j, "fenced_call", "writer")
        .into_iter()
        .filter(|e| stale(e))
        .collect();
    assert_eq!(
        fenced[0]["call"], "set",
        "the stale write itself was refused: {fenced:?}"
    );
    assert!(
        out.messages_of("writer")
            .iter()
            .any(|m| m == "replacement served"),
        "{}",
        out.stderr
    );
    assert_eq!(
        out.report("data", "marker").as_deref(),
        Some("absent"),
        "the stale write became visible: {}",
        out.stderr
    );
    assert_eq!(out.code(), 0, "{}", out.stderr);
}
