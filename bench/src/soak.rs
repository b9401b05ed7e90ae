//! `make soak`: the chaos mix of the reliability goals (RELIABILITY.md,
//! "Chaos run") against the release `otools` binary and the real plugins,
//! for a set time, then one report. Not part of CI or `make test`.
//!
//! `SOAK_SECS` (default 600) sets the duration and `SOAK_SEED` the seed
//! (default: from the clock; always printed). The same seed replays the same
//! schedule: the same manifests, signal plan and file swaps, in the same
//! order. Timing on a busy machine still differs, so a replay is a strong
//! hint, not a recording.
//!
//! The mix, all at once:
//! - **Hosts.** One `otools run` at a time, with `--events` and
//!   `--log-format json` (stderr to a file, read once the host has exited,
//!   so a slow harness never holds the host up), a fresh manifest per host,
//!   and its own `TMPDIR`
//!   (so private copies left behind are visible). Each host gets one signal
//!   at a random moment: SIGTERM, SIGINT, SIGHUP or two SIGTERMs back to
//!   back, about one in six within 100 ms of the start (while it is still
//!   loading). A host still running 10 s after a SIGHUP (which it may
//!   handle as a reload) then gets a SIGTERM. Then the next host starts,
//!   until the time is up.
//! - **Faults.** In each of the 4 contexts, `faulty` services and a
//!   `faulty` trigger panic, fail or hang at random (seeded) in every entry
//!   point: `setup`, `main`, `loop`, `finalize`, `check`, and the `main` of
//!   a trigger's stack service. Hangs last 150 ms, 400 ms, 1 s or for ever,
//!   under a 50 ms watchdog. One service per context deactivates itself
//!   often under `restart = "always"`, so its `setup` and `finalize` run
//!   (and fault) again and again, and in some contexts a crasher fails
//!   every `setup` (a crash loop under the back-off). Some hosts have a
//!   fragile service that gives up (`stop_service`, `stop_context` or
//!   `exit_host`), and one host in three is calm (fewer faults, all
//!   `one_for_one`) so that some reloads find every instance serving.
//! - **File swaps.** The `libfaulty.so` that the faulty main/loop services
//!   and the triggers come from is replaced under the live host every
//!   0.2-2.5 s (the deactivating service and the crasher come from an
//!   unswapped copy, `libcycler.so`, or their setup faults would refuse
//!   every reload): rewritten in place in
//!   chunks, rewritten in place twice within a third of a second, renamed
//!   over, copied over, rewritten with identical bytes, or replaced by a
//!   truncated file, garbage or a library that is not a plugin (then a good
//!   one again). Versions differ by a tag appended after the ELF data.
//! - **Increments.** Each context runs `counter::Increment` on the shared
//!   keys `a` and `b` (at debug, it logs `shared.a = <value after>`), and
//!   `probe::Report` first in manifest order, so it is finalized last in its
//!   context and logs the final values after that context's incrementers
//!   have stopped.
//!
//! **Lost increments.** An atomic increment returns the value after it, so
//! no two acknowledged increments of a key can log the same value: each
//! repeat is a lost increment. And when a context's `Report` logs
//! `report shared.a = F` (at shutdown, or when a group restart finalizes
//! it), that context's incrementers have been stopped first, so every value
//! they logged before that line must be at most `F`: each one above is a
//! lost increment. A lost increment shows up one way or the other, as long
//! as the host lives to report, or any increment follows it. The unit tests
//! below feed both kinds of loss to the check.
//!
//! **Report.** Grep-able lines: `soak run` per host (with `stop_ms`, from
//! the signal to the exit, and `exit_lag_ms`, from the wall-clock `ts` of
//! the host's last journal event to the exit the harness saw, within 50 ms), `soak swaps`, `soak faults`, `soak stops`, `soak rss` windows, `soak goal` (one per goal, `met` or
//! `MISSED`) and last a `soak summary` line. The exit code is 1 when a goal
//! is missed, 2 when the harness cannot run. Goals: 0 host exits by a
//! signal (a host killed by SIGBUS, SIGABRT, SIGSEGV, or by the SIGTERM,
//! SIGINT or SIGHUP it was sent), 0 lost increments, abandoned threads
//! within the cap (`[host] max_abandoned_threads`, set only when `otools
//! check` accepts it; no cap is a miss), 0 hosts still running 60 s after
//! their signal (then killed), and 0 exit codes outside the documented ones.
//! Everything (manifests, journals, the last stderr lines of each odd exit)
//! stays in `target/release/soak/` for a look afterwards.

#![allow(clippy::print_stdout, reason = "the report is this program's output")]

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};
use serde_json::Value;

/// Contexts that increment the shared keys.
const CONTEXTS: usize = 4;
/// The shared keys every context increments.
const KEYS: [&str; 2] = ["a", "b"];
/// The abandoned-thread cap put in the manifest when the host accepts it.
const CAP: u64 = 32;
/// Hot-reload versions before the host stops with 76 (its leak ceiling).
const MAX_LOADED: u64 = 48;
/// How long a host may take to exit after its signal before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(60);
/// How long a host may keep running after a SIGHUP (which it may handle
/// as a reload) before it gets a SIGTERM.
const HUP_GRACE: Duration = Duration::from_secs(10);
/// How often `/proc/<pid>/status` is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// Exit codes the host documents (README "Exit codes", plus 71 from issue 9).
const DOCUMENTED_CODES: [i32; 8] = [0, 1, 2, 3, 71, 75, 76, 130];
/// Stderr lines kept per host, written out when it ends oddly.
const TAIL: usize = 60;

fn release_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    exe.parent().expect("target/release").to_path_buf()
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    match v.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => fail(&format!("{name}={v} is not a whole number")),
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("otools-soak: {msg}");
    std::process::exit(2)
}

