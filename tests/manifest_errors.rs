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

/// Asserts that `text` carries no raw control character (it would reach a terminal or a log as is).
fn assert_no_raw_control(text: &str) {
    let raw: Vec<char> = text
        .chars()
        .filter(|c| c.is_control() && *c != '\n')
        .collect();
    assert!(raw.is_empty(), "raw control characters {raw:?} in:\n{text}");
}

#[test]
fn a_name_with_a_nul_or_a_control_character_is_refused_with_its_line_and_key() {
    // A NUL in a service name, an ESC in a trigger name: `check` refuses both,
    // naming the line and key and showing the character escaped.
    let body = format!(
        "{CONTEXT}[[context.service]]\nname = \"s\\u0000x\"\nplugin = \"probe\"\nexport = \"Nop\"\n\
         [[context.trigger]]\nname = \"t\\u001b[31m\"\ncondition = [ {{ plugin = \"probe\", export = \"Constant\", config = {{ value = true }} }} ]\nservice = [ {{ plugin = \"control\", export = \"Shutdown\" }} ]\n{STOP}"
    );
    let (out, path) = check("name_control", &body);
    assert_at(
        &out,
        &path,
        7,
        "context \"C\" > service \"s\\0x\" > name: invalid name",
    );
    assert_at(&out, &path, 7, "`\\0`");
    assert_at(
        &out,
        &path,
        11,
        "context \"C\" > trigger \"t\\u{1b}[31m\" > name: invalid name",
    );
    assert_at(&out, &path, 11, "`\\u{1b}`");
    assert_no_raw_control(&out.stderr);

    // A NUL in a context name made `run` panic on the main thread (exit 101):
    // it is refused before anything starts.
    let body = format!("[[context]]\nname = \"C\\u0000\"\n{STOP}");
    let dir = TestDir::new("name_nul_run");
    let m = dir.manifest("m.toml", &body);
    let path = m.to_string_lossy().into_owned();
    let out = run(&["run", &path]);
    assert_eq!(out.code(), 2, "{}", out.stderr);
    assert_at(&out, &path, 5, "context \"C\\0\" > name: invalid name");
    assert!(out.stderr.contains("nothing was started"), "{}", out.stderr);
    assert_no_raw_control(&out.stderr);
}

#[test]
fn names_of_letters_digits_dashes_dots_and_underscores_in_any_script_are_accepted() {
    let body = "[[dataframe]]\nname = \"état-1.v2\"\n[[context]]\nname = \"Main_ctx\"\ndataframes = [\"état-1.v2\"]\n\
                [[context.service]]\nname = \"größe.日本-3\"\nplugin = \"hello\"\nexport = \"StopAfter\"\nconfig = { count = 1 }\n";
    let dir = TestDir::new("names_ok");
    let m = dir.manifest("m.toml", body);
    let out = run(&["check", m.to_str().unwrap()]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
}

/// The first lines of a long output.
fn head(text: &str) -> String {
    text.lines().take(20).collect::<Vec<_>>().join("\n")
}

/// Counts the diagnostic lines (`error: FILE:LINE:COLUMN: ...`) of `out`.
fn diagnostics(out: &Output) -> usize {
    out.stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .count()
}

#[test]
fn check_reports_every_one_of_twenty_thousand_errors() {
    const N: usize = 20_000;
    // 20,000 bad values (parse errors) ...
    let mut body = String::new();
    for i in 0..N {
        body.push_str(&format!(
            "[[context]]\nname = \"c{i}\"\nperiod = \"soon\"\n"
        ));
    }
    let (out, path) = check("many_bad_values", &body);
    assert_eq!(diagnostics(&out), N, "{}", head(&out.stderr));
    assert!(out.stderr.contains(&format!("{N} error(s)")));
    assert_at(&out, &path, 3 + 3 * N, "invalid duration `soon`");

    // ... and 20,000 duplicate names (cross-check errors, once the file parses).
    let mut body = String::new();
    for _ in 0..=N {
        body.push_str(
            "[[dataframe]]\nname = \"d\"\n[[context]]\nname = \"C\"\ndataframes = [\"d\"]\n",
        );
    }
    let (out, path) = check("many_duplicates", &body);
    assert_eq!(diagnostics(&out), 2 * N, "{}", head(&out.stderr));
    assert_at(
        &out,
        &path,
        5 + 5 * N,
        "duplicate dataframe name `d` (first declared on line 5)",
    );
    assert_at(
        &out,
        &path,
        7 + 5 * N,
        "duplicate context name `C` (first declared on line 7)",
    );
}

#[test]
fn a_key_nested_too_deeply_is_reported_at_the_key() {
    let deep = "x.".repeat(100);
    let (out, path) = check(
        "deep_key",
        &format!(
            "{CONTEXT}{STOP}[[context.service]]\nname = \"s\"\nplugin = \"probe\"\nexport = \"Nop\"\nconfig.{deep}y = 1\n"
        ),
    );
    assert_at(&out, &path, 15, "invalid TOML");
    assert!(
        out.stderr.contains(&format!("{path}:15:1:")),
        "expected the key's position 15:1:\n{}",
        out.stderr
    );
}

#[test]
fn a_config_value_of_the_wrong_type_is_reported_at_the_value() {
    // counter's `Increment` takes `step: i64`; `Record` of probe takes a string `key`.
    let body = format!(
        "{CONTEXT}[[context.service]]\nname = \"inc\"\nplugin = \"counter\"\nexport = \"Increment\"\nconfig = {{ dataframe = \"d\", step = \"two\" }}\n\
         [[context.service]]\nname = \"inc2\"\nplugin = \"counter\"\nexport = \"Increment\"\n[context.service.config]\ndataframe = \"d\"\nstep = 1.5\n\
         [[context.trigger]]\nname = \"t\"\ncondition = [ {{ plugin = \"probe\", export = \"Constant\", config = {{ value = \"yes\" }} }} ]\nservice = [ {{ plugin = \"control\", export = \"Shutdown\" }} ]\n"
    );
    let (out, path) = check("config_type", &body);
    assert!(
        out.stderr.contains(&format!(
            "{path}:10:36: context \"C\" > service \"inc\" > config > step: "
        )),
        "expected the position of `\"two\"` (10:36):\n{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!(
            "{path}:17:8: context \"C\" > service \"inc2\" > config > step: "
        )),
        "expected the position of `1.5` (17:8):\n{}",
        out.stderr
    );
    assert_at(
        &out,
        &path,
        10,
        "invalid type: string \"two\", expected i64",
    );
    assert!(
        out.stderr.contains(&format!(
            "{path}:20:75: context \"C\" > trigger \"t\" > condition #1 > config > value: "
        )),
        "expected the position of `\"yes\"` (20:75):\n{}",
        out.stderr
    );
    assert!(!out.stderr.contains(" at line "), "{}", out.stderr);
}

