//! The host's module layers, read from its source: every module uses only
//! modules in layers below its own (so there are no import circles), and
//! ARCHITECTURE.md's code map names every source file and no file that is
//! gone. The layers are the ones ARCHITECTURE.md draws.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Lowest first. A module may use modules of lower layers only.
const LAYERS: &[&[&str]] = &[
    &["exit", "logging", "dataframe", "plugin"],
    &["manifest"],
    &["event"],
    &["threads"],
    &["signals", "supervision", "messaging"],
    &["instance"],
    &["flow"],
    &["plan"],
    &["runtime", "pipeline"],
    &["reload", "control"],
    &["host"],
    &["cli"],
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../host/src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file belongs to (`runtime/driver.rs` -> `runtime`).
fn module_of(file: &Path) -> String {
    let rel = file.strip_prefix(src()).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The top-level modules a file's code (not its tests, not its comments)
/// names through `crate::`.
fn uses(text: &str) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    let mut found = BTreeSet::new();
    for line in code.lines() {
        if line.trim_start().starts_with("//") {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let name = item.trim().split("::").next().unwrap_or_default();
                    if !name.is_empty() {
                        found.insert(name.to_string());
                    }
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                found.insert(name);
            }
        }
    }
    found
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

#[test]
fn every_host_module_uses_only_modules_of_lower_layers() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut wrong = Vec::new();
    for f in &files {
        let module = module_of(f);
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(mine) = layer_of(&module) else {
            wrong.push(format!("{module} ({}) is in no layer", f.display()));
            continue;
        };
        for used in uses(&std::fs::read_to_string(f).unwrap()) {
            if used == module {
                continue;
            }
            graph
                .entry(module.clone())
                .or_default()
                .insert(used.clone());
            match layer_of(&used) {
                Some(theirs) if theirs < mine => {}
                _ => wrong.push(format!(
                    "{} uses crate::{used}, which is not below {module}",
                    f.strip_prefix(src()).unwrap().display()
                )),
            }
        }
    }
    assert!(
        graph.len() >= 8,
        "the scan found the modules' uses: {graph:?}"
    );
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

/// The host files ARCHITECTURE.md's code map describes: a `#### `
/// heading naming a file (`host/src/x.rs`), or a heading naming a folder
/// (`host/src/runtime/`) and a `**`file.rs`**` paragraph under it.
fn mapped_files(arch: &str) -> BTreeSet<String> {
    let mut mapped = BTreeSet::new();
    let mut folder: Option<String> = None;
    for line in arch.lines() {
        if line.starts_with('#') {
            folder = None;
            for piece in line.split('`').skip(1).step_by(2) {
                if let Some(rel) = piece.strip_prefix("host/src/") {
                    if rel.ends_with('/') {
                        folder = Some(rel.to_string());
                    } else {
                        mapped.insert(rel.to_string());
                    }
                }
            }
        } else if let (Some(dir), Some(rest)) = (&folder, line.strip_prefix("**`")) {
            if let Some(end) = rest.find("`**") {
                mapped.insert(format!("{dir}{}", &rest[..end]));
            }
        }
    }
    mapped
}

#[test]
fn the_architecture_code_map_names_every_host_source_file_and_no_other() {
    let arch =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../ARCHITECTURE.md"))
            .unwrap();
    let mapped = mapped_files(&arch);
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let actual: BTreeSet<String> = files
        .iter()
        .map(|f| f.strip_prefix(src()).unwrap().display().to_string())
        .filter(|f| f != "lib.rs" && f != "main.rs")
        .collect();
    let missing: Vec<_> = actual.difference(&mapped).collect();
    let gone: Vec<_> = mapped.difference(&actual).collect();
    assert!(
        missing.is_empty() && gone.is_empty(),
        "ARCHITECTURE.md's code map does not describe {missing:?} and describes files that do not exist: {gone:?}"
    );
}
