//! Libraries built against an incompatible `otools-api` are refused at load
//! with a short message that says which side to rebuild. The fixtures are
//! real: a copy of `plugin-api` with an older version number, and one whose
//! FFI layout differs, each with a one-service plugin built by cargo.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{TestDir, run, target_dir};

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

/// Builds a plugin against a copy of plugin-api with `version`, after
/// applying `edit` to the copy's `src/ffi.rs`; returns the library.
pub(crate) fn build_variant(
    dir: &TestDir,
    name: &str,
    version: &str,
    edit: impl Fn(String) -> String,
) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let ws = dir.path.join(name);
    let api = ws.join("api");
    copy_dir(&root.join("plugin-api/src"), &api.join("src"));
    let ffi = api.join("src/ffi.rs");
    let original = std::fs::read_to_string(&ffi).unwrap();
    let edited = edit(original.clone());
    std::fs::write(&ffi, edited).unwrap();
    std::fs::write(
        api.join("Cargo.toml"),
        format!(
            "[package]\nname = \"otools-api\"\nversion = \"{version}\"\nedition = \"2024\"\n\n[dependencies]\n\
             abi_stable = \"0.11.3\"\nserde = {{ version = \"1\", features = [\"derive\"] }}\nserde_json = \"1\"\n"
        ),
    )
    .unwrap();
    let plugin = ws.join("plugin");
    std::fs::create_dir_all(plugin.join("src")).unwrap();
    std::fs::write(plugin.join("src/lib.rs"), PLUGIN).unwrap();
    std::fs::write(
        plugin.join("Cargo.toml"),
        format!(
            "[package]\nname = \"plugin-{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[lib]\nname = \"{name}\"\ncrate-type = [\"cdylib\"]\n\n\
             [dependencies]\notools-api = {{ path = \"../api\" }}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        ws.join("Cargo.toml"),
        "[workspace]\nresolver = \"3\"\nmembers = [\"api\", \"plugin\"]\n",
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

#[test]
fn libraries_built_against_an_incompatible_otools_api_are_refused_with_which_side_to_rebuild() {
    let dir = TestDir::new("compat");
    // An older minor version of the interface (0.0.x against our 0.1.x).
    let old = build_variant(&dir, "oldapi", "0.0.1", |s| s);
    // The same version number but a different layout: one more error kind.
    let mismatch = build_variant(&dir, "mismatch", env!("CARGO_PKG_VERSION"), |s| {
        let edited = s.replace(
            "    UnknownExport = 4,\n}",
            "    UnknownExport = 4,\n    /// Added by the test.\n    Extra = 5,\n}",
        );
        assert_ne!(edited, s, "the fixture edit no longer applies to ffi.rs");
        edited
    });

    let out = run(&["inspect", old.to_str().unwrap()]);
    assert_eq!(out.code(), 2, "{}", out.stderr);
    let msg = out.stderr.trim();
    assert!(msg.contains("was built against otools-api 0.0.1"), "{msg}");
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