#[test]
fn a_missing_manifest_is_reported_as_not_found_without_a_position() {
    util::build();
    let out = run(&["check", "/nonexistent/m.toml"]);
    assert_eq!(out.code(), 2, "{}", out.stderr);
    assert!(
        out.stderr
            .lines()
            .any(|l| l == "error: /nonexistent/m.toml: manifest not found"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains(":1:1"), "{}", out.stderr);
}

#[test]
fn every_failure_of_run_before_starting_ends_with_nothing_was_started() {
    let dir = TestDir::new("run_prestart");
    let syntax = dir.manifest("syntax.toml", &format!("{CONTEXT}[[context.service]\n"));
    let unknown = dir.manifest("unknown.toml", &format!("{CONTEXT}perod = \"1s\"\n{STOP}"));
    let good = dir.manifest("good.toml", &format!("{CONTEXT}{STOP}"));
    let good = good.to_str().unwrap();
    let events = dir.path.join("no/such/folder/events.jsonl");
    let cases: [(&str, Vec<&str>); 5] = [
        ("syntax", vec!["run", syntax.to_str().unwrap()]),
        ("unknown key", vec!["run", unknown.to_str().unwrap()]),
        ("missing file", vec!["run", "/nonexistent/m.toml"]),
        ("bad filter", vec!["run", good, "--log-level", "info,[=bad"]),
        (
            "events",
            vec!["run", good, "--events", events.to_str().unwrap()],
        ),
    ];
    for (what, args) in cases {
        let out = run(&args);
        assert_eq!(out.code(), 2, "{what}: {}", out.stderr);
        let last = out.stderr.lines().last().unwrap_or_default();
        assert!(
            last.ends_with("error(s); nothing was started"),
            "{what}: the last line is {last:?}:\n{}",
            out.stderr
        );
    }
}

/// The codes of the first table after `**Exit codes**` in README.md.
fn readme_exit_codes() -> Vec<u32> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("read README.md");
    let table = readme
        .split_once("**Exit codes**")
        .expect("README has an exit-code table")
        .1;
    table
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| {
            l.trim_start_matches('|')
                .split('|')
                .next()?
                .trim()
                .parse()
                .ok()
        })
        .collect()
}

#[test]
fn help_lists_every_exit_code_of_the_readme() {
    util::build();
    let out = run(&["--help"]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let help: Vec<u32> = out
        .stdout
        .split_once("Exit codes:")
        .expect("--help lists the exit codes")
        .1
        .lines()
        .filter_map(|l| {
            let l = l.strip_prefix("  ")?;
            l.split_whitespace().next()?.parse().ok()
        })
        .collect();
    let readme = readme_exit_codes();
    assert_eq!(help, readme, "--help:\n{}", out.stdout);
    // The codes agreed for this host, each documented in both.
    assert_eq!(readme, [0, 1, 2, 3, 4, 71, 75, 76, 130]);
}

#[test]
fn exit_when_main_once_done_without_a_main_once_service_is_an_error() {
    let (out, path) = check(
        "exit_when_no_once",
        &format!("exit_when = \"main_once_done\"\n{CONTEXT}{STOP}"),
    );
    assert_at(
        &out,
        &path,
        4,
        "needs at least one service with `main_once = true`",
    );
    assert!(out.stderr.contains("host > exit_when"), "{}", out.stderr);
}

#[test]
fn an_unknown_exit_when_or_a_main_once_that_is_not_a_boolean_is_an_error() {
    let (out, path) = check(
        "exit_when_bogus",
        &format!("exit_when = \"soon\"\n{CONTEXT}{STOP}"),
    );
    assert_at(&out, &path, 4, "unknown variant `soon`");
    let (out, path) = check(
        "main_once_type",
        &format!("{CONTEXT}{STOP}main_once = \"yes\"\n"),
    );
    assert_at(&out, &path, 11, "main_once");
    let (out, path) = check(
        "main_once_stack",
        &format!(
            "{CONTEXT}[[context.trigger]]\nname = \"t\"\ncondition = [ {{ plugin = \"probe\", export = \"Constant\", config = {{ value = true }} }} ]\nservice = [ {{ plugin = \"control\", export = \"Shutdown\", main_once = true }} ]\n"
        ),
    );
    assert_at(&out, &path, 9, "unknown field `main_once`");
}
