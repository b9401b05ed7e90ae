//! The supervision keys of a flow step: `retries` / `max_restarts` with a
//! doubling `restart_delay` capped by `max_restart_delay`, a
//! `restart_window`, `restart = "never"`, and the service keys a step
//! refuses at load, each with the file, line and key.

use std::path::PathBuf;

use serde_json::Value;

use crate::control::arg;
use crate::flows::{association, step};
use crate::util::{TestDir, journal, run, run_manifest};

/// The attempts of `step`'s `event`s (`step_started`, ...), in order.
fn attempts(events: &[Value], event: &str, step: &str) -> Vec<u64> {
    events
        .iter()
        .filter(|e| e["event"] == event && e["step"] == step)
        .map(|e| e["attempt"].as_u64().unwrap_or_default())
        .collect()
}

/// A flow `f` raising `go/1` at start, which activates every step of
/// `steps` (name, extra keys), each a `flowsteps::Work`.
fn go_flow(dir: &TestDir, steps: &[(&str, &str)]) -> PathBuf {
    let mut body =
        String::from("\n[[flow]]\nname = \"f\"\nevents = [\"go\"]\nstart = [\"go/1\"]\n");
    for (name, extra) in steps {
        body.push_str(&step(name, extra));
    }
    let names: Vec<String> = steps.iter().map(|(n, _)| format!("\"{n}\"")).collect();
    body.push_str(&association("go", &format!("[{}]", names.join(", ")), ""));
    dir.manifest("m.toml", &body)
}

#[test]
fn a_failed_step_is_retried_after_a_doubling_capped_delay_and_never_means_no_retry() {
    let dir = TestDir::new("flow_retry_delay");
    let m = go_flow(
        &dir,
        &[
            (
                "a",
                r#"config = { fail = ["1"], until_attempt = 2 }
max_restarts = 2
restart_delay = "30ms"
max_restart_delay = "50ms""#,
            ),
            (
                "b",
                r#"config = { fail = ["1"] }
restart = "never"
stop_on_error = false"#,
            ),
        ],
    );
    let events = dir.path.join("events.jsonl");
    let out = run_manifest(&m, &["--events", &arg(&events)]);
    // b's unhandled failure fails the flow; a went on (stop_on_error = false).
    assert_eq!(out.code(), 1, "{}", out.stderr);
    let ev = journal(&events);
    assert_eq!(attempts(&ev, "step_started", "a"), [1, 2, 3]);
    let last = ev
        .iter()
        .rfind(|e| e["event"] == "step_finished" && e["step"] == "a")
        .unwrap();
    assert_eq!(
        (last["attempt"].as_u64(), last["status"].as_str()),
        (Some(3), Some("success"))
    );
    assert_eq!(attempts(&ev, "step_started", "b"), [1], "never: no retry");
    let messages = out.messages().join("\n");
    for want in [
        "retrying as attempt 2 in 30ms",
        "retrying as attempt 3 in 50ms",
    ] {
        assert!(messages.contains(want), "{want:?} in:\n{messages}");
    }
}

#[test]
fn only_failures_within_the_restart_window_count_against_the_retries() {
    let dir = TestDir::new("flow_retry_window");
    // One retry, but each failure comes at least 20 ms after the one
    // before (a retry delay never fires early), so outside the 1 ms window:
    // every failure is the only one that counts.
    let m = go_flow(
        &dir,
        &[(
            "a",
            r#"config = { fail = ["1"], until_attempt = 3 }
retries = 1
restart_window = "1ms"
restart_delay = "20ms""#,
        )],
    );
    let events = dir.path.join("events.jsonl");
    let out = run_manifest(&m, &["--events", &arg(&events)]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let ev = journal(&events);
    assert_eq!(attempts(&ev, "step_started", "a"), [1, 2, 3, 4]);
}

#[test]
fn service_keys_that_do_not_apply_to_a_step_are_refused_with_file_line_and_key() {
    let dir = TestDir::new("flow_step_keys");
    let m = go_flow(
        &dir,
        &[
            (
                "s",
                r#"restart = "always"
retries = 1
max_restarts = 1
startup_timeout = "1s"
shutdown_timeout = "1s"
backoff_reset_after = "1s"
on_give_up = "exit_host""#,
            ),
            ("t", "restart = \"never\"\nretries = 2"),
        ],
    );
    let written = std::fs::read_to_string(&m).unwrap();
    let out = run(&["check", &arg(&m)]);
    assert_eq!(out.code(), 2, "{}", out.stderr);
    // Where `key = ` starts (the n-th such line), as check reports it: the value's column.
    let at = |key: &str, nth: usize| {
        let (i, _) = written
            .lines()
            .enumerate()
            .filter(|(_, l)| l.starts_with(&format!("{key} = ")))
            .nth(nth)
            .unwrap();
        format!("m.toml:{}:{}:", i + 1, key.len() + 4)
    };
    for (key, nth, step, message) in [
        (
            "restart",
            0,
            "s",
            "`restart = \"always\"` does not apply to a step",
        ),
        (
            "max_restarts",
            0,
            "s",
            "give `retries` or `max_restarts`, not both",
        ),
        (
            "startup_timeout",
            0,
            "s",
            "`startup_timeout` does not apply to a step: a step has no `setup`",
        ),
        (
            "shutdown_timeout",
            0,
            "s",
            "`shutdown_timeout` does not apply to a step: a step has no `finalize`",
        ),
        (
            "backoff_reset_after",
            0,
            "s",
            "`backoff_reset_after` does not apply to a step",
        ),
        (
            "on_give_up",
            0,
            "s",
            "`on_give_up` does not apply to a step: a failure after the last retry is routed by `on_failure`",
        ),
        (
            "restart",
            1,
            "t",
            "`restart = \"never\"` contradicts `retries`/`max_restarts` above 0",
        ),
    ] {
        let want = format!(
            "{} flow \"f\" > step \"{step}\" > {key}: {message}",
            at(key, nth)
        );
        assert!(
            out.stderr.contains(&want),
            "missing {want:?} in:\n{}",
            out.stderr
        );
    }
}
