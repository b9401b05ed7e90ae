use crate::util::{TestDir, plugin, run};

#[test]
fn inspect_lists_the_interface_version_and_every_export() {
    let lib = plugin("counter");
    let out = run(&["inspect", lib.to_str().unwrap()]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("plugin:     plugin-counter"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("otools-api: "), "{}", out.stdout);
    assert!(
        out.stdout.contains("services:   Increment, LoopIncrement"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("conditions: AtLeast"), "{}", out.stdout);
}

#[test]
fn a_file_of_garbage_bytes_is_refused_as_not_a_shared_library() {
    let dir = TestDir::new("garbage");
    let lib = dir.write(
        "libgarbage.so",
        b"this is not an ELF file at all, just bytes\x00\x01\x02",
    );
    let out = run(&["inspect", lib.to_str().unwrap()]);
    assert_eq!(out.code(), 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("cannot load") && out.stderr.contains("as a shared library"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("libgarbage.so"), "{}", out.stderr);
}

#[test]
fn a_library_without_the_otools_root_module_is_refused_clearly() {
    let lib = plugin("bare");
    let out = run(&["inspect", lib.to_str().unwrap()]);
    assert_eq!(out.code(), 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("is not an otools plugin"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("export_plugin!"), "{}", out.stderr);
}

#[test]
fn a_manifest_using_a_file_that_is_not_a_plugin_fails_with_its_line() {
    let dir = TestDir::new("not_a_plugin");
    let garbage = dir.write("junk.so", b"\x7fELF but truncated");
    let body = format!(
        "[[context]]\nname = \"C\"\n[[context.service]]\nname = \"x\"\nplugin = \"{}\"\nexport = \"X\"\n[[context.service]]\nname = \"y\"\nplugin = \"bare\"\nexport = \"Y\"\n",
        garbage.display()
    );
    let m = dir.manifest("m.toml", &body);
    let path = m.to_string_lossy().into_owned();
    let out = run(&["check", &path]);
    assert_eq!(out.code(), 2, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("{path}:8:")) && out.stderr.contains("cannot load"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!("{path}:12:"))
            && out.stderr.contains("is not an otools plugin"),
        "{}",
        out.stderr
    );
}
