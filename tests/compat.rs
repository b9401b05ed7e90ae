//! Libraries built against an incompatible ABI are refused at load with a
//! short message that says which side to rebuild, and only then: the
//! version checked is `otools-abi`'s, not `otools-api`'s; and a plugin
//! built before messaging (otools-abi 0.3.0) still loads and runs. The
//! fixtures are real: copies of `abi/` and `plugin-api/` with other version
//! numbers or edited sources (or the sources of an earlier commit, from
//! git), each with a one-service plugin built by cargo.

use std::path::{Path, PathBuf};
use std::process::Command;

use otools_abi::ABI_VERSION;

use crate::util::{TestDir, run, run_manifest, target_dir};

const PLUGIN: &str = r#"
//! A plugin built against a modified otools-api.
use otools_api::{Context, NoConfig, Result, Service};

/// Does nothing.
pub struct Nop;

impl Service for Nop {
    type Config = NoConfig;
    fn new(_: NoConfig) -> Result<Self> {
        Ok(Nop)
    }
    fn main(&self, _: &Context<'_>) -> Result<()> {
        Ok(())
    }
}

otools_api::export_plugin! { services: [Nop] }
"#;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

/// Rewrites the file at `path` through `edit`.
fn edit_file(path: &Path, edit: &dyn Fn(String) -> String) {
    let original = std::fs::read_to_string(path).unwrap();
    let edited = edit(original.clone());
    std::fs::write(path, edited).unwrap();
}

/// What a fixture changes in its copies of the two crates.
pub(crate) struct Variant<'a> {
    /// The `otools-abi` version of the copy.
    pub abi_version: &'a str,
    /// The `otools-api` version of the copy.
    pub api_version: &'a str,
    /// An edit of the copy's FFI code (`abi/src/lib.rs`).
    pub edit_abi: &'a dyn Fn(String) -> String,
    /// An edit of the copy's `plugin-api/src/context.rs`.
    pub edit_context: &'a dyn Fn(String) -> String,
    /// The plugin's `src/lib.rs`.
    pub plugin: &'a str,
    /// Take the sources of both crates from this commit of the repository
    /// instead of the working tree (a plugin built before a change).
    pub sources_at: Option<&'a str>,
}

pub(crate) fn unchanged(s: String) -> String {
    s
}

/// Builds a plugin against a copy of otools-api with `version` over a copy
/// of otools-abi at this host's ABI version, after applying `edit` to the
/// copy's FFI code (`abi/src/lib.rs`); returns the library.
pub(crate) fn build_variant(
    dir: &TestDir,
    name: &str,
    version: &str,
    edit: impl Fn(String) -> String,
) -> PathBuf {
    build_fixture(
        dir,
        name,
        &Variant {
            abi_version: ABI_VERSION,
            api_version: version,
            edit_abi: &edit,
            edit_context: &unchanged,
            plugin: PLUGIN,
            sources_at: None,
        },
    )
}

/// Replaces every file of `dir` (a copy of `path` in the repository at
/// `root`) by its content at `commit`; a file that did not exist there is
/// removed.
fn restore_sources(root: &Path, commit: &str, path: &str, dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let file = entry.unwrap().path();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let out = Command::new("git")
            .current_dir(root)
            .args(["show", &format!("{commit}:{path}/{name}")])
            .output()
            .expect("run git");
        if out.status.success() {
            std::fs::write(&file, out.stdout).unwrap();
        } else {
            std::fs::remove_file(&file).unwrap();
        }
    }
}

