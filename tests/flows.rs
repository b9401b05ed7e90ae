//! Durable event flows through the real binary, the real `flowsteps`
//! plugin and a real SQLite run store: routing on success and failure,
//! AND/OR expression events per sequence, duplicates, `max_concurrent` and
//! pools, `stop_on_error`, contained panics and hangs, recovery after a
//! kill -9, delays taken up by `continue`, and the refusals of `recover`.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::compat::build_old_plugin;
use crate::util::{Running, TestDir, journal, run, run_manifest, wait_for_events};

/// A manifest with one flow (`body` is everything from `[[flow]]` on).
fn flow(dir: &TestDir, body: &str) -> PathBuf {
    dir.manifest("m.toml", body)
}

/// A `[[flow.step]]` of `flowsteps::Work` named `name`; `extra` adds keys
/// (TOML lines).
pub fn step(name: &str, extra: &str) -> String {
    format!(
        "\n[[flow.step]]\nname = \"{name}\"\nplugin = \"flowsteps\"\nexport = \"Work\"\n{extra}\n"
    )
}

/// A `[[flow.association]]` from `event` to `steps` (a TOML array); `extra`
/// adds keys.
pub fn association(event: &str, steps: &str, extra: &str) -> String {
    format!("\n[[flow.association]]\nevent = \"{event}\"\nsteps = {steps}\n{extra}\n")
}

fn events_path(dir: &TestDir) -> PathBuf {
    dir.path.join("events.jsonl")
}

fn events_arg(dir: &TestDir) -> String {
    events_path(dir).to_string_lossy().into_owned()
}

/// The journal's events named `event` about `step`.
fn of<'a>(events: &'a [Value], event: &str, step: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["event"] == event && e["step"] == step)
        .collect()
}

/// The sequences (in journal order) of `step`'s events named `event`.
fn sequences(events: &[Value], event: &str, step: &str) -> Vec<String> {
    of(events, event, step)
        .iter()
        .map(|e| e["sequence"].as_str().unwrap().to_owned())
        .collect()
}

fn result(events: &[Value]) -> String {
    let f: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "flow_finished")
        .collect();
    assert_eq!(f.len(), 1, "{events:?}");
    f[0]["result"].as_str().unwrap().to_owned()
}

/// The most activations of `steps` running at once, from the journal
/// (`step_started` is written before the call, `step_finished` after it
/// returned, so this is at least what really ran at once).
fn most_at_once(events: &[Value], steps: &[&str]) -> usize {
    let (mut now, mut most) = (0usize, 0usize);
    for e in events {
        let mine = steps.iter().any(|s| e["step"] == *s);
        if mine && e["event"] == "step_started" {
            now += 1;
            most = most.max(now);
        } else if mine && e["event"] == "step_finished" {
            now -= 1;
        }
    }
    most
}

fn run_flow(m: &Path, dir: &TestDir, extra: &[&str]) -> (crate::util::Output, Vec<Value>) {
    let _ = std::fs::remove_file(events_path(dir));
    let ev = events_arg(dir);
    let mut args = vec!["--events", ev.as_str()];
    args.extend_from_slice(extra);
    let out = run_manifest(m, &args);
    (out, journal(&events_path(dir)))
}