fn signal_name(sig: i32) -> String {
    match sig {
        1 => "SIGHUP".into(),
        2 => "SIGINT".into(),
        6 => "SIGABRT".into(),
        7 => "SIGBUS".into(),
        9 => "SIGKILL".into(),
        11 => "SIGSEGV".into(),
        15 => "SIGTERM".into(),
        n => format!("signal {n}"),
    }
}

// ---------------------------------------------------------------- manifest

/// One faulty entity's fault lists over `entries`, as TOML keys.
fn fault_keys(
    rng: &mut fastrand::Rng,
    entries: &[&str],
    probability: f64,
    hangs: &[u64],
) -> String {
    let (mut panic, mut error, mut hang) = (Vec::new(), Vec::new(), Vec::new());
    for e in entries {
        match rng.u32(0..100) {
            0..40 => panic.push(*e),
            40..75 => hang.push(*e),
            75..90 => error.push(*e),
            _ => {}
        }
    }
    format!(
        "panic_in = {panic:?}, error_in = {error:?}, hang_in = {hang:?}, probability = {probability}, seed = {}, hang_ms = {}, message = \"soak fault\"",
        rng.u32(..),
        hangs[rng.usize(0..hangs.len())]
    )
}

/// The supervision keys of a faulty entity.
fn supervision(fragile: Option<&str>) -> String {
    let (max, give_up) = match fragile {
        Some(g) => (20, g),
        None => (100_000, "stop_service"),
    };
    format!(
        "watchdog = \"50ms\", startup_timeout = \"200ms\", shutdown_timeout = \"300ms\", restart = \"always\", \
         max_restarts = {max}, restart_window = \"10s\", restart_delay = \"10ms\", max_restart_delay = \"200ms\", \
         backoff_reset_after = \"1s\", on_give_up = \"{give_up}\""
    )
}

fn inline_service(name: &str, plugin: &str, export: &str, config: &str, extra: &str) -> String {
    let mut s = format!(
        "[[context.service]]\nname = \"{name}\"\nplugin = \"{plugin}\"\nexport = \"{export}\"\nconfig = {{ {config} }}\n"
    );
    for kv in extra.split(", ").filter(|s| !s.is_empty()) {
        s.push_str(kv);
        s.push('\n');
    }
    s
}

/// The most instances (services and conditions) a manifest runs.
const INSTANCES: u64 = (CONTEXTS * 8) as u64;

/// The largest shutdown budget of one context of the manifest: 1 s plus
/// twice the sum of its instances' `shutdown_timeout` (300 ms each; README
/// "Finalize").
fn context_budget() -> Duration {
    Duration::from_secs(1) + 2 * 8 * Duration::from_millis(300)
}

/// A fresh manifest for one host.
fn manifest(rng: &mut fastrand::Rng, plugins: &Path, cap: bool) -> String {
    let mut m = format!(
        "version = 1\n[host]\nlog_level = \"info\"\nplugin_dir = \"{}\"\nshutdown_timeout = \"300ms\"\n\
         reload_limit = 30\nreload_window = \"10s\"\nmax_loaded_libraries = {MAX_LOADED}\n",
        plugins.display()
    );
    if cap {
        m.push_str(&format!("max_abandoned_threads = {CAP}\n"));
    }
    m.push_str("[[dataframe]]\nname = \"shared\"\ninit = { a = 0, b = 0 }\n");
    // About one host in four has one service that gives up.
    let fragile = (rng.u32(0..4) == 0).then(|| {
        (
            rng.usize(0..CONTEXTS),
            ["stop_service", "stop_context", "exit_host"][rng.usize(0..3)],
        )
    });
    // One host in three is calm: one_for_one everywhere and 20 times fewer
    // faults, so that some reloads find every instance serving.
    let is_calm = rng.u32(0..3) == 0;
    let strategies: &[&str] = if is_calm {
        &["one_for_one"]
    } else {
        &["one_for_one", "one_for_one", "one_for_all", "rest_for_one"]
    };
    let calm = if is_calm { 0.05 } else { 1.0 };
    for c in 0..CONTEXTS {
        let strategy = strategies[rng.usize(0..strategies.len())];
        m.push_str(&format!(
            "[[context]]\nname = \"C{c}\"\nperiod = \"5ms\"\nlog_level = \"debug\"\ndataframes = [\"shared\"]\nstrategy = \"{strategy}\"\n"
        ));
        m.push_str(&inline_service(
            "report",
            "probe",
            "Report",
            "dataframe = \"shared\", keys = [\"a\", \"b\"]",
            "",
        ));
        for k in KEYS {
            m.push_str(&inline_service(
                &format!("inc_{k}"),
                "counter",
                "Increment",
                &format!("dataframe = \"shared\", key = \"{k}\""),
                "",
            ));
        }
        // Faults in main and loop, now and then; a rare hang for ever.
        let p = (0.0005 + rng.f64() * 0.0045) * calm;
        let chaos = fault_keys(rng, &["main", "loop"], p, &[150, 150, 400, 1000, 0]);
        let frag = fragile.and_then(|(fc, g)| (fc == c).then_some(g));
        m.push_str(&inline_service(
            "chaos",
            "faulty",
            "Faulty",
            &format!("has_loop = true, {chaos}"),
            &supervision(frag),
        ));
        // Short-lived generations, so setup and finalize run (and fault) often.
        let p = (0.005 + rng.f64() * 0.045) * calm;
        let cycle = fault_keys(rng, &["setup", "finalize"], p, &[150, 400]);
        m.push_str(&inline_service(
            "cycler",
            "cycler",
            "Faulty",
            &format!("deactivate_in = [\"main\"], {cycle}"),
            &supervision(None),
        ));
        // Every generation draws the same numbers (one seed per config), so
        // the cycler's setup faults in all generations or in none. The
        // crasher's setup always faults: a crash loop under the back-off.
        // Not under one_for_all, where it would restart the whole context.
        if !is_calm && strategy != "one_for_all" && rng.bool() {
            let kind = ["panic_in", "error_in", "hang_in"][rng.usize(0..3)];
            m.push_str(&inline_service(
                "crasher",
                "cycler",
                "Faulty",
                &format!("{kind} = [\"setup\"], hang_ms = 400, message = \"soak fault\""),
                &supervision(None),
            ));
        }
        // A trigger: a faulty condition and a faulty stack service.
        let p = (0.0005 + rng.f64() * 0.0045) * calm;
        let cond = fault_keys(rng, &["setup", "check", "finalize"], p, &[150, 400, 1000]);
        let stack = fault_keys(rng, &["setup", "main", "finalize"], p, &[150, 400]);
        let sup = |s: String| format!(", {s}");
        m.push_str(&format!(
            "[[context.trigger]]\nname = \"trig\"\ncondition = [ {{ plugin = \"faulty\", export = \"FaultyCondition\", config = {{ value = true, {cond} }}{} }} ]\n\
             service = [ {{ plugin = \"faulty\", export = \"Faulty\", config = {{ {stack} }}{} }} ]\n",
            sup(supervision(None)),
            sup(supervision(None)),
        ));
    }
    m
}

