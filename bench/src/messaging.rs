//! The messaging rows of `make bench` (issue 10), side by side with
//! service-framework 0.0.20 (ZeroMQ + msgpack) and with the machine's limit
//! measured in the same run:
//!
//! - **round trip**: `messages/Stopwatch` requests `ONE` from
//!   `messages/Sink` (another context of the same host) N times, timing each
//!   request with `Instant`, and logs p50/p99; the peer's requester service
//!   (main mode) times N requests to its replier service (another process)
//!   with `perf_counter` (`bench/peer/sf_peer.py`); the limit is a bare
//!   crossbeam-channel ping-pong between two threads of this process.
//! - **one-way**: `Stopwatch` sends N `ONE`s with `ctx.send`, then requests
//!   `COUNT` (handled after them, in order) and checks it; N over that time.
//!   service-framework has no working one-way connection between two
//!   services (its subscriber is unusable as shipped), so its figure is
//!   requests per second back to back, labelled so. The limit is one thread
//!   sending N integers through a bounded crossbeam channel (1000 slots, the
//!   default `mailbox_size`) to another that counts them.
//! - **idle**: 100 `Sink`s in one context, doing nothing once ready, and
//!   100 service-framework repliers (one process each, as shipped): CPU over
//!   a few seconds from `/proc/<pid>/stat`.
//!
//! In `--smoke` mode every workload runs with tiny counts; a workload that
//! cannot produce its figure (a plugin failure, a peer script error) panics,
//! and no figure is judged.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{
    header, last_json, percentile, run_logged, spawn_until_ready, terminate, workspace_root,
};

/// One row: service-framework, otools and the machine's limit.
pub(crate) struct Row {
    workload: String,
    peer: Option<f64>,
    otools: f64,
    limit: Option<f64>,
    unit: Unit,
    goal: &'static str,
    met: Option<bool>,
}

/// How a row's figures read.
#[derive(Clone, Copy)]
enum Unit {
    Micros,
    Rate,
    Percent,
}

impl Unit {
    fn show(self, v: f64) -> String {
        match self {
            Unit::Micros => format!("{v:.2} us"),
            Unit::Rate if v >= 1e6 => format!("{:.2} M/s", v / 1e6),
            Unit::Rate if v >= 1e4 => format!("{:.0} k/s", v / 1e3),
            Unit::Rate => format!("{v:.0} /s"),
            Unit::Percent => format!("{v:.2} %"),
        }
    }
}

/// Runs the Python peer script with `args`; its last JSON line.
fn peer(py: &Path, args: &[&str], pinned: bool) -> Option<Value> {
    peer_script("sf_peer.py", py, args, pinned)
}

/// Runs `bench/peer/<script>` with `py` and `args` (pinned to CPU 0 with
/// `taskset`, or not); its last JSON line.
pub(crate) fn peer_script(script: &str, py: &Path, args: &[&str], pinned: bool) -> Option<Value> {
    let script = workspace_root().join("bench/peer").join(script);
    let mut cmd = if pinned {
        let mut c = Command::new("taskset");
        c.args(["-c", "0"]).arg(py);
        c
    } else {
        Command::new(py)
    };
    last_json(cmd.arg(&script).args(args))
}

