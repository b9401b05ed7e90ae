//! Each kind of manifest mistake stops `otools check` and `otools run` with
//! exit code 2, before anything runs, and says where: `file:line:column`.

use crate::util::{self, Output, TestDir, run};

const CONTEXT: &str = "[[context]]\nname = \"C\"\n";
const STOP: &str = "[[context.service]]\nname = \"stop\"\nplugin = \"hello\"\nexport = \"StopAfter\"\nconfig = { count = 1 }\n";

/// Runs `check` on a manifest made of `body`; asserts exit 2 and returns the output.
fn check(name: &str, body: &str) -> (Output, String) {
    let dir = TestDir::new(name);
    let m = dir.manifest("m.toml", body);
    let path = m.to_string_lossy().into_owned();
    let out = run(&["check", &path]);
    assert_eq!(out.code(), 2, "{}", out.stderr);
    (out, path)
}

/// Asserts that stderr reports `message` at `line` of the manifest (the
/// manifest's first three lines are the `version` and `[host]` header).
fn assert_at(out: &Output, path: &str, line: usize, message: &str) {
    let want = format!("{path}:{line}:");
    assert!(
        out.stderr
            .lines()
            .any(|l| l.contains(&want) && l.contains(message)),
        "expected `{message}` at {want}; got:\n{}",
        out.stderr
    );
}

#[test]
fn a_toml_syntax_error_names_its_line() {
    let (out, path) = check("syntax", &format!("{CONTEXT}[[context.service]\n"));
    assert_at(&out, &path, 6, "invalid TOML");
}

#[test]
fn an_unknown_key_is_an_error_naming_the_key() {
    let (out, path) = check("unknown_key", &format!("{CONTEXT}perod = \"1s\"\n{STOP}"));
    assert_at(&out, &path, 6, "unknown field `perod`");
}

#[test]
fn a_missing_plugin_file_is_an_error() {
    let (out, path) = check(
        "missing_plugin",
        &format!(
            "{CONTEXT}[[context.service]]\nname = \"x\"\nplugin = \"no_such_plugin\"\nexport = \"X\"\n"
        ),
    );
    assert_at(&out, &path, 8, "plugin library not found");
    assert!(
        out.stderr.contains("libno_such_plugin.so"),
        "{}",
        out.stderr
    );
}

#[test]
fn an_unknown_export_is_an_error_listing_the_exports() {
    let (out, path) = check(
        "unknown_export",
        &format!(
            "{CONTEXT}[[context.service]]\nname = \"x\"\nplugin = \"counter\"\nexport = \"Incremnt\"\n"
        ),
    );
    assert_at(&out, &path, 9, "exports no service named `Incremnt`");
    assert!(out.stderr.contains("Increment"), "{}", out.stderr);
}

#[test]
fn a_condition_used_as_a_service_is_an_error() {
    let (out, path) = check(
        "wrong_kind",
        &format!(
            "{CONTEXT}[[context.service]]\nname = \"x\"\nplugin = \"counter\"\nexport = \"AtLeast\"\n"
        ),
    );
    assert_at(&out, &path, 9, "is a condition, not a service");
}

#[test]
fn a_config_the_plugin_rejects_fails_check_and_run_with_the_plugins_message() {
    let body = format!(
        "{CONTEXT}[[context.service]]\nname = \"inc\"\nplugin = \"counter\"\nexport = \"Increment\"\nconfig = {{ step = 0 }}\n\
         [[context.service]]\nname = \"inc2\"\nplugin = \"counter\"\nexport = \"Increment\"\nconfig = {{ stepp = 1 }}\n"
    );
    let (out, path) = check("config_rejected", &body);
    assert_at(&out, &path, 10, "rejected its config: `step` must not be 0");
    assert_at(
        &out,
        &path,
        15,
        "rejected its config: unknown field `stepp`",
    );
    assert!(
        out.stderr.contains("context \"C\" > service \"inc\""),
        "{}",
        out.stderr
    );

    let run_out = run(&["run", &path]);
    assert_eq!(run_out.code(), 2, "{}", run_out.stderr);
    assert_at(&run_out, &path, 10, "`step` must not be 0");
    assert!(
        run_out.stderr.contains("nothing was started"),
        "{}",
        run_out.stderr
    );
}

