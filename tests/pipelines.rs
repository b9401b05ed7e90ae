//! Pipelines through the real binary and the `stages` plugin: every item
//! reaches the sink once, queues stay within `queue_size`, a stop drains,
//! bad items are contained (dead-letter file) or stop the pipeline, source
//! workers partition, reference errors are load errors, and a plugin built
//! before pipelines existed (from the sources of that commit) still loads
//! and runs.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::compat::{Variant, build_fixture};
use crate::util::{self, Running, TestDir, events_of, journal, run, run_manifest};

/// A three-stage pipeline: `source` (Numbers with `source_config`),
/// `double` (Double with `double_keys` and `double_config`), `collect`
/// (Collect into `out.txt` in `dir` with `sink_keys`).
pub fn three_stages(
    dir: &TestDir,
    pipeline_keys: &str,
    source: &str,
    double: &str,
    double_config: &str,
    sink: &str,
) -> String {
    format!(
        r#"
[[pipeline]]
name = "numbers"
{pipeline_keys}

[[pipeline.stage]]
name = "count"
plugin = "stages"
export = "Numbers"
role = "source"
{source}

[[pipeline.stage]]
name = "double"
plugin = "stages"
export = "Double"
role = "transform"
config = {{ {double_config} }}
{double}

[[pipeline.stage]]
name = "collect"
plugin = "stages"
export = "Collect"
role = "sink"
config = {{ file = "{}" }}
{sink}
"#,
        dir.path.join("out.txt").display()
    )
}

/// The integers the sink wrote, one per line, in order.
pub fn collected(dir: &TestDir) -> Vec<i64> {
    std::fs::read_to_string(dir.path.join("out.txt"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

fn finished(events: &[Value]) -> &Value {
    events
        .iter()
        .find(|e| e["event"] == "pipeline_finished")
        .expect("a pipeline_finished event")
}

/// A `pipeline_finished` event's items in, out and failed.
fn figures(f: &Value) -> (u64, u64, u64) {
    let n = |k: &str| f[k].as_u64().unwrap_or_else(|| panic!("no {k} in {f}"));
    (n("items_in"), n("items_out"), n("items_failed"))
}

/// The last `stage_stats` of `stage`.
fn last_stats<'a>(events: &'a [Value], stage: &str) -> &'a Value {
    events
        .iter()
        .rev()
        .find(|e| e["event"] == "stage_stats" && e["stage"] == stage)
        .expect("stage_stats")
}

/// Starts `otools run` on `body` (as `m.toml` in `dir`) with the journal
/// `events.jsonl`; the manifest, the journal's path and the host.
fn start_in(dir: &TestDir, body: &str) -> (std::path::PathBuf, std::path::PathBuf, Running) {
    let m = dir.manifest("m.toml", body);
    let events = dir.path.join("events.jsonl");
    let running = Running::start_with(&m, &["--events", events.to_str().unwrap()]);
    (m, events, running)
}

/// [`start_in`] on [`three_stages`] without pipeline keys.
fn start_three(
    dir: &TestDir,
    source: &str,
    double: &str,
    double_config: &str,
    sink: &str,
) -> (std::path::PathBuf, std::path::PathBuf, Running) {
    start_in(
        dir,
        &three_stages(dir, "", source, double, double_config, sink),
    )
}

fn run_in(dir: &TestDir, body: &str) -> (util::Output, Vec<Value>) {
    let m = dir.manifest("m.toml", body);
    let events = dir.path.join("events.jsonl");
    let out = run_manifest(&m, &["--events", events.to_str().unwrap()]);
    (out, journal(&events))
}

#[test]
fn three_stages_deliver_each_doubled_item_once_and_each_transform_worker_sets_up_and_finalizes_once()
 {
    let dir = TestDir::new("pipe-three");
    let (out, events) = run_in(
        &dir,
        &three_stages(&dir, "", "config = { to = 1000 }", "threads = 4", "", ""),
    );
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let got = collected(&dir);
    assert_eq!(got.len(), 1000, "each item once");
    let set: BTreeSet<i64> = got.into_iter().collect();
    assert_eq!(set, (1..=1000).map(|n| n * 2).collect::<BTreeSet<_>>());
    let mut processed = 0;
    for w in 0..4 {
        let worker = format!("double.{w}");
        let messages = out.messages_of(&worker);
        let setups: Vec<_> = messages.iter().filter(|m| m.starts_with("setup")).collect();
        let finals: Vec<_> = messages
            .iter()
            .filter(|m| m.starts_with("finalize"))
            .collect();
        assert_eq!(setups, [&format!("setup worker {w} of 4")], "{messages:?}");
        assert_eq!(finals.len(), 1, "{messages:?}");
        // Its count at finalize includes every item it got: none came later.
        processed += finals[0]
            .rsplit(" after ")
            .next()
            .and_then(|n| n.trim_end_matches(" items").parse::<u64>().ok())
            .unwrap();
        assert_eq!(events_of(&events, "started", &worker).len(), 1);
        assert_eq!(events_of(&events, "finalized", &worker).len(), 1);
    }
    assert_eq!(processed, 1000, "the workers' counts at finalize add up");
    let f = finished(&events);
    assert_eq!(
        (
            &f["items_in"],
            &f["items_out"],
            &f["items_failed"],
            &f["outcome"]
        ),
        (&1000.into(), &1000.into(), &0.into(), &"completed".into()),
        "{f}"
    );
}

#[test]
fn a_slow_sink_never_lets_its_queue_exceed_queue_size() {
    let dir = TestDir::new("pipe-slow");
    let body = format!(
        r#"
[[pipeline]]
name = "slow"
stats_interval = "20ms"

[[pipeline.stage]]
plugin = "stages"
export = "Numbers"
role = "source"
config = {{ to = 150 }}

[[pipeline.stage]]
plugin = "stages"
export = "Collect"
role = "sink"
queue_size = 4
config = {{ file = "{}", delay_ms = 2 }}
"#,
        dir.path.join("out.txt").display()
    );
    let (out, events) = run_in(&dir, &body);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(collected(&dir), (1..=150).collect::<Vec<_>>());
    let stats: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "stage_stats" && e["stage"] == "Collect")
        .collect();
    assert!(stats.len() >= 2, "{stats:?}");
    for s in &stats {
        assert_eq!(s["queue_size"], 4);
        assert!(s["queue_depth"].as_u64().unwrap() <= 4, "{s}");
        assert!(s["queue_high_water"].as_u64().unwrap() <= 4, "{s}");
    }
    // The source outran the sink, so the queue filled up, and no further.
    assert_eq!(last_stats(&events, "Collect")["queue_high_water"], 4);
}

