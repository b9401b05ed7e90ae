use std::path::PathBuf;

use crate::util::{self, run};

fn shipped(name: &str) -> PathBuf {
    util::build();
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../manifests")
        .join(name)
}

fn run_shipped(name: &str) -> util::Output {
    let m = shipped(name);
    let dir = util::target_dir();
    let out = util::run_manifest(&m, &["--plugin-dir", dir.to_str().unwrap()]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    out
}

#[test]
fn every_shipped_manifest_checks_clean() {
    let dir = util::target_dir();
    let mut count = 0;
    for entry in std::fs::read_dir(shipped("")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            count += 1;
            let out = run(&[
                "check",
                path.to_str().unwrap(),
                "--plugin-dir",
                dir.to_str().unwrap(),
            ]);
            assert_eq!(out.code(), 0, "{}: {}", path.display(), out.stderr);
            assert!(out.stdout.contains(": ok ("), "{}", out.stdout);
        }
    }
    assert!(
        count >= 3,
        "expected the three shipped manifests, found {count}"
    );
}

#[test]
fn simple_manifest_greets_from_main_and_loop_then_stops_on_fifth_main() {
    let out = run_shipped("simple.toml");
    let greeter = out.messages_of("greeter");
    let mains = greeter.iter().filter(|m| m.contains("from main")).count();
    assert_eq!(mains, 5, "{greeter:#?}");
    assert!(
        greeter.iter().any(|m| m.contains("from the loop")),
        "{greeter:#?}"
    );
    let levels: Vec<_> = out
        .logs()
        .iter()
        .filter(|l| l["service"] == "greeter")
        .map(|l| {
            (
                l["message"].as_str().unwrap().contains("loop"),
                l["level"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        levels.iter().all(|(is_loop, lvl)| if *is_loop {
            lvl == "WARNING"
        } else {
            lvl == "INFO"
        }),
        "{levels:?}"
    );
    assert_eq!(
        out.messages_of("stopper"),
        ["main call 5: terminating context Main"]
    );
}

#[test]
fn trigger_manifest_counts_to_five_and_shuts_down() {
    let out = run_shipped("trigger.toml");
    assert_eq!(
        out.report("counter", "count").as_deref(),
        Some("5"),
        "{}",
        out.stderr
    );
    assert!(
        out.messages()
            .iter()
            .any(|m| m == "terminating context Main")
    );
}

#[test]
fn demo_manifest_ends_by_itself_with_both_counters_complete() {
    let out = run_shipped("demo.toml");
    assert_eq!(
        out.report("shared", "produced").as_deref(),
        Some("100"),
        "{}",
        out.stderr
    );
    assert_eq!(
        out.report("shared", "background").as_deref(),
        Some("50000"),
        "{}",
        out.stderr
    );
}

#[test]
fn flow_manifest_ships_two_orders_refunds_the_third_and_ends_by_itself() {
    let out = run_shipped("flow.toml");
    let shipped: Vec<String> = out
        .messages_of("ship")
        .into_iter()
        .filter(|m| m.starts_with("ran "))
        .collect();
    let mut shipped = shipped;
    shipped.sort();
    assert_eq!(
        shipped,
        [
            "ran orders/ship sequence=1 attempt=1",
            "ran orders/ship sequence=2 attempt=1"
        ],
        "{}",
        out.stderr
    );
    assert!(
        out.messages_of("refund")
            .contains(&String::from("ran orders/refund sequence=3 attempt=1")),
        "{}",
        out.stderr
    );
    // Order 3 was never packed and charged both: its AND is reported.
    assert!(
        out.messages()
            .iter()
            .any(|m| m.contains("expression event `ready` was never raised for sequence 3")),
        "{}",
        out.stderr
    );
    assert!(
        out.messages()
            .iter()
            .any(|m| m.contains("finished: success")),
        "{}",
        out.stderr
    );
}

#[test]
fn pipeline_manifest_ends_by_itself_with_every_doubled_number_summed() {
    let out = run_shipped("pipeline.toml");
    assert_eq!(
        out.messages_of("sum.0"),
        ["sum of 1000 items: 1001000"],
        "{}",
        out.stderr
    );
}

#[test]
fn messaging_manifest_pings_publishes_relays_and_ends_by_itself() {
    let out = run_shipped("messaging.toml");
    assert_eq!(
        out.messages_of("agent"),
        [
            "setup done",
            "pong 1",
            "pong 2",
            "unknown message `BOGUS` from Main/script: refused (accepts: PING, DUMP)",
            "dump: 2 pings",
            "stopped by SHUTDOWN"
        ]
    );
    assert_eq!(
        out.messages_of("listener"),
        [
            "got px 100",
            "got px 101",
            "got px 102",
            "got px 103",
            "got px 104",
            "stopped by SHUTDOWN"
        ]
    );
    assert!(
        out.messages_of("script")
            .contains(&String::from("reply to HOP: 3")),
        "{}",
        out.stderr
    );
}
