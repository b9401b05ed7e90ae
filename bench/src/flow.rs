//! The flow rows of `make bench` (issue 12), side by side with eventor
//! 5.1.9 (`bench/peer/eventor_peer.py`) in the same run:
//!
//! Both sides run a 200-step chain and its recovery (see [`PEER_STEPS`]);
//! otools also runs the 1,000 steps the goals name.
//!
//! - **chain**: N steps in a chain (event `e<i>` activates step `s<i>`,
//!   `flowsteps::Work` with nothing to do, whose `on_success` raises
//!   `e<i+1>`), one sequence, a fresh run store on this disk (WAL,
//!   `synchronous = FULL`): N over the time from `flow_started` to
//!   `flow_finished` in the journal. The peer: the same chain, in its
//!   default SQLite store, timed over `run()`.
//! - **recover**: the same chain with step K sleeping an hour on its first
//!   attempt; once the journal shows K started, the host is killed
//!   (SIGKILL); then `otools run --mode recover` on the same store: the
//!   time from spawning it to the journal's `step_started` of K (attempt
//!   2), tailing the journal, and to its exit. The peer: its chain in a
//!   process killed (SIGKILL, process group) once K started, then a new
//!   process in `RunMode.recover`, timed from spawning it to K starting.
//! - **transition**: the cost of one committed step transition, through
//!   the host's own run store (`otools_host::flow::store::Store`): `BEGIN`,
//!   a task row set `active`, `COMMIT` (an fsync with `synchronous =
//!   FULL`), on this disk; p50 and mean. otools only.
//!
//! The peer runs with `task_construct = "thread"` and `sleep_between_loops
//! = 0.001`, its fastest settings here (its defaults, a process per step
//! and 0.25 s between loops, ran 1.5 steps/s).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use otools_host::flow::store::{Status, Store};
use serde_json::Value;

use crate::{header, journal, last_json, percentile, release_dir, run, workspace_root};

/// One row: eventor's figure, otools', and the goal.
pub(crate) struct Row {
    workload: String,
    peer: Option<f64>,
    otools: f64,
    /// `/s` for a rate (higher is better), else a time unit.
    unit: &'static str,
    note: String,
    met: Option<bool>,
}

/// The chain's manifest: `n` steps, step `slow` (if any) sleeping an hour
/// on its first attempt.
fn chain_manifest(dir: &Path, plugins: &Path, name: &str, n: usize, slow: Option<usize>) -> String {
    let mut m = header(plugins);
    let events: Vec<String> = (0..n).map(|i| format!("\"e{i}\"")).collect();
    m.push_str(&format!(
        "[[flow]]\nname = \"chain\"\nstore = \"{}\"\nevents = [{}]\nstart = [\"e0/1\"]\n",
        dir.join(format!("{name}.db")).display(),
        events.join(", ")
    ));
    for i in 0..n {
        m.push_str(&format!(
            "[[flow.step]]\nname = \"s{i}\"\nplugin = \"flowsteps\"\nexport = \"Work\"\n"
        ));
        if slow == Some(i) {
            m.push_str("config = { sleep_ms = 3600000, until_attempt = 1 }\n");
        }
        if i + 1 < n {
            m.push_str(&format!("on_success = \"e{}\"\n", i + 1));
        }
        m.push_str(&format!(
            "[[flow.association]]\nevent = \"e{i}\"\nsteps = [\"s{i}\"]\n"
        ));
    }
    m
}

fn at(events: &[Value], event: &str) -> Option<f64> {
    events
        .iter()
        .find(|e| e["event"] == event)
        .and_then(|e| e["mono_us"].as_f64())
}

/// Steps per second through an `n`-step chain.
fn chain(dir: &Path, plugins: &Path, n: usize) -> f64 {
    let name = format!("flow-chain-{n}");
    let m = dir.join(format!("{name}.toml"));
    std::fs::write(&m, chain_manifest(dir, plugins, &name, n, None)).unwrap();
    let ev = run(&m, &dir.join(format!("{name}.jsonl")), None);
    let finished = ev.iter().find(|e| e["event"] == "flow_finished");
    assert_eq!(
        finished.map(|e| e["result"].clone()),
        Some(Value::from("success")),
        "the chain did not succeed; see {}",
        dir.display()
    );
    match (at(&ev, "flow_started"), at(&ev, "flow_finished")) {
        #[expect(clippy::cast_precision_loss, reason = "a step count")]
        (Some(a), Some(b)) if b > a => n as f64 / ((b - a) / 1e6),
        _ => f64::NAN,
    }
}