#[test]
fn sigterm_in_the_middle_of_an_endless_source_drains_with_items_in_equal_to_items_out() {
    let dir = TestDir::new("pipe-sigterm");
    let (_, events, running) = start_three(
        &dir,
        "config = { every_ms = 1 }",
        "threads = 2\nqueue_size = 16",
        "delay_ms = 1",
        "queue_size = 16",
    );
    let deadline = std::time::Instant::now() + util::DEADLINE;
    while collected(&dir).len() < 50 {
        assert!(
            std::time::Instant::now() < deadline,
            "no items reached the sink"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    running.signal("TERM");
    let out = running.finish();
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let events = journal(&events);
    let f = finished(&events);
    assert_eq!(f["outcome"], "stopped", "{f}");
    assert_eq!(f["items_failed"], 0, "{f}");
    assert_eq!(
        f["items_in"], f["items_out"],
        "nothing accepted is lost: {f}"
    );
    assert_eq!(
        collected(&dir).len() as u64,
        f["items_out"].as_u64().unwrap()
    );
    // Sources finalize first, sinks last, after they drained.
    let at = |service: &str| {
        events
            .iter()
            .position(|e| e["event"] == "finalized" && e["service"] == service)
            .unwrap_or_else(|| panic!("{service} was not finalized"))
    };
    assert!(at("count.0") < at("double.0") && at("count.0") < at("double.1"));
    assert!(at("double.0") < at("collect.0") && at("double.1") < at("collect.0"));
}

#[test]
fn failing_and_panicking_items_go_to_the_dead_letter_file_while_every_other_item_reaches_the_sink()
{
    let dir = TestDir::new("pipe-dead");
    let (out, events) = run_in(
        &dir,
        &three_stages(
            &dir,
            "",
            "config = { to = 100 }",
            "threads = 2",
            "fail_on = [7, 50], panic_on = [13]",
            "",
        ),
    );
    assert_eq!(out.code(), 0, "bad items are contained: {}", out.stderr);
    let expected: BTreeSet<i64> = (1..=100)
        .filter(|n| ![7, 13, 50].contains(n))
        .map(|n| n * 2)
        .collect();
    let got = collected(&dir);
    assert_eq!(got.len(), 97);
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), expected);
    let dead: Vec<Value> = std::fs::read_to_string(dir.path.join("numbers.dead-letter.jsonl"))
        .expect("the dead-letter file")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut items: Vec<i64> = dead.iter().map(|d| d["value"].as_i64().unwrap()).collect();
    items.sort_unstable();
    assert_eq!(items, [7, 13, 50], "{dead:?}");
    for d in &dead {
        assert_eq!(d["pipeline"], "numbers");
        assert_eq!(d["stage"], "double");
        assert_eq!(d["item"], d["value"], "the item's number from the source");
        let error = d["error"].as_str().unwrap();
        let value = d["value"].as_i64().unwrap();
        let want = if value == 13 {
            "panicked: injected panic on item 13"
        } else {
            "failed: injected error on item"
        };
        assert!(error.starts_with(want), "{d}");
    }
    // The panicking worker was replaced in place; the log names the item.
    let failed: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "item_failed")
        .collect();
    assert_eq!(failed.len(), 3);
    assert_eq!(
        events.iter().filter(|e| e["event"] == "restarting").count(),
        1
    );
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "started" && e["generation"] == 2)
    );
    assert!(
        out.messages()
            .iter()
            .any(|m| m.starts_with("item 13 failed in stage double: panicked")),
        "{}",
        out.stderr
    );
    let f = finished(&events);
    assert_eq!(
        (&f["items_in"], &f["items_out"], &f["items_failed"]),
        (&100.into(), &97.into(), &3.into())
    );
}