/// The `key=value` fields of `Stopwatch`'s `bench ...` log line.
fn stopwatch(
    dir: &Path,
    plugins: &Path,
    name: &str,
    timed: &str,
    count: u64,
    warmup: u64,
) -> Vec<(String, f64)> {
    let m = dir.join(format!("msg-{name}.toml"));
    std::fs::write(
        &m,
        format!(
            "{}[[context]]\nname = \"Sinks\"\n[[context.service]]\nname = \"sink\"\nplugin = \"messages\"\nexport = \"Sink\"\n\
             [[context]]\nname = \"Bench\"\nlog_level = \"info\"\n[[context.service]]\nname = \"watch\"\nplugin = \"messages\"\nexport = \"Stopwatch\"\n\
             sends_to = [\"sink\"]\nconfig = {{ to = \"sink\", timed = \"{timed}\", count = {count}, warmup = {warmup} }}\n",
            header(plugins)
        ),
    )
    .unwrap();
    let log = dir.join(format!("msg-{name}.log"));
    let file = std::fs::File::create(&log).expect("log file");
    run_logged(
        &m,
        &dir.join(format!("msg-{name}.jsonl")),
        None,
        file.into(),
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let line = text
        .lines()
        .find_map(|l| l.split_once("bench ").map(|(_, rest)| rest))
        .unwrap_or_else(|| {
            panic!(
                "no `bench` line from messages/Stopwatch; see {}",
                log.display()
            )
        });
    assert!(
        !line.starts_with("failed"),
        "messages/Stopwatch: {line}; see {}",
        log.display()
    );
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
        .collect()
}

fn field(fields: &[(String, f64)], key: &str) -> f64 {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .map_or(f64::NAN, |(_, v)| *v)
}

/// Round trips between two threads over crossbeam channels: p50 and p99 in
/// microseconds.
fn limit_round_trip(n: usize) -> (f64, f64) {
    let (ping, pings) = crossbeam_channel::bounded::<u64>(1);
    let (pong, pongs) = crossbeam_channel::bounded::<u64>(1);
    let echo = std::thread::spawn(move || {
        while let Ok(v) = pings.recv() {
            if pong.send(v).is_err() {
                break;
            }
        }
    });
    let mut us = Vec::with_capacity(n);
    for i in 0..(n + n / 10) {
        let t = Instant::now();
        ping.send(i as u64).expect("echo thread");
        pongs.recv().expect("echo thread");
        if i >= n / 10 {
            us.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    drop(ping);
    echo.join().expect("echo thread");
    us.sort_by(f64::total_cmp);
    (percentile(&us, 50.0), percentile(&us, 99.0))
}

/// One thread sends `n` integers through a bounded channel of 1000 slots to
/// another that counts them: messages per second.
fn limit_one_way(n: u64) -> f64 {
    let (tx, rx) = crossbeam_channel::bounded::<u64>(1000);
    let t = Instant::now();
    let counter = std::thread::spawn(move || rx.iter().count());
    for i in 0..n {
        tx.send(i).expect("counting thread");
    }
    drop(tx);
    let got = counter.join().expect("counting thread");
    assert_eq!(got as u64, n, "the counting thread lost messages");
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^53")]
    let rate = n as f64 / t.elapsed().as_secs_f64();
    rate
}

/// Like [`crate::cpu_percent`], in nanoseconds instead of 10 ms ticks: the
/// first field of `/proc/<pid>/task/<tid>/schedstat` (time on a CPU),
/// summed over the process's threads, before and after `window` seconds.
fn cpu_percent_fine(pid: u32, window: f64) -> f64 {
    let on_cpu_ns = || -> u64 {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    };
    let c0 = on_cpu_ns();
    let w0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(window));
    #[expect(clippy::cast_precision_loss, reason = "nanoseconds of a few seconds")]
    let used = on_cpu_ns().saturating_sub(c0) as f64;
    used / 1e9 / w0.elapsed().as_secs_f64() * 100.0
}

/// CPU of `agents` idle `messages/Sink` services in one context, in percent
/// of one core, over `window` seconds once the context is ready.
fn idle_agents(dir: &Path, plugins: &Path, agents: usize, window: f64) -> f64 {
    let mut body = header(plugins);
    body.push_str("[[context]]\nname = \"Idle\"\n");
    for i in 0..agents {
        body.push_str(&format!(
            "[[context.service]]\nname = \"a{i}\"\nplugin = \"messages\"\nexport = \"Sink\"\n"
        ));
    }
    let (child, _) = spawn_until_ready(dir, "msg-idle", &body, 1);
    // Let the start-up settle (threads spawned, setup done) before counting.
    std::thread::sleep(Duration::from_millis(200));
    let cpu = cpu_percent_fine(child.id(), window);
    assert!(terminate(child), "otools was killed by SIGTERM");
    cpu
}

/// Every messaging row, measured now (service-framework's column when `py`
/// has it installed).
pub(crate) fn table(dir: &Path, plugins: &Path, smoke: bool, py: Option<&Path>) -> Vec<Row> {
    let scale = |full: u64, tiny: u64| if smoke { tiny } else { full };
    let must = |v: Option<Value>, what: &str| {
        // Installed but silent is a broken harness; CI catches it here.
        assert!(
            !(smoke && v.is_none()),
            "the service-framework peer gave no figure for {what}"
        );
        v
    };

    // Round trip.
    let rt = stopwatch(
        dir,
        plugins,
        "rt",
        "round_trip",
        scale(100_000, 200),
        scale(10_000, 20),
    );
    let (p50, p99) = (field(&rt, "p50_ns") / 1e3, field(&rt, "p99_ns") / 1e3);
    let (lim50, lim99) = limit_round_trip(usize::try_from(scale(200_000, 200)).unwrap_or(200));
    let sf_n = scale(10_000, 50).to_string();
    let sf_rt = py.and_then(|p| {
        // Unpinned and pinned to one CPU; the run with the better p50 counts.
        let runs = [false, true].map(|pinned| peer(p, &["round_trip", &sf_n], pinned));
        runs.into_iter().flatten().min_by(|a, b| {
            a["p50_us"]
                .as_f64()
                .unwrap_or(f64::MAX)
                .total_cmp(&b["p50_us"].as_f64().unwrap_or(f64::MAX))
        })
    });
    let sf_rt = py.and(must(sf_rt, "round_trip"));
    let sf = |key: &str| sf_rt.as_ref().and_then(|v| v[key].as_f64());
    let mut rows = vec![
        Row {
            workload: "request/reply round trip p50, two services".into(),
            peer: sf("p50_us"),
            otools: p50,
            limit: Some(lim50),
            unit: Unit::Micros,
            goal: "< 2 us and >= 100x the peer's",
            met: Some(p50 < 2.0 && sf("p50_us").is_some_and(|s| s / p50 >= 100.0)),
        },
        Row {
            workload: "  p99".into(),
            peer: sf("p99_us"),
            otools: p99,
            limit: Some(lim99),
            unit: Unit::Micros,
            goal: "",
            met: None,
        },
    ];

    // One way.
    let n = scale(2_000_000, 1000);
    let ow = stopwatch(dir, plugins, "oneway", "one_way", n, scale(10_000, 10));
    let rate = field(&ow, "rate");
    rows.push(Row {
        workload: "one-way messages/s, two services (peer: request/reply)".into(),
        peer: sf("rate"),
        otools: rate,
        limit: Some(limit_one_way(scale(10_000_000, 1000))),
        unit: Unit::Rate,
        goal: ">= 5 M/s",
        met: Some(rate >= 5e6),
    });

    // Idle.
    let agents = if smoke { 5 } else { 100 };
    let window = if smoke { 0.3 } else { 5.0 };
    let cpu = idle_agents(dir, plugins, agents, window);
    let sf_idle = py.and_then(|p| {
        peer(
            p,
            &["idle", &scale(100, 3).to_string(), &window.to_string()],
            false,
        )
    });
    let sf_idle = py.and(must(sf_idle, "idle"));
    rows.push(Row {
        workload: format!(
            "idle CPU of {agents} idle agents (peer: {agents} repliers, 1 process each)"
        ),
        peer: sf_idle.and_then(|v| v["cpu_percent"].as_f64()),
        otools: cpu,
        limit: None,
        unit: Unit::Percent,
        goal: "< 1 % of a core",
        met: Some(cpu < 1.0),
    });
    rows
}

/// Prints the rows as a table (the peer's column reads n/a when it is not
/// installed).
pub(crate) fn print(rows: &[Row]) {
    let w = rows.iter().map(|r| r.workload.len()).max().unwrap_or(10);
    println!(
        "{:w$}  {:>12}  {:>12}  {:>13}  {:>8}  {:30}  met?",
        "messaging (service-framework 0.0.20 vs otools)",
        "sf 0.0.20",
        "otools",
        "limit (chan)",
        "ratio",
        "goal"
    );
    for r in rows {
        let ratio = r
            .peer
            .map(|p| match r.unit {
                Unit::Rate => r.otools / p,
                Unit::Micros | Unit::Percent => p / r.otools,
            })
            .map_or_else(
                || String::from("n/a"),
                // An idle figure of 0 has no finite ratio.
                |x| {
                    if x.is_finite() {
                        format!("{x:.1}x")
                    } else {
                        String::from("-")
                    }
                },
            );
        println!(
            "{:w$}  {:>12}  {:>12}  {:>13}  {:>8}  {:30}  {}",
            r.workload,
            r.peer.map_or_else(|| "n/a".into(), |v| r.unit.show(v)),
            r.unit.show(r.otools),
            r.limit.map_or_else(|| "-".into(), |v| r.unit.show(v)),
            ratio,
            r.goal,
            r.met.map_or("", |m| if m { "yes" } else { "no" }),
        );
    }
    println!(
        "(limit: a bare crossbeam-channel between two threads of otools-bench, same run; idle: % of one core)"
    );
}
