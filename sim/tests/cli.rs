//! The `meshsync-sim` binary as a user meets it: a small run prints one
//! JSON object and the same seed prints the same `trace_hash`; a flag or a
//! scenario it does not know is refused with a usage error naming it.
//!
//! Being an integration test of this package, it also makes
//! `cargo test --workspace` build the binary, which `tests/tests/docs.rs`
//! asks for the flags the README uses.

use std::process::{Command, Output};

fn sim(arguments: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshsync-sim"))
        .args(arguments)
        .output()
        .expect("the binary runs")
}

#[test]
fn a_small_run_prints_one_json_object_and_replays_from_its_seed() {
    let arguments = [
        "run",
        "--seed",
        "7",
        "--nodes",
        "3",
        "--duration",
        "2s",
        "--json",
    ];
    let first = sim(&arguments);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let text = String::from_utf8(first.stdout).expect("JSON is UTF-8");
    assert_eq!(text.trim().lines().count(), 1, "one line on stdout: {text}");
    let summary: serde_json::Value = serde_json::from_str(text.trim()).expect("stdout is JSON");
    assert_eq!(summary["seed"], 7);
    assert_eq!(summary["nodes"], 3);
    let hash = summary["trace_hash"]
        .as_str()
        .expect("a trace hash")
        .to_owned();
    assert!(!hash.is_empty());

    let again = sim(&arguments);
    let again: serde_json::Value =
        serde_json::from_slice(&again.stdout).expect("stdout is JSON again");
    assert_eq!(again["trace_hash"], hash.as_str(), "same seed, same trace");
}

#[test]
fn an_unknown_flag_or_scenario_is_a_usage_error_naming_it() {
    let flag = sim(&["run", "--seed", "1", "--no-such-flag"]);
    assert_eq!(flag.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&flag.stderr).contains("--no-such-flag"));

    let scenario = sim(&["run", "--seed", "1", "--scenario", "no-such-scenario"]);
    assert_eq!(scenario.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&scenario.stderr).contains("no-such-scenario"));
}