#[test]
fn a_hung_item_is_failed_and_its_worker_replaced_while_every_other_item_reaches_the_sink() {
    let dir = TestDir::new("pipe-hang");
    let (out, events) = run_in(
        &dir,
        &three_stages(
            &dir,
            "",
            "config = { to = 40 }",
            "watchdog = \"100ms\"",
            "hang_on = [5], hang_ms = 400",
            "",
        ),
    );
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let got: BTreeSet<i64> = collected(&dir).into_iter().collect();
    let expected: BTreeSet<i64> = (1..=40).filter(|n| *n != 5).map(|n| n * 2).collect();
    assert_eq!(got, expected);
    let hung = events_of(&events, "hung", "double.0");
    assert_eq!(hung.len(), 1, "{hung:?}");
    assert_eq!(hung[0]["entry"], "process");
    assert_eq!(events_of(&events, "abandoned", "double.0").len(), 1);
    assert!(
        events_of(&events, "started", "double.0")
            .iter()
            .any(|e| e["generation"] == 2),
        "the worker was replaced in place"
    );
    let dead = std::fs::read_to_string(dir.path.join("numbers.dead-letter.jsonl")).unwrap();
    let dead: Value = serde_json::from_str(dead.trim()).unwrap();
    assert_eq!((&dead["item"], &dead["value"]), (&5.into(), &Value::Null));
    assert!(
        dead["error"].as_str().unwrap().starts_with("hung: process"),
        "{dead}"
    );
    let f = finished(&events);
    assert_eq!(
        (&f["items_in"], &f["items_out"], &f["items_failed"]),
        (&40.into(), &39.into(), &1.into())
    );
}

/// Runs `body`, which must fail: exit code 1, `message` on stderr, the
/// outcome `failed`, and every item accounted for; returns the journal and
/// the items in, out and failed.
fn run_failing(dir: &TestDir, body: &str, message: &str) -> (Vec<Value>, (u64, u64, u64)) {
    let (out, events) = run_in(dir, body);
    assert_eq!(out.code(), 1, "{}", out.stderr);
    assert!(out.stderr.contains(message), "{}", out.stderr);
    let f = finished(&events);
    assert_eq!(f["outcome"], "failed", "{f}");
    let (i, o, x) = figures(f);
    assert_eq!(i, o + x, "every item is accounted for: {f}");
    (events, (i, o, x))
}

#[test]
fn a_stage_whose_last_worker_stays_down_fails_its_remaining_items_and_the_run() {
    let dir = TestDir::new("pipe-down");
    let body = three_stages(
        &dir,
        "",
        "config = { to = 50 }",
        "restart = \"never\"",
        "panic_on = [10]",
        "",
    );
    let (events, (_, out, _)) = run_failing(&dir, &body, "stage double has no worker left");
    assert_eq!(events_of(&events, "stopped", "double.0").len(), 1);
    assert_eq!(out, 9, "items 1 to 9 went through");
    assert_eq!(collected(&dir), (1..=9).map(|n| n * 2).collect::<Vec<_>>());
}

