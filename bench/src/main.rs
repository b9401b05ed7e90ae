//! `make bench`: runs each workload on the release `otools` binary and
//! plugins (built by `make bench` first) and prints one table of figures.
//! `--smoke` runs every workload for a moment with tiny counts and no
//! figure checks (`make bench-smoke`, run by CI so the harness cannot rot).
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

#![allow(clippy::print_stdout, reason = "the table is this program's output")]

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
    let otools = release_dir().join("otools");
    let mut child = Command::new(&otools)
        .args([
            "run",
            manifest.to_str().unwrap(),
            "--events",
            journal_path.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
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

fn watchdog_detection(dir: &Path, plugins: &Path, hangs: u64) -> Vec<Row> {
    let m = dir.join("detection.toml");
    std::fs::write(
        &m,
        format!(
            "{}[[context]]\nname = \"C\"\n[[context.service]]\nname = \"hang\"\nplugin = \"faulty\"\nexport = \"Faulty\"\n\
             config = {{ hang_in = [\"main\"], after = 1 }}\nwatchdog = \"50ms\"\nmax_restarts = 100000\nrestart_window = \"1h\"\n\
             restart_delay = \"0ms\"\nmax_restart_delay = \"0ms\"\n",
            header(plugins)
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

fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let plugins = release_dir();
    let dir = scratch();
    let started = Instant::now();
    let mut rows = Vec::new();
    if smoke {
        rows.extend(watchdog_detection(&dir, &plugins, 3));
        rows.extend(watchdog_cost(&dir, &plugins, 1000, 1));
        rows.extend(reload_swaps(&dir, &plugins, 2, true));
    } else {
        rows.extend(watchdog_detection(&dir, &plugins, 1000));
        rows.extend(watchdog_cost(&dir, &plugins, 2_000_000, 5));
        rows.extend(reload_swaps(&dir, &plugins, 200, true));
        rows.extend(reload_swaps(&dir, &plugins, 30, false));
    }
    let w = rows.iter().map(|r| r.workload.len()).max().unwrap_or(10);
    let f = rows.iter().map(|r| r.figure.len()).max().unwrap_or(10);
    println!("{:w$}  {:f$}  note", "workload", "figure");
    for r in &rows {
        println!("{:w$}  {:f$}  {}", r.workload, r.figure, r.note);
    }
    println!(
        "({} mode, {:.1} s; machine: {} cores)",
        if smoke { "smoke" } else { "full" },
        started.elapsed().as_secs_f64(),
        std::thread::available_parallelism().map_or(0, usize::from)
    );
}