// ---------------------------------------------------------------- file swaps

/// Swaps `libfaulty.so` under the live hosts until told to stop.
struct Swapper {
    path: PathBuf,
    staging: PathBuf,
    original: Vec<u8>,
    bare: Vec<u8>,
    current: Vec<u8>,
    version: u64,
    rng: fastrand::Rng,
    counts: BTreeMap<&'static str, u64>,
}

impl Swapper {
    fn variant(&mut self) -> Vec<u8> {
        self.version += 1;
        let mut b = self.original.clone();
        b.extend_from_slice(b"\0otools-soak\0");
        b.extend_from_slice(&self.version.to_le_bytes());
        b
    }

    /// Rewrites the file in place (same inode), in chunks with short pauses.
    fn in_place(&mut self, bytes: &[u8]) {
        let Ok(mut f) = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&self.path)
        else {
            return;
        };
        let chunk = (16 * 1024) << self.rng.u32(0..4);
        for part in bytes.chunks(chunk) {
            let _ = f.write_all(part);
            if self.rng.bool() {
                std::thread::sleep(Duration::from_millis(self.rng.u64(0..4)));
            }
        }
    }

    fn rename_over(&mut self, bytes: &[u8]) {
        let tmp = self.path.with_file_name(".libfaulty.so.soak-tmp");
        if std::fs::write(&tmp, bytes).is_ok() {
            let _ = std::fs::rename(&tmp, &self.path);
        }
    }

    fn copy_over(&mut self, bytes: &[u8]) {
        if std::fs::write(&self.staging, bytes).is_ok() {
            let _ = std::fs::copy(&self.staging, &self.path);
        }
    }

    /// One swap; returns whether the file is left bad.
    fn step(&mut self, must_be_good: bool) -> bool {
        let roll = if must_be_good {
            self.rng.u32(0..90)
        } else {
            self.rng.u32(0..100)
        };
        let (kind, bytes, bad): (&'static str, Vec<u8>, bool) = match roll {
            0..25 => ("in_place_chunked", self.variant(), false),
            25..35 => {
                let first = self.variant();
                self.in_place(&first);
                std::thread::sleep(Duration::from_millis(self.rng.u64(20..300)));
                ("in_place_twice", self.variant(), false)
            }
            35..55 => ("rename_over", self.variant(), false),
            55..70 => ("copy_over", self.variant(), false),
            70..90 => ("identical", self.current.clone(), false),
            _ => {
                let good = self.variant();
                match self.rng.u32(0..3) {
                    0 => {
                        let n = self.rng.usize(1..good.len() / 2);
                        ("bad_truncated", good[..n].to_vec(), true)
                    }
                    1 => {
                        let mut g = vec![0u8; 64 * 1024];
                        self.rng.fill(&mut g);
                        ("bad_garbage", g, true)
                    }
                    _ => ("bad_not_a_plugin", self.bare.clone(), true),
                }
            }
        };
        match kind {
            "rename_over" => self.rename_over(&bytes),
            "copy_over" => self.copy_over(&bytes),
            k if k.starts_with("bad_") && self.rng.bool() => self.rename_over(&bytes),
            _ => self.in_place(&bytes),
        }
        if !bad {
            self.current = bytes;
        }
        *self.counts.entry(kind).or_default() += 1;
        bad
    }

    fn run(mut self, stop: &AtomicBool) -> BTreeMap<&'static str, u64> {
        let mut bad = false;
        while !stop.load(Ordering::Relaxed) {
            let pause = if bad {
                self.rng.u64(200..1000)
            } else {
                self.rng.u64(200..2500)
            };
            let until = Instant::now() + Duration::from_millis(pause);
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if stop.load(Ordering::Relaxed) {
                break;
            }
            bad = self.step(bad);
        }
        if bad {
            self.rename_over(&self.original.clone());
        }
        self.counts
    }
}

// ---------------------------------------------------------------- one host

/// What a host's stderr said, gathered as it runs.
#[derive(Default)]
struct Heard {
    /// Per key: every value an increment acknowledged.
    seen: HashMap<String, HashSet<i64>>,
    /// Acknowledged increments.
    acked: u64,
    /// Per key: values acknowledged a second time.
    repeats: BTreeMap<String, u64>,
    /// (context, key) -> values that context acknowledged since its last report.
    pending: HashMap<(usize, String), Vec<i64>>,
    /// (key, context, report, how many of its values were above it).
    above: Vec<(String, usize, i64, u64)>,
    tail: VecDeque<String>,
}

fn context_index(v: &Value) -> Option<usize> {
    v["context"].as_str()?.strip_prefix('C')?.parse().ok()
}