#[test]
fn stop_pipeline_stops_at_a_bad_item_with_a_non_zero_exit_naming_it() {
    let dir = TestDir::new("pipe-stop");
    let body = three_stages(
        &dir,
        "on_item_error = \"stop_pipeline\"",
        "config = { every_ms = 1 }",
        "",
        "fail_on = [20]",
        "",
    );
    let (_, (_, _, failed)) = run_failing(&dir, &body, "item 20 failed in stage double");
    assert_eq!(failed, 1);
    assert!(!collected(&dir).contains(&40));
}

#[test]
fn two_partitioned_source_workers_yield_each_item_once() {
    let dir = TestDir::new("pipe-partition");
    let (out, _) = run_in(
        &dir,
        &three_stages(
            &dir,
            "",
            "threads = 2\npartitioned = true\nconfig = { to = 500 }",
            "",
            "factor = 1",
            "",
        ),
    );
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let mut got = collected(&dir);
    got.sort_unstable();
    assert_eq!(got, (1..=500).collect::<Vec<_>>());
}

#[test]
fn exit_when_pipelines_finished_ends_a_deployment_whose_contexts_run_for_ever() {
    let dir = TestDir::new("pipe-exit-when");
    let body = format!(
        r#"exit_when = "pipelines_finished"

[[dataframe]]
name = "shared"

[[context]]
name = "Main"
period = "10ms"
dataframes = ["shared"]

[[context.service]]
name = "tick"
plugin = "counter"
export = "Increment"
config = {{ dataframe = "shared", key = "ticks" }}
{}"#,
        three_stages(&dir, "", "config = { to = 10 }", "", "", "")
    );
    let (out, events) = run_in(&dir, &body);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(collected(&dir).len(), 10);
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "context_ended" && e["context"] == "Main")
    );
    assert!(
        out.messages()
            .iter()
            .any(|m| m.contains("every pipeline has finished")),
        "{}",
        out.stderr
    );
}

#[test]
fn reference_errors_are_load_errors_naming_file_line_and_key() {
    let dir = TestDir::new("pipe-errors");
    let m = dir.manifest(
        "bad.toml",
        r#"
[[pipeline]]
name = "a"
[[pipeline.stage]]
plugin = "stages"
export = "Numbers"
role = "transform"
[[pipeline.stage]]
plugin = "stages"
export = "Nope"
role = "sink"

[[pipeline]]
name = "b"
[[pipeline.stage]]
plugin = "stages"
export = "Double"
role = "transform"
[[pipeline.stage]]
plugin = "stages"
export = "Sum"
role = "sink"

[[pipeline]]
name = "c"
[[pipeline.stage]]
plugin = "stages"
export = "Numbers"
role = "source"
threads = 2

[[pipeline]]
name = "d"
[[pipeline.stage]]
plugin = "missing"
export = "Numbers"
role = "source"
[[pipeline.stage]]
plugin = "stages"
export = "Sum"
role = "sink"
config = { delay_ms = "slow" }
"#,
    );
    let out = run(&["check", m.to_str().unwrap()]);
    assert_eq!(out.code(), 2, "{}", out.stderr);
    let file = m.display().to_string();
    for (line, key, text) in [
        (
            10,
            "pipeline \"a\" > stage \"Numbers\" > role",
            "has no source",
        ),
        (
            13,
            "pipeline \"a\" > stage \"Nope\" > export",
            "exports no stage named `Nope`; its stages: Numbers (source), Double (transform), Collect (sink), Sum (sink)",
        ),
        (
            21,
            "pipeline \"b\" > stage \"Double\" > role",
            "has no source",
        ),
        (28, "pipeline \"c\" > stage", "has no consumer"),
        (
            33,
            "pipeline \"c\" > stage \"Numbers\" > threads",
            "would produce every item 2 times",
        ),
        (
            38,
            "pipeline \"d\" > stage \"Numbers\" > plugin",
            "plugin library not found",
        ),
        (
            45,
            "pipeline \"d\" > stage \"Sum\" > config > delay_ms",
            "invalid type",
        ),
    ] {
        let prefix = format!("error: {file}:{line}:");
        assert!(
            out.stderr
                .lines()
                .any(|l| l.starts_with(&prefix) && l.contains(key) && l.contains(text)),
            "no error at line {line} for {key} ({text}):\n{}",
            out.stderr
        );
    }
    // The export of the wrong role (a source as a transform) is named as such.
    assert!(
        out.stderr
            .contains("`Numbers` is a source, not a transform"),
        "{}",
        out.stderr
    );
}