/// Builds the plugin of `variant` against its copies of the two crates;
/// returns the library.
pub(crate) fn build_fixture(dir: &TestDir, name: &str, variant: &Variant<'_>) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let ws = dir.path.join(name);
    // Folders named after the fixture: cargo hashes a path package by its
    // path relative to the workspace, and every fixture shares one target
    // dir, so two fixtures' `otools-abi 0.3.0` in a folder of the same
    // name would share (and race for) one artifact.
    let abi = ws.join(format!("abi-{name}"));
    copy_dir(&root.join("abi/src"), &abi.join("src"));
    if let Some(commit) = variant.sources_at {
        restore_sources(root, commit, "abi/src", &abi.join("src"));
    }
    edit_file(&abi.join("src/lib.rs"), variant.edit_abi);
    // The package name must stay `otools-abi`: abi_stable compares it too.
    std::fs::write(
        abi.join("Cargo.toml"),
        format!(
            "[package]\nname = \"otools-abi\"\nversion = \"{}\"\nedition = \"2024\"\n\n[dependencies]\n\
             abi_stable = \"0.11.3\"\n",
            variant.abi_version
        ),
    )
    .unwrap();
    let api = ws.join(format!("api-{name}"));
    copy_dir(&root.join("plugin-api/src"), &api.join("src"));
    if let Some(commit) = variant.sources_at {
        restore_sources(root, commit, "plugin-api/src", &api.join("src"));
    }
    edit_file(&api.join("src/context.rs"), variant.edit_context);
    std::fs::write(
        api.join("Cargo.toml"),
        format!(
            "[package]\nname = \"otools-api\"\nversion = \"{}\"\nedition = \"2024\"\n\n[dependencies]\n\
             otools-abi = {{ path = \"../abi-{name}\" }}\nabi_stable = \"0.11.3\"\n\
             serde = {{ version = \"1\", features = [\"derive\"] }}\nserde_json = \"1\"\n",
            variant.api_version
        ),
    )
    .unwrap();
    let plugin = ws.join("plugin");
    std::fs::create_dir_all(plugin.join("src")).unwrap();
    std::fs::write(plugin.join("src/lib.rs"), variant.plugin).unwrap();
    std::fs::write(
        plugin.join("Cargo.toml"),
        format!(
            "[package]\nname = \"plugin-{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[lib]\nname = \"{name}\"\ncrate-type = [\"cdylib\"]\n\n\
             [dependencies]\notools-api = {{ path = \"../api-{name}\" }}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        ws.join("Cargo.toml"),
        format!(
            "[workspace]\nresolver = \"3\"\nmembers = [\"abi-{name}\", \"api-{name}\", \"plugin\"]\n"
        ),
    )
    .unwrap();
    // Same dependency versions as the host, and no network needed.
    std::fs::copy(root.join("Cargo.lock"), ws.join("Cargo.lock")).unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let shared_target = target_dir().join("compat-fixtures");
    let out = Command::new(cargo)
        .current_dir(&ws)
        .args(["build", "--offline", "-p", &format!("plugin-{name}")])
        .env("CARGO_TARGET_DIR", &shared_target)
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "building the {name} fixture failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let built = shared_target.join("debug").join(format!("lib{name}.so"));
    // Give each fixture its own file: both builds share one target dir.
    let kept = dir.path.join(format!("lib{name}.so"));
    std::fs::copy(&built, &kept).unwrap();
    kept
}

/// A plugin that calls a helper only the edited otools-api has, logs what
/// it returns, and ends its context.
const HELPER_PLUGIN: &str = r#"
//! A plugin using a helper added to otools-api.
use otools_api::{Context, NoConfig, Result, Service};

/// Logs what the new helper says, then ends the context.
pub struct Helped;

impl Service for Helped {
    type Config = NoConfig;
    fn new(_: NoConfig) -> Result<Self> {
        Ok(Helped)
    }
    fn main(&self, ctx: &Context<'_>) -> Result<()> {
        ctx.info(ctx.added_by_the_test());
        ctx.terminate_context();
        Ok(())
    }
}

otools_api::export_plugin! { services: [Helped] }
"#;

/// Adds a pure-Rust helper method to `Context` (no FFI change).
fn add_helper(s: String) -> String {
    let anchor = "    /// The name of the context this instance runs in.\n";
    assert!(
        s.contains(anchor),
        "the fixture edit no longer applies to context.rs"
    );
    s.replacen(
        anchor,
        &format!(
            "    /// Added by the test: a helper over existing host calls.\n\
             pub fn added_by_the_test(&self) -> String {{\n\
             format!(\"helper says hello from {{}}\", self.service_name())\n\
             }}\n\n{anchor}"
        ),
        1,
    )
}

/// `version` with its minor number moved by `by` (0.2.0 + 1 = 0.3.0).
fn other_minor(version: &str, by: i64) -> String {
    let parts: Vec<i64> = version.split('.').map(|p| p.parse().unwrap()).collect();
    format!("{}.{}.0", parts[0], parts[1] + by)
}

#[test]
fn plugins_built_against_another_otools_api_on_the_same_abi_load_and_run() {
    let dir = TestDir::new("compat_api");
    // A newer otools-api (an incompatible 0.minor by cargo's rules) with a
    // new helper on Context, used by the plugin; same otools-abi.
    let newer = other_minor(env!("CARGO_PKG_VERSION"), 1);
    let helped = build_fixture(
        &dir,
        "helper",
        &Variant {
            abi_version: ABI_VERSION,
            api_version: &newer,
            edit_abi: &unchanged,
            edit_context: &add_helper,
            plugin: HELPER_PLUGIN,
            sources_at: None,
        },
    );
    // An older otools-api, built before that helper existed.
    let older = other_minor(env!("CARGO_PKG_VERSION"), -1);
    let before = build_fixture(
        &dir,
        "olderapi",
        &Variant {
            abi_version: ABI_VERSION,
            api_version: &older,
            edit_abi: &unchanged,
            edit_context: &unchanged,
            plugin: PLUGIN,
            sources_at: None,
        },
    );

    for (lib, api) in [(&helped, &newer), (&before, &older)] {
        let out = run(&["inspect", lib.to_str().unwrap()]);
        assert_eq!(out.code(), 0, "{}", out.stderr);
        assert!(
            out.stdout.contains(&format!("otools-api: {api} ")),
            "{}",
            out.stdout
        );
        assert!(
            out.stdout.contains(&format!(
                "otools-abi: {ABI_VERSION} (host: {ABI_VERSION}, compatible)"
            )),
            "{}",
            out.stdout
        );
    }

    // And the helper really runs inside this host.
    let m = dir.manifest(
        "m.toml",
        &format!(
            "[[context]]\nname = \"C\"\n[[context.service]]\nname = \"helped\"\nplugin = \"{}\"\nexport = \"Helped\"\n",
            helped.display()
        ),
    );
    let out = run_manifest(&m, &[]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert!(
        out.messages_of("helped")
            .contains(&String::from("helper says hello from helped")),
        "{:?}",
        out.messages()
    );
}

#[test]
fn libraries_built_against_an_incompatible_abi_are_refused_with_which_side_to_rebuild() {
    let dir = TestDir::new("compat");
    // An older minor version of the ABI (0.0.x against our 0.3.x), with
    // this host's otools-api version: refused all the same.
    let old = build_fixture(
        &dir,
        "oldabi",
        &Variant {
            abi_version: "0.0.1",
            api_version: env!("CARGO_PKG_VERSION"),
            edit_abi: &unchanged,
            edit_context: &unchanged,
            plugin: PLUGIN,
            sources_at: None,
        },
    );
    // The same ABI version number but a changed FFI type: one more error kind.
    let mismatch = build_variant(&dir, "mismatch", env!("CARGO_PKG_VERSION"), |s| {
        let edited = s.replace(
            "    UnknownExport = 4,\n}",
            "    UnknownExport = 4,\n    /// Added by the test.\n    Extra = 5,\n}",
        );
        assert_ne!(
            edited, s,
            "the fixture edit no longer applies to abi/src/lib.rs"
        );
        edited
    });

    let out = run(&["inspect", old.to_str().unwrap()]);
    assert_eq!(out.code(), 2, "{}", out.stderr);
    let msg = out.stderr.trim();
    assert!(msg.contains("was built against otools-abi 0.0.1"), "{msg}");
    assert!(
        msg.contains("rebuild the plugin against otools-api"),
        "{msg}"
    );
    assert_eq!(msg.lines().count(), 1, "one short line: {msg}");

    let out = run(&["inspect", mismatch.to_str().unwrap()]);
    assert_eq!(out.code(), 2, "{}", out.stderr);
    let msg = out.stderr.trim();
    assert!(
        msg.contains("does not match this host's otools-api"),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("on otools-abi {ABI_VERSION}")),
        "{msg}"
    );
    assert!(msg.contains("rebuild the plugin"), "{msg}");
    assert!(msg.contains("run with -v"), "{msg}");
    assert!(
        msg.contains("CallErrorKind: too many variants (expected 5, found 6)"),
        "{msg}"
    );
    assert!(
        msg.len() < 1000,
        "the short form stays short ({} bytes): {msg}",
        msg.len()
    );

    let verbose = run(&["inspect", "-v", mismatch.to_str().unwrap()]);
    assert_eq!(verbose.code(), 2);
    assert!(
        verbose.stderr.len() > msg.len(),
        "-v shows abi_stable's full report"
    );

    // The working plugins still load in the same host process.
    let dir2 = TestDir::new("compat_manifest");
    let m = dir2.manifest(
        "m.toml",
        &format!(
            "[[context]]\nname = \"C\"\n[[context.service]]\nname = \"old\"\nplugin = \"{}\"\nexport = \"Nop\"\n",
            old.display()
        ),
    );
    let out = run(&["check", m.to_str().unwrap()]);
    assert_eq!(out.code(), 2, "{}", out.stderr);
    assert!(
        out.stderr.contains(":8:") && out.stderr.contains("rebuild the plugin"),
        "{}",
        out.stderr
    );
}

/// The commit the messaging work started from: `otools-abi` 0.3.0, before
/// `msg_send`, `handle_message` and the rest were appended to the ABI (and
/// before flow steps).
const BEFORE_MESSAGING: &str = "ae49325959c895ed081e6f3f434fb8ede215c64c";

/// A plugin that logs from `main` and ends its context.
const OLD_PLUGIN: &str = r#"
//! A plugin built before messaging existed.
use otools_api::{Context, NoConfig, Result, Service};

/// Logs once, then ends its context.
pub struct Old;

impl Service for Old {
    type Config = NoConfig;
    fn new(_: NoConfig) -> Result<Self> {
        Ok(Old)
    }
    fn main(&self, ctx: &Context<'_>) -> Result<()> {
        ctx.info("built before messaging, running");
        ctx.terminate_context();
        Ok(())
    }
}

otools_api::export_plugin! { services: [Old] }
"#;

/// Builds [`OLD_PLUGIN`] from the sources at [`BEFORE_MESSAGING`]
/// (`otools-abi` 0.3.0) as `lib<name>.so`, checks that `inspect` finds it
/// compatible, and returns it with what `inspect` printed.
pub(crate) fn build_old_plugin(dir: &TestDir, name: &str) -> (PathBuf, String) {
    let old = build_fixture(
        dir,
        name,
        &Variant {
            abi_version: "0.3.0",
            api_version: env!("CARGO_PKG_VERSION"),
            edit_abi: &unchanged,
            edit_context: &unchanged,
            plugin: OLD_PLUGIN,
            sources_at: Some(BEFORE_MESSAGING),
        },
    );
    let out = run(&["inspect", old.to_str().unwrap()]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert!(
        out.stdout.contains(&format!(
            "otools-abi: 0.3.0 (host: {ABI_VERSION}, compatible)"
        )),
        "{}",
        out.stdout
    );
    (old, out.stdout)
}

#[test]
fn plugins_built_before_messaging_load_and_run_beside_message_handlers() {
    let dir = TestDir::new("compat_premsg");
    let (old, _) = build_old_plugin(&dir, "premsg");
    let body = format!(
        "[[context]]\nname = \"Old\"\n[[context.service]]\nname = \"old\"\nplugin = \"{}\"\nexport = \"Old\"\n\
         [[context]]\nname = \"Msg\"\n[[context.service]]\nname = \"agent\"\nplugin = \"messages\"\nexport = \"Agent\"\n\
         [[context.service]]\nname = \"script\"\nplugin = \"messages\"\nexport = \"Script\"\n\
         config = {{ steps = [ {{ kind = \"request\", to = \"agent\", name = \"PING\" }}, \
         {{ kind = \"request\", to = \"old\", name = \"PING\" }}, {{ kind = \"send\", to = \"agent\", name = \"SHUTDOWN\" }} ] }}\n",
        old.display()
    );
    let out = run_manifest(&dir.manifest("m.toml", &body), &[]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(out.messages_of("old"), ["built before messaging, running"]);
    // The old service has no mailbox: it is no message target.
    assert_eq!(
        out.messages_of("script"),
        [
            "reply to PING: 1",
            "PING failed: UnknownTarget: no service `old` accepts messages",
            "sent SHUTDOWN"
        ]
    );
}
