//! `make bench`: runs each workload on the release `otools` binary and
//! plugins (built by `make bench` first) and prints one table of figures.
//! `--smoke` runs every workload for a moment with tiny counts and no
//! figure checks (`make bench-smoke`, run by CI so the harness cannot rot).
//! `--only TABLE` runs one table: `otools` (against the Python OTools),
//! `messaging` (against service-framework), `pipelines`, `flows` or
//! `host` (the other rows); `--pipelines-only` and `--flows-only` are
//! `--only pipelines` and `--only flows`.
//!
//! Workloads:
//! - `watchdog detection`: a service hangs in `main` on its second call in
//!   every generation; the watchdog (50 ms) declares it hung and a new
//!   generation replaces it, N times. From the journal's monotonic clock:
//!   detection = `hung(n)` minus `started(n)` (the hang begins right after
//!   the first `main` call, so this bounds the true detection latency from
//!   above by that one call), and replacement = `started(n+1)` minus `hung(n)`.
//! - `watchdog cost`: `main` calls per second of 10 trivial services in one
//!   context, with and without a `watchdog` on each, measured alternately.
//! - messaging (round trip, one-way, idle agents) against service-framework
//!   and a bare channel: see the `messaging` module.
//! - pipelines (throughput, blocked producer) against os-m3-engine: see the
//!   `pipeline` module.
//! - flows (a 1,000-step chain, recovery after a kill, one committed
//!   transition) against eventor: see the `flow` module (`--flows-only`
//!   runs just those).

#![allow(clippy::print_stdout, reason = "the table is this program's output")]

mod flow;
mod messaging;
mod pipeline;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::Value;

fn release_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    exe.parent().expect("target/release").to_path_buf()
}

fn scratch() -> PathBuf {
    let dir = release_dir().join("bench-scratch");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn header(plugins: &Path) -> String {
    format!(
        "version = 1\n[host]\nlog_level = \"warning\"\nplugin_dir = \"{}\"\n",
        plugins.display()
    )
}

fn journal(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Decides, from the journal so far, that a workload is done.
type Done<'a> = &'a dyn Fn(&[Value]) -> bool;

/// Runs `otools run manifest --events journal` to its end (or, with
/// `signal_when`, until it says so, then SIGTERM); returns the journal.
fn run(manifest: &Path, journal_path: &Path, signal_when: Option<Done<'_>>) -> Vec<Value> {
    run_logged(manifest, journal_path, signal_when, Stdio::null())
}

/// [`run`], with the host's standard error (its log lines) sent to `stderr`.
fn run_logged(
    manifest: &Path,
    journal_path: &Path,
    signal_when: Option<Done<'_>>,
    stderr: Stdio,
) -> Vec<Value> {
    let otools = release_dir().join("otools");
    let mut child = Command::new(&otools)
        .args([
            "run",
            manifest.to_str().unwrap(),
            "--events",
            journal_path.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e} (run `make bench`, which builds it)",
                otools.display()
            )
        });
    if let Some(done) = signal_when {
        let deadline = Instant::now() + std::time::Duration::from_secs(600);
        loop {
            if done(&journal(journal_path)) {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "otools ended ({status}) before the workload finished; see {}",
                    journal_path.display()
                );
            }
            assert!(Instant::now() < deadline, "workload did not finish");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
    }
    let status = child.wait().expect("wait for otools");
    assert!(status.code().is_some(), "otools was killed: {status}");
    journal(journal_path)
}

fn mono(e: &Value) -> f64 {
    e["mono_us"].as_f64().unwrap_or(f64::NAN)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a short list"
    )]
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Row {
    workload: String,
    figure: String,
    note: String,
}

/// A side-by-side row: OTools' figure, otools', and how many times better.
struct Versus {
    workload: String,
    otools_py: Option<f64>,
    otools_rs: f64,
    unit: &'static str,
    /// True when a larger figure is better (a rate), false for a time or size.
    higher_is_better: bool,
    goal: String,
}

impl Versus {
    fn ratio(&self) -> Option<f64> {
        let py = self.otools_py?;
        Some(if self.higher_is_better {
            self.otools_rs / py
        } else {
            py / self.otools_rs
        })
    }
}

fn workspace_root() -> PathBuf {
    release_dir()
        .parent()
        .and_then(Path::parent)
        .expect("workspace root")
        .to_path_buf()
}