/// A service for a plugin built against the ABI before pipelines.
const OLD_PLUGIN: &str = r#"
//! A plugin built against otools-abi 0.3.0, before pipelines existed.
use otools_api::{Context, NoConfig, Result, Service};

/// Logs once and ends its context.
pub struct Once;

impl Service for Once {
    type Config = NoConfig;
    fn new(_: NoConfig) -> Result<Self> {
        Ok(Once)
    }
    fn main(&self, ctx: &Context<'_>) -> Result<()> {
        ctx.info("the old plugin ran");
        ctx.terminate_context();
        Ok(())
    }
}

otools_api::export_plugin! { services: [Once] }
"#;

/// The commit before pipelines: otools-abi 0.3.0, no stage entry points.
const BEFORE_PIPELINES: &str = "ae49325959c895ed081e6f3f434fb8ede215c64c";

fn unchanged(s: String) -> String {
    s
}

#[test]
fn a_plugin_built_before_pipelines_still_loads_and_runs_and_exports_no_stage() {
    let dir = TestDir::new("pipe-old-abi");
    let lib = build_fixture(
        &dir,
        "oldabi",
        &Variant {
            abi_version: "0.3.0",
            api_version: "0.2.0",
            edit_abi: &unchanged,
            edit_context: &unchanged,
            plugin: OLD_PLUGIN,
            sources_at: Some(BEFORE_PIPELINES),
        },
    );
    let lib = lib.display();
    let body = format!(
        r#"
[[context]]
name = "Old"

[[context.service]]
name = "old"
plugin = "{lib}"
export = "Once"
{}"#,
        three_stages(&dir, "", "config = { to = 5 }", "", "", "")
    );
    let (out, events) = run_in(&dir, &body);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(out.messages_of("old"), ["the old plugin ran"]);
    assert_eq!(finished(&events)["items_out"], 5);

    let stage = dir.manifest(
        "stage.toml",
        &format!(
            r#"
[[pipeline]]
name = "p"
[[pipeline.stage]]
plugin = "{lib}"
export = "Once"
role = "source"
[[pipeline.stage]]
plugin = "stages"
export = "Sum"
role = "sink"
"#
        ),
    );
    let out = run(&["check", stage.to_str().unwrap()]);
    assert_eq!(out.code(), 2);
    assert!(
        out.stderr
            .contains("the library was built before pipelines existed (otools-abi 0.3.0)"),
        "{}",
        out.stderr
    );
}

#[test]
fn otools_stop_drains_a_pipeline_only_host_which_status_shows_running_until_then() {
    let dir = TestDir::new("pipe-control");
    let m = dir.manifest(
        "m.toml",
        &three_stages(&dir, "", "config = { every_ms = 1 }", "", "", ""),
    );
    let events = dir.path.join("events.jsonl");
    let mut running = Running::start_with(&m, &["--events", events.to_str().unwrap()]);
    running.wait_for("setup worker 0 of 1");
    let status = run(&["status", "--json", m.to_str().unwrap()]);
    assert_eq!(status.code(), 0, "{}", status.stderr);
    let status: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status["state"], "running", "{status}");
    let stop = run(&["stop", m.to_str().unwrap()]);
    assert_eq!(stop.code(), 0, "{}", stop.stderr);
    let out = running.finish();
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let events = journal(&events);
    let f = finished(&events);
    assert_eq!(f["outcome"], "stopped", "{f}");
    assert_eq!(f["items_in"], f["items_out"], "{f}");
}