/// Reads what was appended to a journal since the last call, line by line.
struct Tail {
    path: std::path::PathBuf,
    offset: u64,
    partial: String,
}

impl Tail {
    /// Waits (polling every 0.2 ms, at most 10 minutes) for an event that
    /// `want` accepts.
    fn until(&mut self, child: &mut std::process::Child, want: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            if let Ok(mut f) = std::fs::File::open(&self.path)
                && f.seek(SeekFrom::Start(self.offset)).is_ok()
            {
                let mut more = String::new();
                if let Ok(read) = f.read_to_string(&mut more) {
                    self.offset += read as u64;
                    self.partial.push_str(&more);
                }
            }
            while let Some(end) = self.partial.find('\n') {
                let line: String = self.partial.drain(..=end).collect();
                if serde_json::from_str::<Value>(&line).is_ok_and(|v| want(&v)) {
                    return;
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("otools ended ({status}) first; see {}", self.path.display());
            }
            assert!(
                Instant::now() < deadline,
                "{} never showed it",
                self.path.display()
            );
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

fn spawn(manifest: &Path, journal_path: &Path, extra: &[&str]) -> (std::process::Child, Tail) {
    let _ = std::fs::remove_file(journal_path);
    let child = Command::new(release_dir().join("otools"))
        .arg("run")
        .arg(manifest)
        .arg("--events")
        .arg(journal_path)
        .args(["--no-watch"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run otools");
    let tail = Tail {
        path: journal_path.to_path_buf(),
        offset: 0,
        partial: String::new(),
    };
    (child, tail)
}

/// A run of `n` steps killed at step `k`, then recovered: seconds from
/// spawning the recovering host to step `k` starting again, and to its end.
fn recover(dir: &Path, plugins: &Path, n: usize, k: usize) -> (f64, f64) {
    let name = format!("flow-recover-{n}");
    let m = dir.join(format!("{name}.toml"));
    std::fs::write(&m, chain_manifest(dir, plugins, &name, n, Some(k))).unwrap();
    let slow = format!("s{k}");
    let is_k = |e: &Value| e["event"] == "step_started" && e["step"] == slow.as_str();
    let (mut first, mut tail) = spawn(&m, &dir.join(format!("{name}-1.jsonl")), &[]);
    tail.until(&mut first, is_k);
    first.kill().expect("SIGKILL the host");
    let _ = first.wait();
    let t0 = Instant::now();
    let second_journal = dir.join(format!("{name}-2.jsonl"));
    let (mut second, mut tail) = spawn(&m, &second_journal, &["--mode", "recover"]);
    tail.until(&mut second, is_k);
    let resumed = t0.elapsed().as_secs_f64();
    let status = second.wait().expect("wait for otools");
    let finished = t0.elapsed().as_secs_f64();
    assert!(status.success(), "the recovered run ended with {status}");
    let ev = journal(&second_journal);
    let skipped = ev.iter().filter(|e| e["event"] == "step_skipped").count();
    assert_eq!(skipped, k, "recover skips exactly the steps that succeeded");
    (resumed, finished)
}

/// Seconds per committed step transition: (p50, mean) over `n`.
fn transition(dir: &Path, n: usize) -> (f64, f64) {
    let store = Store::open(Some(&dir.join("flow-transition.db"))).expect("open the run store");
    let run = store.new_run("bench").expect("a run");
    let mut each = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        store.begin().expect("BEGIN");
        store
            .task(&run, "s", &i.to_string(), 1, Status::Active, None)
            .expect("a task row");
        store.commit().expect("COMMIT");
        each.push(t.elapsed().as_secs_f64());
    }
    #[expect(clippy::cast_precision_loss, reason = "a count")]
    let mean = each.iter().sum::<f64>() / n as f64;
    each.sort_by(f64::total_cmp);
    (percentile(&each, 50.0), mean)
}

/// The Python of the peers' venv, if eventor imports there (with the
/// shims of `eventor_peer.py`, which `import eventor` alone lacks).
pub(crate) fn peer_python() -> Option<std::path::PathBuf> {
    let py = workspace_root().join(".bench/venv/bin/python");
    peer(&py, &["probe"]).map(|_| py)
}

/// Runs the peer script; its last JSON line.
fn peer(py: &Path, args: &[&str]) -> Option<Value> {
    last_json(
        Command::new(py)
            .arg(workspace_root().join("bench/peer/eventor_peer.py"))
            .args(args),
    )
}

/// How many steps the peer's chain has: eventor scans every trigger of
/// the run on each loop, so a step costs it more the longer the run (20
/// steps/s at 100 steps, 3.4 at 300 on this VM): its 1,000-step chain and
/// recovery would take over a quarter of an hour, past the measuring
/// window. Both sides run this length side by side; otools also runs the
/// 1,000 steps the goal names.
const PEER_STEPS: usize = 200;

/// Every flow row, measured now (eventor's column when `py` has it).
pub(crate) fn table(dir: &Path, plugins: &Path, smoke: bool, py: Option<&Path>) -> Vec<Row> {
    let (n, small) = if smoke { (20, 10) } else { (1000, PEER_STEPS) };
    let must = |v: Option<Value>, what: &str| {
        assert!(
            !(smoke && py.is_some() && v.is_none()),
            "the eventor peer gave no figure for {what}"
        );
        v
    };
    let (construct, sleep) = ("thread", "0.001");
    let figure = |v: &Option<Value>, key: &str| v.as_ref().and_then(|v| v[key].as_f64());
    let peer_chain = must(
        py.and_then(|p| peer(p, &["chain", &small.to_string(), construct, sleep])),
        "chain",
    );
    let peer_recover = must(
        py.and_then(|p| {
            let k = (small / 2).to_string();
            peer(p, &["recover", &small.to_string(), &k, construct, sleep])
        }),
        "recover",
    );
    let peer_steps = figure(&peer_chain, "steps_per_s");
    let peer_resume = figure(&peer_recover, "resume_ms").map(|ms| ms / 1e3);
    let steps_small = chain(dir, plugins, small);
    let (resumed_small, finished_small) = recover(dir, plugins, small, small / 2);
    let steps = chain(dir, plugins, n);
    let (resumed, finished) = recover(dir, plugins, n, n / 2);
    let (p50, mean) = transition(dir, if smoke { 20 } else { 500 });
    let row = |workload: String, peer: Option<f64>, otools: f64, unit, note: &str, met| Row {
        workload,
        peer,
        otools,
        unit,
        note: note.to_owned(),
        met,
    };
    vec![
        row(
            format!("steps/s through a {small}-step chain"),
            peer_steps,
            steps_small,
            "/s",
            "goal: >= 100x the peer's",
            peer_steps.map(|p| steps_small / p >= 100.0),
        ),
        row(
            format!(
                "recover a {small}-step run killed at step {}: to it again",
                small / 2
            ),
            peer_resume,
            resumed_small,
            "ms",
            "",
            None,
        ),
        row(
            "  to the end of the recovered run".into(),
            figure(&peer_recover, "finish_s"),
            finished_small,
            "s",
            "",
            None,
        ),
        row(
            format!("steps/s through a {n}-step chain"),
            None,
            steps,
            "/s",
            "peer: not run at this length (see PEER_STEPS)",
            None,
        ),
        row(
            format!(
                "recover a {n}-step run killed at step {}: to it again",
                n / 2
            ),
            None,
            resumed,
            "ms",
            "goal: < 100 ms (process start, manifest, plugins, store included)",
            Some(resumed < 0.1),
        ),
        row(
            "  to the end of the recovered run".into(),
            None,
            finished,
            "s",
            "",
            None,
        ),
        row(
            "one committed step transition, synchronous = FULL (p50)".into(),
            None,
            p50,
            "ms",
            &format!("mean {:.3} ms; otools' store, this disk", mean * 1e3),
            None,
        ),
    ]
}

fn show(v: f64, unit: &str) -> String {
    match unit {
        "/s" => format!("{v:.0} /s"),
        "ms" => format!("{:.2} ms", v * 1e3),
        _ => format!("{v:.2} s"),
    }
}

/// Prints the rows (the peer's column reads n/a when it is not installed).
pub(crate) fn print(rows: &[Row]) {
    let w = rows.iter().map(|r| r.workload.len()).max().unwrap_or(10);
    println!(
        "{:w$}  {:>12}  {:>12}  {:>9}  met?  note",
        "flows (eventor 5.1.9 vs otools)", "eventor", "otools", "ratio"
    );
    for r in rows {
        let ratio = r.peer.map(|p| {
            if r.unit == "/s" {
                r.otools / p
            } else {
                p / r.otools
            }
        });
        println!(
            "{:w$}  {:>12}  {:>12}  {:>9}  {:4}  {}",
            r.workload,
            r.peer.map_or_else(|| "n/a".into(), |v| show(v, r.unit)),
            show(r.otools, r.unit),
            ratio.map_or_else(|| "n/a".into(), |x| format!("{x:.1}x")),
            r.met.map_or("", |m| if m { "yes" } else { "no" }),
            r.note
        );
    }
}