/// The Python of the peers' venv, if `bench/peer/install.sh` could
/// install the peer whose Python package is `module` there.
fn peer_python(module: &str) -> Option<PathBuf> {
    let py = workspace_root().join(".bench/venv/bin/python");
    let ok = Command::new(&py)
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(py)
}

/// Runs a peer script's command; the last JSON line it printed.
fn last_json(cmd: &mut Command) -> Option<Value> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
}

/// Runs one peer workload unpinned and pinned to CPU 0 (`taskset`) and
/// returns the better figure `key` (the larger rate, or the smaller time).
fn run_peer(
    py: &Path,
    workload: &str,
    arg: &str,
    key: &str,
    higher_is_better: bool,
) -> Option<f64> {
    let script = workspace_root().join("bench/peer/peer.py");
    let mut best: Option<f64> = None;
    for pinned in [false, true] {
        let mut cmd = if pinned {
            let mut c = Command::new("taskset");
            c.args(["-c", "0"]).arg(py);
            c
        } else {
            Command::new(py)
        };
        // Without `taskset` the pinned run is skipped, not the workload.
        let Ok(out) = cmd
            .arg(&script)
            .args([workload, arg])
            .stderr(Stdio::null())
            .output()
        else {
            continue;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let value = text
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str::<Value>(l).ok())
            .and_then(|v| v[key].as_f64());
        best = match (best, value) {
            (None, v) => v,
            (b, None) => b,
            (Some(b), Some(v)) => Some(if (v > b) == higher_is_better { v } else { b }),
        };
    }
    best
}

/// Wall time (s) and peak RSS (KiB) of a whole process run, from GNU
/// `time` (the kernel's accounting of the child, the same way for both
/// sides). A Python runner would be wrong here: its fork shows up in the
/// child's peak RSS before the exec.
fn whole_process(cmd: &[&str]) -> (f64, f64) {
    // `time` prints the wall time in hundredths only: time the run here.
    let t0 = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%M"])
        .args(cmd)
        .stdout(Stdio::null())
        .output();
    let wall = t0.elapsed().as_secs_f64();
    let Ok(out) = out else {
        return (f64::NAN, f64::NAN);
    };
    let text = String::from_utf8_lossy(&out.stderr);
    let rss = text
        .lines()
        .last()
        .and_then(|l| l.trim().parse::<f64>().ok())
        .unwrap_or(f64::NAN);
    (wall, rss)
}

fn watchdog_detection(dir: &Path, plugins: &Path, hangs: u64) -> Vec<Row> {
    let m = dir.join("detection.toml");
    std::fs::write(
        &m,
        format!(
            "{}max_abandoned_threads = {}\n[[context]]\nname = \"C\"\n[[context.service]]\nname = \"hang\"\nplugin = \"faulty\"\nexport = \"Faulty\"\n\
             config = {{ hang_in = [\"main\"], after = 1 }}\nwatchdog = \"50ms\"\nmax_restarts = 100000\nrestart_window = \"1h\"\n\
             restart_delay = \"0ms\"\nmax_restart_delay = \"0ms\"\n",
            header(plugins),
            // Every hang leaves its thread behind; the host's cap (default
            // 256, exit 76) must stay above the hangs this workload injects.
            hangs + 16
        ),
    )
    .unwrap();
    let j = dir.join("detection.jsonl");
    let target = hangs + 1;
    let events = run(
        &m,
        &j,
        Some(&|ev: &[Value]| {
            ev.iter()
                .any(|e| e["event"] == "started" && e["generation"].as_u64() >= Some(target))
        }),
    );
    let at = |event: &str, generation: u64| {
        events
            .iter()
            .find(|e| {
                e["event"] == event && e["service"] == "hang" && e["generation"] == generation
            })
            .map(mono)
    };
    let mut detect = Vec::new();
    let mut replace = Vec::new();
    for n in 1..=hangs {
        if let (Some(s), Some(h), Some(next)) =
            (at("started", n), at("hung", n), at("started", n + 1))
        {
            detect.push((h - s) / 1000.0);
            replace.push((next - h) / 1000.0);
        }
    }
    detect.sort_by(f64::total_cmp);
    replace.sort_by(f64::total_cmp);
    let fmt = |v: &[f64]| {
        format!(
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            percentile(v, 50.0),
            percentile(v, 99.0),
            v.last().copied().unwrap_or(f64::NAN)
        )
    };
    vec![
        Row {
            workload: format!(
                "watchdog detection ({} hangs, watchdog 50 ms)",
                detect.len()
            ),
            figure: fmt(&detect),
            note: "goal: p99 <= 50 ms + one tick (6 ms) + 10 ms; never before 50 ms".into(),
        },
        Row {
            workload: "  hung -> new generation serving".into(),
            figure: fmt(&replace),
            note: "goal: p99 <= 10 ms (setup is empty here)".into(),
        },
    ]
}

