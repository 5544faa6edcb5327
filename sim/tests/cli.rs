//! The `meshsync-sim` binary as a user meets it: a small run prints one
//! JSON object and the same seed prints the same `trace_hash`; a flag or a
//! scenario it does not know is refused with a usage error naming it. A
//! campaign runs every seed of its range on worker threads, each run the
//! one its seed replays; two shards merged are the whole campaign; a run
//! that breaks its scenario's bound fails the campaign, which prints the
//! command that replays it, and that command fails the same way.
//!
//! Being an integration test of this package, it also makes
//! `cargo test --workspace` build the binary, which `tests/tests/docs.rs`
//! asks for the flags the README uses.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

/// Runs the binary with `arguments`; signed chains' signatures are kept
/// under this test binary's scratch directory, not the user's cache.
fn sim(arguments: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshsync-sim"))
        .args(arguments)
        .env("XDG_CACHE_HOME", env!("CARGO_TARGET_TMPDIR"))
        .output()
        .expect("the binary runs")
}

/// A chain scenario's run keeps its chain's signatures in `--chain-cache
/// DIR`, and a later run with them is the same run; `off` keeps none.
#[test]
fn a_chain_kept_between_runs_gives_the_same_run() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli-chain-cache");
    let _ = std::fs::remove_dir_all(&dir);
    let dir_text = dir.to_str().expect("a UTF-8 path");
    let run = |cache: &str| {
        let output = sim(&[
            "run",
            "--scenario",
            "unresponsive-peer",
            "--seed",
            "3",
            "--duration",
            "2s",
            "--json",
            "--chain-cache",
            cache,
        ]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let summary: Value = serde_json::from_slice(&output.stdout).expect("stdout is JSON");
        summary["trace_hash"].clone()
    };
    let signed = run(dir_text);
    let kept: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("the directory was made")
        .map(|entry| entry.expect("an entry").path())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let written = std::fs::metadata(&kept[0]).and_then(|meta| meta.modified());
    assert_eq!(run(dir_text), signed);
    // Taken from the file, not signed and written again.
    assert_eq!(
        std::fs::metadata(&kept[0])
            .and_then(|meta| meta.modified())
            .ok(),
        written.ok()
    );
    std::fs::remove_dir_all(&dir).expect("removed");
    assert_eq!(run("off"), signed);
    assert!(!dir.exists());
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

/// A file for this test's output, under the target's scratch directory.
fn scratch(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{name}.json"))
}

fn read_json(path: &PathBuf) -> Value {
    let text = std::fs::read_to_string(path).expect("the summary was written");
    serde_json::from_str(&text).expect("the summary is JSON")
}

/// (seed, trace hash) of every run of a campaign summary, in order.
fn seeds_and_hashes(summary: &Value) -> Vec<(u64, String)> {
    summary["outcomes"]
        .as_array()
        .expect("outcomes")
        .iter()
        .map(|outcome| {
            (
                outcome["seed"].as_u64().expect("a seed"),
                outcome["trace_hash"].as_str().expect("a hash").to_owned(),
            )
        })
        .collect()
}

/// A small world: three `connect` nodes for two seconds.
const SMALL: [&str; 6] = ["--scenario", "connect", "--nodes", "3", "--duration", "2s"];

fn campaign(extra: &[&str]) -> Output {
    let mut arguments = vec!["campaign"];
    arguments.extend(SMALL);
    arguments.extend(extra);
    sim(&arguments)
}

#[test]
fn a_campaign_runs_every_seed_and_each_is_the_run_its_seed_replays() {
    let path = scratch("whole");
    let path_text = path.to_str().expect("a UTF-8 path");
    let output = campaign(&["--seeds", "3..7", "--jobs", "2", "--json", path_text]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("5 runs, 5 passed, 0 failed"), "{stdout}");
    let summary = read_json(&path);
    assert_eq!(summary["runs"], 5);
    assert_eq!(summary["failed"], 0);
    assert_eq!(summary["complete"], true);
    assert!(summary["events"].as_u64().expect("events") > 0);
    assert!(summary["events_per_second"].as_f64().expect("a rate") > 0.0);
    let runs = seeds_and_hashes(&summary);
    let seeds: Vec<u64> = runs.iter().map(|(seed, _)| *seed).collect();
    assert_eq!(seeds, vec![3, 4, 5, 6, 7]);

    // The replay command of a run gives that run, though it ran beside others.
    let outcome = &summary["outcomes"][2];
    let replay = outcome["replay"].as_str().expect("a replay command");
    let words: Vec<&str> = replay.split(' ').collect();
    assert_eq!(&words[..2], ["meshsync-sim", "run"], "{replay}");
    let mut arguments = words[1..].to_vec();
    arguments.push("--json");
    let replayed = sim(&arguments);
    let replayed: Value = serde_json::from_slice(&replayed.stdout).expect("stdout is JSON");
    assert_eq!(replayed["seed"], 5);
    assert_eq!(replayed["trace_hash"], outcome["trace_hash"], "{replay}");
}

#[test]
fn two_shards_merged_are_the_whole_campaign() {
    let whole = scratch("unsharded");
    let shards = [scratch("shard-0"), scratch("shard-1")];
    let merged = scratch("merged");
    let text = |path: &PathBuf| path.to_str().expect("a UTF-8 path").to_owned();
    let output = campaign(&["--seeds", "1..5", "--json", &text(&whole)]);
    assert!(output.status.success());
    for (index, path) in shards.iter().enumerate() {
        let shard = format!("{index}/2");
        let output = campaign(&["--seeds", "1..5", "--shard", &shard, "--json", &text(path)]);
        assert!(output.status.success());
        let part = read_json(path);
        assert_eq!(part["complete"], false);
        let expected: Vec<u64> = (1..=5)
            .filter(|seed| (seed - 1) % 2 == index as u64)
            .collect();
        let seeds: Vec<u64> = seeds_and_hashes(&part)
            .iter()
            .map(|(seed, _)| *seed)
            .collect();
        assert_eq!(seeds, expected, "shard {shard}");
    }
    let output = sim(&[
        "campaign",
        "merge",
        &text(&shards[1]),
        &text(&shards[0]),
        "--json",
        &text(&merged),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let merged = read_json(&merged);
    let whole = read_json(&whole);
    assert_eq!(merged["complete"], true);
    assert_eq!(merged["runs"], whole["runs"]);
    assert_eq!(seeds_and_hashes(&merged), seeds_and_hashes(&whole));

    // A shard given twice is no campaign.
    let twice = sim(&["campaign", "merge", &text(&shards[0]), &text(&shards[0])]);
    assert_eq!(twice.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&twice.stderr).contains("twice"));
}

/// `partition-heal` must converge within `--duration` of the heal; 1 ms is
/// less than one round trip, so every seed breaks that bound.
#[test]
fn a_run_that_breaks_its_bound_fails_the_campaign_and_prints_its_replay() {
    let path = scratch("failing");
    let path_text = path.to_str().expect("a UTF-8 path");
    let output = sim(&[
        "campaign",
        "--scenario",
        "partition-heal",
        "--nodes",
        "2",
        "--duration",
        "1ms",
        "--seeds",
        "4..4",
        "--json",
        path_text,
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let replay = "meshsync-sim run --scenario partition-heal --seed 4 --nodes 2 --duration 1ms";
    let line = stdout
        .lines()
        .find(|line| line.starts_with("seed 4 failed (bound: heads did not converge"))
        .unwrap_or_else(|| panic!("no failure line: {stdout}"));
    assert!(line.ends_with(replay), "{line}");
    let summary = read_json(&path);
    assert_eq!(summary["failed"], 1);
    assert_eq!(summary["failures_by_kind"]["bound"], 1);
    assert_eq!(summary["failing_seeds"], serde_json::json!([4]));

    // The printed command fails the same way.
    let words: Vec<&str> = replay.split(' ').skip(1).chain(["--json"]).collect();
    let replayed = sim(&words);
    assert_eq!(replayed.status.code(), Some(1));
    let replayed: Value = serde_json::from_slice(&replayed.stdout).expect("stdout is JSON");
    assert_eq!(replayed["trace_hash"], summary["outcomes"][0]["trace_hash"]);
    let failure = &summary["outcomes"][0]["failures"][0];
    assert_eq!(replayed["bounds_broken"][0], failure["detail"]);

    // Merging a summary with a failure fails too.
    let merged = sim(&["campaign", "merge", path_text]);
    assert_eq!(merged.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&merged.stdout).contains(replay));
}

/// Without `--duration`, a scenario runs its own default: 20 s for
/// `handshake-flood`, long enough for all six honest dials to be judged
/// (60 s for most; 120 s for `discovery`).
#[test]
fn a_run_without_duration_takes_the_scenarios_own() {
    let output = sim(&[
        "run",
        "--scenario",
        "handshake-flood",
        "--seed",
        "1",
        "--json",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value = serde_json::from_slice(&output.stdout).expect("stdout is JSON");
    assert_eq!(summary["virtual_seconds"], 20.0, "{summary}");
    assert_eq!(summary["outcome"]["honest_dials"], 6, "{summary}");
    assert_eq!(summary["bounds_broken"], serde_json::json!([]), "{summary}");
}

#[test]
fn a_run_with_a_report_writes_its_plots_and_keeps_stdout_one_json_object() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli-report");
    let _ = std::fs::remove_dir_all(&dir);
    let dir_text = dir.to_str().expect("a UTF-8 path");
    let arguments = [
        "run",
        "--seed",
        "3",
        "--nodes",
        "3",
        "--duration",
        "2s",
        "--json",
    ];
    let plain = sim(&arguments);
    let mut with_report = arguments.to_vec();
    with_report.extend(["--report", dir_text]);
    let reported = sim(&with_report);
    assert!(
        reported.status.success(),
        "{}",
        String::from_utf8_lossy(&reported.stderr)
    );
    let plain: Value = serde_json::from_slice(&plain.stdout).expect("stdout is JSON");
    let reported: Value =
        serde_json::from_slice(&reported.stdout).expect("stdout is one JSON object");
    assert_eq!(
        plain["trace_hash"], reported["trace_hash"],
        "sampling only reads"
    );
    let svg =
        std::fs::read_to_string(dir.join("connect-seed3-peers.svg")).expect("the plot is written");
    assert!(svg.starts_with("<svg") && svg.contains("<polyline"));
}
