//! Shared test kit: build the workspace once, write manifests into a fresh
//! folder, run the real `otools` binary with JSON logs and a generous
//! deadline (which only exists to fail a hung test), and query its output.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long any single run may take before the test fails as hung.
pub const DEADLINE: Duration = Duration::from_secs(120);

static BUILD: Once = Once::new();

/// `target/<profile>`, where the binary and plugin libraries are.
pub fn target_dir() -> PathBuf {
    // The test executable lives in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir above deps/")
        .to_path_buf()
}

/// Builds the host and every plugin once per test run, with the same
/// command `make` uses, so features unify the same way.
pub fn build() {
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root")
            .to_path_buf();
        let profile = target_dir()
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut cmd = Command::new(cargo);
        cmd.current_dir(&root).args(["build", "--workspace"]);
        if profile == "release" {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "cargo build --workspace failed");
    });
}

/// The `otools` binary.
pub fn otools() -> PathBuf {
    build();
    target_dir().join("otools")
}

/// A plugin library by name.
pub fn plugin(name: &str) -> PathBuf {
    build();
    target_dir().join(format!("lib{name}.so"))
}

/// A fresh folder for one test's files.
pub struct TestDir {
    /// Its path.
    pub path: PathBuf,
}

static DIRS: AtomicUsize = AtomicUsize::new(0);

impl TestDir {
    /// A new empty folder named after the test.
    pub fn new(name: &str) -> TestDir {
        let n = DIRS.fetch_add(1, Ordering::Relaxed);
        let path = target_dir()
            .join("integration-tests")
            .join(format!("{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create test dir");
        TestDir { path }
    }

    /// Writes `contents` to `name` in the folder and returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path.join(name);
        std::fs::write(&p, contents).expect("write test file");
        p
    }

    /// Writes a manifest whose `[host]` points at the built plugins; `body`
    /// is everything after `[host]` (it may add more `[host]` keys first).
    pub fn manifest(&self, name: &str, body: &str) -> PathBuf {
        build();
        let text = format!(
            "version = 1\n[host]\nplugin_dir = \"{}\"\n{body}",
            target_dir().display()
        );
        self.write(name, text)
    }
}

/// The result of one run of the binary.
#[derive(Debug)]
pub struct Output {
    /// How it exited.
    pub status: ExitStatus,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error (log lines and error messages).
    pub stderr: String,
}