fn calls_per_second(
    dir: &Path,
    plugins: &Path,
    iterations: u64,
    watchdog: bool,
    round: usize,
) -> f64 {
    let mut body = header(plugins);
    body.push_str("[[context]]\nname = \"C\"\n");
    for i in 0..10 {
        body.push_str(&format!(
            "[[context.service]]\nname = \"nop{i}\"\nplugin = \"probe\"\nexport = \"Nop\"\n"
        ));
        if watchdog {
            body.push_str("watchdog = \"1s\"\n");
        }
    }
    body.push_str(&format!(
        "[[context.service]]\nname = \"stop\"\nplugin = \"hello\"\nexport = \"StopAfter\"\nconfig = {{ count = {iterations} }}\n"
    ));
    let m = dir.join(format!("cost-{watchdog}-{round}.toml"));
    std::fs::write(&m, body).unwrap();
    let j = dir.join(format!("cost-{watchdog}-{round}.jsonl"));
    let events = run(&m, &j, None);
    let ready = events.iter().find(|e| e["event"] == "ready").map(mono);
    let stopping = events
        .iter()
        .find(|e| e["event"] == "context_stopping")
        .map(mono);
    match (ready, stopping) {
        #[expect(clippy::cast_precision_loss, reason = "call counts far below 2^53")]
        (Some(a), Some(b)) if b > a => (10 * iterations) as f64 / ((b - a) / 1e6),
        _ => f64::NAN,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn watchdog_cost(dir: &Path, plugins: &Path, iterations: u64, rounds: usize) -> Vec<Row> {
    let mut without = Vec::new();
    let mut with = Vec::new();
    for r in 0..rounds {
        without.push(calls_per_second(dir, plugins, iterations, false, r));
        with.push(calls_per_second(dir, plugins, iterations, true, r));
    }
    let (a, b) = (median(without), median(with));
    vec![
        Row {
            workload: "main calls/s, 10 trivial services, no watchdog".into(),
            figure: format!("{:.2} M/s", a / 1e6),
            note: format!("median of {rounds} runs of {iterations} iterations"),
        },
        Row {
            workload: "  same with watchdog = \"1s\" on each".into(),
            figure: format!("{:.2} M/s ({:+.1} %)", b / 1e6, (b / a - 1.0) * 100.0),
            note: "goal: under 10 % apart".into(),
        },
    ]
}

/// Builds `plugins/versioned` as version `v` (release or debug) into the
/// bench's own target folder and returns a copy of the library.
fn versioned(v: &str, release: bool) -> PathBuf {
    let root = release_dir()
        .parent()
        .and_then(Path::parent)
        .expect("workspace root")
        .to_path_buf();
    let target = root.join("target/bench-variants");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(&root)
        .args(["build", "-q", "-p", "plugin-versioned", "--target-dir"])
        .arg(&target)
        .env("OTOOLS_VERSIONED", v);
    if release {
        cmd.arg("--release");
    }
    assert!(
        cmd.status().expect("run cargo").success(),
        "building versioned {v}"
    );
    let profile = if release { "release" } else { "debug" };
    let out = target.join(format!("{profile}/v{v}.so"));
    std::fs::copy(target.join(format!("{profile}/libversioned.so")), &out).expect("copy variant");
    out
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn reload_swaps(dir: &Path, plugins: &Path, reloads: usize, release: bool) -> Vec<Row> {
    let v1 = versioned("1", release);
    let v2 = versioned("2", release);
    let variants = [std::fs::read(&v1).unwrap(), std::fs::read(&v2).unwrap()];
    let profile = if release { "release" } else { "debug" };
    let watched = dir.join(format!("libswapped-{profile}.so"));
    std::fs::write(&watched, &variants[0]).unwrap();
    let m = dir.join(format!("reload-{profile}.toml"));
    std::fs::write(
        &m,
        format!(
            "{}reload_debounce = \"20ms\"\nreload_limit = 100000\n[[dataframe]]\nname = \"d\"\n[[context]]\nname = \"C\"\nperiod = \"1ms\"\ndataframes = [\"d\"]\n\
             [[context.service]]\nname = \"counter\"\nplugin = \"{}\"\nexport = \"Counter\"\nconfig = {{ dataframe = \"d\" }}\n",
            header(plugins),
            watched.display()
        ),
    )
    .unwrap();
    let j = dir.join(format!("reload-{profile}.jsonl"));
    let _ = std::fs::remove_file(&j);
    let otools = release_dir().join("otools");
    let mut child = Command::new(&otools)
        .args(["run", m.to_str().unwrap(), "--events", j.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run otools");
    let started = |events: &[Value], generation: u64| {
        events.iter().any(|e| {
            e["event"] == "started" && e["service"] == "counter" && e["generation"] == generation
        })
    };
    let wait = |pred: &dyn Fn(&[Value]) -> bool| {
        let deadline = Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let ev = journal(&j);
            if pred(&ev) {
                return;
            }
            assert!(Instant::now() < deadline, "reload workload stuck");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    };
    wait(&|ev| started(ev, 1));
    let rss_before = rss_kib(child.id());
    let mut latencies = Vec::new();
    for k in 0..reloads {
        let generation = k as u64 + 2;
        let tmp = dir.join("swap.tmp");
        std::fs::write(&tmp, &variants[(k + 1) % 2]).unwrap();
        let t0 = Instant::now();
        std::fs::rename(&tmp, &watched).unwrap();
        wait(&|ev| started(ev, generation));
        latencies.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    let rss_after = rss_kib(child.id());
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    latencies.sort_by(f64::total_cmp);
    #[expect(clippy::cast_precision_loss, reason = "small counts")]
    let per_reload = rss_after.saturating_sub(rss_before) as f64 / reloads.max(1) as f64;
    let size_kib = variants[0].len() / 1024;
    vec![
        Row {
            workload: format!(
                "reload: file replaced -> new instance serving ({profile} plugin, {reloads} reloads)"
            ),
            figure: format!(
                "p50 {:.1} ms, p99 {:.1} ms",
                percentile(&latencies, 50.0),
                percentile(&latencies, 99.0)
            ),
            note: "includes reload_debounce = 20ms; journal polled every 1 ms".into(),
        },
        Row {
            workload: format!("  RSS growth per reload ({profile}, {size_kib} KiB file)"),
            figure: format!("{per_reload:.0} KiB"),
            note: "libraries are never unloaded".into(),
        },
    ]
}

/// ready -> context_stopping of the first context, in seconds, from the journal.
fn running_seconds(events: &[Value]) -> f64 {
    let ready = events.iter().find(|e| e["event"] == "ready").map(mono);
    let stopping = events
        .iter()
        .find(|e| e["event"] == "context_stopping")
        .map(mono);
    match (ready, stopping) {
        (Some(a), Some(b)) if b > a => (b - a) / 1e6,
        _ => f64::NAN,
    }
}

fn versus(dir: &Path, plugins: &Path, smoke: bool, py: Option<&Path>) -> Vec<Versus> {
    let mut rows = Vec::new();
    let scale = |full: u64, tiny: u64| if smoke { tiny } else { full };

    // 1. dataframe get+set pairs per second from one service's main.
    let (iterations, pairs) = (scale(200, 2), scale(100_000, 1000));
    let m = dir.join("pairs.toml");
    std::fs::write(
        &m,
        format!(
            "{}[[dataframe]]\nname = \"d\"\n[[context]]\nname = \"C\"\ndataframes = [\"d\"]\n\
             [[context.service]]\nname = \"pairs\"\nplugin = \"probe\"\nexport = \"DfPairs\"\nconfig = {{ dataframe = \"d\", pairs = {pairs} }}\n\
             [[context.service]]\nname = \"stop\"\nplugin = \"hello\"\nexport = \"StopAfter\"\nconfig = {{ count = {iterations} }}\n",
            header(plugins)
        ),
    )
    .unwrap();
    let ev = run(&m, &dir.join("pairs.jsonl"), None);
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^53")]
    let rate = (iterations * pairs) as f64 / running_seconds(&ev);
    let peer = py.and_then(|p| {
        run_peer(
            p,
            "df_pairs",
            &scale(300_000, 1000).to_string(),
            "rate",
            true,
        )
    });
    rows.push(Versus {
        workload: "dataframe get+set pairs/s, one service's main".into(),
        otools_py: peer,
        otools_rs: rate,
        unit: "pairs/s",
        higher_is_better: true,
        goal: ">= 50x and >= 10 M/s".into(),
    });

    // 2. 4 loops incrementing one key at once.
    let times = scale(1_000_000, 1000);
    let mut body = header(plugins);
    body.push_str("[[dataframe]]\nname = \"counter\"\ninit = { count = 0 }\n[[context]]\nname = \"C\"\ndataframes = [\"counter\"]\n");
    for i in 0..4 {
        body.push_str(&format!(
            "[[context.service]]\nname = \"w{i}\"\nplugin = \"counter\"\nexport = \"LoopIncrement\"\nconfig = {{ key = \"count\", times = {times}, batch = 1000 }}\n"
        ));
    }
    let m = dir.join("loops.toml");
    std::fs::write(&m, body).unwrap();
    let ev = run(&m, &dir.join("loops.jsonl"), None);
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^53")]
    let rate = (4 * times) as f64 / running_seconds(&ev);
    let peer = py.and_then(|p| run_peer(p, "loops", if smoke { "0.2" } else { "3" }, "rate", true));
    rows.push(Versus {
        workload: "4 loops incrementing one key: increments/s (otools: atomic, 0 lost)".into(),
        otools_py: peer,
        otools_rs: rate,
        unit: "incr/s",
        higher_is_better: true,
        goal: ">= 20x, 0 lost".into(),
    });

    // 3. main calls per second, 10 trivial services.
    let iterations = scale(2_000_000, 1000);
    let rs = calls_per_second(dir, plugins, iterations, false, 99);
    let peer = py.and_then(|p| {
        run_peer(
            p,
            "main_calls",
            &scale(30_000, 100).to_string(),
            "rate",
            true,
        )
    });
    rows.push(Versus {
        workload: "main calls/s, 10 trivial services in one context".into(),
        otools_py: peer,
        otools_rs: rs,
        unit: "calls/s",
        higher_is_better: true,
        goal: ">= 1000x".into(),
    });

    // 3b. The same with a watchdog on every service (OTools: 1 s, action warn).
    let rs_wd = calls_per_second(dir, plugins, iterations, true, 98);
    let peer = py.and_then(|p| {
        run_peer(
            p,
            "main_calls_watchdog",
            &scale(30, 3).to_string(),
            "rate",
            true,
        )
    });
    rows.push(Versus {
        workload: "  same with a watchdog on every service".into(),
        otools_py: peer,
        otools_rs: rs_wd,
        unit: "calls/s",
        higher_is_better: true,
        goal: format!(
            "otools within 10 % of its run without: {:+.1} %",
            (rs_wd / rs - 1.0) * 100.0
        ),
    });

    // 4. OTools' counter trigger to N=1000, whole process; and its peak RSS.
    let m = dir.join("trigger.toml");
    std::fs::write(
        &m,
        format!(
            "{}[[dataframe]]\nname = \"counter\"\ninit = {{ count = 0 }}\n[[context]]\nname = \"Main\"\ndataframes = [\"counter\"]\n\
             [[context.service]]\nname = \"increment\"\nplugin = \"counter\"\nexport = \"Increment\"\nconfig = {{ key = \"count\" }}\n\
             [[context.trigger]]\nname = \"stop\"\nmode = \"or\"\n\
             condition = [ {{ plugin = \"counter\", export = \"AtLeast\", config = {{ dataframe = \"counter\", key = \"count\", min = 1000 }} }} ]\n\
             service = [ {{ plugin = \"control\", export = \"Shutdown\" }} ]\n",
            header(plugins)
        ),
    )
    .unwrap();
    let otools = release_dir().join("otools");
    let runs = if smoke { 1 } else { 5 };
    let mut rs_times = Vec::new();
    let mut rs_rss = Vec::new();
    for _ in 0..runs {
        let (t, rss) = whole_process(&[
            otools.to_str().unwrap(),
            "run",
            m.to_str().unwrap(),
            "--no-watch",
        ]);
        rs_times.push(t);
        rs_rss.push(rss);
    }
    let (py_time, py_rss) = match py {
        Some(p) => {
            let script = workspace_root().join("bench/peer/peer.py");
            let mut times = Vec::new();
            let mut rss = Vec::new();
            for _ in 0..runs {
                let (t, r) = whole_process(&[
                    p.to_str().unwrap(),
                    script.to_str().unwrap(),
                    "counter_trigger",
                    "1000",
                ]);
                times.push(t);
                rss.push(r);
            }
            (Some(median(times)), Some(median(rss)))
        }
        None => (None, None),
    };
    rows.push(Versus {
        workload: "counter trigger to N=1000, process start to exit".into(),
        otools_py: py_time,
        otools_rs: median(rs_times),
        unit: "s",
        higher_is_better: false,
        goal: ">= 20x faster".into(),
    });
    rows.push(Versus {
        workload: "  peak RSS of that run".into(),
        otools_py: py_rss.map(|k| k / 1024.0),
        otools_rs: median(rs_rss) / 1024.0,
        unit: "MiB",
        higher_is_better: false,
        goal: "< 8 MiB".into(),
    });
    rows
}

/// The CPU a process uses over `window` seconds, in percent of one core,
/// from `utime + stime` in `/proc/<pid>/stat` (clock ticks of 10 ms).
fn cpu_percent(pid: u32, window: f64) -> f64 {
    let ticks = || -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let after = stat.rsplit(')').next().unwrap_or("");
        let f: Vec<f64> = after
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        // utime and stime are fields 14 and 15; after the command they are at 11 and 12.
        f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)
    };
    let c0 = ticks();
    let w0 = Instant::now();
    std::thread::sleep(std::time::Duration::from_secs_f64(window));
    (ticks() - c0) / 100.0 / w0.elapsed().as_secs_f64() * 100.0
}

/// Writes `body` to `dir/name.toml`, starts `otools run` on it with the
/// journal `dir/name.jsonl` and `--no-watch`, and returns it once `contexts`
/// contexts have journaled `ready` (polled every millisecond), with the
/// seconds from its start to then.
fn spawn_until_ready(
    dir: &Path,
    name: &str,
    body: &str,
    contexts: usize,
) -> (std::process::Child, f64) {
    let manifest = dir.join(format!("{name}.toml"));
    std::fs::write(&manifest, body).unwrap();
    let journal_path = dir.join(format!("{name}.jsonl"));
    let _ = std::fs::remove_file(&journal_path);
    let t0 = Instant::now();
    let mut child = Command::new(release_dir().join("otools"))
        .args([
            "run",
            manifest.to_str().unwrap(),
            "--events",
            journal_path.to_str().unwrap(),
            "--no-watch",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run otools");
    let deadline = Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let n = journal(&journal_path)
            .iter()
            .filter(|e| e["event"] == "ready")
            .count();
        if n >= contexts {
            return (child, t0.elapsed().as_secs_f64());
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "otools ended ({status}) before its contexts were ready; see {}",
                journal_path.display()
            );
        }
        assert!(Instant::now() < deadline, "contexts never became ready");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Asks `otools` to stop (SIGTERM) and waits for it; whether it exited by
/// itself, after the signal.
fn terminate(mut child: std::process::Child) -> bool {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    child.wait().is_ok_and(|s| s.code().is_some())
}

/// 1,000 services in 100 contexts (otools only): time to all-ready, then
/// the CPU used while idle with `period = "100ms"`.
fn many_services(dir: &Path, plugins: &Path, smoke: bool) -> Vec<Row> {
    let contexts = if smoke { 5 } else { 100 };
    let mut body = header(plugins);
    for c in 0..contexts {
        body.push_str(&format!(
            "[[context]]\nname = \"c{c}\"\nperiod = \"100ms\"\n"
        ));
        for s in 0..10 {
            body.push_str(&format!(
                "[[context.service]]\nname = \"s{s}\"\nplugin = \"probe\"\nexport = \"Nop\"\n"
            ));
        }
    }
    let (child, ready) = spawn_until_ready(dir, "many", &body, contexts);
    let window = if smoke { 0.5 } else { 3.0 };
    let cpu = cpu_percent(child.id(), window);
    terminate(child);
    vec![
        Row {
            workload: format!(
                "{} services in {contexts} contexts: start to all ready",
                contexts * 10
            ),
            figure: format!("{:.3} s", ready),
            note: "goal: < 1 s (includes loading the manifest and plugins)".into(),
        },
        Row {
            workload: "  idle CPU with period = \"100ms\"".into(),
            figure: format!("{cpu:.1} % of a core"),
            note: format!("goal: < 2 %; over {window} s, from /proc/<pid>/stat"),
        },
    ]
}

/// The tables `--only` can pick.
const TABLES: [&str; 5] = ["otools", "messaging", "pipelines", "flows", "host"];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let smoke = args.iter().any(|a| a == "--smoke");
    let only = args
        .iter()
        .position(|a| a == "--only")
        .map(|i| args.get(i + 1).map_or("", String::as_str))
        .or_else(|| {
            args.iter()
                .any(|a| a == "--pipelines-only")
                .then_some("pipelines")
        })
        .or_else(|| args.iter().any(|a| a == "--flows-only").then_some("flows"));
    if let Some(t) = only
        && !TABLES.contains(&t)
    {
        eprintln!("--only takes one of: {}", TABLES.join(", "));
        std::process::exit(2);
    }
    let wanted = |t: &str| only.is_none_or(|o| o == t);
    let plugins = release_dir();
    let dir = scratch();
    let started = Instant::now();
    if wanted("otools") {
        otools_table(&dir, &plugins, smoke);
    }
    if wanted("messaging") {
        messaging::print(&messaging::table(
            &dir,
            &plugins,
            smoke,
            peer_python("service_framework").as_deref(),
        ));
        println!();
    }
    if wanted("pipelines") {
        pipeline::print(
            &dir,
            &plugins,
            smoke,
            peer_python("os_m3_engine").as_deref(),
        );
    }
    if wanted("flows") {
        flow::print(&flow::table(
            &dir,
            &plugins,
            smoke,
            flow::peer_python().as_deref(),
        ));
        println!();
    }
    if wanted("host") {
        host_table(&dir, &plugins, smoke);
    }
    println!(
        "({} mode, {:.1} s; machine: {} cores)",
        if smoke { "smoke" } else { "full" },
        started.elapsed().as_secs_f64(),
        std::thread::available_parallelism().map_or(0, usize::from)
    );
}

/// The rows of the host's own workloads (services, watchdog, reload).
fn host_table(dir: &Path, plugins: &Path, smoke: bool) {
    let mut rows = Vec::new();
    rows.extend(many_services(dir, plugins, smoke));
    if smoke {
        rows.extend(watchdog_detection(dir, plugins, 3));
        rows.extend(watchdog_cost(dir, plugins, 1000, 1));
        rows.extend(reload_swaps(dir, plugins, 2, true));
    } else {
        rows.extend(watchdog_detection(dir, plugins, 1000));
        rows.extend(watchdog_cost(dir, plugins, 2_000_000, 5));
        rows.extend(reload_swaps(dir, plugins, 200, true));
        rows.extend(reload_swaps(dir, plugins, 30, false));
    }
    let w = rows.iter().map(|r| r.workload.len()).max().unwrap_or(10);
    let f = rows.iter().map(|r| r.figure.len()).max().unwrap_or(10);
    println!("{:w$}  {:f$}  note", "workload", "figure");
    for r in &rows {
        println!("{:w$}  {:f$}  {}", r.workload, r.figure, r.note);
    }
}

/// The table against the Python OTools.
fn otools_table(dir: &Path, plugins: &Path, smoke: bool) {
    let py = peer_python("otools");
    let vs = versus(dir, plugins, smoke, py.as_deref());
    let fmt = |v: f64, unit: &str| match unit {
        "s" => format!("{v:.3} s"),
        "MiB" => format!("{v:.1} MiB"),
        _ if v >= 1e6 => format!("{:.2} M/s", v / 1e6),
        _ if v >= 1e4 => format!("{:.0} k/s", v / 1e3),
        _ => format!("{v:.0} /s"),
    };
    let vw = vs.iter().map(|r| r.workload.len()).max().unwrap_or(10);
    println!(
        "{:vw$}  {:>12}  {:>12}  {:>9}  goal",
        "workload (OTools 0.2.2 vs otools)", "OTools", "otools", "ratio"
    );
    for r in &vs {
        println!(
            "{:vw$}  {:>12}  {:>12}  {:>9}  {}",
            r.workload,
            r.otools_py.map_or_else(|| "n/a".into(), |v| fmt(v, r.unit)),
            fmt(r.otools_rs, r.unit),
            r.ratio()
                .map_or_else(|| "n/a".into(), |x| format!("{x:.1}x")),
            r.goal
        );
    }
    if py.is_none() {
        println!("(the Python OTools peer is not installed: bench/peer/install.sh)");
    }
    println!();
}
