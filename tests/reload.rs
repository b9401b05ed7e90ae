//! Hot reload through the real binary: a plugin file replaced on disk
//! replaces its running instances in place, or is refused while the old
//! version keeps serving. The fixtures are real builds of
//! `plugins/versioned` with different `OTOOLS_VERSIONED` values.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use crate::pipelines::{collected, three_stages};
use crate::util::{Running, TestDir, journal, target_dir, wait_for_events};

const VARIANTS: &[&str] = &[
    "1",
    "2",
    "noexport",
    "setup_error",
    "setup_panic",
    "setup_hang",
    "import_error",
    "import_panic",
    "import_hang",
    "3",
];

/// Builds every variant once (in a target folder of their own) and returns
/// the folder holding `lib_<variant>.so` copies.
fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        crate::util::build();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let target = target_dir().join("reload-fixtures");
        let out = target.join("variants");
        std::fs::create_dir_all(&out).unwrap();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        for v in VARIANTS {
            let status = std::process::Command::new(&cargo)
                .current_dir(root)
                .args(["build", "-p", "plugin-versioned", "--target-dir"])
                .arg(&target)
                .env("OTOOLS_VERSIONED", v)
                .status()
                .expect("run cargo");
            assert!(status.success(), "building variant {v}");
            std::fs::copy(
                target.join("debug/libversioned.so"),
                out.join(format!("lib_{v}.so")),
            )
            .unwrap();
        }
        out
    })
}

/// A plugin built against a copy of otools-api whose FFI layout differs.
fn incompatible(dir: &TestDir) -> PathBuf {
    crate::compat::build_variant(dir, "mismatch", env!("CARGO_PKG_VERSION"), |s| {
        s.replace(
            "    UnknownExport = 4,\n}",
            "    UnknownExport = 4,\n    /// Added by the test.\n    Extra = 5,\n}",
        )
    })
}

fn variant(v: &str) -> PathBuf {
    fixtures().join(format!("lib_{v}.so"))
}

/// Replaces `dest` atomically with `bytes` (write a sibling, rename over).
fn swap_in(dest: &Path, bytes: &[u8]) {
    let tmp = dest.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dest).unwrap();
}

fn manifest(dir: &TestDir, extra: &str) -> (PathBuf, PathBuf) {
    let watched = dir.path.join("libcounting.so");
    std::fs::copy(variant("1"), &watched).unwrap();
    let m = dir.manifest(
        "m.toml",
        &format!(
            r#"reload_debounce = "50ms"
reload_limit = 100
[[dataframe]]
name = "d"
[[context]]
name = "C"
period = "2ms"
dataframes = ["d"]
[[context.service]]
name = "counter"
plugin = "{}"
export = "Counter"
config = {{ dataframe = "d" }}
startup_timeout = "300ms"
{extra}
[[context.service]]
name = "report"
plugin = "probe"
export = "Report"
config = {{ dataframe = "d", keys = ["count", "by_1", "by_2"] }}
"#,
            watched.display()
        ),
    );
    (m, watched)
}

/// Sets the manifest's `reload_debounce` (50 ms in [`manifest`]).
fn with_debounce(m: &Path, debounce: &str) {
    let text = std::fs::read_to_string(m).unwrap().replace(
        "reload_debounce = \"50ms\"",
        &format!("reload_debounce = \"{debounce}\""),
    );
    std::fs::write(m, text).unwrap();
}

fn count_events(j: &[Value], name: &str) -> usize {
    j.iter().filter(|e| e["event"] == name).count()
}

/// "N attempts, N ok, N refused": what a reload test printed for a run.
fn reload_counts(j: &[Value]) -> String {
    format!(
        "{} attempts, {} ok, {} refused",
        count_events(j, "reload_attempted"),
        count_events(j, "reload_ok"),
        count_events(j, "reload_rejected")
    )
}

fn pos(j: &[Value], pred: impl Fn(&Value) -> bool) -> usize {
    j.iter()
        .position(pred)
        .unwrap_or_else(|| panic!("missing event in {j:#?}"))
}