/// Takes one stderr line. Lines are whole JSON objects written in order, so
/// a `Report` line comes after every line its context's incrementers wrote
/// before they were stopped for it (a shutdown, or a group restart).
fn hear(line: &str, heard: &mut Heard, ready: &AtomicBool) {
    if heard.tail.len() == TAIL {
        heard.tail.pop_front();
    }
    heard.tail.push_back(line.to_owned());
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        return;
    };
    let Some(msg) = v["message"].as_str() else {
        return;
    };
    if msg.starts_with("all contexts ready") {
        ready.store(true, Ordering::SeqCst);
        return;
    }
    let Some(ctx) = context_index(&v) else { return };
    let service = v["service"].as_str().unwrap_or("");
    let parse = |s: &str| -> Option<(String, i64)> {
        let (k, n) = s.strip_prefix("shared.")?.split_once(" = ")?;
        Some((k.to_owned(), n.parse().ok()?))
    };
    if service.starts_with("inc_") {
        if let Some((k, n)) = parse(msg) {
            heard.acked += 1;
            if !heard.seen.entry(k.clone()).or_default().insert(n) {
                *heard.repeats.entry(k.clone()).or_default() += 1;
            }
            heard.pending.entry((ctx, k)).or_default().push(n);
        }
    } else if service == "report"
        && let Some((k, f)) = msg.strip_prefix("report ").and_then(parse)
    {
        let before = heard.pending.remove(&(ctx, k.clone())).unwrap_or_default();
        let above = before.iter().filter(|n| **n > f).count() as u64;
        if above > 0 {
            heard.above.push((k, ctx, f, above));
        }
    }
}

/// Lost increments in one host's life (see the module doc), how many
/// increments it acknowledged, and what was wrong.
fn lost_increments(heard: &Heard) -> (u64, u64, Vec<String>) {
    let mut lost = 0;
    let mut notes = Vec::new();
    for (key, repeats) in &heard.repeats {
        notes.push(format!("key {key}: {repeats} value(s) acknowledged twice"));
        lost += repeats;
    }
    for (key, c, f, above) in &heard.above {
        notes.push(format!(
            "key {key}: C{c} acknowledged {above} value(s) above its report {f} that followed them"
        ));
        lost += above;
    }
    (lost, heard.acked, notes)
}

fn proc_status(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    // A zombie (exited, not yet reaped) has no VmRSS: not a sample.
    Some((field("Threads:")?, field("VmRSS:")?))
}

/// Watches a host's stderr file for "all contexts ready", reading only
/// what was added since the last look, until it is found.
struct ReadyWatch {
    file: Option<std::fs::File>,
    carry: Vec<u8>,
    seen: bool,
}

impl ReadyWatch {
    const NEEDLE: &'static [u8] = b"all contexts ready";

    fn new(path: &Path) -> ReadyWatch {
        ReadyWatch {
            file: std::fs::File::open(path).ok(),
            carry: Vec::new(),
            seen: false,
        }
    }

    fn poll(&mut self) -> bool {
        if self.seen {
            return true;
        }
        let Some(f) = self.file.as_mut() else {
            return false;
        };
        let mut buf = std::mem::take(&mut self.carry);
        let _ = f.read_to_end(&mut buf);
        self.seen = buf.windows(Self::NEEDLE.len()).any(|w| w == Self::NEEDLE);
        let keep = buf.len().saturating_sub(Self::NEEDLE.len());
        self.carry = buf.split_off(keep);
        self.seen
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Sig {
    Term,
    Int,
    Hup,
    DoubleTerm,
}

impl Sig {
    fn name(self) -> &'static str {
        match self {
            Sig::Term => "SIGTERM",
            Sig::Int => "SIGINT",
            Sig::Hup => "SIGHUP",
            Sig::DoubleTerm => "SIGTERM+SIGTERM",
        }
    }
}

struct Sample {
    at: Duration,
    run: u64,
    threads: u64,
    rss_kib: u64,
}

/// The outcome of one host.
struct Outcome {
    status: Option<ExitStatus>,
    stuck: bool,
    sent: Option<(Sig, bool)>,
    lived: Duration,
    /// From the signal (after a SIGHUP the host survived: the SIGTERM) to the exit.
    stop: Option<Duration>,
    /// The host was still running `HUP_GRACE` after a SIGHUP.
    hup_survived: bool,
    /// When the exit was seen (wall clock, ms since epoch; polled every <= 50 ms).
    exited_ms: Option<u64>,
    heard: Heard,
    threads_ready: Option<u64>,
    threads_peak: u64,
    rss_first: Option<u64>,
    rss_last: u64,
    rss_peak: u64,
    leftovers: usize,
}

struct HostPlan {
    signal_after: Duration,
    sig: Sig,
}

/// Runs host number `run` on `work/run-<run>.toml`, journaling to
/// `work/run-<run>.jsonl`, with `TMPDIR` = `work/tmp-<run>`.
fn run_host(
    otools: &Path,
    work: &Path,
    run: u64,
    plan: &HostPlan,
    t0: Instant,
    samples: &mut Vec<Sample>,
) -> Outcome {
    let manifest = work.join(format!("run-{run}.toml"));
    let stderr_path = work.join(format!("run-{run}.stderr"));
    let journal = work.join(format!("run-{run}.jsonl"));
    let tmp = &work.join(format!("tmp-{run}"));
    std::fs::create_dir_all(tmp).expect("tmp dir");
    let started = Instant::now();
    let mut child = Command::new(otools)
        .args([
            "run",
            manifest.to_str().unwrap(),
            "--events",
            journal.to_str().unwrap(),
            "--log-format",
            "json",
        ])
        .env("TMPDIR", tmp)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        // A file, not a pipe: a harness that reads slowly never holds the host up.
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| fail(&format!("cannot run {}: {e}", otools.display())));
    let pid = child.id();
    let mut ready = ReadyWatch::new(&stderr_path);
    let mut out = Outcome {
        status: None,
        stuck: false,
        sent: None,
        lived: Duration::ZERO,
        stop: None,
        hup_survived: false,
        exited_ms: None,
        heard: Heard::default(),
        threads_ready: None,
        threads_peak: 0,
        rss_first: None,
        rss_last: 0,
        rss_peak: 0,
        leftovers: 0,
    };
    let mut next_sample = Instant::now();
    let mut signalled_at = None;
    let raw = Pid::from_raw(i32::try_from(pid).expect("pid fits")).expect("pid is not 0");
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            out.status = Some(status);
            out.exited_ms = Some(now_ms());
            break;
        }
        let now = Instant::now();
        if signalled_at.is_none() && now >= started + plan.signal_after {
            let loading = !ready.poll();
            let sig = match plan.sig {
                Sig::Term | Sig::DoubleTerm => Signal::TERM,
                Sig::Int => Signal::INT,
                Sig::Hup => Signal::HUP,
            };
            let _ = kill_process(raw, sig);
            if plan.sig == Sig::DoubleTerm {
                let _ = kill_process(raw, Signal::TERM);
            }
            out.sent = Some((plan.sig, loading));
            signalled_at = Some(now);
        }
        // SIGHUP may be handled as a reload that keeps the host running:
        // after a while, a SIGTERM (the stop deadline starts again from it).
        if plan.sig == Sig::Hup
            && !out.hup_survived
            && signalled_at.is_some_and(|s| now >= s + HUP_GRACE)
        {
            out.hup_survived = true;
            let _ = kill_process(raw, Signal::TERM);
            signalled_at = Some(now);
        }
        if signalled_at.is_some_and(|s| now >= s + STOP_DEADLINE) {
            let _ = kill_process(raw, Signal::KILL);
            out.stuck = true;
            out.status = child.wait().ok();
            break;
        }
        if now >= next_sample {
            next_sample = now + SAMPLE_EVERY;
            if let Some((threads, rss)) = proc_status(pid) {
                if ready.poll() {
                    out.threads_ready.get_or_insert(threads);
                    out.rss_first.get_or_insert(rss);
                    out.rss_last = rss;
                }
                out.threads_peak = out.threads_peak.max(threads);
                out.rss_peak = out.rss_peak.max(rss);
                samples.push(Sample {
                    at: t0.elapsed(),
                    run,
                    threads,
                    rss_kib: rss,
                });
            }
        }
        let mut wake = next_sample.min(now + Duration::from_millis(50));
        if signalled_at.is_none() {
            wake = wake.min(started + plan.signal_after);
        }
        std::thread::sleep(
            wake.saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        );
    }
    out.lived = started.elapsed();
    out.stop = signalled_at.map(|s| s.elapsed());
    let unused = AtomicBool::new(false);
    if let Ok(f) = std::fs::File::open(&stderr_path) {
        for line in BufReader::new(f).lines() {
            let Ok(line) = line else { break };
            hear(&line, &mut out.heard, &unused);
        }
    }
    let _ = std::fs::remove_file(&stderr_path);
    out.leftovers = std::fs::read_dir(tmp).map(Iterator::count).unwrap_or(0);
    let _ = std::fs::remove_dir_all(tmp);
    out
}

