use crate::util::{TestDir, run_manifest};

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