/// The stage `name` of the first pipeline in a status.
fn stage<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["pipelines"][0]["stages"]
        .as_array()
        .and_then(|stages| stages.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no stage {name} in {status:#?}"))
}

/// Per stage, `items_in == items_done + items_failed`, and each stage took
/// in what the previous one sent on (`stages` of `pipeline_finished`).
fn assert_stage_accounting(f: &Value) {
    let stages = f["stages"].as_array().expect("stages");
    let n = |s: &Value, k: &str| s[k].as_u64().unwrap_or_else(|| panic!("no {k} in {s}"));
    for s in stages {
        assert_eq!(
            n(s, "items_in"),
            n(s, "items_done") + n(s, "items_failed"),
            "{s}"
        );
    }
    for pair in stages.windows(2) {
        assert_eq!(n(&pair[0], "items_out"), n(&pair[1], "items_in"), "{f}");
    }
}

#[test]
fn status_shows_each_stage_with_its_workers_queue_within_queue_size_and_item_counts() {
    let dir = TestDir::new("pipe-status");
    let (m, events, running) = start_three(
        &dir,
        "",
        "threads = 2\nqueue_size = 8\nrestart_delay = \"10ms\"",
        "panic_on = [6], delay_ms = 2",
        "queue_size = 4",
    );
    // The transform is slower than the endless source: its queue fills up.
    let status = crate::control::wait_status(&m, |s| {
        s["pipelines"][0]["stages"][2]["items_done"].as_u64() >= Some(20)
            && s["pipelines"][0]["stages"][1]["queue_high_water"] == 8
            && s["pipelines"][0]["stages"][1]["items_failed"] == 1
            && s["pipelines"][0]["stages"][1]["workers"]
                .as_array()
                .is_some_and(|w| w.iter().all(|w| w["state"] == "serving"))
    });
    let p = &status["pipelines"][0];
    assert_eq!(
        (&p["name"], &p["state"]),
        (&"numbers".into(), &"running".into())
    );
    for s in p["stages"].as_array().unwrap() {
        assert!(
            s["queue_high_water"].as_u64() <= s["queue_size"].as_u64(),
            "{s}"
        );
        assert!(s["queue_depth"].as_u64() <= s["queue_size"].as_u64(), "{s}");
    }
    let count = stage(&status, "count");
    assert_eq!(
        (&count["role"], &count["queue_size"]),
        (&"source".into(), &0.into())
    );
    let collect = stage(&status, "collect");
    assert_eq!(
        (&collect["role"], &collect["queue_size"]),
        (&"sink".into(), &4.into())
    );
    // Item 6 panicked in one `double` worker, which was replaced in place.
    let double = stage(&status, "double");
    assert_eq!(double["items_failed"], 1, "{double}");
    let workers = double["workers"].as_array().unwrap();
    let names: Vec<&Value> = workers.iter().map(|w| &w["name"]).collect();
    assert_eq!(names, ["double.0", "double.1"]);
    let restarted: Vec<&Value> = workers.iter().filter(|w| w["restarts"] == 1).collect();
    assert_eq!(restarted.len(), 1, "{workers:?}");
    assert_eq!(restarted[0]["generation"], 2);
    assert!(
        restarted[0]["last_failure"]
            .as_str()
            .is_some_and(|f| f.contains("injected panic on item 6")),
        "{workers:?}"
    );
    let text = run(&["status", m.to_str().unwrap()]);
    assert_eq!(text.code(), 0, "{}", text.stderr);
    assert!(
        text.stdout.contains("pipeline numbers: running\n"),
        "{}",
        text.stdout
    );
    let row = text
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some("collect"))
        .unwrap_or_else(|| panic!("no collect row:\n{}", text.stdout));
    assert_eq!(row.split_whitespace().nth(1), Some("sink"), "{row}");
    assert!(text.stdout.contains("worker double.1 "), "{}", text.stdout);
    running.signal("TERM");
    let out = running.finish();
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_stage_accounting(finished(&journal(&events)));
}

#[test]
fn a_transform_making_several_items_of_one_accounts_per_stage() {
    let dir = TestDir::new("pipe-fanout");
    let (out, events) = run_in(
        &dir,
        &three_stages(
            &dir,
            "",
            "config = { to = 100 }",
            "threads = 2",
            "copies = 3, fail_on = [5]",
            "",
        ),
    );
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(collected(&dir).len(), 99 * 3);
    let f = finished(&events);
    assert_eq!(figures(f), (100, 297, 1), "{f}");
    assert_stage_accounting(f);
    let double = &f["stages"][1];
    assert_eq!(
        (
            &double["items_in"],
            &double["items_done"],
            &double["items_out"]
        ),
        (&100.into(), &99.into(), &297.into()),
        "{f}"
    );
}