#[test]
fn reload_replaces_running_instances_and_hands_over_state_without_overlap() {
    let dir = TestDir::new("reload_ok");
    let (m, watched) = manifest(&dir, "");
    let events = dir.path.join("events.jsonl");
    let mut host = Running::start_with(&m, &["--events", events.to_str().unwrap()]);
    host.wait_for("version 1 set up");
    swap_in(&watched, &std::fs::read(variant("2")).unwrap());
    wait_for_events(&events, 1, |e| e["event"] == "reload_ok");
    host.wait_for("version 2 imported");
    host.signal("TERM");
    let out = host.finish();
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let j = journal(&events);
    // Spawn first, swap second: the new generation is set up before the old
    // one is finalized, and serves only after that.
    let setup_new = pos(&j, |e| {
        e["event"] == "reload_setup_ok" && e["generation"] == 2
    });
    let final_old = pos(&j, |e| {
        e["event"] == "finalized" && e["service"] == "counter" && e["generation"] == 1
    });
    let start_new = pos(&j, |e| {
        e["event"] == "started" && e["service"] == "counter" && e["generation"] == 2
    });
    assert!(setup_new < final_old && final_old < start_new, "{j:#?}");
    // The state came over, and the count has no gap and no double writes.
    let imported: Vec<String> = out
        .messages_of("counter")
        .into_iter()
        .filter(|m| m.contains("imported"))
        .collect();
    assert_eq!(imported.len(), 1, "{imported:?}");
    let n = |k: &str| {
        out.report("d", k)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(n("by_1") > 0 && n("by_2") > 0, "both versions ran");
    assert_eq!(
        n("count"),
        n("by_1") + n("by_2"),
        "each main call of either version counted exactly once"
    );
    let calls: u64 = imported[0]
        .split("imported ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|w| w.parse().ok())
        .expect("a number of calls");
    assert_eq!(
        calls,
        n("by_1"),
        "version 2 imported exactly version 1's calls"
    );
}

#[test]
fn a_bad_new_version_is_refused_and_the_old_one_keeps_serving() {
    let dir = TestDir::new("reload_bad");
    let (m, watched) = manifest(&dir, "");
    let events = dir.path.join("events.jsonl");
    let mut host = Running::start_with(&m, &["--events", events.to_str().unwrap()]);
    host.wait_for("version 1 set up");
    let v2 = std::fs::read(variant("2")).unwrap();
    let mut sh = std::fs::read("/bin/sh").unwrap_or_else(|_| b"\x7fELF not really".to_vec());
    sh.truncate(4096);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        // Cut inside the program headers (a debug build keeps its code in
        // the first half, so half a file can still load).
        ("truncated", v2[..4096].to_vec(), "cannot load"),
        (
            "garbage",
            b"not a library at all".repeat(100),
            "cannot load",
        ),
        ("wrong file type", sh, "cannot load"),
        (
            "no root module",
            std::fs::read(crate::util::plugin("bare")).unwrap(),
            "is not an otools plugin",
        ),
        (
            "missing export",
            std::fs::read(variant("noexport")).unwrap(),
            "no export `Counter`",
        ),
        (
            "incompatible otools-api",
            std::fs::read(incompatible(&dir)).unwrap(),
            "does not match this host's otools-api",
        ),
        (
            "setup error",
            std::fs::read(variant("setup_error")).unwrap(),
            "refuses to set up",
        ),
        (
            "setup panic",
            std::fs::read(variant("setup_panic")).unwrap(),
            "panics in setup",
        ),
        (
            "setup hang",
            std::fs::read(variant("setup_hang")).unwrap(),
            ": setup hung (no return within",
        ),
        (
            "import error",
            std::fs::read(variant("import_error")).unwrap(),
            "refuses the state",
        ),
        (
            "import panic",
            std::fs::read(variant("import_panic")).unwrap(),
            "panics on import",
        ),
        (
            "import hang",
            std::fs::read(variant("import_hang")).unwrap(),
            ": import_state hung (no return within",
        ),
    ];
    for (i, (name, bytes, why)) in cases.iter().enumerate() {
        swap_in(&watched, bytes);
        let j = wait_for_events(&events, i + 1, |e| e["event"] == "reload_rejected");
        let rejected: Vec<&Value> = j
            .iter()
            .filter(|e| e["event"] == "reload_rejected")
            .collect();
        let reason = rejected[i]["reason"].as_str().unwrap_or_default();
        assert!(reason.contains(why), "{name}: {reason}");
        assert!(
            reason.contains("libcounting.so"),
            "{name}: the file is named: {reason}"
        );
        if name.starts_with("setup") || name.starts_with("import") || *name == "missing export" {
            assert!(
                reason.contains("Counter"),
                "{name}: the export is named: {reason}"
            );
        }
    }
    let j = journal(&events);
    assert!(
        !j.iter()
            .any(|e| e["event"] == "started" && e["service"] == "counter" && e["generation"] != 1),
        "the old generation was never replaced"
    );
    assert!(!j.iter().any(|e| e["event"] == "reload_ok"));
    // Fixing the file reloads normally, and the old generation, which kept
    // serving through every refusal, hands over all its calls.
    swap_in(&watched, &std::fs::read(variant("2")).unwrap());
    wait_for_events(&events, 1, |e| e["event"] == "reload_ok");
    host.wait_for("version 2 imported");
    host.signal("TERM");
    let out = host.finish();
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let n = |k: &str| {
        out.report("d", k)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert_eq!(
        n("count"),
        n("by_1") + n("by_2"),
        "no lost or doubled counts"
    );
    let imported = out
        .messages_of("counter")
        .into_iter()
        .find(|m| m.contains("imported"))
        .unwrap();
    assert!(
        imported.contains(&format!("imported {} calls", n("by_1"))),
        "{imported}"
    );
}

#[test]
fn touching_or_rewriting_identical_bytes_does_not_reload_and_each_new_content_reloads_once() {
    let dir = TestDir::new("reload_patterns");
    let (m, watched) = manifest(&dir, "");
    // The identical rewrite below is in place: a writer stalled longer than
    // the debounce (a loaded machine) leaves a half-written file quiet, which
    // the host rightly tries (and refuses as truncated). A longer debounce
    // keeps this test about identical content, not about slow writers.
    with_debounce(&m, "500ms");
    let events = dir.path.join("events.jsonl");
    let mut host = Running::start_with(&m, &["--events", events.to_str().unwrap()]);
    host.wait_for("version 1 set up");
    let v1 = std::fs::read(variant("1")).unwrap();
    let v2 = std::fs::read(variant("2")).unwrap();
    // A touch and an identical rewrite: no attempt.
    let f = std::fs::OpenOptions::new()
        .append(true)
        .open(&watched)
        .unwrap();
    f.set_modified(std::time::SystemTime::now()).unwrap();
    drop(f);
    std::fs::write(&watched, &v1).unwrap();
    // A write in chunks (new inode via rename at the end, as a build does): one attempt.
    let tmp = dir.path.join("chunks.tmp");
    {
        use std::io::Write;
        let mut out = std::fs::File::create(&tmp).unwrap();
        for chunk in v2.chunks(v2.len() / 4 + 1) {
            out.write_all(chunk).unwrap();
            out.flush().unwrap();
        }
    }
    std::fs::rename(&tmp, &watched).unwrap();
    wait_for_events(&events, 1, |e| e["event"] == "reload_ok");
    // Back to version 1 by a plain copy over a new file: one more attempt.
    swap_in(&watched, &v1);
    wait_for_events(&events, 2, |e| e["event"] == "reload_ok");
    host.signal("TERM");
    let out = host.finish();
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let j = journal(&events);
    let attempts = j
        .iter()
        .filter(|e| e["event"] == "reload_attempted")
        .count();
    assert_eq!(attempts, 2, "one attempt per distinct new content: {j:#?}");
}

#[test]
fn a_real_cargo_build_of_the_plugin_reloads_it_once() {
    let fixtures = fixtures();
    let target = fixtures.parent().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let build = |v: &str| {
        let status = std::process::Command::new(&cargo)
            .current_dir(root)
            .args(["build", "-p", "plugin-versioned", "--target-dir"])
            .arg(target)
            .env("OTOOLS_VERSIONED", v)
            .status()
            .expect("run cargo");
        assert!(status.success(), "cargo build of version {v}");
    };
    build("1");
    let built = target.join("debug/libversioned.so");
    let dir = TestDir::new("reload_cargo");
    let m = dir.manifest(
        "m.toml",
        &format!(
            "reload_debounce = \"200ms\"\n[[dataframe]]\nname = \"d\"\n[[context]]\nname = \"C\"\nperiod = \"2ms\"\ndataframes = [\"d\"]\n\
             [[context.service]]\nname = \"counter\"\nplugin = \"{}\"\nexport = \"Counter\"\nconfig = {{ dataframe = \"d\" }}\n",
            built.display()
        ),
    );
    let events = dir.path.join("events.jsonl");
    let mut host = Running::start_with(&m, &["--events", events.to_str().unwrap()]);
    host.wait_for("version 1 set up");
    build("2");
    wait_for_events(&events, 1, |e| e["event"] == "reload_ok");
    host.wait_for("version 2 imported");
    host.signal("TERM");
    let out = host.finish();
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let j = journal(&events);
    assert_eq!(
        j.iter()
            .filter(|e| e["event"] == "reload_attempted")
            .count(),
        1,
        "{j:#?}"
    );
}

#[test]
fn reaching_max_loaded_libraries_stops_the_host_with_exit_code_76() {
    let dir = TestDir::new("reload_ceiling");
    // Two libraries at start (the watched one and probe): the first reload is the third.
    let (m, watched) = manifest(&dir, "");
    let text = std::fs::read_to_string(&m).unwrap().replace(
        "reload_limit = 100",
        "reload_limit = 100\nmax_loaded_libraries = 3",
    );
    std::fs::write(&m, text).unwrap();
    let events = dir.path.join("events.jsonl");
    let mut host = Running::start_with(&m, &["--events", events.to_str().unwrap()]);
    host.wait_for("version 1 set up");
    swap_in(&watched, &std::fs::read(variant("2")).unwrap());
    let out = host.finish();
    assert_eq!(out.code(), 76, "{}", out.stderr);
    let j = journal(&events);
    let ok = j
        .iter()
        .find(|e| e["event"] == "reload_ok")
        .expect("the reload itself succeeded");
    assert_eq!(ok["loaded_versions"], 3);
    assert!(j.iter().any(|e| e["event"] == "leak_ceiling"));
    // It stopped cleanly: the serving instance was finalized.
    assert!(
        j.iter().any(|e| e["event"] == "finalized"
            && e["service"] == "counter"
            && e["generation"] == 2)
    );
}

/// Rewrites `dest` in place (same inode, truncated first) in `chunks`
/// flushed writes, `gap` apart: a slow writer, such as a copy over a
/// network or a build writing its output, that a reload must wait out.
fn rewrite_in_place_slowly(dest: &Path, bytes: &[u8], chunks: usize, gap: Duration) {
    use std::io::Write;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(dest)
        .unwrap();
    for chunk in bytes.chunks(bytes.len() / chunks + 1) {
        // The pause is the scenario (a writer that is slow), not a wait for the host.
        std::thread::sleep(gap);
        out.write_all(chunk).unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn a_plugin_file_rewritten_in_place_slowly_is_loaded_once_complete_and_only_then() {
    let dir = TestDir::new("reload_in_place");
    let (m, watched) = manifest(&dir, "");
    // The write takes longer than the debounce, with gaps much shorter than it.
    with_debounce(&m, "1s");
    let events = dir.path.join("events.jsonl");
    let mut host = Running::start_with(&m, &["--events", events.to_str().unwrap()]);
    host.wait_for("version 1 set up");
    let v2 = std::fs::read(variant("2")).unwrap();
    rewrite_in_place_slowly(&watched, &v2, 24, Duration::from_millis(100));
    let j = wait_for_events(&events, 1, |e| e["event"] == "reload_ok");
    host.wait_for("version 2 imported");
    host.signal("TERM");
    let out = host.finish();
    assert_eq!(out.code(), 0, "the host survived: {}", out.stderr);
    let attempts: Vec<&Value> = j
        .iter()
        .filter(|e| e["event"] == "reload_attempted")
        .collect();
    let ok: Vec<&Value> = j.iter().filter(|e| e["event"] == "reload_ok").collect();
    assert!(
        !j.iter().any(|e| e["event"] == "reload_rejected"),
        "a partly written file was never tried: {j:#?}"
    );
    assert_eq!(attempts.len(), 1, "one attempt, at the end: {j:#?}");
    assert_eq!(ok.len(), 1, "{j:#?}");
    assert_eq!(attempts[0]["hash"], ok[0]["hash"], "{j:#?}");
}

#[test]
fn a_plugin_file_rewritten_in_place_while_the_host_copies_it_never_crashes_the_host_nor_refuses_a_whole_version()
 {
    // The attack that killed the host with SIGBUS: the file goes quiet for
    // just over the debounce (the host starts to copy it), then is rewritten
    // in place again. The host checks and hashes its private copy, loads
    // only the content it judged quiet, and refuses a file written since
    // only until it is quiet again: it never maps a truncated file, and
    // never refuses a whole version for good because a write began.
    let dir = TestDir::new("reload_rewrite_race");
    let (m, watched) = manifest(&dir, "");
    with_debounce(&m, "20ms");
    let events = dir.path.join("events.jsonl");
    let mut host = Running::start_with(&m, &["--events", events.to_str().unwrap()]);
    host.wait_for("version 1 set up");
    host.wait_for_printed("hot reload: watching");
    let versions = [
        std::fs::read(variant("2")).unwrap(),
        std::fs::read(variant("1")).unwrap(),
    ];
    // The hashes of the two whole versions, from two clean reloads.
    let ok_hashes = |j: &[Value]| -> Vec<String> {
        j.iter()
            .filter(|e| e["event"] == "reload_ok")
            .map(|e| e["hash"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    swap_in(&watched, &versions[0]);
    wait_for_events(&events, 1, |e| e["event"] == "reload_ok");
    swap_in(&watched, &versions[1]);
    let whole = ok_hashes(&wait_for_events(&events, 2, |e| e["event"] == "reload_ok"));
    assert_ne!(whole[0], whole[1], "{whole:?}");
    for round in 0..40_usize {
        rewrite_in_place_slowly(&watched, &versions[round % 2], 1, Duration::ZERO);
        // The pauses are the scenario (quiet for about the debounce, then a
        // new write while the host may be copying), not waits for the host.
        std::thread::sleep(Duration::from_millis(25 + (round as u64 * 7) % 40));
    }
    rewrite_in_place_slowly(&watched, &versions[0], 1, Duration::ZERO);
    // Version 2, whole, is what the host serves in the end.
    let deadline = std::time::Instant::now() + crate::util::DEADLINE;
    while ok_hashes(&journal(&events)).last() != Some(&whole[0]) {
        assert!(
            std::time::Instant::now() < deadline,
            "version 2 ({}) was never loaded again: {:#?}",
            whole[0],
            journal(&events)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    host.signal("TERM");
    let out = host.finish();
    assert_eq!(out.code(), 0, "the host survived: {}", out.stderr);
    let j = journal(&events);
    println!("{}", reload_counts(&j));
    for e in j.iter().filter(|e| e["event"] == "reload_rejected") {
        let reason = e["reason"].as_str().unwrap_or_default();
        let hash = e["hash"].as_str().unwrap_or_default();
        assert!(
            reason.contains("changed while it was being read") || !whole.iter().any(|h| h == hash),
            "a whole version was refused: {e}"
        );
    }
}

#[test]
fn a_reload_that_overlaps_restarts_keeps_the_serving_generations_going_up() {
    // Found by the soak: a restart that began while a reload set up the
    // new version took the same generation number as the prepared
    // instance, and the swap then replaced that restarted generation with
    // the prepared one under the same number. Here every generation hangs
    // in `setup` for 150 ms and in its first `main` (a 50 ms watchdog
    // replaces it), so restarts keep overlapping the reload's setups.
    let dir = TestDir::new("reload_overlaps_restarts");
    let watched = dir.path.join("libfaulty.so");
    let faulty = std::fs::read(crate::util::plugin("faulty")).unwrap();
    std::fs::write(&watched, &faulty).unwrap();
    let m = dir.manifest(
        "m.toml",
        &format!(
            r#"reload_debounce = "20ms"
reload_limit = 1000
reload_window = "500ms"
[[context]]
name = "C"
period = "2ms"
[[context.service]]
name = "chaos"
plugin = "{}"
export = "Faulty"
config = {{ hang_in = ["setup", "main"], hang_ms = 150 }}
watchdog = "50ms"
startup_timeout = "2s"
shutdown_timeout = "1s"
max_restarts = 100000
restart_delay = "1ms"
max_restart_delay = "1ms"
[[context.service]]
name = "keep"
plugin = "hello"
export = "Greeter"
"#,
            watched.display()
        ),
    );
    let events = dir.path.join("events.jsonl");
    let mut host = Running::start_with(&m, &["--events", events.to_str().unwrap()]);
    host.wait_for_printed("hot reload: watching");
    // Versions differ by a tag after the ELF data. A version is tried
    // until it lands (refusals while the unit restarts are retried); then
    // the next one comes, until a dozen attempts were made.
    let write_version = |version: u32| {
        let mut bytes = faulty.clone();
        bytes.extend_from_slice(b"\0otools-test\0");
        bytes.extend_from_slice(&version.to_le_bytes());
        swap_in(&watched, &bytes);
    };
    let mut version = 0;
    write_version(version);
    let deadline = std::time::Instant::now() + crate::util::DEADLINE;
    loop {
        let j = journal(&events);
        let count = |name: &str| count_events(&j, name);
        if count("reload_attempted") >= 12 {
            break;
        }
        if count("reload_ok") > version as usize {
            version += 1;
            write_version(version);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} reload attempts",
            count("reload_attempted")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    host.signal("TERM");
    let out = host.finish();
    let j = journal(&events);
    let started: Vec<u64> = generations_started(&j, "chaos");
    println!("{}, generations started {started:?}", reload_counts(&j));
    assert!(
        started.windows(2).all(|w| w[0] < w[1]),
        "each serving instance has a generation above the one before: {started:?}"
    );
    // 3 when the stop met a `main` hung in its 150 ms: abandoned.
    assert!(matches!(out.code(), 0 | 3), "{}", out.stderr);
}

#[test]
fn a_symlink_swapped_to_a_new_target_reloads_and_so_does_a_new_content_of_its_target() {
    let dir = TestDir::new("reload_symlink");
    let (m, watched) = manifest(&dir, "");
    // `current.so` is a symlink, swapped the way deployment tools do it
    // (a new link renamed over the old one, as `ln -sfn` or `mv -T`).
    let v1_dir = dir.path.join("v1");
    let v2_dir = dir.path.join("v2");
    std::fs::create_dir_all(&v1_dir).unwrap();
    std::fs::create_dir_all(&v2_dir).unwrap();
    std::fs::rename(&watched, v1_dir.join("libcounting.so")).unwrap();
    std::fs::copy(variant("2"), v2_dir.join("libcounting.so")).unwrap();
    let link = dir.path.join("current.so");
    std::os::unix::fs::symlink(v1_dir.join("libcounting.so"), &link).unwrap();
    let text = std::fs::read_to_string(&m)
        .unwrap()
        .replace(watched.to_str().unwrap(), link.to_str().unwrap());
    std::fs::write(&m, text).unwrap();
    let events = dir.path.join("events.jsonl");
    let mut host = Running::start_with(&m, &["--events", events.to_str().unwrap()]);
    host.wait_for("version 1 set up");
    // The watcher notes where the link leads when it starts, which may be
    // after the plugin's setup: swap the link only once it watches.
    host.wait_for_printed("hot reload: watching");
    let tmp = dir.path.join("current.so.new");
    std::os::unix::fs::symlink(v2_dir.join("libcounting.so"), &tmp).unwrap();
    std::fs::rename(&tmp, &link).unwrap();
    wait_for_events(&events, 1, |e| e["event"] == "reload_ok");
    host.wait_for("version 2 imported");
    // The link now leads into v2/: a new content there reloads too.
    swap_in(
        &v2_dir.join("libcounting.so"),
        &std::fs::read(variant("1")).unwrap(),
    );
    let j = wait_for_events(&events, 2, |e| e["event"] == "reload_ok");
    host.signal("TERM");
    let out = host.finish();
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let started: Vec<&Value> = crate::util::events_of(&j, "started", "counter");
    assert_eq!(started.len(), 3, "generations 1, 2 and 3: {j:#?}");
    assert!(
        out.stderr.contains("now leads to"),
        "the new target is logged: {}",
        out.stderr
    );
}

#[test]
fn a_fixed_file_revives_a_service_that_gave_up_with_its_restart_history_cleared() {
    let dir = TestDir::new("reload_revive");
    let (m, watched) = manifest(&dir, "max_restarts = 1\nrestart_delay = \"1ms\"");
    std::fs::copy(variant("setup_error"), &watched).unwrap();
    // A service that keeps the context running after `counter` gave up.
    let mut text = std::fs::read_to_string(&m).unwrap();
    text.push_str(
        "[[context.service]]\nname = \"keep\"\nplugin = \"hello\"\nexport = \"Greeter\"\n",
    );
    std::fs::write(&m, text).unwrap();
    let events = dir.path.join("events.jsonl");
    let mut host = Running::start_with(&m, &["--events", events.to_str().unwrap()]);
    let gave_up_once = |e: &Value| e["event"] == "gave_up" && e["service"] == "counter";
    let j = wait_for_events(&events, 1, gave_up_once);
    let restarts = |j: &[Value]| crate::util::events_of(j, "restarting", "counter").len();
    assert_eq!(restarts(&j), 1, "max_restarts = 1: {j:#?}");
    // A file that still fails: the revived unit gets its whole restart
    // budget again (one more restart, then it gives up again). With its
    // history kept it would give up at its first failure.
    swap_in(&watched, &std::fs::read(variant("setup_panic")).unwrap());
    let j = wait_for_events(&events, 2, gave_up_once);
    let revived_at = pos(&j, |e| e["event"] == "revived" && e["service"] == "counter");
    assert_eq!(
        crate::util::events_of(&j[revived_at..], "restarting", "counter").len(),
        1,
        "after the revival, one restart before giving up again: {j:#?}"
    );
    swap_in(&watched, &std::fs::read(variant("1")).unwrap());
    let j = wait_for_events(&events, 2, |e| e["event"] == "reload_ok");
    host.wait_for("version 1 set up");
    host.signal("TERM");
    let out = host.finish();
    let positions = |pred: &dyn Fn(&Value) -> bool| -> Vec<usize> {
        (0..j.len()).filter(|i| pred(&j[*i])).collect()
    };
    let ok = positions(&|e| e["event"] == "reload_ok")[1];
    let revivals = positions(&|e| e["event"] == "revived" && e["service"] == "counter");
    assert_eq!(revivals.len(), 2, "{j:#?}");
    assert!(revivals[1] < ok, "{j:#?}");
    assert_eq!(j[ok]["revived"], 1, "{j:#?}");
    let j = journal(&events);
    let gave_up = crate::util::events_of(&j, "gave_up", "counter");
    let started = crate::util::events_of(&j, "started", "counter");
    assert_eq!(started.len(), 1, "{j:#?}");
    assert_eq!(
        started[0]["generation"].as_u64(),
        gave_up[1]["generation"].as_u64().map(|g| g + 1),
        "the revived generation follows the one that gave up: {j:#?}"
    );
    // Revived and serving, it no longer counts as failed: a clean exit.
    assert_eq!(out.code(), 0, "{}", out.stderr);
}

/// The manifest of [`manifest`] with `keys` added to `counter`'s config and
/// a second service of the same file, `counter2`, with `keys2` in its config.
fn two_counters(dir: &TestDir, keys: &str, keys2: &str) -> (PathBuf, PathBuf) {
    let (m, watched) = manifest(dir, "shutdown_timeout = \"300ms\"\nrestart_delay = \"1ms\"");
    let mut text = std::fs::read_to_string(&m).unwrap().replacen(
        "config = { dataframe = \"d\" }",
        &format!("config = {{ dataframe = \"d\"{keys} }}"),
        1,
    );
    text.push_str(&format!(
        "[[context.service]]\nname = \"counter2\"\nplugin = \"{}\"\nexport = \"Counter\"\n\
         config = {{ dataframe = \"d\"{keys2} }}\nstartup_timeout = \"300ms\"\nshutdown_timeout = \"300ms\"\n",
        watched.display()
    ));
    std::fs::write(&m, text).unwrap();
    (m, watched)
}

fn generations_started(j: &[Value], service: &str) -> Vec<u64> {
    crate::util::events_of(j, "started", service)
        .iter()
        .filter_map(|e| e["generation"].as_u64())
        .collect()
}

#[test]
fn a_hang_in_export_state_restarts_that_unit_on_the_old_version_and_the_content_is_tried_again() {
    let dir = TestDir::new("reload_export_hang");
    let (m, watched) = two_counters(&dir, ", hang_in_export = \"1\"", "");
    let events = dir.path.join("events.jsonl");
    let mut host = Running::start_with(&m, &["--events", events.to_str().unwrap()]);
    host.wait_for("version 1 set up");
    let v2 = std::fs::read(variant("2")).unwrap();
    swap_in(&watched, &v2);
    let j = wait_for_events(&events, 1, |e| e["event"] == "reload_rejected");
    let rejected = &j[pos(&j, |e| e["event"] == "reload_rejected")];
    let reason = rejected["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("export_state hung"), "{reason}");
    assert!(reason.contains("libcounting.so"), "{reason}");
    // The hung instance is abandoned and a fresh generation of the old
    // version takes its place under the restart policy.
    let j = wait_for_events(&events, 1, |e| {
        e["event"] == "started" && e["service"] == "counter" && e["generation"] == 2
    });
    let hung = pos(&j, |e| {
        e["event"] == "hung" && e["service"] == "counter" && e["entry"] == "export_state"
    });
    let abandoned = pos(&j, |e| {
        e["event"] == "abandoned" && e["service"] == "counter" && e["generation"] == 1
    });
    assert!(hung < abandoned, "{j:#?}");
    // The same content is tried again once the file changes again (here:
    // the same bytes written anew); the new generation hangs the same way.
    swap_in(&watched, &v2);
    let j = wait_for_events(&events, 2, |e| e["event"] == "reload_rejected");
    let attempts: Vec<&Value> = j
        .iter()
        .filter(|e| e["event"] == "reload_attempted")
        .collect();
    assert_eq!(attempts.len(), 2, "{j:#?}");
    assert_eq!(attempts[0]["hash"], attempts[1]["hash"], "{j:#?}");
    wait_for_events(&events, 1, |e| {
        e["event"] == "started" && e["service"] == "counter" && e["generation"] == 3
    });
    host.signal("TERM");
    let out = host.finish();
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let j = journal(&events);
    assert!(!j.iter().any(|e| e["event"] == "reload_ok"), "{j:#?}");
    // Every other unit kept serving its first generation, on the old version.
    assert_eq!(generations_started(&j, "counter2"), [1], "{j:#?}");
    assert_eq!(generations_started(&j, "report"), [1], "{j:#?}");
    assert_eq!(generations_started(&j, "counter"), [1, 2, 3], "{j:#?}");
    let n = |k: &str| {
        out.report("d", k)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(n("by_1") > 0, "the old version served");
    assert_eq!(n("by_2"), 0, "the new version never served");
    for s in ["counter", "counter2"] {
        assert!(
            !out.messages_of(s).iter().any(|m| m.contains("imported")),
            "{s} was never swapped"
        );
    }
}

#[test]
fn a_failed_import_in_the_second_unit_leaves_both_on_the_old_version_and_a_fixed_file_reloads_both()
{
    let dir = TestDir::new("reload_split_import");
    let (m, watched) = two_counters(&dir, "", ", fail_import = \"2\"");
    let events = dir.path.join("events.jsonl");
    let mut host = Running::start_with(&m, &["--events", events.to_str().unwrap()]);
    host.wait_for("version 1 set up");
    swap_in(&watched, &std::fs::read(variant("2")).unwrap());
    let j = wait_for_events(&events, 1, |e| e["event"] == "reload_rejected");
    let reason = j[pos(&j, |e| e["event"] == "reload_rejected")]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(reason.contains("refuses the state"), "{reason}");
    assert!(reason.contains("counter2"), "{reason}");
    assert_eq!(generations_started(&j, "counter"), [1], "{j:#?}");
    assert_eq!(generations_started(&j, "counter2"), [1], "{j:#?}");
    // Both new versions were set up, then discarded: the journal says so
    // for each, before the refusal.
    for s in ["counter", "counter2"] {
        let rolled_back = pos(&j, |e| {
            e["event"] == "reload_rolled_back" && e["service"] == s && e["generation"] == 2
        });
        assert!(
            rolled_back < pos(&j, |e| e["event"] == "reload_rejected"),
            "{s}: {j:#?}"
        );
    }
    // A later, fixed content swaps both.
    swap_in(&watched, &std::fs::read(variant("3")).unwrap());
    let j = wait_for_events(&events, 1, |e| e["event"] == "reload_ok");
    let ok = &j[pos(&j, |e| e["event"] == "reload_ok")];
    assert_eq!(ok["instances"], 2, "{j:#?}");
    host.signal("TERM");
    let out = host.finish();
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let j = journal(&events);
    for s in ["counter", "counter2"] {
        assert_eq!(generations_started(&j, s), [1, 2], "{s}: {j:#?}");
        // (A version 2 instance of `counter` may have imported the state
        // before the refusal: it was discarded, never serving.)
        let imported: Vec<String> = out
            .messages_of(s)
            .into_iter()
            .filter(|m| m.contains("version 3 imported"))
            .collect();
        assert_eq!(imported.len(), 1, "{s}: {imported:?}");
    }
    let n = |k: &str| {
        out.report("d", k)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert_eq!(n("by_2"), 0, "version 2 never served");
}

#[test]
fn an_old_instance_hanging_in_finalize_at_the_commit_does_not_split_the_swap() {
    let dir = TestDir::new("reload_split_finalize");
    // Both old instances hang in `finalize`: the first hang leaves the
    // second unit to be committed by a new thread.
    let hang = ", hang_in_finalize = \"1\"";
    let (m, watched) = two_counters(&dir, hang, hang);
    let events = dir.path.join("events.jsonl");
    let mut host = Running::start_with(&m, &["--events", events.to_str().unwrap()]);
    host.wait_for("version 1 set up");
    swap_in(&watched, &std::fs::read(variant("2")).unwrap());
    // Past the point of no return every unit is swapped: an old instance
    // hanging in its `finalize` is abandoned, not a failed reload.
    let j = wait_for_events(&events, 1, |e| e["event"] == "reload_ok");
    let ok = &j[pos(&j, |e| e["event"] == "reload_ok")];
    assert_eq!(ok["instances"], 2, "{j:#?}");
    let j = wait_for_events(&events, 1, |e| {
        e["event"] == "started" && e["service"] == "counter2" && e["generation"] == 2
    });
    assert!(!j.iter().any(|e| e["event"] == "reload_rejected"), "{j:#?}");
    for s in ["counter", "counter2"] {
        let hung = pos(&j, |e| {
            e["event"] == "hung"
                && e["service"] == s
                && e["generation"] == 1
                && e["entry"] == "finalize"
        });
        let abandoned = pos(&j, |e| {
            e["event"] == "abandoned" && e["service"] == s && e["generation"] == 1
        });
        let started = pos(&j, |e| {
            e["event"] == "started" && e["service"] == s && e["generation"] == 2
        });
        assert!(hung < abandoned && abandoned < started, "{s}: {j:#?}");
    }
    host.signal("TERM");
    let out = host.finish();
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let j = journal(&events);
    for s in ["counter", "counter2"] {
        assert_eq!(generations_started(&j, s), [1, 2], "{s}: {j:#?}");
        assert!(
            out.messages_of(s)
                .iter()
                .any(|m| m.contains("version 2 imported")),
            "{s} runs version 2"
        );
    }
}

#[test]
fn messages_queued_across_a_reload_reach_the_new_version_in_order() {
    let dir = TestDir::new("reload_messages");
    // A ticker in the same context publishes 1, 2, 3, ... to the counter,
    // which subscribes; it goes on publishing while the counter is paused
    // and swapped, so those messages wait in the unit's mailbox.
    let (m, watched) = manifest(
        &dir,
        r#"subscribe = ["ticks"]
[[context.service]]
name = "ticker"
plugin = "messages"
export = "Ticker"
config = { topic = "ticks", start = 1, count = 100000 }"#,
    );
    let events = dir.path.join("events.jsonl");
    let mut host = Running::start_with(&m, &["--events", events.to_str().unwrap()]);
    host.wait_for("version 1 got tick 5");
    swap_in(&watched, &std::fs::read(variant("2")).unwrap());
    wait_for_events(&events, 1, |e| e["event"] == "reload_ok");
    host.wait_for("version 2 got tick");
    host.signal("TERM");
    let out = host.finish();
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let got: Vec<(String, u64)> = out
        .messages_of("counter")
        .iter()
        .filter_map(|m| {
            let rest = m.strip_prefix("version ")?;
            let (version, n) = rest.split_once(" got tick ")?;
            Some((version.to_owned(), n.parse().ok()?))
        })
        .collect();
    let numbers: Vec<u64> = got.iter().map(|(_, n)| *n).collect();
    let expected: Vec<u64> = (1..=numbers.len() as u64).collect();
    assert_eq!(numbers, expected, "every tick, once, in order");
    let first_v2 = got
        .iter()
        .position(|(v, _)| v == "2")
        .expect("version 2 got ticks");
    assert!(
        got[..first_v2].iter().all(|(v, _)| v == "1")
            && got[first_v2..].iter().all(|(v, _)| v == "2"),
        "version 1 handled a prefix, version 2 the rest: {got:?}"
    );
}

/// The private copies of `stem`'s library versions that process `pid` has
/// mapped (deleted files still show in its maps).
fn mapped_copies(pid: u32, stem: &str) -> std::collections::BTreeSet<String> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| {
            Path::new(p)
                .file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with(&format!("{stem}-")))
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_version_loaded_before_is_reused_not_mapped_again_when_the_file_goes_back_to_it() {
    let dir = TestDir::new("reload_reuse");
    let (m, watched) = manifest(&dir, "");
    let events = dir.path.join("events.jsonl");
    let mut host = Running::start_with(&m, &["--events", events.to_str().unwrap()]);
    host.wait_for("version 1 set up");
    let variants = [
        std::fs::read(variant("1")).unwrap(),
        std::fs::read(variant("2")).unwrap(),
    ];
    // 1 -> 2 -> 1 -> 2 -> 1: four reloads between two contents.
    for k in 1..=4 {
        swap_in(&watched, &variants[k % 2]);
        wait_for_events(&events, k, |e| e["event"] == "reload_ok");
    }
    let mapped = mapped_copies(host.pid(), "libcounting");
    host.signal("TERM");
    let out = host.finish();
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(
        mapped.len(),
        2,
        "two contents, two mapped copies (a leak of one library per reload otherwise): {mapped:#?}"
    );
    let j = journal(&events);
    let last = j
        .iter()
        .rfind(|e| e["event"] == "reload_ok")
        .expect("reloads");
    assert_eq!(
        last["loaded_versions"], 3,
        "two versions of it and probe: {last}"
    );
}

/// Polls until the sink of `dir` wrote `count` items that `want` accepts.
fn wait_collected(dir: &TestDir, count: usize, want: impl Fn(i64) -> bool) {
    let deadline = std::time::Instant::now() + crate::util::DEADLINE;
    while collected(dir).into_iter().filter(|n| want(*n)).count() < count {
        assert!(std::time::Instant::now() < deadline, "too few items");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_stage_library_replaced_on_disk_moves_its_workers_to_the_new_version_without_losing_or_repeating_an_item()
 {
    let dir = TestDir::new("reload_stage");
    let watched = dir.path.join("libtagging.so");
    std::fs::copy(variant("1"), &watched).unwrap();
    // Numbers -> Tag (2 workers, from the watched file) -> Collect.
    let pipeline = three_stages(
        &dir,
        "",
        "config = { every_ms = 1 }",
        "threads = 2\nstartup_timeout = \"300ms\"",
        "",
        "",
    )
    .replace(
        "plugin = \"stages\"\nexport = \"Double\"",
        &format!("plugin = \"{}\"\nexport = \"Tag\"", watched.display()),
    );
    let m = dir.manifest(
        "m.toml",
        &format!("reload_debounce = \"50ms\"\nreload_limit = 100\n{pipeline}"),
    );
    let events = dir.path.join("events.jsonl");
    let host = Running::start_with(&m, &["--events", events.to_str().unwrap()]);
    wait_collected(&dir, 20, |n| n % 10 == 1);
    // Bad versions are refused, naming the file, stage and why; version 1 goes on.
    for (bad, why) in [
        (
            "noexport",
            "the new version has no transform `Tag` (stage `double` of pipeline `numbers`)",
        ),
        (
            "setup_error",
            "stage `double` of pipeline `numbers`, worker 0: setup failed: version setup_error refuses to set up",
        ),
        (
            "setup_hang",
            "stage `double` of pipeline `numbers`: setup hung (no return within",
        ),
    ] {
        swap_in(&watched, &std::fs::read(variant(bad)).unwrap());
        let j = wait_for_events(&events, 1, |e| {
            e["event"] == "reload_rejected" && e["reason"].as_str().is_some_and(|r| r.contains(why))
        });
        let rejected = pos(&j, |e| {
            e["event"] == "reload_rejected" && e["reason"].as_str().is_some_and(|r| r.contains(why))
        });
        assert!(
            j[rejected]["file"]
                .as_str()
                .unwrap()
                .ends_with("libtagging.so")
        );
        let before = collected(&dir).len();
        wait_collected(&dir, before + 20, |n| n % 10 == 1);
    }
    swap_in(&watched, &std::fs::read(variant("2")).unwrap());
    wait_for_events(&events, 1, |e| e["event"] == "reload_ok");
    wait_collected(&dir, 20, |n| n % 10 == 2);
    host.signal("TERM");
    let out = host.finish();
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let items = collected(&dir);
    // Every item reached the sink once, handled by version 1 or 2.
    assert!(
        items.iter().all(|n| n % 10 == 1 || n % 10 == 2),
        "{items:?}"
    );
    let mut numbers: Vec<i64> = items.iter().map(|n| n / 10).collect();
    numbers.sort_unstable();
    let expected: Vec<i64> = (1..=i64::try_from(numbers.len()).unwrap()).collect();
    assert_eq!(numbers, expected, "each item once, none lost");
    let j = journal(&events);
    let finished = &j[pos(&j, |e| e["event"] == "pipeline_finished")];
    assert_eq!(finished["items_in"], finished["items_out"], "{finished}");
    assert_eq!(finished["items_failed"], 0, "{finished}");
    // Each worker set up version 2 before finalizing version 1, then served it.
    for w in ["double.0", "double.1"] {
        let at = |event: &str| {
            pos(&j, |e| {
                e["event"] == event
                    && e["service"] == w
                    && e["generation"] == if event == "finalized" { 1 } else { 2 }
                    && (event != "reload_setup_ok"
                        || e["file"]
                            .as_str()
                            .is_some_and(|f| f.ends_with("libtagging.so")))
            })
        };
        assert!(
            at("reload_setup_ok") < at("finalized") && at("finalized") < at("started"),
            "{w}"
        );
    }
}