#[test]
fn a_chain_routes_success_and_failure_in_order_per_sequence() {
    let dir = TestDir::new("flow_chain");
    let m = flow(
        &dir,
        &[
            r#"
[[flow]]
name = "orders"
store = "runs/orders.db"
events = ["go", "charged", "refused"]
start = ["go/1", "go/2"]
"#
            .to_owned(),
            step(
                "charge",
                r#"config = { fail = ["2"] }
on_success = "charged"
on_failure = "refused""#,
            ),
            step("ship", ""),
            step("notify", ""),
            association("go", r#"["charge"]"#, ""),
            association("charged", r#"["ship"]"#, ""),
            association("refused", r#"["notify"]"#, ""),
        ]
        .concat(),
    );
    let (out, ev) = run_flow(&m, &dir, &[]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert!(
        dir.path.join("runs/orders.db").is_file(),
        "the store folder is created"
    );
    assert_eq!(sequences(&ev, "step_finished", "ship"), vec!["1"]);
    assert_eq!(sequences(&ev, "step_finished", "notify"), vec!["2"]);
    let charge = of(&ev, "step_finished", "charge");
    let failed: Vec<_> = charge.iter().filter(|e| e["status"] == "failure").collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["sequence"], "2");
    assert!(
        failed[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("failed: injected failure in orders/charge sequence=2 attempt=1"),
        "{:?}",
        failed[0]
    );
    // In order for sequence 1: charge ended before ship started.
    let pos = |event: &str, step: &str| {
        ev.iter()
            .position(|e| e["event"] == event && e["step"] == step && e["sequence"] == "1")
            .unwrap()
    };
    assert!(pos("step_finished", "charge") < pos("step_started", "ship"));
    assert_eq!(result(&ev), "success");
    // The step saw its activation through its context.
    assert!(
        out.messages_of("ship")
            .contains(&String::from("ran orders/ship sequence=1 attempt=1")),
        "{:?}",
        out.messages()
    );
}

#[test]
fn or_fires_on_either_operand_and_and_waits_for_both_operands_of_a_sequence() {
    let dir = TestDir::new("flow_expr");
    let m = flow(
        &dir,
        &[
            r#"
[[flow]]
name = "expr"
events = ["x", "y"]
start = ["y/1", "x/2", "y/2", "x/3"]

[[flow.expression]]
name = "either"
expr = "or(x, y)"

[[flow.expression]]
name = "both"
expr = "and(x, or(y, y))"
"#
            .to_owned(),
            step("on_either", ""),
            step("on_both", ""),
            association("either", r#"["on_either"]"#, ""),
            association("both", r#"["on_both"]"#, ""),
        ]
        .concat(),
    );
    let (out, ev) = run_flow(&m, &dir, &[]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let mut either = sequences(&ev, "step_finished", "on_either");
    either.sort();
    // Sequence 1 raised only the second operand of the OR.
    assert_eq!(either, vec!["1", "2", "3"]);
    assert_eq!(sequences(&ev, "step_finished", "on_both"), vec!["2"]);
    // The ANDs of sequences 1 and 3 never completed: reported, not dropped.
    let mut unsatisfied: Vec<(String, Value)> = ev
        .iter()
        .filter(|e| e["event"] == "and_unsatisfied")
        .map(|e| {
            (
                e["sequence"].as_str().unwrap().to_owned(),
                e["missing"].clone(),
            )
        })
        .collect();
    unsatisfied.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        unsatisfied,
        vec![
            (String::from("1"), serde_json::json!(["x"])),
            (String::from("3"), serde_json::json!(["y"])),
        ]
    );
    assert!(
        out.logs().iter().any(|l| l["level"] == "WARNING"
            && l["message"]
                .as_str()
                .unwrap()
                .contains("expression event `both` was never raised for sequence 1")),
        "{}",
        out.stderr
    );
}

#[test]
fn an_event_raised_twice_for_a_sequence_is_a_journaled_duplicate_not_a_second_run() {
    let dir = TestDir::new("flow_dup");
    let m = flow(
        &dir,
        &[
            r#"
[[flow]]
name = "dup"
events = ["go"]
start = ["go/1", "go/1", "go/2"]
"#
            .to_owned(),
            step("task", ""),
            association("go", r#"["task"]"#, ""),
        ]
        .concat(),
    );
    let (out, ev) = run_flow(&m, &dir, &[]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let mut ran = sequences(&ev, "step_started", "task");
    ran.sort();
    assert_eq!(ran, vec!["1", "2"]);
    let dups: Vec<_> = ev.iter().filter(|e| e["event"] == "duplicate").collect();
    assert_eq!(dups.len(), 1, "{dups:?}");
    assert_eq!(
        (&dups[0]["kind"], &dups[0]["name"], &dups[0]["sequence"]),
        (&"event".into(), &"go".into(), &"1".into())
    );
}

#[test]
fn max_concurrent_and_a_pool_of_one_are_never_exceeded_and_everything_runs() {
    let dir = TestDir::new("flow_limits");
    let m = flow(
        &dir,
        &[
            r#"
[[flow]]
name = "limits"
events = ["go"]
start = ["go/1", "go/2", "go/3", "go/4", "go/5", "go/6"]

[[flow.pool]]
name = "db"
limit = 1
"#
            .to_owned(),
            step(
                "wide",
                r#"config = { sleep_ms = 50 }
max_concurrent = 2"#,
            ),
            step(
                "p",
                r#"config = { sleep_ms = 20, fail = ["1", "2"] }
pools = ["db"]
stop_on_error = false"#,
            ),
            step(
                "q",
                r#"config = { sleep_ms = 20 }
pools = ["db"]"#,
            ),
            association("go", r#"["wide", "p", "q"]"#, ""),
        ]
        .concat(),
    );
    let (out, ev) = run_flow(&m, &dir, &[]);
    // p's failures are not handled: the flow fails, but stop_on_error = false
    // on p lets everything else run.
    assert_eq!(out.code(), 1, "{}", out.stderr);
    assert_eq!(result(&ev), "failure");
    assert_eq!(of(&ev, "step_finished", "wide").len(), 6);
    assert_eq!(of(&ev, "step_finished", "p").len(), 6);
    assert_eq!(of(&ev, "step_finished", "q").len(), 6);
    assert!(most_at_once(&ev, &["wide"]) <= 2, "{ev:?}");
    // p and q share the pool of one, released after each failure too.
    assert_eq!(most_at_once(&ev, &["p", "q"]), 1, "{ev:?}");
}

#[test]
fn stop_on_error_lets_running_steps_finish_and_starts_no_new_ones() {
    let dir = TestDir::new("flow_stop");
    let m = flow(
        &dir,
        &[
            r#"
[[flow]]
name = "stopper"
store = "runs.db"
events = ["go", "slow_done"]
start = ["go/1"]
"#
            .to_owned(),
            step(
                "slow",
                r#"config = { sleep_ms = 300 }
on_success = "slow_done""#,
            ),
            step("bad", r#"config = { fail = ["*"] }"#),
            step("after", ""),
            association("go", r#"["slow", "bad"]"#, ""),
            association("slow_done", r#"["after"]"#, ""),
        ]
        .concat(),
    );
    let (out, ev) = run_flow(&m, &dir, &[]);
    assert_eq!(out.code(), 1, "{}", out.stderr);
    assert_eq!(result(&ev), "failure");
    // The running step finished; the one it activated never started.
    assert_eq!(of(&ev, "step_finished", "slow")[0]["status"], "success");
    assert!(of(&ev, "step_started", "after").is_empty(), "{ev:?}");
    // It waits in the store: `continue` runs it.
    let (out, ev) = run_flow(&m, &dir, &["--mode", "continue"]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(sequences(&ev, "step_finished", "after"), vec!["1"]);
    assert!(of(&ev, "step_started", "slow").is_empty());
}

#[test]
fn a_panic_and_a_watchdog_reset_in_a_step_are_contained_failures_that_release_the_pool() {
    let dir = TestDir::new("flow_panic");
    let m = flow(
        &dir,
        &[
            r#"
[[flow]]
name = "faults"
events = ["go", "boom_failed", "slow_failed"]
start = ["go/1"]

[[flow.pool]]
name = "one"
limit = 1
"#
            .to_owned(),
            step(
                "boom",
                r#"config = { panic = ["*"] }
on_failure = "boom_failed""#,
            ),
            step(
                "stuck",
                r#"config = { sleep_ms = 60000 }
watchdog = "200ms"
pools = ["one"]
on_failure = "slow_failed""#,
            ),
            step("next", r#"pools = ["one"]"#),
            association("go", r#"["boom", "stuck"]"#, ""),
            association("slow_failed", r#"["next"]"#, ""),
            association("boom_failed", r#"["next"]"#, ""),
        ]
        .concat(),
    );
    let (out, ev) = run_flow(&m, &dir, &[]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(result(&ev), "success");
    let boom = of(&ev, "step_finished", "boom");
    assert!(
        boom[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("panicked: injected panic in faults/boom"),
        "{boom:?}"
    );
    let stuck = of(&ev, "step_finished", "stuck");
    assert!(
        stuck[0]["reason"].as_str().unwrap().starts_with("hung: "),
        "{stuck:?}"
    );
    // `next` (activated twice for sequence 1: one run, one duplicate) got
    // the pool the hung step held.
    assert_eq!(of(&ev, "step_finished", "next").len(), 1);
    assert_eq!(of(&ev, "step_finished", "next")[0]["status"], "success");
}

#[test]
fn a_host_killed_during_a_step_is_recovered_skipping_what_succeeded() {
    let dir = TestDir::new("flow_kill");
    let m = flow(
        &dir,
        &[
            r#"
[[flow]]
name = "chain"
store = "store/chain.db"
events = ["go", "s1_done", "s2_done"]
start = ["go/1"]
"#
            .to_owned(),
            step("s1", r#"on_success = "s1_done""#),
            step(
                "s2",
                r#"config = { sleep_ms = 120000, until_attempt = 1 }
on_success = "s2_done""#,
            ),
            step("s3", ""),
            association("go", r#"["s1"]"#, ""),
            association("s1_done", r#"["s2"]"#, ""),
            association("s2_done", r#"["s3"]"#, ""),
        ]
        .concat(),
    );
    let ev = events_arg(&dir);
    let host = Running::start_with(&m, &["--events", ev.as_str()]);
    wait_for_events(&events_path(&dir), 1, |e| {
        e["event"] == "step_started" && e["step"] == "s2"
    });
    host.signal("KILL");
    let out = host.finish();
    assert!(out.status.code().is_none(), "killed: {out:?}");

    let (out, ev) = run_flow(&m, &dir, &["--mode", "recover"]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert!(of(&ev, "step_started", "s1").is_empty(), "{ev:?}");
    assert_eq!(of(&ev, "step_skipped", "s1")[0]["status"], "success");
    let s2 = of(&ev, "step_finished", "s2");
    assert_eq!((s2.len(), &s2[0]["attempt"]), (1, &Value::from(2)));
    assert_eq!(of(&ev, "step_finished", "s3")[0]["status"], "success");
    assert_eq!(result(&ev), "success");
    let started: Vec<_> = ev.iter().filter(|e| e["event"] == "flow_started").collect();
    assert_eq!(
        (&started[0]["mode"], &started[0]["recovery"]),
        (&"recover".into(), &1.into())
    );

    // Everything succeeded now: a second recover has nothing to do.
    let (out, _) = run_flow(&m, &dir, &["--mode", "recover"]);
    assert_eq!(out.code(), 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("nothing to recover in run store")
            && out.stderr.contains("chain.db")
            && out
                .stderr
                .contains("no failed, interrupted or pending step"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_delayed_association_is_persisted_and_run_exactly_once_by_continue() {
    let dir = TestDir::new("flow_delay");
    let m = flow(
        &dir,
        &[
            r#"
[[flow]]
name = "later"
store = "later.db"
events = ["go"]
start = ["go/7"]
"#
            .to_owned(),
            step("reminder", ""),
            association("go", r#"["reminder"]"#, r#"delay = "1s""#),
        ]
        .concat(),
    );
    let ev = events_arg(&dir);
    let host = Running::start_with(&m, &["--events", ev.as_str()]);
    wait_for_events(&events_path(&dir), 1, |e| e["event"] == "delay_scheduled");
    host.signal("TERM");
    let out = host.finish();
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let first = journal(&events_path(&dir));
    assert!(
        of(&first, "step_started", "reminder").is_empty(),
        "{first:?}"
    );
    assert_eq!(result(&first), "stopped");

    let (out, ev) = run_flow(&m, &dir, &["--mode", "continue"]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(sequences(&ev, "step_finished", "reminder"), vec!["7"]);
    assert_eq!(result(&ev), "success");
    // Fired once: nothing is left for another continue.
    let (out, _) = run_flow(&m, &dir, &["--mode", "continue"]);
    assert_eq!(out.code(), 2, "{}", out.stderr);
}

#[test]
fn recover_without_a_store_file_or_with_an_unknown_run_exits_at_once_naming_the_store() {
    let dir = TestDir::new("flow_norecover");
    let m = flow(
        &dir,
        &[
            r#"
[[flow]]
name = "f"
store = "missing/f.db"
events = ["go"]
start = ["go"]
"#
            .to_owned(),
            step("s", ""),
            association("go", r#"["s"]"#, ""),
        ]
        .concat(),
    );
    let (out, ev) = run_flow(&m, &dir, &["--mode", "recover"]);
    assert_eq!(out.code(), 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("missing/f.db") && out.stderr.contains("the store file does not exist"),
        "{}",
        out.stderr
    );
    assert!(ev.is_empty(), "nothing ran: {ev:?}");
    assert!(
        !dir.path.join("missing").exists(),
        "recover creates nothing"
    );

    let (out, _) = run_flow(&m, &dir, &[]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let (out, _) = run_flow(&m, &dir, &["--mode", "recover", "--run", "nope"]);
    assert_eq!(out.code(), 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("it holds no run `nope` of this flow"),
        "{}",
        out.stderr
    );
}

#[test]
fn an_unusable_store_path_is_a_clear_error() {
    let dir = TestDir::new("flow_badstore");
    dir.write("plain", "not a folder");
    let m = flow(
        &dir,
        &[r#"
[[flow]]
name = "f"
store = "plain/f.db"
events = ["go"]

"#
        .to_owned()]
        .concat(),
    );
    let (out, _) = run_flow(&m, &dir, &[]);
    assert_eq!(out.code(), 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("run store")
            && out.stderr.contains("plain/f.db")
            && out.stderr.contains("cannot create its folder"),
        "{}",
        out.stderr
    );
}

#[test]
fn flow_reference_errors_name_the_file_line_and_key() {
    let dir = TestDir::new("flow_errors");
    let m = flow(
        &dir,
        r#"
[[flow]]
name = "f"
events = ["go"]

[[flow.step]]
name = "s"
plugin = "flowsteps"
export = "Work"

[[flow.step]]
name = "s"
plugin = "flowsteps"
export = "Work"

[[flow.association]]
event = "go"
steps = ["nowhere"]

[[flow.expression]]
name = "both"
expr = "and(go, ghost)"
"#,
    );
    let out = run(&["check", m.to_str().unwrap()]);
    assert_eq!(out.code(), 2, "{}", out.stderr);
    for expected in [
        "m.toml:15:8: flow \"f\" > step \"s\": duplicate step name `s` in flow `f`",
        "m.toml:21:10: flow \"f\" > association #1 > steps: unknown step `nowhere` in flow `f`",
        "m.toml:25:8: flow \"f\" > expression \"both\" > expr: unknown event `ghost` in flow `f`",
    ] {
        assert!(
            out.stderr.contains(expected),
            "missing {expected:?} in:\n{}",
            out.stderr
        );
    }
}

#[test]
fn a_plugin_built_before_flow_steps_existed_still_loads_and_runs_beside_a_flow() {
    let dir = TestDir::new("flow_compat");
    let (old, inspected) = build_old_plugin(&dir, "prestep");
    assert!(
        inspected.contains("services:   Old") && inspected.contains("steps:      (none)"),
        "{inspected}"
    );
    let m = flow(
        &dir,
        &format!(
            r#"
[[context]]
name = "C"
[[context.service]]
name = "old"
plugin = "{}"
export = "Old"

[[flow]]
name = "f"
events = ["go"]
start = ["go/1"]
[[flow.step]]
name = "s"
plugin = "flowsteps"
export = "Work"
[[flow.association]]
event = "go"
steps = ["s"]
"#,
            old.display()
        ),
    );
    let (out, ev) = run_flow(&m, &dir, &[]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert!(
        out.messages_of("old")
            .contains(&String::from("built before messaging, running")),
        "{}",
        out.stderr
    );
    assert_eq!(sequences(&ev, "step_finished", "s"), vec!["1"]);
    // Asked for a step, the old library is refused cleanly: it has none.
    let m = dir.manifest(
        "step.toml",
        &format!(
            "[[flow]]\nname = \"f\"\n[[flow.step]]\nname = \"s\"\nplugin = \"{}\"\nexport = \"Old\"\n",
            old.display()
        ),
    );
    let out = run(&["check", m.to_str().unwrap()]);
    assert_eq!(out.code(), 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("exports no step named `Old`; its steps: (none)"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_step_still_running_at_shutdown_is_abandoned_after_shutdown_timeout_and_recovered() {
    let dir = TestDir::new("flow_abandon");
    let m = flow(
        &dir,
        &[
            r#"shutdown_timeout = "300ms"

[[flow]]
name = "f"
store = "f.db"
events = ["go"]
start = ["go/1"]
"#
            .to_owned(),
            step(
                "endless",
                "config = { sleep_ms = 120000, until_attempt = 1 }",
            ),
            association("go", r#"["endless"]"#, ""),
        ]
        .concat(),
    );
    let ev = events_arg(&dir);
    let host = Running::start_with(&m, &["--events", ev.as_str()]);
    wait_for_events(&events_path(&dir), 1, |e| e["event"] == "step_started");
    host.signal("TERM");
    let out = host.finish();
    assert_eq!(out.code(), 3, "{}", out.stderr);
    assert!(
        out.messages()
            .iter()
            .any(|m| m.contains("did not finish within shutdown_timeout (300ms): abandoned")),
        "{}",
        out.stderr
    );
    let (out, ev) = run_flow(&m, &dir, &["--mode", "recover"]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(of(&ev, "step_finished", "endless")[0]["attempt"], 2);
}

#[test]
fn exit_when_flows_finished_stops_the_contexts_once_every_flow_has_finished() {
    let dir = TestDir::new("flow_exit_when");
    let m = flow(
        &dir,
        &[
            "exit_when = \"flows_finished\"\n\n[[context]]\nname = \"Forever\"\nperiod = \"50ms\"\n\
             [[context.service]]\nname = \"greeter\"\nplugin = \"hello\"\nexport = \"Greeter\"\n\n\
             [[flow]]\nname = \"f\"\nevents = [\"go\"]\nstart = [\"go/1\"]\n"
                .to_owned(),
            step("s", ""),
            association("go", r#"["s"]"#, ""),
        ]
        .concat(),
    );
    let (out, ev) = run_flow(&m, &dir, &[]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(result(&ev), "success");
    assert!(
        out.messages()
            .iter()
            .any(|m| m.contains("every flow finished (exit_when = \"flows_finished\")")),
        "{}",
        out.stderr
    );
    // Without a flow, the value is refused.
    let m = dir.manifest("none.toml", "exit_when = \"flows_finished\"\n");
    let out = run(&["check", m.to_str().unwrap()]);
    assert_eq!(out.code(), 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("`exit_when = \"flows_finished\"` needs at least one `[[flow]]`"),
        "{}",
        out.stderr
    );
}