#[test]
fn a_duplicate_name_in_a_context_is_an_error() {
    let body = format!(
        "{CONTEXT}{STOP}[[context.trigger]]\nname = \"stop\"\ncondition = [ {{ plugin = \"probe\", export = \"Constant\", config = {{ value = true }} }} ]\nservice = [ {{ plugin = \"control\", export = \"Shutdown\" }} ]\n"
    );
    let (out, path) = check("duplicate", &body);
    assert_at(&out, &path, 12, "duplicate name `stop`");
}

#[test]
fn an_unknown_dataframe_is_an_error() {
    let (out, path) = check(
        "unknown_df",
        &format!("{CONTEXT}dataframes = [\"ghost\"]\n{STOP}"),
    );
    assert_at(&out, &path, 6, "unknown dataframe `ghost`");
}

#[test]
fn a_trigger_without_condition_is_an_error() {
    let body = format!(
        "{CONTEXT}[[context.trigger]]\nname = \"t\"\nservice = [ {{ plugin = \"control\", export = \"Shutdown\" }} ]\n"
    );
    let (out, path) = check("no_condition", &body);
    assert_at(&out, &path, 7, "has no condition");
}

#[test]
fn a_bad_duration_is_an_error_saying_what_was_expected() {
    let (out, path) = check(
        "bad_duration",
        &format!("{CONTEXT}period = \"5 parsecs\"\n{STOP}"),
    );
    assert_at(&out, &path, 6, "invalid duration `5 parsecs`");
    assert!(out.stderr.contains("\"250ms\""), "{}", out.stderr);
}

#[test]
fn check_reports_every_problem_not_just_the_first() {
    // Two malformed contexts: both parse errors are reported.
    let body =
        "[[context]]\nname = \"A\"\nperiod = \"soon\"\n[[context]]\nname = \"B\"\nperod = \"1s\"\n";
    let (out, path) = check("many_parse", body);
    assert_at(&out, &path, 6, "invalid duration `soon`");
    assert_at(&out, &path, 9, "unknown field `perod`");
    assert!(out.stderr.contains("2 error(s)"), "{}", out.stderr);

    // A well-formed manifest with three cross-check and plugin problems.
    let body = String::from(
        "[[context]]\nname = \"C\"\ndataframes = [\"ghost\"]\n[[context.service]]\nname = \"x\"\nplugin = \"counter\"\nexport = \"Nope\"\n\
         [[context.service]]\nname = \"x\"\nplugin = \"counter\"\nexport = \"Increment\"\nconfig = { step = 0 }\n",
    );
    let (out, path) = check("many_checks", &body);
    assert_at(&out, &path, 6, "unknown dataframe `ghost`");
    assert_at(&out, &path, 10, "exports no service named `Nope`");
    assert_at(&out, &path, 12, "duplicate name `x`");
    assert_at(&out, &path, 15, "`step` must not be 0");
    assert!(out.stderr.contains("4 error(s)"), "{}", out.stderr);
}

#[test]
fn a_missing_manifest_file_is_an_error() {
    util::build();
    let out = run(&["check", "/nonexistent/m.toml"]);
    assert_eq!(out.code(), 2);
    assert!(
        out.stderr.contains("/nonexistent/m.toml")
            && out.stderr.contains("cannot read the manifest"),
        "{}",
        out.stderr
    );
}

#[test]
fn supervision_keys_are_checked() {
    let body = format!(
        "{CONTEXT}[[context.service]]\nname = \"x\"\nplugin = \"probe\"\nexport = \"Nop\"\nwatchdog = \"0s\"\nrestart_delay = \"2s\"\nmax_restart_delay = \"1s\"\nrestart = \"sometimes\"\n"
    );
    let (out, path) = check("supervision_keys", &body);
    // `restart` is a parse error, reported alone; fix it to see the rest.
    assert_at(&out, &path, 13, "unknown variant `sometimes`");
    let fixed = body.replace("restart = \"sometimes\"\n", "");
    let (out, path) = check("supervision_keys_fixed", &fixed);
    assert_at(&out, &path, 10, "`watchdog` must be longer than 0");
    assert_at(
        &out,
        &path,
        12,
        "`max_restart_delay` must not be shorter than `restart_delay`",
    );
}
