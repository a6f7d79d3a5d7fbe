//! The scenario lines the hardening suites print: one `RELIABILITY {json}` line per scenario
//! (scenario, runs, result, figures), which `scripts/reliability.sh` collects into
//! docs/RELIABILITY.md, and the run counts those scenarios scale with `VMSH_RELIABILITY`.

use serde_json::{Value, json};

/// `reduced` in the normal test run, `full` under scripts/reliability.sh.
pub(crate) fn count(reduced: usize, full: usize) -> usize {
    if std::env::var("VMSH_RELIABILITY").is_ok_and(|v| v == "full") { full } else { reduced }
}

/// Prints the scenario's line for docs/RELIABILITY.md.
pub(crate) fn report(scenario: &str, runs: usize, result: &str, figures: Value) {
    println!("RELIABILITY {}", json!({"scenario": scenario, "runs": runs, "result": result, "figures": figures}));
}

/// `figures` with `more` added. The report shows each figure as `name: value`, so values
/// are numbers, strings or lists, never nested objects.
pub(crate) fn flat(mut figures: serde_json::Map<String, Value>, more: Value) -> Value {
    if let Value::Object(more) = more {
        figures.extend(more);
    }
    Value::Object(figures)
}
