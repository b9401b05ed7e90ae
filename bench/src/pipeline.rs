//! The pipeline rows of `make bench` (issue 11), side by side with
//! os-m3-engine 0.1.2 (threads and `queue.Queue`, driven by
//! `bench/peer/m3_peer.py`, with its `Thread.isAlive` shim):
//!
//! - **throughput**: N items through source -> transform (4 workers) ->
//!   sink with trivial stages (`stages/Numbers` to N, `stages/Double`,
//!   `stages/Sum`; the peer: a `range` frontend, a pass-through transport,
//!   a counting backend), default queue sizes. otools' time runs from the
//!   source's `started` to `pipeline_finished` in the journal; the peer's
//!   is `engine.start()`'s. Both sides check that every item arrived.
//! - **blocked producer**: an endless source into a sink stuck in its first
//!   item (`hang_on = [1]`; the peer's backend waits on an event), queue
//!   size 100; once the queue is full (`otools status`; the peer:
//!   `queue.full()`), the whole process's CPU seconds over a window
//!   (otools: `/proc/<pid>/stat`, 10 ms ticks; the peer:
//!   `time.process_time()`).
//!
//! The peer runs each workload unpinned and pinned to one CPU (`taskset`);
//! its better figure counts. `--smoke` runs both briefly and judges nothing.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{header, mono, release_dir, run};

/// The peer's figure `key` from `m3_peer.py args`, run unpinned and pinned
/// to CPU 0 (its threads share one GIL), the better of the two (`higher`:
/// the larger); `None` if neither gave one.
fn peer(py: &Path, args: &[&str], key: &str, higher: bool) -> Option<f64> {
    let figure = |pinned| {
        crate::messaging::peer_script("m3_peer.py", py, args, pinned).and_then(|v| v[key].as_f64())
    };
    let both = [figure(false), figure(true)];
    let best = both.into_iter().flatten();
    if higher {
        best.max_by(f64::total_cmp)
    } else {
        best.min_by(f64::total_cmp)
    }
}

/// Writes the manifest `dir/<name>.toml`: the bench header, then `body`.
fn manifest(dir: &Path, plugins: &Path, name: &str, body: &str) -> std::path::PathBuf {
    let m = dir.join(format!("{name}.toml"));
    std::fs::write(&m, format!("{}{body}", header(plugins))).expect("write the manifest");
    m
}

/// Items per second through source -> transform (4 workers) -> sink.
fn throughput(dir: &Path, plugins: &Path, n: u64) -> f64 {
    let m = manifest(
        dir,
        plugins,
        "pipe-throughput",
        &format!(
            "[[pipeline]]\nname = \"p\"\nstats_interval = \"10m\"\n\
             [[pipeline.stage]]\nname = \"source\"\nplugin = \"stages\"\nexport = \"Numbers\"\nrole = \"source\"\nconfig = {{ to = {n} }}\n\
             [[pipeline.stage]]\nname = \"transform\"\nplugin = \"stages\"\nexport = \"Double\"\nrole = \"transform\"\nthreads = 4\n\
             [[pipeline.stage]]\nname = \"sink\"\nplugin = \"stages\"\nexport = \"Sum\"\nrole = \"sink\"\n"
        ),
    );
    let events = run(&m, &dir.join("pipe-throughput.jsonl"), None);
    let find = |what: &dyn Fn(&Value) -> bool| {
        events
            .iter()
            .find(|e| what(e))
            .unwrap_or_else(|| panic!("the pipeline bench journaled no such event: {events:?}"))
    };
    let start = find(&|e| e["event"] == "started" && e["service"] == "source.0");
    let end = find(&|e| e["event"] == "pipeline_finished");
    assert_eq!(end["items_out"], n, "every item reached the sink: {end}");
    #[expect(clippy::cast_precision_loss, reason = "an item count")]
    let items = n as f64;
    items / ((mono(end) - mono(start)) / 1e6)
}

