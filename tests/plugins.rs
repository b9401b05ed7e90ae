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
        out.stdout.contains("otools-abi: ") && out.stdout.contains(", compatible)"),
        "{}",
        out.stdout
    );
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

#[test]
fn a_crate_built_without_cdylib_is_told_to_add_cdylib_to_its_crate_type() {
    // otools-api is a library crate without `crate-type = ["cdylib"]`:
    // `cargo build` leaves target/<profile>/libotools_api.rlib and no .so.
    let dir = TestDir::new("rlib_only");
    let m = dir.manifest(
        "m.toml",
        "[[context]]\nname = \"C\"\n[[context.service]]\nname = \"x\"\nplugin = \"otools_api\"\nexport = \"X\"\n",
    );
    let out = run(&["check", m.to_str().unwrap()]);
    assert_eq!(out.code(), 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("libotools_api.rlib")
            && out.stderr.contains("crate-type = [\"cdylib\"]"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("build it with"), "{}", out.stderr);
}

/// What is left in a temporary folder: (name, is a folder, mode bits).
fn listing(tmp: &std::path::Path) -> Vec<(String, bool, u32)> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::read_dir(tmp)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                meta.is_dir(),
                meta.permissions().mode() & 0o777,
            )
        })
        .collect()
}

#[test]
fn the_private_copy_folder_is_unpredictable_owner_only_and_removed_on_every_exit() {
    let dir = TestDir::new("private_dir");
    let tmp = dir.path.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let env = [("TMPDIR", tmp.to_str().unwrap())];
    let m = dir.manifest(
        "m.toml",
        "[[context]]\nname = \"C\"\nperiod = \"10ms\"\n[[context.service]]\nname = \"h\"\nplugin = \"hello\"\nexport = \"Greeter\"\n",
    );
    let mut host = crate::util::Running::start_env(&m, &[], &env);
    host.wait_for("all contexts ready");
    let pid = host.pid();
    let seen = listing(&tmp);
    assert_eq!(seen.len(), 1, "one private folder while running: {seen:?}");
    let (name, is_dir, mode) = &seen[0];
    assert!(*is_dir && name.starts_with("otools-"), "{seen:?}");
    assert_ne!(*name, format!("otools-{pid}"), "not named by the pid");
    assert_eq!(*mode, 0o700, "{name}: only its owner may enter it");
    assert!(
        std::fs::read_dir(tmp.join(name)).unwrap().next().is_none(),
        "each copy is removed once loaded"
    );
    host.signal("TERM");
    let out = host.finish();
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(listing(&tmp), vec![], "removed at a normal exit");
    // A refused manifest (exit 2) after a library was loaded, and `check`.
    let bad = dir.manifest(
        "bad.toml",
        "[[context]]\nname = \"C\"\n[[context.service]]\nname = \"h\"\nplugin = \"hello\"\nexport = \"NoSuchExport\"\n",
    );
    for (args, code) in [
        (["run", bad.to_str().unwrap()], 2),
        (["check", m.to_str().unwrap()], 0),
    ] {
        let out = crate::util::wait(crate::util::spawn_env(&args, &env));
        assert_eq!(out.code(), code, "{args:?}: {}", out.stderr);
        assert_eq!(listing(&tmp), vec![], "{args:?}: nothing left");
    }
}