// ---------------------------------------------------------------- journal

#[derive(Default)]
struct Tally {
    /// (entry, kind) -> count, kind in panic | error | hang.
    faults: BTreeMap<(String, &'static str), u64>,
    events: BTreeMap<String, u64>,
    abandoned_peak_per_host: u64,
    generation_regressions: u64,
    /// Why reloads were refused: busy | bad_file | new_version_failed | other.
    rejected: BTreeMap<&'static str, u64>,
}

/// Milliseconds since the Unix epoch of a journal `ts`
/// (`2026-11-26T14:33:36.499Z`, UTC).
fn ts_ms(ts: &str) -> Option<u64> {
    let n = |r: std::ops::Range<usize>| -> Option<i64> { ts.get(r)?.parse().ok() };
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss, ms) = (n(11..13)?, n(14..16)?, n(17..19)?, n(20..23)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from((((days * 24 + hh) * 60 + mm) * 60 + ss) * 1000 + ms).ok()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Tallies one host's journal; returns its `abandoned` events (threads
/// given up on) and the wall-clock time of its last event (ms since epoch).
fn read_journal(path: &Path, tally: &mut Tally) -> (u64, Option<u64>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut abandoned = 0;
    let mut last_ms = None;
    let mut generations: HashMap<(String, String), u64> = HashMap::new();
    for v in text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
    {
        if let Some(ms) = v["ts"].as_str().and_then(ts_ms) {
            last_ms = Some(ms);
        }
        let event = v["event"].as_str().unwrap_or("").to_owned();
        let entry = v["entry"].as_str().unwrap_or("").to_owned();
        match event.as_str() {
            "failed" => {
                let reason = v["reason"].as_str().unwrap_or("");
                let kind = if reason.starts_with("panicked") {
                    "panic"
                } else {
                    "error"
                };
                *tally.faults.entry((entry, kind)).or_default() += 1;
            }
            "hung" => *tally.faults.entry((entry, "hang")).or_default() += 1,
            "abandoned" if entry != "context" => abandoned += 1,
            "reload_rejected" => {
                let reason = v["reason"].as_str().unwrap_or("");
                let why = if reason.contains("cannot be swapped now")
                    || reason.contains("during the swap")
                {
                    "busy"
                } else if reason.contains("cannot load") || reason.contains("not an otools plugin")
                {
                    "bad_file"
                } else if reason.contains("setup") || reason.contains("import") {
                    "new_version_failed"
                } else {
                    "other"
                };
                *tally.rejected.entry(why).or_default() += 1;
            }
            "started" => {
                let key = (
                    v["context"].as_str().unwrap_or("").to_owned(),
                    v["service"].as_str().unwrap_or("").to_owned(),
                );
                let g = v["generation"].as_u64().unwrap_or(0);
                let last = generations.entry(key).or_default();
                if g <= *last {
                    tally.generation_regressions += 1;
                }
                *last = g;
            }
            _ => {}
        }
        *tally.events.entry(event).or_default() += 1;
    }
    tally.abandoned_peak_per_host = tally.abandoned_peak_per_host.max(abandoned);
    (abandoned, last_ms)
}

// ---------------------------------------------------------------- main

fn main() {
    let mut args = std::env::args().skip(1);
    let mut secs = env_u64("SOAK_SECS").unwrap_or(600);
    let mut seed = env_u64("SOAK_SEED");
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| fail(&format!("{a} needs a whole number")))
        };
        match a.as_str() {
            "--secs" => secs = value(),
            "--seed" => seed = Some(value()),
            _ => fail("usage: otools-soak [--secs N] [--seed N] (or SOAK_SECS, SOAK_SEED)"),
        }
    }
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let release = release_dir();
    let otools = release.join("otools");
    let work = release.join("soak");
    let _ = std::fs::remove_dir_all(&work);
    let plugins = work.join("plugins");
    std::fs::create_dir_all(&plugins).expect("soak dir");
    // `libcycler.so` is a copy of `libfaulty.so` that is never swapped: its
    // setup faults would refuse every reload of the swapped library.
    for (lib, to) in [
        ("faulty", "faulty"),
        ("faulty", "cycler"),
        ("counter", "counter"),
        ("probe", "probe"),
        ("bare", "bare"),
    ] {
        let from = release.join(format!("lib{lib}.so"));
        if let Err(e) = std::fs::copy(&from, plugins.join(format!("lib{to}.so"))) {
            fail(&format!(
                "cannot copy {}: {e} (run `make soak`, which builds it)",
                from.display()
            ));
        }
    }

    // Does the host accept the abandoned-thread cap?
    let mut rng = fastrand::Rng::with_seed(seed);
    let check = |text: &str, name: &str| -> (bool, String) {
        let m = work.join(name);
        std::fs::write(&m, text).expect("write manifest");
        let out = Command::new(&otools)
            .args(["check", m.to_str().unwrap()])
            .output()
            .unwrap_or_else(|e| fail(&format!("cannot run {}: {e}", otools.display())));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = check(
        &manifest(&mut rng.fork(), &plugins, false),
        "check-base.toml",
    );
    if !ok {
        fail(&format!(
            "the soak manifest does not pass `otools check`:\n{err}"
        ));
    }
    let (cap, _) = check(&manifest(&mut rng.fork(), &plugins, true), "check-cap.toml");
    println!(
        "soak start seed={seed} secs={secs} otools={} cap={} (replay: SOAK_SEED={seed} SOAK_SECS={secs} make soak)",
        otools.display(),
        if cap { CAP.to_string() } else { "none".into() }
    );

    let swapper = Swapper {
        path: plugins.join("libfaulty.so"),
        staging: work.join("libfaulty.so.staging"),
        original: std::fs::read(plugins.join("libfaulty.so")).expect("read libfaulty.so"),
        bare: std::fs::read(plugins.join("libbare.so")).expect("read libbare.so"),
        current: Vec::new(),
        version: 0,
        rng: rng.fork(),
        counts: BTreeMap::new(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = {
        let stop = Arc::clone(&stop);
        let mut s = swapper;
        s.current = s.original.clone();
        std::thread::spawn(move || s.run(&stop))
    };

    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(secs);
    let mut samples = Vec::new();
    let mut tally = Tally::default();
    let mut signal_exits: BTreeMap<String, u64> = BTreeMap::new();
    let mut codes: BTreeMap<i32, u64> = BTreeMap::new();
    let mut unexpected = 0u64;
    let mut stuck = 0u64;
    let mut lost = 0u64;
    let mut acked = 0u64;
    let mut sent: BTreeMap<String, u64> = BTreeMap::new();
    let mut double_forced = 0u64;
    let mut double_sent = 0u64;
    let mut hup_survived = 0u64;
    let mut stop_ms_max = 0u64;
    let mut exit_lag_max = 0u64;
    let mut exit_lag_over_1s = 0u64;
    let mut over_cap = 0u64;
    let mut threads_over_start_peak = 0u64;
    let mut leftovers = 0u64;
    let mut longest: Option<(u64, Duration, u64, u64, u64)> = None;
    let slack = 2 * INSTANCES;
    let mut run = 0u64;
    while Instant::now() + Duration::from_secs(1) < deadline {
        run += 1;
        let m = work.join(format!("run-{run}.toml"));
        std::fs::write(&m, manifest(&mut rng, &plugins, cap)).expect("write manifest");
        let journal = work.join(format!("run-{run}.jsonl"));
        let early = rng.u32(0..6) == 0;
        let after = if early {
            Duration::from_millis(rng.u64(0..100))
        } else {
            Duration::from_millis(rng.u64(2_000..25_000))
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let plan = HostPlan {
            signal_after: after.min(left),
            sig: [Sig::Term, Sig::Term, Sig::Int, Sig::Hup, Sig::DoubleTerm][rng.usize(0..5)],
        };
        let o = run_host(&otools, &work, run, &plan, t0, &mut samples);
        let (abandoned, last_event_ms) = read_journal(&journal, &mut tally);
        // From the last journaled event (a context ending) to the exit seen.
        let exit_lag_ms = last_event_ms
            .zip(o.exited_ms)
            .map(|(l, e)| e.saturating_sub(l));
        if let Some(stop) = o.stop {
            stop_ms_max = stop_ms_max.max(stop.as_millis() as u64);
        }
        if let Some(lag) = exit_lag_ms {
            exit_lag_max = exit_lag_max.max(lag);
            exit_lag_over_1s += u64::from(lag > 1000);
        }
        let (l, a, notes) = lost_increments(&o.heard);
        lost += l;
        acked += a;
        hup_survived += u64::from(o.hup_survived);
        let double = matches!(o.sent, Some((Sig::DoubleTerm, _)));
        double_sent += u64::from(double);
        if let Some((s, loading)) = o.sent {
            let k = format!("{}{}", s.name(), if loading { " (loading)" } else { "" });
            *sent.entry(k).or_default() += 1;
        }
        let exit = match o.status {
            Some(st) if o.stuck => {
                format!("killed after {}s (stuck): {st}", STOP_DEADLINE.as_secs())
            }
            Some(st) => match (st.code(), st.signal()) {
                (Some(c), _) => format!("code {c}"),
                (None, Some(s)) => format!("signal {}", signal_name(s)),
                _ => format!("{st}"),
            },
            None => "unknown".into(),
        };
        let mut odd = o.stuck;
        if o.stuck {
            stuck += 1;
        } else if let Some(st) = o.status {
            if let Some(s) = st.signal() {
                *signal_exits.entry(signal_name(s)).or_default() += 1;
                odd = true;
            }
            if let Some(c) = st.code() {
                *codes.entry(c).or_default() += 1;
                let refused_at_start =
                    c == 2 && o.heard.tail.iter().any(|l| l.contains("libfaulty"));
                if !DOCUMENTED_CODES.contains(&c) || (c == 2 && !refused_at_start) {
                    unexpected += 1;
                    odd = true;
                }
                if c == 130 && double {
                    double_forced += 1;
                }
            }
        }
        // Slow stops keep their stderr tail too (the time is reported, not judged).
        let slow = o
            .stop
            .is_some_and(|d| d > context_budget() + Duration::from_secs(1))
            || exit_lag_ms.is_some_and(|l| l > 1000);
        if l > 0 || slow {
            odd = true;
        }
        // A file refused at start (exit 2) stays bad for a moment: do not spin.
        if o.status.and_then(|s| s.code()) == Some(2) {
            std::thread::sleep(Duration::from_millis(250));
        }
        let over = o.threads_ready.map(|r| o.threads_peak.saturating_sub(r));
        if let Some(over) = over {
            threads_over_start_peak = threads_over_start_peak.max(over);
            if cap && over > CAP + slack {
                over_cap += 1;
            }
        }
        leftovers += o.leftovers as u64;
        if let Some(first) = o.rss_first
            && longest.as_ref().is_none_or(|l| o.lived > l.1)
        {
            longest = Some((run, o.lived, first, o.rss_last, o.rss_peak));
        }
        let tail_file = if odd {
            let p = work.join(format!("run-{run}.stderr-tail"));
            let _ = std::fs::write(
                &p,
                o.heard
                    .tail
                    .iter()
                    .map(|l| format!("{l}\n"))
                    .collect::<String>(),
            );
            format!(" stderr_tail={}", p.display())
        } else {
            String::new()
        };
        println!(
            "soak run={run} lived_ms={} signal={} stop_ms={} exit_lag_ms={} exit=\"{exit}\" acked_increments={a} lost_increments={l} \
             threads_ready={} threads_peak={} rss_ready_kib={} rss_peak_kib={} abandoned={abandoned} \
             private_copies_left={}{tail_file}",
            o.lived.as_millis(),
            o.sent
                .map(|(s, loading)| format!(
                    "{}@{}ms{}",
                    s.name(),
                    plan.signal_after.as_millis(),
                    if loading { "(loading)" } else { "" }
                ))
                .unwrap_or_else(|| "none".into()),
            o.stop.map_or("-".into(), |d| d.as_millis().to_string()),
            exit_lag_ms.map_or("-".into(), |l| l.to_string()),
            o.threads_ready.map_or("-".into(), |t| t.to_string()),
            o.threads_peak,
            o.rss_first.map_or("-".into(), |t| t.to_string()),
            o.rss_peak,
            o.leftovers,
        );
        for n in notes {
            println!("soak lost run={run} {n}");
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swap_counts = swaps.join().unwrap_or_default();
    let elapsed = t0.elapsed();

    // ------------------------------------------------------------ report
    let joined = |m: &BTreeMap<&'static str, u64>| {
        m.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!("soak swaps {}", joined(&swap_counts));
    for ((entry, kind), n) in &tally.faults {
        println!("soak faults entry={entry} kind={kind} count={n}");
    }
    let ev = |k: &str| tally.events.get(k).copied().unwrap_or(0);
    println!(
        "soak events restarts={} reload_ok={} reload_rejected={} reload_postponed={} leak_ceiling={} gave_up={} fenced_calls={} \
         abandoned_peak_per_host={} generation_regressions={}",
        ev("restarting"),
        ev("reload_ok"),
        ev("reload_rejected"),
        ev("reload_postponed"),
        ev("leak_ceiling"),
        ev("gave_up"),
        ev("fenced_call"),
        tally.abandoned_peak_per_host,
        tally.generation_regressions,
    );
    println!("soak reload_rejected {}", joined(&tally.rejected));
    println!(
        "soak signals sent {}",
        sent.iter()
            .map(|(k, v)| format!("\"{k}\"={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "soak exits {} double_sigterm_sent={double_sent} double_sigterm_exit_130={double_forced} \
         sighup_survived_10s={hup_survived} private_copies_left={leftovers}",
        codes
            .iter()
            .map(|(k, v)| format!("code_{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "soak stops stop_ms_max={stop_ms_max} exit_lag_ms_max={exit_lag_max} exit_lag_over_1s={exit_lag_over_1s} \
         context_budget_ms={}",
        context_budget().as_millis()
    );
    // RSS and threads over time, in ten windows.
    let window = (elapsed / 10).max(Duration::from_secs(1));
    let mut w = Duration::ZERO;
    while w < elapsed {
        let inside: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.at >= w && s.at < w + window)
            .collect();
        if !inside.is_empty() {
            let hosts: HashSet<u64> = inside.iter().map(|s| s.run).collect();
            println!(
                "soak rss window={}-{}s samples={} hosts={} rss_kib_min={} rss_kib_max={} threads_min={} threads_max={}",
                w.as_secs(),
                (w + window).as_secs(),
                inside.len(),
                hosts.len(),
                inside.iter().map(|s| s.rss_kib).min().unwrap_or(0),
                inside.iter().map(|s| s.rss_kib).max().unwrap_or(0),
                inside.iter().map(|s| s.threads).min().unwrap_or(0),
                inside.iter().map(|s| s.threads).max().unwrap_or(0),
            );
        }
        w += window;
    }
    if let Some((r, lived, first, last, peak)) = longest {
        println!(
            "soak rss longest_host run={r} lived_s={:.1} rss_ready_kib={first} rss_last_kib={last} rss_peak_kib={peak}",
            lived.as_secs_f64()
        );
    }

    let total_signal_exits: u64 = signal_exits.values().sum();
    let mut missed = 0;
    let mut goal = |name: &str, met: bool, detail: String| {
        if !met {
            missed += 1;
        }
        println!(
            "soak goal {name} {} {detail}",
            if met { "met" } else { "MISSED" }
        );
    };
    goal(
        "host_signal_exits",
        total_signal_exits == 0,
        format!(
            "count={total_signal_exits} target=0 {}",
            signal_exits
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    );
    goal(
        "lost_increments",
        lost == 0,
        format!("count={lost} target=0 acknowledged={acked}"),
    );
    goal(
        "abandoned_threads",
        cap && over_cap == 0,
        format!(
            "cap={} threads_over_start_peak={threads_over_start_peak} allowed=cap+{slack} hosts_over={over_cap} abandoned_peak_per_host={}{}",
            if cap { CAP.to_string() } else { "none".into() },
            tally.abandoned_peak_per_host,
            if cap {
                ""
            } else {
                " (the host does not accept [host] max_abandoned_threads)"
            }
        ),
    );
    goal(
        "stuck_hosts",
        stuck == 0,
        format!(
            "count={stuck} target=0 deadline={}s",
            STOP_DEADLINE.as_secs()
        ),
    );
    goal(
        "unexpected_exits",
        unexpected == 0,
        format!("count={unexpected} target=0"),
    );
    // Two instances of one unit with the same generation, or a generation
    // started after a newer one: the fencing and the journal rely on
    // generations that only go up.
    goal(
        "generation_regressions",
        tally.generation_regressions == 0,
        format!("count={} target=0", tally.generation_regressions),
    );
    println!(
        "soak summary result={} goals_missed={missed} hosts={run} secs={} seed={seed} signal_exits={total_signal_exits} \
         lost_increments={lost} threads_over_start_peak={threads_over_start_peak} cap={} stuck={stuck} unexpected_exits={unexpected}",
        if missed == 0 { "PASS" } else { "FAIL" },
        elapsed.as_secs(),
        if cap { CAP.to_string() } else { "none".into() },
    );
    std::process::exit(i32::from(missed > 0));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heard(lines: &[(&str, &str, &str)]) -> Heard {
        let mut h = Heard::default();
        let ready = AtomicBool::new(false);
        for (ctx, service, message) in lines {
            let line = serde_json::json!({"context": ctx, "service": service, "message": message});
            hear(&line.to_string(), &mut h, &ready);
        }
        h
    }

    #[test]
    fn distinct_values_below_each_report_lose_nothing() {
        let h = heard(&[
            ("C0", "inc_a", "shared.a = 1"),
            ("C1", "inc_a", "shared.a = 2"),
            ("C0", "inc_a", "shared.a = 3"),
            ("C1", "inc_a", "shared.a = 5"),
            ("C0", "report", "report shared.a = 4"),
            ("C1", "report", "report shared.a = 5"),
        ]);
        assert_eq!(lost_increments(&h).0, 0);
        assert_eq!(lost_increments(&h).1, 4);
    }

    #[test]
    fn a_value_acknowledged_twice_is_a_lost_increment() {
        let h = heard(&[
            ("C0", "inc_b", "shared.b = 1"),
            ("C2", "inc_b", "shared.b = 2"),
            ("C3", "inc_b", "shared.b = 2"),
        ]);
        assert_eq!(lost_increments(&h).0, 1);
    }

    #[test]
    fn a_value_above_its_contexts_final_report_is_a_lost_increment() {
        let h = heard(&[
            ("C0", "inc_a", "shared.a = 1"),
            ("C0", "inc_a", "shared.a = 2"),
            ("C0", "report", "report shared.a = 1"),
            // Another context's later increment is not bound by C0's report.
            ("C1", "inc_a", "shared.a = 3"),
        ]);
        assert_eq!(lost_increments(&h).0, 1);
    }

    #[test]
    fn a_report_bounds_only_what_its_context_acknowledged_before_it() {
        // A group restart finalizes Report mid-run; the next generation of
        // the incrementers goes on above that report.
        let h = heard(&[
            ("C3", "inc_a", "shared.a = 12"),
            ("C3", "report", "report shared.a = 13"),
            ("C3", "inc_a", "shared.a = 16"),
            ("C3", "report", "report shared.a = 16"),
        ]);
        assert_eq!(lost_increments(&h).0, 0);
    }

    #[test]
    fn journal_timestamps_are_read_as_epoch_milliseconds() {
        assert_eq!(ts_ms("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(ts_ms("2026-11-26T14:33:36.499Z"), Some(1_795_703_616_499));
        assert_eq!(ts_ms("2000-03-01T00:00:01.002Z"), Some(951_868_801_002));
        assert_eq!(ts_ms("garbage"), None);
    }

    #[test]
    fn every_generated_manifest_names_each_entry_point() {
        let mut rng = fastrand::Rng::with_seed(7);
        let m = manifest(&mut rng, Path::new("/p"), false);
        for entry in [
            "\"setup\"",
            "\"main\"",
            "\"loop\"",
            "\"finalize\"",
            "\"check\"",
        ] {
            assert!(m.contains(entry), "{entry} missing from\n{m}");
        }
        assert!(!m.contains("max_abandoned_threads"));
        assert!(manifest(&mut rng, Path::new("/p"), true).contains("max_abandoned_threads"));
    }
}