/// CPU seconds the otools process burns over `window` seconds while its
/// source is blocked on a full queue.
fn blocked_cpu(dir: &Path, plugins: &Path, window: f64) -> f64 {
    let m = manifest(
        dir,
        plugins,
        "pipe-blocked",
        "[[pipeline]]\nname = \"p\"\nstats_interval = \"10m\"\n\
         [[pipeline.stage]]\nname = \"source\"\nplugin = \"stages\"\nexport = \"Numbers\"\nrole = \"source\"\n\
         [[pipeline.stage]]\nname = \"sink\"\nplugin = \"stages\"\nexport = \"Sum\"\nrole = \"sink\"\nqueue_size = 100\n\
         config = { hang_on = [1], hang_ms = 600000 }\n",
    );
    let otools = release_dir().join("otools");
    let mut child = Command::new(&otools)
        .args(["run", m.to_str().unwrap(), "--no-watch"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run otools");
    let full = |status: &Value| status["pipelines"][0]["stages"][1]["queue_depth"] == 100;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = Command::new(&otools)
            .args(["status", "--json", m.to_str().unwrap()])
            .output()
            .expect("otools status");
        if serde_json::from_slice::<Value>(&out.stdout).is_ok_and(|s| full(&s)) {
            break;
        }
        assert!(Instant::now() < deadline, "the queue never filled up");
        std::thread::sleep(Duration::from_millis(20));
    }
    let cpu = crate::cpu_percent(child.id(), window) / 100.0 * window;
    // The sink is stuck for good: no drain to wait for.
    let _ = child.kill();
    let _ = child.wait();
    cpu
}

/// Runs the pipeline workloads and prints their table.
pub(crate) fn print(dir: &Path, plugins: &Path, smoke: bool, py: Option<&Path>) {
    let (n, peer_n, window) = if smoke {
        (20_000, 2_000, 0.3)
    } else {
        (20_000_000, 200_000, 3.0)
    };
    let rate = throughput(dir, plugins, n);
    let peer_rate = py.and_then(|p| peer(p, &["throughput", &peer_n.to_string()], "rate", true));
    let cpu = blocked_cpu(dir, plugins, window);
    let peer_cpu =
        py.and_then(|p| peer(p, &["blocked", &window.to_string()], "cpu_seconds", false));
    assert!(
        !(smoke && py.is_some() && (peer_rate.is_none() || peer_cpu.is_none())),
        "the os-m3-engine peer is installed but gave no figure"
    );
    let na = || String::from("n/a");
    let ratio = |x: Option<f64>| x.map_or_else(na, |x| format!("{x:.1}x"));
    println!(
        "{:52}  {:>12}  {:>12}  {:>9}  goal",
        "pipelines (os-m3-engine 0.1.2 vs otools)", "m3 0.1.2", "otools", "ratio"
    );
    println!(
        "{:52}  {:>12}  {:>12}  {:>9}  >= 100x and >= 5 M/s",
        "items/s, source -> transform (4 workers) -> sink",
        peer_rate.map_or_else(na, |r| format!("{:.0} k/s", r / 1e3)),
        format!("{:.2} M/s", rate / 1e6),
        ratio(peer_rate.map(|p| rate / p)),
    );
    println!(
        "{:52}  {:>12}  {:>12}  {:>9}  < 1 % of the peer's",
        format!("CPU s of a producer blocked on a full queue, {window} s"),
        peer_cpu.map_or_else(na, |c| format!("{c:.2} s")),
        format!("{cpu:.2} s"),
        // 0 ticks over the window has no finite ratio.
        peer_cpu.map_or_else(na, |p| if cpu > 0.0 {
            format!("{:.1} %", cpu / p * 100.0)
        } else {
            String::from("0 %")
        }),
    );
    if py.is_none() {
        println!("(the os-m3-engine peer is not installed: bench/peer/install.sh)");
    }
}