impl Output {
    /// The exit code (panics if killed by a signal).
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("killed by a signal: {self:?}"))
    }

    /// Every JSON log line.
    pub fn logs(&self) -> Vec<Value> {
        self.stderr
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON log line {l:?}: {e}"))
            })
            .collect()
    }

    /// Messages of log lines from `service` (any context), in order.
    pub fn messages_of(&self, service: &str) -> Vec<String> {
        self.logs()
            .iter()
            .filter(|l| l["service"] == service)
            .map(|l| l["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Every log message, in order.
    pub fn messages(&self) -> Vec<String> {
        self.logs()
            .iter()
            .map(|l| l["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// The value a `probe/Report` logged for `dataframe.key` (`absent` if absent).
    pub fn report(&self, dataframe: &str, key: &str) -> Option<String> {
        let prefix = format!("report {dataframe}.{key} = ");
        self.messages()
            .iter()
            .rev()
            .find_map(|m| m.strip_prefix(&prefix).map(str::to_owned))
    }
}

/// Runs `otools ARGS` to its end (JSON logs for `run`).
pub fn run(args: &[&str]) -> Output {
    let child = spawn(args);
    wait(child)
}

/// Runs `otools run MANIFEST --log-format json EXTRA...`.
pub fn run_manifest(manifest: &Path, extra: &[&str]) -> Output {
    let m = manifest.to_string_lossy().into_owned();
    let mut args = vec!["run", m.as_str(), "--log-format", "json"];
    args.extend_from_slice(extra);
    run(&args)
}

/// Starts `otools ARGS` with piped output.
pub fn spawn(args: &[&str]) -> Child {
    spawn_env(args, &[])
}

/// Starts `otools ARGS` with piped output and extra environment variables.
pub fn spawn_env(args: &[&str], env: &[(&str, &str)]) -> Child {
    Command::new(otools())
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start otools")
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

/// Waits for a child to exit (failing the test after [`DEADLINE`]).
pub fn wait(mut child: Child) -> Output {
    let out = drain(child.stdout.take().expect("piped stdout"));
    let err = drain(child.stderr.take().expect("piped stderr"));
    let status = wait_status(&mut child);
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

fn wait_status(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(s) = child.try_wait().expect("wait for otools") {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("otools did not exit within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A running `otools run` whose log lines can be awaited one by one.
pub struct Running {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    out: Option<std::thread::JoinHandle<String>>,
}

impl Running {
    /// Starts `otools run MANIFEST --log-format json`.
    pub fn start(manifest: &Path) -> Running {
        Running::start_with(manifest, &[])
    }

    /// Starts `otools run MANIFEST --log-format json EXTRA...`.
    pub fn start_with(manifest: &Path, extra: &[&str]) -> Running {
        Running::start_env(manifest, extra, &[])
    }

    /// Like [`Running::start_with`], with extra environment variables.
    pub fn start_env(manifest: &Path, extra: &[&str], env: &[(&str, &str)]) -> Running {
        let m = manifest.to_string_lossy().into_owned();
        let mut args = vec!["run", m.as_str(), "--log-format", "json"];
        args.extend_from_slice(extra);
        let mut child = spawn_env(&args, env);
        let out = drain(child.stdout.take().expect("piped stdout"));
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines: rx,
            seen: Vec::new(),
            out: Some(out),
        }
    }

    /// Like [`Running::wait_for`], but a line already read by an earlier
    /// wait counts too: for a line whose order against the others is not
    /// fixed.
    pub fn wait_for_printed(&mut self, text: &str) {
        let printed = self.seen.iter().any(|line| {
            serde_json::from_str::<Value>(line)
                .ok()
                .and_then(|v| v["message"].as_str().map(|m| m.contains(text)))
                .unwrap_or(false)
        });
        if !printed {
            self.wait_for(text);
        }
    }

    /// Waits until a log line whose message contains `text` appears.
    pub fn wait_for(&mut self, text: &str) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = serde_json::from_str::<Value>(&line)
                        .ok()
                        .and_then(|v| v["message"].as_str().map(|m| m.contains(text)))
                        .unwrap_or(false);
                    self.seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    panic!(
                        "no log line containing {text:?}; saw:\n{}",
                        self.seen.join("\n")
                    );
                }
            }
        }
    }

    /// The host's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (by name, e.g. `TERM`) to the host.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the host to exit and returns everything it printed.
    pub fn finish(mut self) -> Output {
        let status = wait_status(&mut self.child);
        let mut stderr = self.seen.join("\n");
        for line in self.lines.iter() {
            stderr.push('\n');
            stderr.push_str(&line);
        }
        Output {
            status,
            stdout: self
                .out
                .take()
                .map(|h| h.join().unwrap_or_default())
                .unwrap_or_default(),
            stderr,
        }
    }
}

/// The events of a journal written with `--events`, in order. Only whole
/// lines count: a host still running may be half-way through writing the
/// last one when the file is read (a read can see part of a `write`).
pub fn journal(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n') && !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad journal line {l:?}: {e}")))
        .collect()
}

/// Waits until the journal holds `count` events matching `pred` (polling the
/// file, with [`DEADLINE`] only to fail a hung test); returns the journal.
pub fn wait_for_events(path: &Path, count: usize, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let events = journal(path);
        if events.iter().filter(|e| pred(e)).count() >= count {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "the journal never had {count} such events:\n{}",
            events
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Events named `event` for `service`, in order.
pub fn events_of<'a>(events: &'a [Value], event: &str, service: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["event"] == event && e["service"] == service)
        .collect()
}

/// Manifest text: a context `Main` whose `Script` service `script` (of the
/// `messages` plugin) runs `steps`, the items of its `steps` array.
pub fn script_context(steps: &str) -> String {
    format!(
        "\n[[context]]\nname = \"Main\"\n[[context.service]]\nname = \"script\"\nplugin = \"messages\"\nexport = \"Script\"\nconfig = {{ steps = [\n{steps}\n] }}\n"
    )
}
