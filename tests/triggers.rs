use std::fmt::Write as _;

use crate::util::{TestDir, run_manifest};

/// Every mode over every combination of one to three constant conditions, in
/// one run: each trigger records into its own key when it fires, and the
/// context stops after three iterations.
#[test]
fn trigger_truth_tables_for_and_or_xor_with_one_to_three_conditions() {
    let mut body = String::from(
        "[[dataframe]]\nname = \"fired\"\n[[context]]\nname = \"T\"\ndataframes = [\"fired\"]\n",
    );
    let mut expected = Vec::new();
    for mode in ["and", "or", "xor"] {
        for n in 1..=3u32 {
            for bits in 0..(1u32 << n) {
                let values: Vec<bool> = (0..n).map(|i| bits & (1 << i) != 0).collect();
                let trues = values.iter().filter(|v| **v).count();
                let fires = match mode {
                    "and" => trues == values.len(),
                    "or" => trues > 0,
                    _ => trues % 2 == 1,
                };
                let name = format!(
                    "{mode}_{}",
                    values
                        .iter()
                        .map(|v| if *v { 'T' } else { 'F' })
                        .collect::<String>()
                );
                let conditions: Vec<String> = values
                    .iter()
                    .map(|v| format!("{{ plugin = \"probe\", export = \"Constant\", config = {{ value = {v} }} }}"))
                    .collect();
                write!(
                    body,
                    "[[context.trigger]]\nname = \"{name}\"\nmode = \"{mode}\"\ncondition = [{}]\nservice = [{{ plugin = \"probe\", export = \"Record\", config = {{ dataframe = \"fired\", key = \"{name}\" }} }}]\n",
                    conditions.join(", ")
                )
                .unwrap();
                expected.push((name, fires));
            }
        }
    }
    let keys: Vec<String> = expected.iter().map(|(n, _)| format!("\"{n}\"")).collect();
    write!(
        body,
        "[[context.service]]\nname = \"stop\"\nplugin = \"hello\"\nexport = \"StopAfter\"\nconfig = {{ count = 3 }}\n\
         [[context.service]]\nname = \"report\"\nplugin = \"probe\"\nexport = \"Report\"\nconfig = {{ dataframe = \"fired\", keys = [{}] }}\n",
        keys.join(", ")
    )
    .unwrap();
    let dir = TestDir::new("truth_tables");
    let out = run_manifest(&dir.manifest("m.toml", &body), &[]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(expected.len(), 3 * (2 + 4 + 8));
    for (name, fires) in expected {
        let got = out.report("fired", &name);
        let want = if fires { "3" } else { "absent" };
        assert_eq!(got.as_deref(), Some(want), "trigger {name}");
    }
}

#[test]
fn a_trigger_stack_runs_its_services_in_order_each_time_it_fires() {
    let dir = TestDir::new("stack_order");
    let body = r#"
[[dataframe]]
name = "d"
[[context]]
name = "C"
dataframes = ["d"]
[[context.trigger]]
name = "t"
condition = [ { plugin = "probe", export = "Constant", config = { value = true } } ]
service = [
  { name = "first", plugin = "probe", export = "Lifecycle", config = { log_main = true } },
  { name = "second", plugin = "probe", export = "Lifecycle", config = { log_main = true } },
]
[[context.service]]
name = "stop"
plugin = "hello"
export = "StopAfter"
config = { count = 1 }
"#;
    let out = run_manifest(&dir.manifest("m.toml", body), &[]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let mains: Vec<String> = out
        .messages()
        .into_iter()
        .filter(|m| m.starts_with("main ") && !m.starts_with("main call"))
        .collect();
    assert_eq!(mains, ["main first", "main second"]);
}
